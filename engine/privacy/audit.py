"""The privacy audit log: one row per export and erase, naming the actor (an API key id, or
``cli``) and the contact only by its privacy hash, with counts; never personal data."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg

from engine.privacy.hashing import hash_sql

EXPORT = "export"
ERASE = "erase"


async def record(connection: asyncpg.Connection, action: str, actor: str, contact_hash: str,
                 detail: dict[str, Any], now: datetime) -> None:
    await connection.execute(
        "INSERT INTO privacy_audit (at, action, actor, contact_hash, detail) "
        "VALUES ($1, $2, $3, $4, $5)", now, action, actor, contact_hash, detail)


def erased_sql(contact_id: str) -> str:
    """A SQL condition: the contact ``contact_id`` (an expression) was erased and nothing was
    logged for it since (a contact who comes back after an erase is a new one)."""
    hashed = hash_sql(f"'contact:' || {contact_id}")
    return f"""EXISTS (SELECT 1 FROM privacy_audit a CROSS JOIN privacy_key k
        WHERE a.action = 'erase' AND a.contact_hash = encode({hashed}, 'hex')
          AND NOT EXISTS (SELECT 1 FROM events e WHERE e.contact_id = {contact_id}
                          AND e.received_at > a.at))"""


async def erased_before(connection: asyncpg.Connection, contact_hash: str) -> datetime | None:
    """When this contact was erased, if it was."""
    at: datetime | None = await connection.fetchval(
        "SELECT min(at) FROM privacy_audit WHERE contact_hash = $1 AND action = 'erase' "
        "AND NOT coalesce((detail->>'already_erased')::boolean, false)", contact_hash)
    return at
