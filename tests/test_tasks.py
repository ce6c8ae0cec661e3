"""engine.tasks.cancel_and_wait: the task has ended when it returns, its cancellation not
raised; None is nothing to end."""

from __future__ import annotations

import asyncio

from engine.tasks import cancel_and_wait


async def test_a_running_task_has_ended_and_ran_its_cleanup() -> None:
    cleaned = asyncio.Event()
    started = asyncio.Event()

    async def background() -> None:
        try:
            started.set()
            await asyncio.Event().wait()
        finally:
            cleaned.set()

    task = asyncio.create_task(background())
    await started.wait()
    await cancel_and_wait(task)
    assert task.done() and task.cancelled()
    assert cleaned.is_set()


async def test_none_and_a_finished_task_are_fine() -> None:
    await cancel_and_wait(None)
    task = asyncio.create_task(asyncio.sleep(0, result=1))
    await task
    await cancel_and_wait(task)
    assert task.result() == 1
