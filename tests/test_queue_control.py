"""Queue control: hold, release, retry and purge by selector, each change an event; held mail is
never claimed; a message in flight finishes its attempt; bad selectors are one clear line."""

from __future__ import annotations

import uuid

import pytest

from engine.database import Database
from mta.queue import control
from mta.queue import store as queue
from mta.queue.control import QueueSelectionError, Selector
from mta.queue.store import Outcome
from tests.support.mta import fetch, identity_for, mta_settings, queue_message


async def _queue(database: Database) -> dict[str, uuid.UUID]:
    identity = await identity_for(database, mta_settings())
    return {
        "a1": await queue_message(database, identity, "a1@a.example", contact_id="c1",
                                  metadata={"workflow": "welcome"}),
        "a2": await queue_message(database, identity, "a2@a.example", contact_id="c2"),
        "b1": await queue_message(database, identity, "b1@b.example", contact_id="c1"),
    }


async def _states(database: Database) -> dict[uuid.UUID, str]:
    return {r["id"]: r["state"] for r in await fetch(
        database, "SELECT id, state FROM outbound_messages")}


async def test_hold_keeps_mail_from_the_claim_and_release_gives_it_back(
        database: Database) -> None:
    ids = await _queue(database)
    async with database.connection() as connection:
        result = await control.apply(connection, "hold", Selector.parse(domain="A.example"),
                                     "test")
        assert (result.affected, result.more) == (2, False)
        claimed, _ = await queue.claim(connection, 10, 60, "worker")
    assert [m.id for m in claimed] == [ids["b1"]]  # held rows are skipped
    states = await _states(database)
    assert states[ids["a1"]] == states[ids["a2"]] == "held"
    events = await fetch(database, "SELECT type, contact_id, properties, source FROM events "
                                   "WHERE type = 'queue_held' ORDER BY contact_id")
    assert [e["contact_id"] for e in events] == ["c1", "c2"]
    assert events[0]["properties"]["selector"] == {"domain": "a.example"}
    assert events[0]["properties"]["workflow"] == "welcome" and events[0]["source"] == "queue"

    async with database.connection() as connection:
        released = await control.apply(connection, "release",
                                       Selector.parse(workflow="welcome"), "test")
        assert released.affected == 1
        claimed, _ = await queue.claim(connection, 10, 60, "worker")
    assert [m.id for m in claimed] == [ids["a1"]]
    assert len(await fetch(database, "SELECT 1 FROM events WHERE type = 'queue_released'")) == 1


async def test_retry_makes_deferred_mail_due_now_but_leaves_mail_in_flight(
        database: Database) -> None:
    ids = await _queue(database)
    async with database.connection() as connection:
        await connection.execute(
            "UPDATE outbound_messages SET state = 'deferred', attempts = 1, "
            "next_attempt_at = now() + interval '1 hour' WHERE id = $1", ids["b1"])
        claimed, _ = await queue.claim(connection, 1, 60, "worker")  # a1: in flight
        assert [m.id for m in claimed] == [ids["a1"]]
        result = await control.apply(connection, "retry", Selector(), "test", everything=True)
        assert (result.affected, result.in_flight) == (2, 1)
        due = await connection.fetchval(
            "SELECT next_attempt_at <= now() FROM outbound_messages WHERE id = $1", ids["b1"])
    assert due
    assert (await _states(database))[ids["b1"]] == "deferred"


async def test_a_message_held_or_purged_in_flight_finishes_its_attempt(
        database: Database) -> None:
    ids = await _queue(database)
    async with database.connection() as connection:
        claimed, _ = await queue.claim(connection, 10, 60, "worker")
        by_id = {m.id: m for m in claimed}
        await control.apply(connection, "hold", Selector.parse(domain="a.example"), "test")
        await control.apply(connection, "purge", Selector.parse(domain="b.example"), "test")
        now = claimed[0].created_at
        await queue.record(connection, [
            Outcome(by_id[ids["a1"]], "deferred", now, now, code=451, reply="later"),
            Outcome(by_id[ids["a2"]], "delivered", now, code=250),
            Outcome(by_id[ids["b1"]], "deferred", now, now, code=451, reply="later"),
        ], "worker")
    states = await _states(database)
    assert states == {ids["a1"]: "held", ids["a2"]: "delivered", ids["b1"]: "purged"}
    [finished] = await fetch(database, "SELECT finished_at FROM outbound_messages "
                                       "WHERE id = $1", ids["b1"])
    assert finished["finished_at"] is not None


async def test_purge_by_message_is_final_and_logged(database: Database) -> None:
    ids = await _queue(database)
    async with database.connection() as connection:
        result = await control.apply(connection, "purge",
                                     Selector.parse(message=str(ids["a2"])), "cli:ops")
        assert result.affected == 1
        again = await control.apply(connection, "purge",
                                    Selector.parse(message=str(ids["a2"])), "cli:ops")
        assert again.affected == 0  # already final
    [event] = await fetch(database, "SELECT properties FROM events WHERE type = 'queue_purged'")
    assert event["properties"]["actor"] == "cli:ops"
    assert event["properties"]["message_id"] == str(ids["a2"])
    assert (await _states(database))[ids["a2"]] == "purged"


@pytest.mark.parametrize(("action", "selector", "everything", "message"), [
    ("purge", {}, True, "purge needs a selector: --site, --domain, --workflow, --contact or "
                        "--message"),
    ("hold", {}, False, "hold needs a selector: --site, --domain, --workflow, --contact or "
                        "--message (or --all)"),
    ("hold", {"site": "mx.nowhere.example"}, False,
     "unknown site 'mx.nowhere.example': no running MTA has routed mail to it "
     "(`herald queue` lists sites)"),
    ("hold", {"domain": "nowhere.example"}, False,
     "unknown domain 'nowhere.example': no mail for it in the queue"),
    ("release", {"message": "00000000-0000-0000-0000-000000000000"}, False,
     "no message with id 00000000-0000-0000-0000-000000000000"),
])
async def test_bad_selectors_are_one_clear_line(
        database: Database, action: str, selector: dict[str, str], everything: bool,
        message: str) -> None:
    await _queue(database)
    async with database.connection() as connection:
        with pytest.raises(QueueSelectionError) as caught:
            await control.apply(connection, action, Selector.parse(**selector), "test",
                                everything=everything)
    assert str(caught.value) == message


def test_malformed_selectors() -> None:
    with pytest.raises(QueueSelectionError, match="is not a message id"):
        Selector.parse(message="42")
    with pytest.raises(QueueSelectionError, match="domain"):
        Selector.parse(domain="bad domain..example")
    assert Selector.parse(domain="Faß.Example.").domain == "xn--fa-hia.example"
