"""Quarantine: the events the live follower sets aside because acting on them always fails.

A batch that fails with an error that is not the database or the network going away is
replayed one event at a time; an event that fails again on its own is recorded here, counted,
and skipped from then on (also after a restart), so one bad event cannot stop the follower.
"""

from __future__ import annotations

import logging
import traceback

import asyncpg

from automation.metrics import QUARANTINED
from engine.errors import DatabaseUnavailable
from engine.eventlog_reader import LogCursor, LoggedEvent

log = logging.getLogger("herald.automation.quarantine")

ERROR_LIMIT = 2000  # characters of the error kept per event


def is_transient(error: BaseException) -> bool:
    """Whether ``error`` may well go away by itself (then retrying the batch is right): the
    database or network being away or contended (engine translates asyncpg's errors by SQLSTATE
    class); a rejected statement or a bug is not."""
    return isinstance(error, DatabaseUnavailable | OSError)


async def load(connection: asyncpg.Connection) -> set[LogCursor]:
    rows = await connection.fetch("SELECT cursor_txid, cursor_pos FROM automation_quarantine")
    return {LogCursor(r["cursor_txid"], r["cursor_pos"]) for r in rows}


async def add(connection: asyncpg.Connection, event: LoggedEvent, error: BaseException) -> None:
    text = "".join(traceback.format_exception_only(error)).strip()[:ERROR_LIMIT]
    await connection.execute(
        """INSERT INTO automation_quarantine
               (cursor_txid, cursor_pos, event_id, contact_id, type, error)
           VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING""",
        event.txid, event.position, event.event_id, event.contact_id, event.type, text)
    QUARANTINED.inc()
    log.error("event_quarantined", exc_info=error, extra={
        "position": event.position, "txid": event.txid, "event_id": event.event_id,
        "contact_id": event.contact_id, "type": event.type})


async def for_contact(connection: asyncpg.Connection, contact_id: str) -> list[asyncpg.Record]:
    return list(await connection.fetch(
        "SELECT cursor_pos, event_id, type, error, quarantined_at FROM automation_quarantine "
        "WHERE contact_id = $1 ORDER BY cursor_txid, cursor_pos", contact_id))
