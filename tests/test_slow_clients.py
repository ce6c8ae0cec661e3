"""Slow clients (slowloris) over raw sockets: partial request lines, headers or bodies are cut
off within the bounds, and one address cannot hold more than its share of connections."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import pytest

from tests.support.app import RunningApp, running_app

WAIT = 30.0  # a generous bound on each wait; the configured bounds are far shorter


@pytest.fixture
async def app(database_url: str) -> AsyncIterator[RunningApp]:
    async with running_app(database_url, header_timeout=0.5, body_timeout=0.5,
                           max_connections_per_client=3) as running:
        yield running


async def connect(app: RunningApp, source: str = "127.0.0.1"
                  ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    port = urlsplit(app.base_url).port
    return await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))


async def until_closed(reader: asyncio.StreamReader) -> bytes:
    """Everything the server sends until it closes the connection (bounded)."""
    return await asyncio.wait_for(reader.read(), WAIT)


async def test_half_a_request_line_is_cut_off(app: RunningApp) -> None:
    reader, writer = await connect(app)
    writer.write(b"POST /v1/ev")
    await writer.drain()
    answer = await until_closed(reader)
    assert answer == b"" or answer.startswith(b"HTTP/1.1 408 "), answer
    writer.close()


async def test_a_silent_connection_is_cut_off(app: RunningApp) -> None:
    reader, writer = await connect(app)
    assert (await until_closed(reader)).startswith(b"HTTP/1.1 408 ")
    writer.close()


async def test_headers_then_a_partial_body_is_cut_off(app: RunningApp) -> None:
    reader, writer = await connect(app)
    writer.write(b"POST /v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                 + app.admin_key.encode() + b"\r\nContent-Type: application/json\r\n"
                 b"Content-Length: 100\r\n\r\n{\"type\": ")
    await writer.drain()
    answer = await until_closed(reader)
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    writer.close()
    async with app.database.connection() as connection:
        assert await connection.fetchval("SELECT count(*) FROM events") == 0


async def test_endless_headers_are_refused(app: RunningApp) -> None:
    reader, writer = await connect(app)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"X-Pad: " + b"a" * 70_000)
    await writer.drain()
    assert (await until_closed(reader)).startswith(b"HTTP/1.1 431 ")
    writer.close()


async def read_answer(reader: asyncio.StreamReader) -> bytes:
    """One whole answer: the head and its Content-Length of body."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT)
    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length")))
    return head + await asyncio.wait_for(reader.readexactly(length), WAIT)


async def test_a_prompt_keep_alive_client_is_served_repeatedly(app: RunningApp) -> None:
    reader, writer = await connect(app)
    for _ in range(3):
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        await writer.drain()
        answer = await read_answer(reader)
        assert answer.startswith(b"HTTP/1.1 200 "), answer
    writer.close()


async def test_an_idle_keep_alive_connection_is_closed_quietly(database_url: str) -> None:
    async with running_app(database_url, keep_alive_timeout=1.0) as app:
        reader, writer = await connect(app)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        await writer.drain()
        assert (await read_answer(reader)).startswith(b"HTTP/1.1 200 ")
        assert await until_closed(reader) == b""  # no 408: it asked for nothing more
        writer.close()


async def test_a_request_begun_after_an_answer_is_held_to_the_header_bound(
        app: RunningApp) -> None:
    # keep-alive 30 s, headers 0.5 s: a request begun between answers is cut off by 408 at
    # the header bound, whether it came in a read of its own or behind an answered request
    # in the same read (there the intake's direct route answers a 400 at once).
    reader, writer = await connect(app)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    await writer.drain()
    assert (await read_answer(reader)).startswith(b"HTTP/1.1 200 ")
    writer.write(b"GET /heal")
    await writer.drain()
    assert (await until_closed(reader)).startswith(b"HTTP/1.1 408 ")
    writer.close()

    reader, writer = await connect(app)
    post = (b"POST /v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
            + app.admin_key.encode() + b"\r\nContent-Type: application/json\r\n"
            b"Content-Length: 3\r\n\r\n")
    writer.write(post + b"{\"a")  # the key is cached after this one (answered by the app)
    await writer.drain()
    assert (await read_answer(reader)).startswith(b"HTTP/1.1 400 ")
    writer.write(post + b"{\"a" + b"GET /heal")
    await writer.drain()
    assert (await read_answer(reader)).startswith(b"HTTP/1.1 400 ")
    assert (await until_closed(reader)).startswith(b"HTTP/1.1 408 ")
    writer.close()


async def get_healthz(app: RunningApp, source: str) -> bytes:
    reader, writer = await connect(app, source)
    try:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        await writer.drain()
        return await until_closed(reader)
    except ConnectionResetError:  # refused before our request was read: an RST
        return b""
    finally:
        writer.close()


async def test_connections_per_address_are_capped(database_url: str) -> None:
    # Long header bound here, so the idle connections stay open while the test runs.
    async with running_app(database_url, header_timeout=60.0,
                           max_connections_per_client=3) as app:
        held = [await connect(app) for _ in range(3)]
        # Each held connection is registered once the server has answered on one after it.
        assert (await get_healthz(app, "127.0.0.2")).startswith(b"HTTP/1.1 200 ")
        refused = await get_healthz(app, "127.0.0.1")  # the 4th from 127.0.0.1
        assert refused == b"" or refused.startswith(b"HTTP/1.1 503 "), refused
        # Another address is still served.
        assert (await get_healthz(app, "127.0.0.2")).startswith(b"HTTP/1.1 200 ")

        _reader, writer = held.pop()
        writer.close()
        await writer.wait_closed()
        served = b""
        for _ in range(100):  # until the server has seen that close (each try is instant)
            served = await get_healthz(app, "127.0.0.1")
            if served.startswith(b"HTTP/1.1 200 "):
                break
        assert served.startswith(b"HTTP/1.1 200 "), served
        for _reader, writer in held:
            writer.close()
