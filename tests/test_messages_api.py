"""POST /v1/messages and GET /v1/messages/{id} over real HTTP, delivered by the real service."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from engine.timestamps import parse_rfc3339
from mta.settings import MtaSettings
from mta.sink import CaptureSink
from tests.support.app import RunningApp, running_app
from tests.support.mta import delivery_service, mta_settings, wait_for_states


@pytest.fixture
async def app(database_url: str) -> AsyncIterator[RunningApp]:
    async with running_app(database_url) as running:
        yield running


GOOD = {"from": "Shop <news@shop.test>", "to": "Ann <ann@example.org>", "subject": "Hi",
        "text": "Hello", "html": "<p>Hello</p>"}


async def queued(app: RunningApp) -> int:
    async with app.database.connection() as connection:
        return int(await connection.fetchval("SELECT count(*) FROM outbound_messages"))


async def test_inject_deliver_and_inspect(app: RunningApp, database_url: str) -> None:
    async with app.client() as client:
        response = await client.post("/v1/messages", json={
            **GOOD, "contact_id": "c-ann", "tags": ["receipt"],
            "headers": {"List-Unsubscribe": "<https://shop.test/u/1>",
                        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"}})
        assert response.status_code == 202, response.text
        message_id = response.json()["id"]
        before = (await client.get(f"/v1/messages/{message_id}")).json()
        async with CaptureSink(keep=5) as sink:
            settings = mta_settings(route=None, routes={"example.org": f"127.0.0.1:{sink.port}"})
            async with delivery_service(app.database, settings):
                await wait_for_states(database_url, [uuid.UUID(message_id)])
        after = (await client.get(f"/v1/messages/{message_id}")).json()
    assert before["state"] == "queued" and before["attempts"] == []
    assert after["state"] == "delivered"
    assert after["to"] == "ann@example.org" and after["contact_id"] == "c-ann"
    assert after["tags"] == ["receipt"]
    [attempt] = after["attempts"]
    assert attempt["outcome"] == "delivered" and attempt["code"] == 250
    [message] = sink.messages
    assert b"List-Unsubscribe-Post: List-Unsubscribe=One-Click" in message.data


async def test_idempotency_key_queues_once(app: RunningApp) -> None:
    async with app.client() as client:
        first = await client.post("/v1/messages", json={**GOOD, "idempotency_key": "order-9"})
        again = await client.post("/v1/messages", json={**GOOD, "idempotency_key": "order-9"})
    assert first.json()["id"] == again.json()["id"]
    assert again.json()["duplicate"] is True
    assert await queued(app) == 1


@pytest.mark.parametrize("field", ["content", "raw"])
async def test_raw_mime_is_accepted_and_completed(app: RunningApp, field: str) -> None:
    raw = "From: news@shop.test\nTo: ann@example.org\nSubject: raw\n\nbody line\n"
    async with app.client() as client:
        response = await client.post("/v1/messages", json={field: raw, "to": "ann@example.org"})
    assert response.status_code == 202, response.text
    async with app.database.connection() as connection:
        body = bytes(await connection.fetchval("SELECT body FROM outbound_messages"))
    assert b"\r\nSubject: raw\r\n" in body and b"Message-ID: <" in body and b"Date: " in body
    assert b"\n" not in body.replace(b"\r\n", b"")


BAD: list[tuple[str, dict[str, Any], str]] = [
    ("bad to", {**GOOD, "to": "not-an-address"}, "to:"),
    ("to with CRLF", {**GOOD, "to": "a@b.example\r\nBcc: victim@x.example"}, "to:"),
    ("from missing", {k: v for k, v in GOOD.items() if k != "from"}, "from:"),
    ("subject CRLF", {**GOOD, "subject": "Hi\r\nBcc: victim@x.example"}, "subject:"),
    ("header CRLF", {**GOOD, "headers": {"X-Tag": "a\r\nBcc: v@x.example"}}, "headers.X-Tag:"),
    ("reserved header", {**GOOD, "headers": {"Bcc": "v@x.example"}}, "headers.Bcc:"),
    ("bad header name", {**GOOD, "headers": {"X Bad": "v"}}, "headers.X Bad:"),
    ("no body", {k: v for k, v in GOOD.items() if k not in ("text", "html")}, "text:"),
    ("raw long line", {"raw": "From: a@shop.test\n\n" + "x" * 1200, "to": "a@b.example"},
     "message: line"),
    ("raw no from", {"raw": "Subject: x\n\nbody", "to": "a@b.example"}, "raw:"),
    ("content no from", {"content": "Subject: x\n\nbody", "to": "a@b.example"}, "content:"),
    ("content foreign To", {"content": "From: a@shop.test\nTo: b@c.example\n\nbody",
                            "to": "a@b.example"}, "content.To:"),
    ("content and raw", {"content": "From: a@shop.test\n\nx", "raw": "From: a@shop.test\n\nx",
                         "to": "a@b.example"}, "content:"),
    ("content with subject", {"content": "From: a@shop.test\n\nx", "subject": "s",
                              "to": "a@b.example"}, "subject:"),
    ("unknown field", {**GOOD, "bcc": "x@y.example"}, "bcc:"),
    ("bad tags", {**GOOD, "tags": ["ok", "not ok"]}, "tags:"),
    ("oversize", {**GOOD, "text": "x" * 200_000}, "message:"),
]


@pytest.mark.parametrize(("label", "body", "prefix"), BAD, ids=[b[0] for b in BAD])
async def test_bad_messages_get_422_and_nothing_is_queued(
        database_url: str, label: str, body: dict[str, Any], prefix: str) -> None:
    async with running_app(database_url, MtaSettings(max_message_size=100_000)) as app:
        async with app.client() as client:
            response = await client.post("/v1/messages", json=body)
        assert response.status_code == 422, response.text
        assert response.json()["error"] == "invalid_message"
        assert response.json()["message"].startswith(prefix), response.json()
        assert await queued(app) == 0


async def test_unknown_message_is_404_and_scopes_apply(app: RunningApp) -> None:
    reader = await app.new_key("contacts:read")
    async with app.client() as client:
        missing = await client.get("/v1/messages/0b7c6f8e-1111-4222-8333-944455556666")
        garbage = await client.get("/v1/messages/nope")
    async with app.client(reader) as client:
        forbidden = await client.post("/v1/messages", json=GOOD)
    assert missing.status_code == 404 and garbage.status_code == 404
    assert forbidden.status_code == 403


async def test_expiry_counts_from_send_at(app: RunningApp) -> None:
    """Issue 12 item 9: a message scheduled past the expiry period still gets the whole period."""
    send_at = datetime.now(UTC) + timedelta(days=10)  # the expiry period is 4 days
    async with app.client() as client:
        response = await client.post("/v1/messages", json={
            **GOOD, "send_at": send_at.isoformat()})
        too_far = await client.post("/v1/messages", json={
            **GOOD, "send_at": "9999-12-31T23:59:59Z"})
        message = (await client.get(f"/v1/messages/{response.json()['id']}")).json()
    assert response.status_code == 202, response.text
    assert parse_rfc3339(message["next_attempt_at"]) == send_at.replace(
        microsecond=send_at.microsecond // 1000 * 1000)
    expires = parse_rfc3339(message["expires_at"]) - parse_rfc3339(message["next_attempt_at"])
    assert abs(expires - timedelta(days=4)) < timedelta(seconds=1)
    assert too_far.status_code == 422
    assert too_far.json()["message"] == "send_at: at most 366 days ahead"
