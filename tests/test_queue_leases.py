"""The queue's lease rules: an outcome from a worker that lost its lease changes nothing, and is
logged and counted rather than vanishing."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import pytest

from engine.database import Database
from engine.metrics import REGISTRY
from mta.queue import store as queue
from mta.queue.store import Outcome
from tests.support.mta import fetch, identity_for, mta_settings, queue_message


def lost(state: str) -> float:
    return REGISTRY.get_sample_value("herald_mta_lost_leases_total", {"outcome": state}) or 0.0


async def test_an_outcome_after_the_lease_was_lost_is_logged_and_counted(
        database: Database, caplog: pytest.LogCaptureFixture) -> None:
    identity = await identity_for(database, mta_settings())
    message_id = await queue_message(database, identity, "ann@example.org")
    async with database.connection() as connection:
        [stale], _ = await queue.claim(connection, 10, 60, "worker-a")
        # Worker A stalls past its lease; worker B claims the message again.
        await connection.execute(
            "UPDATE outbound_messages SET next_attempt_at = now() WHERE id = $1", message_id)
        [fresh], _ = await queue.claim(connection, 10, 60, "worker-b")
        assert fresh.id == stale.id == message_id
        before = lost("delivered")
        with caplog.at_level(logging.WARNING, logger="herald.mta.queue"):
            held = await queue.record(connection, [Outcome(
                stale, "delivered", datetime.now(UTC), remote_host="mx.example.org", code=250,
                reply="250 ok")], "worker-a")
    assert held == set()
    assert lost("delivered") == before + 1
    [entry] = [r for r in caplog.records if r.name == "herald.mta.queue"]
    assert entry.message == "lease_lost"
    assert entry.__dict__["message_id"] == str(message_id)
    assert entry.__dict__["outcome"] == "delivered"
    [row] = await fetch(database, "SELECT state, lease_owner FROM outbound_messages")
    assert (row["state"], row["lease_owner"]) == ("queued", "worker-b")
    assert await fetch(database, "SELECT 1 FROM delivery_attempts") == []
