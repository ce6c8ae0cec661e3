"""The suppression list in Postgres: add, remove, look up, page through, count soft bounces.

Every change appends an event (``suppression_added`` / ``suppression_removed``) in the same
transaction, so the event log tells who was suppressed, when, why and by what. Call these
inside the caller's transaction when the change must commit with something else.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from engine.eventlog import append_rows
from engine.privacy.hashing import hash_sql
from mta.suppression.rules import ERASED, SOFT_BOUNCES, Suppression

INSERT = """
    INSERT INTO suppressions (email, category, reason, source, message_id, detail, created_at)
    SELECT r->>0, r->>1, r->>2, r->>3, (r->>4)::uuid, r->>5, (r->>6)::timestamptz
    FROM jsonb_array_elements($1::jsonb) AS r
    ON CONFLICT (email, category) DO NOTHING
    RETURNING email, category, reason, source, message_id, detail
"""

# Contact ids for addresses: the message's contact when the entry names one, else a contact
# with that address, else the address itself (as the queue does for mail with no contact).
CONTACTS = """
    SELECT r.email,
           coalesce((SELECT m.contact_id FROM outbound_messages m WHERE m.id = r.message_id),
                    (SELECT c.contact_id FROM contacts c WHERE lower(c.email) = r.email
                     ORDER BY c.contact_id LIMIT 1),
                    r.email) AS contact_id
    FROM unnest($1::text[], $2::uuid[]) AS r(email, message_id)
"""

# Entries of these addresses, and the addresses of erased contacts (kept only as the privacy
# hash of the normalised address, engine.privacy.hashing): those answer reason 'erased'.
LOOKUP = f"""
    SELECT email, reason, category FROM suppressions WHERE email = ANY($1::text[])
    UNION ALL
    SELECT a.email, '{ERASED}', '' FROM unnest($1::text[]) AS a(email) CROSS JOIN privacy_key k
    CROSS JOIN LATERAL (SELECT 1 FROM erased_addresses e WHERE e.hash = {hash_sql("a.email")}
                        LIMIT 1) AS hit  -- LIMIT: one index probe per address, never a scan
"""

ERASED_ADDRESS = f"""
    SELECT EXISTS (SELECT 1 FROM erased_addresses e CROSS JOIN privacy_key k
                   WHERE e.hash = {hash_sql("$1::text")})
"""
UNBLOCK_ERASED = f"""
    WITH gone AS (DELETE FROM erased_addresses e USING privacy_key k
                  WHERE e.hash = {hash_sql("$1::text")} RETURNING 1)
    SELECT count(*) > 0 FROM gone
"""

COLUMNS = "id, email, category, reason, source, message_id, detail, created_at"


@dataclass(frozen=True, slots=True)
class Entry:
    id: int
    email: str
    category: str
    reason: str
    source: str
    message_id: uuid.UUID | None
    detail: str
    created_at: datetime

    def to_json(self) -> dict[str, Any]:
        return {"email": self.email, "category": self.category, "reason": self.reason,
                "source": self.source,
                "message_id": str(self.message_id) if self.message_id else None,
                "detail": self.detail, "created_at": self.created_at.isoformat()}


def entry_from(row: asyncpg.Record) -> Entry:
    return Entry(row["id"], row["email"], row["category"], row["reason"], row["source"],
                 row["message_id"], row["detail"] or "", row["created_at"])


async def add(connection: asyncpg.Connection, entries: Sequence[Suppression],
              now: datetime) -> list[Suppression]:
    """Add entries (an address already suppressed for that category keeps its first entry);
    returns those that were new, each also logged as a ``suppression_added`` event."""
    if not entries:
        return []
    rows = [[e.email, e.category, e.reason, e.source, str(e.message_id) if e.message_id
             else None, e.detail[:1000], now.isoformat()] for e in entries]
    inserted = await connection.fetch(INSERT, rows)
    added = [Suppression(r["email"], r["reason"], r["category"], r["source"],
                         r["message_id"], r["detail"] or "") for r in inserted]
    await _log(connection, "suppression_added", added, now)
    return added


async def remove(connection: asyncpg.Connection, email: str, category: str | None,
                 source: str, now: datetime) -> list[Suppression]:
    """Remove an address's entries (only ``category``'s when given); logs each removal.

    Without a category this also lifts the block an erasure left on the address (its privacy
    hash in ``erased_addresses``), reported as an entry of reason ``erased``: an erased person
    who comes back can be mailed again once an operator removes the address deliberately."""
    if category is None:
        rows = await connection.fetch(
            "DELETE FROM suppressions WHERE email = $1 RETURNING email, category, reason, "
            "message_id", email)
    else:
        rows = await connection.fetch(
            "DELETE FROM suppressions WHERE email = $1 AND category = $2 "
            "RETURNING email, category, reason, message_id", email, category)
    removed = [Suppression(r["email"], r["reason"], r["category"], source, r["message_id"])
               for r in rows]
    if category is None and await connection.fetchval(UNBLOCK_ERASED, email):
        removed.append(Suppression(email, ERASED, "", source,
                                   detail="the address of an erased contact"))
    await _log(connection, "suppression_removed", removed, now)
    return removed


async def is_erased(connection: asyncpg.Connection, email: str) -> bool:
    """Whether this normalised address belonged to an erased contact (and is still blocked)."""
    return bool(await connection.fetchval(ERASED_ADDRESS, email))


async def lookup(connection: asyncpg.Connection,
                 emails: Iterable[str]) -> dict[str, list[tuple[str, str]]]:
    """``(reason, category)`` entries of each of these normalised addresses that has any."""
    found: dict[str, list[tuple[str, str]]] = {}
    wanted = list(set(emails))
    if wanted:
        for row in await connection.fetch(LOOKUP, wanted):
            found.setdefault(row["email"], []).append((row["reason"], row["category"]))
    return found


async def entries_for(connection: asyncpg.Connection, email: str) -> list[Entry]:
    rows = await connection.fetch(
        f"SELECT {COLUMNS} FROM suppressions WHERE email = $1 ORDER BY id", email)
    return [entry_from(row) for row in rows]


async def page(connection: asyncpg.Connection, after: int, limit: int,
               reason: str | None = None) -> list[Entry]:
    """Entries in insertion order after the cursor ``after`` (an entry id)."""
    rows = await connection.fetch(
        f"SELECT {COLUMNS} FROM suppressions WHERE id > $1 AND ($3::text IS NULL OR "
        "reason = $3) ORDER BY id LIMIT $2", after, limit, reason)
    return [entry_from(row) for row in rows]


async def record_soft_bounces(connection: asyncpg.Connection,
                              bounces: Sequence[tuple[str, uuid.UUID | None]], limit: int,
                              window: float, now: datetime) -> list[Suppression]:
    """Count soft bounces ``(normalised address, message id)``; an address with ``limit`` or
    more within ``window`` seconds is suppressed (reason ``soft_bounces``)."""
    if not bounces or limit <= 0:
        return []
    await connection.executemany(
        "INSERT INTO soft_bounces (email, at, message_id) VALUES ($1, $2, $3)",
        [(email, now, message_id) for email, message_id in bounces])
    emails = list({email for email, _ in bounces})
    rows = await connection.fetch(
        "SELECT email, count(DISTINCT coalesce(message_id::text, at::text)) AS n "
        "FROM soft_bounces WHERE email = ANY($1::text[]) AND at > $2 GROUP BY email",
        emails, now - timedelta(seconds=window))
    last = dict(bounces)
    over = [Suppression(r["email"], SOFT_BOUNCES, source="soft_bounces",
                        message_id=last.get(r["email"]),
                        detail=f"{r['n']} soft bounces within {window / 86400:g} days")
            for r in rows if r["n"] >= limit]
    return await add(connection, over, now)


async def _log(connection: asyncpg.Connection, kind: str, entries: list[Suppression],
               now: datetime) -> None:
    if not entries:
        return
    contacts = {r["email"]: r["contact_id"] for r in await connection.fetch(
        CONTACTS, [e.email for e in entries], [e.message_id for e in entries])}
    await append_rows(connection, [
        (None, kind, contacts.get(e.email, e.email), e.email,
         {"email": e.email, "reason": e.reason, "category": e.category, "source": e.source,
          "message_id": str(e.message_id) if e.message_id else None, "detail": e.detail},
         now, "mta") for e in entries])
