"""The contract between the server (bytes, sockets) and the framework (routes, handlers).

The server layer imports nothing from the framework; the framework never touches a socket.
Everything that crosses the line is defined here:

Per HTTP request the server builds one :class:`HTTPRequest` and calls the application's
``handle(request)``. The application answers with

* an :class:`HTTPResponse` (returned directly: the fast path, no task is created), or
* an awaitable that resolves to an :class:`HTTPResponse` or a :class:`WebSocketAccept`
  (the server runs it as a task and answers pipelined requests strictly in order), or
* a *finishing quadruple* ``(coroutine, done, failed, argument)`` (a plain ``tuple``): the
  coroutine's value is not the answer yet. The answer is ``done(argument, value)`` once the
  coroutine returns ``value``, or ``failed(argument, exc)`` once the coroutine or ``done``
  raises the ``Exception`` ``exc`` (a ``BaseException``, a cancel, propagates as from any
  awaitable). ``done`` returns an :class:`HTTPResponse`; ``failed`` one, or a coroutine
  resolving to one. The server runs them where it runs the coroutine (its step, its task, its
  context), as if the coroutine had called them before returning. :class:`Finished` is the
  quadruple as one awaitable, for callers that only await (the TestClient, ``app.asgi``).
  Why: an ``async def`` handler's value must be converted (and its errors answered), and a
  wrapper coroutine of the framework's around the handler's own to do that costs a coroutine
  made and freed and a frame more to step, per request; the server runs the handler's own
  coroutine instead and calls what the framework built once per route.

A body is ``bytes``, an async iterator of chunks (sent chunked) or a :class:`FileBody`: a
range of an open file, sent with its Content-Length and read as the client takes it.

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

The stop: when it begins (a stop signal), the server calls ``application.stopping()`` if the
application has that method, before the drain (readiness checks answer 503 from then on).

Observation: ``application.observer`` (see :class:`Observer`), optional.

Peers: in a worker of ``--processes N``, before serving, the server calls
``receive = application.connect_peers(publish)`` if the application has that method.
``publish(data: bytes)`` hands ``data`` to ``receive(data)`` in every *other* worker process,
in order, without waiting (best effort: see ``server/peers.py``). A single process has no peers
and the method is not called. The framework uses it for WebSocket broadcast.

Work after the response: ``handle`` may answer an :class:`HTTPResponseThen`, an
``HTTPResponse`` with an ``after()`` callback; the server calls it once the response's bytes
are written (handed to the transport, the last chunk of a stream included; a client that left
meanwhile changes nothing), not when writing failed or the request was cancelled. If the application has ``background_pending()`` (a count), the drain
at the stop also waits, within the same ``drain_timeout``, until it says 0; past the deadline
the server calls ``background_deadline()``, which stops or abandons what is left and logs it by
name. The framework uses this for background tasks.

Streamed request bodies: if the application has a callable ``streams_body`` attribute (not
None), the server calls ``streams_body(request)`` once a request's head is parsed and it has a
body (Content-Length > 0 or chunked). True: the request goes to ``handle`` at once with an
empty ``body`` and a :class:`BodyStream` in ``request.body_stream`` (the slot is set only on
such requests: read it with ``getattr(request, "body_stream", None)``), which yields the body's
chunks as they arrive. The server stops reading from the client while ``BODY_STREAM_HIGH`` bytes
wait unread in it, so a slow handler slows the client instead of filling memory.
``max_body_size`` still holds: past it the stream raises :class:`BodyError` (413), the
handler's answer is sent (a :class:`BodyError` it lets through becomes that status), and the
connection closes. An answer sent before the body was read to its end closes the connection
too.
"""

from __future__ import annotations

import asyncio
import os
from collections import deque
from typing import Any, AsyncIterator, Awaitable, Callable, Coroutine, Generator, Optional, Protocol, Union


class HTTPRequest:
    """One parsed request, as raw as the framework can use it.

    ``headers`` is a list of ``(lower-case name, value)`` byte pairs in arrival order;
    ``path`` and ``query`` are the raw (still percent-encoded) parts of the target.
    """

    __slots__ = (
        "method", "target", "path", "query", "headers", "body", "client", "server",
        "scheme", "http_version", "keep_alive", "websocket", "host", "body_stream",
        # Set only when the application has an ``observer`` (see ``Observer``); never read
        # otherwise, so they cost nothing: when the request began (``perf_counter``), the read
        # the request's head arrived in when it began that read (else b"": see
        # ``server/observed.py``), and, only when the observer has ``request_received`` (which
        # sets them), the header lines its response gains (the app's, e.g. ``x-request-id``)
        # and the observer's own data.
        "started", "reply_headers", "observed", "first_read",
    )
    body_stream: "BodyStream"  # set only when the application streams this request's body
    started: float
    reply_headers: bytes
    observed: Any
    first_read: bytes

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


class FileBody:
    """A body read from a file: ``length`` bytes from ``offset`` of the open file descriptor
    ``fd``, which the FileBody owns. Put in ``HTTPResponse.stream``, the server sends it with a
    Content-Length (no chunking), reading a piece at a time as the client takes it, so a large
    file never sits in memory; it closes the descriptor when done or when the connection ends
    (and a FileBody dropped unsent closes it when collected).

    It is also an async iterator of its pieces, so that whatever only knows streams (the
    TestClient, an ASGI server under ``app.asgi``) still gets the bytes."""

    __slots__ = ("fd", "offset", "length")

    CHUNK = 256 * 1024

    def __init__(self, fd: int, offset: int, length: int) -> None:
        self.fd = fd
        self.offset = offset
        self.length = length

    def read_chunk(self, size: int = CHUNK) -> bytes:
        """The next piece (``b""`` when done), advancing ``offset`` and ``length``; ``OSError``
        when the file ends before ``length`` bytes (it was truncated meanwhile)."""
        if self.length <= 0:
            return b""
        chunk = os.pread(self.fd, min(size, self.length), self.offset)
        if not chunk:
            raise OSError(f"the file ended {self.length} bytes early (truncated while being sent)")
        self.offset += len(chunk)
        self.length -= len(chunk)
        return chunk

    def close(self) -> None:
        fd, self.fd = self.fd, -1
        if fd >= 0:
            os.close(fd)

    def __del__(self) -> None:
        if self.fd >= 0:
            self.close()

    def __aiter__(self) -> "FileBody":
        return self

    async def __anext__(self) -> bytes:
        chunk = self.read_chunk()
        if not chunk:
            self.close()
            raise StopAsyncIteration
        return chunk

    async def aclose(self) -> None:
        self.close()


class HTTPResponse:
    """What the framework hands back: a status, pre-encoded header lines and a body.

    ``headers`` is a ``bytes`` block of ``name: value\\r\\n`` lines *without* framing headers
    (Content-Length, Transfer-Encoding, Connection, Date, Server); the server adds those.
    Exactly one of ``body`` (bytes) and ``stream`` is used: an async iterator of bytes (sent
    chunked), or a :class:`FileBody` (sent with its length as Content-Length).
    """

    __slots__ = ("status", "headers", "body", "stream")

    def __init__(self, status: int, headers: bytes = b"", body: bytes = b"",
                 stream: Union[AsyncIterator[bytes], FileBody, None] = None) -> None:
        self.status = status
        self.headers = headers
        self.body = body
        self.stream = stream


class Finished:
    """A finishing quadruple (see the module's docstring) as one awaitable resolving to the
    answer. ``close()`` closes the coroutine, for an owner that drops it unawaited."""

    __slots__ = ("coro", "done", "failed", "argument")

    def __init__(self, quadruple: tuple[Coroutine[Any, Any, Any], Callable[[Any, Any], HTTPResponse],
                                        Callable[[Any, Exception], Any], Any]) -> None:
        self.coro, self.done, self.failed, self.argument = quadruple

    def __await__(self) -> Generator[Any, None, Any]:
        answer: Any
        try:
            answer = self.done(self.argument, (yield from self.coro.__await__()))
        except Exception as exc:
            answer = self.failed(self.argument, exc)
            if not isinstance(answer, HTTPResponse):
                answer = yield from answer.__await__()
        return answer

    def close(self) -> None:
        self.coro.close()


class HTTPResponseThen(HTTPResponse):
    """An ``HTTPResponse`` with ``after()``: called by the server once the response is written
    (background tasks). Never the fast path: the server awaits the handler's result first."""

    __slots__ = ("after",)

    def __init__(self, response: HTTPResponse, after: Callable[[], None]) -> None:
        HTTPResponse.__init__(self, response.status, response.headers, response.body, response.stream)
        self.after = after


class BodyError(Exception):
    """A streamed request body cannot be read on: too large (413), too slow (408), or the
    client went away (400; it will not see an answer). ``status`` is the HTTP answer it calls for."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


BODY_STREAM_HIGH = 256 * 1024  # unread bytes in a BodyStream before the server stops reading
BODY_STREAM_LOW = 64 * 1024    # ... and resumes reading once the handler is down to this


class BodyStream:
    """The body of one streamed request, as it arrives: ``async for chunk in stream``.

    Filled by the server (``feed``, ``finish``, ``fail``); read by one task. ``on_drained`` is
    the server's: called when the reader took the unread bytes down to ``BODY_STREAM_LOW``."""

    __slots__ = ("chunks", "unread", "done", "error", "waiter", "on_drained", "received", "__weakref__")

    def __init__(self, on_drained: Callable[[], None]) -> None:
        self.chunks: deque[bytes] = deque()
        self.unread = 0
        self.done = False
        self.error: Optional[BodyError] = None
        self.waiter: Optional[asyncio.Future[None]] = None  # the future the reader awaits while nothing is unread
        self.on_drained = on_drained
        self.received = 0  # bytes fed so far

    @property
    def full(self) -> bool:
        return self.unread >= BODY_STREAM_HIGH

    def feed(self, chunk: bytes) -> None:
        self.chunks.append(chunk)
        self.unread += len(chunk)
        self.received += len(chunk)
        self._wake()

    def finish(self) -> None:
        self.done = True
        self._wake()

    def fail(self, error: BodyError) -> None:
        if not self.done:
            self.error = error
            self.done = True
        self._wake()

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def __aiter__(self) -> "BodyStream":
        return self

    async def __anext__(self) -> bytes:
        while not self.chunks:
            if self.done:
                if self.error is not None:
                    raise self.error
                raise StopAsyncIteration
            self.waiter = asyncio.get_running_loop().create_future()
            await self.waiter
        chunk = self.chunks.popleft()
        before = self.unread
        self.unread = before - len(chunk)
        if before > BODY_STREAM_LOW >= self.unread:
            self.on_drained()
        return chunk


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

    def __init__(self, session: Callable[[WebSocketConnection], Coroutine[Any, Any, None]], headers: bytes = b"",
                 subprotocol: Optional[str] = None) -> None:
        self.session = session
        self.headers = headers
        self.subprotocol = subprotocol


class Observer(Protocol):
    """``application.observer``, when the application has one that is not ``None``: told about
    every request and WebSocket session (access log, metrics). The server then runs observing
    subclasses of its protocols (``server/observed.py``); without one, nothing of this runs.

    ``request_received`` is called once a request's head is read, before it can be answered
    (its ``started`` is set; a streamed body has not arrived yet); it must set
    ``request.reply_headers`` (bytes of header lines, maybe none) for whatever answers it,
    including the 101 of a WebSocket, and ``request.observed``. It may be ``None`` (nothing to
    do then; read once per connection; the two attributes are then never set). ``response_sent`` is called when the last byte of the answer is written, with the
    body bytes written and the seconds since the request's first byte (for a request the
    server refused while reading it, e.g. 413, ``request`` is ``None``). An observer may have
    ``connection_reporter()``: called once per connection, what it returns is called in place
    of ``response_sent`` for that connection's answers (a sink then keeps what a connection's
    answers share in hand). ``requests_in_flight(current=None)`` is set by the server when it
    begins serving: the requests from their first byte until they are answered (or dropped
    while they arrived), the requests being read and being answered, counted from the live
    connections when it is called (nothing per request); ``current``, the request a handler
    answers while it asks (a scrape), counts as one too.
    A WebSocket reports ``websocket_opened`` after its 101 and ``websocket_closed`` once, with
    the close code, who closed, the messages received and sent, and the seconds it was open.
    """

    request_received: Optional[Callable[[HTTPRequest], None]]
    requests_in_flight: Callable[[Optional[HTTPRequest]], int]  # set by the server
    def response_sent(self, request: Optional[HTTPRequest], status: int, sent: int, seconds: float) -> None: ...
    def websocket_opened(self, request: HTTPRequest) -> None: ...
    def websocket_closed(self, request: HTTPRequest, code: int, by: str, received: int, sent: int,
                         seconds: float) -> None: ...


class Application(Protocol):
    """What the server runs. It may also have ``own_headers``: a set of lower-case header names
    (``b"server"``, ``b"date"``) the app puts on every response itself; the server then leaves
    its own header of that name out instead of sending two."""

    def handle(self, request: HTTPRequest) -> Union[HTTPResponse, Awaitable[Any], tuple[Any, Any, Any, Any]]: ...
    async def startup(self) -> None: ...
    async def shutdown(self) -> None: ...
