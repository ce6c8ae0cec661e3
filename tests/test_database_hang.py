"""A hung database (every Postgres process stopped by SIGSTOP): each wait is bounded, the
client gets 503 with Retry-After while Postgres is still stopped, and a retry after it resumes
stores nothing twice."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest

from engine.database import DatabaseTimeouts
from engine.migrations import apply_migrations
from herald.database import MIGRATION_SOURCES
from tests.support.app import RunningApp, running_app
from tests.support.postgres import EmbeddedTestServer


def postgres_pids(server: EmbeddedTestServer) -> list[int]:
    """The postmaster and every process it started (backends, checkpointer, ...)."""
    pgdata = Path(server._server.pgdata)
    postmaster = int((pgdata / "postmaster.pid").read_text().split()[0])
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == postmaster:  # ppid
                children.append(int(stat.parent.name))
    return [postmaster, *children]


@contextlib.contextmanager
def frozen(server: EmbeddedTestServer) -> Iterator[None]:
    pids = postgres_pids(server)
    try:
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        yield
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


@pytest.fixture(scope="module")
def hang_server() -> Iterator[EmbeddedTestServer]:
    server = EmbeddedTestServer()
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture
async def database_url_on_hang_server(hang_server: EmbeddedTestServer) -> AsyncIterator[str]:
    admin = await asyncpg.connect(hang_server.url)
    try:
        await admin.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
        await apply_migrations(admin, MIGRATION_SOURCES)
    finally:
        await admin.close()
    yield hang_server.url


async def rows_with_id(app: RunningApp, event_id: str) -> int:
    async with app.database.connection() as connection:
        return int(await connection.fetchval(
            "SELECT count(*) FROM events WHERE event_id = $1", event_id))


async def retry_until_accepted(app: RunningApp, event: dict[str, str]) -> dict[str, int]:
    async with app.client() as client:
        for _ in range(20):  # stale pooled connections may fail once each, then reconnect
            response = await client.post("/v1/events", json=event)
            if response.status_code == 202:
                return dict(response.json())
            assert response.status_code == 503, response.text
    raise AssertionError("never accepted after the database resumed")


async def test_statement_bound_gives_503_while_postgres_is_stopped(
        hang_server: EmbeddedTestServer, database_url_on_hang_server: str) -> None:
    timeouts = DatabaseTimeouts(connect=2.0, acquire=1.0, statement=1.0, request=30.0)
    async with running_app(database_url_on_hang_server, timeouts=timeouts) as app, \
            app.client() as client:
        assert (await client.post("/v1/events", json={"type": "t", "contact_id": "c",
                                                      "id": "before"})).status_code == 202
        event = {"type": "t", "contact_id": "c", "id": "during"}
        with frozen(hang_server):
            # Both answers arrive while every Postgres process is stopped (SIGCONT comes
            # only after them): the statement bound fired, not the outage's end.
            down = await client.post("/v1/events", json=event, timeout=60.0)
            ready = await client.get("/readyz", timeout=60.0)
        assert down.status_code == 503, down.text
        assert down.json()["error"] == "database_unavailable"
        assert down.headers["Retry-After"]
        assert ready.status_code == 503

        await retry_until_accepted(app, event)
        assert await rows_with_id(app, "during") == 1


async def test_request_bound_gives_503_and_a_retry_of_a_lost_ack_is_a_duplicate(
        hang_server: EmbeddedTestServer, database_url_on_hang_server: str) -> None:
    # The statement bound is long, so the transaction is still queued on the stopped server
    # when the request bound answers 503; once resumed, Postgres commits it: the client's
    # 503 was an acknowledgement lost. Its retry with the same id is not stored again.
    timeouts = DatabaseTimeouts(connect=2.0, acquire=1.0, statement=120.0, request=1.0)
    async with running_app(database_url_on_hang_server, timeouts=timeouts) as app, \
            app.client() as client:
        assert (await client.post("/v1/events", json={"type": "t", "contact_id": "c",
                                                      "id": "before"})).status_code == 202
        event = {"type": "t", "contact_id": "c", "id": "lost-ack"}
        with frozen(hang_server):
            down = await client.post("/v1/events", json=event, timeout=60.0)
        assert down.status_code == 503, down.text
        assert down.headers["Retry-After"]

        result = await retry_until_accepted(app, event)
        assert result["accepted"] + result["duplicates"] == 1
        assert await rows_with_id(app, "lost-ack") == 1
