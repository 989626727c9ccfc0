"""Startup and shutdown handlers and lifespans: the framework's half of the lifecycle.

The server (``server/runner.py``) decides *when*: startup before the socket accepts, shutdown
after connections drained. This module decides *what* and makes it dependable:

* startup handlers run in registration order, lifespans (mounted ASGI apps' included, see
  ``asgi/lifespan.py``) are entered after them in registration order; the first
  failure is logged with the handler's name and stops startup (the process exits 3), and the
  shutdown side of everything that did start still runs;
* shutdown handlers run in reverse registration order, after lifespans exit; each has its own
  timeout; one that raises or hangs is logged with its name and the others still run;
* sync shutdown handlers run on a helper thread, so a hung one can be timed out and abandoned
  instead of freezing the process (startup handlers, like Robyn's, run on the loop thread);
  an async one that overruns is cancelled and never awaited again, so even a handler that
  swallows ``CancelledError`` cannot hang shutdown;
* when shutdown itself is cancelled (a forced stop: a second Ctrl+C, SIGQUIT), the step that is
  running gets a last chance of ``LAST_CHANCE`` seconds, no later step starts, and the log
  names every step that did not run (``log_skipped`` does the same when the stop was forced
  before shutdown began).

Shutdown handlers are not paired with startup handlers: after a failed startup they all run,
so write them to tolerate a resource that was never made (``getattr(app.state, "pool", None)``).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
import time
from enum import Enum
from typing import Any, AsyncContextManager, Callable, Optional

logger = logging.getLogger("stonechat.lifecycle")

LAST_CHANCE = 1.0  # seconds the running shutdown step gets to finish when the stop is forced


class Events(Enum):
    """Robyn's ``Events``: the two lifecycle moments a handler can be registered for."""

    STARTUP = "startup"
    SHUTDOWN = "shutdown"


def handler_name(fn: Any) -> str:
    return getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)


class StartupError(Exception):
    """A startup handler failed; ``handler`` names it."""

    def __init__(self, handler: str, error: BaseException) -> None:
        super().__init__(f"startup handler {handler} failed: {error!r}")
        self.handler = handler
        self.error = error


def _run_in_thread(fn: Callable[[], Any]) -> "asyncio.Future[Any]":
    """Run ``fn`` on a daemon thread: a hung handler must never keep the process alive."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()

    def settle(result: Any, error: Optional[BaseException]) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)

    def target() -> None:
        try:
            result = fn()
        except BaseException as exc:  # reported on the loop, never lost
            loop.call_soon_threadsafe(settle, None, exc)
        else:
            loop.call_soon_threadsafe(settle, result, None)

    threading.Thread(target=target, name=f"shutdown:{handler_name(fn)}", daemon=True).start()
    return future


class Lifecycle:
    def __init__(self) -> None:
        self.startup_handlers: list[Callable] = []
        self.shutdown_handlers: list[Callable] = []
        self.lifespans: list[Callable[..., AsyncContextManager]] = []
        self.lifespan_names: dict[Callable[..., AsyncContextManager], str] = {}
        self._entered: list[tuple[str, AsyncContextManager]] = []
        self._started: int = 0  # how many startup handlers completed
        self._startup_done = False
        # (event, step name, seconds) of every step run, in order: for metrics
        self.timings: list[tuple[str, str, float]] = []

    def add_startup(self, fn: Callable) -> None:
        self.startup_handlers.append(fn)

    def add_shutdown(self, fn: Callable) -> None:
        self.shutdown_handlers.append(fn)

    def add_lifespan(self, factory: Callable[..., AsyncContextManager], name: Optional[str] = None) -> None:
        """``name`` is what the logs call it (default: the factory's name); a mounted ASGI app's
        lifespan is registered here too, by ``app.mount``."""
        self.lifespans.append(factory)
        if name is not None:
            self.lifespan_names[factory] = name

    async def startup(self, app: Any) -> None:
        """Run startup handlers then enter lifespans; raise ``StartupError`` on the first failure."""
        self.timings = []
        for fn in self.startup_handlers:
            name = handler_name(fn)
            logger.debug("running startup handler %s", name)
            started = time.monotonic()
            try:
                result = fn()
                if inspect.isawaitable(result):
                    await result
            except Exception as exc:
                logger.error("startup handler %s failed", name, exc_info=exc)
                raise StartupError(name, exc) from exc
            self.timings.append(("startup", name, time.monotonic() - started))
            self._started += 1
        for factory in self.lifespans:
            name = self.lifespan_names.get(factory) or handler_name(factory)
            started = time.monotonic()
            try:
                manager = factory(app) if _takes_argument(factory) else factory()
                await manager.__aenter__()
            except Exception as exc:
                logger.error("lifespan %s failed to start", name, exc_info=exc)
                raise StartupError(name, exc) from exc
            self.timings.append(("startup", name, time.monotonic() - started))
            self._entered.append((name, manager))
        self._startup_done = True

    def _shutdown_steps(self) -> list[tuple[str, str, Callable[[], Any]]]:
        """Lifespan exits (last entered first), then shutdown handlers in reverse order."""
        steps: list[tuple[str, str, Callable[[], Any]]] = []
        while self._entered:
            name, manager = self._entered.pop()
            async def exit_lifespan(m: AsyncContextManager = manager) -> Any:
                return await m.__aexit__(None, None, None)
            steps.append(("lifespan", name, exit_lifespan))
        for fn in reversed(self.shutdown_handlers):
            steps.append(("shutdown handler", handler_name(fn), fn))
        return steps

    def log_skipped(self) -> list[str]:
        """The stop was forced before shutdown began: name every step that will not run."""
        names = [n for _, n, _ in self._shutdown_steps()]
        logger.warning("forced stop before shutdown; skipped: %s",
                       ", ".join(names) if names else "nothing (no shutdown steps)")
        return names

    async def shutdown(self, timeout: float) -> list[str]:
        """Exit lifespans, then run every shutdown handler; return the names of those that failed.

        Each step gets ``timeout`` seconds. A step that overruns is cancelled and abandoned
        (never awaited again, so one that ignores cancellation cannot hang the process). If
        this coroutine itself is cancelled (a forced stop), the step that is running gets
        ``LAST_CHANCE`` seconds more, no later step starts, and what did not run is logged."""
        steps = self._shutdown_steps()
        failed: list[str] = []
        for index, (kind, name, fn) in enumerate(steps):
            logger.info("running %s %s", kind, name)
            started = time.monotonic()
            step = asyncio.ensure_future(_bounded(fn, timeout))
            try:
                await asyncio.wait({step})  # unlike awaiting the step, a cancel here spares it
            except asyncio.CancelledError:
                finished = await _last_chance(step, kind, name)
                skipped = [n for _, n, _ in steps[index + 1:]]
                logger.warning("shutdown interrupted during %s %s%s; skipped: %s", kind, name,
                               "" if finished else " (it did not finish)",
                               ", ".join(skipped) if skipped else "nothing else")
                raise
            try:
                step.result()
            except asyncio.TimeoutError:
                logger.error("%s %s did not finish within %.1f s; abandoned it, moving on",
                             kind, name, timeout)
                failed.append(name)
            except asyncio.CancelledError:
                logger.error("%s %s was cancelled", kind, name)
                failed.append(name)
            except Exception as exc:
                logger.error("%s %s failed", kind, name, exc_info=exc)
                failed.append(name)
            else:
                logger.debug("%s %s done in %d ms", kind, name, (time.monotonic() - started) * 1000)
            self.timings.append(("shutdown", name, time.monotonic() - started))
        if failed:
            logger.warning("%d of %d shutdown step(s) failed: %s", len(failed), len(steps), ", ".join(failed))
        return failed


async def _last_chance(step: "asyncio.Future[Any]", kind: str, name: str) -> bool:
    """A forced stop caught ``step`` running: give it ``LAST_CHANCE`` seconds, then abandon it.
    Returns whether it finished. Another cancellation (a third Ctrl+C) ends the wait at once."""
    logger.warning("forced stop: %s %s is running; it gets %.1f s more, nothing after it runs",
                   kind, name, LAST_CHANCE)
    try:
        await asyncio.wait({step}, timeout=LAST_CHANCE)
    except asyncio.CancelledError:
        pass
    if not step.done():
        step.cancel()
        logger.warning("%s %s did not finish in its last %.1f s; abandoned it", kind, name, LAST_CHANCE)
        return False
    if not step.cancelled() and step.exception() is not None:
        logger.error("%s %s failed", kind, name, exc_info=step.exception())
    return True


async def _bounded(fn: Callable[[], Any], timeout: float) -> Any:
    """Call ``fn`` (sync: on a daemon thread; async: as a task) and wait at most ``timeout``.

    Unlike ``asyncio.wait_for``, an overrun is cancelled but not awaited, so a handler that
    swallows ``CancelledError`` cannot keep shutdown waiting."""
    deadline = time.monotonic() + timeout
    if inspect.iscoroutinefunction(fn):
        result = await _wait_at_most(fn(), timeout)
    else:
        result = await _wait_at_most(_run_in_thread(fn), timeout)
    if inspect.isawaitable(result):  # e.g. a lambda returning a coroutine, or __aexit__
        result = await _wait_at_most(result, max(0.0, deadline - time.monotonic()))
    return result


async def _wait_at_most(awaitable: Any, timeout: float) -> Any:
    future = asyncio.ensure_future(awaitable)
    try:
        done, _ = await asyncio.wait({future}, timeout=timeout)
    except asyncio.CancelledError:
        future.cancel()
        raise
    if not done:
        future.cancel()
        raise asyncio.TimeoutError
    return future.result()


def _takes_argument(fn: Callable) -> bool:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params)
