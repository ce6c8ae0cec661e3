"""Helpers for the intake's id-claim tests: the fallback counter, what the log and the id table
hold, waiting until other sessions queue on a lock, and two writers storing at once while an
id is held."""

from __future__ import annotations

import asyncio
from typing import Any

from engine.config import IntakeSettings
from engine.database import Database, connect_one
from engine.intake.validation import EventIn
from engine.intake.writer import EventWriter, StoreResult
from engine.metrics import REGISTRY


def fallbacks() -> float:
    """How many plain batches were written again with per-id claims so far."""
    return REGISTRY.get_sample_value("herald_intake_claim_fallbacks_total") or 0.0


async def stored_ids(database: Database) -> tuple[list[Any], list[Any]]:
    """Every stored event's id (with repeats, if any; nulls last) and every claimed id."""
    async with database.connection() as connection:
        events = await connection.fetchval(
            "SELECT coalesce(array_agg(event_id ORDER BY event_id), '{}') FROM events")
        ids = await connection.fetchval(
            "SELECT coalesce(array_agg(event_id ORDER BY event_id), '{}') FROM event_ids")
    return events, ids


async def wait_for_lock_waiters(connection: Any, count: int) -> None:
    """Until ``count`` other sessions of this database wait on a lock (bounded). The activity
    view is read afresh each time (inside a transaction it is read once and kept)."""
    async with asyncio.timeout(10):
        while True:
            await connection.execute("SELECT pg_stat_clear_snapshot()")
            if await connection.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()") >= count:
                return
            await asyncio.sleep(0.01)


async def store_two_while_held(database: Database, database_url: str, held_id: str,
                               first: list[EventIn], second: list[EventIn]
                               ) -> list[StoreResult]:
    """``first`` and ``second`` stored at once by two writers while another session holds
    ``held_id`` in ``event_ids``, uncommitted: whichever reaches its ids first waits on it, the
    other on the first's contacts (or its ids), so both are in flight when it rolls back."""
    writers = [EventWriter(database, IntakeSettings(commit_max_wait=0.0)) for _ in range(2)]
    for writer in writers:
        await writer.start()
    blocker = await connect_one(database_url)
    try:
        await blocker.execute("BEGIN")
        await blocker.execute("INSERT INTO event_ids (event_id) VALUES ($1)", held_id)
        stores = [asyncio.create_task(writer.store(events))
                  for writer, events in zip(writers, (first, second), strict=True)]
        await wait_for_lock_waiters(blocker, 2)
        await blocker.execute("ROLLBACK")
        return await asyncio.wait_for(asyncio.gather(*stores), 30)
    finally:
        await blocker.close()
        for writer in writers:
            await writer.stop()
