"""The ``WebSocketConnection`` of ``server/interface.py`` on top of an ASGI server's ``receive`` and
``send``, so that stonechat's WebSocket sessions (both API styles, broadcast, close codes and
reasons) run unchanged under uvicorn, Granian or Hypercorn.

The ASGI server owns the socket, the frames, pings and the close handshake; this class keeps the
contract's promises on top of it:

* receiving: a reader task turns ``websocket.receive`` events into messages for ``receive()`` /
  ``receive_nowait()`` / ``next_message()``, and stops asking while 64 unread messages wait (the
  ASGI server then stops reading the socket); ``websocket.disconnect`` closes the connection
  with the peer's code and reason;
* sending: messages queue in order; ``send()`` and ``drain()`` hand them to the ASGI server
  from the caller's task, the non-waiting sends (``send_nowait``, broadcast) from a flusher task;
  a client whose queue passes ``ws_max_write_buffer`` is dropped with 1013;
* closing: ``close_nowait`` queues ``websocket.close`` with code and reason; the connection is
  over when the ASGI server reports the disconnect, or after ``ws_close_timeout``.

``prepare()`` gives the ASGI event itself, so a broadcast builds it once for every client.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Any, Callable, Optional, Union

from ..server.interface import NO_MESSAGE, ConnectionClosed, HTTPRequest, close_payload

logger = logging.getLogger("stonechat.asgi")

MAX_QUEUED = 64  # unread messages before the reader stops asking the ASGI server for more


def _event(message: Union[str, bytes]) -> tuple[dict, int]:
    if message.__class__ is str:
        return {"type": "websocket.send", "text": message}, len(message)  # type: ignore[arg-type]
    if isinstance(message, (bytes, bytearray, memoryview)):
        data = bytes(message)
        return {"type": "websocket.send", "bytes": data}, len(data)
    raise TypeError(f"a WebSocket message is str or bytes, not {type(message).__name__}")


class ASGIWebSocket:
    """One accepted WebSocket of an ASGI server, as the connection a session drives."""

    frame_kind = "asgi"  # prepare() makes ASGI events; every connection of this kind shares them

    def __init__(self, request: HTTPRequest, receive: Any, send: Any, settings: Any) -> None:
        self.loop = asyncio.get_running_loop()
        self.request = request
        self.path = request.path.decode("latin-1")
        self.closed = False  # our close was queued, or the connection ended
        self.close_code = 1006
        self.close_reason = ""
        self.closed_by = ""
        self._receive = receive
        self._send = send
        self._inbox: deque = deque()
        self._waiter: Optional[asyncio.Future] = None
        self._room: Optional[asyncio.Future] = None
        self._outbox: deque = deque()
        self._queued = 0  # bytes in the outbox
        self._flushing = False
        self._drain_waiters: list[asyncio.Future] = []
        self._ended: asyncio.Future = self.loop.create_future()
        self._write_limit = settings.ws_write_limit
        self._max_buffer = max(settings.ws_max_write_buffer, settings.ws_write_limit)
        self._close_timeout = settings.ws_close_timeout
        self._close_timer: Optional[asyncio.TimerHandle] = None
        self._reader: Optional[asyncio.Task] = None

    def start(self) -> None:
        self._reader = self.loop.create_task(self._read())

    # -- receiving ----------------------------------------------------------------------------

    async def _read(self) -> None:
        receive = self._receive
        inbox = self._inbox
        try:
            while True:
                if len(inbox) >= MAX_QUEUED:
                    room = self._room = self.loop.create_future()
                    await room
                event = await receive()
                kind = event["type"]
                if kind == "websocket.receive":
                    message = event.get("text")
                    if message is None:
                        message = event.get("bytes")
                        if message is None:
                            continue
                    waiter = self._waiter
                    if waiter is not None:
                        self._waiter = None
                        if not waiter.done():
                            waiter.set_result(message)
                            continue
                    inbox.append(message)
                elif kind == "websocket.disconnect":
                    self._end(event.get("code") or 1005, event.get("reason") or "", "client")
                    return
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the ASGI server failed us: treat it as a dropped connection
            logger.info("WebSocket %s: the ASGI server's receive failed (%r)", self.path, exc)
            self._end(1006, "", "client")

    async def receive(self) -> Union[str, bytes]:
        message = self.receive_nowait()
        if message is NO_MESSAGE:
            message = await self.next_message()
        return message  # type: ignore[no-any-return]

    def receive_nowait(self) -> Any:
        inbox = self._inbox
        if inbox:
            message = inbox.popleft()
            room = self._room
            if room is not None and len(inbox) <= MAX_QUEUED // 2:
                self._room = None
                if not room.done():
                    room.set_result(None)
            return message
        if self.closed:
            raise ConnectionClosed(self.close_code, self.close_reason, self.closed_by)
        return NO_MESSAGE

    def next_message(self) -> "asyncio.Future[Any]":
        if self._waiter is not None:
            raise RuntimeError("receive() is already being awaited by another task")
        waiter = self._waiter = self.loop.create_future()
        return waiter

    # -- sending ------------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self.closed:
            raise ConnectionClosed(self.close_code, self.close_reason, self.closed_by, sending=True)

    @property
    def write_paused(self) -> bool:
        """Messages wait in the queue: the caller should ``await drain()``, which sends them."""
        return bool(self._outbox)

    def write_message(self, message: Union[str, bytes]) -> None:
        self._check_open()
        event, size = _event(message)
        self._outbox.append((event, size))
        self._queued += size

    async def send(self, message: Union[str, bytes]) -> None:
        self.write_message(message)
        await self.drain()

    def prepare(self, message: Union[str, bytes]) -> Any:
        return _event(message)

    def send_nowait(self, message: Union[str, bytes]) -> None:
        self.send_frame_nowait(_event(message))

    def send_frame_nowait(self, frame: Any) -> None:
        self._check_open()
        self._outbox.append(frame)
        self._queued += frame[1]
        if self._queued > self._max_buffer:
            logger.warning("WebSocket %s: client not reading (%d bytes queued), closing 1013", self.path,
                           self._queued)
            self._outbox.clear()
            self._queued = 0
            self.close_nowait(1013, "client too slow")
            return
        if not self._flushing:
            self._flushing = True
            self.loop.create_task(self._flush())

    async def drain(self) -> None:
        if self._flushing:  # another task is sending: wait until the queue is small enough
            while self._queued > self._write_limit and not self._ended.done():
                waiter = self.loop.create_future()
                self._drain_waiters.append(waiter)
                await waiter
            if self._ended.done() and self.closed_by == "client":
                raise ConnectionClosed(self.close_code, self.close_reason, self.closed_by, sending=True)
            return
        if self._outbox:
            self._flushing = True
            await self._flush()

    async def _flush(self) -> None:
        """Hand queued events to the ASGI server in order (``_flushing`` is set by the caller)."""
        outbox = self._outbox
        send = self._send
        try:
            while outbox:
                event, size = outbox.popleft()
                self._queued -= size
                try:
                    await send(event)
                except (OSError, RuntimeError) as exc:  # the ASGI server says the client is gone
                    logger.debug("WebSocket %s: send failed (%r)", self.path, exc)
                    outbox.clear()
                    self._queued = 0
                    self._end(1006, "", "client")
                    break
                if self._drain_waiters and self._queued <= self._write_limit:
                    self._wake_drainers()
        finally:
            self._flushing = False
            self._wake_drainers()

    def _wake_drainers(self) -> None:
        waiters, self._drain_waiters = self._drain_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    # -- closing ------------------------------------------------------------------------------

    def close_nowait(self, code: int = 1000, reason: str = "") -> None:
        close_payload(code, reason)  # ValueError for a bad code or reason, before anything is sent
        if self.closed:
            return
        self.closed = True
        self.close_code = code
        self.close_reason = reason
        self.closed_by = "server"
        self._outbox.append(({"type": "websocket.close", "code": code, "reason": reason}, 0))
        if not self._flushing:
            self._flushing = True
            self.loop.create_task(self._flush())
        if self._close_timer is None and not self._ended.done():
            self._close_timer = self.loop.call_later(self._close_timeout, self._close_timed_out)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        self.close_nowait(code, reason)
        await self.wait_closed()

    async def wait_closed(self) -> None:
        await asyncio.shield(self._ended)

    def on_closed(self, callback: Callable[[], None]) -> None:
        self._ended.add_done_callback(lambda _: callback())

    def _close_timed_out(self) -> None:
        self._close_timer = None
        logger.info("WebSocket %s: the ASGI server did not report the close within %.1f s", self.path,
                    self._close_timeout)
        self._end(self.close_code, self.close_reason, self.closed_by)

    def _end(self, code: int, reason: str, by: str) -> None:
        """The connection is over: wake receivers and senders, log once."""
        if self._ended.done():
            return
        if not self.closed:  # the peer closed first (or the connection dropped)
            self.closed = True
            self.close_code = code
            self.close_reason = reason
            self.closed_by = by
        if self._close_timer is not None:
            self._close_timer.cancel()
            self._close_timer = None
        client = self.request.client
        logger.info("WebSocket %s from %s closed by %s: %d %s", self.path, client[0] if client else None,
                    self.closed_by, self.close_code, self.close_reason or "(no reason)")
        exc = ConnectionClosed(self.close_code, self.close_reason, self.closed_by)
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_exception(exc)
        room = self._room
        if room is not None and not room.done():
            room.set_result(None)
        self._wake_drainers()
        self._ended.set_result(None)

    async def finish(self) -> None:
        """After the session: the close goes out, the ASGI server reports the end (bounded by
        ``ws_close_timeout``), the reader stops."""
        if not self.closed:
            self.close_nowait(1000, "")
        if self._outbox and not self._flushing:
            self._flushing = True
            await self._flush()
        try:
            await asyncio.wait_for(asyncio.shield(self._ended), self._close_timeout + 1.0)
        except asyncio.TimeoutError:
            self._end(self.close_code, self.close_reason, self.closed_by)
        reader = self._reader
        if reader is not None and not reader.done():
            reader.cancel()
            await asyncio.wait((reader,))


__all__ = ["ASGIWebSocket"]
