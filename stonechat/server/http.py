"""The HTTP/1.1 protocol: one ``asyncio.Protocol`` per connection, parsing with httptools.

Owns framing, limits, timeouts, keep-alive, pipelining order and flow control. It knows the
application only through ``server/interface.py`` and never sees a route or a handler.

Theory of operation
-------------------
httptools calls us back as bytes are parsed; every finished request is appended to
``self.pending``. Requests are answered strictly one at a time, in arrival order: a request
whose application result is ready at once (a sync handler) is written straight away. A
coroutine (an async handler) gets its first step at once too (``eager.py``): most return without
suspending and are written straight away as well, with no Task made and no loop turn. One that
suspends, or any other awaitable, goes to the connection's task, and the queue waits for it.
That task (``_Runner``) is made at a connection's first coroutine, or taken over from a closed
connection that left it parked, and parks between requests; it is the current task during every
eager step, so handlers always see the one task that would continue them (``current_task()``,
timeouts, cancellation on disconnect). A protocol
error stops parsing; everything queued before it is still answered, then the error response,
then the connection closes. Timeouts are checked once a second by ``ServerState.tick`` rather
than with a timer per request, which keeps the per-request path free of allocations.

Files
-----
A ``FileBody`` response (``_write_file``) goes out with its length as Content-Length. While
nothing of ours waits in the transport's buffer, ``os.sendfile`` hands the kernel as much of
the file as the socket takes (plain HTTP only: TLS needs the bytes); the rest is read in 256 KiB
pieces and written through the transport, waiting whenever the client lags, so the bytes stay in
order whichever way each piece went and memory holds at most a piece plus the write buffer.

Closing without losing anything
-------------------------------
Whenever we close a connection after a response, we close it *lingering*: shut our sending
side (the client sees a clean end-of-file after the last response), read and drop whatever
the client still sends, and close when it closes or ``LINGER`` seconds later. Closing a socket
that has unread data makes the kernel send a reset, and a reset destroys responses the client
had not read yet.

During the stop (``runner.py`` calls ``begin_drain``/``drain_step``/``drain_deadline_passed``)
every response carries ``Connection: close``, but a connection whose client asked to keep it
is not closed right after that response: a pipelining client has sent more already, and a
keep-alive client may be sending its next request this very moment. Everything that arrives
is answered (with the real answer while the drain lasts, 503 after its deadline); the drain
closes the connection, lingering, once the client has been quiet for a moment or closes it.
"""

from __future__ import annotations

import asyncio
import contextvars
import errno
import logging
import os
import re
from collections import deque
from http import HTTPStatus
from types import CoroutineType
from typing import Any, Callable, Optional

import httptools

from .eager import (DONE, Outcome, Suspended, cancel_requested, enter_task, forget_cancels, leave_task, primed_point,
                    primed_task, start_relay)
from .flow import FlowControl
from .interface import (BODY_STREAM_HIGH, NO_BODY_STATUSES, TEXT_PLAIN as _TEXT_PLAIN, BodyError, BodyStream, FileBody, Finished,
                        HTTPRequest, HTTPResponse, HTTPResponseThen, WebSocketAccept, plain_response)
from .state import ServerState
from .websocket.handshake import check_handshake
from .websocket.protocol import WebSocketProtocol

logger = logging.getLogger("stonechat.server")

# A request line with a syntactically valid method token (RFC 9110 5.6.2) and an HTTP version.
_REQUEST_LINE = re.compile(rb"(?:^|\n)([!#$%&'*+.^_`|~0-9A-Za-z-]+) [^ \r\n]+ HTTP/1\.[01]\r?\n")


def _unknown_method_line(data: bytes) -> bool:
    """Whether the request the parser stopped at (the last request line in ``data``) is
    well formed but for a method it does not know, rather than garbage."""
    lines = _REQUEST_LINE.findall(data)
    return bool(lines) and lines[-1] not in _METHODS


_VERSIONS = {v: v for v in ("0.9", "1.0", "1.1", "2.0")}
_METHODS = {m: m.decode() for m in (
    b"GET", b"POST", b"PUT", b"DELETE", b"PATCH", b"HEAD", b"OPTIONS", b"CONNECT", b"TRACE")}


def _status_line(status: int) -> bytes:
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = ""
    return b"HTTP/1.1 %d %s\r\n" % (status, phrase.encode())


_STATUS_LINES = {s.value: _status_line(s.value) for s in HTTPStatus}
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
# The Content-Length line of every small body, made once (about 50 KiB).
_CONTENT_LENGTHS_UPTO = 1024
_CONTENT_LENGTHS = [b"content-length: %d\r\n" % size for size in range(_CONTENT_LENGTHS_UPTO)]
_join = b"".join
_SHUTTING_DOWN = b"Service unavailable: server shutting down\n"
# A lingering close ends when the client closes its side, has sent nothing for LINGER_QUIET
# seconds, or LINGER seconds have passed (a client still sending, e.g. an upload after a 413).
LINGER = 2.0
LINGER_QUIET = 0.25
# RFC 3986 reg-name / IP-literal / port characters: anything else in Host is refused.
_HOST_CHARS = bytes(range(0x30, 0x3A)) + bytes(range(0x41, 0x5B)) + bytes(range(0x61, 0x7B)) + b"-._~!$&'()*+,;=:%[]"
# Host is checked with one table lookup per byte: every allowed byte becomes b"a", any other
# b"\0", so a valid value turns into letters only (translate with a table alone is a plain
# loop; with a set of bytes to delete it builds a table on every call).
_HOST_TABLE = bytes(0x61 if c in _HOST_CHARS else 0 for c in range(256))


_os_sendfile = getattr(os, "sendfile", None)
_SENDFILE_MIN = 64 * 1024  # below this one read and one write cost less than the calls around sendfile
_SENDFILE_UNSUPPORTED = frozenset({errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP})


def _sendfile(sock_fd: int, body: FileBody) -> int:
    """Bytes the kernel sent from ``body`` straight to the socket (advancing it); 0 when the
    socket is full or the file ended early (the usual path then says so), -1 when the file
    system cannot (the caller stops trying). A broken connection raises, as a write would."""
    try:
        sent = _os_sendfile(sock_fd, body.fd, body.offset, body.length)  # type: ignore[misc]
    except BlockingIOError:
        return 0
    except OSError as exc:
        if exc.errno in _SENDFILE_UNSUPPORTED:
            return -1
        raise
    body.offset += sent
    body.length -= sent
    return sent


class _ParsedRequest(HTTPRequest):
    """An ``HTTPRequest`` made by the parser, which sets every field itself: ``object.__init__``
    in place of HTTPRequest's defaults makes the instance in C, with no Python call."""

    __slots__ = ()
    __init__ = object.__init__


class _Reject(Exception):
    """Raised inside a parser callback to stop parsing with an HTTP error."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


# Set as ``error`` when the client shuts its sending side with requests still owed: after
# them, "sending the error" closes the connection (the queue already checks ``error``).
_PEER_DONE = _Reject(0, "the client closed its side")
# Set as ``error`` when a streamed body failed (too large, too slow) while its request is the
# application's: the application answers it, then the connection closes (lingering).
_CLOSE_AFTER = _Reject(0, "a streamed body ended early")


class _Ready:
    """An answer an eager step already has (a stream), for the connection's task to write."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __await__(self) -> Any:
        return self.value
        yield  # a generator: awaiting it returns at once


class _Cancelled:
    """What the task awaits when it was cancelled before taking over an awaitable."""

    def __await__(self) -> Any:
        raise asyncio.CancelledError()
        yield


# How many parked runners closed connections may leave for the next ones (ServerState.spare_runners).
SPARE_RUNNERS = 256


class _Runner:
    """A connection's task (``task``, made at its first coroutine), the connection it serves now
    (``conn``) and the future it parks on between requests (``wake``).

    Why it outlives its connection: making, starting and ending a Task costs ~28k instructions
    (its name, the weak set of all tasks, a loop step to start it and one to end it), more than
    a whole request, and a keep-alive connection may carry only a few requests. A runner whose
    connection closes while it is parked (nothing of that connection left to answer, no cancel
    pending) stays parked in ``ServerState.spare_runners`` and serves the next connection that
    runs a coroutine. The same Task then answers several connections one after the other, as it
    answers one connection's requests one after the other."""

    __slots__ = ("task", "conn", "wake", "relay", "outcome")

    def __init__(self, conn: "HttpProtocol") -> None:
        self.conn: Optional[HttpProtocol] = conn
        self.wake: Optional[asyncio.Future[None]] = None
        self.task = primed_task(conn.loop, _serve_connections(self))
        # The relay that runs the eager steps under this task, and where it leaves values
        # (eager.py). The runner's, not a connection's: it is only ever busy with the job of
        # the connection the runner serves, and idle when the runner is parked, so it serves
        # the next connection too (a relay made per connection cost ~1k instructions each).
        self.outcome = Outcome()
        self.relay: Callable[[Any], Any] = start_relay(self.outcome)


async def _serve_connections(runner: _Runner) -> None:
    """A runner's task: parks until its connection has a request to await (``job``), answers
    it, parks again. Ends when cancelled with its connection closed (``connection_lost``, unless
    the runner is kept as a spare), or when cancelled from outside while parked (the loop closing)."""
    waiting: Any = primed_point()  # primed_task runs us up to this await
    while True:
        if waiting is not None:
            try:
                await waiting
            except asyncio.CancelledError:
                conn = runner.conn
                if conn is None or conn.closing or (conn.job is None and not conn.stray_cancel):
                    runner.conn = runner.wake = None
                    if conn is not None:
                        conn._drop_job()
                        if conn.runner is runner:
                            conn.runner = None
                    return
                job = conn.job
                if job is None:
                    # cancelled during an eager step that then returned: nothing to cancel
                    conn.stray_cancel = False
                    forget_cancels(runner.task)
                elif isinstance(job[1], Suspended):
                    job[1].cancel()  # for the handler, at the await it suspended on
                else:
                    conn._drop_job()
                    conn.job = (job[0], _Cancelled())
            runner.wake = waiting = None
        conn = runner.conn
        assert conn is not None  # a spare is not woken: it is only ever cancelled
        if conn.closing:
            conn._drop_job()
            return
        job = conn.job
        if job is None:
            waiting = runner.wake = conn.loop.create_future()
            continue
        conn.job = None
        await conn._run(*job)
        if conn.closing:
            return
        if conn.job is None and conn.runner is runner:
            forget_cancels(runner.task)  # the next request starts with none, as a new task would


class HttpProtocol(FlowControl, asyncio.Protocol):
    # What a successful upgrade hands the connection to (observed.py: a counting subclass).
    websocket_protocol = WebSocketProtocol
    # Whether _keep_alive_header is this class's own (a subclass that overrides it says False,
    # and _write_response then always calls it).
    plain_keep_alive = True

    __slots__ = (
        "state", "settings", "app", "parser", "client", "server_addr",
        "scheme", "pending", "task", "request", "url", "budget",
        "body_parts", "in_body", "head_started", "idle_since", "body_progress", "body_started",
        "error", "closing", "upgrade_tail",
        "send_continue", "host_count", "connection_field", "expect_continue", "chunked", "linger_deadline", "linger_heard",
        "streamed", "counting", "uncounted_read",
        "runner", "job", "context", "stray_cancel",
    )

    def __init__(self, state: ServerState) -> None:
        FlowControl.__init__(self, state.loop)
        self.state = state
        self.settings = state.settings
        self.app = state.app
        self.parser = httptools.HttpRequestParser(self)
        self.pending: deque[HTTPRequest] = deque()
        # The connection's task (``runner.task``) while it answers a request; None while the
        # queue may go on. ``job`` is what it is to await next.
        self.task: Optional[asyncio.Task[None]] = None
        self.runner: Optional[_Runner] = None
        self.job: Optional[tuple[HTTPRequest, Any]] = None
        self.stray_cancel = False
        self.context = contextvars.copy_context()  # each request's steps run in a fresh copy
        self.request: Optional[HTTPRequest] = None
        # The body of the request being read, in pieces: one list for the connection, emptied
        # by on_message_complete (a request with no body never touches it).
        self.body_parts: list[bytes] = []
        self._reset_message()
        self.head_started: Optional[float] = None
        self.idle_since = state.now
        self.body_progress = state.now
        self.body_started = state.now
        self.error: Optional[_Reject] = None
        self.closing = False
        self.upgrade_tail: Optional[bytes] = None
        self.send_continue = False
        self.linger_deadline = 0.0   # set by a lingering close: when to stop waiting
        self.linger_heard = 0.0      # when the client last sent something we then dropped
        self.streamed: Optional[HTTPRequest] = None  # a request whose body streams to the app, until its end
        self.counting = True  # whether the head budget is kept (see the note above on_message_begin)
        self.uncounted_read = self.settings.max_head_size * 4 // 5

    # -- connection events ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        state = self.state
        self.client = transport.get_extra_info("peername")
        self.server_addr = transport.get_extra_info("sockname")
        self.scheme = "https" if transport.get_extra_info("sslcontext") else "http"
        # A connection accepted during the stop is served (its request may be on its way): only
        # the listening socket refuses new ones. A full table still refuses.
        if len(state.connections) >= self.settings.max_connections:
            logger.warning("refusing connection from %s: max_connections reached", self.client)
            self._write_response(None, plain_response(503, "Server busy, try again later\n"), False)
            transport.close()  # not counted, so no lingering (its deadline would not be checked)
            return
        state.connections.add(self)
        transport.set_write_buffer_limits(high=self.settings.write_buffer_high)  # type: ignore[attr-defined]
        self.head_started = state.now  # a silent new connection is held to the header timeout

    def connection_lost(self, exc: Optional[BaseException]) -> None:
        self.closing = True
        self.state.connections.discard(self)
        runner = self.runner
        if runner is not None:
            self.runner = None
            if not self._spare(runner):
                runner.task.cancel()  # the request it runs is cancelled; parked, it just ends
        if self.streamed is not None:
            self.streamed.body_stream.fail(BodyError(400, "the client closed the connection before the body ended"))
        self.wake_writers()  # a streaming response stops at its next chunk
        self._drop_parser()

    def _drop_parser(self) -> None:
        """Done parsing on this connection. The parser holds our bound callbacks: letting go of
        it ends that cycle, so the connection is freed at once, not by the cyclic collector."""
        try:
            del self.parser
        except AttributeError:
            pass

    def pause_writing(self) -> None:
        # The client is not reading its responses: stop reading its requests until it does.
        self.write_paused = True
        self.pause_reading()

    def resume_writing(self) -> None:
        FlowControl.resume_writing(self)
        if self.task is None and (self.pending or self.error is not None):
            self._process()  # answers held back by pause_writing
        else:
            self._maybe_resume_reading()

    def eof_received(self) -> Optional[bool]:
        # Half-close from the client: answer what was already received, then close.
        if self.closing or (not self.pending and self.task is None):
            return False  # the transport closes (after flushing what we wrote)
        if self.error is None:
            self.error = _PEER_DONE  # once the answers owed are written: close
        return True

    def data_received(self, data: bytes) -> None:
        if self.closing or self.error is not None:
            if self.linger_deadline:
                self.linger_heard = self.loop.time()  # dropped; the client is still sending
            return
        # (budget: see the note above on_message_begin)
        if self.request is not None and not self.in_body:  # a head continues from the last read
            if not self.counting:
                self._count_head()
        else:
            self.counting = len(data) > self.uncounted_read
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            # The upgrade request was queued by on_message_complete; keep what followed it
            # (the first WebSocket frames, maybe) for the protocol that takes over.
            self.upgrade_tail = data[exc.args[0]:]
            self.pause_reading()
            if self.pending:
                # The parser cannot go on after an upgrade: unless this becomes a WebSocket,
                # the connection closes after its response (h2c, refused handshakes).
                self.pending[-1].keep_alive = False
        except _Reject as exc:
            self._fail(exc)
        except httptools.HttpParserError as exc:
            cause = exc.__context__
            if isinstance(cause, _Reject):
                self._fail(cause)
            elif isinstance(exc, httptools.HttpParserInvalidMethodError) and _unknown_method_line(data):
                # A well-formed request line whose method token we do not know: 405, as Robyn
                # answers (garbage in place of a request line stays a 400).
                self._fail(_Reject(405, "Method not allowed"))
            else:
                detail = str(exc) or "malformed request"
                self._fail(_Reject(400, f"Bad request: {detail}"))
        self._process()

    # -- parser callbacks ---------------------------------------------------------------

    # Limits are one running budget (``budget``): what is left of ``max_head_size`` for the
    # request line and headers, then of ``max_body_size`` for the body and trailers. Each
    # callback subtracts what it got and compares with 0, rather than adding to a count and
    # looking the limit up in the settings every time.
    #
    # A head cannot overrun its budget inside a read of at most ``uncounted_read`` bytes (4/5
    # of ``max_head_size``): it counts its target once, and per field ``name + value + 4``,
    # which is at most 5/4 of the field's bytes on the wire (``n:v\r\n`` is 4 bytes and
    # more). So the head budget is kept (``counting``) only for a larger read, or for a head
    # that continues from an earlier read (``_count_head`` catches up on what came before):
    # the common head, whole in one small read, pays no arithmetic per field.

    def on_message_begin(self) -> None:
        # Every other field is set once the head is parsed (on_headers_complete), the body at
        # the message's end (on_message_complete, or _maybe_stream).
        self.request = request = _ParsedRequest()
        request.headers = []
        request.client = self.client
        request.server = self.server_addr
        request.scheme = self.scheme
        # The parse state of one request, fresh (as _reset_message, inline: once per request).
        self.url = b""
        self.budget = self.settings.max_head_size
        self.host_count = 0
        self.connection_field = False
        self.expect_continue = False
        self.chunked = False
        self.in_body = False
        if self.head_started is None:
            self.head_started = self.state.now

    def _reset_message(self) -> None:
        """The parse state of one request, fresh: for the first request and every next one."""
        self.url = b""  # the request target as received so far (on_url may come in pieces)
        self.budget = self.settings.max_head_size
        self.host_count = 0
        self.connection_field = False
        self.expect_continue = False
        self.chunked = False
        self.in_body = False

    def on_url(self, url: bytes) -> None:
        # (b"" + url is url itself: no copy for a target in one piece; one in pieces, one per
        # read, is bounded by max_head_size and the header timeout)
        self.url += url
        if self.counting:
            self.budget = budget = self.budget - len(url)
            if budget < 0:
                raise _Reject(414, "Request line too long")

    def _count_head(self) -> None:
        """The head in progress continues in this read: its budget from what it has so far,
        counted from now on (see the note above on_message_begin)."""
        request = self.request
        assert request is not None
        budget = self.settings.max_head_size - len(self.url)
        for name, value in request.headers:
            budget -= len(name) + len(value) + 4
        self.budget = budget
        self.counting = True

    def _count_field(self, name: bytes, value: bytes) -> bool:
        """Counts a field against the budget (431, or 413 for a trailer); True for a trailer,
        which is then ignored."""
        self.budget = budget = self.budget - (len(name) + len(value) + 4)
        if self.in_body:  # a trailer field of a chunked body: bounded, then ignored
            if budget < 0:
                raise _Reject(413, "Request body too large")
            return True
        if budget < 0:
            raise _Reject(431, "Request header fields too large")
        return False

    def on_header(self, name: bytes, value: bytes) -> None:
        if (self.counting or self.in_body) and self._count_field(name, value):
            return
        # (the count of fields is checked in on_headers_complete: budget bounds the memory)
        name = name.lower()
        # (comparisons, not a set: hashing each fresh lower-case name costs more than these)
        if name == b"host":
            self.host_count += 1
            if value and not value.translate(_HOST_TABLE).isalpha():
                raise _Reject(400, "Bad request: invalid Host header")
            self.request.host = value  # type: ignore[union-attr]
        elif name == b"content-length":
            # Refuse an announced oversize body before reading any of it.
            if value.isdigit() and (len(value) > 18 or int(value) > self.settings.max_body_size):
                raise _Reject(413, "Request body too large")
        elif name == b"transfer-encoding":
            self.chunked = True
        elif name == b"connection":
            self.connection_field = True
        elif name == b"expect":
            if value.lower() != b"100-continue":
                raise _Reject(417, "Unsupported Expect header")
            self.expect_continue = True
        self.request.headers.append((name, value))  # type: ignore[union-attr]

    def on_headers_complete(self) -> None:
        request = self.request
        parser = self.parser
        assert request is not None
        if len(request.headers) > self.settings.max_header_count:
            raise _Reject(431, "Too many request header fields")
        method = parser.get_method()
        # (GET by one comparison: the lookup would hash the fresh bytes first)
        request.method = "GET" if method == b"GET" else _METHODS.get(method) or method.decode("ascii", "replace")
        request.keep_alive = keep_alive = parser.should_keep_alive()
        if keep_alive and not self.connection_field:
            # Only HTTP/1.1 keeps a connection without a Connection field (llhttp accepts the
            # versions 0.9, 1.0, 1.1 and 2.0, and keeps the others only on "keep-alive"; see
            # tests/server/test_parser_assumptions.py): the common case skips get_http_version,
            # which formats a new string each time.
            version = "1.1"
        else:
            version = parser.get_http_version()
            # one object per version (get_http_version makes a new string each time), so that
            # what keeps texts per connection can test a request's version with ``is``
            version = _VERSIONS.get(version, version)
        request.http_version = version
        hosts = self.host_count
        if hosts != 1:
            if hosts:
                raise _Reject(400, "Bad request: more than one Host header")
            if version != "1.0":
                raise _Reject(400, "Bad request: missing Host header")
            request.host = b""
        if self.chunked and version == "1.0":
            # RFC 9112 6.1: Transfer-Encoding in an HTTP/1.0 message is faulty framing.
            raise _Reject(400, "Bad request: Transfer-Encoding is not allowed in HTTP/1.0")
        request.target = target = self.url
        request.query = b""
        if target[:1] == b"/":
            # Bytes tested by their int value (63 "?", 35 "#"): ``b"?" in target`` first tries
            # its operand as an int and pays for a TypeError; find() parses its arguments
            # with a format string.
            if 63 not in target and 35 not in target:
                request.path = target
            else:
                path, _, query = target.partition(b"?")
                request.path = path.partition(b"#")[0]
                request.query = query.partition(b"#")[0]
        elif target == b"*" and request.method == "OPTIONS":
            request.path = b"*"
        else:
            try:
                url = httptools.parse_url(target)
            except httptools.HttpParserInvalidURLError:
                raise _Reject(400, "Bad request: invalid request target") from None
            request.path = url.path or b"/"
            request.query = url.query or b""
        request.websocket = False
        if parser.should_upgrade():
            for name, value in request.headers:
                if name == b"upgrade" and value.lower() == b"websocket":
                    request.websocket = True
        self.head_started = None
        self.in_body = True
        self.budget = self.settings.max_body_size  # the body and the trailers now
        self.body_progress = self.body_started = self.state.now
        if self.expect_continue and version == "1.1":
            if not self.pending and self.task is None:
                self.transport.write(_CONTINUE)
            else:
                self.send_continue = True  # after the responses queued before it
        if self.state.streams_body is not None and not request.websocket:
            self._maybe_stream(request)

    def _maybe_stream(self, request: HTTPRequest) -> None:
        """The application streams this request's body (``interface.py``): hand the request over
        now, with a ``BodyStream`` that ``on_body`` fills."""
        if not self.chunked:
            for name, value in request.headers:
                if name == b"content-length":
                    if value.strip(b" \t") in (b"", b"0"):
                        return
                    break
            else:
                return  # no body
        streams_body = self.state.streams_body
        if streams_body is None or not streams_body(request):
            return
        request.body = b""
        request.body_stream = BodyStream(self._stream_drained)
        self.streamed = request
        self.pending.append(request)

    def _stream_drained(self) -> None:
        """The handler read the streamed body down to its low-water mark: read from the client again."""
        if self.read_paused and self.streamed is not None:
            self.body_progress = self.state.now  # the pause was ours, not the client's
            self._maybe_resume_reading()

    def on_body(self, chunk: bytes) -> None:
        self.budget = budget = self.budget - len(chunk)
        if budget < 0:
            raise _Reject(413, "Request body too large")
        streamed = self.streamed
        if streamed is None:
            self.body_parts.append(chunk)
        else:
            stream = streamed.body_stream
            stream.feed(chunk)
            if stream.unread >= BODY_STREAM_HIGH:
                self.pause_reading()  # the handler is slower than the client
        self.body_progress = self.state.now

    def on_message_complete(self) -> None:
        request = self.request
        assert request is not None
        if self.streamed is not None:  # already handed over (_maybe_stream)
            self.streamed = None
            request.body_stream.finish()
            self.in_body = False
            self.send_continue = False
            self.request = None
            return
        parts = self.body_parts
        if parts:
            request.body = parts[0] if len(parts) == 1 else b"".join(parts)
            parts.clear()
        else:
            request.body = b""
        self.in_body = False
        self.send_continue = False
        self.request = None
        self.pending.append(request)
        if len(self.pending) > self.settings.max_pipelined:
            self.pause_reading()

    # -- answering -----------------------------------------------------------------------

    def _process(self, in_runner: bool = False) -> None:
        """Answer queued requests in order until one needs awaiting or the queue is empty.
        ``in_runner``: called by the connection's task itself (it is the current task).

        Stops while the client is not reading (``write_paused``): ``resume_writing`` carries
        on, so at most one response beyond the write-buffer limit is ever buffered."""
        while self.task is None and not self.closing and not self.write_paused:
            if not self.pending:
                if self.error is not None:
                    self._send_error()
                    return
                if self.send_continue:
                    self.send_continue = False
                    self.transport.write(_CONTINUE)
                if self.read_paused:
                    self._maybe_resume_reading()
                return
            request = self.pending.popleft()
            if request.websocket:
                refusal = check_handshake(request, self.state)
                if refusal is None and self.state.stopping:
                    refusal = plain_response(503, _SHUTTING_DOWN.decode())
                if refusal is not None:
                    request.websocket = False
                    self._write_response(request, refusal, request.keep_alive)
                    continue
            try:
                result = self.app.handle(request)
            except Exception:
                logger.exception("unhandled error in the application for %s %s",
                                 request.method, request.target)
                result = plain_response(500, "Internal Server Error\n")
            if result.__class__ is HTTPResponse and result.stream is None:
                self._write_response(request, result, request.keep_alive)
            elif result.__class__ is tuple or result.__class__ is CoroutineType:  # (a finishing quadruple first: the common one)
                # The coroutine's first step, now, under the connection's task; the task takes
                # the coroutine over only if it suspends (see eager.py). A finishing quadruple
                # (interface.py) is run by the relay, done/failed included, which then yields
                # the answer itself (no Outcome to read). Inline here rather than a method of
                # its own (a call less per request, issue 13), and written for the common case,
                # a quadruple answered at once with a plain response and nothing else to do:
                # one test of each, then the write. Everything else (a coroutine's value, a
                # suspension, a stream, a stray cancel, a body still arriving) is _stepped.
                runner = self.runner
                if runner is None:
                    runner = self.runner = self._take_runner()
                task = runner.task
                if not in_runner:
                    try:
                        enter_task(self.loop, task)
                    except RuntimeError:  # another task is current: let ours run it from the start
                        self._hand_over(request, Finished(result) if result.__class__ is tuple else result)
                        continue
                context = self.context.copy()
                try:
                    try:
                        answer = context.run(runner.relay, result)
                    except StopIteration:  # the relay is spent (an exception ended it): a fresh one
                        runner.relay = start_relay(runner.outcome)
                        answer = context.run(runner.relay, result)
                except asyncio.CancelledError:
                    self._write_response(request, plain_response(503, _SHUTTING_DOWN.decode()), False)
                    continue
                except Exception:
                    logger.exception("unhandled error while answering %s %s", request.method, request.target)
                    self._write_response(request, plain_response(500, "Internal Server Error\n"), False)
                    continue
                finally:
                    if not in_runner:
                        leave_task(self.loop, task)
                if (answer.__class__ is HTTPResponse and answer.stream is None and not cancel_requested(task)
                        and self.streamed is not request):
                    self._write_response(request, answer, request.keep_alive)
                else:
                    self._stepped(request, answer, runner, context)
            else:
                self._hand_over(request, result)

    # -- awaiting: the eager first step, the connection's task ---------------------------

    def _stepped(self, request: HTTPRequest, result: Any, runner: _Runner, context: contextvars.Context) -> None:
        """What the eager step in ``_process`` leaves: ``result`` is what the relay yielded
        (``leave_task`` done)."""
        if result is DONE:  # a coroutine returned: its value is in the outcome
            outcome = runner.outcome
            result, outcome.value = outcome.value, None
        elif not isinstance(result, HTTPResponse):  # (a quadruple's answer is one; a future never is)
            # suspended on ``result``: the relay's generator (``relay`` is its send) goes on with
            # the coroutine in the connection's task
            self._hand_over(request, Suspended(runner.relay.__self__, context, result,  # type: ignore[attr-defined]
                                               runner.outcome))
            return
        if cancel_requested(runner.task):
            # it cancelled its task and returned before seeing it: the task wakes for nothing
            self.stray_cancel = True
        if self.streamed is request:
            # answered before its body ended: the rest of it is dropped with the connection
            request.keep_alive = False
        if result.__class__ is HTTPResponse and result.stream is None:
            self._write_response(request, result, request.keep_alive)
        elif isinstance(result, WebSocketAccept):
            if request.websocket and not self.closing:
                self._start_websocket(request, result)
            else:
                self._write_response(request, plain_response(400, "Bad request: not a WebSocket handshake\n"),
                                     request.keep_alive)
        else:
            self._hand_over(request, _Ready(result))  # a stream: written by the task

    def _hand_over(self, request: HTTPRequest, awaitable: Any) -> None:
        """The connection's task awaits ``awaitable`` and answers with it; the queue waits."""
        runner = self.runner
        if runner is None:
            runner = self.runner = self._take_runner()
        self.job = (request, awaitable)
        self.task = runner.task
        wake = runner.wake
        if wake is not None and not wake.done():
            wake.set_result(None)

    def _take_runner(self) -> _Runner:
        """A runner a closed connection left parked (``_Runner``), else a new one."""
        spares = self.state.spare_runners
        while spares:
            runner = spares.pop()
            wake = runner.wake
            if wake is not None and not wake.done():  # still parked (not cancelled since)
                runner.conn = self
                return runner
        return _Runner(self)

    def _spare(self, runner: _Runner) -> bool:
        """Keep the runner of this closed connection for the next one, if it is parked with
        nothing of ours to answer and no cancel pending (its wake future then is not done)."""
        wake = runner.wake
        spares = self.state.spare_runners
        if (wake is None or wake.done() or self.job is not None or self.task is not None or self.stray_cancel
                or self.state.stopping or len(spares) >= SPARE_RUNNERS):
            return False
        runner.conn = None
        spares.append(runner)
        return True

    def _drop_job(self) -> None:
        """The connection is gone before its task took the job over: close what it held."""
        job, self.job = self.job, None
        if job is not None:
            awaitable = job[1]
            coro = awaitable.coro if isinstance(awaitable, Suspended) else awaitable
            close = getattr(coro, "close", None)
            if close is not None:
                close()

    async def _run(self, request: HTTPRequest, result: Any) -> None:
        written = False
        try:
            if result.__class__ is not HTTPResponse and result.__class__ is not HTTPResponseThen:
                result = await result
            if self.streamed is request:
                # answered before its body ended: the rest of it is dropped with the connection
                request.keep_alive = False
            if isinstance(result, WebSocketAccept):
                if request.websocket and not self.closing:
                    self._start_websocket(request, result)
                    return
                result = plain_response(400, "Bad request: not a WebSocket handshake\n")
            if result.stream is not None:
                written = True
                if isinstance(result.stream, FileBody):
                    await self._write_file(request, result)
                else:
                    await self._write_stream(request, result)
            else:
                written = True
                self._write_response(request, result, request.keep_alive)
            if result.__class__ is HTTPResponseThen:
                self.loop.call_soon(result.after)  # the response is written: its work may begin
        except asyncio.CancelledError:
            # Cancelled by the drain deadline at shutdown, or because the client went away.
            if not written and not self.closing:
                # keep_alive as asked: after the deadline the requests queued behind this one
                # get their 503 too (_after_close_response), rather than being dropped
                self._write_response(request, plain_response(503, _SHUTTING_DOWN.decode()), False)
            elif not self.closing:
                self._close_lingering()
            return
        except Exception:
            logger.exception("unhandled error while answering %s %s", request.method, request.target)
            if not written and not self.closing:
                self._write_response(request, plain_response(500, "Internal Server Error\n"), False)
            elif not self.closing:
                self._close_lingering()
        finally:
            self.task = None
        if not self.closing:
            self._process(True)

    def _keep_alive_header(self, request: Optional[HTTPRequest], keep_alive: bool) -> tuple[bool, bytes]:
        if not keep_alive or self.state.stopping or request is None:
            return False, b"connection: close\r\n"
        if request.http_version == "1.0":
            return True, b"connection: keep-alive\r\n"
        return True, b""

    def _write_response(self, request: Optional[HTTPRequest], response: HTTPResponse, keep_alive: bool) -> None:
        status = response.status
        if (keep_alive and self.plain_keep_alive and request is not None and request.http_version == "1.1"
                and not self.state.stopping):
            connection = b""  # _keep_alive_header's common answer, without the call
        else:
            keep_alive, connection = self._keep_alive_header(request, keep_alive)
        status_line = _STATUS_LINES.get(status) or _status_line(status)
        if status in NO_BODY_STATUSES:
            head = b"%s%s%s%s\r\n" % (status_line, response.headers, self.state.date_block, connection)
            self.transport.write(head)
        else:
            body = response.body
            if request is not None and request.method == "HEAD":
                self.transport.write(b"%s%scontent-length: %d\r\n%s%s\r\n" % (
                    status_line, response.headers, len(body), self.state.date_block, connection))
            else:
                # One join of ready pieces: cheaper than formatting the head with ``%`` each time.
                size = len(body)
                self.transport.write(_join((
                    status_line, response.headers,
                    _CONTENT_LENGTHS[size] if size < _CONTENT_LENGTHS_UPTO else b"content-length: %d\r\n" % size,
                    self.state.date_block, connection, b"\r\n", body)))
        if keep_alive:
            self.idle_since = self.state.now
        else:
            self._after_close_response(request, True)

    def _after_close_response(self, request: Optional[HTTPRequest], may_stay_open: bool) -> None:
        """A response said ``Connection: close``. Close (lingering) — unless it said so only
        because the server is stopping and the client wanted to keep the connection: then
        what it may already have sent is still answered, and the drain closes it later."""
        if may_stay_open and request is not None and request.keep_alive and self.state.stopping:
            if self.state.drain_over:
                self._refuse_pending()  # what it sent behind this one gets its 503 too
                return
            self.idle_since = self.loop.time()  # precise: the drain measures quiet from here
            if self.error is _PEER_DONE and not self.pending:
                self._send_error()
            return
        self._close_lingering()

    def _close_lingering(self) -> None:
        """Close without a reset: shut our side (the client reads a clean end-of-file after
        the last response), drop what it still sends, close on its end-of-file or after
        ``LINGER`` seconds (``check_timeouts``, ``drain_step``)."""
        self.closing = True
        transport = self.transport
        if transport.is_closing():
            return
        self.linger_heard = now = self.loop.time()
        self.linger_deadline = now + LINGER
        self.resume_reading()  # to see its end-of-file; data_received drops what comes
        try:
            transport.write_eof()
        except (OSError, RuntimeError, NotImplementedError):
            transport.close()

    def _end_linger(self, now: float) -> None:
        if self.linger_deadline and (now >= self.linger_deadline or now - self.linger_heard >= LINGER_QUIET):
            self.linger_deadline = 0.0
            self.transport.close()  # after flushing what is still buffered

    def _refuse_pending(self) -> None:
        """After the drain deadline: every request already received gets 503 with
        ``Connection: close``, in order, and so does one still arriving; then close lingering."""
        self.closing = True
        transport = self.transport
        state = self.state
        owed = len(self.pending) + (1 if self.request is not None or self.in_body else 0)
        for _ in range(owed):
            request = self.pending.popleft() if self.pending else None
            head = b"%s%scontent-length: %d\r\n%sconnection: close\r\n\r\n" % (
                _STATUS_LINES[503], _TEXT_PLAIN, len(_SHUTTING_DOWN), state.date_block)
            transport.write(head if request is not None and request.method == "HEAD" else head + _SHUTTING_DOWN)
        self.request = None
        self.in_body = False
        self._close_lingering()

    async def _write_stream(self, request: HTTPRequest, response: HTTPResponse) -> None:
        """Chunked transfer (or close-delimited for HTTP/1.0), waiting whenever the client lags."""
        stream = response.stream
        assert stream is not None
        status = response.status
        chunked = request.http_version != "1.0"
        keep_alive, connection = self._keep_alive_header(request, request.keep_alive and chunked)
        status_line = _STATUS_LINES.get(status) or _status_line(status)
        framing = b"transfer-encoding: chunked\r\n" if chunked else b""
        transport = self.transport
        assert transport is not None
        transport.write(b"%s%s%s%s%s\r\n" % (status_line, response.headers, framing,
                                            self.state.date_block, connection))
        try:
            if request.method != "HEAD" and status not in NO_BODY_STATUSES:
                async for chunk in stream:
                    if self.closing:
                        break
                    if not chunk:
                        continue
                    if chunked:
                        transport.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                    else:
                        transport.write(chunk)
                    if self.write_paused:
                        await self._drain()
                if chunked and not self.closing:
                    transport.write(b"0\r\n\r\n")
        finally:
            closer = getattr(stream, "aclose", None)
            if closer is not None:
                await closer()
        if keep_alive and not self.closing:
            self.idle_since = self.state.now
        elif not self.closing:
            # a body delimited by the close (HTTP/1.0) cannot be followed by another answer
            self._after_close_response(request, chunked)

    async def _write_file(self, request: HTTPRequest, response: HTTPResponse) -> None:
        """A file body with its length as Content-Length, read a piece at a time and only as
        fast as the client takes it: the memory held is one piece plus the write buffer."""
        body = response.stream
        assert isinstance(body, FileBody)
        status = response.status
        keep_alive, connection = self._keep_alive_header(request, request.keep_alive)
        status_line = _STATUS_LINES.get(status) or _status_line(status)
        transport = self.transport
        try:
            transport.write(b"%s%scontent-length: %d\r\n%s%s\r\n" % (
                status_line, response.headers, body.length, self.state.date_block, connection))
            if request.method != "HEAD" and status not in NO_BODY_STATUSES:
                sock_fd = self._sendfile_fd() if body.length > _SENDFILE_MIN else -1
                while body.length and not self.closing:
                    if sock_fd >= 0 and not transport.get_write_buffer_size():
                        # Nothing of ours is queued: the kernel copies file to socket itself, as
                        # much as the socket takes. What it does not take goes the usual way.
                        sent = _sendfile(sock_fd, body)
                        if sent > 0:
                            continue
                        if sent < 0:
                            sock_fd = -1
                    transport.write(body.read_chunk())
                    if self.write_paused and not self.closing:
                        await asyncio.wait_for(self.writable(), self.settings.send_timeout)
        except asyncio.TimeoutError:
            # A client that takes nothing for send_timeout holds a descriptor and a slot: cut.
            logger.info("closing connection from %s: it read nothing of a file for %.0f s",
                        self.client, self.settings.send_timeout)
            self.closing = True
            transport.abort()
            return
        except OSError as exc:
            # The head is out: the only honest end for a body we cannot finish is to cut the
            # connection, so the client sees a short body rather than a wrong one.
            logger.error("cannot finish sending a file for %s %s: %s", request.method, request.target, exc)
            self.closing = True
            transport.abort()
            return
        finally:
            body.close()
        if keep_alive and not self.closing:
            self.idle_since = self.state.now
        elif not self.closing:
            self._after_close_response(request, True)

    def _sendfile_fd(self) -> int:
        """The socket's descriptor for ``os.sendfile``, or -1 (TLS, or no socket to write to)."""
        if self.scheme != "http" or _os_sendfile is None:
            return -1
        sock = self.transport.get_extra_info("socket")
        try:
            return sock.fileno() if sock is not None else -1
        except (OSError, AttributeError):
            return -1

    async def _drain(self) -> None:
        if self.write_paused and not self.closing:
            await self.writable()

    def _fail(self, reject: _Reject) -> None:
        """Stop parsing; the error is sent after the responses already owed. A streamed body
        fails instead: its handler gets the error and answers, then the connection closes."""
        streamed = self.streamed
        if streamed is not None:
            streamed.body_stream.fail(BodyError(reject.status, reject.message))
            logger.info("%s from %s: %s (streamed body)", reject.status, self.client, reject.message)
            reject = _CLOSE_AFTER
        self.error = reject
        self.request = None
        self.pause_reading()

    def _send_error(self) -> None:
        reject = self.error
        assert reject is not None
        if reject is _PEER_DONE:  # the client closed its side and everything is answered
            self.closing = True
            self.transport.close()
            return
        if reject is _CLOSE_AFTER:
            self._close_lingering()
            return
        if reject.status >= 500 or reject.status in (400, 413, 414, 431, 408):
            logger.info("%s from %s: %s", reject.status, self.client, reject.message)
        self._write_response(None, plain_response(reject.status, reject.message + "\n"), False)

    def _start_websocket(self, request: HTTPRequest, accept: WebSocketAccept) -> None:
        self.state.connections.discard(self)
        tail = self.upgrade_tail or b""
        self.upgrade_tail = None
        protocol = self.websocket_protocol(self.state, self.transport, request)
        self.closing = True  # this HTTP protocol is done with the connection
        runner = self.runner
        if runner is not None and self.task is None:  # parked (an eager step accepted): left for the next
            self.runner = None
            if not self._spare(runner):
                runner.task.cancel()
        self.transport.set_protocol(protocol)
        protocol.start(accept, tail)
        self.resume_reading()
        self._drop_parser()

    # -- reading control -----------------------------------------------------------------

    def _maybe_resume_reading(self) -> None:
        if (self.read_paused and not self.write_paused and self.error is None
                and self.upgrade_tail is None and len(self.pending) <= self.settings.max_pipelined
                and (self.streamed is None or not self.streamed.body_stream.full)):
            self.resume_reading()

    # -- deadlines (called by ServerState.tick) -------------------------------------------

    @property
    def idle(self) -> bool:
        """No request in progress: safe to close during shutdown."""
        return (self.task is None and not self.pending and self.request is None
                and not self.in_body)

    def check_timeouts(self, now: float) -> None:
        if self.closing:
            self._end_linger(now)
            return
        streamed = self.streamed
        if streamed is not None and self.error is None and not self.read_paused:
            # A streamed body is held to the idle gap only (an upload may take longer than
            # body_deadline); while reading is paused for a slow handler, nothing is owed.
            if now - self.body_progress > self.settings.body_timeout:
                self._fail(_Reject(408, "Request body timeout"))
            return
        if self.task is not None or self.pending:
            return  # the application has the floor; its own deadlines apply
        settings = self.settings
        if self.head_started is not None:
            if now - self.head_started > settings.header_timeout:
                if self.request is None:
                    # Not a byte of a request: close quietly, as idle browser sockets expect.
                    self._close_lingering()
                else:
                    self._timeout(408, "Request header timeout")
        elif self.in_body:
            # Both an idle gap and a total deadline: a body that trickles in a byte at a
            # time must not hold a connection (and a slot) forever.
            if (now - self.body_progress > settings.body_timeout
                    or now - self.body_started > settings.body_deadline):
                self._timeout(408, "Request body timeout")
        elif now - self.idle_since > settings.keep_alive_timeout:
            self._close_lingering()

    def _timeout(self, status: int, message: str) -> None:
        logger.info("closing connection from %s: %s", self.client, message)
        self.request = None
        self.in_body = False
        self._write_response(None, plain_response(status, message + "\n"), False)

    # -- the stop (called by runner.py's drain) ------------------------------------------

    def begin_drain(self, now: float, quiet: float) -> bool:
        """The stop began; report whether a request is in progress here.

        An idle connection is closed at once if it has been idle for longer than ``quiet``;
        one that answered a request more recently may have the next one on its way, so it
        gets ``quiet`` seconds to send it (answered with ``Connection: close``)."""
        if self.closing:
            return False
        if not self.idle:
            return True
        # idle_since comes from the once-a-second clock: up to a second early
        if now - self.idle_since >= quiet + 1.0:
            self._close_lingering()
        else:
            self.idle_since = now
        return False

    def drain_step(self, now: float, quiet: float) -> None:
        """Close, lingering, once nothing is owed and the client has been quiet ``quiet`` s."""
        if self.closing:
            self._end_linger(now)
            return
        if self.idle and (self.error is None or self.error is _PEER_DONE) and now - self.idle_since >= quiet:
            self._close_lingering()

    def drain_deadline_passed(self) -> bool:
        """The drain deadline: the request running is cancelled (its answer becomes 503),
        and every request received and not answered gets 503 with ``Connection: close``.
        Returns whether a request was owed here."""
        if self.closing:
            return False
        if self.task is not None and not self.task.done():
            self.task.cancel()  # _run answers 503, then _after_close_response the rest
            return True
        owed = not self.idle
        self._refuse_pending()
        return owed
