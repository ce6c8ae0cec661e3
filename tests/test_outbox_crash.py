"""SIGKILL the outbox role between commit and delivery: after a restart every outcome event is
delivered at least once with its webhook-id, and only requests in flight at the kill repeat."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from bench.herald_process import HeraldProcess
from engine.database import Database
from engine.eventlog import LogEvent, append_events
from engine.outbox import subscriptions
from engine.outbox.subscriptions import parse_subscription
from tests.support.webhook_receiver import webhook_receiver

BEFORE_KILL = 20
WHILE_DEAD = 10
ENDPOINT_CONCURRENCY = 4


async def log_delivered(database: Database, start: int, count: int) -> None:
    async with database.transaction() as connection:
        await append_events(connection, [
            LogEvent("email_delivered", f"c{i}", None, {"n": i}, datetime.now(UTC), "mta")
            for i in range(start, start + count)])


async def test_sigkill_between_commit_and_delivery_loses_nothing(
        database: Database, database_url: str, tmp_path: Path) -> None:
    total = BEFORE_KILL + WHILE_DEAD
    async with webhook_receiver() as receiver:
        new = parse_subscription(receiver.url(), ["email_delivered"])
        async with database.connection() as connection:
            await subscriptions.create(connection, new)
        env = {"HERALD_DATABASE_URL": database_url, "HERALD_ENGINE_LOG_LEVEL": "warning",
               "HERALD_WEBHOOKS_ALLOW": "127.0.0.1", "HERALD_WEBHOOKS_LEASE": "4s",
               "HERALD_WEBHOOKS_TIMEOUT": "2s", "HERALD_WEBHOOKS_POLL_INTERVAL": "100ms",
               "HERALD_WEBHOOKS_BACKOFF_BASE": "50ms", "HERALD_WEBHOOKS_BACKOFF_CAP": "200ms",
               "HERALD_WEBHOOKS_ENDPOINT_CONCURRENCY": str(ENDPOINT_CONCURRENCY)}
        receiver.hold.clear()  # requests arrive and wait: committed, not yet delivered
        process = HeraldProcess(["run", "--role", "outbox"], env, tmp_path / "herald.log")
        process.start()
        await log_delivered(database, 0, BEFORE_KILL)
        await receiver.wait_for_waiting(ENDPOINT_CONCURRENCY)
        process.kill()
        in_flight = len(receiver.received)
        assert in_flight == ENDPOINT_CONCURRENCY
        await log_delivered(database, BEFORE_KILL, WHILE_DEAD)  # nobody follows the log now
        receiver.hold.set()

        process = HeraldProcess(["run", "--role", "outbox"], env, tmp_path / "herald.log")
        process.start()
        try:
            # every row once, and the rows in flight at the kill once more (after their lease)
            await receiver.wait_for(total + in_flight, timeout=30)
        finally:
            assert process.stop() == 0
    async with database.connection() as connection:
        rows = await connection.fetch("SELECT message_id, state FROM outbox")
    assert len(rows) == total
    assert {row["state"] for row in rows} == {"delivered"}
    assert set(receiver.per_id()) == {row["message_id"] for row in rows}
    numbers = sorted({item.json()["data"]["properties"]["n"]  # type: ignore[index]
                      for item in receiver.received})
    assert numbers == list(range(total))
    repeats = sum(n - 1 for n in receiver.per_id().values())
    assert repeats == in_flight  # only what was in flight at the kill is sent twice
