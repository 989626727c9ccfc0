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
``accept.session(connection)`` with a :class:`WebSocketConnection` (see ``server/websocket/``).
Any :class:`HTTPResponse` instead refuses the upgrade with that status.

Lifecycle: ``await application.startup()`` before the socket accepts,
``await application.shutdown()`` after connections are drained (see ``server/runner.py``).
A forced stop (a second Ctrl+C, SIGQUIT) cancels ``shutdown()`` if it is running (the
application gives the step that is running a short last chance and logs what it skipped); if
the stop is forced before ``shutdown()`` began, it is not called, and
``application.skip_shutdown()`` is, when the application has that method, to log what that
leaves out.

Peers: in a worker of ``--processes N``, before serving, the server calls
``receive = application.connect_peers(publish)`` if the application has that method.
``publish(data: bytes)`` hands ``data`` to ``receive(data)`` in every *other* worker process,
in order, without waiting (best effort: see ``server/peers.py``). A single process has no peers
and the method is not called. The framework uses it for WebSocket broadcast.
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
        "scheme", "http_version", "keep_alive", "websocket", "host",
    )

    def __init__(self) -> None:
        self.method: str = "GET"
        self.target: bytes = b"/"
        self.path: bytes = b"/"
        self.query: bytes = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: bytes = b""
        self.client: Optional[tuple[Any, ...]] = None
        self.server: Optional[tuple[Any, ...]] = None
        self.scheme: str = "http"
        self.http_version: str = "1.1"
        self.keep_alive: bool = True
        self.websocket: bool = False
        self.host: bytes = b""


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


# Statuses whose responses never carry a body (RFC 9110 6.4.1): no Content-Length either.
NO_BODY_STATUSES = frozenset({204, 304} | set(range(100, 200)))

TEXT_PLAIN = b"content-type: text/plain; charset=utf-8\r\n"


def plain_response(status: int, text: str, headers: bytes = b"") -> HTTPResponse:
    """A short text/plain answer the server gives itself (errors, limits, refused handshakes);
    ``headers`` are extra header lines."""
    return HTTPResponse(status, TEXT_PLAIN + headers if headers else TEXT_PLAIN, text.encode())


# Close codes an endpoint may send or receive: RFC 6455 7.4 plus IANA's 1012-1014.
VALID_CLOSE_CODES = frozenset(list(range(1000, 1004)) + list(range(1007, 1015)) + list(range(3000, 5000)))


def close_payload(code: int, reason: str = "") -> bytes:
    """The payload of a close frame we send; ``ValueError`` for an invalid code (outside
    1000-1003, 1007-1014, 3000-4999) or a reason longer than 123 bytes of UTF-8."""
    if code.__class__ is not int or code not in VALID_CLOSE_CODES:
        raise ValueError(f"invalid WebSocket close code {code!r}: use 1000-1003, 1007-1014 or 3000-4999")
    raw = reason.encode("utf-8") if reason else b""
    if len(raw) > 123:
        raise ValueError(f"WebSocket close reason too long: {len(raw)} bytes of UTF-8 (at most 123)")
    return bytes((code >> 8, code & 0xFF)) + raw


NO_MESSAGE: Any = type("NoMessage", (), {"__repr__": lambda self: "NO_MESSAGE"})()
"""What ``WebSocketConnection.receive_nowait()`` returns when no message is waiting."""


class ConnectionClosed(Exception):
    """The WebSocket is closed: raised by ``receive()`` once the connection has closed, and by
    the send methods after ``close()`` (or any other close). ``code``/``reason`` are the close
    frame's (the peer's when it closed first; 1005 = its close frame had no code, 1006 = the
    connection dropped without a close frame); ``by`` is ``"client"`` or ``"server"``."""

    def __init__(self, code: int = 1006, reason: str = "", by: str = "", sending: bool = False) -> None:
        what = "cannot send: the WebSocket is closed" if sending else "the WebSocket is closed"
        who = f" by the {by}" if by else ""
        super().__init__(f"{what}{who} (code {code}{': ' + reason if reason else ''})")
        self.code = code
        self.reason = reason
        self.by = by


class WebSocketConnection(Protocol):
    """What a WebSocket session receives from the server (implemented in
    ``server/websocket/protocol.py``).

    One session task runs per connection; ``receive()`` may be awaited by one task at a time.
    Every other method may be called from any task on the server's loop.
    """

    request: HTTPRequest       # the handshake request
    @property
    def closed(self) -> bool: ...
        # true once our close frame was sent or the connection ended
    close_code: int            # after close: the close code (see ConnectionClosed)
    close_reason: str
    closed_by: str             # "client" or "server"

    async def receive(self) -> Union[str, bytes]: ...
        # next message (text → str, binary → bytes); raises ConnectionClosed when closed
    def receive_nowait(self) -> Any: ...
        # a waiting message, else NO_MESSAGE; raises ConnectionClosed when closed
    def next_message(self) -> Awaitable[Union[str, bytes]]: ...
        # a future for the next message, when receive_nowait() said NO_MESSAGE. With the two,
        # a receive loop costs no coroutine object per message (the hot path of an echo).
    async def send(self, message: Union[str, bytes]) -> None: ...
        # waits while the client's buffer is over ws_write_limit; closes 1013 after ws_send_timeout
    def write_message(self, message: Union[str, bytes]) -> None: ...
        # send()'s first half, synchronous: write the frame; the caller then awaits drain()
        # if write_paused. Raises ConnectionClosed when closed.
    def send_nowait(self, message: Union[str, bytes]) -> None: ...
        # never waits; a client over ws_max_write_buffer is dropped with 1013
    async def drain(self) -> None: ...
        # wait while the client's unsent data is over ws_write_limit (1013 after ws_send_timeout)
    @property
    def write_paused(self) -> bool: ...  # the client's unsent data is over ws_write_limit
    def prepare(self, message: Union[str, bytes]) -> bytes: ...
        # the frame bytes, to write with send_frame_nowait to every connection of the same
        # frame_kind (broadcast): compression, when negotiated, makes frames differ
    frame_kind: Any            # None for plain frames; connections with equal kinds share frames
    def send_frame_nowait(self, frame: bytes) -> None: ...
    def close_nowait(self, code: int = 1000, reason: str = "") -> None: ...
        # starts the close handshake; ValueError for an invalid code or a reason over 123 bytes
    async def close(self, code: int = 1000, reason: str = "") -> None: ...
        # close_nowait, then wait until closed (peer's close frame, or ws_close_timeout → abort)
    async def wait_closed(self) -> None: ...
    def on_closed(self, callback: Callable[[], None]) -> None: ...
        # call ``callback()`` (from the loop, soon) once the connection is closed: a session
        # can watch for the close without a task of its own waiting in wait_closed()


class WebSocketAccept:
    """Accept the upgrade and run ``session(connection)`` for the life of the WebSocket."""

    __slots__ = ("session", "headers", "subprotocol")

    def __init__(self, session: Callable[[WebSocketConnection], Awaitable[None]], headers: bytes = b"",
                 subprotocol: Optional[str] = None) -> None:
        self.session = session
        self.headers = headers
        self.subprotocol = subprotocol


class Application(Protocol):
    """What the server runs. It may also have ``own_headers``: a set of lower-case header names
    (``b"server"``, ``b"date"``) the app puts on every response itself; the server then leaves
    its own header of that name out instead of sending two."""

    def handle(self, request: HTTPRequest) -> Union[HTTPResponse, Awaitable[Any]]: ...
    async def startup(self) -> None: ...
    async def shutdown(self) -> None: ...
