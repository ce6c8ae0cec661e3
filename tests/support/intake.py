"""Helpers for the intake's id-claim tests: the fallback counter, what the log and the id table
hold, and waiting until other sessions queue on a lock."""

from __future__ import annotations

import asyncio
from typing import Any

from engine.database import Database
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
