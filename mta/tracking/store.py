"""The stored links of tracked messages, and what a tracking hit needs to know about its
message (contact, workflow metadata, delivery time, the link's URL)."""

from __future__ import annotations

import uuid
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

# A message's links are in its row (mta 0008), or in tracked_links for one queued before.
_MESSAGES = """
    SELECT m.id, m.contact_id, m.metadata, m.state, m.finished_at,
           coalesce(m.tracked_links, t.links) AS links
    FROM outbound_messages m LEFT JOIN tracked_links t ON t.message_id = m.id
    WHERE m.id = ANY($1::uuid[])
"""


@dataclass(frozen=True, slots=True)
class TrackedMessage:
    id: uuid.UUID
    contact_id: str
    metadata: dict[str, Any]
    delivered_at: datetime | None
    links: tuple[str, ...]  # the original URLs by position

    def url(self, position: int) -> str | None:
        return self.links[position] if 0 <= position < len(self.links) else None


async def tracked_messages(connection: asyncpg.Connection, message_ids: list[uuid.UUID]
                           ) -> dict[uuid.UUID, TrackedMessage]:
    """The known ones of these messages (one query for many concurrent hits)."""
    return {row["id"]: TrackedMessage(
        row["id"], row["contact_id"], dict(row["metadata"]),
        row["finished_at"] if row["state"] == "delivered" else None, tuple(row["links"] or ()))
        for row in await connection.fetch(_MESSAGES, message_ids)}


class MessageCache:
    """Delivered messages recently hit (their contact, metadata, delivery time and links no
    longer change), so repeated hits on one message (its opens, its clicks, a scanner's burst)
    cost no read. Bounded: the least recently used go first."""

    def __init__(self, max_messages: int = 10_000) -> None:
        self.max_messages = max_messages
        self._messages: OrderedDict[uuid.UUID, TrackedMessage] = OrderedDict()

    def get(self, message_id: uuid.UUID) -> TrackedMessage | None:
        message = self._messages.get(message_id)
        if message is not None:
            self._messages.move_to_end(message_id)
        return message

    def put(self, message: TrackedMessage) -> None:
        if message.delivered_at is None:
            return  # its delivery time is still to come
        self._messages[message.id] = message
        self._messages.move_to_end(message.id)
        if len(self._messages) > self.max_messages:
            self._messages.popitem(last=False)
