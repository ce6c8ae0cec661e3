"""The MTA's public enqueue API: put a message in the outbound queue inside the caller's
transaction, so a workflow step and its message commit together (or not at all).

The suppression list is checked here and again when the message is claimed for delivery: a
message to a suppressed address is stored as ``suppressed`` (with its ``email_suppressed``
event) and never sent."""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from engine.addresses import Address
from engine.eventlog import append_rows
from mta.queue.return_paths import bounce_address
from mta.suppression import store as suppressions
from mta.suppression.addresses import normalise_lenient
from mta.suppression.rules import blocking_reason, is_transactional, message_category

OUTBOUND_CHANNEL = "herald_outbound"

_INSERT = """
    INSERT INTO outbound_messages
        (id, header_from, envelope_from, recipient, recipient_domain, contact_id, tags,
         metadata, source, idempotency_key, body, next_attempt_at, expires_at)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
    ON CONFLICT (idempotency_key) DO NOTHING
    RETURNING id
"""

_SUPPRESSED = """
    UPDATE outbound_messages SET state = 'suppressed', finished_at = $2, last_reply = $3
    WHERE id = $1
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
    id: uuid.UUID | None = None  # chosen by the caller when the body must name it
    sender: Address | None = None  # a Sender header other than From (raw MIME)


@dataclass(frozen=True, slots=True)
class Enqueued:
    id: uuid.UUID
    duplicate: bool
    suppressed: str | None = None  # why the message will not be sent


@dataclass(frozen=True, slots=True)
class QueueIdentity:
    """What every enqueue needs: the bounce domain, the HMAC secret and the expiry."""

    bounce_domain: str
    bounce_secret: bytes
    expire: timedelta


async def enqueue(connection: asyncpg.Connection, identity: QueueIdentity,
                  message: OutboundMessage, now: datetime | None = None,
                  notify: bool = True) -> Enqueued:
    """Insert the message (idempotent on ``idempotency_key``) and wake the delivery workers.

    Call it inside the caller's transaction; the NOTIFY is delivered at commit. A caller
    queueing many messages in one transaction passes ``notify=False`` and calls
    :func:`wake_delivery` once. A message
    expires ``identity.expire`` after it is due: after ``send_at`` when that is later than now
    (so a message scheduled past the expiry is still tried for the whole period)."""
    now = now or datetime.now(UTC)
    due = max(message.send_at or now, now)
    message_id = message.id or uuid.uuid4()
    recipient = str(message.recipient)
    contact_id = message.contact_id or recipient.lower()
    row = await connection.fetchrow(
        _INSERT, message_id, str(message.header_from),
        bounce_address(identity.bounce_secret, message_id, identity.bounce_domain),
        recipient, message.recipient.domain, contact_id, list(message.tags), message.metadata,
        message.source, message.idempotency_key, message.body, message.send_at or now,
        due + identity.expire)
    if row is None:
        existing = await connection.fetchval(
            "SELECT id FROM outbound_messages WHERE idempotency_key = $1",
            message.idempotency_key)
        return Enqueued(existing, duplicate=True)
    entries = (await suppressions.lookup(connection, [normalise_lenient(recipient)])).get(
        normalise_lenient(recipient))
    reason = entries and blocking_reason(entries, message_category(message.metadata),
                                         is_transactional(message.metadata))
    if reason:
        reply = f"recipient is on the suppression list ({reason})"
        await connection.execute(_SUPPRESSED, message_id, now, reply)
        await append_rows(connection, [(
            f"mta:{message_id}:0:suppressed", "email_suppressed", contact_id, recipient,
            {"message_id": str(message_id), "recipient": recipient, "reply": reply,
             "category": "suppressed", "tags": list(message.tags), **{
                 k: v for k, v in message.metadata.items()
                 if k not in ("message_id", "recipient", "reply", "category", "tags")}},
            now, "mta")])
        return Enqueued(message_id, duplicate=False, suppressed=reason)
    if notify:
        await wake_delivery(connection)
    return Enqueued(message_id, duplicate=False)


async def wake_delivery(connection: asyncpg.Connection) -> None:
    """Tell the delivery workers, at commit, that messages are due."""
    await connection.execute(f"NOTIFY {OUTBOUND_CHANNEL}")


async def load_bounce_secret(connection: asyncpg.Connection, configured: str | None) -> bytes:
    """The configured secret, or one generated once and shared through the database."""
    if configured:
        return configured.encode()
    await connection.execute(
        "INSERT INTO mta_secrets (name, value) VALUES ('bounce', $1) ON CONFLICT DO NOTHING",
        secrets.token_bytes(32))
    value = await connection.fetchval("SELECT value FROM mta_secrets WHERE name = 'bounce'")
    return bytes(value)
