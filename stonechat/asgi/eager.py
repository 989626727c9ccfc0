"""Start an ASGI call so that its first step runs at once, inside the caller, as a task that
exists before the step, and that a call which never waits costs no task of its own.

Why: the server writes a response on the spot when ``handle()`` returns a finished
``HTTPResponse`` (no task of its own; see ``server/interface.py``). Most routes of a Starlette or
FastAPI app answer without waiting on anything, so by the end of their first step they have
sent the whole response. Running that step inside ``handle()`` hands the server a finished
response with no loop turn in between.

The step runs *as* a task: ``asyncio.current_task()`` is a real Task, and it is the task that
goes on with the call if the call waits, so anyio cancel scopes and task groups,
``asyncio.timeout`` and context variables see one task from the first line of the app to its
last; nothing ever moves from one task to another. That task is a *spare*: made ahead, parked
on a future (``_parked``). A call that finishes in its first step leaves the spare parked for the
next call, so the usual request makes no Task, schedules no step and takes no loop turn; a call
that waits keeps the spare as its own task (woken with the rest of the call, the server's ``Suspended`` relay) and the
next call gets a new spare. Each call's step runs in a fresh copy of the caller's context, as a
new task's would. Entering and leaving the spare around the step are asyncio's own
``_enter_task``/``_leave_task``, the calls a Task makes around each of its steps.

Where another task is already running on the loop (the call comes from inside a task:
TestClient, middleware in front, an ASGI server in front) the call gets a task of its own that
takes the first step itself, as usual; so does every call on Python 3.10 (no ``Task.cancelling``).
"""

from __future__ import annotations

import asyncio
import types
from contextvars import copy_context
from threading import get_ident
from typing import Any, Generator, Optional

from ..server.eager import Suspended as _Rest  # the rest of a call that waited, relayed to the spare

try:
    from asyncio.tasks import _enter_task, _leave_task  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - an asyncio without them: no eager step
    _enter_task = _leave_task = None  # type: ignore[assignment]

# A cancel requested of the spare and not taken back (3.11+), or None: no eager step.
_cancelling = getattr(asyncio.Task, "cancelling", None)
_EAGER = _enter_task is not None and _cancelling is not None
_get_running_loop = asyncio._get_running_loop  # None when no loop runs in this thread
_FINISHED: Any = object()


@types.coroutine
def _primed_point() -> Generator[None, None, None]:
    """Where a new spare's coroutine is left before the loop first steps it (see ``_Spare``)."""
    yield


class _Spare:
    """A parked task and what it is handed: ``rest`` once a call's first step waited."""

    __slots__ = ("loop", "task", "rest", "wake")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.rest: Optional[_Rest] = None
        self.wake: Optional[asyncio.Future] = None
        body = self._parked(loop)
        # Run by hand up to its first await, inside the try: a cancel that comes before the
        # loop first steps the task (a call cancelling its own task in its step) lands there.
        body.send(None)
        self.task = loop.create_task(body)

    async def _parked(self, loop: asyncio.AbstractEventLoop) -> Any:
        try:
            await _primed_point()
            if self.rest is None:
                self.wake = loop.create_future()
                await self.wake
        except asyncio.CancelledError:
            rest = self.rest
            if rest is None:
                return None  # cancelled while parked (the loop closing, or a call that then finished)
            rest.cancel()  # for the call, at the await it stopped on
        return await self.rest  # type: ignore[misc]

    def hand_over(self, rest: _Rest) -> None:
        self.rest = rest
        wake = self.wake
        if wake is not None and not wake.done():
            wake.set_result(None)


class EagerStarter:
    """Starts the calls of one mounted app (one loop at a time): ``start`` runs a call's first
    step on the spare, ``running_loop`` finds the loop without asking the interpreter each time."""

    __slots__ = ("loop", "thread", "spare")

    def __init__(self) -> None:
        self.loop: Optional[asyncio.AbstractEventLoop] = None
        self.thread = 0
        self.spare: Optional[_Spare] = None

    def running_loop(self) -> Optional[asyncio.AbstractEventLoop]:
        """The loop running this code, or None. The loop seen last is running in this thread
        only if we are inside it (a loop cannot run inside another one in the same thread);
        this spares ``asyncio._get_running_loop()``, which asks the kernel for the process id
        on every call (to notice a fork)."""
        loop = self.loop
        if loop is not None and get_ident() == self.thread and loop.is_running():
            return loop
        loop = _get_running_loop()
        if loop is not None:
            self.loop, self.thread = loop, get_ident()
        return loop

    def start(self, loop: asyncio.AbstractEventLoop, coro: Any) -> Optional["asyncio.Task[Any]"]:
        """Run ``coro``'s first step now. Returns the task that goes on with the call, or None
        when the call is over (it finished in that step). ``loop`` is ``running_loop()``'s."""
        if not _EAGER:
            return loop.create_task(coro)
        spare = self.spare
        if spare is None or spare.loop is not loop:
            spare = self.spare = _Spare(loop)
        task = spare.task
        try:
            _enter_task(loop, task)
        except RuntimeError:  # another task is current: a task of its own takes the first step
            return loop.create_task(coro)
        context = copy_context()
        try:
            pending = context.run(coro.send, None)
        except StopIteration:
            pending = _FINISHED
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException:  # the call ended raising (a CancelledError of its own): over
            pending = _FINISHED
        finally:
            _leave_task(loop, task)
        if pending is _FINISHED:
            if _cancelling(task):  # type: ignore[misc]
                # It cancelled its task and returned before seeing it: that spare wakes to a
                # cancel meant for a call that is over, and ends; the next call gets a new one.
                self.spare = None
            return None
        self.spare = None  # the call keeps this task; the next call gets a new spare
        spare.hand_over(_Rest(coro, context, pending))
        return task


__all__ = ["EagerStarter"]
