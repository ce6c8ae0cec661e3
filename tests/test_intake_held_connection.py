"""A group-commit writer keeps its connection between batches: the same backend serves batch
after batch, a batch leaves no setting behind on it, and after an error it goes back to the
pool (reset) and the next block gets a clean one; while held it plans generically, and the
pool's other users get the default back."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from engine.config import IntakeSettings
from engine.database import Database
from engine.errors import DatabaseError
from engine.intake.batch_write import write_plain
from engine.intake.held_connection import HeldConnection
from engine.intake.rows import RequestPart
from engine.intake.validation import EventIn
from engine.intake.writer import EventWriter, StoreResult


def event(contact: str, event_id: str) -> EventIn:
    return EventIn("t", contact, None, {}, datetime.now(UTC), event_id)


async def test_one_backend_serves_block_after_block_until_released(database: Database) -> None:
    held = HeldConnection(database)
    try:
        async with held.connection() as first:
            pid = first.get_server_pid()
        async with held.connection() as second:
            assert second.get_server_pid() == pid
        assert database.pool.get_idle_size() == database.pool.get_size() - 1
    finally:
        await held.release()
    assert database.pool.get_idle_size() == database.pool.get_size()


async def test_a_plain_batch_leaves_synchronous_commit_on(database: Database) -> None:
    held = HeldConnection(database)
    events = [event("c1", "e1"), event("c2", "e2")]
    try:
        not_stored = await write_plain(held, [RequestPart("api", events, [False, False])], events)
        async with held.connection() as connection:
            assert await connection.fetchval("SHOW synchronous_commit") == "on"
            assert await connection.fetchval("SELECT count(*) FROM events") == 2
    finally:
        await held.release()
    assert not_stored == frozenset()  # both stored


async def test_a_held_connection_plans_generically_and_the_pool_gets_the_default_back(
        database_url: str) -> None:
    database = await Database.connect(database_url, min_size=1, max_size=1)
    held = HeldConnection(database)
    try:
        async with held.connection() as connection:
            assert await connection.fetchval("SHOW plan_cache_mode") == "force_generic_plan"
            pid = connection.get_server_pid()
        await held.release()
        async with database.connection() as connection:  # the pool's only connection
            assert connection.get_server_pid() == pid
            assert await connection.fetchval("SHOW plan_cache_mode") == "auto"
    finally:
        await held.release()
        await database.close()


async def test_after_an_error_the_connection_is_reset_and_the_next_block_works(
        database: Database) -> None:
    held = HeldConnection(database)
    try:
        with pytest.raises(DatabaseError):
            async with held.connection() as connection:
                await connection.execute("SET application_name = 'left-behind'")
                await connection.execute("SELECT * FROM no_such_table")
        async with held.connection() as connection:
            assert await connection.fetchval("SHOW application_name") != "left-behind"
            assert await connection.fetchval("SELECT 1") == 1
    finally:
        await held.release()


async def test_the_writer_gives_its_connections_back_when_stopped(database: Database) -> None:
    writer = EventWriter(database, IntakeSettings(commit_max_wait=0.0))
    await writer.start()
    try:
        assert await writer.store([event("c1", "w1")]) == StoreResult(1, 0)
        assert await writer.store([event("c1", "w1")]) == StoreResult(0, 1)
    finally:
        await writer.stop()
    assert database.pool.get_idle_size() == database.pool.get_size()
