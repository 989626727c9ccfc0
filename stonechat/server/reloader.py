"""The ``--dev`` reloader (``run_dev``): runs ``python <app> <args>`` as a child with
``STONECHAT_DEV_CHILD=1``, watches the app's directory for ``.py`` changes (watchfiles), and
on a change stops the child gracefully (its shutdown handlers run; SIGKILL only after a
bound) before starting the new one. A child that exits on its own (a syntax error) is
reported and the reloader keeps watching.

Like the supervisor it owns a process, never requests: it imports no framework and runs no
event loop, only a ``select`` loop woken by signals, file changes and timers (``parent.py``).
The child is stopped over its control channel (``runner.py``), not with a signal: a
terminal's Ctrl+C already reached it, and a forwarded SIGINT would be its second. Signals mean
what they mean everywhere (``signals.py``): SIGTERM again changes nothing, a second SIGINT or
SIGQUIT tells the child to skip the rest. The child runs as ``python -m stonechat <app>`` so
that a stop while it is still importing the app is not lost either.
"""

from __future__ import annotations

import logging
import os
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from typing import Optional

import watchfiles

from .parent import FORCE_GRACE, SignalWaker, tell_child
from .runner import CONTROL_FD_ENV, EXIT_FORCED, EXIT_OK
from .signals import AGAIN, STOP, STOP_SIGNALS, StopSignals, signal_name, take_held

dev_logger = logging.getLogger("stonechat.dev")

DEV_STOP_TIMEOUT = 30.0  # seconds an old instance gets to stop before SIGKILL
DEV_CHILD_ENV = "STONECHAT_DEV_CHILD"


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
        # Stop signals are the main thread's to handle; one delivered here could meet a
        # default disposition while the reloader exits.
        signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
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
        self.child: Optional["subprocess.Popen[bytes]"] = None
        self.channel: Optional[socket.socket] = None
        self.waker: Optional[SignalWaker] = None
        self.signals = StopSignals()
        self.forced = False

    def run(self) -> int:
        self.waker = SignalWaker(STOP_SIGNALS + (signal.SIGCHLD,))
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
        held = take_held()  # arrived after app.start(), before the waker existed (signals.py)
        watcher = _Watcher(self.directory)
        self.waker.selector.register(watcher.read_end, selectors.EVENT_READ, "changes")
        dev_logger.info("dev: watching %s for .py changes%s", self.directory,
                    f" (app at {self.url})" if self.url else "")
        try:
            self._start()
            for signum in held:
                self._count_signal(signum)
            while True:
                signums, ready = self.waker.wait(1.0)
                for signum in signums:
                    if signum in STOP_SIGNALS:
                        self._count_signal(signum)
                if self.signals.stopping:
                    code = self._stop_child("stop", DEV_STOP_TIMEOUT)
                    return EXIT_FORCED if self.forced else code
                if "changes" in ready:
                    paths = watcher.drain()
                    if paths:
                        shown = ", ".join(os.path.relpath(p, self.directory) for p in paths[:3])
                        dev_logger.info("dev: %s changed; restarting", shown)
                        code = self._stop_child("reload", DEV_STOP_TIMEOUT)
                        if self.signals.stopping:  # stopped while reloading: do not start again
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
        # through the stonechat command, which holds stop signals while the app imports
        command = [sys.executable, "-m", "stonechat"] if self.argv[0].endswith(".py") else [sys.executable]
        self.child = subprocess.Popen([*command, *self.argv], env=env, pass_fds=(child_end.fileno(),))
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
            tell_child(self.channel, f"stop {why}")
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
        name = signal_name(signum)
        already_forced = self.signals.forced
        verdict = self.signals.meaning(signum)
        if verdict == STOP:
            dev_logger.info("dev: stopping (%s)", name)
            tell_child(self.channel, f"stop {name} via dev reloader")
        elif verdict == AGAIN:
            dev_logger.info("dev: %s", StopSignals.again_message(signum))
        elif not already_forced:
            dev_logger.warning("dev: %s%s: telling the app to skip what is left of its shutdown",
                               "second " if signum == signal.SIGINT else "", name)
            self.forced = True
            tell_child(self.channel, f"force {name} via dev reloader")


def run_dev(host: Optional[str], port: Optional[int], argv: Optional[list[str]] = None) -> int:
    """Run the app as a child process and restart it whenever a ``.py`` file in its directory
    changes. ``argv`` is the app file and its arguments (default: this process's)."""
    argv = list(argv if argv is not None else sys.argv)
    script = os.path.abspath(argv[0])
    argv[0] = script
    url = f"http://{host}:{port}" if host and port is not None else None
    return DevReloader(argv, os.path.dirname(script), url).run()
