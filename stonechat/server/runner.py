"""One worker's life: bind, start the application, serve, and stop in order on a signal.

This module owns the order of the stop sequence and every deadline in it; the framework only
supplies ``startup()``/``shutdown()`` (see ``interface.py``). It knows sockets, signals and
the interface, nothing about routes.

The shutdown phases, each logged on one line (INFO, stderr):
  1. stopping (SIGTERM)           the listening socket closes at once; new connections are refused
  2. draining N requests          in-flight requests get ``drain_timeout`` seconds; idle
                                  keep-alive connections close; late requests are cancelled (503)
  3. closing N websockets         each gets close 1001; their sessions (close handlers) finish
  4. application shutdown         ``app.shutdown()``: the framework's shutdown handlers
  5. done in N ms                 exit code 0
A second SIGINT/SIGTERM during 2-4 skips what is left and exits with code 1.

A stop can also come over a *control channel* (a socket given by a supervisor or the dev
reloader: ``supervisor.py``, ``reloader.py``): ``stop <why>`` starts the same sequence (and is
ignored when one is already running), ``force <why>`` skips what is left, and end-of-file (the
parent died) stops gracefully. The worker writes ``ready`` to it once it serves. The channel is why Ctrl+C in
a terminal, which signals the worker *and* its supervisor, is still one clean stop: only
signals the worker receives itself count towards "second signal".

A signal during startup cancels the startup handler that is running; the shutdown side still
runs. A startup failure exits with code 3 so a supervisor does not restart-loop on it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys
import threading
import time
from typing import Optional

from .http import HttpProtocol
from .interface import Application
from .peers import PeerBus
from .settings import ServerSettings
from .state import ServerState

logger = logging.getLogger("stonechat.server")

EXIT_OK = 0
EXIT_FORCED = 1
EXIT_STARTUP_FAILED = 3

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
CONTROL_FD_ENV = "STONECHAT_CONTROL_FD"

# After the drain deadline, cancelled requests get this long to write their 503 and close.
_ABORT_GRACE = 1.0
# Extra time websockets get beyond ws_close_timeout before they are dropped.
_WS_GRACE = 1.0
# How long leftover tasks get to react to cancellation when the loop is torn down.
_LEFTOVER_GRACE = 1.0
_LEFTOVER_GRACE_FORCED = 0.2


class StartupFailed(Exception):
    """Raised by the application's ``startup()`` when it must not serve."""


def bind_socket(host: str, port: int, reuse_port: bool = False, backlog: int = 2048) -> socket.socket:
    """A listening TCP socket; ``reuse_port`` lets several worker processes share the port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    # SO_REUSEADDR: a restarted server binds at once even with connections in TIME_WAIT.
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


def port_in_use(host: str, port: int) -> bool:
    """True when something accepts TCP connections on ``host:port`` (Robyn's ``is_port_in_use``)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def hold_stop_signals() -> None:
    """Keep SIGINT/SIGTERM pending (blocked) until a handler for them exists.

    Called just before the socket is bound: from then on clients can see the server, and a
    Ctrl+C must lead to the stop sequence, not a ``KeyboardInterrupt`` traceback. ``Worker``
    (and the supervisor) unblock them once their handlers are installed; a signal that
    arrived meanwhile is delivered then."""
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)


def new_event_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a hard dependency on Linux/macOS
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def inherited_control_channel() -> Optional[socket.socket]:
    """The control channel a parent passed by file descriptor (the dev reloader does), if any.

    The variable is removed so processes the application starts do not inherit it."""
    raw = os.environ.pop(CONTROL_FD_ENV, None)
    if not raw:
        return None
    try:
        return socket.socket(fileno=int(raw))
    except (ValueError, OSError) as exc:
        logger.warning("ignoring %s=%r: %s", CONTROL_FD_ENV, raw, exc)
        return None


class Worker:
    """Serves one application on one socket in the current process until stopped."""

    def __init__(self, app: Application, sock: socket.socket, settings: ServerSettings,
                 banner: Optional[str] = None, control: Optional[socket.socket] = None,
                 peers: Optional[PeerBus] = None) -> None:
        self.app = app
        self.sock = sock
        self.settings = settings
        self.banner = banner
        self.control = control
        self.peers = peers  # the other workers of a supervisor (server/peers.py)
        self.loop: Optional[asyncio.AbstractEventLoop] = None
        self.state: Optional[ServerState] = None
        self.stop_requested: Optional[asyncio.Event] = None
        self.signals_seen = 0
        self.forced = False
        self.exit_code = EXIT_OK
        self.main_task: Optional[asyncio.Task[None]] = None
        self.startup_task: Optional[asyncio.Task[None]] = None
        self.phase = "starting"
        self.stop_started: Optional[float] = None

    # -- running the loop ------------------------------------------------------------------

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
                self._teardown(loop)
            finally:
                for signum in STOP_SIGNALS:
                    try:
                        loop.remove_signal_handler(signum)
                    except (ValueError, RuntimeError):
                        pass
                asyncio.set_event_loop(None)
                loop.close()
                if self.control is not None:
                    self.control.close()
        if self.forced:
            logger.warning("exited early: %d ms after the first stop request",
                           (time.monotonic() - (self.stop_started or time.monotonic())) * 1000)
        return self.exit_code

    def _teardown(self, loop: asyncio.AbstractEventLoop) -> None:
        """Cancel what is still running; never wait long for tasks that ignore cancellation."""
        grace = _LEFTOVER_GRACE_FORCED if self.forced else _LEFTOVER_GRACE
        if self.peers is not None:
            self.peers.close()
        if self.state is not None:
            for conn in list(self.state.connections):
                if conn.transport is not None:
                    conn.transport.abort()
            self.state.stop_ticker()
        tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            loop.run_until_complete(asyncio.wait(tasks, timeout=grace))
            stuck = [t for t in tasks if not t.done()]
            if stuck:
                logger.warning("abandoning %d task(s) that ignored cancellation", len(stuck))
        try:
            loop.run_until_complete(asyncio.wait_for(loop.shutdown_asyncgens(), grace))
        except (asyncio.TimeoutError, asyncio.CancelledError):
            pass

    # -- stop requests ---------------------------------------------------------------------

    def _on_signal(self, signum: int) -> None:
        """A signal this process received itself. The second one forces the exit."""
        self.signals_seen += 1
        name = signal.Signals(signum).name
        if self.signals_seen >= 2 and self.stop_started is not None:
            self._force(name)
        else:
            self._request_stop(name)

    def _on_control(self) -> None:
        assert self.control is not None
        try:
            data = self.control.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            assert self.loop is not None
            self.loop.remove_reader(self.control.fileno())
            self._request_stop("parent process gone")
            return
        for line in data.decode("ascii", "replace").splitlines():
            verb, _, why = line.strip().partition(" ")
            if verb == "stop":
                self._request_stop(why or "requested")
            elif verb == "force":
                self._force(why or "requested")

    def _request_stop(self, why: str) -> None:
        if self.stop_started is not None:
            return  # already stopping: a stop from another source is the same request
        self.stop_started = time.monotonic()
        logger.info("stopping (%s)", why)
        assert self.stop_requested is not None
        self.stop_requested.set()
        if self.startup_task is not None and not self.startup_task.done():
            self.startup_task.cancel()

    def _force(self, why: str) -> None:
        if self.forced:
            return
        self.forced = True
        if self.stop_started is None:
            self.stop_started = time.monotonic()
        logger.warning("second stop request (%s) during shutdown: skipping what is left of "
                       "phase '%s' and everything after it, exiting now", why, self.phase)
        self.exit_code = EXIT_FORCED
        if self.main_task is not None:
            self.main_task.cancel()

    # -- the sequence ----------------------------------------------------------------------

    async def _main(self) -> None:
        loop = asyncio.get_running_loop()
        self.stop_requested = asyncio.Event()
        for signum in STOP_SIGNALS:
            loop.add_signal_handler(signum, self._on_signal, signum)
        # A supervisor keeps these blocked from fork until the handlers above exist, so a
        # Ctrl+C in that window is delivered here instead of killing the process.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
        if self.control is not None:
            self.control.setblocking(False)
            loop.add_reader(self.control.fileno(), self._on_control)

        self.phase = "startup"
        self.startup_task = loop.create_task(self.app.startup())
        try:
            await self.startup_task
        except asyncio.CancelledError:
            if self.forced or not self.startup_task.cancelled():
                raise
            logger.info("stopped during startup; running shutdown handlers")
            self.sock.close()
            await self._shutdown()
            return
        except BaseException as exc:
            # The application logs the details (which handler, traceback); we say what follows.
            logger.error("not serving: startup failed (%s); running shutdown handlers", exc)
            self.exit_code = EXIT_STARTUP_FAILED
            self.sock.close()
            self.phase = "shutdown handlers"
            await self.app.shutdown()
            return
        finally:
            self.startup_task = None
        if self.stop_requested.is_set():  # a stop raced with the end of startup
            self.sock.close()
            await self._shutdown()
            return

        connect_peers = getattr(self.app, "connect_peers", None)
        if self.peers is not None and connect_peers is not None:
            try:
                await self.peers.open(connect_peers(self.peers.publish))
            except OSError as exc:  # e.g. a TMPDIR so long that a socket path cannot be bound
                logger.warning("no messages between worker processes (%s): WebSocket broadcasts "
                               "reach this process's clients only", exc)
                self.peers.close()
        state = self.state = ServerState(self.app, self.settings, loop)
        state.start_ticker()
        server = await loop.create_server(lambda: HttpProtocol(state), sock=self.sock,
                                          backlog=self.settings.backlog)
        self.phase = "serving"
        if self.banner:
            logger.info(self.banner)
        self._tell_parent(b"ready\n")
        await self.stop_requested.wait()
        # 1. stop accepting: the listening socket closes now (our copy of it, in a supervisor)
        state.accepting = False
        server.close()
        await self._drain(state)
        await self._close_websockets(state)
        if self.peers is not None:
            self.peers.close()
        state.stop_ticker()
        await self._shutdown()

    def _tell_parent(self, message: bytes) -> None:
        if self.control is None:
            return
        try:
            self.control.send(message)
        except OSError:
            pass  # the parent is gone; end-of-file on the channel will stop us

    async def _drain(self, state: ServerState) -> None:
        self.phase = "draining"
        for conn in list(state.connections):
            conn.close_if_idle()
        busy = [c for c in state.connections if not c.close_if_idle()]
        logger.info("draining %d requests (deadline %.1f s)", len(busy), self.settings.drain_timeout)
        if not busy:
            return
        deadline = time.monotonic() + self.settings.drain_timeout
        while busy and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
            busy = [c for c in state.connections if not c.close_if_idle()]
        if not busy:
            return
        logger.warning("drain deadline passed: cancelling %d request(s)", len(busy))
        for conn in busy:
            conn.abort()
        # Let the cancelled handlers write their 503 and the transports flush and close.
        deadline = time.monotonic() + _ABORT_GRACE
        while state.connections and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        for conn in list(state.connections):
            if conn.transport is not None:
                conn.transport.abort()

    async def _close_websockets(self, state: ServerState) -> None:
        if not state.websockets:
            return
        self.phase = "closing websockets"
        sockets = list(state.websockets)
        logger.info("closing %d websockets with 1001", len(sockets))
        tasks = [asyncio.ensure_future(ws.shutdown()) for ws in sockets]
        done, pending = await asyncio.wait(tasks, timeout=self.settings.ws_close_timeout + _WS_GRACE)
        for task in done:
            if not task.cancelled() and task.exception() is not None:
                logger.error("error while closing a websocket", exc_info=task.exception())
        if pending:
            logger.warning("%d websocket(s) did not close in time; dropping them", len(pending))
            for task in pending:
                task.cancel()

    async def _shutdown(self) -> None:
        self.phase = "shutdown handlers"
        await self.app.shutdown()
        started = self.stop_started or time.monotonic()
        logger.info("done in %d ms", (time.monotonic() - started) * 1000)


def serve(app: Application, sock: socket.socket, settings: ServerSettings, banner: Optional[str] = None,
          control: Optional[socket.socket] = None) -> int:
    """Run one worker in this process; returns its exit code."""
    return Worker(app, sock, settings, banner, control).run()


def exit_now(code: int) -> None:
    """Flush stdio and leave the process at once (no atexit, no thread joins): for forked
    workers and for a process whose handler threads will not finish."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    os._exit(code)


def guard_exit(code: int, grace: float = 2.0) -> None:
    """Make sure the process can exit: threads stuck in user code (a blocking handler that
    outlived the drain deadline) would otherwise keep the interpreter alive at exit.

    When such threads exist, a daemon timer ends the process with ``code`` after ``grace``
    seconds unless it has exited normally by then (atexit handlers still get that time)."""
    stuck = [t for t in threading.enumerate()
             if t is not threading.main_thread() and not t.daemon and t.is_alive()]
    if not stuck:
        return
    for t in stuck:
        t.join(0.05)
    stuck = [t for t in stuck if t.is_alive()]
    if not stuck:
        return
    logger.warning("%d handler thread(s) still running (%s); exiting anyway in %.1f s",
                   len(stuck), ", ".join(t.name for t in stuck[:5]), grace)

    timer = threading.Timer(grace, exit_now, (code,))
    timer.daemon = True
    timer.start()
