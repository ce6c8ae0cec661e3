"""POST /v1/events answered from the HTTP protocol (engine.http.direct_routes): the same bytes
as the app's answers, over a real socket, for every outcome; requests it must not take go to
the app; pipelined answers keep their order; a shutdown or a client gone while a commit is
pending (a body cut short: tests/test_http_edges.py). A row lock on an event id holds a
commit where a test needs one pending."""

from __future__ import annotations

import asyncio
import dataclasses
import http.client
import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import orjson
import pytest

from engine.http.direct_routes import DirectRequest
from engine.metrics import HTTP_DIRECT_REQUESTS
from tests.support.app import RunningApp, running_app
from tests.support.intake import wait_for_lock_waiters


def direct(outcome: str) -> float:
    return float(HTTP_DIRECT_REQUESTS.labels(outcome)._value.get())


@pytest.fixture
async def apps(database_url: str) -> AsyncIterator[tuple[RunningApp, RunningApp]]:
    """The same database served with the direct route and without it."""
    async with running_app(database_url) as with_direct, \
            running_app(database_url, direct_intake=False) as without:
        yield with_direct, without


def post(key: str, body: bytes, *extra: str, version: str = "1.1") -> bytes:
    head = [f"POST /v1/events HTTP/{version}", "Host: herald.test",
            "Content-Type: application/json", f"Content-Length: {len(body)}"]
    if key:
        head.append(f"Authorization: Bearer {key}")
    return ("\r\n".join([*head, *extra]) + "\r\n\r\n").encode() + body


def event(event_id: str, **fields: Any) -> bytes:
    return orjson.dumps({"type": "viewed", "contact_id": "c-direct", "id": event_id, **fields})


class Connection:
    """One keep-alive connection reading whole answers (status line, headers, body)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, app: RunningApp) -> Connection:
        port = int(app.base_url.rsplit(":", 1)[1])
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def answer(self) -> bytes:
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), 10)
        while head.startswith(b"HTTP/1.1 100 "):  # an interim answer: the real one follows
            head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), 10)
        length = re.search(rb"\r\ncontent-length: (\d+)\r\n", head, re.IGNORECASE)
        assert length is not None, head
        return head + await asyncio.wait_for(self.reader.readexactly(int(length[1])), 10)

    async def closed(self) -> bool:
        return await asyncio.wait_for(self.reader.read(1), 10) == b""

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


def normalised(answer: bytes) -> bytes:
    """The answer without what differs between two servers: the date, a request id."""
    answer = re.sub(rb"\r\ndate: [^\r]*", b"", answer)
    return re.sub(rb"[0-9a-f]{32}", b"<id>", answer)


async def exchange(app: RunningApp, *requests: bytes) -> list[bytes]:
    """Send the requests one after another on one connection, with the key already cached
    (the first request of an unknown key is the app's), and return the answers."""
    connection = await Connection.open(app)
    try:
        answers = []
        for request in requests:
            await connection.send(request)
            answers.append(normalised(await connection.answer()))
        return answers
    finally:
        await connection.close()


async def test_every_outcome_is_answered_as_the_app_answers_it(
        apps: tuple[RunningApp, RunningApp]) -> None:
    with_direct, without = apps

    async def requests(app: RunningApp, tag: str) -> list[bytes]:
        key, reader = app.admin_key, await app.new_key("contacts:read")
        return [
            post(key, event(f"{tag}-1")),  # the app's (the key is not cached yet)
            post(key, event(f"{tag}-2")),
            post(key, event(f"{tag}-2")),  # a duplicate
            post(key, orjson.dumps({"events": [orjson.loads(event(f"{tag}-3")),
                                               orjson.loads(event(f"{tag}-3")),
                                               orjson.loads(event(f"{tag}-4"))]})),
            post(key, b'{"type": "viewed", '),  # not JSON
            post(key, b'{"type": "viewed", "type": "x", "contact_id": "c"}'),  # duplicate key
            post(key, b"\xff\xfe"),  # not UTF-8
            post(key, b"   "),  # empty
            post(key, orjson.dumps({"contact_id": "c"})),  # no type
            post(key, b'{"type": "viewed", "contact_id": "c\\u0000"}'),  # an escaped NUL
            post(key, orjson.dumps({"events": []})),
            post(reader, event(f"{tag}-5")),  # the app's: 403
            post(reader, event(f"{tag}-6")),  # cached now: 403 again
            post("", event(f"{tag}-7")),  # 401
            post(key + "x", event(f"{tag}-8")),  # a wrong secret: 401
            post(key, event(f"{tag}-9"), "Connection: close"),
        ]

    served = direct("served")
    answers = await exchange(with_direct, *await requests(with_direct, "d"))
    assert direct("served") - served >= 11  # the cached key's answers, 403s included
    expected = await exchange(without, *await requests(without, "a"))
    assert answers == expected
    statuses = [int(answer[9:12]) for answer in answers]
    assert statuses == [202, 202, 202, 202, 400, 400, 400, 400, 422, 422, 422, 403, 403, 401,
                        401, 202]
    assert b'{"accepted":0,"duplicates":1}' in answers[2]
    assert b'{"accepted":2,"duplicates":1}' in answers[3]
    assert b"connection: close" in answers[-1]
    async with with_direct.database.connection() as connection:
        stored = await connection.fetch(
            "SELECT event_id, count(*) AS n FROM events WHERE event_id LIKE 'd-%' "
            "GROUP BY event_id ORDER BY event_id")
    assert [(row["event_id"], row["n"]) for row in stored] == [
        ("d-1", 1), ("d-2", 1), ("d-3", 1), ("d-4", 1), ("d-9", 1)]


async def test_rate_limited_and_overloaded_answers_match(database_url: str) -> None:
    answers: dict[bool, list[bytes]] = {}
    for direct_intake in (True, False):
        tag = f"r{direct_intake}"
        async with running_app(database_url, direct_intake=direct_intake,
                               rate_limit_per_second=0.001, rate_limit_burst=3) as app:
            answers[direct_intake] = await exchange(
                app, *(post(app.admin_key, event(f"{tag}-{n}")) for n in range(4)))
        async with running_app(database_url, direct_intake=direct_intake) as app:
            writer = app.role.writer
            answers[direct_intake] += await exchange(app, post(app.admin_key, event(f"{tag}-a")))
            writer._settings = dataclasses.replace(writer._settings, commit_max_events=1,
                                                   queue_max_events=1)
            writer._pending_events = 1  # as if one event were waiting: the queue is full
            answers[direct_intake] += await exchange(app, post(app.admin_key, event(f"{tag}-b")))
            writer._pending_events = 0
    assert answers[True] == answers[False]
    assert [int(answer[9:12]) for answer in answers[True]] == [202, 202, 202, 429, 202, 503]
    assert b"\r\nretry-after: " in answers[True][3]
    assert b'"overloaded"' in answers[True][5]


async def test_requests_it_must_not_take_go_to_the_app(apps: tuple[RunningApp, RunningApp]
                                                     ) -> None:
    app = apps[0]
    key = app.admin_key
    await exchange(app, post(key, event("m-0")))  # the key is cached from here on
    declined, served = direct("declined"), direct("served")
    body = event("m-1")
    chunked = (b"POST /v1/events HTTP/1.1\r\nHost: h\r\nContent-Type: application/json\r\n"
               b"Authorization: Bearer " + key.encode() + b"\r\n"
               b"Transfer-Encoding: chunked\r\n\r\n"
               + b"%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n")
    answers = await exchange(
        app,
        chunked,
        post(key, event("m-2"), "Expect: 100-continue"),
        post(key, b"x" * (app.role.settings.http.max_body + 1)),
    )
    assert [int(answer[9:12]) for answer in answers] == [202, 202, 413]
    # HTTP/1.0 and a query string: the app's too
    one_oh = await exchange(app, post(key, event("m-3"), version="1.0"))
    assert int(one_oh[0][9:12]) == 202
    assert direct("served") == served  # none of them was answered directly
    assert direct("declined") == declined
    # Python's own client, keep-alive, every answer direct
    port = int(app.base_url.rsplit(":", 1)[1])

    def client_run() -> list[int]:
        client = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        statuses = []
        for n in range(5):
            client.request("POST", "/v1/events", body=event(f"m-py-{n}"),
                           headers={"Authorization": f"Bearer {key}",
                                    "Content-Type": "application/json"})
            response = client.getresponse()
            assert orjson.loads(response.read()) == {"accepted": 1, "duplicates": 0}
            statuses.append(response.status)
        client.close()
        return statuses

    assert await asyncio.to_thread(client_run) == [202] * 5
    assert direct("served") == served + 5


async def hold_id(database_url: str, event_id: str) -> asyncpg.Connection:
    """A session holding ``event_id`` claimed and uncommitted: a commit with it waits."""
    holder = await asyncpg.connect(database_url)
    await holder.execute("BEGIN")
    await holder.execute("INSERT INTO event_ids (event_id) VALUES ($1)", event_id)
    return holder


@asynccontextmanager
async def pending_answer(app: RunningApp, database_url: str, tag: str
                         ) -> AsyncIterator[tuple[Connection, asyncpg.Connection]]:
    """A connection whose direct request (event ``tag``-held) waits for its commit, held by
    the yielded session's uncommitted claim of the same id (roll it back to let it go)."""
    await exchange(app, post(app.admin_key, event(f"{tag}-0")))  # the key is cached
    holder = await hold_id(database_url, f"{tag}-held")
    connection = await Connection.open(app)
    try:
        await connection.send(post(app.admin_key, event(f"{tag}-held")))
        await wait_for_lock_waiters(holder, 1)
        yield connection, holder
    finally:
        await holder.close()
        await connection.close()


async def test_a_pipelined_request_waits_for_the_pending_direct_answer(
        apps: tuple[RunningApp, RunningApp], database_url: str) -> None:
    app = apps[0]
    async with pending_answer(app, database_url, "p") as (connection, holder):
        # a second request on the connection, which the app would answer at once (400)
        await connection.send(post(app.admin_key, b"not json"))
        await holder.execute("ROLLBACK")
        first, second = await connection.answer(), await connection.answer()
    assert first.startswith(b"HTTP/1.1 202 ") and b'{"accepted":1,"duplicates":0}' in first
    assert second.startswith(b"HTTP/1.1 400 ")


async def test_shutdown_lets_a_pending_answer_out_then_closes(database_url: str) -> None:
    async with running_app(database_url) as app, \
            pending_answer(app, database_url, "s") as (connection, holder):
        server = app.role.server
        assert server is not None
        stopping = asyncio.create_task(server.stop())
        for _ in range(500):  # polled: until uvicorn's shutdown has reached the request
            cycles = [getattr(protocol, "cycle", None)
                      for protocol in server._server.server_state.connections]
            if any(isinstance(cycle, DirectRequest) and not cycle.keep_alive
                   for cycle in cycles):
                break
            await asyncio.sleep(0.01)
        else:
            raise AssertionError("the shutdown never reached the pending request")
        await holder.execute("ROLLBACK")
        answer = await connection.answer()
        assert await connection.closed()
        await stopping
    assert answer.startswith(b"HTTP/1.1 202 ")
    assert b"\r\nconnection: close\r\n" in answer


async def test_a_client_gone_before_its_answer_still_gets_its_event_stored(
        apps: tuple[RunningApp, RunningApp], database_url: str) -> None:
    app = apps[0]
    key = app.admin_key
    await exchange(app, post(key, event("g-0")))
    holder = await hold_id(database_url, "g-other")
    served = direct("served")
    connection = await Connection.open(app)
    # the event's own id is free: its batch waits behind another's held id
    await connection.send(post(key, orjson.dumps({"events": [
        orjson.loads(event("g-other")), orjson.loads(event("g-gone"))]})))
    await wait_for_lock_waiters(holder, 1)
    await connection.close()
    await holder.execute("ROLLBACK")
    await holder.close()
    for _ in range(500):  # polled: the answer (to nobody) is the condition
        if direct("served") > served:
            break
        await asyncio.sleep(0.01)
    assert direct("served") == served + 1
    async with app.database.connection() as db:
        assert await db.fetchval("SELECT count(*) FROM events WHERE event_id = 'g-gone'") == 1
    assert await exchange(app, post(key, event("g-after"))) == [
        normalised(answer) for answer in await exchange(apps[1], post(key, event("g-after2")))]


async def test_direct_answers_get_the_access_log_line_the_app_writes(
        database_url: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="herald.http.access")
    async with running_app(database_url, access_log=True) as app:
        served = direct("served")
        answers = await exchange(app, post(app.admin_key, event("l-1")),  # the app's
                                 post(app.admin_key, event("l-2")),  # direct
                                 post(app.admin_key, b"[1"))  # direct, 400
        assert direct("served") == served + 2
    records = [r for r in caplog.records if r.name == "herald.http.access"]
    assert [(r.method, r.route, r.status, r.bytes)  # type: ignore[attr-defined]
            for r in records] == [
        ("POST", "/v1/events", 202, len(answers[0].split(b"\r\n\r\n", 1)[1])),
        ("POST", "/v1/events", 202, len(answers[1].split(b"\r\n\r\n", 1)[1])),
        ("POST", "/v1/events", 400, len(answers[2].split(b"\r\n\r\n", 1)[1]))]
    assert all(r.client == "127.0.0.1" and r.duration_ms >= 0  # type: ignore[attr-defined]
               and "Bearer" not in str(r.__dict__) for r in records)
