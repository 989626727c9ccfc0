"""Background tasks: work a handler schedules to run once its response is sent
(``tasks: BackgroundTasks`` as a parameter, then ``tasks.add_task(fn, *args, **kwargs)``).

Owns the ``BackgroundTasks`` a handler fills and the ``BackgroundRunner`` of one served app
that runs them, counts what is pending for the drain at the stop, and names what is left when
the drain deadline passes. It knows the server only through ``server/interface.py``
(``HTTPResponseThen``: the server calls ``after()`` once the bytes are written).

Why each response's tasks run in order, one after the other (as in Starlette): a handler that
adds "write the file" then "notify" means that order. Unlike Starlette, a task that raises is
logged with its name and the next one still runs: one failing e-mail must not skip the audit
record after it. Sync functions run on a daemon thread each, so they never block the loop, and a
hung one cannot keep the process from exiting; async ones run on the loop.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
from typing import Any, Callable, Optional

from ..server.interface import HTTPResponse, HTTPResponseThen

logger = logging.getLogger("stonechat.background")

# Where the parameter's getter leaves the handler's BackgroundTasks on the Request (its __dict__).
REQUEST_KEY = "_background_tasks"


def task_name(fn: Any) -> str:
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)
    module = getattr(fn, "__module__", None)
    return f"{module}.{name}" if module and module not in ("__main__", "builtins") else name


class BackgroundTasks:
    """Work to run after the response is sent. Annotate a handler parameter with this type to
    get one per request: ``def h(request, tasks: BackgroundTasks): tasks.add_task(send, to)``."""

    __slots__ = ("tasks", "armed")

    def __init__(self) -> None:
        self.tasks: list[tuple[Callable[..., Any], tuple, dict]] = []
        self.armed = False  # the handler returned: its tasks are due (a handler that raised: not)

    def add_task(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        if not callable(func):
            raise TypeError(f"add_task expects a function, got {func!r}")
        self.tasks.append((func, args, kwargs))

    def __len__(self) -> int:
        return len(self.tasks)

    def __repr__(self) -> str:
        return f"BackgroundTasks([{', '.join(task_name(f) for f, _, _ in self.tasks)}])"


def tasks_for(request: Any) -> BackgroundTasks:
    """The getter of a ``BackgroundTasks`` parameter (``core/params.py``): one per request."""
    tasks = request.__dict__.get(REQUEST_KEY)
    if tasks is None:
        tasks = request.__dict__[REQUEST_KEY] = BackgroundTasks()
    return tasks


def arm_after_call(call: Callable[[Any], Any], is_async: bool) -> Callable[[Any], Any]:
    """``call`` for a route with a ``BackgroundTasks`` parameter: its tasks become due only
    once the handler has returned (one that raised answers an error, and its tasks never run)."""
    if is_async:
        async def armed_async(request: Any) -> Any:
            result = await call(request)
            _arm(request)
            return result
        return armed_async

    def armed(request: Any) -> Any:
        result = call(request)
        _arm(request)
        return result
    return armed


def _arm(request: Any) -> None:
    tasks = request.__dict__.get(REQUEST_KEY)
    if tasks is not None:
        tasks.armed = True


def _in_thread(fn: Callable[[], Any], name: str) -> "asyncio.Future[Any]":
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()

    def settle(error: Optional[BaseException]) -> None:
        if not future.done():
            if error is None:
                future.set_result(None)
            else:
                future.set_exception(error)

    def target() -> None:
        try:
            fn()
        except BaseException as exc:
            error: Optional[BaseException] = exc
        else:
            error = None
        try:
            loop.call_soon_threadsafe(settle, error)
        except RuntimeError:
            pass  # the loop is gone: the process is exiting

    threading.Thread(target=target, name=f"background:{name}", daemon=True).start()
    return future


class BackgroundRunner:
    """Runs the background tasks of one served app and keeps count for the stop."""

    def __init__(self, max_threads: int = 32) -> None:
        self.running: dict["asyncio.Task[None]", list[str]] = {}  # task → names not yet finished
        self.closed = False
        # At most this many sync tasks on threads at once; the rest wait their turn on the loop
        # (a burst of requests must not become a burst of threads). Made on first use, in the loop.
        self.max_threads = max_threads
        self.thread_slots: Optional[asyncio.Semaphore] = None

    def response_then(self, request: Any, response: HTTPResponse) -> HTTPResponse:
        """The response to send for a route with a ``BackgroundTasks`` parameter: with its due
        tasks attached as ``after()``, or as it is when there are none."""
        tasks = request.__dict__.get(REQUEST_KEY)
        if tasks is None or not tasks.armed or not tasks.tasks:
            return response
        return HTTPResponseThen(response, lambda: self.start(tasks))

    def start(self, tasks: BackgroundTasks) -> None:
        if self.closed:
            logger.warning("background task(s) not started, the app is shutting down: %s",
                           ", ".join(task_name(f) for f, _, _ in tasks.tasks))
            return
        names = [task_name(f) for f, _, _ in tasks.tasks]
        task = asyncio.get_running_loop().create_task(self._run(list(tasks.tasks), names))
        self.running[task] = names
        task.add_done_callback(self._finished)

    def _finished(self, task: "asyncio.Task[None]") -> None:
        self.running.pop(task, None)

    async def _run(self, tasks: list[tuple[Callable[..., Any], tuple, dict]], names: list[str]) -> None:
        for (fn, args, kwargs), name in zip(tasks, list(names)):
            try:
                if inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(getattr(fn, "__call__", None)):
                    await fn(*args, **kwargs)
                else:  # shielded: a cancel stops the wait, the thread cannot be stopped
                    if self.thread_slots is None:
                        self.thread_slots = asyncio.Semaphore(self.max_threads)
                    async with self.thread_slots:
                        await asyncio.shield(_in_thread(lambda: fn(*args, **kwargs), name))
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("background task %s failed", name)
            names.remove(name)

    # -- the stop (server/runner.py, through ServedApp) --------------------------------------

    def pending(self) -> int:
        """How many tasks have not finished (queued behind another of their response's included)."""
        return sum(len(names) for names in self.running.values())

    def deadline_passed(self) -> list[str]:
        """The drain deadline: cancel what is left and name it in the log. A sync task already
        running on its thread cannot be stopped; it is abandoned (the process exits anyway)."""
        self.closed = True
        left = [name for names in self.running.values() for name in names]
        if left:
            logger.warning("drain deadline passed with %d background task(s) unfinished, cancelled: %s",
                           len(left), ", ".join(left))
        for task in list(self.running):
            task.cancel()
        return left


__all__ = ["BackgroundRunner", "BackgroundTasks", "arm_after_call", "tasks_for"]
