"""The event log's time partitions: created ahead of time, dropped whole when past retention.

``events`` is range-partitioned on ``received_at`` (engine migration 0006). Partitions are
``width_days`` wide and start on Mondays (UTC) for a 7-day width; each new partition starts
where the newest one ends, so a changed width applies from the next partition on. Rows no
partition covers land in ``events_default``; creating the partition for their range moves them
in first. Old partitions are detached and dropped (never row deletes), and the ids of their
events are trimmed from ``event_ids``.

Statements that lock the parent table run with a short ``lock_timeout``: maintenance gives up
(and tries again at its next check) rather than queue intake behind a long reader.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

import asyncpg

from engine.eventlog_reader import LogCursor

DEFAULT_PARTITION = "events_default"
_ANCHOR = date(1970, 1, 5)  # a Monday
_NAME = re.compile(r"events_p[0-9]{8}\Z")
_BOUND = re.compile(r"FROM \('([^']+)'\) TO \('([^']+)'\)")
LOCK_TIMEOUT = "2s"
ID_TRIM_BATCH = 10_000


@dataclass(frozen=True, slots=True)
class Partition:
    name: str
    start: datetime
    end: datetime


# --- pure planning ---------------------------------------------------------------------------

def aligned_start(day: date, width_days: int) -> date:
    """The first day of the ``width_days`` period holding ``day`` (periods count from a
    Monday, so 7-day partitions start on Mondays)."""
    return _ANCHOR + timedelta(days=(day - _ANCHOR).days // width_days * width_days)


def partition_for(start: date, width_days: int) -> Partition:
    begin = datetime.combine(start, time(), UTC)
    return Partition(f"events_p{start:%Y%m%d}", begin, begin + timedelta(days=width_days))


def to_create(existing: Sequence[Partition], now: datetime, width_days: int,
              ahead: int) -> list[Partition]:
    """The partitions missing so that the current period and ``ahead`` more are covered,
    each starting where the newest existing one ends (no gaps behind the newest)."""
    today = now.astimezone(UTC).date()
    current = aligned_start(today, width_days)
    horizon = datetime.combine(current + timedelta(days=width_days * (ahead + 1)), time(), UTC)
    cursor = max((p.end for p in existing), default=datetime.combine(current, time(), UTC))
    planned = []
    while cursor < horizon:
        start = cursor.date()
        part = partition_for(start, width_days)
        planned.append(part)
        cursor = part.end
    return planned


def expired(existing: Sequence[Partition], cutoff: datetime) -> list[Partition]:
    """Partitions whose every row is older than ``cutoff``, oldest first."""
    return sorted((p for p in existing if p.end <= cutoff), key=lambda p: p.start)


def parse_bound(name: str, bound: str) -> Partition | None:
    """A partition from ``pg_get_expr(relpartbound)``; None for the default or a foreign one."""
    match = _BOUND.search(bound)
    if match is None or not _NAME.match(name):
        return None
    return Partition(name, _timestamp(match.group(1)), _timestamp(match.group(2)))


def _timestamp(text: str) -> datetime:
    value = datetime.fromisoformat(text.replace(" ", "T"))
    return value if value.tzinfo else value.replace(tzinfo=UTC)


# --- I/O -------------------------------------------------------------------------------------

LIST_PARTITIONS = """
    SELECT c.relname AS name, pg_get_expr(c.relpartbound, c.oid) AS bound
    FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
    WHERE i.inhparent = 'events'::regclass
"""


async def list_partitions(connection: asyncpg.Connection) -> list[Partition]:
    rows = await connection.fetch(LIST_PARTITIONS)
    parts = [parse_bound(row["name"], row["bound"]) for row in rows]
    return sorted((p for p in parts if p is not None), key=lambda p: p.start)


async def size_of(connection: asyncpg.Connection, name: str) -> int:
    return int(await connection.fetchval("SELECT pg_total_relation_size($1::regclass)", name))


async def default_rows(connection: asyncpg.Connection, part: Partition) -> int:
    return int(await connection.fetchval(
        f"SELECT count(*) FROM {DEFAULT_PARTITION} WHERE received_at >= $1 AND received_at < $2",
        part.start, part.end))


async def create(connection: asyncpg.Connection, part: Partition) -> int:
    """Create ``part`` as a table, move the default partition's rows of its range into it and
    attach it; returns how many rows were moved."""
    async with connection.transaction():
        await connection.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
        moved = 0
        if await default_rows(connection, part):
            # No insert may reach the default partition between the move and the attach.
            await connection.execute(f"LOCK TABLE {DEFAULT_PARTITION} IN EXCLUSIVE MODE")
            await connection.execute(
                f"CREATE TABLE {part.name} (LIKE events INCLUDING DEFAULTS)")
            status = await connection.execute(
                f"WITH moved AS (DELETE FROM {DEFAULT_PARTITION} WHERE received_at >= $1 "
                f"AND received_at < $2 RETURNING *) INSERT INTO {part.name} SELECT * FROM moved",
                part.start, part.end)
            moved = int(status.split()[-1])
        else:
            await connection.execute(
                f"CREATE TABLE {part.name} (LIKE events INCLUDING DEFAULTS)")
        # ATTACH (unlike CREATE ... PARTITION OF) takes no lock that blocks inserts on events.
        await connection.execute(
            f"ALTER TABLE events ATTACH PARTITION {part.name} "
            f"FOR VALUES FROM ('{part.start.isoformat()}') TO ('{part.end.isoformat()}')")
    return moved


async def unread_by(connection: asyncpg.Connection, part: Partition,
                    cursor: LogCursor) -> bool:
    """Whether ``part`` holds an event a follower at ``cursor`` has not read yet."""
    return bool(await connection.fetchval(
        f"SELECT EXISTS (SELECT 1 FROM {part.name} "
        f"WHERE (txid, position) > ($1::text::xid8, $2))", str(cursor.txid), cursor.position))


async def drop(connection: asyncpg.Connection, part: Partition) -> None:
    """Detach and drop ``part`` in one transaction, then trim the ids of its events."""
    async with connection.transaction():
        await connection.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
        await connection.execute(f"ALTER TABLE events DETACH PARTITION {part.name}")
        await connection.execute(f"DROP TABLE {part.name}")
    await trim_event_ids(connection, part.end)


async def trim_event_ids(connection: asyncpg.Connection, before: datetime) -> int:
    """Delete the ids of events received before ``before``, in small transactions."""
    total = 0
    while True:
        status = await connection.execute(
            "DELETE FROM event_ids WHERE ctid = ANY(ARRAY("
            "SELECT ctid FROM event_ids WHERE received_at < $1 LIMIT $2))",
            before, ID_TRIM_BATCH)
        count = int(status.split()[-1])
        total += count
        if count < ID_TRIM_BATCH:
            return total
