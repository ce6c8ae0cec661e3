"""Webhook steps become outbox rows, written in the run's transaction.

Nothing is sent from inside the transaction: the outbox worker (the ``outbox`` role,
:mod:`engine.outbox`) delivers the row after the commit, signed, to a vetted address, with
retries (``1 + retries`` attempts) and a dead-letter state. A rolled-back transition leaves no
row, so it calls nobody.
"""

from __future__ import annotations

import asyncpg
import orjson

from automation.runtime.interpreter import WebhookEffect
from engine.outbox import store
from engine.outbox.targets import TargetRefused, parse_url

STEP_KIND = "step"


def step_row(effect: WebhookEffect, contact_id: str) -> store.NewRow:
    """The outbox row of a webhook step of ``contact_id``'s run (:class:`TargetRefused` for a
    URL that cannot be called at all)."""
    target = parse_url(effect.url)
    return store.NewRow(STEP_KIND, effect.url, target.endpoint,
                        orjson.dumps(effect.body, default=str), effect.timeout,
                        1 + effect.retries, headers=effect.headers, contact_id=contact_id)


async def queue_webhooks(connection: asyncpg.Connection, effects: list[WebhookEffect],
                         contact_id: str) -> list[tuple[str, str, str]]:
    """Queue the steps' requests; (step id, log action, detail) for the run's log."""
    logged: list[tuple[str, str, str]] = []
    rows = []
    for effect in effects:
        try:
            row = step_row(effect, contact_id)
        except TargetRefused as exc:
            logged.append((effect.step_id, "webhook_failed", f"not queued: {exc}"))
            continue
        rows.append(row)
        logged.append((effect.step_id, "webhook_queued",
                       f"POST {effect.url} (webhook-id {row.message_id})"))
    await store.enqueue(connection, rows)
    return logged
