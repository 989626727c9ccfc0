"""An ASGI application's lifespan protocol as an async context manager, so that stonechat's
lifecycle (``core/lifecycle.py``) runs a mounted app's startup and shutdown like any lifespan:
in order, logged by name, each shutdown step inside ``shutdown_handler_timeout``.

Entering sends ``lifespan.startup`` and waits for the app's answer; exiting sends
``lifespan.shutdown`` and waits for it. The app's lifespan ``state`` (ASGI lifespan spec) is the
mount's, copied into each request's scope.

What counts as a failure: ``lifespan.startup.failed``, or an exception raised after the app
received ``lifespan.startup`` (Starlette and FastAPI send ``failed`` and then raise). An app
that raises *before* asking for the first event (``assert scope["type"] == "http"``, as
``StaticFiles`` does) does not speak the protocol: the spec says to carry on without lifespan
events, and so do we (logged at INFO).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Optional

logger = logging.getLogger("stonechat.asgi")

_LIFESPAN_ASGI = {"version": "3.0", "spec_version": "2.0"}


class LifespanFailed(RuntimeError):
    """The app answered ``lifespan.startup.failed`` / ``lifespan.shutdown.failed``."""


class ASGILifespan:
    """One ASGI app's lifespan, entered at startup and exited at shutdown."""

    def __init__(self, app: Any, name: str, state: dict, before_shutdown: Any = None) -> None:
        self.app = app
        self.name = name
        self.state = state  # the lifespan scope's "state"; requests get a copy of it
        self.before_shutdown = before_shutdown  # awaited first on exit (the mount's background work)
        self.task: Optional[asyncio.Task] = None
        self.events: Optional[asyncio.Queue] = None
        self.answer: Optional[asyncio.Future] = None
        self.asked = False  # the app called receive(): it speaks the protocol
        self.supported = True

    # -- what the app sees ------------------------------------------------------------------

    async def _receive(self) -> dict:
        self.asked = True
        assert self.events is not None
        return await self.events.get()

    async def _send(self, message: dict) -> None:
        kind = message["type"]
        if kind not in ("lifespan.startup.complete", "lifespan.startup.failed",
                        "lifespan.shutdown.complete", "lifespan.shutdown.failed"):
            raise RuntimeError(f"unexpected ASGI message {kind!r} in the lifespan protocol")
        answer = self.answer
        if answer is not None and not answer.done():
            answer.set_result(message)

    async def _run(self) -> None:
        scope = {"type": "lifespan", "asgi": _LIFESPAN_ASGI, "state": self.state}
        await self.app(scope, self._receive, self._send)

    # -- the context manager ----------------------------------------------------------------

    async def __aenter__(self) -> "ASGILifespan":
        loop = asyncio.get_running_loop()
        self.events = asyncio.Queue()
        self.answer = loop.create_future()
        self.events.put_nowait({"type": "lifespan.startup"})
        self.task = loop.create_task(self._run())
        try:
            message = await self._wait(self.answer)
        except asyncio.CancelledError:  # a stop signal during startup
            self.task.cancel()
            raise
        if message is None:  # the app returned or raised without answering
            error = self.task.exception() if not self.task.cancelled() else None
            if error is not None and self.asked:
                raise error
            self.supported = False
            logger.info("%s does not support the ASGI lifespan protocol (%s); serving it without "
                        "lifespan events", self.name,
                        f"it raised {error!r}" if error is not None else "it returned at once")
            return self
        if message["type"] == "lifespan.startup.failed":
            self._forget_task()
            raise LifespanFailed(self._summary(message))
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        if self.before_shutdown is not None:
            await self.before_shutdown()
        task = self.task
        if not self.supported or task is None or task.done():
            return
        assert self.events is not None
        self.answer = asyncio.get_running_loop().create_future()
        self.events.put_nowait({"type": "lifespan.shutdown"})
        try:
            message = await self._wait(self.answer)
        except asyncio.CancelledError:  # overran shutdown_handler_timeout: the lifecycle gives up
            task.cancel()
            raise
        if message is None:
            if not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
            return
        if message["type"] == "lifespan.shutdown.failed":
            self._forget_task()
            raise LifespanFailed(self._summary(message))
        # Complete: let the app return (its lifespan coroutine ends after the answer).
        await asyncio.wait((task,), timeout=1.0)
        if not task.done():
            task.cancel()

    async def _wait(self, answer: asyncio.Future) -> Optional[dict]:
        """The app's answer, or None when its lifespan call ended without one."""
        task = self.task
        assert task is not None
        await asyncio.wait((answer, task), return_when=asyncio.FIRST_COMPLETED)
        if answer.done():
            return answer.result()
        return None

    def _summary(self, message: dict) -> str:
        """The app's message in one line (Starlette sends a whole traceback: logged here in full,
        summed up by its last line)."""
        text = (message.get("message") or "").strip()
        if "\n" in text:
            logger.error("%s answered %s:\n%s", self.name, message["type"], text)
            text = text.splitlines()[-1].strip()
        return text or message["type"]

    def _forget_task(self) -> None:
        """After a ``failed`` answer the app may still raise; that is the same failure."""
        task = self.task
        if task is not None:
            task.add_done_callback(lambda t: t.cancelled() or t.exception())


__all__ = ["ASGILifespan", "LifespanFailed"]
