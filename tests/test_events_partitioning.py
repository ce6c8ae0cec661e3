"""The partitioned event log (engine migration 0006): converting a populated old-layout table,
idempotency across partitions, and the pure partition planning."""

from __future__ import annotations

import asyncio
import shutil
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import asyncpg

from automation.migrations import AUTOMATION_MIGRATIONS
from engine.database import Database, connect_one
from engine.database_creation import create_database
from engine.db_errors import classify
from engine.errors import DatabaseRejected
from engine.eventlog import (
    COPY_MIN_ROWS,
    EVENTS_CHANNEL,
    LogEvent,
    append_events,
    append_rows,
    append_typed,
)
from engine.eventlog_reader import LogCursor, read_after
from engine.migrations import ENGINE_MIGRATIONS, MigrationSource, apply_migrations
from engine.partitions import Partition, aligned_start, expired, list_partitions, to_create
from mta.migrations import MTA_MIGRATIONS
from tests.support import postgres as test_postgres

OLD_INSERT = """
    INSERT INTO events (event_id, type, contact_id, properties, occurred_at, received_at,
                        source)
    VALUES ($1, $2, $3, '{}'::jsonb, $4, $4, 'api')
"""


def event(kind: str, event_id: str | None = None) -> LogEvent:
    return LogEvent(kind, "c1", None, {}, datetime.now(UTC), "test", event_id)


async def _old_layout_database(test_databases: test_postgres.TestDatabases, tmp_path: Path) -> str:
    """A database migrated only to engine 0005 (events not partitioned)."""
    old = tmp_path / "engine_old"
    old.mkdir()
    for path in sorted(ENGINE_MIGRATIONS.directory.glob("*.sql")):
        if int(path.name[:4]) <= 5:
            shutil.copy(path, old / path.name)
    name = f"herald_test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(test_databases.admin_url)
    try:
        await create_database(admin, name)
    finally:
        await admin.close()
    url = test_postgres.with_database(test_databases.admin_url, name)
    connection = await asyncpg.connect(url)
    try:
        await apply_migrations(connection, [MigrationSource("engine", old), MTA_MIGRATIONS,
                                            AUTOMATION_MIGRATIONS])
    finally:
        await connection.close()
    return url


async def test_migration_keeps_every_event_in_order_and_followers_continue(
        test_databases: test_postgres.TestDatabases, tmp_path: Path) -> None:
    url = await _old_layout_database(test_databases, tmp_path)
    connection = await connect_one(url)
    try:
        assert await connection.fetchval(
            "SELECT relkind::text FROM pg_class WHERE relname = 'events'") == "r"
        now = datetime.now(UTC)
        # Events received over six weeks, some with ids, in several transactions.
        for i in range(30):
            await connection.execute(OLD_INSERT, f"id-{i}" if i % 3 else None, f"t{i}",
                                     f"c{i % 4}", now - timedelta(days=42 - i))
        # A position taken by a transaction that rolled back: positions must stay past it.
        transaction = connection.transaction()
        await transaction.start()
        await connection.execute(OLD_INSERT, "rolled-back", "gone", "c0", now)
        await transaction.rollback()
        before = await connection.fetch(
            "SELECT position, txid::text AS txid, event_id, type, received_at FROM events "
            "ORDER BY txid, position")
        follower = LogCursor(int(before[11]["txid"]), before[11]["position"])
        sequence_last = await connection.fetchval("SELECT last_value FROM events_position_seq")

        await apply_migrations(connection, [ENGINE_MIGRATIONS, MTA_MIGRATIONS,
                                            AUTOMATION_MIGRATIONS])

        assert await connection.fetchval(
            "SELECT relkind::text FROM pg_class WHERE relname = 'events'") == "p"
        after = await connection.fetch(
            "SELECT position, txid::text AS txid, event_id, type, received_at FROM events "
            "ORDER BY txid, position")
        assert [tuple(r) for r in after] == [tuple(r) for r in before]
        assert await connection.fetchval("SELECT count(*) FROM events_default") == 0
        weeks = {aligned_start(r["received_at"].date(), 7) for r in before}
        names = {p.name for p in await list_partitions(connection)}
        assert {f"events_p{week:%Y%m%d}" for week in weeks} <= names

        # The follower continues from its cursor: the events after it, in log order (the
        # reader stops below the cluster's oldest open transaction, which on a shared server
        # may be someone else's, so what it returns now is a prefix of them).
        expected = [r["type"] for r in before[12:]]
        after_cursor = await connection.fetch(
            "SELECT type FROM events WHERE (txid, position) > ($1::text::xid8, $2) "
            "ORDER BY txid, position", str(follower.txid), follower.position)
        assert [r["type"] for r in after_cursor] == expected
        rest = await read_after(connection, follower, 100)
        assert [e.type for e in rest] == expected[:len(rest)]
        # New events follow on: positions past the old sequence, ids still deduplicated.
        stored = await append_events(connection, [event("new", "fresh"), event("dup", "id-1")])
        assert stored == {"fresh"}
        position = await connection.fetchval("SELECT position FROM events WHERE type = 'new'")
        assert position > sequence_last
        assert await connection.fetchval(
            "SELECT count(*) FROM events WHERE event_id = 'id-1'") == 1
    finally:
        await connection.close()
        await test_databases.drop(url)


async def test_the_same_event_id_on_two_different_days_is_stored_once(
        database: Database) -> None:
    async with database.transaction() as connection:
        assert await append_rows(connection, [event("first", "order-7").row()]) == {"order-7"}
        # Received ten days ago: the row (and its id) now live in another partition.
        await connection.execute("UPDATE events SET received_at = received_at - interval "
                                 "'10 days' WHERE event_id = 'order-7'")
        await connection.execute("UPDATE event_ids SET received_at = received_at - interval "
                                 "'10 days' WHERE event_id = 'order-7'")
    async with database.connection() as connection:
        first_partition = await connection.fetchval(
            "SELECT tableoid::regclass::text FROM events WHERE event_id = 'order-7'")
        assert await append_rows(connection, [event("again", "order-7").row(),
                                              event("other", "order-8").row()]) == {"order-8"}
        rows = await connection.fetch(
            "SELECT type, tableoid::regclass::text AS part FROM events "
            "WHERE event_id = 'order-7'")
        current = await connection.fetchval(
            "SELECT tableoid::regclass::text FROM events WHERE event_id = 'order-8'")
    assert [r["type"] for r in rows] == ["first"]
    assert first_partition != current


async def test_a_batch_repeating_an_id_stores_its_first_occurrence(database: Database) -> None:
    async with database.connection() as connection:
        stored = await append_rows(connection, [event("a", "x").row(), event("b", None).row(),
                                                event("c", "x").row()])
        types = await connection.fetch("SELECT type FROM events ORDER BY position")
    assert stored == {"x"}
    assert [r["type"] for r in types] == ["a", "b"]


def _part(start: date, days: int = 7) -> Partition:
    begin = datetime(start.year, start.month, start.day, tzinfo=UTC)
    return Partition(f"events_p{start:%Y%m%d}", begin, begin + timedelta(days=days))


def test_weekly_partitions_start_on_mondays_and_continue_from_the_newest() -> None:
    assert aligned_start(date(2026, 12, 2), 7) == date(2026, 11, 30)  # a Wednesday
    assert aligned_start(date(2026, 11, 30), 7) == date(2026, 11, 30)
    assert aligned_start(date(2026, 12, 2), 1) == date(2026, 12, 2)
    now = datetime(2026, 12, 2, 12, tzinfo=UTC)
    planned = to_create([], now, 7, 2)
    assert [p.name for p in planned] == ["events_p20261130", "events_p20261207",
                                         "events_p20261214"]
    assert to_create(planned, now, 7, 2) == []
    # A later check, with the width changed to one day: no gap behind the newest partition.
    later = to_create(planned, now + timedelta(days=21), 1, 1)
    assert later[0].start == planned[-1].end
    assert later[-1].end == datetime(2026, 12, 25, tzinfo=UTC)


def test_expired_partitions_are_those_entirely_before_the_cutoff() -> None:
    parts = [_part(date(2026, 11, 2)), _part(date(2026, 11, 9)), _part(date(2026, 11, 16))]
    cutoff = datetime(2026, 11, 16, tzinfo=UTC)
    assert [p.name for p in expired(parts, cutoff)] == ["events_p20261102", "events_p20261109"]
    assert expired(parts, cutoff - timedelta(seconds=1)) == [parts[0]]


async def test_a_large_batch_is_copied_with_the_same_idempotency(database: Database) -> None:
    count = COPY_MIN_ROWS * 2
    async with database.transaction() as connection:
        assert await append_rows(connection, [event("before", "k-5").row()]) == {"k-5"}
    fresh = count - 10
    rows = [event(f"t{i}", None if i % 4 == 0 else f"k-{i}").row() for i in range(fresh)]
    rows += [event(f"again{j}", f"k-{j}").row() for j in (1, 2, 3, 5, 6, 7, 9, 10, 11, 13)]
    async with database.transaction() as connection:
        stored = await append_typed(connection, rows)
    async with database.connection() as connection:
        types = [r["type"] for r in await connection.fetch(
            "SELECT type FROM events ORDER BY position")]
        again = await append_typed(connection, rows[:COPY_MIN_ROWS])
    # Repeats later in the batch are not stored, nor k-5, which was in the log already.
    assert types == ["before", *(f"t{i}" for i in range(fresh) if i != 5)]
    assert stored == {f"k-{i}" for i in range(fresh) if i % 4 and i != 5}
    assert again == set()


async def test_a_large_batch_with_a_value_postgres_refuses_is_refused_whole(
        database: Database) -> None:
    rows = [event(f"t{i}", f"r-{i}").row() for i in range(COPY_MIN_ROWS + 6)]
    rows[COPY_MIN_ROWS] = event("bad\x00type", "r-bad").row()
    caught = None
    try:
        async with database.transaction() as connection:
            await append_typed(connection, rows)
    except Exception as exc:  # the pool's boundary translates it
        caught = classify(exc)
    assert isinstance(caught, DatabaseRejected)
    async with database.connection() as connection:
        assert await connection.fetchval("SELECT count(*) FROM events") == 0
        assert await connection.fetchval("SELECT count(*) FROM event_ids") == 0


async def test_a_copied_batch_wakes_followers_at_commit(database: Database,
                                                       database_url: str) -> None:
    listener = await connect_one(database_url)
    woken = asyncio.Event()
    try:
        await listener.add_listener(EVENTS_CHANNEL, lambda *_: woken.set())
        async with database.transaction() as connection:
            await append_typed(connection, [event(f"n{i}").row()
                                            for i in range(COPY_MIN_ROWS)])
            assert not woken.is_set()
        await asyncio.wait_for(woken.wait(), 10)
    finally:
        await listener.close()


async def test_a_large_batch_with_a_value_the_encoder_refuses_is_rejected(
        database: Database) -> None:
    rows = [event(f"t{i}").row() for i in range(COPY_MIN_ROWS)]
    rows[3] = (None, "t", "c1", None, {"bad": {1, 2}}, datetime.now(UTC), "test")
    caught = None
    try:
        async with database.transaction() as connection:
            await append_typed(connection, rows)
    except DatabaseRejected as exc:
        caught = exc
    assert caught is not None
    async with database.connection() as connection:
        assert await connection.fetchval("SELECT count(*) FROM events") == 0
