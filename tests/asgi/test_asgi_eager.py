"""The eager first step of a mounted app's call (``stonechat/asgi/eager.py``), on the real event
loops (asyncio and uvloop): the step runs before ``start_task`` returns, as the task itself and
in the task's own context; what waits continues in that same task; anyio cancel scopes and task
groups opened in the step close without complaint; cancelling reaches the call; inside another
task nothing runs early.
"""

from __future__ import annotations

import asyncio
import contextvars

import anyio
import pytest
import uvloop

from stonechat.asgi.eager import start_task

var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")


def in_a_callback(loop_factory, make_calls):
    """Run ``make_calls(loop)`` in a plain loop callback (as the server's data_received is),
    then await the tasks it started; returns (what happened, task results)."""
    log: list = []

    async def main():
        loop = asyncio.get_running_loop()
        started = loop.create_future()
        loop.call_soon(lambda: started.set_result(make_calls(loop, log)))
        tasks = await started
        assert var.get() == "unset"  # the step ran in the task's context, not the callback's
        results = []
        for task in tasks:
            try:
                results.append(await task)
            except asyncio.CancelledError:
                results.append("cancelled")
        return log, results

    return loop_factory(main())


LOOPS = {"asyncio": asyncio.run, "uvloop": uvloop.run}


@pytest.mark.parametrize("loop", LOOPS)
def test_first_step_runs_at_once_as_the_task_in_its_context(loop):
    def make(loop, log):
        async def call(tag, wait):
            me = asyncio.current_task()
            var.set(tag)
            log.append((tag, "step", me is not None))
            if wait:
                await asyncio.sleep(0.01)
                log.append((tag, "later", asyncio.current_task() is me, var.get()))
            return tag

        quick = start_task(loop, call("quick", False))
        log.append(("quick", "returned"))
        slow = start_task(loop, call("slow", True))
        return [quick, slow]

    events, results = in_a_callback(LOOPS[loop], make)
    assert events[:3] == [("quick", "step", True), ("quick", "returned"), ("slow", "step", True)]
    assert ("slow", "later", True, "slow") in events
    assert results == ["quick", "slow"]


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

    _, results = in_a_callback(LOOPS[loop], lambda loop, log: [start_task(loop, call())])
    assert results == ["ok"]


@pytest.mark.parametrize("loop", LOOPS)
def test_cancelling_the_task_reaches_the_call(loop):
    seen = []

    async def call():
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            seen.append("cancelled inside")
            raise

    def make(loop, log):
        task = start_task(loop, call())
        loop.call_later(0.01, task.cancel)
        return [task]

    _, results = in_a_callback(LOOPS[loop], make)
    assert results == ["cancelled"] and seen == ["cancelled inside"]


def test_inside_a_task_the_step_is_left_to_the_task():
    async def main():
        ran = []

        async def call():
            ran.append("ran")

        task = start_task(asyncio.get_running_loop(), call())
        assert ran == []
        await task
        return ran

    assert asyncio.run(main()) == ["ran"]
