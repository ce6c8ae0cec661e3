"""What the API and the CLI do with subscriptions and outbox rows (one implementation)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg

from engine.errors import HeraldError
from engine.outbox import store, subscriptions
from engine.outbox.events import TEST_EVENT, body
from engine.outbox.settings import WebhooksSettings
from engine.outbox.subscriptions import InvalidSubscription, NewSubscription
from engine.outbox.targets import TargetRefused, parse_allow
from engine.outbox.transport import HostResolver, TargetUnresolved, vet_url


class NotFound(HeraldError):
    """No subscription or outbox row with that id."""


class NotDead(HeraldError):
    """Only dead-lettered outbox rows can be retried."""


@dataclass(frozen=True, slots=True)
class Vetter:
    """Checks a new subscription's URL as the worker will (allow list, public addresses)."""

    allow: frozenset[str]
    resolver: HostResolver

    @classmethod
    def from_settings(cls, settings: WebhooksSettings) -> Vetter:
        return cls(parse_allow(settings.allow), HostResolver(settings.resolver))

    async def check(self, new: NewSubscription) -> None:
        try:
            await vet_url(new.url, self.allow, self.resolver)
        except (TargetRefused, TargetUnresolved) as exc:
            raise InvalidSubscription(f"url: {exc}") from None


async def add(connection: asyncpg.Connection, new: NewSubscription,
              vetter: Vetter) -> dict[str, Any]:
    """The new subscription, its secret included (shown this once)."""
    await vetter.check(new)
    row = await subscriptions.create(connection, new)
    return subscriptions.subscription_json(row, new.secret)


async def remove(connection: asyncpg.Connection, subscription_id: str) -> None:
    if not await subscriptions.delete(connection, subscription_id):
        raise NotFound(f"no webhook subscription with id {subscription_id!r}")


async def send_test(connection: asyncpg.Connection, subscription_id: str) -> dict[str, Any]:
    """Queue a ``webhook_test`` request to the subscription; the outbox row."""
    sub = await subscriptions.get(connection, subscription_id)
    if sub is None:
        raise NotFound(f"no webhook subscription with id {subscription_id!r}")
    row = store.NewRow("test", sub["url"], sub["endpoint"],
                       body(TEST_EVENT, datetime.now(UTC), {"subscription_id": sub["id"]}),
                       subscription_id=sub["id"], event_type=TEST_EVENT, secret=sub["secret"])
    await store.enqueue(connection, [row])
    queued = await connection.fetchrow(
        f"SELECT {store.COLUMNS} FROM outbox WHERE message_id = $1", row.message_id)
    return store.row_json(queued)


async def retry(connection: asyncpg.Connection, row_id: int) -> dict[str, Any]:
    row = await store.retry(connection, row_id)
    if row is None:
        existing = await store.get_row(connection, row_id)
        if existing is None:
            raise NotFound(f"no outbox row with id {row_id}")
        raise NotDead(f"outbox row {row_id} is {existing['state']}, not dead: only "
                      "dead-lettered rows can be retried")
    return store.row_json(row)
