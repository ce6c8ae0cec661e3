"""The MTA's public enqueue API: put a message in the outbound queue inside the caller's
transaction, so a workflow step and its message commit together (or not at all).

The suppression list is checked here and again when the message is claimed for delivery: a
message to a suppressed address is stored as ``suppressed`` (with its ``email_suppressed``
event) and never sent."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import orjson

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
         metadata, source, idempotency_key, body, next_attempt_at, expires_at, tracked_links)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
    ON CONFLICT (idempotency_key) DO NOTHING
"""

# Several messages in one statement (one row each, in the order of the arrays); the ids
# returned are those inserted (the others' idempotency keys were taken, in the table or by an
# earlier row of the same statement). Tags and tracked links are a JSON text per message:
# text[] arrays of different lengths cannot be unnested side by side (nor lists passed as
# jsonb[] elements: asyncpg takes nested lists for a multidimensional array). Links keep their
# order (a click token names a position).
_INSERT_MANY = """
    INSERT INTO outbound_messages
        (id, header_from, envelope_from, recipient, recipient_domain, contact_id, tags,
         metadata, source, idempotency_key, body, next_attempt_at, expires_at, tracked_links)
    SELECT q.id, q.header_from, q.envelope_from, q.recipient, q.recipient_domain, q.contact_id,
           ARRAY(SELECT jsonb_array_elements_text(q.tags::jsonb)), q.metadata, q.source,
           q.idempotency_key, q.body, q.next_attempt_at, q.expires_at,
           CASE WHEN q.links IS NOT NULL THEN
               ARRAY(SELECT link FROM jsonb_array_elements_text(q.links::jsonb)
                                      WITH ORDINALITY AS l(link, n) ORDER BY n) END
    FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                $7::text[], $8::jsonb[], $9::text[], $10::text[], $11::bytea[],
                $12::timestamptz[], $13::timestamptz[], $14::text[])
         AS q(id, header_from, envelope_from, recipient, recipient_domain, contact_id, tags,
              metadata, source, idempotency_key, body, next_attempt_at, expires_at, links)
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
    # The original URLs of the body's tracked links by position (mta.tracking.rewrite); stored
    # in the same transaction so a click can redirect to them.
    tracked_links: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Enqueued:
    id: uuid.UUID
    duplicate: bool
    suppressed: str | None = None  # why the message will not be sent


@dataclass(frozen=True, slots=True)
class SuppressionsRead:
    """Suppression entries a caller already read in the enqueue's transaction: ``addresses``
    (normalised, :func:`~mta.suppression.addresses.normalise_lenient`) were looked up, and
    ``entries`` holds the ``(reason, category)`` entries of those that have any."""

    addresses: frozenset[str]
    entries: Mapping[str, Sequence[tuple[str, str]]]


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

    Call it inside the caller's transaction; the NOTIFY is delivered at commit. A message
    expires ``identity.expire`` after it is due: after ``send_at`` when that is later than now
    (so a message scheduled past the expiry is still tried for the whole period). A caller
    queueing many messages in one transaction calls :func:`enqueue_many`, or passes
    ``notify=False`` and calls :func:`wake_delivery` once."""
    return (await enqueue_many(connection, identity, [message], now, notify))[0]


async def enqueue_many(connection: asyncpg.Connection, identity: QueueIdentity,
                       messages: Sequence[OutboundMessage], now: datetime | None = None,
                       notify: bool = True, known_suppressions: SuppressionsRead | None = None
                       ) -> list[Enqueued]:
    """:func:`enqueue` for several messages in a few round trips (one insert, one
    suppression look-up, one NOTIFY), with exactly its results, in order. A message's tracked
    links are stored in its row by the same insert.

    ``known_suppressions``: what the caller read of the suppression list in this transaction;
    only recipients it did not cover are looked up."""
    if not messages:
        return []
    now = now or datetime.now(UTC)
    ids = [message.id or uuid.uuid4() for message in messages]
    rows = []
    for message, message_id in zip(messages, ids, strict=True):
        due = max(message.send_at or now, now)
        recipient = str(message.recipient)
        rows.append((
            message_id, str(message.header_from),
            bounce_address(identity.bounce_secret, message_id, identity.bounce_domain),
            recipient, message.recipient.domain, message.contact_id or recipient.lower(),
            list(message.tags), message.metadata, message.source, message.idempotency_key,
            message.body, message.send_at or now, due + identity.expire,
            list(message.tracked_links) if message.tracked_links else None))
    inserted = await _insert(connection, rows)
    keys = [m.idempotency_key for m, i in zip(messages, ids, strict=True) if i not in inserted]
    existing = {row["idempotency_key"]: row["id"] for row in await connection.fetch(
        "SELECT id, idempotency_key FROM outbound_messages WHERE idempotency_key = "
        "ANY($1::text[])", keys)} if keys else {}
    found = await _suppressions(connection, [normalise_lenient(str(m.recipient))
                                             for m in messages], known_suppressions)
    results: list[Enqueued] = []
    suppressed: list[tuple[uuid.UUID, str, OutboundMessage, str]] = []
    for message, message_id, row in zip(messages, ids, rows, strict=True):
        if message_id not in inserted:
            results.append(Enqueued(existing[message.idempotency_key], duplicate=True))
            continue
        entries = found.get(normalise_lenient(str(message.recipient)))
        reason = entries and blocking_reason(entries, message_category(message.metadata),
                                             is_transactional(message.metadata))
        if reason:
            suppressed.append((message_id, row[5], message, reason))
        results.append(Enqueued(message_id, duplicate=False, suppressed=reason or None))
    if suppressed:
        await _suppress(connection, suppressed, now)
    if notify and len(suppressed) < len(inserted):
        await wake_delivery(connection)
    return results


async def _suppressions(connection: asyncpg.Connection, keys: list[str],
                        known: SuppressionsRead | None) -> Mapping[str, Sequence[tuple[str, str]]]:
    if known is None:
        return await suppressions.lookup(connection, keys)
    missing = [key for key in keys if key not in known.addresses]
    if not missing:
        return known.entries
    return {**known.entries, **await suppressions.lookup(connection, missing)}


_INSERT_ALL = f"""
    WITH queued AS (
        INSERT INTO outbound_messages
            (id, header_from, envelope_from, recipient, recipient_domain, contact_id, source,
             body, next_attempt_at, expires_at)
        SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[],
                             $6::text[], $7::text[], $8::bytea[], $9::timestamptz[],
                             $10::timestamptz[])
        RETURNING 1)
    SELECT pg_notify('{OUTBOUND_CHANNEL}', '') FROM queued LIMIT 1
"""


def _plain(message: OutboundMessage) -> bool:
    """Nothing but addresses and a body: no key, tags, metadata or schedule to handle."""
    return (message.idempotency_key is None and not message.tags and not message.metadata
            and message.send_at is None and message.contact_id is None)


async def enqueue_durably(connection: asyncpg.Connection, identity: QueueIdentity,
                          messages: Sequence[OutboundMessage],
                          now: datetime | None = None) -> list[Enqueued]:
    """:func:`enqueue_many` on a connection outside any transaction: committed (all or none)
    when it returns, in two round trips for the common case (SMTP submission): one suppression
    look-up, then one statement inserting every message and waking delivery (a single
    statement is its own transaction). Messages with an idempotency key, tags, metadata, a
    schedule, or a recipient on the suppression list go through :func:`enqueue_many` in one
    transaction instead. A suppression added between the look-up and the insert is caught
    when the message is claimed, as for every queued message."""
    if not messages:
        return []
    if all(_plain(message) for message in messages) and not await suppressions.lookup(
            connection, [normalise_lenient(str(m.recipient)) for m in messages]):
        now = now or datetime.now(UTC)
        ids = [message.id or uuid.uuid4() for message in messages]
        recipients = [str(message.recipient) for message in messages]
        await connection.execute(
            _INSERT_ALL, ids, [str(m.header_from) for m in messages],
            [bounce_address(identity.bounce_secret, i, identity.bounce_domain) for i in ids],
            recipients, [m.recipient.domain for m in messages],
            [recipient.lower() for recipient in recipients], [m.source for m in messages],
            [m.body for m in messages], [now] * len(messages),
            [now + identity.expire] * len(messages))
        return [Enqueued(message_id, duplicate=False) for message_id in ids]
    async with connection.transaction():
        return await enqueue_many(connection, identity, messages, now)


async def _insert(connection: asyncpg.Connection, rows: list[tuple[Any, ...]]
                  ) -> set[uuid.UUID]:
    """The ids of the rows inserted (the others' idempotency keys were taken), in one
    statement."""
    if len(rows) == 1:
        row = await connection.fetchrow(_INSERT + " RETURNING id", *rows[0])
        return {row["id"]} if row is not None else set()
    columns = [list(column) for column in zip(*rows, strict=True)]
    columns[6] = [orjson.dumps(tags).decode() for tags in columns[6]]
    columns[13] = [None if links is None else orjson.dumps(links).decode()
                   for links in columns[13]]
    return {row["id"] for row in await connection.fetch(_INSERT_MANY, *columns)}


async def _suppress(connection: asyncpg.Connection,
                    suppressed: list[tuple[uuid.UUID, str, OutboundMessage, str]],
                    now: datetime) -> None:
    """Mark these messages ``suppressed`` with their ``email_suppressed`` events."""
    replies = [f"recipient is on the suppression list ({reason})"
               for _, _, _, reason in suppressed]
    await connection.executemany(_SUPPRESSED, [
        (message_id, now, reply) for (message_id, *_), reply in zip(suppressed, replies,
                                                                    strict=True)])
    await append_rows(connection, [(
        f"mta:{message_id}:0:suppressed", "email_suppressed", contact_id, str(message.recipient),
        {"message_id": str(message_id), "recipient": str(message.recipient), "reply": reply,
         "category": "suppressed", "tags": list(message.tags), **{
             k: v for k, v in message.metadata.items()
             if k not in ("message_id", "recipient", "reply", "category", "tags")}},
        now, "mta") for (message_id, contact_id, message, _), reply in zip(suppressed, replies,
                                                                           strict=True)])


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
