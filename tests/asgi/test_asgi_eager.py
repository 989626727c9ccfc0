"""The eager first step of a mounted app's call (``stonechat/asgi/eager.py``), on the real event
loops (asyncio and uvloop): the step runs before ``start`` returns, as a real task and in a
fresh copy of the caller's context; what waits continues in that same task; anyio cancel scopes
and task groups opened in the step close without complaint; cancelling reaches the call; a call
that finishes in its step leaves no task behind (the spare is kept for the next one), and a
cancel it aimed at its own task does not reach the next call; inside another task nothing runs
early.
"""

from __future__ import annotations

import asyncio
import contextvars

import anyio
import pytest
import uvloop

from stonechat.asgi.eager import EagerStarter

var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")

LOOPS = {"asyncio": asyncio.run, "uvloop": uvloop.run}


def in_a_callback(loop_factory, make_calls):
    """Run ``make_calls(loop, starter, log)`` in a plain loop callback (as the server's
    data_received is), then await the tasks it returned (None: the call was over at once);
    returns (what happened, task results)."""
    log: list = []

    async def main():
        loop = asyncio.get_running_loop()
        started = loop.create_future()
        loop.call_soon(lambda: started.set_result(make_calls(loop, EagerStarter(), log)))
        tasks = await started
        assert var.get() == "unset"  # the step ran in its own context, not the callback's
        results = []
        for task in tasks:
            if task is None:
                results.append("over")
                continue
            try:
                results.append(await task)
            except asyncio.CancelledError:
                results.append("cancelled")
        return log, results

    return loop_factory(main())


@pytest.mark.parametrize("loop", LOOPS)
def test_first_step_runs_at_once_as_the_task_in_its_context(loop):
    def make(loop, starter, log):
        async def call(tag, wait):
            me = asyncio.current_task()
            var.set(tag)
            log.append((tag, "step", me is not None, var.get()))
            if wait:
                await asyncio.sleep(0.01)
                log.append((tag, "later", asyncio.current_task() is me, var.get()))
            return tag

        quick = starter.start(loop, call("quick", False))
        log.append(("quick", "returned"))
        slow = starter.start(loop, call("slow", True))
        after = starter.start(loop, call("after", False))  # the next call sees no var of the others
        return [quick, slow, after]

    events, results = in_a_callback(LOOPS[loop], make)
    assert events[:4] == [("quick", "step", True, "quick"), ("quick", "returned"), ("slow", "step", True, "slow"),
                          ("after", "step", True, "after")]
    assert ("slow", "later", True, "slow") in events
    assert results == ["over", "slow", "over"]


@pytest.mark.parametrize("loop", LOOPS)
def test_calls_that_finish_at_once_leave_no_task(loop):
    def make(loop, starter, log):
        before = len(asyncio.all_tasks(loop))

        async def call():
            log.append(asyncio.current_task())

        answers = [starter.start(loop, call()) for _ in range(50)]
        log.append(len(asyncio.all_tasks(loop)) - before)
        return answers

    events, results = in_a_callback(LOOPS[loop], make)
    *seen, grown = events
    assert results == ["over"] * 50
    assert len({id(task) for task in seen}) == 1  # one spare was current for every call
    assert grown == 1  # that spare, parked: no task per call


@pytest.mark.parametrize("loop", LOOPS)
def test_a_cancel_of_its_own_task_does_not_reach_the_next_call(loop):
    def make(loop, starter, log):
        async def cancels_itself():
            asyncio.current_task().cancel()
            log.append("returned anyway")

        async def waits():
            await asyncio.sleep(0.01)
            return "not cancelled"

        return [starter.start(loop, cancels_itself()), starter.start(loop, waits())]

    events, results = in_a_callback(LOOPS[loop], make)
    assert events == ["returned anyway"] and results == ["over", "not cancelled"]


@pytest.mark.parametrize("loop", LOOPS)
def test_a_cancel_in_the_step_reaches_the_calls_next_await(loop):
    def make(loop, starter, log):
        async def call():
            asyncio.current_task().cancel()
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                log.append("cancelled at its await")
                raise

        return [starter.start(loop, call())]

    events, results = in_a_callback(LOOPS[loop], make)
    assert events == ["cancelled at its await"] and results == ["cancelled"]


@pytest.mark.parametrize("loop", LOOPS)
def test_anyio_scopes_opened_in_the_step_close_in_the_same_task(loop):
    async def call():
        with anyio.CancelScope():
            await anyio.sleep(0.01)  # the step ends here; the task goes on
        async with anyio.create_task_group() as group:
            group.start_soon(anyio.sleep, 0.01)
        with anyio.fail_after(5):
            await anyio.to_thread.run_sync(lambda: None)
        return "ok"

    async def quick():
        with anyio.CancelScope():  # opened and closed inside the step, on the spare
            pass

    _, results = in_a_callback(
        LOOPS[loop], lambda loop, starter, log: [starter.start(loop, quick()), starter.start(loop, call()),
                                                 starter.start(loop, quick())])
    assert results == ["over", "ok", "over"]


@pytest.mark.parametrize("loop", LOOPS)
def test_cancelling_the_task_reaches_the_call(loop):
    seen = []

    async def call():
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            seen.append("cancelled inside")
            raise

    def make(loop, starter, log):
        task = starter.start(loop, call())
        loop.call_later(0.01, task.cancel)
        return [task]

    _, results = in_a_callback(LOOPS[loop], make)
    assert results == ["cancelled"] and seen == ["cancelled inside"]


@pytest.mark.parametrize("loop", LOOPS)
def test_the_parked_spare_ends_quietly_when_cancelled(loop):
    async def main():
        starter = EagerStarter()
        running = asyncio.get_running_loop()
        done = running.create_future()

        async def call():
            pass

        running.call_soon(lambda: done.set_result(starter.start(running, call())))
        assert await done is None
        spare = starter.spare.task
        spare.cancel()  # what the worker's teardown does to every task left
        return await spare, starter.running_loop() is running

    assert LOOPS[loop](main()) == (None, True)


def test_inside_a_task_the_step_is_left_to_the_task():
    async def main():
        ran = []

        async def call():
            ran.append("ran")

        task = EagerStarter().start(asyncio.get_running_loop(), call())
        assert ran == []
        await task
        return ran

    assert asyncio.run(main()) == ["ran"]


def test_no_loop_no_running_loop():
    assert EagerStarter().running_loop() is None
