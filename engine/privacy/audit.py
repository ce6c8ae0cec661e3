"""The privacy audit log: one row per export and erase, naming the actor (an API key id, or
``cli``) and the contact only by its privacy hash, with counts; never personal data."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg

EXPORT = "export"
ERASE = "erase"


async def record(connection: asyncpg.Connection, action: str, actor: str, contact_hash: str,
                 detail: dict[str, Any], now: datetime) -> None:
    await connection.execute(
        "INSERT INTO privacy_audit (at, action, actor, contact_hash, detail) "
        "VALUES ($1, $2, $3, $4, $5)", now, action, actor, contact_hash, detail)


async def erased_before(connection: asyncpg.Connection, contact_hash: str) -> datetime | None:
    """When this contact was erased, if it was."""
    at: datetime | None = await connection.fetchval(
        "SELECT min(at) FROM privacy_audit WHERE contact_hash = $1 AND action = 'erase' "
        "AND NOT coalesce((detail->>'already_erased')::boolean, false)", contact_hash)
    return at
