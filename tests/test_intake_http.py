"""POST /v1/events over real HTTP into a real Postgres: acceptance, idempotency, bad input."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.support.app import RunningApp, running_app


@pytest.fixture
async def app(database_url: str) -> AsyncIterator[RunningApp]:
    async with running_app(database_url) as running:
        yield running


async def count_events(app: RunningApp, where: str = "true") -> int:
    async with app.database.connection() as connection:
        return int(await connection.fetchval(f"SELECT count(*) FROM events WHERE {where}"))


async def test_single_event_is_committed_before_202(app: RunningApp) -> None:
    async with app.client() as client:
        response = await client.post("/v1/events", json={
            "type": "signed_up", "contact_id": "c1", "email": "Ann@Example.COM",
            "properties": {"plan": "pro"}, "timestamp": "2026-01-02T03:04:05.678+01:00",
            "id": "evt-1"})
    assert response.status_code == 202, response.text
    assert response.json() == {"accepted": 1, "duplicates": 0}
    async with app.database.connection() as connection:
        row = await connection.fetchrow("SELECT * FROM events WHERE event_id = 'evt-1'")
        contact = await connection.fetchrow("SELECT * FROM contacts WHERE contact_id = 'c1'")
    assert row["type"] == "signed_up"
    assert row["properties"] == {"plan": "pro"}
    assert row["email"] == "Ann@example.com"
    assert row["occurred_at"].isoformat() == "2026-01-02T02:04:05.678000+00:00"
    assert contact["email"] == "Ann@example.com"


async def test_batch_and_duplicates_across_requests(app: RunningApp) -> None:
    events = [{"type": "viewed", "contact_id": f"c{i % 3}", "id": f"b-{i}"} for i in range(10)]
    async with app.client() as client:
        first = await client.post("/v1/events", json={"events": events})
        again = await client.post("/v1/events", json={"events": [
            *events[:4], {"type": "viewed", "contact_id": "c9", "id": "fresh"},
            {"type": "viewed", "contact_id": "c9", "id": "fresh"}]})
    assert first.json() == {"accepted": 10, "duplicates": 0}
    assert again.json() == {"accepted": 1, "duplicates": 5}
    assert await count_events(app) == 11


async def test_concurrent_requests_share_commits(app: RunningApp) -> None:
    async with app.client() as client:
        responses = await asyncio.gather(*[
            client.post("/v1/events", json={"type": "t", "contact_id": f"c{i}", "id": f"k{i}"})
            for i in range(200)])
    assert all(r.status_code == 202 for r in responses)
    assert await count_events(app) == 200
    from engine.metrics import INTAKE_BATCH_EVENTS

    samples = {s.name: s.value for s in INTAKE_BATCH_EVENTS.collect()[0].samples}
    # Fewer commits than requests: some commit carried more than one request's events.
    assert samples["herald_intake_batch_events_count"] < samples["herald_intake_batch_events_sum"]


async def test_email_only_event_resolves_to_existing_contact(app: RunningApp) -> None:
    async with app.client() as client:
        await client.post("/v1/contacts", json={"contact_id": "u-42", "email": "bo@example.org"})
        await client.post("/v1/events", json={"type": "opened", "email": "BO@example.org"})
        await client.post("/v1/events", json={"type": "opened", "email": "new@example.org"})
    async with app.database.connection() as connection:
        owners = await connection.fetch(
            "SELECT contact_id FROM events WHERE type = 'opened' ORDER BY position")
    assert [r["contact_id"] for r in owners] == ["u-42", "new@example.org"]


BAD_INPUTS: list[tuple[str, Any, int, str]] = [
    ("not json", b"{nope", 400, "invalid_json"),
    ("empty body", b"", 400, "invalid_json"),
    ("not utf-8", b'{"type": "\xff\xfe"}', 400, "invalid_encoding"),
    ("array body", b"[1, 2]", 422, "invalid_event"),
    ("missing type", {"contact_id": "c"}, 422, "invalid_event"),
    ("type not a string", {"type": 5, "contact_id": "c"}, 422, "invalid_event"),
    ("bad type chars", {"type": "a b", "contact_id": "c"}, 422, "invalid_event"),
    ("no contact", {"type": "t"}, 422, "invalid_event"),
    ("contact_id number", {"type": "t", "contact_id": 7}, 422, "invalid_event"),
    ("bad email", {"type": "t", "email": "no-at-sign"}, 422, "invalid_event"),
    ("email with CRLF", {"type": "t", "email": "a@b.com\r\nBcc: x@y.z"}, 422, "invalid_event"),
    ("properties list", {"type": "t", "contact_id": "c", "properties": [1]}, 422,
     "invalid_event"),
    ("naive timestamp", {"type": "t", "contact_id": "c", "timestamp": "2026-01-01T00:00:00"},
     422, "invalid_event"),
    ("date only", {"type": "t", "contact_id": "c", "timestamp": "2026-01-01"}, 422,
     "invalid_event"),
    ("impossible date", {"type": "t", "contact_id": "c", "timestamp": "2026-02-30T00:00:00Z"},
     422, "invalid_event"),
    ("far future", {"type": "t", "contact_id": "c", "timestamp": "2999-01-01T00:00:00Z"},
     422, "invalid_event"),
    ("unknown field", {"type": "t", "contact_id": "c", "colour": "red"}, 422, "invalid_event"),
    ("empty batch", {"events": []}, 422, "invalid_event"),
    ("batch not list", {"events": {"type": "t"}}, 422, "invalid_event"),
    ("too many", {"events": [{"type": "t", "contact_id": "c"}] * 1001}, 422, "invalid_event"),
    ("one bad in batch", {"events": [{"type": "t", "contact_id": "c"}, {"type": "t"}]}, 422,
     "invalid_event"),
    ("NUL in property", {"type": "t", "contact_id": "c", "properties": {"x": "a\u0000b"}}, 422,
     "invalid_event"),
    ("id too long", {"type": "t", "contact_id": "c", "id": "x" * 256}, 422, "invalid_event"),
]


@pytest.mark.parametrize(("label", "body", "status", "code"), BAD_INPUTS,
                         ids=[case[0] for case in BAD_INPUTS])
async def test_bad_input_is_refused_and_nothing_stored(
    app: RunningApp, label: str, body: Any, status: int, code: str
) -> None:
    async with app.client() as client:
        if isinstance(body, bytes):
            response = await client.post("/v1/events", content=body,
                                         headers={"Content-Type": "application/json"})
        else:
            response = await client.post("/v1/events", json=body)
    assert response.status_code == status, response.text
    payload = response.json()
    assert payload["error"] == code
    assert payload["message"]
    assert await count_events(app) == 0


async def test_error_message_names_the_field(app: RunningApp) -> None:
    async with app.client() as client:
        response = await client.post("/v1/events", json={"events": [
            {"type": "t", "contact_id": "c"}, {"type": "t", "contact_id": "c",
                                               "timestamp": "yesterday"}]})
    assert response.json()["message"].startswith("events[1].timestamp:")


async def test_oversize_body_is_413(database_url: str) -> None:
    async with running_app(database_url, max_body=4096) as app, app.client() as client:
        big = {"type": "t", "contact_id": "c", "properties": {"blob": "x" * 5000}}
        response = await client.post("/v1/events", json=big)
        chunked = await client.post("/v1/events", content=_chunks(b'{"a":"' + b"x" * 6000 + b'"}'))
        assert response.status_code == 413
        assert response.json()["error"] == "body_too_large"
        assert chunked.status_code == 413
        assert await count_events(app) == 0


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    for start in range(0, len(data), 1000):
        yield data[start:start + 1000]


async def test_auth_missing_invalid_revoked_and_scope(app: RunningApp) -> None:
    reader = await app.new_key("contacts:read")
    event = {"type": "t", "contact_id": "c"}
    async with app.client() as client:
        missing = await client.post("/v1/events", json=event, headers={"Authorization": ""})
        invalid = await client.post("/v1/events", json=event,
                                    headers={"Authorization": "Bearer hk_nope_nope"})
        tampered = await client.post("/v1/events", json=event, headers={
            "Authorization": f"Bearer {app.admin_key[:-2]}zz"})
        wrong_scope = await client.post("/v1/events", json=event,
                                        headers={"Authorization": f"Bearer {reader}"})
    assert [missing.status_code, invalid.status_code, tampered.status_code] == [401, 401, 401]
    assert missing.json()["error"] == "unauthorized"
    assert wrong_scope.status_code == 403
    assert wrong_scope.json() == {"error": "forbidden",
                                  "message": "this key lacks the 'events:write' scope"}
    assert await count_events(app) == 0


async def test_rate_limit_answers_429_with_retry_after(database_url: str) -> None:
    async with running_app(database_url, rate_limit_per_second=1.0, rate_limit_burst=3) as app:
        async with app.client() as client:
            statuses = []
            for i in range(5):
                response = await client.post("/v1/events",
                                             json={"type": "t", "contact_id": f"c{i}"})
                statuses.append(response.status_code)
        assert statuses[:3] == [202, 202, 202]
        assert statuses[3] == 429
        assert response.headers["Retry-After"] == "1"
        assert response.json()["error"] == "rate_limited"
        assert await count_events(app) == 3


async def test_health_ready_metrics_openapi(app: RunningApp) -> None:
    async with app.client() as client:
        await client.post("/v1/events", json={"type": "t", "contact_id": "c"})
        health = await client.get("/healthz")
        ready = await client.get("/readyz")
        metrics = await client.get("/metrics")
        spec = await client.get("/openapi.json")
        missing = await client.get("/nope")
    assert health.status_code == 200 and ready.status_code == 200
    assert 'herald_events_stored_total{source="api"}' in metrics.text
    assert "herald_http_request_seconds_bucket" in metrics.text
    assert "herald_intake_batch_events_bucket" in metrics.text
    document = spec.json()
    assert document["openapi"].startswith("3.")
    assert {"/v1/events", "/v1/contacts", "/v1/pixel.gif"} <= set(document["paths"])
    assert missing.status_code == 404 and missing.json()["error"] == "not_found"


async def test_a_plain_batch_fills_missing_emails_and_keeps_existing_ones(
        app: RunningApp) -> None:
    async with app.client() as client:
        await client.post("/v1/events", json={"type": "t", "contact_id": "no-email"})
        await client.post("/v1/events", json={"type": "t", "contact_id": "has-email",
                                              "email": "first@example.com"})
        response = await client.post("/v1/events", json={"events": [
            {"type": "t", "contact_id": "no-email", "email": "late@example.com"},
            {"type": "t", "contact_id": "has-email", "email": "second@example.com"},
            {"type": "t", "contact_id": "new", "email": "new@example.com"}]})
    assert response.json() == {"accepted": 3, "duplicates": 0}
    async with app.database.connection() as connection:
        emails = dict(await connection.fetch("SELECT contact_id, email FROM contacts"))
    assert emails == {"no-email": "late@example.com", "has-email": "first@example.com",
                      "new": "new@example.com"}


async def test_followers_are_notified_after_a_plain_batch_commits(app: RunningApp) -> None:
    notified: asyncio.Queue[str] = asyncio.Queue()

    def heard(*args: object) -> None:
        notified.put_nowait(str(args[2]))

    async with app.database.connection() as listener:
        await listener.add_listener("herald_events", heard)
        async with app.client() as client:
            response = await client.post("/v1/events", json={"type": "t", "contact_id": "c"})
        assert response.status_code == 202
        assert await asyncio.wait_for(notified.get(), 10) == "herald_events"
        async with app.database.connection() as connection:  # committed when it was told
            assert await connection.fetchval("SELECT count(*) FROM events") == 1
        await listener.remove_listener("herald_events", heard)
