"""Webhook steps: only public addresses unless allow-listed; JSON POST with bounded retries,
against a real HTTP server on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import orjson
import pytest

from automation.live.webhooks import call, check_target
from automation.runtime.interpreter import WebhookEffect


class TinyHttpServer:
    """Answers each POST with the next status in ``statuses`` and records the bodies."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = statuses
        self.bodies: list[bytes] = []
        self.port = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length"))
        self.bodies.append(await reader.readexactly(length))
        status = self.statuses[min(len(self.bodies) - 1, len(self.statuses) - 1)]
        writer.write(f"HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                     .encode())
        await writer.drain()
        writer.close()


@pytest.fixture
async def server() -> AsyncIterator[TinyHttpServer]:
    tiny = TinyHttpServer([500, 503, 200])
    listener = await asyncio.start_server(tiny.handle, "127.0.0.1", 0)
    tiny.port = listener.sockets[0].getsockname()[1]
    async with listener:
        yield tiny


def effect(url: str, retries: int = 3) -> WebhookEffect:
    return WebhookEffect("hook", url, (("X-Source", "herald"),), {"contact_id": "42"}, 2.0,
                         retries)


async def test_loopback_is_refused_unless_allow_listed(server: TinyHttpServer) -> None:
    url = f"http://127.0.0.1:{server.port}/hook"
    refused = await call(effect(url), allow=())
    assert not refused.ok and "non-public address 127.0.0.1" in refused.detail
    assert server.bodies == []
    assert await check_target("ftp://example.com/x", ()) == "only http(s) URLs with a host"


async def test_posts_json_and_retries_server_errors(server: TinyHttpServer) -> None:
    url = f"http://127.0.0.1:{server.port}/hook"
    result = await call(effect(url), allow=(f"127.0.0.1:{server.port}",))
    assert result.ok and result.detail == "HTTP 200"
    assert [orjson.loads(body) for body in server.bodies] == [{"contact_id": "42"}] * 3


async def test_gives_up_after_the_retries(server: TinyHttpServer) -> None:
    url = f"http://127.0.0.1:{server.port}/hook"
    result = await call(effect(url, retries=1), allow=("127.0.0.1",))
    assert not result.ok and result.detail == "gave up: attempt 2: HTTP 503"
    assert len(server.bodies) == 2
