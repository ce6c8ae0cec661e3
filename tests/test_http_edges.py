"""Issue 12's low-severity edges over real HTTP: inputs that got a 500, values that came back
altered, unreadable contact ids, clients that hang up mid-body, and the key cache."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import pytest

from engine.database import Database
from engine.http import auth as auth_module
from engine.http.auth import Authenticator
from engine.http.ratelimit import RateLimiter
from engine.keys import create_key
from engine.metrics import HTTP_REQUESTS
from tests.support.app import RunningApp, running_app


@pytest.fixture
async def app(database_url: str) -> AsyncIterator[RunningApp]:
    async with running_app(database_url) as running:
        yield running


def requests_counted(route: str, status: int) -> float:
    return HTTP_REQUESTS.labels(route, str(status))._value.get()  # type: ignore[attr-defined]


# --- item 14: a client that hangs up mid-body -------------------------------------------------

async def test_client_disconnect_mid_body_is_quiet_not_500(
        app: RunningApp, caplog: pytest.LogCaptureFixture) -> None:
    errors_before = requests_counted("/v1/events", 500)
    gone_before = requests_counted("/v1/events", 499)
    host, port = app.base_url.removeprefix("http://").split(":")
    caplog.set_level(logging.INFO, logger="herald")
    _reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Authorization: Bearer " + app.admin_key.encode() + b"\r\n"
                 b"Content-Length: 1000\r\n\r\n{\"type\": \"t\", ")
    await writer.drain()
    await asyncio.sleep(0.2)
    writer.close()
    await writer.wait_closed()
    for _ in range(50):
        if requests_counted("/v1/events", 499) > gone_before:
            break
        await asyncio.sleep(0.02)
    assert requests_counted("/v1/events", 499) == gone_before + 1
    assert requests_counted("/v1/events", 500) == errors_before
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


# --- item 15: the key cache --------------------------------------------------------------------

class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def counted_lookups(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every database look-up of a key id the authenticator makes."""
    calls: list[str] = []
    original = auth_module.fetch_key

    async def counting(connection: Any, key_id: str) -> Any:
        calls.append(key_id)
        return await original(connection, key_id)

    monkeypatch.setattr(auth_module, "fetch_key", counting)
    return calls


async def test_unknown_key_ids_are_cached_briefly(database: Database,
                                                  counted_lookups: list[str]) -> None:
    clock = Clock()
    auth = Authenticator(database, RateLimiter(0, 0), clock=clock)
    for _ in range(100):
        assert await auth.lookup("hk_nosuchkey_secret") is None
    assert counted_lookups == ["nosuchkey"]
    clock.now += auth_module.NEGATIVE_CACHE_SECONDS
    assert await auth.lookup("hk_nosuchkey_secret") is None
    assert counted_lookups == ["nosuchkey", "nosuchkey"]


async def test_concurrent_requests_with_an_uncached_key_share_one_lookup(
        database: Database, counted_lookups: list[str]) -> None:
    """A burst right after start-up (or a cache expiry) reads the key once and spends one
    token of the client's look-up budget, so a valid key is never 429'd as 'unknown'."""
    async with database.connection() as connection:
        token = (await create_key(connection, "burst", ("events:write",))).token
    auth = Authenticator(database, RateLimiter(0, 0), clock=Clock(),
                         lookup_limiter=RateLimiter(0.001, 1))
    keys = await asyncio.gather(*(auth.lookup(token, "10.0.0.1") for _ in range(50)))
    assert {key.key_id if key else None for key in keys} == {token.split("_")[1]}
    assert len(counted_lookups) == 1
    bogus = await asyncio.gather(*(auth.lookup("hk_nosuchkey_secret", "10.0.0.2")
                                   for _ in range(20)))
    assert bogus == [None] * 20 and len(counted_lookups) == 2


async def test_a_failed_shared_lookup_fails_every_waiter_and_is_not_kept(
        database: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = 0

    async def broken(connection: Any, key_id: str) -> Any:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0)  # let the other callers join this look-up
        raise auth_module.DatabaseUnavailable("down")

    monkeypatch.setattr(auth_module, "fetch_key", broken)
    auth = Authenticator(database, RateLimiter(0, 0), clock=Clock())
    results = await asyncio.gather(*(auth.lookup("hk_somekey_secret") for _ in range(10)),
                                   return_exceptions=True)
    assert all(isinstance(r, auth_module.DatabaseUnavailable) for r in results)
    assert calls == 1
    with pytest.raises(auth_module.DatabaseUnavailable):
        await auth.lookup("hk_somekey_secret")  # tried again, not a remembered failure
    assert calls == 2


async def test_key_cache_evicts_least_recently_used_and_negatives_keep_apart(
        database: Database, counted_lookups: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(auth_module, "CACHE_MAX", 3)
    tokens = []
    async with database.connection() as connection:
        for n in range(4):
            tokens.append((await create_key(connection, f"k{n}", ("events:write",))).token)
    auth = Authenticator(database, RateLimiter(0, 0), clock=Clock())
    for token in tokens[:3]:
        assert await auth.lookup(token) is not None
    assert await auth.lookup(tokens[0]) is not None  # now the most recently used
    assert await auth.lookup(tokens[3]) is not None  # evicts tokens[1], not the whole cache
    for n in range(50):  # unknown ids never push real keys out
        await auth.lookup(f"hk_unknown{n}_secret")
    before = len(counted_lookups)
    for token in (tokens[0], tokens[2], tokens[3]):
        assert await auth.lookup(token) is not None
    assert len(counted_lookups) == before
    assert await auth.lookup(tokens[1]) is not None
    assert len(counted_lookups) == before + 1


async def test_unknown_key_lookups_are_rate_limited_per_client(
        database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(auth_module, "LOOKUP_RATE_PER_SECOND", 0.01)
    monkeypatch.setattr(auth_module, "LOOKUP_BURST", 10)
    async with running_app(database_url) as app, app.client() as client:
        assert (await client.get("/v1/contacts/x")).status_code == 404  # the admin key, cached
        statuses = [(await client.get("/v1/contacts/x", headers={
            "Authorization": f"Bearer hk_made{n}up_secret"})).status_code for n in range(12)]
        limited = await client.get("/v1/contacts/x", headers={
            "Authorization": "Bearer hk_made99up_secret"})
        good = await client.get("/v1/contacts/x")  # a cached, real key still works
    assert statuses == [401] * 9 + [429] * 3  # the admin key's look-up took one token
    assert limited.status_code == 429 and limited.headers["Retry-After"]
    assert good.status_code == 404


# --- item 11: inputs that got a 500 ------------------------------------------------------------

def nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = {"a": value}
    return value


@pytest.mark.parametrize(("path", "body", "field"), [
    ("/v1/events", {"type": "t", "contact_id": "c", "properties": nested(300)}, "properties"),
    ("/v1/events", {"events": [{"type": "t", "contact_id": "c", "properties": nested(40)}]},
     "events[0].properties"),
    ("/v1/contacts", {"contact_id": "c", "attributes": nested(254)}, "attributes"),
    ("/v1/messages", {"from": "a@shop.test", "to": "b@example.org", "subject": "s",
                      "text": "t", "metadata": nested(260)}, "metadata"),
    ("/v1/events", {"type": "t", "contact_id": "c",
                    "timestamp": "0001-01-01T00:00:00+23:59"}, "event.timestamp"),
    ("/v1/events", {"type": "t", "contact_id": "c",
                    "properties": {"n": 10**20}}, "properties.n"),
    ("/v1/events", {"type": "t", "contact_id": "c",
                    "properties": {"n": -(10**30)}}, "properties.n"),
])
async def test_hostile_bodies_get_a_4xx_naming_the_field(
        app: RunningApp, path: str, body: Any, field: str) -> None:
    text = json_text(body)
    async with app.client() as client:
        response = await client.post(path, content=text,
                                     headers={"Content-Type": "application/json"})
    assert 400 <= response.status_code < 500, response.text
    assert response.json()["message"].startswith(field), response.json()


def json_text(body: Any) -> bytes:
    """The stdlib encoder: it writes what orjson refuses to (deep nesting, huge integers)."""
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(10_000)
    try:
        return json.dumps(body).encode()
    finally:
        sys.setrecursionlimit(limit)


@pytest.mark.parametrize("query", ["limit=²", "limit=٣", "limit=0", "cursor=",
                                   "cursor=99999999999999999999", "cursor=٣",
                                   "cursor=-1"])
async def test_bad_paging_parameters_are_400(app: RunningApp, query: str) -> None:
    async with app.client() as client:
        response = await client.get(f"/v1/contacts/c/events?{query}")
    assert response.status_code == 422, response.text
    assert response.json()["message"].startswith(query.split("=")[0])


@pytest.mark.parametrize("horizon", ["inf", "nan", "1e20", 10**20, 1e300, [], {"d": 1}, -1])
async def test_simulate_horizon_out_of_range_is_4xx(app: RunningApp, horizon: Any) -> None:
    async with app.client() as client:
        response = await client.post("/v1/workflows/abandoned-cart/simulate",
                                     content=json_text({"horizon": horizon}),
                                     headers={"Content-Type": "application/json"})
    assert response.status_code in (400, 422), response.text
    assert response.json()["message"].startswith("horizon")


# --- item 12: values that came back altered ----------------------------------------------------

async def test_duplicate_keys_are_refused(app: RunningApp) -> None:
    async with app.client() as client:
        response = await client.post(
            "/v1/events", content=b'{"type": "t", "contact_id": "c", "contact_id": "victim"}',
            headers={"Content-Type": "application/json"})
        escaped = await client.post(  # a colon spelt \\u003a cannot hide the duplicate
            "/v1/events", content=b'{"type": "t", "contact_id": "c", "properties": '
                                  b'{"a": "\\u003a", "a": "x"}}',
            headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert response.json()["message"] == "contact_id: the key appears twice in one object"
    assert escaped.status_code == 400
    assert escaped.json()["message"].startswith("a: the key appears twice")


async def test_values_round_trip_or_are_refused(app: RunningApp) -> None:
    big = 2**63 - 1
    async with app.client() as client:
        stored = await client.post("/v1/events", json={
            "type": "t", "contact_id": "c", "timestamp": "0001-01-01T00:00:00Z",
            "properties": {"max": big, "min": -(2**63), "long_id": "12345678901234567890123"}})
        listed = await client.get("/v1/contacts/c/events")
        metadata = await client.post("/v1/messages", json={
            "from": "a@shop.test", "to": "b@example.org", "subject": "s", "text": "t",
            "metadata": []})
        null_properties = await client.post("/v1/events", json={
            "type": "t", "contact_id": "c", "properties": None})
    assert stored.status_code == 202, stored.text
    [event] = listed.json()["events"]
    assert event["timestamp"] == "0001-01-01T00:00:00.000Z"
    assert event["properties"] == {"max": big, "min": -(2**63),
                                   "long_id": "12345678901234567890123"}
    assert metadata.status_code == 422 and metadata.json()["message"].startswith("metadata")
    assert null_properties.status_code == 422


# --- item 13: every creatable contact id can be read ------------------------------------------

@pytest.mark.parametrize("contact_id", ["a/b", "a/b/events", "x/explain", "events", "100%",
                                        "x%2Fy", "%25", "/lead", "trail/", "été/ü"])
async def test_contact_ids_with_slashes_and_percents_can_be_read(
        app: RunningApp, contact_id: str) -> None:
    segment = quote(contact_id, safe="")
    async with app.client() as client:
        created = await client.post("/v1/contacts", json={"contact_id": contact_id,
                                                          "attributes": {"n": 1}})
        await client.post("/v1/events", json={"type": "t", "contact_id": contact_id})
        read = await client.get(f"/v1/contacts/{segment}")
        events = await client.get(f"/v1/contacts/{segment}/events")
        explained = await client.get(f"/v1/contacts/{segment}/explain")
    assert created.status_code == 201, created.text
    assert read.status_code == 200, read.text
    assert read.json()["contact"]["contact_id"] == contact_id
    assert events.status_code == 200
    assert {e["type"] for e in events.json()["events"]} == {"t", "contact_updated"}
    assert explained.status_code == 200, explained.text


async def test_a_slash_in_the_path_is_not_part_of_an_id(app: RunningApp) -> None:
    async with app.client() as client:
        await client.post("/v1/contacts", json={"contact_id": "a/b"})
        unencoded = await client.get("/v1/contacts/a/b")
    assert unencoded.status_code == 404


async def test_a_nul_in_a_path_names_nothing(app: RunningApp) -> None:
    """Found by the hostile-payload job: Postgres refused the NUL, a 500."""
    async with app.client() as client:
        for path in ("/v1/contacts/%00", "/v1/contacts/a%00/events", "/v1/contacts/%00/explain",
                     "/v1/suppressions/a%00@example.org"):
            response = await client.get(path)
            assert response.status_code == 404, (path, response.text)
