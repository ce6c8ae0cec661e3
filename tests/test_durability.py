"""Durability of the intake: SIGKILL mid-stream, SIGTERM, and a database outage."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import asyncpg
import httpx
import pytest

from bench.herald_process import HeraldProcess, free_port
from engine.database import connect_one
from engine.keys import create_key
from engine.migrations import apply_migrations
from herald.database import MIGRATION_SOURCES
from tests.support.app import running_app
from tests.support.postgres import EmbeddedTestServer


async def make_key(url: str) -> str:
    connection = await connect_one(url)
    try:
        return (await create_key(connection, "t", ("events:write",))).token
    finally:
        await connection.close()


def herald_env(database_url: str, port: int) -> dict[str, str]:
    return {"HERALD_DATABASE_URL": database_url, "HERALD_HTTP_LISTEN": f"127.0.0.1:{port}",
            "HERALD_ENGINE_LOG_LEVEL": "warning", "HERALD_HTTP_RATE_LIMIT_PER_SECOND": "0"}


async def post_until_killed(base_url: str, key: str, worker: int, acked: list[str],
                            kill_at: int, killed: asyncio.Event) -> None:
    async with httpx.AsyncClient(base_url=base_url, timeout=10.0,
                                 headers={"Authorization": f"Bearer {key}"}) as client:
        for n in range(100_000):
            event_id = f"w{worker}-{n}"
            try:
                response = await client.post("/v1/events", json={
                    "type": "t", "contact_id": f"c{n % 50}", "id": event_id})
            except httpx.TransportError:
                return
            if response.status_code == 202:
                acked.append(event_id)
                if len(acked) >= kill_at:
                    killed.set()
            if killed.is_set() and len(acked) >= kill_at + 50:
                return


async def server_under_load(database_url: str, tmp_path: Path, clients: int, kill_at: int
                            ) -> tuple[HeraldProcess, int, str, list[str],
                                       list[asyncio.Task[None]]]:
    """Start ``herald run --role http`` and posting clients; return once ``kill_at`` events
    were acknowledged (the clients keep posting)."""
    port = free_port()
    key = await make_key(database_url)
    server = HeraldProcess(["run", "--role", "http"], herald_env(database_url, port),
                           tmp_path / "herald.log")
    server.start()
    acked: list[str] = []
    reached = asyncio.Event()
    tasks = [asyncio.create_task(post_until_killed(
        f"http://127.0.0.1:{port}", key, w, acked, kill_at, reached)) for w in range(clients)]
    await asyncio.wait_for(reached.wait(), 60)
    return server, port, key, acked, tasks


async def test_sigkill_mid_stream_loses_no_acknowledged_event(
        database_url: str, tmp_path: Path) -> None:
    server, port, key, acked, clients = await server_under_load(database_url, tmp_path, 16, 400)
    server.kill()  # SIGKILL while the clients keep posting
    await asyncio.wait_for(asyncio.gather(*clients), 60)
    assert len(acked) >= 400

    server = HeraldProcess(["run", "--role", "http"], herald_env(database_url, port),
                           tmp_path / "herald.log")
    server.start()
    try:
        connection = await asyncpg.connect(database_url)
        try:
            rows = await connection.fetch(
                "SELECT event_id, count(*) AS n FROM events WHERE event_id = ANY($1::text[]) "
                "GROUP BY event_id", acked)
        finally:
            await connection.close()
        assert {r["event_id"] for r in rows} == set(acked)
        assert all(r["n"] == 1 for r in rows)
        # Idempotency survives the restart: re-posting acknowledged events stores nothing.
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}",
                                     headers={"Authorization": f"Bearer {key}"}) as client:
            again = await client.post("/v1/events", json={"events": [
                {"type": "t", "contact_id": "c", "id": event_id} for event_id in acked[:100]]})
        assert again.json() == {"accepted": 0, "duplicates": 100}
    finally:
        assert server.stop() == 0


async def test_sigterm_finishes_in_flight_requests_and_exits_zero(
        database_url: str, tmp_path: Path) -> None:
    server, _port, _key, acked, clients = await server_under_load(database_url, tmp_path, 8,
                                                                  200)
    started = time.monotonic()
    assert await asyncio.to_thread(server.stop, 10.0) == 0  # sends SIGTERM once
    assert time.monotonic() - started < 10.0
    assert "STOPPING=1" in server.notifications
    await asyncio.wait_for(asyncio.gather(*clients), 30)
    connection = await asyncpg.connect(database_url)
    try:
        stored = {r["event_id"] for r in await connection.fetch("SELECT event_id FROM events")}
    finally:
        await connection.close()
    assert set(acked) <= stored


@pytest.fixture
def outage_server() -> EmbeddedTestServer:
    server = EmbeddedTestServer()
    yield server
    server.cleanup()


async def test_database_outage_gives_503_and_recovers_without_restart(
        outage_server: EmbeddedTestServer) -> None:
    connection = await asyncpg.connect(outage_server.url)
    try:
        await apply_migrations(connection, MIGRATION_SOURCES)
    finally:
        await connection.close()
    async with running_app(outage_server.url) as app, app.client() as client:
        event = {"type": "t", "contact_id": "c"}
        assert (await client.post("/v1/events", json=event)).status_code == 202

        await asyncio.to_thread(outage_server.stop_server)
        down = await client.post("/v1/events", json=event)
        ready = await client.get("/readyz")
        assert down.status_code == 503
        assert down.json()["error"] == "database_unavailable"
        assert ready.status_code == 503

        await asyncio.to_thread(outage_server.start_server)
        statuses = []
        for _ in range(10):  # stale pooled connections may fail once each, then reconnect
            statuses.append((await client.post("/v1/events", json=event)).status_code)
            if statuses[-1] == 202:
                break
        assert statuses[-1] == 202, statuses
        assert set(statuses[:-1]) <= {503}
        assert (await client.get("/readyz")).status_code == 200
        async with app.database.connection() as conn:
            assert await conn.fetchval("SELECT count(*) FROM events") == 2
