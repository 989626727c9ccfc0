"""Liveness and readiness endpoints (``app.health()``): ``/health`` answers 200 while the
process serves; ``/ready`` answers 200 only between the end of startup and the start of the
stop, and only when every user check (a database ping...) passes within its timeout.

The app tells it when startup ended and when the stop began (``mark_started``,
``mark_stopping``); it knows nothing of the server. Each answer is JSON saying why.
"""

from __future__ import annotations

import asyncio
import inspect
from typing import Any, Callable, Iterable, Union

import orjson

from ..core.response import Response

Check = Union[Callable[[], Any], tuple[str, Callable[[], Any]]]
_JSON = {"content-type": "application/json"}


def _named(checks: Union[Iterable[Check], dict[str, Callable[[], Any]]]) -> list[tuple[str, Callable[[], Any], bool]]:
    items = list(checks.items()) if isinstance(checks, dict) else list(checks)
    found: list[tuple[str, Callable[[], Any], bool]] = []
    for item in items:
        if isinstance(item, tuple):
            name, fn = item
        else:
            fn = item
            name = getattr(fn, "__name__", None) or repr(fn)
        if not callable(fn):
            raise TypeError(f"health check {name!r} is not callable: {fn!r}")
        if any(name == other for other, _, _ in found):
            raise ValueError(f"two health checks are named {name!r}; pass (name, check) tuples")
        found.append((str(name), fn, inspect.iscoroutinefunction(fn)))
    return found


class Health:
    """The state behind the two endpoints, and their handlers."""

    def __init__(self, checks: Union[Iterable[Check], dict[str, Callable[[], Any]]], timeout: float) -> None:
        if timeout <= 0:
            raise ValueError(f"health(check_timeout=...) must be positive, got {timeout!r}")
        self.checks = _named(checks)
        self.timeout = timeout
        self.started = False
        self.stopping = False

    def mark_starting(self) -> None:
        self.started = self.stopping = False

    def mark_started(self) -> None:
        self.started = True

    def mark_stopping(self) -> None:
        self.stopping = True

    # -- handlers --------------------------------------------------------------------------

    def live(self) -> Response:
        return Response(200, dict(_JSON), orjson.dumps({"status": "ok"}))

    async def ready(self) -> Response:
        if self.stopping or not self.started:
            reason = "stopping" if self.stopping else "starting"
            return self._answer(503, {"status": "not ready", "reason": reason})
        if not self.checks:
            return self._answer(200, {"status": "ready", "checks": {}})
        results = await asyncio.gather(*(self._run(fn, is_async) for _, fn, is_async in self.checks))
        checks = {name: result for (name, _, _), result in zip(self.checks, results)}
        failed = [name for name, result in checks.items() if result != "ok"]
        if self.stopping:  # the stop began while the checks ran
            return self._answer(503, {"status": "not ready", "reason": "stopping", "checks": checks})
        if failed:
            return self._answer(503, {"status": "not ready", "reason": "check failed: " + ", ".join(failed),
                                      "checks": checks})
        return self._answer(200, {"status": "ready", "checks": checks})

    async def _run(self, fn: Callable[[], Any], is_async: bool) -> str:
        """``"ok"``, or what went wrong. A sync check runs on a thread (a blocking database
        ping must not stall the loop); either kind has ``timeout`` seconds. A check fails by
        raising or by returning ``False``."""
        try:
            if is_async:
                result = await asyncio.wait_for(fn(), self.timeout)
            else:
                result = await asyncio.wait_for(asyncio.to_thread(fn), self.timeout)
                if inspect.isawaitable(result):  # a sync callable that returned a coroutine
                    result = await asyncio.wait_for(result, self.timeout)
        except asyncio.TimeoutError:
            return f"failed: timed out after {self.timeout:g} s"
        except Exception as exc:
            return f"failed: {type(exc).__name__}: {exc}"
        if result is False:
            return "failed: returned False"
        return "ok"

    @staticmethod
    def _answer(status: int, body: dict) -> Response:
        return Response(status, dict(_JSON), orjson.dumps(body))
