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

from .http import _SHUTTING_DOWN, HttpProtocol, _ParsedRequest
from .interface import NO_BODY_STATUSES, FileBody, HTTPRequest, HTTPResponse, Observer, WebSocketAccept
from .state import ServerState
from .websocket.frames import FrameReader
from .websocket.protocol import CLOSED, WebSocketProtocol


def protocol_for(app: Any) -> type[HttpProtocol]:
    """The connection protocol class for ``app``: observing only when it has an observer."""
    return ObservedHttpProtocol if getattr(app, "observer", None) is not None else HttpProtocol


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
    when the connection is lost before it was answered."""

    websocket_protocol = ObservedWebSocketProtocol
    __slots__ = ("observer", "owed", "received")

    def __init__(self, state: ServerState) -> None:
        super().__init__(state)
        self.observer: Observer = state.app.observer  # type: ignore[attr-defined]
        self.owed: list[HTTPRequest] = []  # received, not answered yet (in order)
        self.received = self.observer.request_received  # None: nothing to do (interface.Observer)

    def _answered(self, request: HTTPRequest, status: int, sent: int) -> None:
        try:
            self.owed.remove(request)
        except ValueError:
            return  # reported already
        observer = self.observer
        observer.in_flight -= 1
        observer.response_sent(request, status, sent, perf_counter() - request.started)

    def connection_lost(self, exc: Optional[BaseException]) -> None:
        super().connection_lost(exc)
        owed, self.owed = self.owed, []
        observer = self.observer
        for request in owed:
            observer.in_flight -= 1
            observer.response_sent(request, 499, 0, perf_counter() - request.started)

    def _refuse_pending(self) -> None:
        for request in list(self.pending):
            self._answered(request, 503, 0 if request.method == "HEAD" else len(_SHUTTING_DOWN))
        super()._refuse_pending()

    # The overrides below call HttpProtocol's methods by name: cheaper than super() per request.

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
        request.reply_headers = b""  # request_received may set them
        request.observed = None

    def on_message_complete(self) -> None:
        request = self.request
        HttpProtocol.on_message_complete(self)
        if request is not None:
            self.owed.append(request)
            self.observer.in_flight += 1
            received = self.received
            if received is not None:
                received(request)

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

    def _write_response(self, request: Optional[HTTPRequest], response: HTTPResponse, keep_alive: bool) -> None:
        HttpProtocol._write_response(self, request, response, keep_alive)
        status = response.status
        if request is None:
            self.observer.response_sent(None, status, len(response.body), 0.0)
            return
        owed = self.owed
        if owed and owed[0] is request:
            del owed[0]
        elif request in owed:
            owed.remove(request)
        else:
            return  # reported already
        observer = self.observer
        observer.in_flight -= 1
        observer.response_sent(request, status, 0 if status in NO_BODY_STATUSES or request.method == "HEAD"
                               else len(response.body), perf_counter() - request.started)

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
        if request.reply_headers:
            accept = WebSocketAccept(accept.session, accept.headers + request.reply_headers, accept.subprotocol)
        try:
            self.owed.remove(request)  # answered by its 101: the session reports from now on
            self.observer.in_flight -= 1
        except ValueError:
            pass
        super()._start_websocket(request, accept)


__all__ = ["ObservedHttpProtocol", "ObservedWebSocketProtocol", "protocol_for"]
