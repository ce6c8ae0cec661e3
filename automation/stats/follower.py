"""The stats follower: keeps the funnel counters up with both logs, batch after batch.

It runs in the automation role. It needs no leadership: each batch locks the follower's state
row (:func:`automation.stats.store.fold_batch`), so followers in several processes take turns
and still count every fact once. When a batch comes back short it waits ``poll_interval``.
"""

from __future__ import annotations

import asyncio
import logging
import time

from automation.model.goals import Goals
from automation.stats.settings import StatsSettings
from automation.stats.store import fold_batch, pending
from engine.database import Database
from engine.errors import DatabaseError

log = logging.getLogger("herald.automation.stats")

RETRY_AFTER_ERROR = 5.0


class StatsFollower:
    def __init__(self, database: Database, settings: StatsSettings,
                 goals: Goals | None = None) -> None:
        """``goals``: each workflow's goal (its own ``goal:`` or ``[stats]``'s); by default
        ``[stats]``'s for every workflow."""
        self.database = database
        self.settings = settings
        self.goals = goals if goals is not None else Goals(settings.goal)
        self.counted = 0  # log rows moved past, since start
        self.behind = False  # the last catch_up stopped at max_batches with more to read
        self.idle = asyncio.Event()  # set by the task after a pass that found nothing to read
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def catch_up(self, max_batches: int | None = None) -> int:
        """Fold batches until the logs are exhausted (or ``max_batches``); rows moved past."""
        moved, batches = 0, 0
        self.behind = True
        while max_batches is None or batches < max_batches:
            async with self.database.connection() as connection:
                result = await fold_batch(connection, self.goals,
                                          self.settings.read_batch)
            moved += result.events + result.decisions
            batches += 1
            if not result.full:
                self.behind = False
                break
        self.counted += moved
        return moved

    async def settle(self, timeout: float) -> int:
        """Catch up until nothing is left after the cursors: rows of transactions that were
        still open are read once they end (tests, the bench). Raises TimeoutError."""
        moved = 0
        async with asyncio.timeout(timeout):
            while True:
                moved += await self.catch_up()
                async with self.database.connection() as connection:
                    if not await pending(connection):
                        return moved
                await asyncio.sleep(0.05)  # an older transaction is still open: look again

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="stats-follower")

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        while not self._stop.is_set():
            delay = self.settings.poll_interval
            try:
                started = time.monotonic()
                moved = await self.catch_up(max_batches=100)
                if not moved:
                    self.idle.set()
                else:
                    log.debug("stats counted", extra={
                        "rows": moved, "seconds": round(time.monotonic() - started, 3)})
            except DatabaseError:
                log.warning("stats follower: database error; retrying", exc_info=True)
                delay = RETRY_AFTER_ERROR
            except Exception:  # a bug must not stop the counters for good
                log.exception("stats follower: unexpected error; retrying")
                delay = RETRY_AFTER_ERROR
            if self.behind and delay == self.settings.poll_interval:
                await asyncio.sleep(0)  # hand the loop back, then go on reading
                continue
            try:
                await asyncio.wait_for(self._stop.wait(), delay)
            except TimeoutError:
                pass
