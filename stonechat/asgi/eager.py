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

On Python 3.12+ this is asyncio's own eager start (``Task(..., eager_start=True)``, which works
with uvloop's loop too). On 3.11 it is written out with asyncio's ``_enter_task``/``_leave_task``
around the first ``send``. Where another task is already running on the loop (the call comes
from inside a task: TestClient, middleware in front, an ASGI server in front) the task takes the
first step itself, as usual.
"""

from __future__ import annotations

import asyncio
import sys
import types
from contextvars import copy_context
from typing import Any

try:
    from asyncio.tasks import _enter_task, _leave_task  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - an asyncio without them: no eager step
    _enter_task = _leave_task = None  # type: ignore[assignment]

_NATIVE_EAGER = sys.version_info >= (3, 12)
_EAGER = _NATIVE_EAGER or (_enter_task is not None and sys.version_info >= (3, 11))  # context= is 3.11+
# asyncio.current_task is a Python function on 3.11; the dict it reads is all we need.
_current_task = getattr(asyncio.tasks, "_current_tasks", {}).get if sys.version_info < (3, 12) else asyncio.current_task
_FINISHED: Any = object()


@types.coroutine
def _resume(stopped_at: list, coro: Any) -> Any:
    """(3.11) What the task runs after the eager step: nothing if the call is over; else it
    waits on the future the step stopped at, then hands every later step to the call itself. A
    generator (not a class with ``send``), so the task's steps stay in C."""
    at = stopped_at[0]
    if at is _FINISHED:
        return stopped_at[1]
    while True:
        try:
            yield at
        except BaseException as exc:  # cancelled while waiting: the call decides what that means
            try:
                at = coro.throw(exc)
            except StopIteration as stop:
                return stop.value
            continue
        break
    return (yield from coro.__await__())


def start_task(loop: asyncio.AbstractEventLoop, coro: Any) -> "asyncio.Task[Any]":
    """Run ``coro`` as a task on ``loop``; its first step has already run when this returns
    (unless a task is running on the loop right now)."""
    if not _EAGER or _current_task(loop) is not None:
        return loop.create_task(coro)  # inside another task: the task takes its first step itself
    if _NATIVE_EAGER:
        return asyncio.Task(coro, loop=loop, eager_start=True)  # type: ignore[call-arg]
    context = copy_context()
    stopped_at: list = [_FINISHED, None]  # where the eager step stopped; the result if it finished
    task = loop.create_task(_resume(stopped_at, coro), context=context)  # type: ignore[call-arg]
    _enter_task(loop, task)
    try:
        stopped_at[0] = context.run(coro.send, None)
    except StopIteration as stop:  # the call is over: the task's step finds _FINISHED
        stopped_at[1] = stop.value
    finally:
        _leave_task(loop, task)
    return task


__all__ = ["start_task"]
