"""The WebSocket connection after the upgrade: the asyncio protocol the transport drives and the
connection object the session uses (``interface.WebSocketConnection``).

Owns what needs a transport or a clock: the 101 answer on the wire (built by
``handshake.py``), delivering messages to ``receive()`` or a bounded queue (reading pauses
when it is full), answering pings, the close handshake, failing the connection on a protocol
error, keepalive pings, the idle timeout, and the send side's backpressure
(``flow.FlowControl``: ``send()`` waits over ``ws_write_limit``, non-waiting sends drop a
client over ``ws_max_write_buffer``). Parsing is ``frames.FrameReader``'s, which knows no
transport. The framework is known only through ``server/interface.py``: the session is
``accept.session(connection)`` and the connection is this protocol itself.

Ready states: OPEN → CLOSING (our close frame sent, waiting for the peer's) → CLOSED (both
close frames exchanged, or the connection dropped). After the close handshake, or after we fail
the connection on a protocol error, we half-close (FIN) and keep reading until the peer closes,
so unread bytes never turn our close frame into an RST; ``ws_close_timeout`` bounds every wait.
Messages that arrived before a close frame or a protocol error go to the session first.

Deadlines (ping interval, pong timeout, idle timeout) are checked once a second by
``ServerState.tick`` via ``check_timeouts``; nothing per message schedules a timer.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import struct
from collections import deque
from typing import Any, Callable, Optional, Union

from ..flow import FlowControl
from ..interface import (NO_MESSAGE, ConnectionClosed, HTTPRequest, WebSocketAccept, WebSocketConnection,
                         close_payload)
from ..state import ServerState
from .deflate import Inflater, Negotiated
from .frames import (OP_CLOSE, OP_PING, OP_PONG, Close, Event, FrameReader, Ping, Pong, ProtocolError,
                     control_frame, deflate_frame, encode_frame, failure_close_frame)
from .handshake import switching_protocols

logger = logging.getLogger("stonechat.server.ws")  # the name log lines and filters know

OPEN, CLOSING, CLOSED = 1, 2, 3


class WebSocketProtocol(FlowControl, asyncio.Protocol):
    """One WebSocket connection: the transport's protocol and the session's connection object."""

    # Messages queued for a receive() that nobody is awaiting, before reading pauses.
    MAX_QUEUED = 64

    __slots__ = (
        "state", "settings", "request", "client", "ip", "path", "ready_state",
        "reader", "waiter", "queue", "queued_bytes", "max_size", "max_buffer",
        # permessage-deflate (deflate.py), when negotiated
        "deflate", "frame_kind",
        # close bookkeeping
        "close_code", "close_reason", "closed_by", "close_sent", "close_received",
        "close_timer", "closed_future", "close_callbacks", "session_task", "context", "pending_end",
        # keepalive / idle
        "last_rx", "last_message", "ping_payload", "ping_sent_at", "ping_count",
        "__weakref__",
    )

    def __init__(self, state: ServerState, transport: asyncio.Transport, request: HTTPRequest) -> None:
        FlowControl.__init__(self, state.loop)
        self.transport = transport
        self.state = state
        self.settings = settings = state.settings
        self.request = request
        self.client = request.client
        self.ip: Optional[str] = request.client[0] if request.client else None
        self.path = request.path.decode("latin-1")
        self.ready_state = OPEN
        self.max_size = settings.ws_max_message_size
        self.reader = FrameReader(self.max_size)
        self.waiter: Optional[asyncio.Future[Any]] = None
        # Made when first needed, as are closed_future and close_callbacks: an idle connection
        # holds as little as it can (a deque alone is a 64-slot block).
        self.queue: Optional[deque[Union[str, bytes]]] = None
        self.queued_bytes = 0
        self.max_buffer = max(settings.ws_max_write_buffer, settings.ws_write_limit)
        self.deflate: Optional[Negotiated] = None
        self.frame_kind: Any = None  # frames from prepare() can be shared by equal kinds
        self.close_code = 1006
        self.close_reason = ""
        self.closed_by = ""
        self.close_sent = False
        self.close_received = False
        self.close_timer: Optional[asyncio.TimerHandle] = None
        self.closed_future: Optional[asyncio.Future[None]] = None
        self.close_callbacks: Optional[list[Callable[[], None]]] = None
        # (fn, args): a close or failure waiting until the session took the messages before it
        self.pending_end: Optional[tuple[Callable[..., None], tuple[Any, ...]]] = None
        self.session_task: Optional[asyncio.Task[None]] = None
        self.last_rx = self.last_message = state.now
        self.ping_payload: Optional[bytes] = None
        self.ping_sent_at = 0.0
        self.ping_count = 0

    # -- start -----------------------------------------------------------------------------

    def start(self, accept: WebSocketAccept, tail: bytes) -> None:
        """Answer 101, register the connection, start the session, feed early bytes.

        ``accept`` is not kept: its session closure usually holds the framework's object that
        holds this connection, and that cycle would leave every closed connection to the
        cyclic garbage collector instead of freeing it when the transport lets go."""
        head, negotiated = switching_protocols(self.request, accept, self.settings.ws_per_message_deflate)
        if negotiated is not None:
            self.deflate = negotiated
            self.reader.inflater = Inflater(negotiated)
            self.frame_kind = negotiated.frame_kind
        transport = self.transport
        transport.write(head)
        transport.set_write_buffer_limits(high=self.settings.ws_write_limit)
        self.state.add_websocket(self, self.ip)
        if transport.is_closing():  # the client left during the handshake
            self._set_closed(1006, "", "client")
            self.loop.call_soon(self.connection_lost, None)
        # The session coroutine is the task itself (no wrapper frame: every message resumes
        # the task through each frame it awaits in); how it ended is read by _session_done.
        # Its context is kept: a handler that deliver_to() runs from data_received runs in it.
        self.context = contextvars.copy_context()
        task = self.session_task = self.loop.create_task(accept.session(self), context=self.context)  # type: ignore[call-arg]  # (3.11 has it)
        task.add_done_callback(self._session_done)
        if tail:
            self.data_received(tail)

    def _session_done(self, task: "asyncio.Future[None]") -> None:
        exc = None if task.cancelled() else task.exception()
        if exc is not None and not isinstance(exc, ConnectionClosed):
            logger.error("WebSocket session on %s failed", self.path, exc_info=exc)
            if self.ready_state == OPEN:
                self.close_nowait(1011, "internal error")
            return
        if self.ready_state == OPEN:
            self.close_nowait(1000, "")

    # -- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:  # pragma: no cover
        pass  # set_protocol() does not call it; start() does the work

    def data_received(self, data: bytes) -> None:
        self.last_rx = self.state.now
        try:
            got = self.reader.feed(data)
        except ProtocolError as exc:
            self._protocol_error(exc)
            return
        cls = got.__class__
        if cls is str or cls is bytes:
            # One message, the hot path: _deliver's first lines, inlined (one call less per message).
            self.last_message = self.last_rx
            waiter = self.waiter
            if waiter is not None and not waiter.done():
                self.waiter = None
                waiter.set_result(got)
            else:
                self._deliver(got)  # type: ignore[arg-type]
        elif got is not None:
            self._events(got if cls is list else [got])  # type: ignore[list-item, arg-type]

    def _events(self, events: list[Event]) -> bool:
        """Act on the events of one read, in order; whether a message was delivered."""
        delivered = False
        for event in events:
            cls = event.__class__
            if cls is str or cls is bytes:
                self._deliver(event)  # type: ignore[arg-type]
                delivered = True
            elif cls is Ping:
                if self.ready_state == OPEN:
                    self.transport.write(control_frame(OP_PONG, event.payload))  # type: ignore[union-attr]
            elif cls is Pong:
                if self.ping_payload is not None and event.payload == self.ping_payload:  # type: ignore[union-attr]
                    self.ping_payload = None
            elif cls is Close:  # the reader reads nothing after it
                close: Close = event  # type: ignore[assignment]
                if (delivered or self.queue) and self.ready_state == OPEN:
                    # Messages that came just before the close go to the session first.
                    self._defer_end(self._peer_closed, close.code, close.reason, close.payload)
                else:
                    self._peer_closed(close.code, close.reason, close.payload)
        return delivered

    def _protocol_error(self, exc: ProtocolError) -> None:
        delivered = self._events(exc.events) if exc.events else False
        if delivered or self.queue:
            # Let the session handle the valid messages that came before the bad bytes first.
            self._defer_end(self._fail, exc.code, exc.reason)
        else:
            self._fail(exc.code, exc.reason)

    def _deliver(self, message: Union[str, bytes]) -> None:
        self.last_message = self.last_rx  # set by data_received for these very bytes
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            if not waiter.done():
                waiter.set_result(message)
                return
        queue = self.queue
        if queue is None:
            queue = self.queue = deque()
        queue.append(message)
        self.queued_bytes += len(message)
        if (len(queue) >= self.MAX_QUEUED or self.queued_bytes > self.max_size) and not self.read_paused:
            self.pause_reading()

    def _defer_end(self, fn: Callable[..., None], *args: Any) -> None:
        """Run ``fn`` (a close or a failure) once the session has taken the messages that
        arrived before it: right after the next loop step, or when the queue runs empty (bounded
        by ``ws_close_timeout``)."""
        if not self.queue:
            self.loop.call_soon(fn, *args)
            return
        self.pending_end = (fn, args)
        self.loop.call_later(self.settings.ws_close_timeout, self._run_pending_end)
        self.resume_reading()

    def _run_pending_end(self) -> None:
        pending, self.pending_end = self.pending_end, None
        if pending is not None:
            pending[0](*pending[1])

    def _peer_closed(self, code: int, reason: str, reply: bytes) -> None:
        self.close_received = True
        if self.ready_state == OPEN:
            # The peer started the closing handshake: echo its code, then close TCP.
            self.close_sent = True
            self.transport.write(control_frame(OP_CLOSE, reply))
            self._set_closed(code, reason, "client")
        else:
            # Our close was answered.
            self._set_closed(self.close_code, self.close_reason, self.closed_by or "server")
        self._finish_tcp()

    # -- closing ---------------------------------------------------------------------------

    def _set_closed(self, code: int, reason: str, by: str) -> None:
        """Logically closed: wake receivers and senders, log once."""
        if self.ready_state == CLOSED:
            return
        self.ready_state = CLOSED
        self.reader.drop_messages = True
        self.close_code = code
        self.close_reason = reason
        self.closed_by = by
        logger.info("WebSocket %s from %s closed by %s: %d %s", self.path,
                    self.ip, by, code, reason or "(no reason)")
        exc = ConnectionClosed(code, reason, by)
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            if not waiter.done():
                waiter.set_exception(exc)
        self.wake_writers(exc)
        if self.closed_future is not None and not self.closed_future.done():
            self.closed_future.set_result(None)
        callbacks, self.close_callbacks = self.close_callbacks, None
        if callbacks:
            for callback in callbacks:
                self.loop.call_soon(callback)
        if self.read_paused:
            try:
                self.resume_reading()
            except Exception:  # pragma: no cover - transport already gone
                pass

    def _finish_tcp(self) -> None:
        """Close handshake done (or connection failed): send FIN, drain the peer, bounded."""
        self.reader.stop()  # what still arrives is read and dropped
        transport = self.transport
        if transport.is_closing():
            return
        if transport.can_write_eof():
            transport.write_eof()
        else:  # pragma: no cover
            transport.close()
        self._arm_close_timer()

    def _arm_close_timer(self) -> None:
        if self.close_timer is None:
            self.close_timer = self.loop.call_later(self.settings.ws_close_timeout, self._close_timeout)

    def _close_timeout(self) -> None:
        self.close_timer = None
        if self.ready_state != CLOSED:
            logger.info("WebSocket %s from %s: no close frame from the peer within %.1f s, aborting",
                        self.path, self.ip, self.settings.ws_close_timeout)
            self._set_closed(self.close_code if self.close_sent else 1006, self.close_reason,
                             self.closed_by or "server")
        self.transport.abort()

    def _fail(self, code: int, reason: str) -> None:
        """Fail the connection (RFC 6455 7.1.7): close frame with ``code``, then TCP close."""
        logger.info("WebSocket %s from %s: protocol error, closing %d: %s", self.path, self.ip, code, reason)
        if not self.close_sent:
            self.close_sent = True
            self.transport.write(failure_close_frame(code, reason))
        self._set_closed(code, reason, "server")
        self._finish_tcp()

    def close_nowait(self, code: int = 1000, reason: str = "") -> None:
        """Start the closing handshake now (callable from sync code); harmless if closing."""
        payload = close_payload(code, reason)
        if self.ready_state != OPEN:
            return
        self.ready_state = CLOSING
        self.reader.drop_messages = True  # after our close frame, data is read and dropped
        self.close_sent = True
        self.close_code = code
        self.close_reason = reason
        self.closed_by = "server"
        transport = self.transport
        if transport.is_closing():
            self._set_closed(1006, "", "client")
            return
        transport.write(control_frame(OP_CLOSE, payload))
        # Reading must go on to see the peer's close frame, even if the app stopped reading.
        self.resume_reading()
        self._arm_close_timer()

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close with ``code``/``reason`` and wait until the close handshake is over (bounded)."""
        self.close_nowait(code, reason)
        await asyncio.shield(self._closed_future())

    async def wait_closed(self) -> None:
        await asyncio.shield(self._closed_future())

    def _closed_future(self) -> "asyncio.Future[None]":
        future = self.closed_future
        if future is None:
            future = self.closed_future = self.loop.create_future()
            if self.ready_state == CLOSED:
                future.set_result(None)
        return future

    def on_closed(self, callback: Callable[[], None]) -> None:
        if self.ready_state == CLOSED:
            self.loop.call_soon(callback)
        elif self.close_callbacks is None:
            self.close_callbacks = [callback]
        else:
            self.close_callbacks.append(callback)

    @property
    def closed(self) -> bool:
        return self.ready_state != OPEN

    async def shutdown(self) -> None:
        """Server stop: close 1001, wait for the peer's close and for the session to finish."""
        if self.ready_state == OPEN:
            self.close_nowait(1001, "server shutting down")
        await asyncio.shield(self._closed_future())
        task = self.session_task
        if task is not None and not task.done():
            try:
                await asyncio.wait_for(asyncio.shield(task), self.settings.ws_close_timeout)
            except asyncio.TimeoutError:
                logger.warning("WebSocket session on %s still running %.1f s after close; cancelling",
                               self.path, self.settings.ws_close_timeout)
                task.cancel()
            except BaseException:
                pass

    def eof_received(self) -> Optional[bool]:
        if self.ready_state != CLOSED:
            self._set_closed(1006, "", "client")
        return False  # let the transport close

    def connection_lost(self, exc: Optional[BaseException]) -> None:
        if self.ready_state != CLOSED:
            self._set_closed(1006, "", "client")
        if self.close_timer is not None:
            self.close_timer.cancel()
            self.close_timer = None
        self.reader.stop()
        self.state.remove_websocket(self, self.ip)
        self.queue = None

    # -- the connection API the session uses (interface.WebSocketConnection) ---------------

    async def receive(self) -> Union[str, bytes]:
        message = self.receive_nowait()
        if message is NO_MESSAGE:
            message = await self.next_message()
        return message  # type: ignore[no-any-return]

    def receive_nowait(self) -> Any:
        queue = self.queue
        if queue:
            message = queue.popleft()
            self.queued_bytes -= len(message)
            if self.read_paused:
                self._maybe_resume_reading()
            if not queue:
                self.queue = None  # its block goes too: an idle connection keeps none
                if self.pending_end is not None:
                    self.loop.call_soon(self._run_pending_end)
            return message
        if self.ready_state != OPEN:
            raise ConnectionClosed(self.close_code, self.close_reason, self.closed_by)
        return NO_MESSAGE

    def next_message(self) -> "asyncio.Future[Any]":
        if self.waiter is not None:
            raise RuntimeError("receive() is already being awaited by another task")
        waiter = self.waiter = self.loop.create_future()
        return waiter

    def deliver_to(self, handler: Any) -> None:
        """Hand the next message to ``handler.set_result(message)`` right from data_received
        (``None``: back to queueing). ``handler`` stands where next_message()'s future would:
        it says ``done()`` False while it wants messages, gets ``set_exception`` when the
        connection closes, and calls deliver_to again for each further message it wants. A
        plain-def message handler is called this way, with no task wake-up per message."""
        self.waiter = handler

    def _maybe_resume_reading(self) -> None:
        if (len(self.queue) if self.queue else 0) <= self.MAX_QUEUED // 2 and self.queued_bytes <= self.max_size // 2:
            self.resume_reading()

    async def send(self, message: Union[str, bytes]) -> None:
        """Send one message; waits while the client's buffer is over ``ws_write_limit``.
        A client that does not drain within ``ws_send_timeout`` is closed with 1013."""
        self.write_message(message)
        if self.write_paused:
            await self._drain()

    def write_message(self, message: Union[str, bytes]) -> None:
        if self.ready_state != OPEN:
            raise ConnectionClosed(self.close_code, self.close_reason, self.closed_by, sending=True)
        self.transport.write(encode_frame(message) if self.deflate is None else deflate_frame(message, self.deflate))

    def send_nowait(self, message: Union[str, bytes]) -> None:
        """Send without waiting (sync code, broadcast); a client whose buffer passes
        ``ws_max_write_buffer`` is closed with 1013 instead of growing memory."""
        self.send_frame_nowait(self.prepare(message))

    def prepare(self, message: Union[str, bytes]) -> bytes:
        """The frame for ``message`` on this connection; connections with the same
        ``frame_kind`` can be sent the same frame (broadcast encodes once per kind)."""
        return encode_frame(message) if self.deflate is None else deflate_frame(message, self.deflate)

    def send_frame_nowait(self, frame: bytes) -> None:
        """Write a frame made by ``prepare()`` (one encoding for many clients)."""
        if self.ready_state != OPEN:
            raise ConnectionClosed(self.close_code, self.close_reason, self.closed_by, sending=True)
        transport = self.transport
        transport.write(frame)
        if self.write_paused and transport.get_write_buffer_size() > self.max_buffer:
            logger.warning("WebSocket %s from %s: client not reading (%d bytes queued), closing 1013",
                           self.path, self.ip, transport.get_write_buffer_size())
            self._close_slow_client()

    def _close_slow_client(self) -> None:
        # Its buffer will not drain, so waiting for a close reply makes no sense: say why, then drop.
        self.close_nowait(1013, "client too slow")
        self._set_closed(1013, "client too slow", "server")
        self.transport.abort()

    async def drain(self) -> None:
        """Wait while this client's unsent data is over ``ws_write_limit`` (1013 after
        ``ws_send_timeout``)."""
        if self.write_paused and self.ready_state != CLOSED:
            await self._drain()

    async def _drain(self) -> None:
        try:
            await asyncio.wait_for(self.writable(), self.settings.ws_send_timeout)
        except asyncio.TimeoutError:
            logger.warning("WebSocket %s from %s: send blocked over %.1f s, closing 1013",
                           self.path, self.ip, self.settings.ws_send_timeout)
            self._close_slow_client()
            raise ConnectionClosed(1013, "client too slow", "server", sending=True) from None

    # -- deadlines (ServerState.tick, once a second) -----------------------------------------

    def check_timeouts(self, now: float) -> None:
        if self.ready_state != OPEN:
            return
        settings = self.settings
        idle = settings.ws_idle_timeout
        if idle and now - self.last_message > idle:
            logger.info("WebSocket %s from %s: idle for %.0f s", self.path, self.ip, idle)
            self.close_nowait(1001, "idle timeout")
            return
        interval = settings.ws_ping_interval
        if not interval:
            return
        if self.ping_payload is not None:
            if now - self.ping_sent_at > settings.ws_ping_timeout and not self.read_paused:
                logger.info("WebSocket %s from %s: no pong within %.1f s", self.path, self.ip,
                            settings.ws_ping_timeout)
                self.close_nowait(1011, "keepalive ping timeout")
                self._set_closed(1011, "keepalive ping timeout", "server")
                self.transport.abort()
            return
        if now - self.last_rx >= interval:
            self.ping_count += 1
            self.ping_payload = payload = struct.pack("!I", self.ping_count)
            self.ping_sent_at = now
            self.transport.write(control_frame(OP_PING, payload))
