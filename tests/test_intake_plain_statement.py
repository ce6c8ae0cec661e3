"""A small plain batch's one statement (engine.intake.batch_write's WRITE_PLAIN, optimistic:
no per-id claims): a group repeating a stored id falls back to WRITE_PLAIN_CLAIMING and counts
it a duplicate while storing the rest, concurrent groups sharing ids store each id once without
deadlocking, a refused group leaves nothing behind, and events are stored in the group's
order."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime
from typing import Any

import pytest

from engine.config import IntakeSettings
from engine.database import Database
from engine.eventlog import INSERT_EVENTS
from engine.intake.batch_write import (
    PLAIN_MAX_EVENTS,
    WRITE_PLAIN,
    WRITE_PLAIN_CLAIMING,
    write_plain,
)
from engine.intake.rows import RequestPart
from engine.intake.validation import EventIn
from engine.intake.writer import EventsRejected, EventWriter, StoreResult
from tests.support.intake import fallbacks, store_two_while_held, stored_ids


def event(event_id: str | None, contact: str = "c0", poison: bool = False) -> EventIn:
    return EventIn("t", contact, None, {"text": "a\x00b"} if poison else {"id": event_id},
                   datetime.now(UTC), event_id)


async def store_together(writer: EventWriter, *requests: list[EventIn]) -> list[Any]:
    """The requests handed over at once (one group: the writer waits commit_max_wait)."""
    return await asyncio.gather(*(writer.store(r) for r in requests), return_exceptions=True)


@pytest.fixture
async def writer(database: Database) -> Any:
    writer = EventWriter(database, IntakeSettings(commit_max_wait=0.05))
    await writer.start()
    try:
        yield writer
    finally:
        await writer.stop()


async def test_a_group_repeating_a_stored_id_counts_it_and_stores_the_rest(
        database: Database, writer: EventWriter) -> None:
    assert await writer.store([event("old")]) == StoreResult(1, 0)
    before = fallbacks()
    results = await store_together(
        writer, [event("n1")], [event("old", "c1")], [event(None, "c2")], [event("n2")],
        [event("n1")],  # repeated earlier in the group: a duplicate, flagged by the writer
        [event("n3"), event("old"), event("n3"), event(None)])
    assert results == [StoreResult(1, 0), StoreResult(0, 1), StoreResult(1, 0),
                       StoreResult(1, 0), StoreResult(0, 1), StoreResult(2, 2)]
    assert fallbacks() == before + 1  # the optimistic statement failed on "old", nothing else
    events, ids = await stored_ids(database)
    assert ids == ["n1", "n2", "n3", "old"]
    assert events == ["n1", "n2", "n3", "old", None, None]  # each id once, id-less ones kept
    async with database.connection() as connection:
        contacts = await connection.fetchval(
            "SELECT array_agg(contact_id ORDER BY contact_id) FROM contacts")
    assert contacts == ["c0", "c1", "c2"]  # "c1" came only with a duplicate: still written


async def test_a_group_of_new_ids_needs_no_fallback_and_keeps_its_order(
        database: Database, writer: EventWriter) -> None:
    before = fallbacks()
    ids = [f"e{i}" for i in range(12)][::-1]  # the rows' order is not the ids' sort order
    results = await store_together(writer, *([event(i, f"c{n % 3}")] for n, i in
                                              enumerate(ids)))
    assert results == [StoreResult(1, 0)] * len(ids)
    assert fallbacks() == before
    async with database.connection() as connection:
        in_log = await connection.fetchval(
            "SELECT array_agg(event_id ORDER BY position) FROM events")
        properties = await connection.fetchval(
            "SELECT array_agg(properties->>'id' ORDER BY position) FROM events")
    assert in_log == properties == ids


async def test_write_plain_returns_the_ids_not_stored(database: Database) -> None:
    events = [event("a"), event("b", "c1")]
    assert await write_plain(database, [RequestPart("api", events, [False, False])],
                             events) == frozenset()
    again = [event("b"), event("c"), event(None)]
    assert await write_plain(database, [RequestPart("api", again, [False] * 3)],
                             again) == {"b"}
    events_in_log, ids = await stored_ids(database)
    assert ids == ["a", "b", "c"] and events_in_log == ["a", "b", "c", None]


async def test_concurrent_groups_sharing_ids_store_each_once_without_deadlock(
        database: Database, database_url: str) -> None:
    size = 12
    assert size < PLAIN_MAX_EVENTS
    shared = [f"s{i:02}" for i in range(size // 2)]
    first = shared + [f"x{i:02}" for i in range(size - len(shared))]
    second = shared + [f"y{i:02}" for i in range(size - len(shared))]
    contacts = ["c0", "c1", "c2"]  # new contacts, shared too
    before = fallbacks()
    results = await store_two_while_held(
        database, database_url, shared[0],
        *([event(i, contacts[k % 3]) for k, i in enumerate(ids)] for ids in (first, second)))
    assert sorted(results, key=lambda r: r.duplicates) == [
        StoreResult(size, 0), StoreResult(size - len(shared), len(shared))]
    assert fallbacks() == before + 1  # the later group found the earlier's committed ids
    events, ids = await stored_ids(database)
    assert events == ids == sorted(set(first) | set(second))


async def test_a_refused_group_repeating_a_stored_id_leaves_nothing_behind(
        database: Database, writer: EventWriter) -> None:
    assert await writer.store([event("k", "kept")]) == StoreResult(1, 0)
    outcome = await store_together(
        writer, [event("k", "new0"), event("r1", "new1"), event("r2", "new1", poison=True)])
    assert isinstance(outcome[0], EventsRejected) and outcome[0].index == 2, outcome
    events, ids = await stored_ids(database)
    assert events == ids == ["k"]
    async with database.connection() as connection:
        contacts = await connection.fetchval("SELECT array_agg(contact_id) FROM contacts")
    assert contacts == ["kept"]


def test_both_statements_store_rows_as_the_event_log_does() -> None:
    """The rows of $1 become events exactly as engine.eventlog.INSERT_EVENTS makes them."""
    def words(sql: str) -> str:
        return re.sub(r"\s+", " ", sql).strip()

    for part in ("SELECT r, n FROM jsonb_array_elements($1::jsonb) WITH ORDINALITY AS b(r, n)",
                 "INSERT INTO events (event_id, type, contact_id, email, properties, "
                 "occurred_at, source) SELECT r->>0, r->>1, r->>2, r->>3, r->4, "
                 "(r->>5)::timestamptz, r->>6 FROM batch",
                 "ORDER BY n"):
        assert part in words(INSERT_EVENTS)
        assert part in words(WRITE_PLAIN) and part in words(WRITE_PLAIN_CLAIMING)
