"""What the two parents of serving processes share: the ``--processes`` supervisor
(``supervisor.py``) and the ``--dev`` reloader (``reloader.py``).

Both are ``select`` loops that never run an event loop: ``SignalWaker`` turns signals and
readable child channels into events for such a loop (the signal handlers do no work), and
``tell_child`` writes one line (``stop <why>`` / ``force <why>``) on a child's control channel,
the protocol ``runner.py`` reads on the other end. ``FORCE_GRACE`` is how long a child told to
``force`` gets before it is killed.
"""

from __future__ import annotations

import os
import selectors
import signal
import socket
from typing import Any, Optional

FORCE_GRACE = 3.0  # after "force", seconds before a child is killed


class SignalWaker:
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


def tell_child(channel: Optional[socket.socket], line: str) -> None:
    """Write ``line`` on a child's control channel, never blocking; a child already gone is
    told nothing (reaping it will say so)."""
    if channel is None:
        return
    try:
        channel.send(line.encode() + b"\n", socket.MSG_DONTWAIT)
    except OSError:
        pass  # the child is already gone; reaping will tell
