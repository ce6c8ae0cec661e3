"""A large plain batch claims its ids optimistically (engine.intake.batch_write's
OPTIMISTIC_PLAIN): a batch repeating stored ids falls back to per-id claims with the right
counts, two concurrent batches sharing ids store each id once without deadlocking, and a
refused batch that fell back leaves nothing behind."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from engine.config import IntakeSettings
from engine.database import Database
from engine.intake.batch_write import PLAIN_MAX_EVENTS
from engine.intake.validation import EventIn
from engine.intake.writer import EventsRejected, EventWriter, StoreResult
from tests.support.intake import fallbacks, store_two_while_held, stored_ids

SIZE = PLAIN_MAX_EVENTS + 8  # the COPY path


def batch(ids: list[str], contacts: list[str], poison_at: int | None = None) -> list[EventIn]:
    return [EventIn("t", contacts[i % len(contacts)], None,
                    {"text": "a\x00b"} if i == poison_at else {"i": i},
                    datetime.now(UTC), event_id) for i, event_id in enumerate(ids)]




async def test_a_batch_repeating_stored_ids_falls_back_and_counts_them(
        database: Database) -> None:
    first = [f"a{i:04}" for i in range(SIZE)]
    # Half of it again, interleaved with new ids (and one repeated within the batch).
    second = [f"a{i:04}" if i % 2 else f"b{i:04}" for i in range(SIZE)]
    second[-1] = second[-3]  # "b...": repeated earlier in the same batch
    writer = EventWriter(database, IntakeSettings(commit_max_wait=0.0))
    await writer.start()
    try:
        before = fallbacks()
        assert await writer.store(batch(first, ["c0", "c1"])) == StoreResult(SIZE, 0)
        assert fallbacks() == before  # no repeat: the optimistic claim stood
        new = {i for i in second if i.startswith("b")}
        result = await writer.store(batch(second, ["c1", "c2"]))
        assert result == StoreResult(len(new), SIZE - len(new))
        assert fallbacks() == before + 1
        # Entirely repeated: every event a duplicate.
        assert await writer.store(batch(first, ["c0"])) == StoreResult(0, SIZE)
        assert fallbacks() == before + 2
    finally:
        await writer.stop()
    events, ids = await stored_ids(database)
    assert events == ids == sorted(set(first) | new)
    async with database.connection() as connection:
        contacts = await connection.fetchval(
            "SELECT array_agg(contact_id ORDER BY contact_id) FROM contacts")
    assert contacts == ["c0", "c1", "c2"]


async def test_concurrent_batches_sharing_ids_store_each_once_without_deadlock(
        database: Database, database_url: str) -> None:
    shared = [f"s{i:04}" for i in range(SIZE // 2)]
    first = shared + [f"x{i:04}" for i in range(SIZE - len(shared))]
    second = shared + [f"y{i:04}" for i in range(SIZE - len(shared))]
    contacts = ["c0", "c1", "c2"]  # new contacts, shared too
    before = fallbacks()
    results = await store_two_while_held(database, database_url, shared[0],
                                         batch(first, contacts), batch(second, contacts))
    assert sorted(results, key=lambda r: r.duplicates) == [
        StoreResult(SIZE, 0), StoreResult(SIZE - len(shared), len(shared))]
    assert fallbacks() == before + 1  # the later batch found the earlier's committed ids
    events, ids = await stored_ids(database)
    assert events == ids == sorted(set(first) | set(second))



async def test_a_refused_batch_that_fell_back_leaves_nothing_behind(
        database: Database) -> None:
    writer = EventWriter(database, IntakeSettings(commit_max_wait=0.0))
    await writer.start()
    try:
        assert await writer.store(batch(["k"], ["kept"])) == StoreResult(1, 0)
        before = fallbacks()
        ids = ["k"] + [f"r{i:04}" for i in range(SIZE - 1)]
        refused = writer.store(batch(ids, ["new0", "new1"], poison_at=SIZE - 1))
        outcome = await asyncio.gather(refused, return_exceptions=True)
        assert isinstance(outcome[0], EventsRejected) and outcome[0].index == SIZE - 1
        assert fallbacks() > before  # the repeated "k" sent it down the claim path
    finally:
        await writer.stop()
    events, stored = await stored_ids(database)
    assert events == stored == ["k"]
    async with database.connection() as connection:
        contacts = await connection.fetchval("SELECT array_agg(contact_id) FROM contacts")
    assert contacts == ["kept"]
