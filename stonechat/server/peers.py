"""Messages between the worker processes of one ``--processes N`` server.

What it is for: a WebSocket broadcast must reach the clients that the *other* workers accepted
(they share one listening socket, so a chat's members are spread over all of them). The server
carries opaque byte strings; what they mean is the framework's business (see
``interface.py``, "Peers").

How: the supervisor makes a private directory (mode 0700: only the same user can reach it) and
every worker listens on ``<dir>/<index>.sock`` (a Unix stream socket). A worker that publishes
connects to each other worker once, on first use, and writes each message with a 4-byte length
in front; the event loop's transport buffers and flow-controls the writes. Why streams and not
datagrams: a Unix datagram queue holds about ten messages (``net.unix.max_dgram_qlen``), so a
burst of broadcasts would be lost; a stream queues them in order.

Never waiting on a peer:

* a peer that is restarting (nothing listening yet) misses the messages published meanwhile;
  the next publish connects again (at most every ``RETRY_AFTER`` seconds);
* a peer that does not read (its loop is blocked) has messages queued up to
  ``MAX_BACKLOG`` bytes; beyond that, messages to it are dropped and logged, so one stuck
  worker costs memory that is bounded and never stalls the others.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any, Callable, Optional

logger = logging.getLogger("stonechat.server.peers")

MAX_BACKLOG = 16 * 1024 * 1024  # bytes queued for one peer before messages to it are dropped
MAX_MESSAGE = 64 * 1024 * 1024  # a length prefix above this means a broken stream
RETRY_AFTER = 0.5  # seconds between two connection attempts to the same peer
WARN_EVERY = 5.0  # seconds between two warnings about the same peer


def socket_path(directory: str, index: int) -> str:
    return os.path.join(directory, f"{index}.sock")


class _Inbound(asyncio.Protocol):
    """One other worker's connection to us: length-prefixed messages to ``receive``."""

    def __init__(self, receive: Callable[[bytes], None], registry: set[Any]) -> None:
        self.receive = receive
        self.registry = registry
        self.buf = bytearray()
        self.transport: Optional[asyncio.BaseTransport] = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.registry.add(self)

    def connection_lost(self, exc: Optional[BaseException]) -> None:
        self.registry.discard(self)

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data  # a bytearray: a large message arriving in pieces is not copied again and again
        pos, end = 0, len(buf)
        while end - pos >= 4:
            n = int.from_bytes(buf[pos:pos + 4], "big")
            if n > MAX_MESSAGE:
                logger.error("broken stream from another worker (message length %d); dropping it", n)
                assert self.transport is not None
                self.transport.close()
                buf.clear()
                return
            if end - pos - 4 < n:
                break
            message = bytes(buf[pos + 4:pos + 4 + n])
            pos += 4 + n
            try:
                self.receive(message)
            except Exception:
                logger.exception("a message from another worker could not be handled")
        if pos:
            del buf[:pos]


class _Outbound:
    """Our connection to one other worker."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.name = os.path.basename(path).split(".")[0]
        self.transport: Optional[asyncio.Transport] = None
        self.connecting = False
        self.pending: list[bytes] = []  # published while the connection is being made
        self.pending_bytes = 0
        self.last_attempt = -RETRY_AFTER
        self.dropped = 0
        self.warned_at = -WARN_EVERY


class _Closed(asyncio.Protocol):
    """Outbound connections are write-only; this notices when the peer goes away."""

    def __init__(self, peer: _Outbound) -> None:
        self.peer = peer
        self.transport: Optional[asyncio.BaseTransport] = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def connection_lost(self, exc: Optional[BaseException]) -> None:
        if self.peer.transport is self.transport:  # not a newer connection made since
            self.peer.transport = None


class PeerBus:
    """This worker's end: ``publish(data)`` to every other worker, and incoming messages to
    the ``receive`` callable given to ``open``."""

    def __init__(self, directory: str, index: int, count: int) -> None:
        self.directory = directory
        self.index = index
        self.peers = [_Outbound(socket_path(directory, i)) for i in range(count) if i != index]
        self.loop: Any = None
        self.server: Optional[asyncio.AbstractServer] = None
        self.inbound: set[_Inbound] = set()
        self.connects: set[asyncio.Task[None]] = set()  # held: the loop keeps only weak references
        self.closed = False

    async def open(self, receive: Callable[[bytes], None]) -> None:
        self.loop = asyncio.get_running_loop()
        path = socket_path(self.directory, self.index)
        try:
            os.unlink(path)  # left by this slot's previous worker, if it died
        except FileNotFoundError:
            pass

        self.server = await self.loop.create_unix_server(lambda: _Inbound(receive, self.inbound), path)

    def publish(self, data: bytes) -> None:
        if self.closed or self.loop is None:
            # Not open yet (the worker is still starting): there is nobody to tell yet, and a
            # connection attempt made now could never start and would leave its peer
            # "connecting" for good.
            return
        frame = len(data).to_bytes(4, "big") + data
        for peer in self.peers:
            transport = peer.transport
            if transport is not None and not transport.is_closing():
                if transport.get_write_buffer_size() + len(frame) > MAX_BACKLOG:
                    self._dropped(peer, "it is not reading")
                else:
                    transport.write(frame)
            elif peer.connecting:
                if peer.pending_bytes + len(frame) > MAX_BACKLOG:
                    self._dropped(peer, "still connecting")
                else:
                    peer.pending.append(frame)
                    peer.pending_bytes += len(frame)
            elif time.monotonic() - peer.last_attempt >= RETRY_AFTER:
                peer.connecting = True
                peer.last_attempt = time.monotonic()
                peer.pending, peer.pending_bytes = [frame], len(frame)
                task = self.loop.create_task(self._connect(peer))
                self.connects.add(task)
                task.add_done_callback(self.connects.discard)
            # else: the peer was unreachable a moment ago (restarting); this message misses it

    async def _connect(self, peer: _Outbound) -> None:
        try:
            transport, _ = await self.loop.create_unix_connection(lambda: _Closed(peer), peer.path)
        except OSError:
            transport = None  # not listening (yet): it has no clients to miss the messages
        pending, peer.pending, peer.pending_bytes = peer.pending, [], 0
        peer.connecting = False
        if transport is None:
            return
        if self.closed:
            transport.close()
            return
        peer.transport = transport
        transport.write(b"".join(pending))

    def _dropped(self, peer: _Outbound, why: str) -> None:
        peer.dropped += 1
        now = time.monotonic()
        if now - peer.warned_at >= WARN_EVERY:
            peer.warned_at = now
            logger.warning("worker %s missed %d message(s) from worker %d: %s",
                           peer.name, peer.dropped, self.index, why)
            peer.dropped = 0

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.server is not None:
            self.server.close()
        for protocol in list(self.inbound):
            if protocol.transport is not None:
                protocol.transport.close()
        for peer in self.peers:
            if peer.transport is not None:
                peer.transport.close()
        try:
            os.unlink(socket_path(self.directory, self.index))
        except OSError:
            pass
