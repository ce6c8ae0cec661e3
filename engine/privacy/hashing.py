"""The privacy hash: HMAC-SHA256 under a key made once per database (``privacy_key``).

It names erased addresses (``erased_addresses``) and contacts in the audit log without keeping
them. The key is stored as its RFC 2104 pads, so Python (:func:`keyed_hash`) and SQL
(:func:`hash_sql`, built-in ``sha256()`` only) compute the same HMAC.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

import asyncpg

_BLOCK = 64  # SHA-256's block size


@dataclass(frozen=True, slots=True)
class HashKey:
    inner_pad: bytes
    outer_pad: bytes


def key_from_secret(secret: bytes) -> HashKey:
    """The pads of an HMAC-SHA256 key (keys longer than a block are hashed first)."""
    if len(secret) > _BLOCK:
        secret = hashlib.sha256(secret).digest()
    padded = secret.ljust(_BLOCK, b"\0")
    return HashKey(bytes(b ^ 0x36 for b in padded), bytes(b ^ 0x5C for b in padded))


def keyed_hash(key: HashKey, text: str) -> bytes:
    """HMAC-SHA256(key, text as UTF-8)."""
    inner = hashlib.sha256(key.inner_pad + text.encode()).digest()
    return hashlib.sha256(key.outer_pad + inner).digest()


def hash_sql(text_expression: str, key_alias: str = "k") -> str:
    """The same HMAC in SQL, over a ``privacy_key`` row aliased ``key_alias``."""
    return (f"sha256({key_alias}.outer_pad || sha256({key_alias}.inner_pad || "
            f"convert_to({text_expression}, 'UTF8')))")


async def load_key(connection: asyncpg.Connection) -> HashKey:
    """The database's key, made on first use (safe when two processes race)."""
    fresh = key_from_secret(secrets.token_bytes(32))
    await connection.execute(
        "INSERT INTO privacy_key (id, inner_pad, outer_pad) VALUES (1, $1, $2) "
        "ON CONFLICT (id) DO NOTHING", fresh.inner_pad, fresh.outer_pad)
    row = await connection.fetchrow("SELECT inner_pad, outer_pad FROM privacy_key WHERE id = 1")
    return HashKey(bytes(row["inner_pad"]), bytes(row["outer_pad"]))


def contact_hash(key: HashKey, contact_id: str) -> str:
    """How the audit log names a contact: hex of the HMAC of ``contact:<id>``."""
    return keyed_hash(key, f"contact:{contact_id}").hex()
