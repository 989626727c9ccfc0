"""The routes OpenAPI adds to an app: ``GET /openapi.json``, ``GET /docs`` and the Swagger UI
files the page loads from ``/docs/static/``.

Robyn's page loads Swagger UI from a CDN and is blank offline. This one serves Swagger UI 5
from the ``swagger-ui-bundle-v2`` package (extra ``stonechat[openapi]``) through the app's own
routes, and nothing on the page reaches off the machine: the online validator badge is off
(``validatorUrl: null``), there is no top bar to fetch other specs from, no fonts or images
from elsewhere, and a Content-Security-Policy keeps scripts, styles and requests to this
origin (and to the spec's own absolute ``servers`` and OAuth2 endpoints, for "Try it out").

Everything is made once when the app is built: the spec bytes, the page and the files are
const routes, answered from memory. They are ordinary routes otherwise (global middlewares run
on them; ``auth_required`` is off; default response headers are not added, as in Robyn).
"""

from __future__ import annotations

import html
import logging
from pathlib import Path
from typing import Any, Callable, Iterable, Optional
from urllib.parse import urlsplit

import orjson

from ...core.registry import RouteSpec
from ...core.response import Response
from .document import DOCS_PAGE, OpenAPI
from .operations import generate

logger = logging.getLogger("stonechat")

SPEC_PATH = "/openapi.json"
STATIC_PREFIX = DOCS_PAGE + "/static/"
EXTRA_HINT = "pip install 'stonechat[openapi]'"

# The files of the Swagger UI distribution the page needs (not the source maps, not the
# standalone preset: the page uses the base layout).
ASSETS = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "favicon-32x32.png": "image/png",
    "favicon-16x16.png": "image/png",
    "oauth2-redirect.html": "text/html; charset=utf-8",
    "oauth2-redirect.js": "text/javascript; charset=utf-8",
}

# The page's own script (a file, so the page needs no inline script).
INIT_SCRIPT = """\
window.ui = SwaggerUIBundle({
  url: %(spec)s,
  dom_id: "#swagger-ui",
  deepLinking: true,
  validatorUrl: null,
  presets: [SwaggerUIBundle.presets.apis],
  layout: "BaseLayout",
  oauth2RedirectUrl: window.location.origin + %(redirect)s,
});
"""

PAGE = """\
<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>%(title)s - API docs</title>
<link rel="icon" type="image/png" sizes="32x32" href="%(static)sfavicon-32x32.png">
<link rel="icon" type="image/png" sizes="16x16" href="%(static)sfavicon-16x16.png">
<link rel="stylesheet" href="%(static)sswagger-ui.css?v=%(version)s">
</head>
<body>
<div id="swagger-ui"></div>
<script src="%(static)sswagger-ui-bundle.js?v=%(version)s"></script>
<script src="%(static)sdocs.js?v=%(version)s"></script>
</body>
</html>
"""


def swagger_ui_directory() -> tuple[Optional[Path], str]:
    """The Swagger UI 5 files of ``swagger-ui-bundle-v2``, or ``None`` and why not."""
    try:
        from swagger_ui_bundle import swagger_ui_path  # type: ignore[import-untyped, import-not-found, unused-ignore]
    except ImportError:
        return None, f"the /docs page needs Swagger UI: {EXTRA_HINT}"
    directory = Path(str(swagger_ui_path))
    if not directory.name.startswith("swagger-ui-5.") or not (directory / "swagger-ui-bundle.js").is_file():
        # The older swagger-ui-bundle package (Swagger UI 4) installs under the same name.
        return None, (f"the /docs page needs Swagger UI 5, found {directory.name} (the swagger-ui-bundle "
                      f"package): {EXTRA_HINT} and uninstall swagger-ui-bundle")
    return directory, ""


def _api_urls(document: dict[str, Any]) -> Iterable[str]:
    """The URLs "Try it out" may call besides the page's origin: the spec's servers (top level,
    per path, per operation) and its OAuth2/OpenID endpoints."""
    def servers(node: Any) -> Iterable[str]:
        for server in (node.get("servers") or []) if isinstance(node, dict) else []:
            if isinstance(server, dict):
                yield str(server.get("url", ""))

    yield from servers(document)
    for item in (document.get("paths") or {}).values():
        yield from servers(item)
        for operation in item.values() if isinstance(item, dict) else []:
            yield from servers(operation)
    schemes = ((document.get("components") or {}).get("securitySchemes") or {}).values()
    for scheme in schemes:
        if not isinstance(scheme, dict):
            continue
        yield str(scheme.get("openIdConnectUrl", ""))
        for flow in (scheme.get("flows") or {}).values():
            if isinstance(flow, dict):
                yield str(flow.get("tokenUrl", ""))
                yield str(flow.get("refreshUrl", ""))


def content_security_policy(document: dict[str, Any]) -> str:
    origins = sorted({f"{parts.scheme}://{parts.netloc}" for url in _api_urls(document)
                      for parts in [urlsplit(url)] if parts.scheme in ("http", "https") and parts.netloc})
    connect = " ".join(["'self'", *origins])
    return (f"default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
            f"connect-src {connect}; font-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'self'")


def _constant(response: Response) -> Callable[[], Response]:
    def answer() -> Response:
        return response
    return answer


def served_routes(openapi: OpenAPI, routes: list[RouteSpec], auth_handlers: Iterable[Any],
                  router: Any) -> list[RouteSpec]:
    """The routes that serve the spec and the docs page for an app whose routes are ``routes``
    (a path the app already answers with GET is left to the app)."""
    if openapi.openapi_file_override and openapi.file_bytes is not None:
        spec_bytes = openapi.file_bytes
        document = openapi.openapi_spec
    else:
        document = generate(openapi, routes, auth_handlers)
        spec_bytes = orjson.dumps(document)
    taken = {spec.endpoint for spec in routes if spec.method == "GET"}
    answers: dict[str, Response] = {
        SPEC_PATH: Response(200, {"content-type": "application/json", "cache-control": "no-cache"}, spec_bytes),
    }
    directory, missing = swagger_ui_directory()
    if directory is None:
        logger.warning("%s; %s serves only a note saying so", missing, DOCS_PAGE)
        answers[DOCS_PAGE] = Response(501, {"content-type": "text/plain; charset=utf-8"},
                                      f"Not Implemented: {missing}\nThe spec is at {SPEC_PATH}\n")
    else:
        version = directory.name.removeprefix("swagger-ui-")
        title = (document.get("info") or {}).get("title") if isinstance(document.get("info"), dict) else None
        page = PAGE % {"title": html.escape(str(title or "API")), "static": STATIC_PREFIX,
                       "version": html.escape(version)}
        answers[DOCS_PAGE] = Response(200, {"content-type": "text/html; charset=utf-8", "cache-control": "no-cache",
                                            "content-security-policy": content_security_policy(document)}, page)
        cached = {"cache-control": "public, max-age=86400"}
        script = INIT_SCRIPT % {"spec": orjson.dumps(SPEC_PATH).decode(),
                                "redirect": orjson.dumps(STATIC_PREFIX + "oauth2-redirect.html").decode()}
        answers[STATIC_PREFIX + "docs.js"] = Response(200, {"content-type": "text/javascript; charset=utf-8", **cached},
                                                      script)
        for name, media_type in ASSETS.items():
            answers[STATIC_PREFIX + name] = Response(200, {"content-type": media_type, **cached},
                                                     (directory / name).read_bytes())
    served = []
    for path, response in answers.items():
        if path in taken:
            logger.warning("GET %s is the app's own route; OpenAPI does not serve it", path)
            continue
        served.append(RouteSpec("GET", path, _constant(response), router, const=True, include_in_schema=False))
    return served


__all__ = ["ASSETS", "SPEC_PATH", "STATIC_PREFIX", "served_routes", "swagger_ui_directory"]
