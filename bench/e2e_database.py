"""The database side of ``herald bench e2e``: its URL (embedded and measured, or given), the
bench's API key, and the figures read before and after the run, each by ONE query outside the
measured work (sizes, with the part [retention] drops, and WAL counters; queue states; when
each message was queued).
"""

from __future__ import annotations

import asyncpg

from bench.mta import wait_drained
from engine.keys import create_key

# The database's size and the part of it that [retention] drops (herald/retention.py): the
# event log's partitions with the ids of their events (dropped after `events`), and the
# messages' bodies (dropped after `message_bodies`; pg_column_size is their stored size,
# compressed or TOASTed, read from the rows without detoasting). The rest stays forever.
SIZES = """
    SELECT pg_database_size(current_database()) AS size,
           (SELECT coalesce(sum(pg_total_relation_size(relid)), 0)
            FROM pg_partition_tree('events') WHERE isleaf)
           + pg_total_relation_size('event_ids') AS events,
           (SELECT coalesce(sum(pg_column_size(body)), 0) FROM outbound_messages) AS bodies
"""


async def database_figures(url: str) -> dict[str, int]:
    connection = await asyncpg.connect(url)
    try:
        sizes = await connection.fetchrow(SIZES)
        wal = await connection.fetchrow("SELECT wal_bytes, wal_sync, wal_write FROM pg_stat_wal")
    finally:
        await connection.close()
    return {"bytes": int(sizes["size"]), "events_bytes": int(sizes["events"]),
            "body_bytes": int(sizes["bodies"]), "wal_bytes": int(wal["wal_bytes"]),
            "wal_syncs": int(wal["wal_sync"]), "wal_writes": int(wal["wal_write"])}


SETTLE_TIMEOUT = 15.0


async def wait_settled(url: str, timeout: float) -> None:
    """Until nothing is queued or deferred (an EXISTS on the queue's partial index, cheap), or
    ``timeout``: the outcomes the sink has given are then recorded in the database."""
    connection = await asyncpg.connect(url)
    try:
        await wait_drained(connection, timeout)
    except TimeoutError:
        pass  # reported: queue_states shows what still waits
    finally:
        await connection.close()


async def queue_states(url: str) -> dict[str, int]:
    """One query at the end (never polled while measuring)."""
    connection = await asyncpg.connect(url)
    try:
        rows = await connection.fetch(
            "SELECT state, count(*) AS n FROM outbound_messages GROUP BY state")
    finally:
        await connection.close()
    return {row["state"]: int(row["n"]) for row in rows}


async def enqueue_times(url: str, run_id: str) -> dict[int, float]:
    """seq -> when its message was committed to the queue (one query, after the run; the
    contact id is ``RUN-SEQ``)."""
    connection = await asyncpg.connect(url)
    try:
        rows = await connection.fetch(
            "SELECT contact_id, extract(epoch FROM created_at)::float8 AS at "
            "FROM outbound_messages WHERE contact_id LIKE $1", f"{run_id}-%")
    finally:
        await connection.close()
    return {int(row["contact_id"].rpartition("-")[2]): float(row["at"]) for row in rows}


async def bench_key(url: str) -> str:
    connection = await asyncpg.connect(url)
    try:
        key = await create_key(connection, "bench e2e", ("events:write",))
    finally:
        await connection.close()
    return key.token
