"""The blocking watchdog: names the sync handler that is stalling the event loop *while* it
stalls, not only after it returns.

Sync handlers run on the loop thread (the fastest path; see the README). One that sleeps, waits
on I/O or computes for long freezes every other connection of the process. The dispatcher
records which route it is running (two attribute stores per call); this daemon thread looks
every half threshold and logs once per stall when that call has passed ``blocking_warn_ms``.
When the handler finally returns, the dispatcher logs the total. A handler stuck inside a C call
that holds the GIL cannot be seen until it returns; everything else (sleeps, socket reads, pure
Python loops) is reported live.
"""

from __future__ import annotations

import logging
import threading
from time import perf_counter
from typing import Any

logger = logging.getLogger("stonechat")


class BlockingWatchdog:
    def __init__(self, dispatcher: Any, threshold_s: float) -> None:
        self.dispatcher = dispatcher
        self.threshold_s = threshold_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="stonechat-watchdog", daemon=True)
        self._warned_since = 0.0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _watch(self) -> None:
        dispatcher = self.dispatcher
        interval = max(self.threshold_s / 2, 0.01)
        while not self._stop.wait(interval):
            route = dispatcher.running
            since = dispatcher.running_since
            if route is None or since == self._warned_since:
                continue
            elapsed = perf_counter() - since
            if elapsed > self.threshold_s and dispatcher.running is route and dispatcher.running_since == since:
                self._warned_since = since
                logger.warning("%s is blocking the event loop: %.0f ms so far and still running "
                               "(every other request of this process waits); make it async, or pass "
                               "threaded=True", route.name, elapsed * 1000)
