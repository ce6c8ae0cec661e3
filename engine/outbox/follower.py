"""Outcome events in the log -> outbox rows, exactly once.

One batch is one transaction: lock the follower's cursor row (``SKIP LOCKED``: another process
busy with it means this one skips the round), read the events after it in the log's gap-free
order (:mod:`engine.eventlog_reader`), insert a row per (event, subscription wanting its type)
with the message id ``msg_ev<position>_<subscription>``, move the cursor. A crash before the
commit leaves both undone; after it, both done. With no subscriptions the cursor jumps to the
log's head without reading.
"""

from __future__ import annotations

import logging

import asyncpg

from engine.database import Database
from engine.eventlog_reader import LogCursor, head, read_after
from engine.outbox import store, subscriptions
from engine.outbox.events import OUTCOME_EVENTS, outcome_body
from engine.outbox.metrics import OUTBOX_FOLLOWER_ROWS

log = logging.getLogger("herald.outbox.follower")


async def ensure_cursor(connection: asyncpg.Connection) -> None:
    """Start following at the log's head the first time (history is not replayed)."""
    start = await head(connection)
    await connection.execute(
        "INSERT INTO outbox_follower (id, cursor_txid, cursor_pos) VALUES (1, $1, $2) "
        "ON CONFLICT (id) DO NOTHING", start.txid, start.position)


async def follow_once(database: Database, batch: int = 2000) -> int:
    """Handle one batch; returns the number of events passed (0: caught up or busy)."""
    async with database.transaction() as connection:
        row = await connection.fetchrow(
            "SELECT cursor_txid, cursor_pos FROM outbox_follower WHERE id = 1 "
            "FOR UPDATE SKIP LOCKED")
        if row is None:
            return 0
        cursor = LogCursor(row["cursor_txid"], row["cursor_pos"])
        wanted = await subscriptions.matching(connection, list(OUTCOME_EVENTS))
        if not wanted:
            new = await head(connection)
            if new > cursor:
                await _move(connection, new)
            return 0
        events = await read_after(connection, cursor, batch)
        if not events:
            return 0
        rows = [store.NewRow(
            "outcome", sub["url"], sub["endpoint"],
            outcome_body(event.type, event.occurred_at, event.position, event.event_id,
                         event.contact_id, event.email, event.properties),
            subscription_id=sub["id"],
            event_type=event.type, secret=sub["secret"],
            message_id=f"msg_ev{event.position}_{sub['id']}", contact_id=event.contact_id)
            for event in events if event.type in OUTCOME_EVENTS
            for sub in wanted if event.type in sub["event_types"]]
        queued = await store.enqueue(connection, rows)
        await _move(connection, events[-1].cursor)
    OUTBOX_FOLLOWER_ROWS.inc(queued)
    return len(events)


async def _move(connection: asyncpg.Connection, cursor: LogCursor) -> None:
    await connection.execute(
        "UPDATE outbox_follower SET cursor_txid = $1, cursor_pos = $2, updated_at = now() "
        "WHERE id = 1", cursor.txid, cursor.position)
