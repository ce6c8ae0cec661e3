"""The outbox end to end on loopback: outcome webhooks subscribed over HTTP reach a real HTTP
endpoint signed (checked with the ``standardwebhooks`` verifier), retried after 500s with the
same webhook-id, dead-lettered after N attempts and revived through the API; per-endpoint limits;
two workers never send one row twice; names resolving to loopback (a real DNS server) refused
unless allow-listed; bad input to the API."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook

from engine.database import Database
from engine.eventlog import LogEvent, append_events
from engine.outbox import store
from engine.outbox.service import OutboxService
from engine.outbox.settings import WebhooksSettings
from engine.outbox.transport import HostResolver, TargetRefused, guarded_client
from engine.values import HostPort
from tests.support.app import RunningApp, running_app
from tests.support.dns_server import DnsTestServer, zone_text
from tests.support.webhook_receiver import WebhookReceiver, webhook_receiver

FAST = WebhooksSettings(allow=("127.0.0.1",), backoff_base=0.02, backoff_cap=0.05,
                        poll_interval=0.05, max_attempts=3, timeout=5.0, lease=10.0)
LIMIT = 20.0


@asynccontextmanager
async def outbox(database: Database, settings: WebhooksSettings = FAST
                 ) -> AsyncIterator[OutboxService]:
    service = OutboxService(database, settings)
    await service.start()
    try:
        yield service
    finally:
        await service.stop(1.0)


async def until(check: Callable[[], Awaitable[bool]], *services: OutboxService,
                timeout: float = LIMIT) -> None:
    """Re-check a database condition each time one of the services records an outcome."""
    events = [service.worker.recorded for service in services if service.worker]
    async with asyncio.timeout(timeout):
        while True:
            for event in events:
                event.clear()
            if await check():
                return
            waits = [asyncio.ensure_future(event.wait()) for event in events]
            try:
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for wait in waits:
                    wait.cancel()


async def rows(database: Database) -> list[Any]:
    async with database.connection() as connection:
        return list(await store.list_rows(connection, None, 1000, None))


async def subscribe(app: RunningApp, url: str, *events: str) -> dict[str, Any]:
    async with app.client() as client:
        answer = await client.post("/v1/webhooks", json={"url": url, "events": list(events)})
    assert answer.status_code == 201, answer.text
    created: dict[str, Any] = answer.json()["webhook"]
    return created


async def log(database: Database, *types: str) -> None:
    async with database.transaction() as connection:
        await append_events(connection, [
            LogEvent(kind, f"c{i}", f"c{i}@example.com", {"message_id": f"m{i}"},
                     datetime.now(UTC), "mta") for i, kind in enumerate(types)])


def check_signed(receiver: WebhookReceiver, secret: str) -> list[Any]:
    verifier = Webhook(secret)
    return [verifier.verify(item.body, item.headers) for item in receiver.received]


async def test_outcome_events_reach_a_subscribed_endpoint_signed(
        database: Database, database_url: str) -> None:
    async with webhook_receiver() as receiver, running_app(database_url, webhooks=FAST) as app:
        sub = await subscribe(app, receiver.url(), "email_delivered", "email_bounced")
        assert sub["secret"].startswith("whsec_")
        async with outbox(database) as service:
            await log(database, "email_delivered", "email_opened", "email_bounced",
                      "signed_up")
            await receiver.wait_for(2)
            await until(lambda: _all_in(database, "delivered", 2), service)
        async with app.client() as client:
            listed = (await client.get("/v1/webhooks")).json()["webhooks"]
    payloads = check_signed(receiver, sub["secret"])
    assert sorted(p["type"] for p in payloads) == ["email_bounced", "email_delivered"]
    delivered = next(p for p in payloads if p["type"] == "email_delivered")
    assert delivered["data"]["contact_id"] == "c0"
    assert delivered["data"]["properties"] == {"message_id": "m0"}
    assert all(item.headers["content-type"] == "application/json"
               for item in receiver.received)
    assert len(receiver.per_id()) == 2
    assert listed == [{k: v for k, v in sub.items() if k != "secret"}]  # never the secret
    async with database.connection() as connection:
        named = await connection.fetch("SELECT event_type, contact_id FROM outbox")
    assert sorted((r["event_type"], r["contact_id"]) for r in named) == [
        ("email_bounced", "c2"), ("email_delivered", "c0")]  # what an erase looks for


async def _all_in(database: Database, state: str, count: int) -> bool:
    found = await rows(database)
    return len(found) == count and all(row["state"] == state for row in found)


async def test_500_twice_is_retried_with_the_same_webhook_id_then_delivered(
        database: Database, database_url: str) -> None:
    async with webhook_receiver([500, 500, 200]) as receiver, \
            running_app(database_url, webhooks=FAST) as app:
        sub = await subscribe(app, receiver.url(), "email_delivered")
        async with outbox(database) as service:
            async with app.client() as client:
                queued = await client.post(f"/v1/webhooks/{sub['id']}/test")
            assert queued.status_code == 202
            row_id = queued.json()["row"]["id"]
            await receiver.wait_for(3)
            await until(lambda: _all_in(database, "delivered", 1), service)
        async with app.client() as client:
            row = (await client.get(f"/v1/outbox/{row_id}")).json()["row"]
    assert row["state"] == "delivered" and row["attempts"] == 3 and row["last_status"] == 200
    assert list(receiver.per_id().values()) == [3]  # one webhook-id for every attempt
    assert [p["type"] for p in check_signed(receiver, sub["secret"])] == ["webhook_test"] * 3


async def test_dead_letter_after_n_attempts_and_retry_through_the_api(
        database: Database, database_url: str) -> None:
    async with webhook_receiver([500, 500, 503, 200]) as receiver, \
            running_app(database_url, webhooks=FAST) as app, app.client() as client:
        sub = await subscribe(app, receiver.url(), "email_complained")
        async with outbox(database) as service:
            await log(database, "email_complained")
            await until(lambda: _all_in(database, "dead", 1), service)
            assert len(receiver.received) == 3  # max_attempts = 3
            dead = (await client.get("/v1/outbox", params={"state": "dead"})).json()["rows"]
            assert [(r["attempts"], r["last_status"], r["event_type"]) for r in dead] == [
                (3, 503, "email_complained")]
            assert "gave up after 3 attempts" in dead[0]["last_error"]
            assert (await client.get("/v1/outbox", params={"state": "pending"})
                    ).json()["rows"] == []
            retried = await client.post(f"/v1/outbox/{dead[0]['id']}/retry")
            assert retried.status_code == 200 and retried.json()["row"]["state"] == "pending"
            await until(lambda: _all_in(database, "delivered", 1), service)
            again = await client.post(f"/v1/outbox/{dead[0]['id']}/retry")
            assert again.status_code == 409 and again.json()["error"] == "not_dead"
    assert list(receiver.per_id().values()) == [4]
    check_signed(receiver, sub["secret"])


async def test_per_endpoint_concurrency_is_bounded(database: Database) -> None:
    settings = dataclasses.replace(FAST, endpoint_concurrency=2, concurrency=4)
    async with webhook_receiver() as receiver:
        receiver.hold.clear()
        async with database.transaction() as connection:
            await store.enqueue(connection, [
                store.NewRow("test", receiver.url(), f"http://127.0.0.1:{receiver.port}",
                             b"{}") for _ in range(6)])
        async with outbox(database, settings) as service:
            await receiver.wait_for_waiting(2)
            async with database.connection() as connection:
                leased = await connection.fetchval(
                    "SELECT count(*) FROM outbox WHERE lease_owner IS NOT NULL")
            assert leased == 2  # the other four wait in the table, not in memory
            receiver.hold.set()
            await until(lambda: _all_in(database, "delivered", 6), service)
    assert receiver.most_waiting == 2
    assert len(receiver.received) == 6


async def test_two_workers_never_send_the_same_row(database: Database) -> None:
    count = 40
    async with webhook_receiver() as receiver:
        async with database.transaction() as connection:
            await store.enqueue(connection, [
                store.NewRow("test", receiver.url(), f"http://127.0.0.1:{receiver.port}",
                             b"{}") for _ in range(count)])
        async with outbox(database) as one, outbox(database) as two:
            await until(lambda: _all_in(database, "delivered", count), one, two)
    assert len(receiver.per_id()) == count
    assert set(receiver.per_id().values()) == {1}


async def test_names_resolving_to_loopback_are_refused_unless_allowed(
        database: Database, database_url: str) -> None:
    zones = {"hooks.test": zone_text("@ A 127.0.0.1\ninternal A 10.0.0.7\n")}
    async with DnsTestServer(zones) as dns, webhook_receiver() as receiver:
        resolver = HostPort("127.0.0.1", dns.port)
        url = receiver.url(host="hooks.test")
        strict = dataclasses.replace(FAST, allow=(), resolver=resolver)
        async with running_app(database_url, webhooks=strict) as app, app.client() as client:
            refused = await client.post("/v1/webhooks", json={
                "url": url, "events": ["email_delivered"]})
            inside = await client.post("/v1/webhooks", json={
                "url": "https://internal.hooks.test/x", "events": ["email_delivered"]})
        assert refused.status_code == 422
        assert "hooks.test resolves to non-public address 127.0.0.1" in refused.json()["message"]
        assert "10.0.0.7" in inside.json()["message"]
        async with guarded_client(frozenset(), HostResolver(resolver)) as http:
            with pytest.raises(TargetRefused, match=r"127\.0\.0\.1"):
                await http.post(url, content=b"{}")
        assert receiver.received == []

        allowed = dataclasses.replace(FAST, allow=(f"hooks.test:{receiver.port}",),
                                      resolver=resolver)
        async with running_app(database_url, webhooks=allowed) as app:
            sub = await subscribe(app, url, "email_delivered")
            queries = dns.query_count("hooks.test", "A")
            async with outbox(database, allowed):
                await log(database, "email_delivered")
                await receiver.wait_for(1)
    [item] = receiver.received
    assert item.headers["host"] == f"hooks.test:{receiver.port}"  # dialled the IP, kept the name
    assert dns.query_count("hooks.test", "A") == queries + 1  # resolved once, for that request
    check_signed(receiver, sub["secret"])


@pytest.mark.parametrize(("body", "status", "message"), [
    ({"url": "ftp://x.example/", "events": ["email_delivered"]}, 422,
     "url: only http:// and https:// URLs"),
    ({"url": "https://x.example/", "events": ["email_sent"]}, 422,
     "events: unknown event type 'email_sent'"),
    ({"url": "https://x.example/", "events": []}, 422, "events: give one or more"),
    ({"url": "https://x.example/", "events": ["email_delivered"], "secret": "s3cret"}, 422,
     "secret: a webhook secret is written whsec_<base64>"),
    ({"url": "https://x.example/", "events": ["email_delivered"], "retries": 3}, 422,
     "retries: unknown field"),
    ({"url": "http://169.254.169.254/latest", "events": ["email_delivered"]}, 422,
     "non-public address 169.254.169.254"),
    ([1], 422, "must be a JSON object")])
async def test_bad_subscriptions_get_clear_errors(
        database_url: str, body: Any, status: int, message: str) -> None:
    async with running_app(database_url) as app, app.client() as client:
        answer = await client.post("/v1/webhooks", json=body)
        listed = (await client.get("/v1/webhooks")).json()["webhooks"]
    assert answer.status_code == status, answer.text
    assert message in answer.json()["message"]
    assert listed == []


async def test_unknown_ids_and_bad_parameters(database_url: str) -> None:
    async with running_app(database_url) as app, app.client() as client:
        assert (await client.delete("/v1/webhooks/wh_nope")).status_code == 404
        assert (await client.post("/v1/webhooks/wh_nope/test")).json()["message"] == (
            "no webhook subscription with id 'wh_nope'")
        assert (await client.post("/v1/outbox/77/retry")).status_code == 404
        assert (await client.get("/v1/outbox/abc")).status_code == 404
        bad = await client.get("/v1/outbox", params={"state": "lost"})
        assert bad.status_code == 422 and "state: one of pending, delivered, dead" in bad.text
        reader = await app.new_key("webhooks:read")
        async with app.client(reader) as limited:
            assert (await limited.get("/v1/outbox")).status_code == 200
            denied = await limited.post("/v1/webhooks", json={})
            assert denied.status_code == 403


async def test_a_stopping_worker_hands_its_rows_back_at_once(database: Database) -> None:
    async with webhook_receiver() as receiver:
        receiver.hold.clear()
        async with database.transaction() as connection:
            await store.enqueue(connection, [store.NewRow(
                "test", receiver.url(), f"http://127.0.0.1:{receiver.port}", b"{}")])
        service = OutboxService(database, FAST)
        await service.start()
        await receiver.wait_for_waiting(1)
        await service.stop(grace=0.05)
        [row] = await rows(database)
    assert (row["state"], row["lease_owner"], row["last_error"]) == (
        "pending", None, "interrupted: the worker stopped")
    assert row["next_attempt_at"] <= datetime.now(UTC)  # due now, not at the lease's end
