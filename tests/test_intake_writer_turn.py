"""The intake writer lets the event loop take one turn before it takes a batch
(engine.intake.writer, docs/PERFORMANCE.md "Thirteenth pass"): what becomes ready in that turn
joins the batch, and the answers to the batch just committed are handed out before the next
one is taken. Groups are recorded by the spy of tests/test_intake_writer_overlap.py."""

from __future__ import annotations

import asyncio

from engine.config import IntakeSettings
from engine.database import Database
from engine.intake.writer import StoreResult
from tests.test_intake_writer_overlap import GroupRecordingWriter, events, held_commit


async def test_a_request_ready_in_the_turn_joins_the_batch(database: Database) -> None:
    writer = GroupRecordingWriter(database, IntakeSettings(commit_max_wait=0.0))
    await writer.start()
    try:
        loop = asyncio.get_running_loop()
        first = writer.submit(events("turn-a", 1))
        # Ready after the writer is woken by the first, before it takes its batch.
        later: list[asyncio.Future[StoreResult]] = []
        loop.call_soon(lambda: later.append(writer.submit(events("turn-b", 1))))
        assert (await first).accepted == 1
        assert (await later[0]).accepted == 1
    finally:
        await writer.stop()
    assert writer.groups == [2]


async def test_the_answers_go_out_before_the_next_batch_is_taken(
        database: Database, database_url: str) -> None:
    async with held_commit(database, database_url, slow_commit=60.0) as (writer, blocker, first):
        answered: list[asyncio.Future[StoreResult]] = []
        # A client answered for the held event sends its next request at once.
        first.add_done_callback(
            lambda _: answered.append(writer.submit(events("after", 1))))
        waiting = writer.submit(events("during", 1))  # waits for the held commit
        await blocker.execute("ROLLBACK")
        assert (await first).accepted == 1
        assert (await waiting).accepted == 1
        assert (await answered[0]).accepted == 1
        # The request sent on the answer went with the one that waited, not after it.
        assert writer.groups == [1, 2]
