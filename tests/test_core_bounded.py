"""The core runs contacts concurrently through a fixed set of workers (automation.runtime.core
._bounded): in order, at most ``limit`` at once, every contact finished before the first error
is raised, nothing left running or unawaited when cancelled."""

from __future__ import annotations

import asyncio

import pytest

from automation.runtime.core import _bounded


async def turns(count: int = 10) -> None:
    """Let the event loop run everything ready, a few rounds (no timing involved)."""
    for _ in range(count):
        await asyncio.sleep(0)


async def test_in_order_at_most_limit_at_once_and_all_done() -> None:
    started: list[int] = []
    running = peak = 0
    begun = [asyncio.Event() for _ in range(10)]
    gates = [asyncio.Event() for _ in range(10)]

    async def job(number: int) -> None:
        nonlocal running, peak
        started.append(number)
        begun[number].set()
        running += 1
        peak = max(peak, running)
        await gates[number].wait()
        running -= 1

    task = asyncio.create_task(_bounded(3, [job(n) for n in range(10)]))
    for number in range(3):
        await begun[number].wait()
    await turns()
    assert started == [0, 1, 2]  # the fourth waits for a free worker
    for number in range(10):
        gates[number].set()
        if number + 3 < 10:
            await begun[number + 3].wait()
    await task
    assert started == list(range(10)) and peak == 3 and running == 0


async def test_the_first_error_in_order_is_raised_after_every_job_finished() -> None:
    finished: list[int] = []

    async def job(number: int) -> None:
        await asyncio.sleep(0.001 * (10 - number))  # later jobs fail first
        if number in (4, 7):
            raise ValueError(f"job {number}")
        finished.append(number)

    with pytest.raises(ValueError, match="job 4"):
        await _bounded(4, [job(n) for n in range(10)])
    assert sorted(finished) == [0, 1, 2, 3, 5, 6, 8, 9]


async def test_cancelling_stops_the_workers_and_closes_jobs_never_started() -> None:
    blocker, two_started = asyncio.Event(), asyncio.Event()
    started: list[int] = []

    async def job(number: int) -> None:
        started.append(number)
        if len(started) == 2:
            two_started.set()
        await blocker.wait()

    jobs = [job(n) for n in range(5)]
    task = asyncio.create_task(_bounded(2, jobs))
    await two_started.wait()
    await turns()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert started == [0, 1]
    assert all(coroutine.cr_frame is None for coroutine in jobs)  # finished or closed
