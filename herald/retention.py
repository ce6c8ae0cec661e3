"""Retention: the ``[retention]`` section, one pass over the database, and the task that runs it.

A pass (``herald retention run``, or every ``check_interval`` in the process that has the
``mta`` role) does three things under one advisory lock, so two processes never race:

1. creates the event log's partitions ahead of time (engine.partitions), moving rows that
   landed in the default partition into their new partition;
2. drops whole partitions older than ``events`` (DETACH + DROP, never row deletes) and the ids
   of their events; a partition holding an event a follower (the automation core, the stats
   follower) has not read yet is kept (and logged) until it has;
3. drops the bodies of messages that have been in a final state for ``message_bodies``
   (mta.queue.retention); their rows stay.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import asyncpg

from engine import partitions
from engine.database import Database, connect_one
from engine.db_errors import database_errors
from engine.errors import DatabaseError
from engine.eventlog_reader import LogCursor
from engine.settings_loader import duration
from mta.queue import retention as bodies

log = logging.getLogger("herald.retention")

_LOCK_KEY = 0x6865_7265_7465  # "herete": retention's session advisory lock
DAY = 86400.0


@dataclass(frozen=True, slots=True)
class RetentionSettings:
    events: float = duration("400d")  # events older than this are dropped; 0 keeps them all
    message_bodies: float = duration("30d")  # after a message's final state; 0 keeps them
    check_interval: float = duration("1h")
    partition_days: int = 7  # width of the event log's partitions (applies to new ones)
    partitions_ahead: int = 4  # partitions created beyond the current one

    def __post_init__(self) -> None:
        if self.events and self.events < DAY:
            raise ValueError("events must be at least 1d (or 0 to keep every event)")
        if self.message_bodies and self.message_bodies < 3600:
            raise ValueError("message_bodies must be at least 1h (or 0 to keep every body)")
        if not 60 <= self.check_interval <= DAY:
            raise ValueError("check_interval must be between 1m and 1d")
        if not 1 <= self.partition_days <= 31:
            raise ValueError("partition_days must be between 1 and 31")
        if not 1 <= self.partitions_ahead <= 52:
            raise ValueError("partitions_ahead must be between 1 and 52")


@dataclass(slots=True)
class DroppedPartition:
    name: str
    start: datetime
    end: datetime
    bytes: int


@dataclass(slots=True)
class RetentionReport:
    dry_run: bool
    busy: bool = False  # another process holds the retention lock: nothing was done
    created: list[str] = field(default_factory=list)
    moved_rows: int = 0  # rows moved out of the default partition
    events_before: datetime | None = None
    dropped: list[DroppedPartition] = field(default_factory=list)
    kept_unread: list[str] = field(default_factory=list)  # not read by automation yet
    postponed: list[str] = field(default_factory=list)  # lock timeout: tried next time
    event_ids_trimmed: int = 0
    bodies_before: datetime | None = None
    bodies_dropped: int = 0
    body_bytes: int | None = None  # dry run: the length of the bodies that would go


async def run_pass(connection: asyncpg.Connection, settings: RetentionSettings,
                   now: datetime | None = None, dry_run: bool = False) -> RetentionReport:
    """One retention pass on ``connection`` (raw asyncpg: wrap in ``database_errors``)."""
    now = now or datetime.now(UTC)
    report = RetentionReport(dry_run)
    if not await connection.fetchval("SELECT pg_try_advisory_lock($1)", _LOCK_KEY):
        report.busy = True
        return report
    try:
        await _partitions(connection, settings, now, report)
        await _bodies(connection, settings, now, report)
    finally:
        await connection.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)
    return report


async def _partitions(connection: asyncpg.Connection, settings: RetentionSettings,
                      now: datetime, report: RetentionReport) -> None:
    existing = await partitions.list_partitions(connection)
    for part in partitions.to_create(existing, now, settings.partition_days,
                                     settings.partitions_ahead):
        report.created.append(part.name)
        if report.dry_run:
            report.moved_rows += await partitions.default_rows(connection, part)
            continue
        try:
            report.moved_rows += await partitions.create(connection, part)
        except asyncpg.LockNotAvailableError:
            report.postponed.append(part.name)
            report.created.pop()
            break  # the next ones start where this one would have ended
    if not settings.events:
        return
    cutoff = now - timedelta(seconds=settings.events)
    report.events_before = cutoff
    follower = await follower_cursor(connection)
    for part in partitions.expired(existing, cutoff):
        if follower is not None and await partitions.unread_by(connection, part, follower):
            report.kept_unread.append(part.name)
            continue
        size = await partitions.size_of(connection, part.name)
        if not report.dry_run:
            try:
                await partitions.drop(connection, part)
            except asyncpg.LockNotAvailableError:
                report.postponed.append(part.name)
                continue
        report.dropped.append(DroppedPartition(part.name, part.start, part.end, size))
    if not report.dry_run and report.dropped:
        # Ids of events outside any partition that is left (the default one's old rows).
        report.event_ids_trimmed = await partitions.trim_event_ids(
            connection, min(part.end for part in report.dropped))


async def follower_cursor(connection: asyncpg.Connection) -> LogCursor | None:
    """The oldest cursor of the event log's followers: the automation core's snapshot, the
    stats follower (both in the automation role) and the outcome-webhook follower (outbox
    role); None when none of them ever ran."""
    row = await connection.fetchrow(
        "SELECT cursor_txid, cursor_pos FROM automation_state WHERE id = 1")
    stats = await connection.fetchrow(
        "SELECT events_txid, events_pos FROM workflow_stats_state WHERE id = 1")
    outbox = await connection.fetchrow(
        "SELECT cursor_txid, cursor_pos FROM outbox_follower WHERE id = 1")
    cursors = [] if row is None else [LogCursor(row["cursor_txid"], row["cursor_pos"])]
    if stats is not None and (row is not None or stats["events_txid"] or stats["events_pos"]):
        cursors.append(LogCursor(stats["events_txid"], stats["events_pos"]))
    if outbox is not None:
        cursors.append(LogCursor(outbox["cursor_txid"], outbox["cursor_pos"]))
    return min(cursors, default=None)


async def _bodies(connection: asyncpg.Connection, settings: RetentionSettings,
                  now: datetime, report: RetentionReport) -> None:
    if not settings.message_bodies:
        return
    cutoff = now - timedelta(seconds=settings.message_bodies)
    report.bodies_before = cutoff
    if report.dry_run:
        due = await bodies.bodies_due(connection, cutoff)
        report.bodies_dropped, report.body_bytes = due.messages, due.bytes
    else:
        report.bodies_dropped = await bodies.drop_bodies(connection, cutoff)


async def run_once(url: str, settings: RetentionSettings, dry_run: bool = False,
                   now: datetime | None = None) -> RetentionReport:
    """A pass on a connection of its own (the session lock lives as long as it)."""
    connection = await connect_one(url)
    try:
        with database_errors():
            return await run_pass(connection, settings, now, dry_run)
    finally:
        with contextlib.suppress(Exception):
            await connection.close()


def log_report(report: RetentionReport) -> None:
    if report.busy:
        log.info("retention: another process is running it")
        return
    if report.kept_unread:
        log.warning("retention: partitions past retention kept until automation reads them",
                    extra={"partitions": report.kept_unread})
    if report.postponed:
        log.warning("retention: lock timeout, tried again at the next check",
                    extra={"partitions": report.postponed})
    if report.created or report.dropped or report.bodies_dropped:
        log.info("retention pass", extra={
            "created": report.created, "moved_rows": report.moved_rows,
            "dropped": [p.name for p in report.dropped],
            "dropped_bytes": sum(p.bytes for p in report.dropped),
            "event_ids_trimmed": report.event_ids_trimmed,
            "bodies_dropped": report.bodies_dropped})


class RetentionRole:
    """Runs a pass at start and every ``check_interval`` (hosted by the mta role's process)."""

    name = "retention"

    def __init__(self, settings: RetentionSettings, database: Database) -> None:
        self.settings = settings
        self.database = database
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="herald-retention")

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task

    async def _run(self) -> None:
        while not self._stop.is_set():
            try:
                log_report(await run_once(self.database.url, self.settings))
            except DatabaseError as exc:
                log.warning("retention pass failed; retried at the next check",
                            extra={"error": str(exc)})
            except Exception:
                log.exception("retention pass failed; retried at the next check")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.settings.check_interval)
