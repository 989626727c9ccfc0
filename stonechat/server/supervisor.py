"""The ``--processes N`` supervisor (``run_supervisor``): the parent of N worker processes.

It owns *processes*, never requests: it starts workers, tells them to stop, waits for them,
and restarts them. It imports no framework and runs no event loop; it is a small ``select``
loop woken by signals (``signal.set_wakeup_fd``), by worker messages and by timers (the
pieces it shares with the ``--dev`` reloader are in ``parent.py``).

Talking to workers: every worker gets one end of a socketpair, its *control channel* (see
``runner.py``). The supervisor writes ``stop <why>`` / ``force <why>``; the worker writes
``ready`` once it serves. Signals are not forwarded as signals, because a terminal's Ctrl+C
already reached every process in the group: a forwarded SIGINT would arrive as the worker's
*second* signal and force it to skip its shutdown handlers. A ``stop`` line is idempotent, and
when the supervisor dies the channel reads end-of-file, so workers stop gracefully instead of
serving on as orphans.

  * it forks N workers; each builds its app (``make_app()``), its own event loop and serves the
    one listening socket they all inherited (one accept queue: a dying worker loses nothing);
  * SIGINT/SIGTERM: closes its own copy of the socket, sends ``stop`` to every worker, waits
    for each to finish its own shutdown, exits 0 when all exited 0. SIGTERM again changes
    nothing; a second SIGINT, or SIGQUIT, sends ``force`` (``signals.py``: the same policy as
    a worker's). A worker still alive ``stop_timeout`` seconds later is killed (exit 1);
  * a worker that dies while serving is logged and restarted after a backoff (0.1 s doubling
    to 10 s, reset after 30 s of healthy running);
  * a worker that exits 3 (startup failed) stops everything: the supervisor exits 3 instead of
    restart-looping on an error that will just happen again;
  * workers talk to each other (WebSocket broadcast) through sockets in a private directory the
    supervisor makes and removes (``peers.py``); the supervisor itself relays nothing.
"""

from __future__ import annotations

import logging
import os
import selectors
import shutil
import signal
import socket
import tempfile
import time
import traceback
from typing import Callable, Optional

from .interface import Application
from .parent import FORCE_GRACE, SignalWaker, tell_child
from .peers import PeerBus
from .runner import EXIT_FORCED, EXIT_OK, EXIT_STARTUP_FAILED, Worker, exit_now
from .settings import ServerSettings
from .signals import AGAIN, STOP, STOP_SIGNALS, StopSignals, signal_name, take_held

logger = logging.getLogger("stonechat.supervisor")

BACKOFF_FIRST = 0.1
BACKOFF_MAX = 10.0
CLEAN_EXIT_GRACE = 0.5   # seconds before a worker that exited 0 unasked is restarted
HEALTHY_AFTER = 30.0     # seconds of running after which a worker's crash count resets


def describe_status(status: int) -> str:
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            return f"killed by {signal.Signals(sig).name}"
        except ValueError:
            return f"killed by signal {sig}"
    return f"exit code {os.waitstatus_to_exitcode(status)}"


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
    def __init__(self, make_app: Callable[[], Application], sock: socket.socket, settings: ServerSettings,
                 processes: int, banner: Optional[str], stop_timeout: float,
                 on_worker_exit: Optional[Callable[[int], None]] = None) -> None:
        self.make_app = make_app
        self.on_worker_exit = on_worker_exit  # told each dead worker's pid (e.g. metrics files)
        self.sock: Optional[socket.socket] = sock
        self.settings = settings
        self.slots = [_Slot(i) for i in range(processes)]
        self.banner = banner
        self.stop_timeout = stop_timeout
        self.waker: Optional[SignalWaker] = None
        self.stopping = False
        self.stop_deadline: Optional[float] = None
        self.signals = StopSignals()
        self.announced = False
        self.exit_code = EXIT_OK
        self.stop_started = 0.0
        self.peer_dir: Optional[str] = None

    def run(self) -> int:
        self.waker = SignalWaker(STOP_SIGNALS + (signal.SIGCHLD,))
        # Where the workers' sockets for messages between them live (server/peers.py); 0700.
        self.peer_dir = tempfile.mkdtemp(prefix="stonechat-peers-")
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
        held = take_held()  # arrived after app.start(), before the waker existed (signals.py)
        try:
            logger.info("supervisor pid %d starting %d workers", os.getpid(), len(self.slots))
            for slot in self.slots:
                self._spawn(slot)
            for signum in held:  # as if they came now: the workers stop before their startup
                self._on_stop_signal(signum)
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
                code = Worker(self.make_app(), self.sock, self.settings, None, child_end, peers,
                              forked=True).run()
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
            if self.on_worker_exit is not None:
                try:
                    self.on_worker_exit(pid)
                except Exception:
                    logger.exception("after worker %d (pid %d) exited", slot.index, pid)
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
        name = signal_name(signum)
        already_forced = self.signals.forced
        verdict = self.signals.meaning(signum)
        if verdict == STOP:
            logger.info("stopping (%s): telling %d workers to stop, waiting for their shutdown",
                        name, len(self.slots))
            self._begin_stop(name)
            return
        if verdict == AGAIN:
            logger.info(StopSignals.again_message(signum))
            return
        if already_forced:
            logger.warning("another %s: the workers are already skipping what is left; killing "
                           "any still alive by %.0f s after the first", name, FORCE_GRACE)
            return
        logger.warning("%s%s: telling workers to skip what is left of their shutdown",
                       "second " if signum == signal.SIGINT else "", name)
        self._begin_stop(name)
        if self.exit_code == EXIT_OK:
            self.exit_code = EXIT_FORCED
        for slot in self._alive():
            tell_child(slot.channel, f"force {name} via supervisor")
        self.stop_deadline = min(self.stop_deadline or float("inf"), time.monotonic() + FORCE_GRACE)

    def _begin_stop(self, why: str) -> None:
        self.signals.stopping = True
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
            tell_child(slot.channel, f"stop {why} via supervisor")
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


def run_supervisor(make_app: Callable[[], Application], sock: socket.socket, settings: ServerSettings,
                   processes: int, banner: Optional[str] = None,
                   stop_timeout: Optional[float] = None,
                   on_worker_exit: Optional[Callable[[int], None]] = None) -> int:
    """Serve with ``processes`` forked workers on ``sock``; returns the exit code (0 = clean).
    ``on_worker_exit(pid)`` is called in this process for every worker that exits."""
    if stop_timeout is None:
        stop_timeout = settings.drain_timeout + settings.ws_close_timeout + 10 * settings.shutdown_handler_timeout
    return Supervisor(make_app, sock, settings, processes, banner, stop_timeout, on_worker_exit).run()
