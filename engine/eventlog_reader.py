"""Read the event log in a gap-free order, resumable from a cursor.

Positions come from a sequence, so a transaction that commits late can hold a smaller position
than events already visible. Readers therefore order by ``(txid, position)`` and stop below
``pg_snapshot_xmin(pg_current_snapshot())``: every transaction with a smaller id has finished,
and new transactions always get larger ids, so nothing can appear behind the cursor later.
(A transaction left open for a long time holds followers back until it ends.)
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg


@dataclass(frozen=True, slots=True, order=True)
class LogCursor:
    txid: int = 0
    position: int = 0


@dataclass(frozen=True, slots=True)
class LoggedEvent:
    position: int
    txid: int
    type: str
    contact_id: str
    email: str | None
    properties: dict[str, Any]
    occurred_at: datetime
    source: str
    event_id: str | None

    @property
    def cursor(self) -> LogCursor:
        return LogCursor(self.txid, self.position)


READ_AFTER = """
    SELECT position, txid::text::bigint AS txid, type, contact_id, email, properties,
           occurred_at, source, event_id
    FROM events
    WHERE (txid, position) > ($1::text::xid8, $2)
      AND txid < pg_snapshot_xmin(pg_current_snapshot())
    ORDER BY events.txid, position  -- the column (xid8), not the bigint alias: the index order
    LIMIT $3
"""


async def read_after(connection: asyncpg.Connection, cursor: LogCursor,
                     limit: int) -> list[LoggedEvent]:
    rows = await connection.fetch(READ_AFTER, str(cursor.txid), cursor.position, limit)
    return [LoggedEvent(r["position"], r["txid"], r["type"], r["contact_id"], r["email"],
                        r["properties"], r["occurred_at"], r["source"], r["event_id"])
            for r in rows]


async def head(connection: asyncpg.Connection) -> LogCursor:
    """The cursor after the last committed event (to start following from now)."""
    row = await connection.fetchrow(
        "SELECT txid::text::bigint AS txid, position FROM events "
        "WHERE txid < pg_snapshot_xmin(pg_current_snapshot()) "
        "ORDER BY events.txid DESC, position DESC LIMIT 1")  # the column: index order
    return LogCursor(row["txid"], row["position"]) if row else LogCursor()
