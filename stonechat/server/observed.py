"""The protocols the server runs when the application has an ``observer`` (``interface.Observer``):
subclasses of ``HttpProtocol`` and ``WebSocketProtocol`` that time each request, count what
each answer and each WebSocket session sent, and report it. They know nothing of what the
observer does with it (access log, metrics: ``features/``).

Without an observer ``protocol_for`` gives the plain ``HttpProtocol``: not one instruction of
this module runs per request, which is why it is subclasses and not checks in ``http.py``.
"""

from __future__ import annotations

from time import perf_counter
from typing import Any, AsyncIterator, Optional, Union

from . import http as _http
import httptools

from .http import (_CONTENT_LENGTHS, _CONTENT_LENGTHS_UPTO, _SHUTTING_DOWN, HttpProtocol, _join, _ParsedRequest, _Reject,
                   _status_line, _unknown_method_line)
from .interface import NO_BODY_STATUSES, FileBody, HTTPRequest, HTTPResponse, Observer, WebSocketAccept
from .state import ServerState
from .websocket.frames import FrameReader
from .websocket.protocol import CLOSED, WebSocketProtocol

# Assigned, not imported: for a name bound by an import, CPython 3.11 compiles ``name.get(...)``
# as an attribute load and a call (no LOAD_METHOD), which makes a bound method per answer
# (about 100 instructions of _write_response's copy).
_STATUS_LINES = _http._STATUS_LINES


def protocol_for(app: Any) -> type[HttpProtocol]:
    """The connection protocol class for ``app``: observing only when it has an observer, and
    adding the observer's header lines to answers only when it may set them."""
    observer = getattr(app, "observer", None)
    if observer is None:
        return HttpProtocol
    return ObservedHttpProtocol if observer.request_received is None else _HeaderedHttpProtocol


class _CountedStream:
    """Passes a streamed body through, counting its bytes."""

    __slots__ = ("stream", "sent")

    def __init__(self, stream: AsyncIterator[bytes]) -> None:
        self.stream = stream
        self.sent = 0

    def __aiter__(self) -> "_CountedStream":
        return self

    async def __anext__(self) -> bytes:
        chunk = await self.stream.__anext__()
        self.sent += len(chunk)
        return chunk

    async def aclose(self) -> None:
        closer = getattr(self.stream, "aclose", None)
        if closer is not None:
            await closer()


class _CountingReader(FrameReader):
    """The frame reader, counting the data messages it completes."""

    __slots__ = ("messages",)

    def __init__(self, max_size: int) -> None:
        super().__init__(max_size)
        self.messages = 0

    def feed(self, data: bytes) -> Any:
        got = super().feed(data)
        cls = got.__class__
        if cls is str or cls is bytes:
            self.messages += 1
        elif cls is list:
            for event in got:  # type: ignore[union-attr]
                if event.__class__ is str or event.__class__ is bytes:
                    self.messages += 1
        return got


class ObservedWebSocketProtocol(WebSocketProtocol):
    """Counts messages both ways and reports the session once, when it closes."""

    __slots__ = ("observer", "sent", "opened_at")

    def start(self, accept: WebSocketAccept, tail: bytes) -> None:
        self.observer: Observer = self.state.app.observer  # type: ignore[attr-defined]
        self.reader = _CountingReader(self.max_size)
        self.sent = 0
        self.opened_at = perf_counter()
        self.observer.websocket_opened(self.request)
        super().start(accept, tail)

    def write_message(self, message: Union[str, bytes]) -> None:
        super().write_message(message)
        self.sent += 1

    def send_frame_nowait(self, frame: bytes) -> None:
        super().send_frame_nowait(frame)
        self.sent += 1

    def _set_closed(self, code: int, reason: str, by: str) -> None:
        if self.ready_state == CLOSED:  # reported already
            return
        super()._set_closed(code, reason, by)
        try:
            self.observer.websocket_closed(self.request, code, by, self.reader.messages, self.sent,  # type: ignore[attr-defined]
                                           perf_counter() - self.opened_at)
        except Exception:  # an observer's failure must not break the close
            pass


class ObservedHttpProtocol(HttpProtocol):
    """``HttpProtocol`` that tells the application's observer about every request.

    Every request received is reported answered exactly once: by its response, by its 101,
    as 503 when the drain deadline refuses it, or as 499 (nginx's "client closed request")
    when the connection is lost before it was answered. Which ones are owed needs no list:
    HTTP/1.1 answers go in order, so they are the requests still queued (``pending``) and the
    one the connection's task answers (``answering``); one answered without the task is
    written in the same call that took it off the queue.

    What is in flight (``Observer.requests_in_flight``) is counted when asked, from what the
    connection holds anyway (``in_flight``), instead of a count kept up to date twice per request."""

    websocket_protocol = ObservedWebSocketProtocol
    __slots__ = ("observer", "report", "answering", "read")

    def __init__(self, state: ServerState) -> None:
        super().__init__(state)
        self.observer: Observer = state.app.observer  # type: ignore[attr-defined]
        reporter = getattr(self.observer, "connection_reporter", None)  # optional: interface.Observer
        self.report = self.observer.response_sent if reporter is None else reporter()
        self.answering: Optional[HTTPRequest] = None  # handed to the connection's task, not reported yet
        self.read = b""  # the read a request may begin at the start of (data_received), else b""

    def in_flight(self) -> int:
        """This connection's requests from their first byte until answered: the one arriving
        (a streamed one is queued already), those queued, the one its task answers. Not the
        one answered synchronously right now (``requests_in_flight`` adds that)."""
        request = self.request
        return (len(self.pending) + (request is not None and request is not self.streamed)
                + (self.answering is not None))

    def _reported(self, request: HTTPRequest, status: int, sent: int) -> None:
        if request is self.answering:
            self.answering = None
        self.report(request, status, sent, perf_counter() - request.started)

    def _answered(self, request: HTTPRequest, status: int, sent: int) -> None:
        """A stream or a file, written by the connection's task (it always has them)."""
        if request is self.answering:  # else reported already, as 499 (connection_lost)
            self._reported(request, status, sent)

    def connection_lost(self, exc: Optional[BaseException]) -> None:
        self.request = None
        super().connection_lost(exc)
        owed = list(self.pending)
        self.pending.clear()  # answered from now on as far as the observer knows: no second report
        answering = self.answering
        if answering is not None and answering not in owed:
            owed.insert(0, answering)
        for request in owed:
            self._reported(request, 499, 0)

    def _refuse_pending(self) -> None:
        # one still arriving gets a 503 too, not reported: it was not received
        for request in self.pending:  # the plain method writes their 503s next
            self._reported(request, 503, 0 if request.method == "HEAD" else len(_SHUTTING_DOWN))
        super()._refuse_pending()

    def _hand_over(self, request: HTTPRequest, awaitable: Any) -> None:
        self.answering = request
        HttpProtocol._hand_over(self, request, awaitable)

    # The overrides below call HttpProtocol's methods by name: cheaper than super() per request.

    def data_received(self, data: bytes) -> None:
        # A read that begins between two requests (none in progress) is kept for the next
        # request to begin, its ``first_read``: then the read starts with that request, and a
        # sink can tell that a request's head is a connection's previous one again with one
        # comparison of bytes (features/access_log.py) instead of comparing the header lists.
        self.read = data if self.request is None else b""
        # HttpProtocol.data_received's body, not a call to it: one Python call less per read;
        # tests/server/test_observed.py checks the two agree.
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

    def on_message_begin(self) -> None:
        # HttpProtocol.on_message_begin's body, not a call to it: one Python call less per
        # request (about 1 % of one); tests/server/test_observed.py checks the two agree.
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
        request.started = perf_counter()
        request.first_read = self.read  # the first to begin in a read that began with it
        self.read = b""

    def _write_response(self, request: Optional[HTTPRequest], response: HTTPResponse, keep_alive: bool) -> None:
        # HttpProtocol._write_response's body, not a call to it: one Python call less per
        # answer; tests/server/test_observed.py checks the two agree. Then the report.
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
        report = self.report  # (a call through the slot would not specialize: LOAD_METHOD)
        if request is None:  # refused while it arrived
            report(None, status, len(response.body), 0.0)
            return
        if request is self.answering:
            self.answering = None
        try:
            # The body's bytes: ``size`` is bound above where the body was written (not for a
            # HEAD or a status without a body), so no second test of status and method.
            sent = size
        except UnboundLocalError:
            sent = 0
        report(request, status, sent, perf_counter() - request.started)

    async def _write_stream(self, request: HTTPRequest, response: HTTPResponse) -> None:
        assert response.stream is not None
        counted = _CountedStream(response.stream)
        response = HTTPResponse(response.status, response.headers, stream=counted)
        try:
            await HttpProtocol._write_stream(self, request, response)
        finally:
            self._answered(request, response.status, counted.sent)

    async def _write_file(self, request: HTTPRequest, response: HTTPResponse) -> None:
        body = response.stream
        assert isinstance(body, FileBody)
        total = body.length  # read_chunk and sendfile count it down as the bytes go out
        try:
            await HttpProtocol._write_file(self, request, response)
        finally:
            sent = 0 if response.status in NO_BODY_STATUSES or request.method == "HEAD" else total - body.length
            self._answered(request, response.status, sent)

    def _start_websocket(self, request: HTTPRequest, accept: WebSocketAccept) -> None:
        if request is self.answering:
            self.answering = None  # answered by its 101: the session reports from now on
        super()._start_websocket(request, accept)


class _HeaderedHttpProtocol(ObservedHttpProtocol):
    """For an observer with ``request_received`` (request ids: it may add header lines to
    answers, ``request.reply_headers``). Apart, so that without it no request pays for a call
    when it has arrived, and every keep-alive answer takes ``HttpProtocol``'s inline Connection
    header."""

    __slots__ = ("received",)

    def __init__(self, state: ServerState) -> None:
        super().__init__(state)
        self.received = self.observer.request_received

    def on_headers_complete(self) -> None:
        # Once the head is read: before the request can be answered (a streamed body's handler
        # runs before the body has arrived), which sets its reply_headers and observed.
        HttpProtocol.on_headers_complete(self)
        self.received(self.request)  # type: ignore[misc,arg-type]
    plain_keep_alive = False  # _keep_alive_header below adds the observer's header lines

    def _keep_alive_header(self, request: Optional[HTTPRequest], keep_alive: bool) -> tuple[bool, bytes]:
        """HttpProtocol's, with the header lines the observer asked for (``reply_headers``)
        after the Connection header, on every answer to a received request."""
        if request is None:
            return False, b"connection: close\r\n"
        if not keep_alive or self.state.stopping:
            return False, b"connection: close\r\n" + request.reply_headers
        if request.http_version == "1.0":
            return True, b"connection: keep-alive\r\n" + request.reply_headers
        return True, request.reply_headers

    def _start_websocket(self, request: HTTPRequest, accept: WebSocketAccept) -> None:
        if request.reply_headers:
            accept = WebSocketAccept(accept.session, accept.headers + request.reply_headers, accept.subprotocol)
        ObservedHttpProtocol._start_websocket(self, request, accept)


def count_in_flight(app: Any, state: ServerState) -> None:
    """When the server begins serving ``state``: the observer's ``requests_in_flight``
    (``interface.Observer``), counted from the live connections when called."""
    observer = getattr(app, "observer", None)
    if observer is None:
        return

    def requests_in_flight(current: Optional[HTTPRequest] = None) -> int:
        count = 0
        counted = False
        for conn in state.connections:
            if isinstance(conn, ObservedHttpProtocol):
                count += conn.in_flight()
                counted = counted or (current is not None and conn.answering is current)
        # ``current``: the request asking, being answered synchronously (a handler that has not
        # suspended), which no connection holds; counted by its connection's task otherwise
        return count + (current is not None and not counted)

    observer.requests_in_flight = requests_in_flight


__all__ = ["ObservedHttpProtocol", "ObservedWebSocketProtocol", "count_in_flight", "protocol_for"]
