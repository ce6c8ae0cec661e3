"""Unsubscribing the recipient of one message (for the one-click URL and the mailto address):
the suppression entry and the ``email_unsubscribed`` event commit together, and a repeated
request changes nothing more."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from engine.eventlog import append_rows
from engine.link_keys import LinkKeys
from mta.suppression import store
from mta.suppression.addresses import normalise_lenient
from mta.suppression.rules import ALL_CATEGORIES, UNSUBSCRIBE, Suppression, message_category


@dataclass(frozen=True, slots=True)
class MessageRef:
    id: uuid.UUID
    recipient: str
    contact_id: str
    metadata: dict[str, Any]

    @property
    def category(self) -> str:
        return message_category(self.metadata)


async def message_ref(connection: asyncpg.Connection, message_id: uuid.UUID) -> MessageRef | None:
    row = await connection.fetchrow(
        "SELECT id, recipient, contact_id, metadata FROM outbound_messages WHERE id = $1",
        message_id)
    return None if row is None else MessageRef(row["id"], row["recipient"], row["contact_id"],
                                               dict(row["metadata"]))


async def unsubscribe(connection: asyncpg.Connection, message: MessageRef, *, all_mail: bool,
                      source: str, now: datetime) -> str:
    """Suppress the message's recipient for its category (all mail when it has none, or when
    ``all_mail``); returns the category suppressed (``""``: all mail). Idempotent."""
    category = ALL_CATEGORIES if all_mail else message.category
    address = normalise_lenient(message.recipient)
    await store.add(connection, [Suppression(address, UNSUBSCRIBE, category, source,
                                             message.id)], now)
    properties: dict[str, Any] = {
        "message_id": str(message.id), "recipient": message.recipient,
        "unsubscribe_category": category, "source": source}
    for key in ("workflow", "step", "run_id", "template", "category"):
        if key in message.metadata:
            properties.setdefault(key, message.metadata[key])
    await append_rows(connection, [(
        f"unsubscribe:{message.id}:{category}", "email_unsubscribed", message.contact_id,
        message.recipient, properties, now, "mta")])
    return category


async def load_link_keys(connection: asyncpg.Connection, configured: Sequence[str]) -> LinkKeys:
    """The configured keys, or one generated once and shared through the database (key id
    ``1``)."""
    if configured:
        return LinkKeys.parse(configured)
    await connection.execute(
        "INSERT INTO mta_secrets (name, value) VALUES ('links', $1) ON CONFLICT DO NOTHING",
        secrets.token_bytes(32))
    value = await connection.fetchval("SELECT value FROM mta_secrets WHERE name = 'links'")
    return LinkKeys("1", {"1": bytes(value)})
