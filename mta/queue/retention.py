"""Dropping the bodies of finished messages: the row (state, replies, attempts, events) stays,
the body becomes NULL and ``body_dropped_at`` says when (mta migration 0007).

A message qualifies once it has been in a final state for the retention period, counted from
``finished_at``. Bodies go in batches of ``BATCH`` rows, one short transaction each, so the
delivery service's claims never wait long behind retention.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from mta.queue.control import FINAL

BATCH = 5000
_FINAL = ", ".join(f"'{state}'" for state in FINAL)
# The predicate of the partial index outbound_bodies_kept (keep them identical).
_DUE = f"body IS NOT NULL AND state IN ({_FINAL}) AND finished_at < $1"

COUNT_DUE = f"""
    SELECT count(*) AS messages, coalesce(sum(octet_length(body)), 0) AS bytes
    FROM outbound_messages WHERE {_DUE}
"""
DROP_DUE = f"""
    UPDATE outbound_messages SET body = NULL, body_dropped_at = now()
    WHERE id IN (SELECT id FROM outbound_messages WHERE {_DUE}
                 ORDER BY finished_at LIMIT $2 FOR UPDATE SKIP LOCKED)
"""


@dataclass(frozen=True, slots=True)
class BodiesDue:
    messages: int
    bytes: int  # the bodies' length (their on-disk size, compressed by TOAST, is smaller)


async def bodies_due(connection: asyncpg.Connection, finished_before: datetime) -> BodiesDue:
    row = await connection.fetchrow(COUNT_DUE, finished_before)
    return BodiesDue(int(row["messages"]), int(row["bytes"]))


async def drop_bodies(connection: asyncpg.Connection, finished_before: datetime,
                      batch: int = BATCH) -> int:
    """Drop the bodies of messages finished before ``finished_before``; returns how many."""
    total = 0
    while True:
        status = await connection.execute(DROP_DUE, finished_before, batch)
        count = int(status.split()[-1])
        total += count
        if count < batch:
            return total
