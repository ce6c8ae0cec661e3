"""SIGKILL the engine while it delivers: after a restart every accepted message is delivered at
least once, and duplicates are bounded by what was in flight."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from bench.herald_process import HeraldProcess
from engine.database import Database
from mta.queue.return_paths import message_id_from
from mta.sink import CaptureSink
from tests.support.mta import identity_for, mta_settings, queue_message, wait_for_states

MESSAGES = 2000
ACTIVE_WINDOW = 300


async def test_sigkill_while_delivering_loses_nothing(
        database: Database, database_url: str, tmp_path: Path) -> None:
    identity = await identity_for(database, mta_settings())
    ids = [await queue_message(database, identity, f"u{i}@example.org", contact_id=f"c{i}")
           for i in range(MESSAGES)]
    async with CaptureSink(keep=3 * MESSAGES) as sink:
        env = {"HERALD_DATABASE_URL": database_url, "HERALD_ENGINE_LOG_LEVEL": "warning",
               "HERALD_MTA_ROUTE": f"127.0.0.1:{sink.port}", "HERALD_MTA_SHAPING_FILE": "",
               "HERALD_MTA_LEASE": "5s", "HERALD_MTA_ACTIVE_WINDOW": str(ACTIVE_WINDOW),
               "HERALD_MTA_CLAIM_BATCH": "100", "HERALD_MTA_MAX_CONNECTIONS_PER_SITE": "10"}
        engine = HeraldProcess(["run", "--role", "mta"], env, tmp_path / "herald.log")
        engine.start()
        await sink.wait_for(MESSAGES // 4, timeout=60)
        engine.kill()
        delivered_before_kill = sink.received
        assert delivered_before_kill < MESSAGES

        engine = HeraldProcess(["run", "--role", "mta"], env, tmp_path / "herald.log")
        engine.start()
        try:
            states = await wait_for_states(database_url, ids, ("delivered",), timeout=120)
        finally:
            assert engine.stop() == 0
        received = Counter(message_id_from(identity.bounce_secret, m.mail_from)
                           for m in sink.messages)
    assert set(states.values()) == {"delivered"}
    assert set(received) == set(ids)  # every accepted message arrived at least once
    duplicates = sum(count - 1 for count in received.values())
    assert duplicates <= ACTIVE_WINDOW  # only what was in flight when killed can repeat
