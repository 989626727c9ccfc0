"""One worker's life: bind, start the application, serve, and stop in order on a signal.

This module owns the order of the stop sequence and every deadline in it; the framework only
supplies ``startup()``/``shutdown()`` (see ``interface.py``). It knows sockets, signals and
the interface, nothing about routes.

The shutdown phases, each logged on one line (INFO, stderr):
  1. stopping (SIGTERM)           the listening socket closes at once (what is queued on it is
                                  accepted first); new connections are refused; every response
                                  from now on says ``Connection: close``
  2. draining N requests          requests received get ``drain_timeout`` seconds (later, 503);
                                  a connection closes, lingering, once its client is quiet
                                  (``http.py``: nothing a client sent is dropped or reset);
                                  the application's background tasks get the same deadline,
                                  then it cancels those left and names them (``interface.py``)
  3. closing N websockets         each gets close 1001; their sessions (close handlers) finish
  4. application shutdown         ``app.shutdown()``: the framework's shutdown handlers
  5. done in N ms                 exit code 0
What each signal means is ``signals.py``'s policy: SIGTERM again changes nothing; a second
SIGINT, or SIGQUIT, forces: what is left is skipped (a shutdown step already running gets a
last chance, in the framework) and the exit code is 1.

A stop can also come over a *control channel* (a socket given by a supervisor or the dev
reloader: ``supervisor.py``, ``reloader.py``): ``stop <why>`` starts the same sequence (and is
ignored when one is already running), ``force <why>`` skips what is left, and end-of-file (the
parent died) stops gracefully. The worker writes ``ready`` to it once it serves. The channel is why Ctrl+C in
a terminal, which signals the worker *and* its supervisor, is still one clean stop: only
signals the worker receives itself count towards "second Ctrl+C".

A stop before or during startup skips or cancels the startup handler that is running; the
shutdown side still runs. A startup failure exits with code 3 so a supervisor does not
restart-loop on it.
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
from typing import Any, Optional

from .http import HttpProtocol
from .observed import count_in_flight, protocol_for
from .interface import Application
from .peers import PeerBus
from .settings import ServerSettings
from .signals import AGAIN, STOP, STOP_SIGNALS, StopSignals, signal_name, take_held
from .state import ServerState

logger = logging.getLogger("stonechat.server")

EXIT_OK = 0
EXIT_FORCED = 1
EXIT_STARTUP_FAILED = 3

CONTROL_FD_ENV = "STONECHAT_CONTROL_FD"

# After the drain deadline, cancelled requests get this long to write their 503 and close.
_ABORT_GRACE = 1.0
# Once the stop began, a connection with nothing owed is closed when its client has sent
# nothing for this long: a keep-alive client that just got an answer without "close" may be
# sending its next request right now, and that request must be answered, not reset.
_QUIET = 1.0
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
                 peers: Optional[PeerBus] = None, forked: bool = False) -> None:
        self.app = app
        self.sock = sock
        self.settings = settings
        self.banner = banner
        self.control = control
        self.peers = peers  # the other workers of a supervisor (server/peers.py)
        self.loop: Optional[asyncio.AbstractEventLoop] = None
        self.state: Optional[ServerState] = None
        self.stop_requested: Optional[asyncio.Event] = None
        self.signals = StopSignals()
        self.forked = forked  # a supervisor's worker: it exits right after run()
        self.previous_handlers: dict[int, Any] = {}
        self.listener: Optional[socket.socket] = None  # our copy of the listening socket
        self.backlog_tasks: list[asyncio.Task[Any]] = []
        self.shutdown_began = False
        self.forced = False
        self.own_forces = 0  # forcing signals this process received itself (not a parent's force)
        self.exit_code = EXIT_OK
        self.main_task: Optional[asyncio.Task[None]] = None
        self.startup_task: Optional[asyncio.Task[None]] = None
        self.protocol: type[HttpProtocol] = HttpProtocol
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
            if self.forced and not self.shutdown_began:
                skip_shutdown = getattr(self.app, "skip_shutdown", None)
                if skip_shutdown is not None:
                    skip_shutdown()
        finally:
            try:
                self._teardown(loop)
            finally:
                self._restore_signal_handlers()
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
        if self.listener is not None:
            self.listener.close()
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

    def _install_signal_handlers(self) -> None:
        """Handlers as dispositions (``signal.signal``), not the loop's: they stay in place after
        the loop is gone, so a late signal is ignored instead of killing a process that is
        exiting anyway (exit 0, not 143). Only the main thread may set them; a program that
        runs the server in another thread handles signals itself."""
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in STOP_SIGNALS:
            self.previous_handlers[signum] = signal.signal(signum, self._signal_arrived)

    def _signal_arrived(self, signum: int, frame: Any) -> None:
        # Runs between two bytecodes of whatever the main thread is doing: only hand over.
        loop = self.loop
        if loop is None or loop.is_closed():
            return  # the stop already happened
        try:
            loop.call_soon_threadsafe(self._on_signal, signum)
        except RuntimeError:
            pass

    def _restore_signal_handlers(self) -> None:
        # A forked worker exits right after this: keep ours, which ignore late signals, rather
        # than open a moment in which the default action of SIGTERM would kill it.
        if self.forked:
            return
        for signum, handler in self.previous_handlers.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        self.previous_handlers = {}

    def _on_signal(self, signum: int) -> None:
        """A signal this process received itself; ``signals.StopSignals`` says what it means."""
        name = signal_name(signum)
        verdict = self.signals.meaning(signum)
        if verdict == STOP:
            self._request_stop(name)
        elif verdict == AGAIN:
            logger.info(StopSignals.again_message(signum))
        else:
            self.own_forces += 1
            self._force(name, second=signum == signal.SIGINT)

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
                self._force(why or "requested", from_parent=True)

    def _request_stop(self, why: str) -> None:
        self.signals.stopping = True
        if self.stop_started is not None:
            return  # already stopping: a stop from another source is the same request
        self.stop_started = time.monotonic()
        logger.info("stopping (%s)", why)
        assert self.stop_requested is not None
        self.stop_requested.set()
        if self.startup_task is not None and not self.startup_task.done():
            self.startup_task.cancel()

    def _force(self, why: str, second: bool = False, from_parent: bool = False) -> None:
        main_task = self.main_task
        if self.forced:
            # A parent's force repeats the Ctrl+C that reached us too: nothing new. A forcing
            # signal of our own after one already came (a third Ctrl+C) ends the last chance.
            if from_parent:
                return
            if self.own_forces < 2:
                logger.info("%s (%s): already skipping what is left",
                            "second stop request" if second else "forced stop", why)
                return
            logger.warning("another stop request (%s): exiting at once", why)
            if main_task is not None and not main_task.done():
                main_task.cancel()
            return
        self.forced = self.signals.forced = self.signals.stopping = True
        if self.stop_started is None:
            self.stop_started = time.monotonic()
        last_chance = "; the shutdown step that is running gets a last chance" \
            if self.phase == "shutdown handlers" else ""
        logger.warning("%s (%s): skipping what is left of phase '%s' and everything after it%s",
                       "second stop request" if second else "forced stop", why, self.phase, last_chance)
        self.exit_code = EXIT_FORCED
        if main_task is not None:
            main_task.cancel()

    # -- the sequence ----------------------------------------------------------------------

    async def _main(self) -> None:
        loop = asyncio.get_running_loop()
        self.stop_requested = asyncio.Event()
        self._install_signal_handlers()
        # A supervisor keeps these blocked from fork until the handlers above exist, so a
        # Ctrl+C in that window is delivered here instead of killing the process.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
        for signum in take_held():  # arrived after app.start(), before our handlers existed
            self._on_signal(signum)
        if self.control is not None:
            self.control.setblocking(False)
            loop.add_reader(self.control.fileno(), self._on_control)

        self.phase = "startup"
        if self.stop_requested.is_set():
            logger.info("stopped before startup; running shutdown handlers")
            self.sock.close()
            await self._shutdown()
            return
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
            self.shutdown_began = True
            await self.app.shutdown()
            return
        finally:
            self.startup_task = None

        connect_peers = getattr(self.app, "connect_peers", None)
        if self.peers is not None and connect_peers is not None and not self.stop_requested.is_set():
            try:
                await self.peers.open(connect_peers(self.peers.publish))
            except OSError as exc:  # e.g. a TMPDIR so long that a socket path cannot be bound
                logger.warning("no messages between worker processes (%s): WebSocket broadcasts "
                               "reach this process's clients only", exc)
                self.peers.close()
        if self.stop_requested.is_set():  # a stop raced with the end of startup
            self.sock.close()
            await self._shutdown()
            return
        state = self.state = ServerState(self.app, self.settings, loop)
        state.start_ticker()
        # Our own copy of the listening socket: at the stop, connections already queued on it
        # are accepted and answered instead of being reset when the socket closes.
        self.listener = self.sock.dup()
        protocol = self.protocol = protocol_for(self.app)  # observing only when the app observes
        count_in_flight(self.app, state)
        server = await loop.create_server(lambda: protocol(state), sock=self.sock,
                                          backlog=self.settings.backlog)
        self.phase = "serving"
        if not self.stop_requested.is_set():
            if self.banner:
                logger.info(self.banner)
            self._tell_parent(b"ready\n")
            await self.stop_requested.wait()
        # 1. stop accepting: from now on every response says Connection: close; the listening
        # socket closes (our copy of it, in a supervisor) after taking what is queued on it
        self.phase = "stopping"
        state.stopping = True
        stopping = getattr(self.app, "stopping", None)  # readiness answers 503 from now on
        if stopping is not None:
            try:
                stopping()
            except Exception:
                logger.exception("the application's stopping() failed")
        server.close()
        self._accept_queued(state)
        await self._drain(state)
        await self._close_websockets(state)
        if self.peers is not None:
            self.peers.close()
        state.stop_ticker()
        await self._shutdown()

    def _accept_queued(self, state: ServerState) -> None:
        """Accept the connections waiting on the listening socket, then close it. They
        completed their handshake and may have sent a request: closing the socket under them
        would reset them. One that arrives after this is refused (ECONNREFUSED)."""
        listener, self.listener = self.listener, None
        if listener is None:
            return
        assert self.loop is not None
        loop = self.loop
        try:
            listener.setblocking(False)
            while True:
                try:
                    conn, _ = listener.accept()
                except (BlockingIOError, InterruptedError):
                    break
                except OSError:
                    break
                self.backlog_tasks.append(loop.create_task(
                    loop.connect_accepted_socket(lambda: self.protocol(state), conn)))
        finally:
            listener.close()

    def _tell_parent(self, message: bytes) -> None:
        if self.control is None:
            return
        try:
            self.control.send(message)
        except OSError:
            pass  # the parent is gone; end-of-file on the channel will stop us

    async def _drain(self, state: ServerState) -> None:
        self.phase = "draining"
        loop = asyncio.get_running_loop()
        if self.backlog_tasks:
            await asyncio.wait(self.backlog_tasks, timeout=_ABORT_GRACE)
            self.backlog_tasks = []
        drain_timeout = self.settings.drain_timeout
        quiet = min(_QUIET, drain_timeout)
        now = loop.time()
        busy = sum(1 for conn in list(state.connections) if conn.begin_drain(now, quiet))
        # Work the application runs after its responses (background tasks) drains too.
        background: Any = getattr(self.app, "background_pending", None) or (lambda: 0)
        tasks = background()
        logger.info("draining %d requests%s (deadline %.1f s)", busy,
                    f" and {tasks} background task(s)" if tasks else "", drain_timeout)
        deadline = now + drain_timeout
        while (state.connections or background()) and loop.time() < deadline:
            await asyncio.sleep(0.02)
            now = loop.time()
            for conn in list(state.connections):
                conn.drain_step(now, quiet)
        if background():
            self.app.background_deadline()  # type: ignore[attr-defined]  # logs what is left, by name
        if not state.connections:
            return
        state.drain_over = True
        cancelled = sum(1 for conn in list(state.connections) if conn.drain_deadline_passed())
        logger.warning("drain deadline passed: cancelling %d request(s)", cancelled)
        # Let the cancelled handlers write their 503 and the transports flush and close.
        deadline = loop.time() + _ABORT_GRACE
        while state.connections and loop.time() < deadline:
            await asyncio.sleep(0.02)
            now = loop.time()
            for conn in list(state.connections):
                conn.drain_step(now, quiet)
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
        self.shutdown_began = True
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
