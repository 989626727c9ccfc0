"""OpenAPI for an app (Robyn's §17): the generated 3.1 spec at ``/openapi.json`` and a Swagger
UI page at ``/docs`` that works offline.

* ``document.py`` — Robyn's object model (``OpenAPI``, ``OpenAPIInfo``, ``Contact`` ...);
* ``schemas.py`` — Python types → JSON Schema;
* ``operations.py`` — the spec, one operation per ``RouteSpec``;
* ``docs_page.py`` — the routes that serve the spec, the page and Swagger UI's files.

The app (``app.py``) calls ``configure`` when it is made and ``served_routes`` each time it is
built, unless OpenAPI is disabled (``--disable-openapi`` or ``Config.disable_openapi``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from .docs_page import SPEC_PATH, STATIC_PREFIX, served_routes, swagger_ui_directory
from .document import (
    DOCS_PAGE, Components, Contact, ExternalDocumentation, License, OpenAPI, OpenAPIInfo, RouteOpenAPIMeta, Server,
)
from .operations import generate


def configure(openapi: Optional[OpenAPI], openapi_file_path: Optional[str], directory: str,
              app_file_given: bool = True) -> OpenAPI:
    """The app's ``OpenAPI``: the one given or a new one, serving a custom spec file when
    ``openapi_file_path`` (relative to the app's directory) is given or an ``openapi.json``
    lies beside the app file, as Robyn does (only beside an app file: an app made without one
    does not pick up whatever lies in the working directory). A named file that cannot be read
    is an error now."""
    found = openapi if openapi is not None else OpenAPI()
    if openapi_file_path:
        found.override_openapi(Path(directory).joinpath(openapi_file_path))
    elif app_file_given and Path(directory).joinpath("openapi.json").is_file():
        found.override_openapi(Path(directory).joinpath("openapi.json"))
    return found


__all__ = ["Components", "Contact", "DOCS_PAGE", "ExternalDocumentation", "License", "OpenAPI", "OpenAPIInfo",
           "RouteOpenAPIMeta", "SPEC_PATH", "STATIC_PREFIX", "Server", "configure", "generate", "served_routes",
           "swagger_ui_directory"]
