"""The batch intake's ceiling: raw asyncpg ``COPY`` of event-shaped rows into the same Postgres,
one commit per 1,000 rows, from a few connections. No HTTP, no JSON parsing, no indexes, no
idempotency: what the database takes at most, measured in the same run as Herald's figure."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
from datetime import UTC, datetime

import asyncpg

from engine.database import connect_one

TABLE = "bench_copy_ceiling"
COLUMNS = ("event_id", "type", "contact_id", "email", "properties", "occurred_at", "source")
ROWS_PER_COMMIT = 1000


async def copy_rows(url: str, duration: float, connections: int = 2,
                    contacts: int = 100_000, committed: Callable[[], None] | None = None
                    ) -> tuple[int, float]:
    """Rows copied by ``connections`` connections into a new bare table for ``duration``
    seconds, and the seconds it took (from the first COPY to the last commit). ``committed`` is
    called after the last commit, before the connections close (their backends then exit)."""
    setup = await connect_one(url)
    try:
        await setup.execute(f"DROP TABLE IF EXISTS {TABLE}")
        await setup.execute(
            f"CREATE TABLE {TABLE} (event_id text, type text NOT NULL, contact_id text NOT NULL, "
            "email text, properties jsonb NOT NULL, occurred_at timestamptz NOT NULL, "
            "received_at timestamptz NOT NULL DEFAULT now(), source text NOT NULL)")
        counter = itertools.count()
        workers = [await connect_one(url) for _ in range(connections)]
        try:
            deadline = time.perf_counter() + duration
            started = time.perf_counter()
            copied = await asyncio.gather(*(_copy_until(w, deadline, counter, contacts)
                                            for w in workers))
            elapsed = time.perf_counter() - started
            if committed is not None:
                committed()
        finally:
            for worker in workers:
                await worker.close()
        await setup.execute(f"DROP TABLE {TABLE}")
    finally:
        await setup.close()
    return sum(copied), elapsed


async def _copy_until(connection: asyncpg.Connection, deadline: float,
                      counter: itertools.count[int], contacts: int) -> int:
    copied = 0
    while time.perf_counter() < deadline:
        now = datetime.now(UTC)
        rows = []
        for _ in range(ROWS_PER_COMMIT):
            n = next(counter)
            rows.append((f"c-{n}", "page_viewed", f"c{n % contacts}", None,
                         {"path": f"/p/{n % 1000}"}, now, "api"))
        await connection.copy_records_to_table(TABLE, records=rows, columns=COLUMNS)
        copied += len(rows)
    return copied
