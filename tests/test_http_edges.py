"""Issue 12's low-severity edges over real HTTP: inputs that got a 500, values that came back
altered, unreadable contact ids, clients that hang up mid-body, and the key cache."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import pytest

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
    reader, writer = await asyncio.open_connection(host, int(port))
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
