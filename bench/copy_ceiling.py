"""The batch intake's ceilings: raw asyncpg ``COPY`` of event-shaped rows into the same Postgres,
one commit per 1,000 rows, from a few connections, measured in the same run as Herald's figure.

* ``bare``: a table of the event's columns with no index, no identity, no partitions and no
  idempotency: what the database takes at most (the issue's ceiling).
* ``log``: tables of the log's own shape, made with ``LIKE`` from ``events`` (its identity, its
  ``txid`` and other defaults, both B-trees, partitioned by ``received_at``) and ``event_ids``
  (its primary key and BRIN index); each commit COPYs the ids, then the rows. That is what
  storing an idempotent event costs the database before any HTTP, JSON or contact work: the
  floor under Herald's batch path on this schema. Needs a migrated database.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg

from engine.database import connect_one

COLUMNS = ("event_id", "type", "contact_id", "email", "properties", "occurred_at", "source")
ROWS_PER_COMMIT = 1000


@dataclass(frozen=True, slots=True)
class CopyTarget:
    """Where a ceiling's rows go: the statements that create its tables, the table the rows are
    copied into and, for the log's shape, the table each row's id goes into first."""

    create: tuple[str, ...]
    rows_table: str
    ids_table: str | None = None

    @property
    def tables(self) -> tuple[str, ...]:
        return (self.rows_table, *([self.ids_table] if self.ids_table else []))


BARE = CopyTarget(
    create=("CREATE TABLE bench_copy_ceiling (event_id text, type text NOT NULL, "
            "contact_id text NOT NULL, email text, properties jsonb NOT NULL, "
            "occurred_at timestamptz NOT NULL, received_at timestamptz NOT NULL DEFAULT now(), "
            "source text NOT NULL)",),
    rows_table="bench_copy_ceiling")
LOG = CopyTarget(
    create=("CREATE TABLE bench_copy_log (LIKE events INCLUDING DEFAULTS INCLUDING IDENTITY "
            "INCLUDING INDEXES) PARTITION BY RANGE (received_at)",
            "CREATE TABLE bench_copy_log_default PARTITION OF bench_copy_log DEFAULT",
            "CREATE TABLE bench_copy_log_ids (LIKE event_ids INCLUDING ALL)"),
    rows_table="bench_copy_log", ids_table="bench_copy_log_ids")
TARGETS = {"bare": BARE, "log": LOG}


async def create_tables(connection: asyncpg.Connection, target: CopyTarget) -> None:
    """Create ``target``'s tables anew (any left by an earlier run dropped first)."""
    await drop_tables(connection, target)
    for statement in target.create:
        await connection.execute(statement)


async def drop_tables(connection: asyncpg.Connection, target: CopyTarget) -> None:
    for table in target.tables:
        await connection.execute(f"DROP TABLE IF EXISTS {table}")


async def tables_left(url: str) -> int:
    """How many relations a ceiling's run left behind (tables, partitions, indexes): 0."""
    connection = await connect_one(url)
    try:
        left: int = await connection.fetchval(
            "SELECT count(*) FROM pg_class WHERE relname LIKE 'bench\\_copy%'")
    finally:
        await connection.close()
    return left


async def copy_rows(url: str, duration: float, connections: int = 2,
                    contacts: int = 100_000, committed: Callable[[], None] | None = None,
                    target: CopyTarget = BARE) -> tuple[int, float]:
    """Rows copied by ``connections`` connections into new tables of ``target`` for
    ``duration`` seconds, and the seconds it took (from the first COPY to the last commit).
    ``committed`` is called after the last commit, before the connections close (their
    backends then exit)."""
    setup = await connect_one(url)
    try:
        await create_tables(setup, target)
        counter = itertools.count()
        workers = [await connect_one(url) for _ in range(connections)]
        try:
            deadline = time.perf_counter() + duration
            started = time.perf_counter()
            copied = await asyncio.gather(*(_copy_until(w, deadline, counter, contacts, target)
                                            for w in workers))
            elapsed = time.perf_counter() - started
            if committed is not None:
                committed()
        finally:
            for worker in workers:
                await worker.close()
        await drop_tables(setup, target)
    finally:
        await setup.close()
    return sum(copied), elapsed


def event_rows(counter: itertools.count[int], contacts: int) -> list[tuple[object, ...]]:
    """One commit's rows, shaped as the bench's batch events (``COLUMNS``), ids unique."""
    now = datetime.now(UTC)
    rows: list[tuple[object, ...]] = []
    for _ in range(ROWS_PER_COMMIT):
        n = next(counter)
        rows.append((f"c-{n}", "page_viewed", f"c{n % contacts}", None,
                     {"path": f"/p/{n % 1000}"}, now, "api"))
    return rows


async def copy_commit(connection: asyncpg.Connection, rows: list[tuple[object, ...]],
                      target: CopyTarget) -> None:
    """One commit: the rows alone (autocommitted), or for the log's shape the ids and then the
    rows in one transaction."""
    if target.ids_table is None:
        await connection.copy_records_to_table(target.rows_table, records=rows,
                                               columns=COLUMNS)
        return
    async with connection.transaction():
        await connection.copy_records_to_table(target.ids_table,
                                               records=[(row[0],) for row in rows],
                                               columns=("event_id",))
        await connection.copy_records_to_table(target.rows_table, records=rows,
                                               columns=COLUMNS)


async def _copy_until(connection: asyncpg.Connection, deadline: float,
                      counter: itertools.count[int], contacts: int, target: CopyTarget) -> int:
    copied = 0
    while time.perf_counter() < deadline:
        rows = event_rows(counter, contacts)
        await copy_commit(connection, rows, target)
        copied += len(rows)
    return copied
