"""The outbox table: enqueue (in the caller's transaction), claim with a lease, record outcomes,
list, retry, depth. Every state change after a claim checks the lease owner, so a worker whose
lease ran out (and whose row another worker claimed) changes nothing.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg
import orjson

from engine.timestamps import format_rfc3339

CHANNEL = "herald_outbox"
STATES = ("pending", "delivered", "dead")
COLUMNS = """id, message_id, kind, subscription_id, event_type, url, endpoint, headers, body,
    secret, timeout, max_attempts, state, attempts, next_attempt_at, lease_owner, last_status,
    last_error, created_at, updated_at"""


def new_message_id() -> str:
    return "msg_" + uuid.uuid4().hex


@dataclass(frozen=True, slots=True)
class NewRow:
    kind: str  # step, outcome, test
    url: str
    endpoint: str
    body: bytes
    timeout: float | None = None  # None: [webhooks] timeout when sent
    max_attempts: int | None = None  # None: [webhooks] max_attempts
    headers: tuple[tuple[str, str], ...] = ()
    subscription_id: str | None = None
    event_type: str | None = None
    secret: str | None = None
    message_id: str = field(default_factory=new_message_id)
    contact_id: str | None = None  # whom the request is about (erased with the contact)


@dataclass(frozen=True, slots=True)
class Claimed:
    id: int
    message_id: str
    kind: str
    url: str
    endpoint: str
    headers: tuple[tuple[str, str], ...]
    body: bytes
    secret: str | None
    timeout: float | None
    max_attempts: int | None
    attempts: int  # including this one


INSERT = """
    WITH queued AS (
        INSERT INTO outbox (message_id, kind, subscription_id, event_type, url, endpoint,
                            headers, body, secret, timeout, max_attempts, contact_id)
        SELECT m, k, s, e, u, p, h::jsonb, b, x, t, a, c
        FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                    $7::text[], $8::bytea[], $9::text[], $10::real[], $11::int[], $12::text[])
             AS r(m, k, s, e, u, p, h, b, x, t, a, c)
        ON CONFLICT (message_id) DO NOTHING
        RETURNING id)
    SELECT count(*) AS queued, pg_notify('herald_outbox', '') IS NULL AS _
    FROM queued HAVING count(*) > 0
"""


async def enqueue(connection: asyncpg.Connection, rows: list[NewRow]) -> int:
    """Insert rows (a message id seen before is skipped) and wake the workers at commit;
    returns how many were new."""
    if not rows:
        return 0
    columns: list[list[Any]] = [[] for _ in range(12)]
    for row in rows:
        for i, value in enumerate((row.message_id, row.kind, row.subscription_id,
                                   row.event_type, row.url, row.endpoint,
                                   orjson.dumps(row.headers).decode(), row.body, row.secret,
                                   row.timeout, row.max_attempts, row.contact_id)):
            columns[i].append(value)
    found = await connection.fetchrow(INSERT, *columns)
    return int(found["queued"]) if found else 0


# Due rows, oldest first, skipping rows another worker holds and endpoints this worker has no
# room for; at most ``per_endpoint`` rows of one endpoint; the lease is next_attempt_at moved
# forward, and the attempt is counted at the claim (a row that kills its worker still runs out
# of attempts).
CLAIM = """
    WITH due AS (
        SELECT id, endpoint, next_attempt_at FROM outbox
        WHERE state = 'pending' AND next_attempt_at <= now() AND endpoint <> ALL($4::text[])
        ORDER BY next_attempt_at, id
        LIMIT $3
        FOR UPDATE SKIP LOCKED),
    ranked AS (
        SELECT id, row_number() OVER (PARTITION BY endpoint ORDER BY next_attempt_at, id) AS n
        FROM due)
    UPDATE outbox o
    SET lease_owner = $1, next_attempt_at = now() + make_interval(secs => $2),
        attempts = o.attempts + 1, updated_at = now()
    FROM ranked r
    WHERE o.id = r.id AND r.n <= $5
    RETURNING o.id, o.message_id, o.kind, o.url, o.endpoint, o.headers, o.body, o.secret,
              o.timeout, o.max_attempts, o.attempts
"""


async def claim(connection: asyncpg.Connection, owner: str, lease: float, limit: int,
                per_endpoint: int, full_endpoints: list[str]) -> list[Claimed]:
    rows = await connection.fetch(CLAIM, owner, lease, limit, full_endpoints, per_endpoint)
    return [Claimed(r["id"], r["message_id"], r["kind"], r["url"], r["endpoint"],
                    tuple((str(k), str(v)) for k, v in r["headers"]), bytes(r["body"]),
                    r["secret"], r["timeout"], r["max_attempts"], r["attempts"])
            for r in sorted(rows, key=lambda r: r["id"])]


async def record(connection: asyncpg.Connection, row_id: int, owner: str, state: str,
                 status: int | None, error: str | None, retry_at: datetime | None) -> bool:
    """The outcome of an attempt: delivered, dead, or pending again at ``retry_at``. False when
    the lease was lost (another worker has the row now)."""
    done = await connection.fetchval(
        """UPDATE outbox SET state = $3, last_status = $4, last_error = $5,
               next_attempt_at = coalesce($6, next_attempt_at), lease_owner = NULL,
               updated_at = now()
           WHERE id = $1 AND lease_owner = $2 AND state = 'pending' RETURNING true""",
        row_id, owner, state, status, error[:1000] if error else None, retry_at)
    return bool(done)


def row_json(row: asyncpg.Record) -> dict[str, Any]:
    return {"id": row["id"], "webhook_id": row["message_id"], "kind": row["kind"],
            "subscription_id": row["subscription_id"], "event_type": row["event_type"],
            "url": row["url"], "state": row["state"], "attempts": row["attempts"],
            "max_attempts": row["max_attempts"],
            "next_attempt_at": format_rfc3339(row["next_attempt_at"])
            if row["state"] == "pending" else None,
            "in_flight": row["state"] == "pending" and row["lease_owner"] is not None,
            "last_status": row["last_status"], "last_error": row["last_error"],
            "created_at": format_rfc3339(row["created_at"]),
            "updated_at": format_rfc3339(row["updated_at"])}


async def list_rows(connection: asyncpg.Connection, state: str | None, limit: int,
                    after: int | None) -> list[asyncpg.Record]:
    """Rows by id (oldest first), optionally of one state, after the id ``after``."""
    rows: list[asyncpg.Record] = await connection.fetch(
        f"SELECT {COLUMNS} FROM outbox WHERE ($1::text IS NULL OR state = $1) "
        "AND id > $2 ORDER BY id LIMIT $3", state, after or 0, limit)
    return rows


async def get_row(connection: asyncpg.Connection, row_id: int) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await connection.fetchrow(
        f"SELECT {COLUMNS} FROM outbox WHERE id = $1", row_id)
    return row


async def retry(connection: asyncpg.Connection, row_id: int) -> asyncpg.Record | None:
    """A dead row pending again, due now, with its attempts reset (the webhook-id stays)."""
    row: asyncpg.Record | None = await connection.fetchrow(
        f"""UPDATE outbox SET state = 'pending', attempts = 0, next_attempt_at = now(),
               lease_owner = NULL, updated_at = now()
           WHERE id = $1 AND state = 'dead' RETURNING {COLUMNS}""", row_id)
    if row is not None:
        await connection.execute(f"NOTIFY {CHANNEL}")
    return row


async def depth(connection: asyncpg.Connection) -> dict[str, int]:
    rows = await connection.fetch("SELECT state, count(*) AS n FROM outbox GROUP BY state")
    counts = dict.fromkeys(STATES, 0)
    counts.update({r["state"]: int(r["n"]) for r in rows})
    return counts


async def purge_delivered(connection: asyncpg.Connection, older_than: float,
                          limit: int = 1000) -> int:
    deleted = await connection.fetchval(
        """WITH old AS (SELECT id FROM outbox WHERE state = 'delivered'
                        AND updated_at < now() - make_interval(secs => $1) LIMIT $2)
           , gone AS (DELETE FROM outbox WHERE id IN (SELECT id FROM old) RETURNING 1)
           SELECT count(*) FROM gone""", older_than, limit)
    return int(deleted or 0)
