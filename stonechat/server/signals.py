"""What each stop signal means to a serving process, and how none is lost before a handler exists.

The policy, the same in a worker (``runner.py``), the ``--processes`` supervisor and the
``--dev`` reloader (docs/lifecycle.md shows it to users):

  SIGTERM   graceful stop. Again, any number of times, at any moment: logged, nothing changes.
            Wrappers deliver it twice within milliseconds (a process-group kill plus a parent
            that forwards it: ``make``, ``sh -c``, ``timeout``, systemd, tini -g); that is still
            one graceful stop.
  SIGINT    (Ctrl+C) graceful stop; the *second* SIGINT this process receives forces.
  SIGQUIT   (Ctrl+\\) forces at once.
Forcing skips what is left of the stop sequence; a shutdown step already running gets a short
last chance (the framework's lifecycle does that) and every step that did not run is named in
the log. ``StopSignals`` is that policy as a small state machine, without side effects.

No signal is lost between ``app.start()`` and the moment a server installs its handlers:
``hold_stop_signals()`` records them in a process-wide handler (a disposition, not a signal
mask, so a thread the application started cannot receive one and die of it); the server calls
``take_held()`` once its own handlers are in place and acts on what was recorded as if it had
just arrived. ``release_stop_signals()`` puts the dispositions from before back when ``start()``
ends; a signal held and never taken (the process did not get as far as serving) is delivered
again then, with its default meaning. The ``stonechat`` command holds them before it runs the
app file, so a stop while that file is still importing is not lost either. A wrapper's second
SIGTERM can arrive after a fast stop has already finished and ``start()`` has returned: for
``REPEAT_WINDOW_S`` after that, a SIGTERM is still "again" (logged, the process exits 0), later
it has its usual meaning.
"""

from __future__ import annotations

import atexit
import signal
import sys
import threading
import time
from typing import Any, Callable, Optional

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGQUIT)

STOP = "stop"      # begin the graceful stop
AGAIN = "again"    # a stop is already under way: log it, change nothing
FORCE = "force"    # skip what is left

# How long after a finished stop a SIGTERM still counts as the wrapper's repeat of the one that
# stopped us (see the module docstring).
REPEAT_WINDOW_S = 2.0


class StopSignals:
    """Decides what a stop signal means, given what this process has received so far.

    ``stopping`` is also set by stops that came another way (a supervisor's ``stop`` line), so
    a SIGTERM after one is ``AGAIN``; only SIGINTs this process received itself count towards
    "the second Ctrl+C"."""

    __slots__ = ("stopping", "forced", "sigints")

    def __init__(self) -> None:
        self.stopping = False
        self.forced = False
        self.sigints = 0

    def meaning(self, signum: int) -> str:
        if signum == signal.SIGQUIT:
            verdict = FORCE
        elif signum == signal.SIGINT:
            self.sigints += 1
            verdict = FORCE if self.sigints >= 2 else (AGAIN if self.stopping else STOP)
        else:
            verdict = AGAIN if self.stopping else STOP
        if verdict == FORCE:
            self.forced = self.stopping = True
        elif verdict == STOP:
            self.stopping = True
        return verdict

    @staticmethod
    def again_message(signum: int) -> str:
        name = signal_name(signum)
        if signum == signal.SIGINT:
            return (f"{name} while already stopping: the graceful stop goes on "
                    "(press Ctrl+C again, or send SIGQUIT, to skip the rest)")
        return (f"{name} again while stopping: nothing changes, the graceful stop goes on "
                "(a second Ctrl+C or SIGQUIT skips the rest)")


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


class _Held:
    """The process-wide handler that records stop signals nobody handles yet."""

    def __init__(self) -> None:
        self.previous: dict[int, Any] = {}
        self.pending: list[int] = []
        self.taken = False          # a server took over; later arrivals come after its stop
        self.sigints = 0

    def install(self) -> None:
        for signum in STOP_SIGNALS:
            self.previous[signum] = signal.signal(signum, self.record)

    def record(self, signum: int, frame: Any) -> None:
        if not self.taken:
            if signum == signal.SIGINT:
                self.sigints += 1
            if signum == signal.SIGQUIT or self.sigints >= 2:
                # Forced before anything was served: nothing started, so nothing to skip.
                self.restore()
                print(f"stonechat: {signal_name(signum)} before serving: exiting at once",
                      file=sys.stderr, flush=True)
                raise SystemExit(1)
        self.pending.append(signum)

    def restore(self) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)


_held: Optional[_Held] = None


def hold_stop_signals() -> None:
    """From now on, record stop signals until a server takes them (idempotent).

    Does nothing outside the main thread (only it may set handlers; such a caller embeds the
    server and handles signals itself)."""
    global _held
    if _held is not None or not _in_main_thread():
        return
    held = _Held()
    held.install()
    _held = held


def take_held() -> list[int]:
    """The stop signals recorded so far, in arrival order, for a server whose own handlers are
    now installed; later arrivals are recorded as late (see ``release_stop_signals``)."""
    if _held is None:
        return []
    signums, _held.pending = _held.pending, []
    _held.taken = True
    return signums


def release_stop_signals(log: Optional[Callable[[str], None]] = None) -> None:
    """Put back the dispositions from before ``hold_stop_signals()``.

    A signal that arrived after the server stopped is only logged (its stop already
    happened); one that no server ever took is delivered again now, with its usual meaning."""
    global _held
    held, _held = _held, None
    if held is None:
        return
    held.restore()
    if held.taken:
        if held.pending and log is not None:
            names = ", ".join(signal_name(s) for s in held.pending)
            log(f"{names} after the stop had finished: nothing left to stop")
        _absorb_late_repeats(held.previous.get(signal.SIGTERM), log)
        return
    for signum in dict.fromkeys(held.pending):
        signal.raise_signal(signum)


def _absorb_late_repeats(previous: Any, log: Optional[Callable[[str], None]]) -> None:
    """For ``REPEAT_WINDOW_S`` a SIGTERM is the late twin of the one that stopped us: logged
    and dropped. The first one after the window puts ``previous`` back and is delivered again."""
    until = time.monotonic() + REPEAT_WINDOW_S
    restore_to = previous if previous is not None else signal.SIG_DFL

    def late(signum: int, frame: Any) -> None:
        if time.monotonic() < until:
            if log is not None:
                log("SIGTERM again after the stop had finished: nothing left to stop")
            return
        signal.signal(signal.SIGTERM, restore_to)
        signal.raise_signal(signal.SIGTERM)

    def exiting() -> None:
        # the interpreter puts SIG_DFL back before it exits (Python handlers cannot run then):
        # a twin arriving in those last milliseconds would kill a process that stopped cleanly
        if time.monotonic() < until and signal.getsignal(signal.SIGTERM) is late:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)

    signal.signal(signal.SIGTERM, late)
    atexit.register(exiting)


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()
