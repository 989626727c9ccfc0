"""What registration records: the names Robyn gives the kinds of things an app registers
(``HttpMethod``, ``MiddlewareType``, ``FunctionInfo``).

The decorators in ``app.py`` turn each registration into a record here; building the app
(``App._build``) compiles routes from the records, so nothing here changes per request.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Callable


class HttpMethod(str, Enum):
    """Robyn's ``HttpMethod`` (``HttpMethod.GET == "GET"``, so plain strings work too)."""

    GET = "GET"
    POST = "POST"
    PUT = "PUT"
    DELETE = "DELETE"
    PATCH = "PATCH"
    HEAD = "HEAD"
    OPTIONS = "OPTIONS"
    CONNECT = "CONNECT"
    TRACE = "TRACE"

    def __str__(self) -> str:
        return self.value


HTTP_METHODS = tuple(m.value for m in HttpMethod)


class MiddlewareType(str, Enum):
    """Robyn's ``MiddlewareType``: when a middleware runs."""

    BEFORE_REQUEST = "BEFORE_REQUEST"
    AFTER_REQUEST = "AFTER_REQUEST"


@dataclass
class FunctionInfo:
    """Robyn's ``FunctionInfo``: a handler with what its signature says."""

    handler: Callable
    is_async: bool
    number_of_params: int
    args: dict = field(default_factory=dict)
    kwargs: dict = field(default_factory=dict)


__all__ = ["FunctionInfo", "HTTP_METHODS", "HttpMethod", "MiddlewareType"]
