"""One worker's life: bind, start the application, serve, and stop in order on a signal.

The shutdown phases, each logged on one line:
  1. stopping (signal)            the listening socket closes at once; new connections are refused
  2. draining N requests          in-flight requests get ``drain_timeout`` seconds; idle
                                  keep-alive connections close; late requests are cancelled (503)
  3. closing N websockets         each gets close 1001; their sessions (close handlers) finish
  4. application shutdown         ``app.shutdown()``: the framework's shutdown handlers
  5. done in N ms                 exit code 0
A second SIGINT/SIGTERM during 2-4 skips what is left and exits with code 1.
This module knows sockets and the interface in ``interface.py``; nothing about routes.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys
import time
from typing import Any, Optional

from .http import HttpProtocol, ServerState
from .settings import ServerSettings

logger = logging.getLogger("stonechat.server")

EXIT_OK = 0
EXIT_FORCED = 1
EXIT_STARTUP_FAILED = 3


class StartupFailed(Exception):
    """Raised by the application's ``startup()`` when it must not serve."""


def bind_socket(host: str, port: int, reuse_port: bool = False, backlog: int = 2048) -> socket.socket:
    """A listening TCP socket; ``reuse_port`` lets several worker processes share the port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port and hasattr(socket, "SO_REUSEPORT"):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.listen(backlog)
    sock.set_inheritable(True)
    return sock


def new_event_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a hard dependency on Linux/macOS
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


class Worker:
    """Serves one application on one socket in the current process until stopped."""

    def __init__(self, app: Any, sock: socket.socket, settings: ServerSettings,
                 banner: Optional[str] = None) -> None:
        self.app = app
        self.sock = sock
        self.settings = settings
        self.banner = banner
        self.loop: Optional[asyncio.AbstractEventLoop] = None
        self.state: Optional[ServerState] = None
        self.stop_requested: Optional[asyncio.Event] = None
        self.signals_seen = 0
        self.exit_code = EXIT_OK
        self.main_task: Optional[asyncio.Task] = None
        self.phase = "starting"

    def run(self) -> int:
        loop = new_event_loop()
        asyncio.set_event_loop(loop)
        self.loop = loop
        try:
            self.main_task = loop.create_task(self._main())
            try:
                loop.run_until_complete(self.main_task)
            except asyncio.CancelledError:
                pass
        finally:
            try:
                self._cancel_leftovers(loop)
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                asyncio.set_event_loop(None)
                loop.close()
        return self.exit_code

    def _cancel_leftovers(self, loop: asyncio.AbstractEventLoop) -> None:
        tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))

    def _on_signal(self, signum: int) -> None:
        self.signals_seen += 1
        name = signal.Signals(signum).name
        if self.signals_seen == 1:
            logger.info("stopping (%s)", name)
            assert self.stop_requested is not None
            self.stop_requested.set()
            return
        logger.warning("second %s during shutdown (phase: %s): skipping what is left, exiting now",
                       name, self.phase)
        self.exit_code = EXIT_FORCED
        if self.main_task is not None:
            self.main_task.cancel()

    async def _main(self) -> None:
        loop = asyncio.get_running_loop()
        self.stop_requested = asyncio.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, self._on_signal, signum)
        self.phase = "startup"
        try:
            await self.app.startup()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            # The application logs the details (which handler, traceback); we say what follows.
            logger.error("not serving: startup failed (%s); running shutdown handlers", exc)
            self.exit_code = EXIT_STARTUP_FAILED
            self.sock.close()
            self.phase = "shutdown handlers"
            await self.app.shutdown()
            return
        if self.stop_requested.is_set():  # a signal arrived during startup
            self.sock.close()
            await self._shutdown(time.monotonic())
            return
        state = self.state = ServerState(self.app, self.settings, loop)
        state.start_ticker()
        server = await loop.create_server(lambda: HttpProtocol(state), sock=self.sock,
                                          backlog=self.settings.backlog)
        self.phase = "serving"
        if self.banner:
            logger.info(self.banner)
        await self.stop_requested.wait()
        started = time.monotonic()
        # 1. stop accepting: the listening socket closes now
        state.accepting = False
        server.close()
        await self._drain(state)
        state.stop_ticker()
        await self._shutdown(started)

    async def _drain(self, state: ServerState) -> None:
        self.phase = "draining"
        for conn in list(state.connections):
            conn.close_if_idle()
        busy = [c for c in state.connections if not c.close_if_idle()]
        if busy:
            logger.info("draining %d request(s), up to %.1f s", len(busy), self.settings.drain_timeout)
            deadline = time.monotonic() + self.settings.drain_timeout
            while time.monotonic() < deadline:
                busy = [c for c in state.connections if not c.close_if_idle()]
                if not busy:
                    break
                await asyncio.sleep(0.02)
            busy = [c for c in state.connections if not c.close_if_idle()]
            if busy:
                logger.warning("drain deadline passed: cancelling %d request(s)", len(busy))
                for conn in busy:
                    conn.abort()
                await asyncio.sleep(0)
        else:
            logger.info("draining 0 requests")
        if state.websockets:
            self.phase = "closing websockets"
            sockets = list(state.websockets)
            logger.info("closing %d websocket(s) with 1001", len(sockets))
            await asyncio.gather(*(ws.shutdown() for ws in sockets), return_exceptions=True)

    async def _shutdown(self, started: float) -> None:
        self.phase = "shutdown handlers"
        await self.app.shutdown()
        logger.info("done in %d ms", (time.monotonic() - started) * 1000)


def serve(app: Any, sock: socket.socket, settings: ServerSettings, banner: Optional[str] = None) -> int:
    """Run one worker in this process; returns its exit code."""
    return Worker(app, sock, settings, banner).run()
