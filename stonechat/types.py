"""Robyn's ``robyn.types`` module path: the annotation markers (``core/markers.py``)."""

from .core.markers import (  # noqa: F401
    Body, JsonBody, JSONResponse, PathParams, Method, FormData, Files, IPAddress,
    QueryParamValidationError, Directory, RequestMethod, RequestBody, RequestURL, RequestIdentity,
)

__all__ = ['Body', 'JsonBody', 'JSONResponse', 'PathParams', 'Method', 'FormData', 'Files', 'IPAddress', 'QueryParamValidationError', 'Directory', 'RequestMethod', 'RequestBody', 'RequestURL', 'RequestIdentity']
