"""Flow control of one connection, both directions: ``FlowControl``, the base of the HTTP and
the WebSocket protocol.

Reading: ``pause_reading``/``resume_reading`` stop and restart the transport, remembering the
state, so a protocol can ask twice. Writing: the transport calls ``pause_writing`` when its
buffer passes the high-water mark and ``resume_writing`` when it has drained; a task that must
not outrun the client awaits ``writable()``, a future that ``resume_writing`` resolves (or
``wake_writers(exc)`` fails, when the connection ends first). What to do when a client does not
read (stop reading its requests, stall a ``send()``, drop a broadcast receiver) stays with the
protocol.

A base class rather than an object the protocols hold, so that the transport's callbacks land
here directly and ``write_paused``, which the framework reads once per WebSocket send, is a
plain slot, not a property.
"""

from __future__ import annotations

import asyncio
from typing import Optional


class FlowControl:
    __slots__ = ("loop", "transport", "read_paused", "write_paused", "drain_waiters")

    transport: asyncio.Transport  # set by the protocol when it has one

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.read_paused = False
        self.write_paused = False  # the transport's buffer is over its high-water mark
        self.drain_waiters: Optional[list[asyncio.Future[None]]] = None  # made by the first writable()

    def pause_reading(self) -> None:
        if not self.read_paused:
            self.read_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.read_paused:
            self.read_paused = False
            self.transport.resume_reading()

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        self.wake_writers()

    def writable(self) -> asyncio.Future[None]:
        """A future resolved once the client has read enough (``resume_writing``)."""
        future: asyncio.Future[None] = self.loop.create_future()
        if self.drain_waiters is None:
            self.drain_waiters = []
        self.drain_waiters.append(future)
        return future

    def wake_writers(self, exc: Optional[BaseException] = None) -> None:
        """Resolve every ``writable()`` future, or fail them with ``exc``."""
        waiters, self.drain_waiters = self.drain_waiters, None
        if not waiters:
            return
        for future in waiters:
            if not future.done():
                if exc is None:
                    future.set_result(None)
                else:
                    future.set_exception(exc)
