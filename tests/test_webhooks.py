"""Webhook steps go through the outbox: the step writes a row in the run's transaction and the
outbox worker sends it after the commit (a rolled-back transition calls nobody); workflow events
(entered, completed) reach subscribed endpoints the same way."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from standardwebhooks.webhooks import Webhook

from automation.loading.catalog import Catalog
from automation.runtime.runs import Run
from automation.stores.postgres import PgStore
from engine.database import Database
from engine.outbox import store, subscriptions
from engine.outbox.service import step_secret
from engine.outbox.subscriptions import parse_subscription
from tests.support.automation import automation_service, post_event, wait_for
from tests.support.webhook_receiver import webhook_receiver
from tests.test_outbox import FAST, outbox, until

WORKFLOW = """
trigger: {{type: event, event: order_paid}}
steps:
  - id: notify-crm
    webhook:
      url: {url}
      headers: {{X-Source: herald}}
      body: {{contact: "{{{{ contact.id }}}}", order: "{{{{ event.order }}}}"}}
      retries: 1
"""


def hook_catalog(tmp_path: Path, url: str) -> Catalog:
    (tmp_path / "wf").mkdir()
    (tmp_path / "wf" / "crm.yaml").write_text(WORKFLOW.format(url=url))
    (tmp_path / "tpl").mkdir()
    return Catalog.load(tmp_path / "wf", tmp_path / "tpl")


async def logged(connection: Any, action: str) -> list[str]:
    return [row["detail"] for row in await connection.fetch(
        "SELECT detail FROM workflow_log WHERE action = $1 ORDER BY id", action)]


async def test_a_webhook_step_is_queued_in_the_transaction_and_sent_after_it(
        database: Database, database_url: str, tmp_path: Path) -> None:
    async with webhook_receiver() as receiver:
        catalog = hook_catalog(tmp_path, receiver.url(path="/crm"))
        async with automation_service(database, catalog):
            await post_event(database, "c1", "order_paid", email="c1@example.com", order="A7")

            async def queued(connection: Any) -> bool:
                return bool(await logged(connection, "webhook_queued"))

            await wait_for(database_url, queued)
        assert receiver.received == []  # nothing is called before the outbox worker runs
        async with database.connection() as connection:
            [row] = await store.list_rows(connection, None, 10, None)
            secret = await step_secret(connection, FAST)
            [detail] = await logged(connection, "webhook_queued")
        assert (row["kind"], row["state"], row["max_attempts"]) == ("step", "pending", 2)
        assert row["message_id"] in detail
        async with outbox(database) as service:
            await receiver.wait_for(1)
            await until(lambda: _delivered(database), service)
    [item] = receiver.received
    assert Webhook(secret).verify(item.body, item.headers) == {"contact": "c1", "order": "A7"}
    assert item.headers["x-source"] == "herald" and item.webhook_id == row["message_id"]


async def _delivered(database: Database) -> bool:
    async with database.connection() as connection:
        return bool(await connection.fetchval(
            "SELECT bool_and(state = 'delivered') FROM outbox"))


class FailingSave(PgStore):
    """Every transition fails after its effects (the webhook row included) were written."""

    async def _save_runs(self, connection: Any, runs: list[Run], started: set[int]) -> None:
        raise RuntimeError("the transition fails after the webhook step")


async def test_a_rolled_back_transition_fires_no_webhook(
        database: Database, database_url: str, tmp_path: Path) -> None:
    async with webhook_receiver() as receiver:
        catalog = hook_catalog(tmp_path, receiver.url(path="/crm"))
        async with outbox(database), automation_service(database, catalog,
                                                        store_type=FailingSave):
            await post_event(database, "c1", "order_paid", email="c1@example.com", order="A7")
            await post_event(database, "c2", "noop")  # processed (and notified) after it

            async def quarantined(connection: Any) -> bool:
                return bool(await connection.fetchval(
                    "SELECT count(*) FROM automation_quarantine"))

            await wait_for(database_url, quarantined)
        async with database.connection() as connection:
            assert await connection.fetchval("SELECT count(*) FROM outbox") == 0
            assert await logged(connection, "webhook_queued") == []
    assert receiver.received == []


async def test_workflow_events_reach_subscribers(
        database: Database, database_url: str, tmp_path: Path) -> None:
    async with webhook_receiver() as receiver:
        catalog = hook_catalog(tmp_path, receiver.url(path="/crm"))
        new = parse_subscription(receiver.url(path="/events"),
                                 ["workflow_entered", "workflow_completed"])
        async with database.connection() as connection:
            sub = await subscriptions.create(connection, new)
        async with outbox(database), automation_service(database, catalog):
            await post_event(database, "c9", "order_paid", email="c9@example.com", order="B1")
            await receiver.wait_for(3)  # the step's own request and two events
    events = [item for item in receiver.received
              if orjson.loads(item.body).get("type", "").startswith("workflow_")]
    payloads = [Webhook(new.secret).verify(item.body, item.headers) for item in events]
    assert sorted(p["type"] for p in payloads) == ["workflow_completed", "workflow_entered"]
    assert all(p["data"]["workflow"] == "crm" and p["data"]["contact_id"] == "c9"
               for p in payloads)
    assert datetime.fromisoformat(payloads[0]["timestamp"]) <= datetime.now(UTC)
    async with database.connection() as connection:
        rows = await connection.fetch(
            "SELECT subscription_id, event_type FROM outbox WHERE kind = 'outcome'")
        assert {(r["subscription_id"], r["event_type"]) for r in rows} == {
            (sub["id"], "workflow_entered"), (sub["id"], "workflow_completed")}
        named = await connection.fetch("SELECT kind, contact_id FROM outbox")
    # Every request (the step's own and the two events) names its contact, so an erase finds it.
    assert sorted((r["kind"], r["contact_id"]) for r in named) == [
        ("outcome", "c9"), ("outcome", "c9"), ("step", "c9")]
