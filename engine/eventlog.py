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

INSERT_EVENTS = """
    INSERT INTO events (event_id, type, contact_id, email, properties, occurred_at, source)
    SELECT r->>0, r->>1, r->>2, r->>3, r->4, (r->>5)::timestamptz, r->>6
    FROM jsonb_array_elements($1::jsonb) WITH ORDINALITY AS batch(r, n)
    ORDER BY n
    ON CONFLICT (event_id) WHERE event_id IS NOT NULL DO NOTHING
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
