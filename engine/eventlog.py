"""Appending to the event log (used by the intake, the MTA's outcomes and the automation core).

Rows travel as one JSON array and Postgres unpacks it (in C, in its own process), which costs
far less Python time than encoding one parameter array per column.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

EVENTS_CHANNEL = "herald_events"

# An event with an id is stored only if this statement claims its id in ``event_ids`` (a
# unique index on the partitioned events table would have to include received_at); a repeated
# id, in the log already or earlier in the same batch, is skipped. A concurrent transaction
# claiming the same id waits on the event_ids key until the first commits or rolls back.
INSERT_EVENTS = """
    WITH batch AS (
        SELECT r, n FROM jsonb_array_elements($1::jsonb) WITH ORDINALITY AS b(r, n)
    ), claimed AS (
        INSERT INTO event_ids (event_id)
        SELECT r->>0 FROM batch WHERE r->>0 IS NOT NULL ORDER BY n
        ON CONFLICT (event_id) DO NOTHING
        RETURNING event_id
    ), first AS (
        SELECT min(n) AS n FROM batch JOIN claimed ON claimed.event_id = batch.r->>0
        GROUP BY claimed.event_id
    )
    INSERT INTO events (event_id, type, contact_id, email, properties, occurred_at, source)
    SELECT r->>0, r->>1, r->>2, r->>3, r->4, (r->>5)::timestamptz, r->>6
    FROM batch
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


async def append_rows(connection: asyncpg.Connection,
                      rows: list[tuple[Any, ...]]) -> set[str]:
    """Insert rows ``(event_id, type, contact_id, email, properties, occurred_at, source)`` in
    order and NOTIFY followers; returns the event ids that were new (others were duplicates)."""
    if not rows:
        return set()
    inserted = await connection.fetch(INSERT_EVENTS, rows)
    await connection.execute(f"NOTIFY {EVENTS_CHANNEL}")
    return {row["event_id"] for row in inserted if row["event_id"] is not None}


async def append_events(connection: asyncpg.Connection, events: list[LogEvent]) -> set[str]:
    return await append_rows(connection, [event.row() for event in events])
