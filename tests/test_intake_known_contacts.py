"""Contacts an intake process knows to exist (engine.intake.known_contacts): a large batch
skips the upsert for them, and an erase from another connection makes the next batch write
the erased contact's row again."""

from __future__ import annotations

from datetime import UTC, datetime

from engine.config import IntakeSettings
from engine.database import Database, connect_one
from engine.intake.batch_write import PLAIN_MAX_EVENTS
from engine.intake.known_contacts import NEVER, KnownContacts
from engine.intake.validation import EventIn
from engine.intake.writer import EventWriter, StoreResult
from engine.privacy.service import Privacy


def large_batch(prefix: str, contacts: list[str]) -> list[EventIn]:
    """A batch that takes the COPY path, spread over ``contacts``."""
    return [EventIn("t", contacts[i % len(contacts)], None, {}, datetime.now(UTC),
                    f"{prefix}{i}") for i in range(PLAIN_MAX_EVENTS + 4)]


async def stored(database: Database, contact_id: str) -> tuple[bool, int]:
    async with database.connection() as connection:
        exists = await connection.fetchval(
            "SELECT EXISTS (SELECT 1 FROM contacts WHERE contact_id = $1)", contact_id)
        events = await connection.fetchval(
            "SELECT count(*) FROM events WHERE contact_id = $1", contact_id)
    return exists, events


def test_knowledge_from_before_an_erase_is_dropped_and_never_learned_late() -> None:
    known = KnownContacts(limit=4)
    assert known.generation == NEVER and not known.ids
    known.learn(3, ["a", "b"])
    assert (known.generation, known.ids) == (3, {"a", "b"})
    known.learn(4, ["c"])  # a batch read a later generation: what came before is dropped
    assert (known.generation, known.ids) == (4, {"c"})
    known.learn(3, ["a"])  # a batch that read the older one commits late: not learned
    assert (known.generation, known.ids) == (4, {"c"})
    known.learn(4, ["d", "e", "f", "g"])  # past the limit: emptied first
    assert known.ids == {"d", "e", "f", "g"}


async def test_a_large_batch_skips_the_upsert_for_contacts_it_knows(
        database: Database) -> None:
    contacts = ["k0", "k1", "k2"]
    writer = EventWriter(database, IntakeSettings(commit_max_wait=0.0))
    await writer.start()
    try:
        assert await writer.store(large_batch("a", contacts)) == StoreResult(PLAIN_MAX_EVENTS + 4,
                                                                            0)
        # Removed behind the writer's back (not by an erase, the one path that may delete a
        # contact): the writer still knows k1 and does not write it again. This shows the
        # upsert is really skipped, which the erase test below relies on.
        async with database.connection() as connection:
            await connection.execute("DELETE FROM contacts WHERE contact_id = 'k1'")
        assert await writer.store(large_batch("b", contacts)) == StoreResult(PLAIN_MAX_EVENTS + 4,
                                                                            0)
        assert (await stored(database, "k1"))[0] is False
        # New contacts in a batch of known ones are written.
        assert await writer.store(large_batch("c", ["k0", "new"])) == StoreResult(
            PLAIN_MAX_EVENTS + 4, 0)
        assert (await stored(database, "new"))[0] is True
    finally:
        await writer.stop()


async def test_an_erase_from_another_connection_makes_the_next_batch_write_the_contact(
        database: Database, database_url: str) -> None:
    contacts = ["keep", "gone"]
    writer = EventWriter(database, IntakeSettings(commit_max_wait=0.0))
    await writer.start()
    try:
        await writer.store(large_batch("a", contacts))
        await writer.store(large_batch("b", contacts))  # both known now
        assert await stored(database, "gone") == (True, PLAIN_MAX_EVENTS + 4)
        other = await connect_one(database_url)  # as another process would
        try:
            erased = await Privacy().erase(other, "gone", "test", datetime.now(UTC))
        finally:
            await other.close()
        assert erased is not None and erased.removed["contacts"] == 1
        assert await stored(database, "gone") == (False, 0)
        # A later event of the erased contact behaves as without the knowledge: its row is
        # written again, and its event is stored once; a retried id of an erased event stays
        # a duplicate (event_ids keeps it), as before.
        result = await writer.store(large_batch("c", contacts))
        assert result == StoreResult(PLAIN_MAX_EVENTS + 4, 0)
        assert await stored(database, "gone") == (True, (PLAIN_MAX_EVENTS + 4) // 2)
        assert await writer.store(large_batch("a", contacts)) == StoreResult(
            0, PLAIN_MAX_EVENTS + 4)
    finally:
        await writer.stop()
