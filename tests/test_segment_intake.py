"""The Segment tracking API on a running Herald: auth, gzip, idempotency, identify, and joining
anonymous ids to contacts (exactly once, also under concurrency)."""

from __future__ import annotations

import asyncio
import base64
import gzip
from typing import Any

import httpx
import orjson

from engine.database import Database
from engine.sources import PIXEL, PIXEL_ANONYMOUS, SEGMENT, SEGMENT_ANONYMOUS
from tests.support.app import RunningApp, running_app


def basic(key: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


def segment_client(app: RunningApp, key: str | None = None) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=app.base_url, headers=basic(key or app.admin_key),
                             timeout=10.0)


async def events(database: Database, contact_id: str | None = None) -> list[Any]:
    async with database.connection() as connection:
        return await connection.fetch(
            "SELECT event_id, type, contact_id, email, properties, occurred_at, source "
            "FROM events WHERE ($1::text IS NULL OR contact_id = $1) AND type <> "
            "'contact_updated' ORDER BY position", contact_id)


def track(message_id: str, name: str = "Order Completed", **fields: Any) -> dict[str, Any]:
    return {"type": "track", "event": name, "messageId": message_id,
            "properties": {"n": message_id}, **fields}


async def test_batch_with_basic_auth_and_gzip_is_stored_once(database_url: str) -> None:
    async with running_app(database_url) as app, segment_client(app) as client:
        body = {"batch": [track("m1", userId="u1", context={"ip": "198.51.100.7"}),
                          track("m2", name="Product Viewed", userId="u1")],
                "sentAt": "2026-03-02T10:00:00Z"}
        compressed = gzip.compress(orjson.dumps(body))
        for _ in range(2):  # the retry of a delivered batch stores nothing new
            response = await client.post("/v1/batch", content=compressed, headers={
                "Content-Encoding": "gzip", "Content-Type": "application/json"})
            assert response.status_code == 200, response.text
            assert response.json() == {"success": True}
        single = await client.post("/v1/track", json=track("m3", userId="u1"))
        assert single.json() == {"success": True}
        rows = await events(app.database, "u1")
    assert [(r["event_id"], r["type"], r["source"]) for r in rows] == [
        ("segment:m1", "Order Completed", SEGMENT), ("segment:m2", "Product Viewed", SEGMENT),
        ("segment:m3", "Order Completed", SEGMENT)]
    assert rows[0]["properties"]["_segment"]["context"] == {"ip": "198.51.100.7"}


async def test_write_key_auth_and_bounds(database_url: str) -> None:
    async with running_app(database_url) as app:
        reader = await app.new_key("contacts:read")
        async with httpx.AsyncClient(base_url=app.base_url, timeout=10.0) as client:
            body = {"batch": [track("m1", userId="u1")]}
            missing = await client.post("/v1/batch", json=body)
            assert missing.status_code == 401
            assert missing.headers["WWW-Authenticate"].startswith("Basic")
            wrong = await client.post("/v1/batch", json=body, headers=basic("hk_nope_nope"))
            assert wrong.status_code == 401 and wrong.json()["error"] == "unauthorized"
            scope = await client.post("/v1/batch", json=body, headers=basic(reader))
            assert scope.status_code == 403
            # The body's writeKey, as older clients send it, works too.
            in_body = await client.post("/v1/batch", json={**body, "writeKey": app.admin_key})
            assert in_body.status_code == 200
            bomb = gzip.compress(b"[" + b" " * 20_000_000 + b"]")
            too_big = await client.post("/v1/batch", content=bomb, headers={
                **basic(app.admin_key), "Content-Encoding": "gzip"})
            assert too_big.status_code == 413 and "inflates" in too_big.json()["message"]
            not_batch = await client.post("/v1/batch", json={"events": []},
                                          headers=basic(app.admin_key))
            assert not_batch.status_code == 422 and "batch" in not_batch.json()["message"]
            mixed = await client.post("/v1/batch", headers=basic(app.admin_key), json={
                "batch": [track("m2", userId="u1"), {"type": "track", "userId": "u1"}]})
            assert mixed.status_code == 200
            assert mixed.json()["rejected"] == [
                {"index": 1, "messageId": None, "error": "event: the event name is required"}]
        assert [r["event_id"] for r in await events(app.database)] == ["segment:m1",
                                                                       "segment:m2"]


async def test_identify_upserts_traits_and_email(database_url: str) -> None:
    async with running_app(database_url) as app, segment_client(app) as client:
        await client.post("/v1/identify", json={
            "userId": "u1", "messageId": "i1",
            "traits": {"email": "ann@example.com", "first_name": "Ann", "plan": "pro"}})
        await client.post("/v1/identify", json={
            "userId": "u1", "messageId": "i2", "traits": {"plan": "team"}})
        # A late retry of the first identify is a duplicate: it does not undo the second.
        await client.post("/v1/identify", json={
            "userId": "u1", "messageId": "i1",
            "traits": {"email": "ann@example.com", "first_name": "Ann", "plan": "pro"}})
        async with app.client() as native:
            contact = (await native.get("/v1/contacts/u1")).json()["contact"]
    assert contact["email"] == "ann@example.com"
    assert contact["attributes"] == {"first_name": "Ann", "plan": "team"}


async def test_anonymous_events_join_the_contact_exactly_once(database_url: str) -> None:
    async with running_app(database_url) as app, segment_client(app) as client:
        site = (await app.new_site_key(("product_viewed",), ("sku",))).token
        await client.post("/v1/batch", json={"batch": [
            track("a1", name="Product Viewed", anonymousId="visitor-1"),
            track("a2", name="Product Viewed", anonymousId="visitor-1")]})
        async with httpx.AsyncClient(base_url=app.base_url) as browser:
            await browser.get("/v1/pixel.gif", params={
                "key": site, "type": "product_viewed", "sku": "Z1", "anonymous_id": "visitor-1"})
        before = await events(app.database, "anon:visitor-1")
        assert [r["source"] for r in before] == [SEGMENT_ANONYMOUS] * 2 + [PIXEL_ANONYMOUS]
        # One batch: an anonymous event, the identify that joins it, one after the identify.
        await client.post("/v1/batch", json={"batch": [
            track("a3", name="Cart Viewed", anonymousId="visitor-1"),
            {"type": "identify", "messageId": "i1", "userId": "u1", "anonymousId": "visitor-1",
             "traits": {"email": "ann@example.com"}},
            track("a4", name="Checkout Started", anonymousId="visitor-1")]})
        # SDKs identify again and again; an alias of the same id changes nothing either.
        for message_id in ("i2", "i3"):
            await client.post("/v1/identify", json={
                "messageId": message_id, "userId": "u1", "anonymousId": "visitor-1"})
        await client.post("/v1/alias", json={"messageId": "al1", "userId": "u1",
                                             "previousId": "visitor-1"})
        await client.post("/v1/page", json={"messageId": "a5", "anonymousId": "visitor-1",
                                            "name": "Pricing"})
        mine = await events(app.database, "u1")
        left = await events(app.database, "anon:visitor-1")
    by_type: dict[str, list[Any]] = {}
    for row in mine:
        by_type.setdefault(row["type"], []).append(row)
    # Each anonymous event counts for the contact exactly once: as a copy (merged:<position>,
    # the identified source, the original's time) or, after the identify, stored there.
    assert [(r["source"], r["event_id"].split(":")[0]) for r in by_type["Product Viewed"]] == [
        (SEGMENT, "merged"), (SEGMENT, "merged")]
    assert [r["source"] for r in by_type["product_viewed"]] == [PIXEL]
    assert [r["event_id"].split(":")[0] for r in by_type["Cart Viewed"]] == ["merged"]
    assert [r["event_id"] for r in by_type["Checkout Started"]] == ["segment:a4"]
    assert [r["event_id"] for r in by_type["page_viewed"]] == ["segment:a5"]
    assert [r["properties"]["copied_events"] for r in by_type["contact_merged"]] == [4]
    originals = {r["type"]: r["occurred_at"] for r in left}
    assert by_type["Cart Viewed"][0]["occurred_at"] == originals["Cart Viewed"]
    assert len(left) == 4 and {r["source"] for r in left} == {SEGMENT_ANONYMOUS,
                                                              PIXEL_ANONYMOUS}


async def test_a_join_racing_anonymous_events_loses_none_and_doubles_none(
        database_url: str) -> None:
    async with running_app(database_url) as app, segment_client(app) as client:
        async def anonymous(n: int) -> None:
            response = await client.post("/v1/track", json=track(f"r{n}", name="Viewed",
                                                                 anonymousId="v"))
            assert response.status_code == 200

        async def identify() -> None:
            response = await client.post("/v1/identify", json={
                "messageId": "join", "userId": "u1", "anonymousId": "v"})
            assert response.status_code == 200

        tasks = [anonymous(n) for n in range(40)]
        tasks.insert(20, identify())
        await asyncio.gather(*tasks)
        mine = [r for r in await events(app.database, "u1") if r["type"] == "Viewed"]
    names = sorted(r["properties"]["n"] for r in mine)
    assert names == sorted(f"r{n}" for n in range(40))  # every one, each once
