"""Running an application coroutine's first step at once, and the rest in a task only if it
suspends. Owns the coroutine-stepping mechanics; knows nothing of HTTP or of the framework.

Why: most ``async def`` handlers return without ever suspending. Wrapping each one in a Task
costs the Task, a ``call_soon`` and a loop turn before the first byte of the handler runs. On
CPython 3.11 (no ``eager_task_factory``) we do what 3.12's eager tasks do, but without a Task
per request: a connection that runs coroutines owns one long-lived Task (``primed_task``),
parked between requests. For the first step of a request's coroutine that Task is made the
loop's current task (``asyncio.tasks._enter_task``/``_leave_task``, the calls ``Task.__step``
makes itself), so ``asyncio.current_task()``, ``asyncio.timeout()``, ``TaskGroup`` and anyio
see a real Task; the step runs in a fresh copy of the connection's context, as a new Task's
would. If the coroutine suspends on a future, the parked Task is woken and awaits
``Suspended``, which continues the very same coroutine (in the same context) from that future:
cancelling the Task cancels what the handler awaits, as for any task.

Why the first step goes through a *relay* (``start_relay``): a coroutine stepped with
``send()`` that returns ends by raising ``StopIteration``, and an exception caught in Python
costs the exception, a traceback and a frame object: about 2k instructions, a third of what an
async handler costs over a sync one. A relay is one generator (one per connection task, kept
with it from connection to connection) that runs each coroutine it is sent with ``yield from``
(which takes a returned value without an exception) and then yields ``DONE``, its value left
in an ``Outcome``; a coroutine that suspends yields its future through the relay, so
``Suspended`` continues the relay, which continues the coroutine. An exception from the
coroutine ends the relay (it propagates as before); the relay's owner makes a new one when its
``send`` says ``StopIteration``.

Sent a *finishing quadruple* (``interface.py``: an async handler's own coroutine and what the
framework does with its value or its exception), the relay finishes it too: ``done(argument,
value)``, or ``failed(argument, exc)`` for an ``Exception`` (awaited when it gives a
coroutine), in the same step, task and context, and yields the answer itself, an
``HTTPResponse`` (which no awaitable yields), rather than ``DONE``. Why: otherwise the framework
needs a coroutine of its own around the handler's to convert the value and answer errors, made,
stepped and freed per request; here the frame that takes the value is the relay's, which exists
anyway, and there is no ``Outcome`` to read. An exception caught here does not end the relay.

Why the Task is *primed* (run by hand up to its first ``await``) before the loop first steps
it: ``Task.cancel()`` on a task that has not started yet throws into a coroutine that cannot
catch anything, and a cancel can come during that very first eager step (a handler cancelling
its own task, a client gone in the same loop turn). A primed task is always inside a ``try``.
"""

from __future__ import annotations

import asyncio
import contextvars
import types
from types import CoroutineType
from typing import Any, Callable, Coroutine, Generator, Optional

from .interface import HTTPResponse

# What Task.__step calls around every step of a task (the C and the Python Task alike): the
# loop's "current task", read by asyncio.current_task(). Entering fails if another task is
# current (the caller then falls back to handing the coroutine over unstarted).
enter_task = asyncio.tasks._enter_task
leave_task = asyncio.tasks._leave_task


def _must_cancel(task: "asyncio.Task[Any]") -> bool:
    """3.10 has no request count: a cancel is pending in the flag a task keeps, or in the
    future it waits on, already cancelled."""
    if getattr(task, "_must_cancel", False):
        return True
    waiter = getattr(task, "_fut_waiter", None)
    return waiter is not None and waiter.cancelled()


def _no_count(task: "asyncio.Task[Any]") -> None:
    pass


def _uncancel_all(task: "asyncio.Task[Any]") -> None:
    while task.uncancel():  # type: ignore[attr-defined]
        pass


# cancel_requested(task): a cancel was requested and not taken back (Task.cancelling, 3.11+).
# forget_cancels(task): back to no cancel requested, as a fresh task (Task.uncancel, 3.11+).
cancel_requested: Callable[["asyncio.Task[Any]"], Any] = getattr(asyncio.Task, "cancelling", _must_cancel)
forget_cancels: Callable[["asyncio.Task[Any]"], None] = (
    _uncancel_all if hasattr(asyncio.Task, "uncancel") else _no_count)


@types.coroutine
def primed_point() -> Generator[None, None, None]:
    """Where ``primed_task`` leaves a task's coroutine: its first real step resumes here."""
    yield


def primed_task(loop: asyncio.AbstractEventLoop, body: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
    """A Task for ``body``, which must ``await primed_point()`` first (inside a ``try`` that
    handles ``CancelledError``): run by hand up to there, so that a cancel that arrives before
    the loop first steps the task lands in that ``try``."""
    body.send(None)
    return loop.create_task(body)


# What a relay yields once the coroutine it ran has returned (its value is in the Outcome).
DONE: Any = object()


class Outcome:
    """Where a relay leaves the value of the coroutine that last returned in it."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value: Any = None


@types.coroutine
def _relay(outcome: Outcome) -> Generator[Any, Any, None]:
    job = yield
    while True:
        if job.__class__ is tuple:
            # A finishing quadruple (server/interface.py), finished here rather than by a
            # coroutine around the application's: the relay is already the frame that takes
            # its value. (interface.Finished does the same for the callers that await.)
            coro, done, failed, argument = job
            answer: Any
            try:
                answer = done(argument, (yield from coro))
            except Exception as exc:
                answer = failed(argument, exc)
                if answer.__class__ is CoroutineType:  # e.g. an async exception handler
                    answer = yield from answer  # type: ignore[misc]  # (types.coroutine allows it)
            job = yield answer  # an HTTPResponse: what no awaitable yields, so it says "returned"
        else:
            outcome.value = yield from job
            job = yield DONE


def start_relay(outcome: Outcome) -> Callable[[Any], Any]:
    """A new relay, ready: ``send(coro)`` runs ``coro``'s first step and answers ``DONE`` (it
    returned; its value is ``outcome.value``) or what it suspended on (continue with
    ``Suspended``). Raises what the coroutine raises (the relay is then spent) and
    ``StopIteration`` once spent, without touching ``coro``. ``coro`` may be a finishing quadruple
    (``server/interface.py``): the relay then answers what ``done`` or ``failed`` answered (an
    ``HTTPResponse``, awaited first when ``failed`` gave a coroutine) instead of ``DONE``, which
    saves its owner the read of the outcome; only a ``BaseException`` (a cancel) gets out."""
    relay = _relay(outcome)
    relay.send(None)
    return relay.send


class Suspended:
    """The rest of a coroutine whose first step ran eagerly and suspended on ``pending``.
    Awaited by the connection's task, it relays every future the coroutine waits on to that
    task and every outcome back, as if the task had run the coroutine from the start.
    ``coro`` may be a relay (``start_relay``; its ``outcome`` given): it is over when it
    yields ``DONE``, or an ``HTTPResponse`` (a finishing quadruple's answer)."""

    __slots__ = ("coro", "context", "pending", "cancel_first", "outcome")

    def __init__(self, coro: Any, context: contextvars.Context, pending: Any,
                 outcome: Optional[Outcome] = None) -> None:
        self.coro = coro
        self.context = context
        self.pending = pending
        self.cancel_first = False
        self.outcome = outcome

    def cancel(self) -> None:
        """The task was cancelled before it took this coroutine over: deliver it as a Task
        would have at this suspension (cancel the awaited future, else throw at resumption)."""
        pending = self.pending
        cancel = getattr(pending, "cancel", None)
        if cancel is None or not getattr(pending, "_asyncio_future_blocking", False) or not cancel():
            self.cancel_first = True

    def __await__(self) -> Generator[Any, None, Any]:
        coro = self.coro
        run = self.context.run
        pending = self.pending
        if self.cancel_first:
            try:
                pending = run(coro.throw, asyncio.CancelledError())
            except StopIteration as stop:
                return stop.value
        while True:
            if pending is DONE:
                outcome = self.outcome
                assert outcome is not None
                value, outcome.value = outcome.value, None
                return value
            if isinstance(pending, HTTPResponse):
                return pending
            try:
                yield pending
            except BaseException as exc:  # thrown in by the task (a cancel, GeneratorExit): relay
                try:
                    pending = run(coro.throw, exc)
                except StopIteration as stop:
                    return stop.value
            else:
                try:
                    pending = run(coro.send, None)
                except StopIteration as stop:
                    return stop.value


__all__ = ["DONE", "Outcome", "Suspended", "cancel_requested", "enter_task", "forget_cancels", "leave_task",
           "primed_point", "primed_task", "start_relay"]
