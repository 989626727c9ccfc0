"""Marker types for handler annotations (Robyn's ``robyn.types``): annotate a parameter with
one of these and dispatch injects the matching part of the request."""

from __future__ import annotations

from typing import Any

from .datastructures import Identity, Url


class Body(bytes):
    """Annotate a parameter with a subclass to receive the raw body (bytes)."""


class JsonBody(dict):
    """Annotate with a subclass to receive ``request.json()``; invalid JSON answers 400."""


class JSONResponse(dict):
    pass


class PathParams(dict):
    pass


class Method(str):
    pass


class FormData(dict):
    pass


class Files(dict):
    pass


class IPAddress(str):
    pass


class QueryParamValidationError(ValueError):
    pass


RequestMethod = Method
RequestBody = Body
RequestURL = Url
RequestIdentity = Identity


class Directory:
    """A directory served by ``serve_directory`` (kept for import compatibility)."""

    def __init__(self, route: str, directory_path: str, show_files_listing: bool = False,
                 index_file: Any = None) -> None:
        self.route = route
        self.directory_path = directory_path
        self.show_files_listing = show_files_listing
        self.index_file = index_file
