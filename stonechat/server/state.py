"""What all connections of one worker share: ``ServerState``.

The settings, the application, the event loop, a clock refreshed once a second (with the
``Date`` header block made from it), the live HTTP connections and WebSockets, the number
of WebSockets per client IP (``ws_max_connections_per_ip``), the parked tasks closed HTTP
connections left for the next ones (``spare_runners``), and where the stop is (``stopping``,
``drain_over``: read by the connections only off their fast path). One ticker a second enforces
every connection's deadlines, so no per-request or per-message timer exists.

It knows the connections only by what it calls on them (``HTTPConnection``,
``LiveWebSocket``), so it imports neither protocol.
"""

from __future__ import annotations

import asyncio
from email.utils import formatdate
from typing import Any, Callable, Optional, Protocol

from .interface import Application, HTTPRequest
from .settings import ServerSettings


class HTTPConnection(Protocol):
    """What the worker asks of a live HTTP connection (``http.HttpProtocol``)."""

    transport: asyncio.Transport

    def check_timeouts(self, now: float) -> None: ...
    def begin_drain(self, now: float, quiet: float) -> bool: ...
    def drain_step(self, now: float, quiet: float) -> None: ...
    def drain_deadline_passed(self) -> bool: ...


class LiveWebSocket(Protocol):
    """What the worker asks of an open WebSocket (``websocket.protocol.WebSocketProtocol``)."""

    def check_timeouts(self, now: float) -> None: ...
    async def shutdown(self) -> None: ...


class ServerState:
    """One worker's shared state (see the module docstring)."""

    def __init__(self, app: Application, settings: ServerSettings, loop: asyncio.AbstractEventLoop) -> None:
        self.app = app
        self.settings = settings
        self.loop = loop
        self.connections: set[HTTPConnection] = set()
        self.websockets: set[LiveWebSocket] = set()
        self.websockets_per_ip: dict[str, int] = {}  # client IP → open WebSockets from it
        self.stopping = False    # the stop began: every response says Connection: close
        self.drain_over = False  # the drain deadline passed: what is still owed gets 503
        self.now = loop.time()
        self.date_block = b""
        # The app's own Server/Date header (set app-wide) replaces ours (interface.Application).
        own: frozenset[bytes] = getattr(app, "own_headers", frozenset())
        self.server_line = b"" if b"server" in own else b"server: stonechat\r\n"
        self.send_date = b"date" not in own
        # The application's streams_body(request), or None: no route streams (interface.py)
        self.streams_body: Optional[Callable[[HTTPRequest], bool]] = getattr(app, "streams_body", None)
        self._ticker: Optional[asyncio.TimerHandle] = None
        # Parked tasks that closed connections left for the next ones (http.py ``_Runner``).
        self.spare_runners: list[Any] = []

    # -- WebSockets and their per-IP counts ----------------------------------------------------

    def add_websocket(self, ws: LiveWebSocket, ip: Optional[str]) -> None:
        self.websockets.add(ws)
        if ip is not None:
            counts = self.websockets_per_ip
            counts[ip] = counts.get(ip, 0) + 1

    def remove_websocket(self, ws: LiveWebSocket, ip: Optional[str]) -> None:
        """Forget ``ws`` (a no-op when it is not registered, so it can be called twice)."""
        if ws not in self.websockets:
            return
        self.websockets.discard(ws)
        if ip is not None:
            counts = self.websockets_per_ip
            left = counts.get(ip, 1) - 1
            if left > 0:
                counts[ip] = left
            else:
                counts.pop(ip, None)

    def websockets_from(self, ip: str) -> int:
        return self.websockets_per_ip.get(ip, 0)

    # -- the clock -------------------------------------------------------------------------

    def start_ticker(self) -> None:
        self.tick()

    def stop_ticker(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None

    def tick(self) -> None:
        """Once a second: refresh the Date header and enforce every connection's deadlines."""
        self.now = now = self.loop.time()
        date = b"date: %s\r\n" % formatdate(usegmt=True).encode() if self.send_date else b""
        self.date_block = date + self.server_line
        for conn in list(self.connections):
            conn.check_timeouts(now)
        for ws in list(self.websockets):
            ws.check_timeouts(now)
        self._ticker = self.loop.call_later(1.0, self.tick)
