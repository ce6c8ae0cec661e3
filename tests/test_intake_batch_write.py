"""How one group-commit batch is written (engine.intake.batch_write): a batch the database
refuses leaves nothing behind, not even its contacts, on the plain path (one statement) and
on the transaction path (claimed ids and COPY); what a stored batch does to its contacts."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest

from engine.config import IntakeSettings
from engine.database import Database
from engine.intake.batch_write import PLAIN_MAX_EVENTS
from engine.intake.validation import EventIn
from engine.intake.writer import EventsRejected, EventWriter, StoreResult


def event(contact: str | None, properties: dict[str, Any] | None = None,
          email: str | None = None, event_id: str | None = None) -> EventIn:
    return EventIn("t", contact, email, properties or {}, datetime.now(UTC), event_id)


def nested(levels: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(levels - 1):
        value = {"a": value}
    return value


async def store_all(database: Database, *requests: list[EventIn]) -> list[Any]:
    writer = EventWriter(database, IntakeSettings(commit_max_wait=0.05))
    await writer.start()
    try:
        return await asyncio.gather(*(writer.store(r) for r in requests),
                                    return_exceptions=True)
    finally:
        await writer.stop()


@pytest.mark.parametrize("size", [8, PLAIN_MAX_EVENTS + 44])  # the plain path, the COPY path
@pytest.mark.parametrize("poison", [
    {"text": "a\x00b"},  # refused by Postgres itself (jsonb holds no U+0000)
    nested(300),  # refused while the parameters or rows are encoded (orjson nests 254)
], ids=["server", "client"])
async def test_a_refused_batch_leaves_no_contact_behind(
        database: Database, size: int, poison: dict[str, Any]) -> None:
    refused_request = [event(f"new{i}", poison if i == size - 1 else None, event_id=f"r{i}")
                       for i in range(size)]
    good, refused = await store_all(database, [event("kept", event_id="k")], refused_request)
    assert good == StoreResult(1, 0)
    assert isinstance(refused, EventsRejected) and refused.index == size - 1, refused
    async with database.connection() as connection:
        contacts = await connection.fetchval("SELECT array_agg(contact_id) FROM contacts")
        events = await connection.fetchval("SELECT array_agg(event_id) FROM events")
        ids = await connection.fetchval("SELECT array_agg(event_id) FROM event_ids")
    assert (contacts, events, ids) == (["kept"], ["k"], ["k"])


async def test_a_plain_batch_creates_contacts_and_fills_missing_emails(
        database: Database) -> None:
    async with database.connection() as connection:
        await connection.execute("INSERT INTO contacts (contact_id, email) VALUES "
                                 "('no-email', NULL), ('has-email', 'old@example.com')")
    results = await store_all(database, [
        event("no-email", email="filled@example.com", event_id="e1"),
        event("has-email", email="new@example.com", event_id="e2"),
        event("fresh", email="fresh@example.com", event_id="e3"),
        event("fresh", event_id="e1"),  # a repeated id: a duplicate, not stored again
    ])
    assert results == [StoreResult(3, 1)]
    async with database.connection() as connection:
        rows = await connection.fetch("SELECT contact_id, email FROM contacts ORDER BY 1")
        stored = await connection.fetchval("SELECT count(*) FROM events")
    assert [tuple(r) for r in rows] == [("fresh", "fresh@example.com"),
                                        ("has-email", "old@example.com"),
                                        ("no-email", "filled@example.com")]
    assert stored == 3
