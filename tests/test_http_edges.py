"""Issue 12's low-severity edges over real HTTP: inputs that got a 500, values that came back
altered, unreadable contact ids, clients that hang up mid-body, and the key cache."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

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
