"""The stored links of tracked messages, and what a tracking hit needs to know about its
message (contact, workflow metadata, delivery time, the link's URL)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

_STORE = """
    INSERT INTO tracked_links (message_id, links)
    SELECT (m->>0)::uuid, ARRAY(SELECT link FROM jsonb_array_elements_text(m->1)
                                 WITH ORDINALITY AS l(link, n) ORDER BY n)
    FROM jsonb_array_elements($1::jsonb) AS batch(m)
    ON CONFLICT (message_id) DO NOTHING
"""
# $2 is the link's position (0-based); Postgres arrays count from 1.
_MESSAGE = """
    SELECT m.contact_id, m.metadata, m.state, m.finished_at, t.links[$2 + 1] AS url
    FROM outbound_messages m LEFT JOIN tracked_links t ON t.message_id = m.id
    WHERE m.id = $1
"""


@dataclass(frozen=True, slots=True)
class TrackedMessage:
    id: uuid.UUID
    contact_id: str
    metadata: dict[str, Any]
    delivered_at: datetime | None
    url: str | None  # the link at the asked position, if the message has one there


async def store_links(connection: asyncpg.Connection,
                      messages: Sequence[tuple[uuid.UUID, list[str]]]) -> None:
    """Inside the enqueue's transaction; one statement (Postgres has no ragged arrays, so the
    rows travel as one JSON array)."""
    await connection.execute(_STORE, [[str(message_id), links] for message_id, links in messages])


async def tracked_message(connection: asyncpg.Connection, message_id: uuid.UUID,
                          position: int) -> TrackedMessage | None:
    row = await connection.fetchrow(_MESSAGE, message_id, position)
    if row is None:
        return None
    delivered = row["finished_at"] if row["state"] == "delivered" else None
    return TrackedMessage(message_id, row["contact_id"], dict(row["metadata"]), delivered,
                          row["url"])
