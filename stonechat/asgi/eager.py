"""Start an ASGI call as a task whose first step runs at once, inside the caller.

Why: the server writes a response on the spot when ``handle()`` returns a finished
``HTTPResponse`` (no task of its own; see ``server/interface.py``). Most routes of a Starlette or
FastAPI app answer without waiting on anything, so by the end of their first step they have
sent the whole response. Running that step inside ``handle()`` hands the server a finished
response and leaves one task per request, the app's, instead of the app's plus the server's.

The step runs *as* that task, in the task's own context: ``asyncio.current_task()`` is the
task, so anyio cancel scopes and task groups, ``asyncio.timeout`` and context variables see one
task from the first line of the app to its last. When the app does wait (a database call, a
background task after the response) the task goes on from where the step stopped; nothing ever
moves from one task to another.

This is Python 3.12's eager task start written out with asyncio's ``_enter_task``/``_leave_task``,
so it also works on 3.11 and with uvloop. Where another task is already running on the loop (the
call comes from inside a task: TestClient, middleware in front, an ASGI server in front) or the
interpreter lacks those functions, the first step is simply left to the task.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Coroutine
from contextvars import copy_context
from typing import Any

try:
    from asyncio.tasks import _enter_task, _leave_task  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - an asyncio without them: no eager step
    _enter_task = _leave_task = None
_current_task = asyncio.current_task

_EAGER = _enter_task is not None and sys.version_info >= (3, 11)  # create_task(context=) is 3.11+

_NOT_STARTED: Any = object()
_RUNNING: Any = object()
_FINISHED: Any = object()


class _Resume(Coroutine):
    """What the task runs: first it hands over the future the eager step stopped at, then it
    passes every step on to the call itself."""

    __slots__ = ("coro", "stopped_at")

    def __init__(self, coro: Any) -> None:
        self.coro = coro
        self.stopped_at: Any = _NOT_STARTED

    def send(self, value: Any) -> Any:
        at = self.stopped_at
        if at is _RUNNING:
            return self.coro.send(value)
        self.stopped_at = _RUNNING
        if at is _NOT_STARTED:
            return self.coro.send(value)
        if at is _FINISHED:
            raise StopIteration
        return at  # the future the call waits on: the task now waits on it

    def throw(self, typ: Any, val: Any = None, tb: Any = None) -> Any:
        if self.stopped_at is _FINISHED:  # nothing left to throw into
            self.stopped_at = _RUNNING
            raise typ if val is None else val
        self.stopped_at = _RUNNING
        if val is None and tb is None:
            return self.coro.throw(typ)
        return self.coro.throw(typ, val, tb)  # pragma: no cover - asyncio throws instances

    def close(self) -> None:
        if self.stopped_at is not _FINISHED:
            self.coro.close()

    def __await__(self) -> Any:
        return self

    def __next__(self) -> Any:
        return self.send(None)

    def __iter__(self) -> Any:
        return self


def start_task(loop: asyncio.AbstractEventLoop, coro: Any) -> "asyncio.Task[Any]":
    """Run ``coro`` as a task on ``loop``; its first step has already run when this returns
    (unless a task is running on the loop right now)."""
    resume = _Resume(coro)
    if not _EAGER:
        return loop.create_task(resume)  # pragma: no cover - Python 3.10
    if _current_task(loop) is not None:  # inside another task: the task takes its first step itself
        return loop.create_task(resume)
    context = copy_context()
    task = loop.create_task(resume, context=context)
    _enter_task(loop, task)
    try:
        resume.stopped_at = context.run(coro.send, None)
    except StopIteration:
        resume.stopped_at = _FINISHED
    except BaseException:  # our calls catch their app's errors: this is KeyboardInterrupt & co.
        resume.stopped_at = _FINISHED
        raise
    finally:
        _leave_task(loop, task)
    return task


__all__ = ["start_task"]
