"""The contract between the server (bytes, sockets) and the framework (routes, handlers).

The server layer imports nothing from the framework; the framework never touches a socket.
Everything that crosses the line is defined here:

Per HTTP request the server builds one :class:`HTTPRequest` and calls the application's
``handle(request)``. The application answers with

* an :class:`HTTPResponse` (returned directly: the fast path, no task is created), or
* an awaitable that resolves to an :class:`HTTPResponse` or a :class:`WebSocketAccept`
  (the server runs it as a task and answers pipelined requests strictly in order).

For a WebSocket handshake (``request.websocket`` is true and the handshake is valid) the
application may return :class:`WebSocketAccept`; the server then sends ``101`` and runs
``accept.session(connection)`` with a :class:`WebSocketConnection` (see ``server/ws.py``).
Any :class:`HTTPResponse` instead refuses the upgrade with that status.

Lifecycle: ``await application.startup()`` before the socket accepts,
``await application.shutdown()`` after connections are drained (see ``server/runner.py``).
"""

from __future__ import annotations

from typing import Any, AsyncIterator, Awaitable, Callable, Optional, Protocol, Union


class HTTPRequest:
    """One parsed request, as raw as the framework can use it.

    ``headers`` is a list of ``(lower-case name, value)`` byte pairs in arrival order;
    ``path`` and ``query`` are the raw (still percent-encoded) parts of the target.
    """

    __slots__ = (
        "method", "target", "path", "query", "headers", "body", "client", "server",
        "scheme", "http_version", "keep_alive", "websocket", "host", "connection",
    )

    def __init__(self) -> None:
        self.method: str = "GET"
        self.target: bytes = b"/"
        self.path: bytes = b"/"
        self.query: bytes = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: bytes = b""
        self.client: Optional[tuple] = None
        self.server: Optional[tuple] = None
        self.scheme: str = "http"
        self.http_version: str = "1.1"
        self.keep_alive: bool = True
        self.websocket: bool = False
        self.host: bytes = b""
        # Opaque per-connection object; the framework may hang per-connection state on it.
        self.connection: Any = None


class HTTPResponse:
    """What the framework hands back: a status, pre-encoded header lines and a body.

    ``headers`` is a ``bytes`` block of ``name: value\\r\\n`` lines *without* framing headers
    (Content-Length, Transfer-Encoding, Connection, Date, Server); the server adds those.
    Exactly one of ``body`` (bytes) and ``stream`` (an async iterator of bytes) is used.
    """

    __slots__ = ("status", "headers", "body", "stream")

    def __init__(self, status: int, headers: bytes = b"", body: bytes = b"",
                 stream: Optional[AsyncIterator[bytes]] = None) -> None:
        self.status = status
        self.headers = headers
        self.body = body
        self.stream = stream


class WebSocketConnection(Protocol):
    """What a WebSocket session receives from the server (implemented in ``server/ws.py``)."""

    async def receive(self) -> Union[str, bytes]: ...          # raises ConnectionClosed
    async def send(self, message: Union[str, bytes]) -> None: ...
    async def close(self, code: int = 1000, reason: str = "") -> None: ...


class WebSocketAccept:
    """Accept the upgrade and run ``session(connection)`` for the life of the WebSocket."""

    __slots__ = ("session", "headers", "subprotocol")

    def __init__(self, session: Callable[[Any], Awaitable[None]], headers: bytes = b"",
                 subprotocol: Optional[str] = None) -> None:
        self.session = session
        self.headers = headers
        self.subprotocol = subprotocol


class Application(Protocol):
    def handle(self, request: HTTPRequest) -> Union[HTTPResponse, Awaitable[Any]]: ...
    async def startup(self) -> None: ...
    async def shutdown(self) -> None: ...
