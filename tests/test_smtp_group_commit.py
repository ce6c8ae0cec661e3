"""The SMTP servers' group commit: a batch stays within its bounds, a failed batch answers every
session in it and stores nothing partial, at most ``max_in_flight`` transactions at once; and
the submission writer (``enqueue_durably``) queues a batch in one statement, all or nothing."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import pytest

from engine.addresses import parse_address
from engine.database import Database
from engine.errors import DatabaseUnavailable
from mta.compose import compose
from mta.queue.enqueue import OutboundMessage, QueueIdentity, enqueue_durably, enqueue_many
from mta.smtpd.committer import GroupCommitter
from mta.submission.server import Submitted
from mta.suppression import store as suppressions
from mta.suppression.rules import Suppression
from tests.support.mta import fetch, identity_for, mta_settings

NOTIFY_CHANNEL = "herald_outbound"


def copy(to: str, message_id: uuid.UUID | None = None) -> OutboundMessage:
    composed = compose({"from": "news@shop.test", "to": to, "subject": "s", "text": "t"})
    return OutboundMessage(composed.header_from, parse_address(to), composed.body,
                           source="submission", id=message_id or uuid.uuid4())


async def stored(database: Database) -> list[tuple[str, str]]:
    return [(r["recipient"], r["state"]) for r in await fetch(
        database, "SELECT recipient, state FROM outbound_messages ORDER BY recipient")]


def submission_committer(database: Database, identity: QueueIdentity, batches: list[int],
                         **bounds: int) -> GroupCommitter[Submitted]:
    async def write(connection: object, items: list[Submitted]) -> None:
        batches.append(len(items))
        await enqueue_durably(connection,  # type: ignore[arg-type]
                              identity, [m for item in items for m in item.messages])

    return GroupCommitter(database, write, lambda item: item.size, "test-committer",
                          transaction=False, **bounds)


async def test_batches_stay_within_their_item_and_byte_bounds(database: Database) -> None:
    identity = await identity_for(database, mta_settings())
    batches: list[int] = []
    one = Submitted((copy("a0@example.org"),)).size
    committer = submission_committer(database, identity, batches, max_items=3,
                                     max_bytes=one * 5 // 2)
    # Handed over before the writer runs, so they are all pending for its first batch.
    sessions = [asyncio.ensure_future(committer.store(Submitted((copy(f"a{i}@example.org"),))))
                for i in range(7)]
    await asyncio.sleep(0)
    await committer.start()
    await asyncio.gather(*sessions)
    await committer.stop()
    assert batches == [2, 2, 2, 1]  # the byte bound (2 copies) is tighter than 3 items
    assert len(await stored(database)) == 7

    batches.clear()
    committer = submission_committer(database, identity, batches, max_items=3)
    sessions = [asyncio.ensure_future(committer.store(Submitted((copy(f"b{i}@example.org"),))))
                for i in range(7)]
    await asyncio.sleep(0)
    await committer.start()
    await asyncio.gather(*sessions)
    await committer.stop()
    assert batches == [3, 3, 1]


async def test_a_refused_copy_costs_its_session_all_copies_and_no_other_session_any(
        database: Database) -> None:
    identity = await identity_for(database, mta_settings())
    taken = uuid.uuid4()
    async with database.connection() as connection:
        await enqueue_many(connection, identity, [copy("first@example.org", taken)])
    batches: list[int] = []
    committer = submission_committer(database, identity, batches)
    # The second session's second copy reuses an id: the database refuses that statement.
    sessions = [asyncio.ensure_future(committer.store(item)) for item in (
        Submitted((copy("ok1@example.org"),)),
        Submitted((copy("part@example.org"), copy("dup@example.org", taken))),
        Submitted((copy("ok2@example.org"), copy("ok3@example.org"))))]
    await asyncio.sleep(0)
    await committer.start()
    results = await asyncio.gather(*sessions, return_exceptions=True)
    await committer.stop()
    assert results[0] is None and results[2] is None
    assert isinstance(results[1], Exception)
    assert batches == [3, 1, 1, 1]  # the whole batch, then each session alone
    assert await stored(database) == [("first@example.org", "queued"),
                                      ("ok1@example.org", "queued"),
                                      ("ok2@example.org", "queued"),
                                      ("ok3@example.org", "queued")]


async def test_an_unreachable_database_fails_every_session_of_the_batch(
        database: Database) -> None:
    calls: list[int] = []

    async def write(connection: object, items: list[int]) -> None:
        calls.append(len(items))
        raise DatabaseUnavailable("connection refused")

    committer: GroupCommitter[int] = GroupCommitter(database, write, lambda item: 1)
    sessions = [asyncio.ensure_future(committer.store(i)) for i in range(4)]
    await asyncio.sleep(0)
    await committer.start()
    results = await asyncio.gather(*sessions, return_exceptions=True)
    await committer.stop()
    assert calls == [4]  # not retried one by one: the database is down for all of them
    assert all(isinstance(result, DatabaseUnavailable) for result in results)


async def test_at_most_max_in_flight_transactions_at_once(database: Database) -> None:
    running = 0
    peak = 0
    release = asyncio.Event()
    started = asyncio.Queue[int]()

    async def write(connection: object, items: list[int]) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        started.put_nowait(items[0])
        await release.wait()
        running -= 1

    committer: GroupCommitter[int] = GroupCommitter(database, write, lambda item: 1,
                                                    max_in_flight=2, max_items=1)
    await committer.start()
    sessions = [asyncio.ensure_future(committer.store(i)) for i in range(5)]
    first = {await asyncio.wait_for(started.get(), 10) for _ in range(2)}
    assert first == {0, 1} and running == 2 and not any(s.done() for s in sessions)
    release.set()
    await asyncio.wait_for(asyncio.gather(*sessions), 10)
    await committer.stop()
    assert peak == 2


async def test_enqueue_durably_is_one_notifying_statement_or_enqueue_many(
        database: Database) -> None:
    identity = await identity_for(database, mta_settings())
    async with database.connection() as connection:
        await suppressions.add(connection, [Suppression("gone@example.org", "manual",
                                                        source="test")],
                               datetime.now(UTC))
    woken = asyncio.Queue[str]()
    async with database.connection() as listener:
        def wake(_connection: object, _pid: int, channel: str, _payload: str) -> None:
            woken.put_nowait(channel)

        await listener.add_listener(NOTIFY_CHANNEL, wake)
        async with database.connection() as connection:
            plain = await enqueue_durably(connection, identity, [copy("a@example.org"),
                                                                 copy("b@example.org")])
            assert not connection.is_in_transaction()  # committed when it returned
        assert await asyncio.wait_for(woken.get(), 10) == NOTIFY_CHANNEL
        async with database.connection() as connection:
            mixed = await enqueue_durably(connection, identity, [copy("c@example.org"),
                                                                 copy("gone@example.org")])
        await listener.remove_listener(NOTIFY_CHANNEL, wake)
    assert [(e.duplicate, e.suppressed) for e in plain] == [(False, None), (False, None)]
    assert [e.suppressed for e in mixed] == [None, "manual"]
    rows = await fetch(database, "SELECT id, recipient, state, contact_id, envelope_from, "
                                 "expires_at - next_attempt_at AS life FROM outbound_messages")
    assert {(r["recipient"], r["state"]) for r in rows} == {
        ("a@example.org", "queued"), ("b@example.org", "queued"), ("c@example.org", "queued"),
        ("gone@example.org", "suppressed")}
    for row in rows:  # the same columns as enqueue_many writes
        assert row["contact_id"] == row["recipient"]
        assert row["envelope_from"].endswith("@bounces.herald.test")
        assert row["life"] == identity.expire
    assert {r["id"] for r in rows} >= {e.id for e in plain}


@pytest.mark.parametrize("bound", [{"max_items": 0}, {"max_in_flight": 0}])
async def test_bounds_must_be_positive(database: Database, bound: dict[str, int]) -> None:
    async def write(connection: object, items: list[int]) -> None:
        return None

    with pytest.raises(ValueError):
        GroupCommitter(database, write, lambda item: 1, **bound)
