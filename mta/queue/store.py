"""The outbound queue's SQL: claim with leases, renew leases, record outcomes in batches.

A worker owns a claimed row until its lease ends; every state change checks ``lease_owner``, so
a worker that lost its lease (it stalled, another took over) never overwrites the new owner's
work. Outcomes are written in batches: one transaction updates the rows, logs the attempts,
adds suppressions and appends the outcome events.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from engine.database import GENERIC_PLANS_IN_TRANSACTION
from engine.eventlog import append_rows
from mta.metrics import LOST_LEASES
from mta.suppression import store as suppressions
from mta.suppression.addresses import normalise_lenient
from mta.suppression.rules import (
    HARD_BOUNCE,
    Suppression,
    blocking_reason,
    is_transactional,
    message_category,
)

log = logging.getLogger("herald.mta.queue")

# Claim due messages, oldest first. SKIP LOCKED lets several workers and processes claim at
# once without waiting for each other; moving next_attempt_at to the end of the lease hides
# the rows from other claimers and makes them due again by themselves if this worker dies.
# Held rows (herald queue hold) and final ones are never claimed: only queued and deferred.
CLAIM = """
    WITH due AS (
        SELECT id FROM outbound_messages
        WHERE state IN ('queued', 'deferred') AND next_attempt_at <= now()
        ORDER BY next_attempt_at
        LIMIT $1
        FOR UPDATE SKIP LOCKED
    )
    UPDATE outbound_messages AS m
    SET next_attempt_at = now() + make_interval(secs => $2), lease_owner = $3
    FROM due WHERE m.id = due.id
    RETURNING m.id, m.header_from, m.envelope_from, m.recipient, m.recipient_domain,
              m.contact_id, m.tags, m.metadata, m.body, m.attempts, m.expires_at, m.created_at
"""

RENEW = """
    UPDATE outbound_messages SET next_attempt_at = now() + make_interval(secs => $3)
    WHERE id = ANY($1::uuid[]) AND lease_owner = $2 AND state IN ('queued', 'deferred')
"""

NEXT_DUE = """
    SELECT min(next_attempt_at) FROM outbound_messages WHERE state IN ('queued', 'deferred')
"""

# r: [id, state, counts_attempt, next_attempt_at, code, reply, finished]
RECORD = """
    UPDATE outbound_messages AS m
    SET state = CASE WHEN m.state IN ('held', 'purged') AND r->>1 IN ('queued', 'deferred')
                     THEN m.state ELSE r->>1 END,  -- held or purged while in flight: it stays
        attempts = m.attempts + (r->>2)::int,
        next_attempt_at = coalesce((r->>3)::timestamptz, m.next_attempt_at),
        last_code = coalesce((r->>4)::int, m.last_code),
        last_reply = coalesce(r->>5, m.last_reply),
        finished_at = CASE WHEN (r->>6)::boolean THEN now()
                           WHEN m.state = 'purged' THEN m.finished_at END,
        lease_owner = NULL
    FROM jsonb_array_elements($1::jsonb) AS r
    WHERE m.id = (r->>0)::uuid AND m.lease_owner = $2
    RETURNING m.id
"""

LOG_ATTEMPTS = """
    INSERT INTO delivery_attempts
        (message_id, attempt, outcome, remote_host, code, enhanced, reply, category, tls_policy)
    SELECT (r->>0)::uuid, (r->>1)::int, r->>2, r->>3, (r->>4)::int, r->>5, r->>6, r->>7, r->>8
    FROM jsonb_array_elements($1::jsonb) AS r
    ON CONFLICT (message_id, attempt) DO NOTHING
"""

FINAL_STATES = frozenset({"delivered", "bounced", "expired", "suppressed"})
EVENT_TYPES = {
    "delivered": "email_delivered", "deferred": "email_deferred", "bounced": "email_bounced",
    "expired": "email_expired", "suppressed": "email_suppressed",
}


@dataclass(frozen=True, slots=True)
class ClaimedMessage:
    id: uuid.UUID
    header_from: str
    envelope_from: str
    recipient: str
    recipient_domain: str
    contact_id: str
    tags: tuple[str, ...]
    metadata: dict[str, Any]
    body: bytes
    attempts: int
    expires_at: datetime
    created_at: datetime

    @property
    def attempt(self) -> int:
        """The number of the attempt being made now (1-based)."""
        return self.attempts + 1


@dataclass(frozen=True, slots=True)
class Outcome:
    """What happened to one claimed message. ``state`` is the row's new state; ``released``
    hands a message back untried (its site is backed off or full)."""

    message: ClaimedMessage
    state: str  # delivered, deferred, bounced, expired, suppressed, released
    at: datetime
    next_attempt_at: datetime | None = None
    remote_host: str | None = None
    code: int | None = None
    enhanced: str | None = None
    reply: str | None = None
    category: str | None = None
    suppress: bool = False
    soft: bool = False  # a soft bounce that counts towards suppressing the address
    tls_policy: str | None = None  # the TLS policy the attempt ran under (mta.tls.policy)
    site: str | None = None  # the destination site (None: not routed, e.g. a DNS failure)
    remote_ip: str | None = None  # the address of the host that answered
    tls_version: str | None = None  # e.g. "TLSv1.3" when the session used TLS


@dataclass(frozen=True, slots=True)
class SoftBouncePolicy:
    """N soft bounces within M seconds suppress an address (0 disables)."""

    limit: int = 5
    window: float = 30 * 86400.0


async def claim(connection: asyncpg.Connection, limit: int, lease_seconds: float,
                owner: str) -> tuple[list[ClaimedMessage], dict[uuid.UUID, str]]:
    """Claim up to ``limit`` due messages; also returns, for each one that may no longer be
    sent (suppressed since it was queued), the reason."""
    async with connection.transaction():
        rows = await connection.fetch(CLAIM, limit, lease_seconds, owner)
        messages = [ClaimedMessage(
            row["id"], row["header_from"], row["envelope_from"], row["recipient"],
            row["recipient_domain"], row["contact_id"], tuple(row["tags"]), row["metadata"],
            bytes(row["body"]), row["attempts"], row["expires_at"], row["created_at"],
        ) for row in rows]
        blocked: dict[uuid.UUID, str] = {}
        if messages:
            keys = {m.id: normalise_lenient(m.recipient) for m in messages}
            # The look-up was planned again on every claim (~0.12 ms of Postgres CPU: a
            # custom plan knows its array's length); its generic plan reads the same keys.
            await connection.execute(GENERIC_PLANS_IN_TRANSACTION)
            found = await suppressions.lookup(connection, keys.values())
            for message in messages:
                entries = found.get(keys[message.id])
                reason = entries and blocking_reason(
                    entries, message_category(message.metadata),
                    is_transactional(message.metadata))
                if reason:
                    blocked[message.id] = reason
    return messages, blocked


async def renew(connection: asyncpg.Connection, ids: list[uuid.UUID], owner: str,
                lease_seconds: float) -> None:
    if ids:
        await connection.execute(RENEW, ids, owner, lease_seconds)


async def next_due(connection: asyncpg.Connection) -> datetime | None:
    value: datetime | None = await connection.fetchval(NEXT_DUE)
    return value


async def record(connection: asyncpg.Connection, outcomes: list[Outcome], owner: str,
                 soft_bounces: SoftBouncePolicy = SoftBouncePolicy()) -> set[uuid.UUID]:
    """Write a batch of outcomes in one transaction; returns the ids this owner still held.

    An outcome for a row this owner no longer leases (it stalled past the lease and another
    worker claimed the message) changes nothing; it is logged and counted, never silently lost.
    """
    if not outcomes:
        return set()
    released = [o for o in outcomes if o.state == "released"]
    tried = [o for o in outcomes if o.state != "released"]
    rows = [[str(o.message.id), _state(o),
             0 if o.state in ("released", "suppressed") else 1,
             o.next_attempt_at.isoformat() if o.next_attempt_at else None,
             o.code, o.reply, o.state in FINAL_STATES] for o in released + tried]
    async with connection.transaction():
        held = {r["id"] for r in await connection.fetch(RECORD, rows, owner)}
        mine = [o for o in tried if o.message.id in held]
        if mine:
            await connection.execute(LOG_ATTEMPTS, [
                [str(o.message.id), o.message.attempt, o.state, o.remote_host, o.code,
                 o.enhanced, o.reply, o.category, o.tls_policy] for o in mine])
            await append_rows(connection, [_event_row(o) for o in mine])
            now = max(o.at for o in mine)
            await suppressions.add(connection, [
                Suppression(normalise_lenient(o.message.recipient), HARD_BOUNCE, source="smtp",
                            message_id=o.message.id, detail=(o.reply or "")[:500])
                for o in mine if o.suppress], now)
            await suppressions.record_soft_bounces(
                connection, [(normalise_lenient(o.message.recipient), o.message.id)
                             for o in mine if o.soft and not o.suppress],
                soft_bounces.limit, soft_bounces.window, now)
    for outcome in outcomes:
        if outcome.message.id not in held:
            _lease_lost(outcome, owner)
    return held


def _lease_lost(outcome: Outcome, owner: str) -> None:
    LOST_LEASES.labels(outcome.state).inc()
    log.warning("lease_lost", extra={
        "message_id": str(outcome.message.id), "outcome": outcome.state, "owner": owner,
        "attempt": outcome.message.attempt, "code": outcome.code})


def _state(outcome: Outcome) -> str:
    if outcome.state == "released":
        return "deferred" if outcome.message.attempts else "queued"
    return outcome.state


def _event_row(outcome: Outcome) -> tuple[Any, ...]:
    message = outcome.message
    properties: dict[str, Any] = {
        "message_id": str(message.id),
        "recipient": message.recipient,
        "attempt": message.attempt,
        "remote_host": outcome.remote_host,
        "code": outcome.code,
        "enhanced": outcome.enhanced,
        "reply": outcome.reply,
        "category": outcome.category,
        "tags": list(message.tags),
    }
    if outcome.next_attempt_at is not None:
        properties["next_attempt_at"] = outcome.next_attempt_at.isoformat()
    properties.update({k: v for k, v in message.metadata.items() if k not in properties})
    return (f"mta:{message.id}:{message.attempt}:{outcome.state}", EVENT_TYPES[outcome.state],
            message.contact_id, message.recipient, properties, outcome.at, "mta")
