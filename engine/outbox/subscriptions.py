"""Outcome-webhook subscriptions: a URL, the event types it wants, its signing secret."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

import asyncpg

from engine.errors import HeraldError
from engine.outbox.events import EVENT_TYPES, unknown_event_types
from engine.outbox.signing import InvalidSecret, new_secret, parse_secret
from engine.outbox.targets import TargetRefused, parse_url
from engine.timestamps import format_rfc3339

MAX_EVENT_TYPES = len(EVENT_TYPES)


class InvalidSubscription(HeraldError):
    """A subscription's URL, event types or secret is wrong (the message names which)."""


@dataclass(frozen=True, slots=True)
class NewSubscription:
    url: str
    endpoint: str
    event_types: tuple[str, ...]
    secret: str
    secret_given: bool


def parse_subscription(url: object, event_types: object,
                       secret: object = None) -> NewSubscription:
    """Check the shape of a new subscription (not yet its addresses)."""
    try:
        target = parse_url(url)
    except TargetRefused as exc:
        raise InvalidSubscription(f"url: {exc}") from None
    if (not isinstance(event_types, list | tuple) or not event_types
            or not all(isinstance(name, str) for name in event_types)):
        raise InvalidSubscription("events: give one or more event types (known: "
                                  f"{', '.join(EVENT_TYPES)})")
    unknown = unknown_event_types(list(event_types))
    if unknown:
        raise InvalidSubscription(f"events: unknown event type {unknown[0]!r} (known: "
                                  f"{', '.join(EVENT_TYPES)})")
    if secret is not None:
        if not isinstance(secret, str):
            raise InvalidSubscription("secret: must be a string whsec_<base64>")
        try:
            parse_secret(secret)
        except InvalidSecret as exc:
            raise InvalidSubscription(f"secret: {exc}") from None
    assert isinstance(url, str)
    return NewSubscription(url, target.endpoint, tuple(dict.fromkeys(event_types)),
                           secret if isinstance(secret, str) else new_secret(),
                           secret is not None)


def subscription_json(row: asyncpg.Record, secret: str | None = None) -> dict[str, Any]:
    shown: dict[str, Any] = {"id": row["id"], "url": row["url"],
                             "events": list(row["event_types"]),
                             "created_at": format_rfc3339(row["created_at"])}
    if secret is not None:
        shown["secret"] = secret
    return shown


async def create(connection: asyncpg.Connection, new: NewSubscription) -> asyncpg.Record:
    row: asyncpg.Record = await connection.fetchrow(
        "INSERT INTO webhook_subscriptions (id, url, endpoint, event_types, secret) "
        "VALUES ($1, $2, $3, $4, $5) RETURNING id, url, event_types, created_at",
        "wh_" + secrets.token_hex(8), new.url, new.endpoint, list(new.event_types), new.secret)
    return row


async def list_all(connection: asyncpg.Connection) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await connection.fetch(
        "SELECT id, url, event_types, created_at FROM webhook_subscriptions "
        "ORDER BY created_at, id")
    return rows


async def get(connection: asyncpg.Connection, subscription_id: str) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await connection.fetchrow(
        "SELECT id, url, endpoint, event_types, secret, created_at FROM webhook_subscriptions "
        "WHERE id = $1", subscription_id)
    return row


async def delete(connection: asyncpg.Connection, subscription_id: str) -> bool:
    """Remove a subscription; requests already in the outbox are still delivered."""
    return bool(await connection.fetchval(
        "DELETE FROM webhook_subscriptions WHERE id = $1 RETURNING true", subscription_id))


async def matching(connection: asyncpg.Connection,
                   event_types: list[str]) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await connection.fetch(
        "SELECT id, url, endpoint, event_types, secret FROM webhook_subscriptions "
        "WHERE event_types && $1::text[] ORDER BY id", event_types)
    return rows
