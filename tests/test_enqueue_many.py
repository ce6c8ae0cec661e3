"""enqueue_many gives exactly enqueue's results (new, duplicate key, suppressed) in a few round
trips, and writes the same rows and events."""

from __future__ import annotations

from datetime import UTC, datetime

from engine.addresses import parse_address
from engine.database import Database
from mta.compose import compose
from mta.queue.enqueue import OutboundMessage, SuppressionsRead, enqueue, enqueue_many
from mta.suppression import store as suppressions
from mta.suppression.rules import Suppression
from mta.tracking.store import tracked_messages
from tests.support.mta import fetch, identity_for, mta_settings


def message(to: str, key: str | None = None) -> OutboundMessage:
    composed = compose({"from": "news@shop.test", "to": to, "subject": "s", "text": "t"})
    return OutboundMessage(composed.header_from, parse_address(to), composed.body,
                           idempotency_key=key, tags=("t",), metadata={"m": 1})


async def test_many_as_one_by_one(database: Database) -> None:
    identity = await identity_for(database, mta_settings())
    now = datetime.now(UTC)
    async with database.transaction() as connection:
        await suppressions.add(connection, [Suppression("gone@example.org", "manual",
                                                        source="test")], now)
        earlier = await enqueue(connection, identity, message("a@example.org", "k1"))
        many = await enqueue_many(connection, identity, [
            message("a@example.org", "k1"), message("b@example.org", "k2"),
            message("gone@example.org"), message("c@example.org")])
        single = await enqueue(connection, identity, message("gone@example.org"))
    assert many[0].duplicate and many[0].id == earlier.id
    assert [(m.duplicate, m.suppressed) for m in many[1:]] == [
        (False, None), (False, "manual"), (False, None)]
    assert single.suppressed == "manual"
    rows = {(r["recipient"], r["state"]) for r in await fetch(
        database, "SELECT recipient, state FROM outbound_messages")}
    assert rows == {("a@example.org", "queued"), ("b@example.org", "queued"),
                    ("c@example.org", "queued"), ("gone@example.org", "suppressed")}
    events = await fetch(database, "SELECT properties FROM events "
                                   "WHERE type = 'email_suppressed' ORDER BY position")
    assert len(events) == 2 and events[0]["properties"]["m"] == 1


async def test_suppression_entries_read_by_the_caller_are_used_and_the_rest_looked_up(
        database: Database) -> None:
    identity = await identity_for(database, mta_settings())
    now = datetime.now(UTC)
    async with database.transaction() as connection:
        await suppressions.add(connection, [Suppression("gone@example.org", "manual",
                                                        source="test")], now)
        # The caller read a@example.org (an entry) and b@example.org (none) in this
        # transaction; gone@example.org it did not read, so enqueue_many looks it up.
        known = SuppressionsRead(frozenset({"a@example.org", "b@example.org"}),
                                 {"a@example.org": [("complaint", "")]})
        many = await enqueue_many(connection, identity, [
            message("a@example.org"), message("b@example.org"), message("gone@example.org")],
            known_suppressions=known)
    assert [m.suppressed for m in many] == ["complaint", None, "manual"]

async def test_one_statement_keeps_each_rows_tags_and_skips_a_key_repeated_in_the_batch(
        database: Database) -> None:
    """The messages go in with one INSERT … unnest: tags of different lengths, metadata and
    bodies land on their own rows, and a key given twice in one call is inserted once (the
    second is a duplicate of the first, as one enqueue after another would say)."""
    identity = await identity_for(database, mta_settings())

    def tagged(to: str, key: str | None, tags: tuple[str, ...]) -> OutboundMessage:
        composed = compose({"from": "news@shop.test", "to": to, "subject": to, "text": to})
        return OutboundMessage(composed.header_from, parse_address(to), composed.body,
                               idempotency_key=key, tags=tags, metadata={"to": to})

    async with database.transaction() as connection:
        many = await enqueue_many(connection, identity, [
            tagged("a@example.org", "k1", ()), tagged("b@example.org", "k2", ("x", "y, z")),
            tagged("c@example.org", "k1", ("w",)), tagged("d@example.org", None, ("q",))])
    assert [m.duplicate for m in many] == [False, False, True, False]
    assert many[2].id == many[0].id
    rows = {r["recipient"]: r for r in await fetch(
        database, "SELECT id, recipient, tags, metadata, body FROM outbound_messages")}
    assert set(rows) == {"a@example.org", "b@example.org", "d@example.org"}
    assert [list(rows[to]["tags"]) for to in ("a@example.org", "b@example.org",
                                               "d@example.org")] == [[], ["x", "y, z"], ["q"]]
    for to, row in rows.items():
        assert row["metadata"] == {"to": to}
        assert f"Subject: {to}".encode() in bytes(row["body"])
    assert rows["a@example.org"]["id"] == many[0].id


async def test_tracked_links_are_stored_in_order_with_their_message_and_older_ones_found(
        database: Database) -> None:
    identity = await identity_for(database, mta_settings())
    links = tuple(f"https://shop.test/{n}" for n in (9, 1, 5, 3, 7, 2, 8, 4, 6, 10, 0))

    def tracked(to: str, urls: tuple[str, ...]) -> OutboundMessage:
        plain = message(to)
        return OutboundMessage(plain.header_from, plain.recipient, plain.body,
                               tracked_links=urls)

    async with database.transaction() as connection:
        many = await enqueue_many(connection, identity, [
            tracked("a@example.org", links), message("b@example.org"),
            tracked("c@example.org", links[:1])])
        [one] = await enqueue_many(connection, identity, [tracked("d@example.org", links[2:])])
        # a message queued before mta 0008: its links in tracked_links
        [old] = await enqueue_many(connection, identity, [message("e@example.org")])
        await connection.execute(
            "INSERT INTO tracked_links (message_id, links) VALUES ($1, $2)", old.id,
            ["https://shop.test/old"])
        found = await tracked_messages(connection, [*(m.id for m in many), one.id, old.id])
    assert [found[m.id].links for m in many] == [links, (), links[:1]]
    assert found[one.id].links == links[2:]
    assert found[old.id].links == ("https://shop.test/old",)
    assert found[many[0].id].url(0) == "https://shop.test/9"
    assert [r["n"] for r in await fetch(database, "SELECT count(*) AS n FROM tracked_links")] \
        == [1]  # the new links went into their messages' rows
