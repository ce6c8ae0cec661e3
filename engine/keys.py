"""API keys: generation, hashing and storage. Only a SHA-256 of the secret is ever stored.

A secret key looks like ``hk_<id>_<secret>``; a publishable site key (tracking pixel only)
like ``hp_<id>_<secret>``. The id is public and indexes the row; the secret is 32 random bytes.

A publishable key sits in web pages, so it only records the event types and properties it was
created with, and it has a second secret, shown once, that the site's backend uses to sign
contact tokens (:mod:`engine.contact_tokens`); that one is stored in clear so tokens can be
verified.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

import asyncpg

from engine.addresses import AddressError, ascii_host

SCOPES = ("events:write", "contacts:read", "contacts:write", "messages:write",
          "messages:read", "workflows:read", "suppressions:read", "suppressions:write",
          "queue:read", "queue:write", "webhooks:read", "webhooks:write", "privacy",
          "admin")
DEFAULT_SCOPES = ("events:write", "contacts:read", "contacts:write", "messages:write",
                  "messages:read")
# Event types only Herald itself writes (outcomes, contact changes): never from a browser.
RESERVED_EVENT_TYPES = frozenset({"contact_updated", "contact_merged", "unsubscribed"})
RESERVED_EVENT_PREFIXES = ("email_", "automation_")
MAX_KEY_PROPERTIES = 50
_PROPERTY_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
SECRET_PREFIX = "hk"
PUBLISHABLE_PREFIX = "hp"


class KeyFormatError(ValueError):
    """The presented string is not shaped like a Herald key."""


@dataclass(frozen=True, slots=True)
class ApiKey:
    key_id: str
    name: str
    scopes: frozenset[str]
    publishable: bool
    event_types: frozenset[str]
    secret_hash: bytes
    revoked: bool
    token_secret: str | None = None  # signs contact tokens (publishable keys)
    properties: frozenset[str] = frozenset()  # event properties a browser may send
    # Domains (A-labels) this key may send from; empty: those of the configured DKIM keys.
    from_domains: frozenset[str] = frozenset()

    def allows(self, scope: str) -> bool:
        return not self.publishable and (scope in self.scopes or "admin" in self.scopes)


@dataclass(frozen=True, slots=True)
class NewKey:
    key_id: str
    token: str  # shown once, never stored
    token_secret: str | None = None  # publishable keys: shown once, signs contact tokens


def hash_secret(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def split_token(token: str) -> tuple[str, str, str]:
    """``hk_abc_def`` -> ("hk", "abc", "def")."""
    parts = token.split("_")
    if len(parts) != 3 or parts[0] not in (SECRET_PREFIX, PUBLISHABLE_PREFIX) \
            or not parts[1] or not parts[2] or len(token) > 200:
        raise KeyFormatError("not a Herald API key")
    return parts[0], parts[1], parts[2]


def secret_matches(key: ApiKey, secret: str) -> bool:
    return hmac.compare_digest(key.secret_hash, hash_secret(secret))


def validate_scopes(scopes: list[str]) -> tuple[str, ...]:
    for scope in scopes:
        if scope not in SCOPES:
            raise ValueError(f"unknown scope {scope!r} (known: {', '.join(SCOPES)})")
    return tuple(dict.fromkeys(scopes))


def validate_publishable(event_types: tuple[str, ...], properties: tuple[str, ...]) -> None:
    """What a browser may record: no built-in event types, plain property names."""
    if not event_types:
        raise ValueError("a publishable key needs at least one --event-type it may record")
    for event_type in event_types:
        if event_type in RESERVED_EVENT_TYPES or event_type.startswith(RESERVED_EVENT_PREFIXES):
            raise ValueError(f"--event-type {event_type!r}: only Herald itself records it")
    if len(properties) > MAX_KEY_PROPERTIES:
        raise ValueError(f"at most {MAX_KEY_PROPERTIES} --property names")
    for name in properties:
        if not _PROPERTY_NAME.match(name):
            raise ValueError(f"--property {name!r}: a property name is a letter or '_', then "
                             "letters, digits or '_' (at most 64)")


def sender_domain(text: str) -> str:
    """A domain a key may send from, as lower-case A-labels (``Bücher.example`` ->
    ``xn--bcher-kva.example``)."""
    try:
        return ascii_host(text)
    except AddressError as exc:
        raise ValueError(f"--from-domain {text!r}: {exc}") from None


async def create_key(connection: asyncpg.Connection, name: str, scopes: tuple[str, ...],
                     publishable: bool = False, event_types: tuple[str, ...] = (),
                     properties: tuple[str, ...] = (),
                     from_domains: tuple[str, ...] = ()) -> NewKey:
    """``properties``: the event properties a publishable key's pixel hits may carry;
    ``from_domains``: the domains a secret key may send mail from."""
    if not name.strip():
        raise ValueError("a key needs a --name")
    if publishable:
        validate_publishable(event_types, properties)
        if from_domains:
            raise ValueError("--from-domain is for secret keys")
    elif properties:
        raise ValueError("--property is for publishable keys")
    domains = list(dict.fromkeys(sender_domain(domain) for domain in from_domains))
    key_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32).replace("_", "x")
    token_secret = secrets.token_urlsafe(32) if publishable else None
    prefix = PUBLISHABLE_PREFIX if publishable else SECRET_PREFIX
    await connection.execute(
        "INSERT INTO api_keys (key_id, name, secret_hash, scopes, publishable, event_types, "
        "token_secret, properties, from_domains) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        key_id, name.strip(), hash_secret(secret), list(() if publishable else scopes),
        publishable, list(event_types), token_secret, list(dict.fromkeys(properties)), domains,
    )
    return NewKey(key_id, f"{prefix}_{key_id}_{secret}", token_secret)


async def fetch_key(connection: asyncpg.Connection, key_id: str) -> ApiKey | None:
    row = await connection.fetchrow(
        "SELECT key_id, name, scopes, publishable, event_types, secret_hash, token_secret, "
        "properties, from_domains, revoked_at IS NOT NULL AS revoked FROM api_keys "
        "WHERE key_id = $1", key_id)
    if row is None:
        return None
    return ApiKey(row["key_id"], row["name"], frozenset(row["scopes"]), row["publishable"],
                  frozenset(row["event_types"]), bytes(row["secret_hash"]), row["revoked"],
                  row["token_secret"], frozenset(row["properties"]),
                  frozenset(row["from_domains"]))


async def list_keys(connection: asyncpg.Connection) -> list[asyncpg.Record]:
    return await connection.fetch(
        "SELECT key_id, name, scopes, publishable, event_types, properties, from_domains, "
        "created_at, revoked_at FROM api_keys ORDER BY created_at")


async def revoke_key(connection: asyncpg.Connection, key_id: str) -> bool:
    status = await connection.execute(
        "UPDATE api_keys SET revoked_at = now() WHERE key_id = $1 AND revoked_at IS NULL",
        key_id)
    return bool(status.endswith(" 1"))


async def fetch_token_secret(connection: asyncpg.Connection, key_id: str) -> str | None:
    """The contact-token secret of an active publishable key (for ``herald keys
    contact-token``), or None."""
    secret: str | None = await connection.fetchval(
        "SELECT token_secret FROM api_keys WHERE key_id = $1 AND publishable "
        "AND revoked_at IS NULL", key_id)
    return secret
