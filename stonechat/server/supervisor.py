"""Parents of serving processes: the ``--processes N`` supervisor and the ``--dev`` reloader.

Both own *processes*, never requests: they start children, tell them to stop, wait for them,
and restart them. Neither imports the framework nor runs an event loop; each is a small
``select`` loop woken by signals (``signal.set_wakeup_fd``), by child messages and by timers.

Talking to children: every child gets one end of a socketpair, its *control channel* (see
``runner.py``). The parent writes ``stop <why>`` / ``force <why>``; the child writes ``ready``
once it serves. Signals are not forwarded as signals, because a terminal's Ctrl+C already
reached every process in the group: a forwarded SIGINT would arrive as the child's *second*
signal and force it to skip its shutdown handlers. A ``stop`` line is idempotent, and when the
parent dies the channel reads end-of-file, so children stop gracefully instead of serving on
as orphans.

Supervisor (``run_supervisor``):
  * forks N workers; each builds its app (``make_app()``), its own event loop and serves the
    one listening socket they all inherited (one accept queue: a dying worker loses nothing);
  * SIGINT/SIGTERM: closes its own copy of the socket, sends ``stop`` to every worker, waits
    for each to finish its own shutdown, exits 0 when all exited 0. A second signal sends
    ``force``. A worker still alive ``stop_timeout`` seconds later is killed (exit 1);
  * a worker that dies while serving is logged and restarted after a backoff (0.1 s doubling
    to 10 s, reset after 30 s of healthy running);
  * a worker that exits 3 (startup failed) stops everything: the supervisor exits 3 instead of
    restart-looping on an error that will just happen again;
  * workers talk to each other (WebSocket broadcast) through sockets in a private directory the
    supervisor makes and removes (``peers.py``); the supervisor itself relays nothing.

Dev reloader (``run_dev``): runs ``python <app> <args>`` as a child with
``STONECHAT_DEV_CHILD=1``, watches the app's directory for ``.py`` changes (watchfiles), and
on a change stops the child gracefully (its shutdown handlers run; SIGKILL only after a
bound) before starting the new one. A child that exits on its own (a syntax error) is
reported and the reloader keeps watching.
"""

from __future__ import annotations

import logging
import os
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections import deque
from typing import Any, Callable, Optional

import watchfiles

from .runner import (CONTROL_FD_ENV, EXIT_FORCED, EXIT_OK, EXIT_STARTUP_FAILED, STOP_SIGNALS, Worker,
                     exit_now)
from .peers import PeerBus
from .settings import ServerSettings

logger = logging.getLogger("stonechat.supervisor")
dev_logger = logging.getLogger("stonechat.dev")

BACKOFF_FIRST = 0.1
BACKOFF_MAX = 10.0
CLEAN_EXIT_GRACE = 0.5   # seconds before a worker that exited 0 unasked is restarted
HEALTHY_AFTER = 30.0     # seconds of running after which a worker's crash count resets
FORCE_GRACE = 3.0        # after "force", seconds before a worker is killed
DEV_STOP_TIMEOUT = 30.0  # dev reloader: seconds an old instance gets to stop before SIGKILL
DEV_CHILD_ENV = "STONECHAT_DEV_CHILD"


def describe_status(status: int) -> str:
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            return f"killed by {signal.Signals(sig).name}"
        except ValueError:
            return f"killed by signal {sig}"
    return f"exit code {os.waitstatus_to_exitcode(status)}"


class _SignalWaker:
    """Signals and child messages as events for a ``select`` loop (no work in handlers)."""

    def __init__(self, signals: tuple[int, ...]) -> None:
        self.read_fd, self.write_fd = os.pipe()
        os.set_blocking(self.read_fd, False)
        os.set_blocking(self.write_fd, False)
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.read_fd, selectors.EVENT_READ, None)
        self.previous: dict[int, Any] = {}
        self.previous_wakeup = signal.set_wakeup_fd(self.write_fd, warn_on_full_buffer=False)
        for signum in signals:
            self.previous[signum] = signal.signal(signum, self._noop)

    @staticmethod
    def _noop(signum: int, frame: Any) -> None:
        """The C-level handler already wrote the signal number to the wakeup pipe."""

    def wait(self, timeout: Optional[float]) -> tuple[list[int], list[Any]]:
        """Block until a signal, a readable registered object, or the timeout."""
        signums: list[int] = []
        ready: list[Any] = []
        for key, _ in self.selector.select(timeout):
            if key.fd == self.read_fd:
                try:
                    signums.extend(os.read(self.read_fd, 512))
                except BlockingIOError:
                    pass
            else:
                ready.append(key.data)
        return signums, ready

    def close_in_child(self) -> None:
        """In a forked child: forget the parent's wakeup machinery."""
        signal.set_wakeup_fd(-1)
        for signum in self.previous:
            signal.signal(signum, signal.SIG_DFL)
        self.selector.close()
        os.close(self.read_fd)
        os.close(self.write_fd)

    def close(self) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        signal.set_wakeup_fd(self.previous_wakeup)
        self.selector.close()
        os.close(self.read_fd)
        os.close(self.write_fd)


def _send(channel: Optional[socket.socket], line: str) -> None:
    if channel is None:
        return
    try:
        channel.send(line.encode() + b"\n", socket.MSG_DONTWAIT)
    except OSError:
        pass  # the child is already gone; reaping will tell


# -- --processes N ------------------------------------------------------------------------------


class _Slot:
    """One of the N worker positions; survives its worker's restarts."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.pid: Optional[int] = None
        self.channel: Optional[socket.socket] = None
        self.started = 0.0
        self.ready = False
        self.crashes = 0
        self.respawn_at: Optional[float] = None
        self.clean_exit: Optional[tuple[int, float]] = None  # (pid, seconds lived), see _reap


class Supervisor:
    def __init__(self, make_app: Callable[[], Any], sock: socket.socket, settings: ServerSettings,
                 processes: int, banner: Optional[str], stop_timeout: float) -> None:
        self.make_app = make_app
        self.sock: Optional[socket.socket] = sock
        self.settings = settings
        self.slots = [_Slot(i) for i in range(processes)]
        self.banner = banner
        self.stop_timeout = stop_timeout
        self.waker: Optional[_SignalWaker] = None
        self.stopping = False
        self.stop_deadline: Optional[float] = None
        self.signals_seen = 0
        self.announced = False
        self.exit_code = EXIT_OK
        self.stop_started = 0.0
        self.peer_dir: Optional[str] = None

    def run(self) -> int:
        self.waker = _SignalWaker(STOP_SIGNALS + (signal.SIGCHLD,))
        # Where the workers' sockets for messages between them live (server/peers.py); 0700.
        self.peer_dir = tempfile.mkdtemp(prefix="stonechat-peers-")
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)  # see runner.hold_stop_signals
        try:
            logger.info("supervisor pid %d starting %d workers", os.getpid(), len(self.slots))
            for slot in self.slots:
                self._spawn(slot)
            while not (self.stopping and not self._alive()):
                signums, ready = self.waker.wait(self._next_timeout())
                for signum in signums:
                    if signum in STOP_SIGNALS:
                        self._on_stop_signal(signum)
                for slot in ready:
                    self._read_channel(slot)
                self._reap()
                self._respawn_due()
                self._enforce_deadline()
        finally:
            for slot in self.slots:
                if slot.pid is not None:  # only on an internal error: never leave orphans
                    self._kill(slot, "supervisor failed")
            self.waker.close()
            if self.sock is not None:
                self.sock.close()
            shutil.rmtree(self.peer_dir, ignore_errors=True)
        if self.exit_code == EXIT_OK:
            logger.info("all workers stopped; done in %d ms", (time.monotonic() - self.stop_started) * 1000)
        else:
            logger.warning("supervisor exiting with code %d", self.exit_code)
        return self.exit_code

    def _alive(self) -> list[_Slot]:
        return [s for s in self.slots if s.pid is not None]

    def _next_timeout(self) -> float:
        now = time.monotonic()
        times = [s.respawn_at for s in self.slots if s.respawn_at is not None]
        if self.stop_deadline is not None:
            times.append(self.stop_deadline)
        nearest = min(times, default=now + 1.0)
        return max(0.0, min(1.0, nearest - now))

    # -- workers ---------------------------------------------------------------------------

    def _spawn(self, slot: _Slot) -> None:
        assert self.waker is not None and self.sock is not None
        parent_end, child_end = socket.socketpair()
        # Signals stay blocked in the child until its event loop has handlers for them.
        previous_mask = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS + (signal.SIGCHLD,))
        try:
            pid = os.fork()
        except OSError:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous_mask)
            parent_end.close()
            child_end.close()
            raise
        if pid == 0:  # the worker; never returns
            code = 1
            try:
                self.waker.close_in_child()
                signal.pthread_sigmask(signal.SIG_UNBLOCK, (signal.SIGCHLD,))
                parent_end.close()
                for other in self.slots:
                    if other.channel is not None:
                        other.channel.close()
                assert self.peer_dir is not None
                peers = PeerBus(self.peer_dir, slot.index, len(self.slots))
                code = Worker(self.make_app(), self.sock, self.settings, None, child_end, peers).run()
            except BaseException:
                traceback.print_exc()
            finally:
                exit_now(code)
        signal.pthread_sigmask(signal.SIG_SETMASK, previous_mask)
        child_end.close()
        parent_end.setblocking(False)
        slot.pid, slot.channel, slot.started, slot.ready = pid, parent_end, time.monotonic(), False
        slot.respawn_at = None
        self.waker.selector.register(parent_end, selectors.EVENT_READ, slot)
        logger.info("worker %d started (pid %d)", slot.index, pid)

    def _read_channel(self, slot: _Slot) -> None:
        if slot.channel is None:
            return
        try:
            data = slot.channel.recv(4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:  # the worker is exiting; reaping follows
            self._close_channel(slot)
            return
        if b"ready" in data:
            slot.ready = True
            if not self.announced and all(s.ready for s in self.slots):
                self.announced = True
                if self.banner:
                    logger.info(self.banner)

    def _close_channel(self, slot: _Slot) -> None:
        if slot.channel is not None:
            assert self.waker is not None
            try:
                self.waker.selector.unregister(slot.channel)
            except (KeyError, ValueError):
                pass
            slot.channel.close()
            slot.channel = None

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            slot = next((s for s in self.slots if s.pid == pid), None)
            if slot is None:
                continue
            self._close_channel(slot)
            slot.pid = None
            code = os.waitstatus_to_exitcode(status)
            if self.stopping:
                if code == EXIT_OK:
                    logger.info("worker %d (pid %d) stopped", slot.index, pid)
                else:
                    logger.warning("worker %d (pid %d) stopped with %s", slot.index, pid, describe_status(status))
                    if self.exit_code == EXIT_OK:
                        self.exit_code = EXIT_FORCED
                continue
            if code == EXIT_STARTUP_FAILED:
                logger.error("worker %d (pid %d) failed to start (exit code 3); stopping all workers "
                             "instead of restarting", slot.index, pid)
                self.exit_code = EXIT_STARTUP_FAILED
                self._begin_stop("a worker failed to start")
                continue
            lived = time.monotonic() - slot.started
            if lived >= HEALTHY_AFTER:
                slot.crashes = 0
            delay = min(BACKOFF_MAX, BACKOFF_FIRST * (2 ** slot.crashes))
            slot.crashes += 1
            if code == EXIT_OK:
                # A clean exit means the worker got a stop signal itself. With Ctrl+C in a
                # terminal the same signal is on its way to us: wait a moment before deciding
                # it was a lone worker being stopped (then it is restarted, and logged then).
                slot.clean_exit = (pid, lived)
                slot.respawn_at = time.monotonic() + max(delay, CLEAN_EXIT_GRACE)
                continue
            slot.respawn_at = time.monotonic() + delay
            logger.error("worker %d (pid %d) died unexpectedly (%s) after %.1f s; restarting in %.1f s",
                         slot.index, pid, describe_status(status), lived, delay)

    def _respawn_due(self) -> None:
        if self.stopping:
            return
        now = time.monotonic()
        for slot in self.slots:
            if slot.pid is None and slot.respawn_at is not None and slot.respawn_at <= now:
                if slot.clean_exit is not None:
                    pid, lived = slot.clean_exit
                    logger.warning("worker %d (pid %d) stopped on its own after %.1f s (a signal sent "
                                   "to it alone?); restarting it", slot.index, pid, lived)
                    slot.clean_exit = None
                self._spawn(slot)

    # -- stopping --------------------------------------------------------------------------

    def _on_stop_signal(self, signum: int) -> None:
        self.signals_seen += 1
        name = signal.Signals(signum).name
        if self.signals_seen == 1 or not self.stopping:
            logger.info("stopping (%s): telling %d workers to stop, waiting for their shutdown",
                        name, len(self.slots))
            self._begin_stop(name)
            return
        logger.warning("second %s: telling workers to skip what is left of their shutdown", name)
        self.exit_code = EXIT_FORCED
        for slot in self._alive():
            _send(slot.channel, f"force {name} via supervisor")
        self.stop_deadline = min(self.stop_deadline or float("inf"), time.monotonic() + FORCE_GRACE)

    def _begin_stop(self, why: str) -> None:
        if self.stopping:
            return
        self.stopping = True
        self.stop_started = time.monotonic()
        if self.sock is not None:  # our copy; each worker closes its own when it stops
            self.sock.close()
            self.sock = None
        for slot in self.slots:
            if slot.clean_exit is not None:
                logger.info("worker %d (pid %d) stopped", slot.index, slot.clean_exit[0])
                slot.clean_exit = None
            slot.respawn_at = None
            _send(slot.channel, f"stop {why} via supervisor")
        self.stop_deadline = time.monotonic() + self.stop_timeout

    def _enforce_deadline(self) -> None:
        if self.stop_deadline is None or time.monotonic() < self.stop_deadline:
            return
        for slot in self._alive():
            self._kill(slot, "did not stop within its deadline")
        self.stop_deadline = None

    def _kill(self, slot: _Slot, why: str) -> None:
        assert slot.pid is not None
        logger.error("killing worker %d (pid %d): %s", slot.index, slot.pid, why)
        try:
            os.kill(slot.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if self.exit_code == EXIT_OK:
            self.exit_code = EXIT_FORCED
        try:
            os.waitpid(slot.pid, 0)
        except ChildProcessError:
            pass
        self._close_channel(slot)
        slot.pid = None


def run_supervisor(make_app: Callable[[], Any], sock: socket.socket, settings: ServerSettings,
                   processes: int, banner: Optional[str] = None,
                   stop_timeout: Optional[float] = None) -> int:
    """Serve with ``processes`` forked workers on ``sock``; returns the exit code (0 = clean)."""
    if stop_timeout is None:
        stop_timeout = settings.drain_timeout + settings.ws_close_timeout + 10 * settings.shutdown_handler_timeout
    return Supervisor(make_app, sock, settings, processes, banner, stop_timeout).run()


# -- --dev --------------------------------------------------------------------------------------


class _Watcher:
    """watchfiles on a daemon thread; each batch of changed .py paths wakes the main loop."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.changes: deque[list[str]] = deque()
        self.read_end, self.write_end = socket.socketpair()
        self.read_end.setblocking(False)
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, name="stonechat-dev-watch", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            for batch in watchfiles.watch(self.directory, watch_filter=watchfiles.PythonFilter(),
                                          stop_event=self.stop_event, raise_interrupt=False):
                self.changes.append(sorted({path for _, path in batch}))
                try:
                    self.write_end.send(b"c")
                except OSError:
                    return
        except Exception:
            dev_logger.exception("dev: file watcher failed; changes will not restart the app")

    def drain(self) -> list[str]:
        try:
            while self.read_end.recv(4096):
                pass
        except (BlockingIOError, OSError):
            pass
        paths: list[str] = []
        while self.changes:
            paths.extend(self.changes.popleft())
        return paths

    def close(self) -> None:
        self.stop_event.set()
        self.thread.join(1.0)
        self.read_end.close()
        self.write_end.close()


class DevReloader:
    def __init__(self, argv: list[str], directory: str, url: Optional[str]) -> None:
        self.argv = argv
        self.directory = directory
        self.url = url
        self.child: Optional[subprocess.Popen] = None
        self.channel: Optional[socket.socket] = None
        self.waker: Optional[_SignalWaker] = None
        self.signals_seen = 0
        self.forced = False

    def run(self) -> int:
        self.waker = _SignalWaker(STOP_SIGNALS + (signal.SIGCHLD,))
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
        watcher = _Watcher(self.directory)
        self.waker.selector.register(watcher.read_end, selectors.EVENT_READ, "changes")
        dev_logger.info("dev: watching %s for .py changes%s", self.directory,
                    f" (app at {self.url})" if self.url else "")
        try:
            self._start()
            while True:
                signums, ready = self.waker.wait(1.0)
                for signum in signums:
                    if signum in STOP_SIGNALS:
                        self._count_signal(signum)
                if self.signals_seen:
                    code = self._stop_child("stop", DEV_STOP_TIMEOUT)
                    return EXIT_FORCED if self.forced else code
                if "changes" in ready:
                    paths = watcher.drain()
                    if paths:
                        shown = ", ".join(os.path.relpath(p, self.directory) for p in paths[:3])
                        dev_logger.info("dev: %s changed; restarting", shown)
                        code = self._stop_child("reload", DEV_STOP_TIMEOUT)
                        if self.signals_seen:  # stopped while reloading: do not start again
                            return EXIT_FORCED if self.forced else code
                        self._start()
                if self.child is not None and self.child.poll() is not None:
                    code = self.child.returncode
                    self._forget_child()
                    dev_logger.error("dev: the app exited with code %d; fix it and save a .py file "
                                 "to restart", code)
        finally:
            if self.child is not None and self.child.poll() is None:
                self.child.kill()
                self.child.wait()
            watcher.close()
            self.waker.close()

    def _start(self) -> None:
        parent_end, child_end = socket.socketpair()
        env = dict(os.environ)
        env[DEV_CHILD_ENV] = "1"
        env[CONTROL_FD_ENV] = str(child_end.fileno())
        self.child = subprocess.Popen([sys.executable, *self.argv], env=env,
                                      pass_fds=(child_end.fileno(),))
        child_end.close()
        self.channel = parent_end
        dev_logger.info("dev: started the app (pid %d)", self.child.pid)

    def _forget_child(self) -> None:
        if self.channel is not None:
            self.channel.close()
            self.channel = None
        self.child = None

    def _stop_child(self, why: str, timeout: float) -> int:
        """Stop the child gracefully (SIGKILL after ``timeout``) and return its exit code.

        Stop signals that arrive meanwhile are counted: the first means "do not start another
        one", the second tells the child to skip the rest of its shutdown."""
        child = self.child
        if child is None:
            return EXIT_OK
        assert self.waker is not None
        if child.poll() is None:
            _send(self.channel, f"stop {why}")
            deadline = time.monotonic() + timeout
            while child.poll() is None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    dev_logger.error("dev: the app (pid %d) did not stop within %.0f s; killing it",
                                 child.pid, timeout)
                    child.kill()
                    child.wait()
                    self.forced = True
                    break
                signums, _ = self.waker.wait(min(remaining, 0.5))
                for signum in signums:
                    if signum in STOP_SIGNALS:
                        self._count_signal(signum)
                        if self.forced:
                            deadline = min(deadline, time.monotonic() + FORCE_GRACE)
        code = child.returncode
        self._forget_child()
        return code

    def _count_signal(self, signum: int) -> None:
        self.signals_seen += 1
        name = signal.Signals(signum).name
        if self.signals_seen == 1:
            dev_logger.info("dev: stopping (%s)", name)
            _send(self.channel, f"stop {name} via dev reloader")
        elif not self.forced:
            dev_logger.warning("dev: second %s: telling the app to skip what is left of its shutdown", name)
            self.forced = True
            _send(self.channel, f"force {name} via dev reloader")


def run_dev(host: Optional[str], port: Optional[int], argv: Optional[list[str]] = None) -> int:
    """Run the app as a child process and restart it whenever a ``.py`` file in its directory
    changes. ``argv`` is the app file and its arguments (default: this process's)."""
    argv = list(argv if argv is not None else sys.argv)
    script = os.path.abspath(argv[0])
    argv[0] = script
    url = f"http://{host}:{port}" if host and port is not None else None
    return DevReloader(argv, os.path.dirname(script), url).run()
