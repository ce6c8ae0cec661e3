"""Appending to the event log (used by the intake, the MTA's outcomes and the automation core).

Rows travel as one JSON array and Postgres unpacks it (in C, in its own process), which costs
far less Python time than encoding one parameter array per column. Large typed batches (the
intake's) go by :func:`append_typed`: their ids are claimed in one statement, then the rows
whose ids were new are streamed with binary ``COPY`` (about twice as fast in Postgres as an
``INSERT ... SELECT`` of the same rows).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from engine.db_errors import reason
from engine.errors import DatabaseRejected

EVENTS_CHANNEL = "herald_events"

# The rows of $1 (one JSON array per event, in the order of COPY_COLUMNS) as the CTE ``batch``
# (``r`` a row, ``n`` its place in the batch), and the insert of them into the log; shared with
# the intake's one-statement writes (engine.intake.batch_write).
BATCH_ROWS = "SELECT r, n FROM jsonb_array_elements($1::jsonb) WITH ORDINALITY AS b(r, n)"
INSERT_BATCH_ROWS = """
    INSERT INTO events (event_id, type, contact_id, email, properties, occurred_at, source)
    SELECT r->>0, r->>1, r->>2, r->>3, r->4, (r->>5)::timestamptz, r->>6
    FROM batch"""

# An event with an id is stored only if this statement claims its id in ``event_ids`` (a
# unique index on the partitioned events table would have to include received_at); a repeated
# id, in the log already or earlier in the same batch, is skipped. A concurrent transaction
# claiming the same id waits on the event_ids key until the first commits or rolls back; ids
# are claimed in their sort order, so two batches sharing ids never wait on each other in a
# cycle.
INSERT_EVENTS = f"""
    WITH batch AS ({BATCH_ROWS}
    ), claimed AS (
        INSERT INTO event_ids (event_id)
        SELECT r->>0 FROM batch WHERE r->>0 IS NOT NULL ORDER BY r->>0
        ON CONFLICT (event_id) DO NOTHING
        RETURNING event_id
    ), first AS (
        SELECT min(n) AS n FROM batch JOIN claimed ON claimed.event_id = batch.r->>0
        GROUP BY claimed.event_id
    ){INSERT_BATCH_ROWS}
    WHERE r->>0 IS NULL OR n IN (SELECT n FROM first)
    ORDER BY n
    RETURNING event_id
"""


@dataclass(frozen=True, slots=True)
class LogEvent:
    type: str
    contact_id: str
    email: str | None
    properties: dict[str, Any]
    occurred_at: datetime
    source: str
    event_id: str | None = None

    def row(self) -> tuple[Any, ...]:
        return (self.event_id, self.type, self.contact_id, self.email, self.properties,
                self.occurred_at, self.source)


async def append_rows(connection: asyncpg.Connection, rows: list[tuple[Any, ...]],
                      notify: bool = True) -> set[str]:
    """Insert rows ``(event_id, type, contact_id, email, properties, occurred_at, source)`` in
    order and NOTIFY followers (``notify=False``: the caller's transaction already did);
    returns the event ids that were new (others were duplicates)."""
    if not rows:
        return set()
    inserted = await connection.fetch(INSERT_EVENTS, rows)
    if notify:
        await connection.execute(f"NOTIFY {EVENTS_CHANNEL}")
    return {row["event_id"] for row in inserted if row["event_id"] is not None}


# Below this many rows one INSERT statement beats a claim plus a COPY (two round trips).
COPY_MIN_ROWS = 64
# Claims the batch's ids (those not claimed before come back).
CLAIM_IDS = """
    INSERT INTO event_ids (event_id)
    SELECT id FROM unnest($1::text[]) AS id ORDER BY id
    ON CONFLICT (event_id) DO NOTHING
    RETURNING event_id
"""
COPY_COLUMNS = ("event_id", "type", "contact_id", "email", "properties", "occurred_at", "source")


async def append_typed(connection: asyncpg.Connection, rows: list[tuple[Any, ...]],
                       notify: bool = True) -> set[str]:
    """:func:`append_rows` for rows whose values have their columns' types (``properties`` a
    dict, ``occurred_at`` an aware datetime): large batches are copied. Call it inside a
    transaction: the ids claimed and the rows copied commit together. A value Postgres refuses
    fails the whole batch (its transaction is aborted), as with :func:`append_rows`."""
    if len(rows) < COPY_MIN_ROWS:
        return await append_rows(connection, rows, notify)
    ids = [row[0] for row in rows if row[0] is not None]
    claimed = {r["event_id"] for r in await connection.fetch(CLAIM_IDS, ids)}
    await copy_claimed(connection, rows, claimed)
    if notify:
        await connection.execute(f"NOTIFY {EVENTS_CHANNEL}")
    return claimed


async def copy_claimed(connection: asyncpg.Connection, rows: list[tuple[Any, ...]],
                       claimed: set[str], all_new: bool = False) -> None:
    """COPY the rows without an id and the first row of each id in ``claimed`` (ids this
    transaction has just claimed in ``event_ids``); a repeat later in the batch is a
    duplicate. ``all_new``: the caller knows every row is to be copied (no id repeats in
    ``rows``, every id claimed)."""
    if all_new:
        new = rows
    else:
        pending = set(claimed)
        new = []
        for row in rows:
            event_id = row[0]
            if event_id is None:
                new.append(row)
            elif event_id in pending:
                pending.discard(event_id)
                new.append(row)
    if new:
        try:
            await connection.copy_records_to_table("events", records=new,
                                                   columns=COPY_COLUMNS)
        except (TypeError, ValueError) as exc:  # a value the client-side encoders refuse
            raise DatabaseRejected(reason(exc)) from exc


async def append_events(connection: asyncpg.Connection, events: list[LogEvent]) -> set[str]:
    return await append_rows(connection, [event.row() for event in events])
