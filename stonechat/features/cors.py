"""CORS: Robyn's ``ALLOW_CORS(app, origins, headers=None)`` helper, without its defect.

Robyn, with several origins, answers ``Access-Control-Allow-Origin: *`` together with
``Access-Control-Allow-Credentials: true`` (which browsers reject) and never sends
``Vary: Origin`` (so a cache can hand one origin's answer to another). Here:

* one origin: every response carries it (set as default response headers, so streams and
  error responses have it too), as in Robyn;
* several origins, or ``"*"``: the response names *the request's* origin when it is allowed,
  with ``Vary: Origin``; credentials stay allowed, which ``*`` could not do. That header is set
  by an after hook, so streaming responses and unhandled errors (which skip after hooks) do
  not carry it; list a single origin if a browser must read those.

As in Robyn: a request whose ``Origin`` is not allowed is refused with 403 before routing, and
every ``OPTIONS`` request is answered here as a preflight (204), whatever the routes.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence, Union

from ..core.response import Response

METHODS = "GET, POST, PUT, DELETE, PATCH, HEAD, OPTIONS"
MAX_AGE = "3600"


def ALLOW_CORS(app: Any, origins: Union[str, Sequence[str]],
               headers: Union[str, Sequence[str], None] = None) -> None:  # noqa: N802 (Robyn's name)
    """Allow cross-origin requests from ``origins`` (``"*"`` for any) on every route of ``app``;
    ``headers`` are request headers allowed beyond ``Content-Type`` and ``Authorization``."""
    allowed = [origins] if isinstance(origins, str) else list(origins)
    if not allowed or not all(isinstance(o, str) and o for o in allowed):
        raise ValueError(f"ALLOW_CORS: origins must be one or more non-empty strings, got {origins!r}")
    extra = [headers] if isinstance(headers, str) else list(headers or [])
    allow_headers = ", ".join(dict.fromkeys([*extra, "Content-Type", "Authorization"]))
    any_origin = "*" in allowed
    allowed_set = frozenset(allowed)
    single: Optional[str] = allowed[0] if len(allowed) == 1 and not any_origin else None

    def is_allowed(origin: str) -> bool:
        return any_origin or origin in allowed_set

    app.set_response_header("Access-Control-Allow-Methods", METHODS)
    app.set_response_header("Access-Control-Allow-Headers", allow_headers)
    app.set_response_header("Access-Control-Allow-Credentials", "true")
    if single is not None:
        app.set_response_header("Access-Control-Allow-Origin", single)
    else:
        app.set_response_header("Vary", "Origin")

    @app.before_request()
    def cors_before(request: Any) -> Any:
        origin = request.headers.get("origin")
        if origin is not None and not is_allowed(origin):
            return Response(403, {"Content-Type": "text/plain; charset=utf-8"},
                            f"CORS: origin {origin} is not allowed\n")
        if request.method == "OPTIONS":
            preflight = {
                "Access-Control-Allow-Origin": origin or single or allowed[0],
                "Access-Control-Allow-Methods": METHODS,
                "Access-Control-Allow-Headers": allow_headers,
                "Access-Control-Allow-Credentials": "true",
                "Access-Control-Max-Age": MAX_AGE,
            }
            if single is None:
                preflight["Vary"] = "Origin"
            return Response(204, preflight, "")
        return request

    if single is not None:
        return  # the default headers say it all

    @app.after_request()
    def cors_after(request: Any, response: Any) -> Any:
        origin = request.headers.get("origin")
        if origin is not None:  # allowed: the before hook refused the others
            response.headers.set("Access-Control-Allow-Origin", origin)
            vary = response.headers.get("vary")
            if vary and "origin" not in vary.lower():
                response.headers.set("Vary", vary + ", Origin")
        return response


__all__ = ["ALLOW_CORS"]
