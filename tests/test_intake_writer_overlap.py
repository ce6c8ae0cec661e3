"""When a second commit starts beside one in flight (engine.intake.writer's
OVERLAP_MIN_EVENTS and slow commits): small requests arriving during a commit wait for it and
go together, a large queue or a commit held up past the bound starts the second at once. An
uncommitted claim of an event id by another session holds a commit in flight."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import asyncpg

from engine.config import IntakeSettings
from engine.database import Database, connect_one
from engine.intake.validation import EventIn
from engine.intake.writer import OVERLAP_MIN_EVENTS, EventWriter, StoreResult
from tests.support.intake import stored_ids, wait_for_lock_waiters


def events(prefix: str, count: int) -> list[EventIn]:
    """Contacts of their own: a held commit's new contact would hold up another's too."""
    return [EventIn("t", f"{prefix}-c{i % 3}", None, {}, datetime.now(UTC), f"{prefix}{i}")
            for i in range(count)]


class GroupRecordingWriter(EventWriter):
    """The writer, recording how many events each group it writes holds (a spy at _write)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.groups: list[int] = []

    async def _write(self, database: Database, batch: list[Any],
                     commit: bool = True) -> list[StoreResult]:
        self.groups.append(sum(len(request.events) for request in batch))
        return await super()._write(database, batch, commit)


@asynccontextmanager
async def held_commit(database: Database, database_url: str, slow_commit: float
                      ) -> AsyncIterator[tuple[GroupRecordingWriter, asyncpg.Connection,
                                               asyncio.Future[StoreResult]]]:
    """A started writer whose first commit (event "held0") waits on the yielded session's
    uncommitted claim of its id (roll it back to let it go), and that commit's future."""
    writer = GroupRecordingWriter(database, IntakeSettings(commit_max_wait=0.0),
                                  slow_commit=slow_commit)
    await writer.start()
    blocker = await connect_one(database_url)
    try:
        await blocker.execute("BEGIN")
        await blocker.execute("INSERT INTO event_ids (event_id) VALUES ('held0')")
        first = writer.submit(events("held", 1))
        await wait_for_lock_waiters(blocker, 1)
        yield writer, blocker, first
    finally:
        await blocker.close()
        await writer.stop()


async def test_small_requests_during_a_commit_wait_for_it_and_go_together(
        database: Database, database_url: str) -> None:
    async with held_commit(database, database_url, slow_commit=3600) as (writer, blocker,
                                                                         first):
        rest = [writer.submit(events(f"r{n}-", 2)) for n in range(5)]
        await blocker.execute("ROLLBACK")
        results = await asyncio.wait_for(asyncio.gather(first, *rest), 30)
    assert results == [StoreResult(1, 0)] + [StoreResult(2, 0)] * 5
    assert writer.groups == [1, 10]  # the five in one group, after the first
    events_stored, _ = await stored_ids(database)
    assert len(events_stored) == 11


async def test_a_large_queue_starts_a_second_commit_at_once(
        database: Database, database_url: str) -> None:
    async with held_commit(database, database_url, slow_commit=3600) as (writer, blocker,
                                                                         first):
        large = writer.submit(events("large", OVERLAP_MIN_EVENTS))
        assert await asyncio.wait_for(large, 30) == StoreResult(OVERLAP_MIN_EVENTS, 0)
        assert not first.done()  # committed beside the one still held
        await blocker.execute("ROLLBACK")
        assert await asyncio.wait_for(first, 30) == StoreResult(1, 0)


async def test_a_commit_held_up_holds_up_the_next_for_a_bounded_time(
        database: Database, database_url: str) -> None:
    async with held_commit(database, database_url, slow_commit=0.05) as (writer, blocker,
                                                                         first):
        second = writer.submit(events("second", 1))
        assert await asyncio.wait_for(second, 30) == StoreResult(1, 0)
        assert not first.done()
        await blocker.execute("ROLLBACK")
        assert await asyncio.wait_for(first, 30) == StoreResult(1, 0)
    assert writer.groups == [1, 1]
