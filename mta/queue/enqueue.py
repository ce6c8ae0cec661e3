"""The MTA's public enqueue API: put a message in the outbound queue inside the caller's
transaction, so a workflow step and its message commit together (or not at all)."""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from engine.addresses import Address
from mta.queue.return_paths import bounce_address

OUTBOUND_CHANNEL = "herald_outbound"

_INSERT = """
    INSERT INTO outbound_messages
        (id, header_from, envelope_from, recipient, recipient_domain, contact_id, tags,
         metadata, source, idempotency_key, body, next_attempt_at, expires_at)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
    ON CONFLICT (idempotency_key) DO NOTHING
    RETURNING id
"""


@dataclass(frozen=True, slots=True)
class OutboundMessage:
    header_from: Address
    recipient: Address
    body: bytes
    contact_id: str | None = None
    tags: tuple[str, ...] = ()
    metadata: dict[str, Any] = field(default_factory=dict)
    source: str = "api"
    idempotency_key: str | None = None
    send_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Enqueued:
    id: uuid.UUID
    duplicate: bool


@dataclass(frozen=True, slots=True)
class QueueIdentity:
    """What every enqueue needs: the bounce domain, the HMAC secret and the expiry."""

    bounce_domain: str
    bounce_secret: bytes
    expire: timedelta


async def enqueue(connection: asyncpg.Connection, identity: QueueIdentity,
                  message: OutboundMessage, now: datetime | None = None) -> Enqueued:
    """Insert the message (idempotent on ``idempotency_key``) and wake the delivery workers.

    Call it inside the caller's transaction; the NOTIFY is delivered at commit."""
    now = now or datetime.now(UTC)
    message_id = uuid.uuid4()
    recipient = str(message.recipient)
    contact_id = message.contact_id or recipient.lower()
    row = await connection.fetchrow(
        _INSERT, message_id, str(message.header_from),
        bounce_address(identity.bounce_secret, message_id, identity.bounce_domain),
        recipient, message.recipient.domain, contact_id, list(message.tags), message.metadata,
        message.source, message.idempotency_key, message.body, message.send_at or now,
        now + identity.expire)
    if row is None:
        existing = await connection.fetchval(
            "SELECT id FROM outbound_messages WHERE idempotency_key = $1",
            message.idempotency_key)
        return Enqueued(existing, duplicate=True)
    await connection.execute(f"NOTIFY {OUTBOUND_CHANNEL}")
    return Enqueued(message_id, duplicate=False)


async def load_bounce_secret(connection: asyncpg.Connection, configured: str | None) -> bytes:
    """The configured secret, or one generated once and shared through the database."""
    if configured:
        return configured.encode()
    await connection.execute(
        "INSERT INTO mta_secrets (name, value) VALUES ('bounce', $1) ON CONFLICT DO NOTHING",
        secrets.token_bytes(32))
    value = await connection.fetchval("SELECT value FROM mta_secrets WHERE name = 'bounce'")
    return bytes(value)
