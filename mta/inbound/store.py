"""The inbound messages table: store a received message, claim due ones for processing, record
what processing did or why it failed."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from mta.inbound.recipients import Recipient
from mta.suppression.unsubscribe import MessageRef

# NOTIFYed after each processed batch (tests and tools wait on it).
PROCESSED_CHANNEL = "herald_inbound_processed"

INSERT = """
    INSERT INTO inbound_messages
        (id, received_at, peer, helo, mail_from, rcpt_tos, recipients, size, raw)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
"""

# Claim due messages, oldest first. SKIP LOCKED lets several processors (and processes) claim
# at once without waiting for each other; moving next_attempt_at to the end of the lease hides
# the rows from other claimers and makes them due again by themselves if this one dies.
CLAIM = """
    WITH due AS (
        SELECT id FROM inbound_messages
        WHERE state = 'pending' AND next_attempt_at <= now()
        ORDER BY next_attempt_at
        LIMIT $1
        FOR UPDATE SKIP LOCKED
    )
    UPDATE inbound_messages AS m
    SET next_attempt_at = now() + make_interval(secs => $2)
    FROM due WHERE m.id = due.id
    RETURNING m.id, m.received_at, m.mail_from, m.recipients, m.raw, m.attempts
"""

# r: [id, kind, result]
DONE = """
    UPDATE inbound_messages AS m
    SET state = 'processed', kind = r->>1, result = r->2, attempts = m.attempts + 1,
        processed_at = now(), last_error = NULL
    FROM jsonb_array_elements($1::jsonb) AS r
    WHERE m.id = (r->>0)::uuid AND m.state = 'pending'
"""

# r: [id, error, delay seconds]; the last allowed attempt ends in 'failed'.
FAILED = """
    UPDATE inbound_messages AS m
    SET attempts = m.attempts + 1, last_error = r->>1,
        next_attempt_at = now() + make_interval(secs => (r->>2)::float8),
        state = CASE WHEN m.attempts + 1 >= $2 THEN 'failed' ELSE 'pending' END,
        processed_at = CASE WHEN m.attempts + 1 >= $2 THEN now() END
    FROM jsonb_array_elements($1::jsonb) AS r
    WHERE m.id = (r->>0)::uuid AND m.state = 'pending'
"""

NEXT_DUE = "SELECT min(next_attempt_at) FROM inbound_messages WHERE state = 'pending'"


@dataclass(frozen=True, slots=True)
class Received:
    """A message as accepted by the server, before it is stored."""

    id: uuid.UUID
    received_at: datetime
    peer: str | None
    helo: str | None
    mail_from: str
    rcpt_tos: tuple[str, ...]
    recipients: tuple[Recipient, ...]
    raw: bytes


@dataclass(frozen=True, slots=True)
class Claimed:
    id: uuid.UUID
    received_at: datetime
    mail_from: str
    recipients: tuple[Recipient, ...]
    raw: bytes
    attempts: int


async def insert_many(connection: asyncpg.Connection, messages: list[Received]) -> None:
    """Insert received messages (call inside a transaction: one commit for all)."""
    await connection.executemany(INSERT, [
        (m.id, m.received_at, m.peer, m.helo, m.mail_from, list(m.rcpt_tos),
         [r.to_json() for r in m.recipients], len(m.raw), m.raw) for m in messages])


async def message_refs(connection: asyncpg.Connection,
                       ids: list[uuid.UUID]) -> dict[uuid.UUID, MessageRef]:
    """The outbound messages with these ids that still exist."""
    rows = await connection.fetch(
        "SELECT id, recipient, contact_id, metadata FROM outbound_messages "
        "WHERE id = ANY($1::uuid[])", list(set(ids)))
    return {r["id"]: MessageRef(r["id"], r["recipient"], r["contact_id"], dict(r["metadata"]))
            for r in rows}


async def claim(connection: asyncpg.Connection, limit: int,
                lease_seconds: float) -> list[Claimed]:
    rows = await connection.fetch(CLAIM, limit, lease_seconds)
    return [Claimed(row["id"], row["received_at"], row["mail_from"],
                    tuple(_recipient(item) for item in row["recipients"]), bytes(row["raw"]),
                    row["attempts"]) for row in rows]


async def done(connection: asyncpg.Connection,
               processed: list[tuple[uuid.UUID, str, list[dict[str, Any]]]]) -> None:
    """Mark messages processed: ``(id, kind, result)`` each."""
    if processed:
        await connection.execute(DONE, [[str(i), kind, result] for i, kind, result in processed])


async def failed(connection: asyncpg.Connection, failures: list[tuple[uuid.UUID, str, float]],
                 max_attempts: int) -> None:
    if failures:
        await connection.execute(FAILED, [[str(i), error[:1000], delay]
                                          for i, error, delay in failures], max_attempts)


async def next_due(connection: asyncpg.Connection) -> datetime | None:
    value: datetime | None = await connection.fetchval(NEXT_DUE)
    return value


def _recipient(item: list[Any]) -> Recipient:
    address, kind, message_id = item
    return Recipient(address, kind, uuid.UUID(message_id) if message_id else None)
