"""The public pixel key over real HTTP: who a browser may speak for, what it may say, how often.

A publishable key is in every visitor's hands, so these tests play the visitor as attacker."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from engine.contact_tokens import mint
from engine.http.events_routes import GIF
from engine.http.ratelimit import RateLimiter, client_key
from engine.keys import NewKey
from tests.support.app import RunningApp, running_app

PROPERTIES = ("sku", "name", "url")


@pytest.fixture
async def app(database_url: str) -> AsyncIterator[RunningApp]:
    async with running_app(database_url) as running:
        yield running


async def site_key(app: RunningApp) -> NewKey:
    return await app.new_site_key(("product_viewed",), PROPERTIES)


def token_for(site: NewKey, contact_id: str, ttl: float = 3600) -> str:
    assert site.token_secret is not None
    return mint(site.key_id, site.token_secret, contact_id, int(time.time() + ttl))


async def hit(client: httpx.AsyncClient, site: NewKey, **params: Any) -> None:
    response = await client.get("/v1/pixel.gif", params={
        "key": site.token, "type": "product_viewed", **params})
    assert response.status_code == 200 and response.content == GIF


async def events(app: RunningApp) -> list[dict[str, Any]]:
    async with app.database.connection() as connection:
        rows = await connection.fetch(
            "SELECT event_id, type, contact_id, email, properties, occurred_at, source "
            "FROM events WHERE type = 'product_viewed' ORDER BY position")
    return [dict(row) for row in rows]


async def counters(app: RunningApp) -> dict[str, float]:
    """The pixel's counters (process-wide: tests compare before and after)."""
    async with app.client() as client:
        text = (await client.get("/metrics")).text
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(("herald_pixel_rejected_total",
                            "herald_pixel_properties_dropped_total")):
            name, _, value = line.rpartition(" ")
            values[name.replace('herald_pixel_rejected_total{reason="', "").rstrip('"}')] = \
                float(value)
    return values


async def added(app: RunningApp, before: dict[str, float]) -> dict[str, float]:
    after = await counters(app)
    return {name: value - before.get(name, 0.0) for name, value in after.items()
            if value != before.get(name, 0.0)}


async def test_a_bare_email_or_contact_id_names_no_one(app: RunningApp) -> None:
    site = await site_key(app)
    before = await counters(app)
    async with app.client() as client:
        await client.post("/v1/contacts", json={"contact_id": "cust-1",
                                                "email": "victim@victim.example"})
        await hit(client, site, email="victim@victim.example", sku="Z1")
        await hit(client, site, contact_id="cust-1", sku="Z1")
        await hit(client, site, sku="Z1")  # no identity at all
    assert await events(app) == []
    assert await added(app, before) == {"bare_identity": 2, "no_identity": 1}


async def test_anonymous_visits_are_kept_under_an_address_less_contact(app: RunningApp) -> None:
    site = await site_key(app)
    before = await counters(app)
    async with app.client() as client:
        await hit(client, site, anonymous_id="v-123", sku="Z1")
        await hit(client, site, anonymous_id="bad id with spaces", sku="Z1")
    [event] = await events(app)
    assert (event["contact_id"], event["email"], event["source"]) == (
        "anon:v-123", None, "pixel_anonymous")
    async with app.database.connection() as connection:
        email = await connection.fetchval(
            "SELECT email FROM contacts WHERE contact_id = 'anon:v-123'")
    assert email is None
    assert await added(app, before) == {"bad_anonymous_id": 1}


async def test_a_signed_contact_token_identifies_and_bad_ones_do_nothing(
        app: RunningApp) -> None:
    site = await site_key(app)
    other = await site_key(app)
    good = token_for(site, "cust-1")
    expired = token_for(site, "cust-1", ttl=-1)
    foreign = token_for(other, "cust-1")  # valid, but for another site key
    head, _, signature = good.rpartition(".")
    tampered = head.replace(head.split(".")[2], "dmljdGlt") + "." + signature  # "victim"
    before = await counters(app)
    async with app.client() as client:
        await hit(client, site, contact_token=good, anonymous_id="v-9", sku="Z1")
        for token in (expired, foreign, tampered, "v1.garbage"):
            await hit(client, site, contact_token=token, sku="Z1")
    [event] = await events(app)
    assert (event["contact_id"], event["source"]) == ("cust-1", "pixel")
    assert event["properties"] == {"sku": "Z1", "anonymous_id": "v-9"}
    assert await added(app, before) == {"token_expired": 1, "token_foreign_key": 1,
                                        "token_bad_signature": 1, "token_malformed": 1}


async def test_the_browser_cannot_backdate_or_claim_backend_ids(app: RunningApp) -> None:
    site = await site_key(app)
    token = token_for(site, "cust-1")
    before = datetime.now(UTC)
    async with app.client() as client:
        await hit(client, site, contact_token=token, sku="Z1", id="signup-999",
                  timestamp=(before - timedelta(hours=30)).isoformat())
        await hit(client, site, contact_token=token, sku="Z1", id="signup-999")  # a retry
        backend = await client.post("/v1/events", json={
            "type": "signed_up", "contact_id": "cust-1", "id": "signup-999"})
    after = datetime.now(UTC)
    [event] = await events(app)
    assert before <= event["occurred_at"] <= after
    assert event["event_id"] != "signup-999" and event["event_id"].startswith("browser:")
    assert backend.json() == {"accepted": 1, "duplicates": 0}


async def test_only_allowed_properties_of_bounded_size_are_kept(app: RunningApp) -> None:
    site = await site_key(app)
    token = token_for(site, "cust-1")
    before = await counters(app)
    async with app.client() as client:
        await hit(client, site, contact_token=token, sku="Z1", name="Lamp",
                  coupon="FREE100", discount="100")
        await hit(client, site, contact_token=token, sku="Z2", name="x" * 513)
        repeated = await client.get(
            f"/v1/pixel.gif?key={site.token}&type=product_viewed&contact_token={token}"
            "&sku=A&sku=B")
    assert repeated.content == GIF
    [event] = await events(app)
    assert event["properties"] == {"sku": "Z1", "name": "Lamp"}
    assert await added(app, before) == {"property_too_long": 1, "repeated_parameter": 1,
                                        "herald_pixel_properties_dropped_total": 2}


def test_client_buckets_are_per_key_and_address() -> None:
    limiter = RateLimiter(rate=1.0, burst=2)
    assert client_key("2001:db8::1") == client_key("2001:db8::ffff") == "2001:db8::/64"
    assert client_key("::ffff:192.0.2.7") == "192.0.2.7"
    assert client_key(None) == "unknown"
    waits = [limiter.acquire(f"k1 {client_key('192.0.2.1')}", 0.0) for _ in range(3)]
    assert waits[:2] == [0.0, 0.0] and waits[2] > 0
    assert limiter.acquire(f"k1 {client_key('192.0.2.2')}", 0.0) == 0.0
    assert limiter.acquire(f"k2 {client_key('192.0.2.1')}", 0.0) == 0.0


async def test_one_visitor_cannot_spend_everyone_s_pixel_budget(database_url: str) -> None:
    async with running_app(database_url, pixel_client_rate_per_second=0.001,
                           pixel_client_rate_burst=2) as app:
        site = await site_key(app)
        before = await counters(app)
        flooder = httpx.AsyncHTTPTransport(local_address="127.0.0.2")
        visitor = httpx.AsyncHTTPTransport(local_address="127.0.0.3")
        async with app.client(transport=flooder) as client:
            for n in range(5):
                await hit(client, site, anonymous_id=f"flood-{n}", sku="Z1")
        async with app.client(transport=visitor) as client:
            await hit(client, site, anonymous_id="visitor", sku="Z1")
        stored = sorted(e["contact_id"] for e in await events(app))
        assert stored == ["anon:flood-0", "anon:flood-1", "anon:visitor"]
        assert await added(app, before) == {"client_rate_limited": 3}
