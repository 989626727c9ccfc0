"""Registration records: what the decorators make, apart from the compiled routes.

Each ``@app.get``/``@app.before_request``/``@app.websocket`` makes one frozen record here
(``RouteSpec``, ``MiddlewareSpec``, ``WebSocketSpec``); nothing ever mutates one. Building the
app (``App._build``) compiles *fresh* routes from the records every time, so an app can be
built twice, one ``SubRouter`` can be included in two apps, and OpenAPI reads what the user
declared rather than what dispatch made of it. Also Robyn's names for the kinds of things an
app registers (``HttpMethod``, ``MiddlewareType``, ``FunctionInfo``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Callable, Optional


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


@dataclass(frozen=True)
class RouteSpec:
    """One HTTP route as registered: the handler and every option the decorator took."""

    method: str
    endpoint: str                 # normalised, with its router's prefix
    handler: Callable
    router: Any                   # the router that registered it: its dependencies, its auth handler
    const: bool = False
    auth_required: bool = False
    threaded: Optional[bool] = None   # None: the app's default (``set_threaded_default``)
    status_code: Optional[int] = None
    openapi_name: str = ""
    openapi_tags: tuple[str, ...] = ()
    response_model: Any = None
    responses: Any = None
    deprecated: bool = False
    include_in_schema: bool = True
    stream_body: bool = False     # the handler reads the body as it arrives (request.stream())

    @property
    def name(self) -> str:
        return f"{self.method} {self.endpoint} ({getattr(self.handler, '__qualname__', self.handler)})"


@dataclass(frozen=True)
class MiddlewareSpec:
    """A before/after hook: for every route (``endpoint`` None) or for one endpoint."""

    kind: MiddlewareType
    endpoint: Optional[str]
    fn: Callable


class WebSocketStyle(Enum):
    """The two WebSocket API styles (docs/websockets.md)."""

    RECEIVE_LOOP = "receive loop"   # @app.websocket: one async handler awaits ws.receive_*()
    CALLBACKS = "callbacks"         # WebSocket(app, path) with @ws.on("connect"|"message"|"close")


@dataclass(frozen=True)
class WebSocketSpec:
    """One WebSocket endpoint as registered (its hooks are added by replacing the record)."""

    endpoint: str
    style: WebSocketStyle
    router: Any
    handler: Optional[Callable] = None      # RECEIVE_LOOP only
    on_connect: Optional[Callable] = None
    on_message: Optional[Callable] = None   # CALLBACKS only
    on_close: Optional[Callable] = None
    auth_required: bool = False
    subprotocols: tuple[str, ...] = ()
    recovery: bool = False                  # room messages reach its clients in envelopes with positions


__all__ = ["FunctionInfo", "HTTP_METHODS", "HttpMethod", "MiddlewareSpec", "MiddlewareType", "RouteSpec",
           "WebSocketSpec", "WebSocketStyle"]
