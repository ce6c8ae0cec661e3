"""The intake wakes the log's followers after its commits, at most once per
``notify_interval`` (engine.intake.log_wakeups), on a real Postgres: each NOTIFY is sent after
the commits it covers, a burst of commits within the interval gets one more NOTIFY (not one
each), the NOTIFY still owed goes out when the writer stops, and a refused batch or a dry run
owes none; a NOTIFY the database cannot take is logged, not raised."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest

from engine.config import IntakeSettings
from engine.database import Database
from engine.eventlog import EVENTS_CHANNEL
from engine.intake.log_wakeups import LogWakeups
from engine.intake.validation import EventIn
from engine.intake.writer import EventsRejected, EventWriter, StoreResult


def event(event_id: str, poison: bool = False) -> EventIn:
    return EventIn("t", "c0", None, {"text": "a\x00b"} if poison else {"id": event_id},
                   datetime.now(UTC), event_id)


class Follower:
    """A LISTEN connection that counts, at each notification, the events committed by then."""

    def __init__(self, database: Database) -> None:
        self.database = database
        self.seen: asyncio.Queue[int] = asyncio.Queue()
        self._tasks: set[asyncio.Task[None]] = set()

    def heard(self, *_args: Any) -> None:
        task = asyncio.create_task(self._count())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _count(self) -> None:
        async with self.database.connection() as connection:
            self.seen.put_nowait(await connection.fetchval("SELECT count(*) FROM events"))


@pytest.fixture
async def follower(database: Database) -> Any:
    follower = Follower(database)
    async with database.connection() as listener:
        await listener.add_listener(EVENTS_CHANNEL, follower.heard)
        yield follower
        await listener.remove_listener(EVENTS_CHANNEL, follower.heard)


async def test_a_lone_commit_is_followed_by_its_notify_at_once(
        database: Database, follower: Follower) -> None:
    # A long interval: only the first NOTIFY can go out before the writer stops.
    writer = EventWriter(database, IntakeSettings(commit_max_wait=0.0, notify_interval=60.0))
    await writer.start()
    try:
        assert await writer.store([event("e1")]) == StoreResult(1, 0)
        # told at once, and the event was committed when the follower was told
        assert await asyncio.wait_for(follower.seen.get(), 10) == 1
        assert writer.wakeups.sent == 1
    finally:
        await writer.stop()  # nothing owed: at once


async def test_a_burst_within_the_interval_gets_one_more_notify_covering_it(
        database: Database, follower: Follower) -> None:
    writer = EventWriter(database, IntakeSettings(commit_max_wait=0.0, notify_interval=2.0))
    await writer.start()
    try:
        for n in range(10):  # ten commits, one after another
            assert await writer.store([event(f"e{n}")]) == StoreResult(1, 0)
        first = await asyncio.wait_for(follower.seen.get(), 10)
        assert 1 <= first <= 10  # the first commit's NOTIFY, sent at once
        # the rest owe one NOTIFY, sent when the interval is up: after all ten committed
        assert await asyncio.wait_for(follower.seen.get(), 10) == 10
    finally:
        await writer.stop()
    assert writer.wakeups.sent == 2


async def test_the_notify_owed_goes_out_when_the_writer_stops(
        database: Database, follower: Follower) -> None:
    writer = EventWriter(database, IntakeSettings(commit_max_wait=0.0, notify_interval=1.0))
    await writer.start()
    assert await writer.store([event("a")]) == StoreResult(1, 0)
    assert await asyncio.wait_for(follower.seen.get(), 10) == 1
    assert await writer.store([event("b")]) == StoreResult(1, 0)  # owed, within the interval
    await writer.stop()  # waits for the owed NOTIFY
    assert writer.wakeups.sent == 2
    assert await asyncio.wait_for(follower.seen.get(), 10) == 2


async def test_a_refused_batch_and_its_dry_runs_owe_no_notify(
        database: Database, follower: Follower) -> None:
    writer = EventWriter(database, IntakeSettings(commit_max_wait=0.0, notify_interval=0.0))
    await writer.start()
    try:
        # two events: the writer bisects with dry runs to name the refused one
        with pytest.raises(EventsRejected) as refused:
            await writer.store([event("fine"), event("bad", poison=True)])
        assert refused.value.index == 1
        assert writer.wakeups.sent == 0
        assert await writer.store([event("later")]) == StoreResult(1, 0)
        assert await asyncio.wait_for(follower.seen.get(), 10) == 1
    finally:
        await writer.stop()
    assert writer.wakeups.sent == 1


async def test_a_notify_the_database_cannot_take_is_logged_and_given_up(
        database_url: str, caplog: pytest.LogCaptureFixture) -> None:
    database = await Database.connect(database_url, min_size=1, max_size=2)
    wakeups = LogWakeups(database, interval=0.0)
    await database.close()  # unreachable from here on: the NOTIFY fails at once
    wakeups.committed()
    await wakeups.stop()  # the attempt is over: nothing raised, nothing retried
    assert wakeups.sent == 0
    assert "could not wake the event log's followers" in caplog.text
