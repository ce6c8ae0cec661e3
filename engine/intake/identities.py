"""Anonymous ids joined to contacts: resolving them at intake, and joining them (I/O shell).

An event that names only an anonymous id (the Segment dialect's ``anonymousId``) belongs to the
contact the id is joined to; with no such contact yet it is kept under ``anon:<id>`` (the
pixel's convention) with an anonymous source, which fires no workflow trigger.

Joining the id to a contact (``identify``, ``alias``) happens inside the intake's transaction:

* the ``identities`` row is written (a later join to another contact moves it: the last
  identify wins for events still to come);
* a ``contact_merged`` event is appended under the contact when the row is new or moved;
* every ``anon:<id>`` event not copied yet is copied to the contact, once: the copy's event id
  is ``merged:<position of the original>`` (unique in the log, so no event is ever copied
  twice, whatever the number of identifies), its source the identified counterpart of the
  original's (:data:`engine.sources.IDENTIFIED_SOURCE`), its time the original's. The copies
  are ordinary events that follow the join in the log, so the trigger index, ``herald
  explain`` and the contact's event list see them as the contact's; the originals stay under
  ``anon:<id>`` and fire nothing. At most :data:`MAX_COPIED_EVENTS` (the most recent) are
  copied per join.

Every transaction that resolves, joins or stores under an anonymous id first takes a
transaction-scoped advisory lock per id (in one order), so a join and a concurrent anonymous
event are serialised: the event either committed before the join (and is copied) or sees the
join (and is stored under the contact). ``copied_through`` is therefore exact.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import NamedTuple

import asyncpg

from engine.contacts import UNCHANGED, ContactUpsert, upsert_contact
from engine.eventlog import LogEvent, append_events
from engine.intake.browser import ANONYMOUS_PREFIX
from engine.intake.validation import EventIn
from engine.sources import IDENTIFIED_SOURCE

CONTACT_MERGED = "contact_merged"
MERGED_ID_PREFIX = "merged:"
MAX_COPIED_EVENTS = 1000
_LOCK_SPACE = 0x6869  # the first key of the two-key advisory locks on anonymous ids ("hi")

# Locks in the order of their keys: two transactions never wait on each other in a cycle.
LOCK_ANONYMOUS_IDS = """
    SELECT count(pg_advisory_xact_lock($2, h))
    FROM (SELECT DISTINCT hashtext(a) AS h FROM unnest($1::text[]) AS a ORDER BY h) AS keys
"""
FETCH_IDENTITIES = """
    SELECT anonymous_id, contact_id FROM identities WHERE anonymous_id = ANY($1::text[])
"""
FETCH_IDENTITY = """
    SELECT contact_id, copied_through FROM identities WHERE anonymous_id = $1
"""
UPSERT_IDENTITY = """
    INSERT INTO identities (anonymous_id, contact_id, linked_at) VALUES ($1, $2, $3)
    ON CONFLICT (anonymous_id) DO UPDATE SET contact_id = EXCLUDED.contact_id,
                                             linked_at = EXCLUDED.linked_at
"""
_SOURCE_CASE = " ".join(f"WHEN '{anonymous}' THEN '{identified}'"
                        for anonymous, identified in sorted(IDENTIFIED_SOURCE.items()))
COPY_ANONYMOUS_EVENTS = f"""
    WITH recent AS (
        SELECT position, type, properties, occurred_at, source FROM events
        WHERE contact_id = $1 AND position > $3
        ORDER BY position DESC LIMIT $4
    ), claimed AS (
        INSERT INTO event_ids (event_id)
        SELECT '{MERGED_ID_PREFIX}' || position FROM recent
        ORDER BY '{MERGED_ID_PREFIX}' || position
        ON CONFLICT (event_id) DO NOTHING
        RETURNING event_id
    ), copied AS (
        INSERT INTO events (event_id, type, contact_id, email, properties, occurred_at, source)
        SELECT '{MERGED_ID_PREFIX}' || position, type, $2, NULL, properties, occurred_at,
               CASE source {_SOURCE_CASE} ELSE source END
        FROM recent WHERE '{MERGED_ID_PREFIX}' || position IN (SELECT event_id FROM claimed)
        ORDER BY position
        RETURNING 1
    )
    SELECT (SELECT count(*) FROM copied) AS copied,
           (SELECT max(position) FROM recent) AS last
"""
MARK_COPIED = "UPDATE identities SET copied_through = $2 WHERE anonymous_id = $1"
STORED_IDS = "SELECT event_id FROM event_ids WHERE event_id = ANY($1::text[])"
IDENTITIES_OF_CONTACT = """
    SELECT anonymous_id, linked_at FROM identities WHERE contact_id = $1
    ORDER BY linked_at, anonymous_id LIMIT 1000
"""


class Join(NamedTuple):
    """An event's request to join ``anonymous_id`` to ``contact_id`` once it is stored."""

    anonymous_id: str
    contact_id: str
    source: str
    event_id: str | None


def anonymous_contact(anonymous_id: str) -> str:
    return ANONYMOUS_PREFIX + anonymous_id


def anonymous_id_of(contact_id: str) -> str | None:
    """The anonymous id of an ``anon:<id>`` contact, else None."""
    if contact_id.startswith(ANONYMOUS_PREFIX):
        return contact_id[len(ANONYMOUS_PREFIX):]
    return None


async def lock_and_resolve(connection: asyncpg.Connection,
                           anonymous_ids: list[str]) -> dict[str, str]:
    """Lock ``anonymous_ids`` for this transaction; returns those joined to a contact."""
    if not anonymous_ids:
        return {}
    await connection.fetchval(LOCK_ANONYMOUS_IDS, anonymous_ids, _LOCK_SPACE)
    rows = await connection.fetch(FETCH_IDENTITIES, anonymous_ids)
    return {row["anonymous_id"]: row["contact_id"] for row in rows}


async def join(connection: asyncpg.Connection, anonymous_id: str, contact_id: str,
               now: datetime, source: str) -> int:
    """Join ``anonymous_id`` (locked by :func:`lock_and_resolve`) to ``contact_id``; returns how
    many anonymous events were copied to the contact."""
    if contact_id == anonymous_contact(anonymous_id):
        return 0  # an anonymous identify: nothing to join
    row = await connection.fetchrow(FETCH_IDENTITY, anonymous_id)
    previous = None if row is None else row["contact_id"]
    copied_through = 0 if row is None else row["copied_through"]
    if previous != contact_id:
        await connection.execute(UPSERT_IDENTITY, anonymous_id, contact_id, now)
    result = await connection.fetchrow(COPY_ANONYMOUS_EVENTS, anonymous_contact(anonymous_id),
                                       contact_id, copied_through, MAX_COPIED_EVENTS)
    copied = int(result["copied"])
    if result["last"] is not None:
        await connection.execute(MARK_COPIED, anonymous_id, result["last"])
    if previous != contact_id:
        # Appended after the copies so it can say how many there were; followers see the
        # copies as the contact's ordinary events either way.
        await append_events(connection, [LogEvent(
            CONTACT_MERGED, contact_id, None,
            {"anonymous_id": anonymous_id, "from_contact": anonymous_contact(anonymous_id),
             "previous_contact": previous, "copied_events": copied},
            now, source)])
    return copied


async def identities_of(connection: asyncpg.Connection, contact_id: str) -> list[asyncpg.Record]:
    """The anonymous ids joined to ``contact_id`` (for explain and the contact view)."""
    return await connection.fetch(IDENTITIES_OF_CONTACT, contact_id)


async def joined_contact(connection: asyncpg.Connection, anonymous_id: str) -> str | None:
    row = await connection.fetchrow(FETCH_IDENTITY, anonymous_id)
    return None if row is None else str(row["contact_id"])


def anonymous_ids(events: Iterable[EventIn]) -> list[str]:
    """Every anonymous id the batch resolves, joins or stores under (``anon:<id>``)."""
    found: set[str] = set()
    prefix, skip = ANONYMOUS_PREFIX, len(ANONYMOUS_PREFIX)
    for event in events:
        if event.anonymous_id is not None:
            found.add(event.anonymous_id)
        elif (contact_id := event.contact_id) is not None and contact_id.startswith(prefix):
            found.add(contact_id[skip:])  # anonymous_id_of, inlined: once per event
    return sorted(found)


async def stored_joins(connection: asyncpg.Connection, events: list[EventIn]) -> set[str]:
    """Ids of the joining or trait-carrying ``events`` already in the log (retries)."""
    ids = sorted({e.event_id for e in events
                  if e.event_id is not None and (e.joins_anonymous or e.traits is not None)})
    if not ids:
        return set()
    return {row["event_id"] for row in await connection.fetch(STORED_IDS, ids)}


async def apply_identity(connection: asyncpg.Connection, joins: list[Join],
                         updates: list[tuple[str, EventIn]], stored_ids: set[str]) -> None:
    """Joins and trait updates of the events a write stored (``stored_ids``; events without
    an id are always stored): joins in event order, then updates by contact and event order,
    so row locks are taken in one order."""
    for anonymous_id, contact_id, source, event_id in joins:
        if event_id is None or event_id in stored_ids:
            await join(connection, anonymous_id, contact_id, datetime.now(UTC), source)
    for contact_id, event in sorted(updates, key=lambda item: item[0]):
        if event.event_id is not None and event.event_id not in stored_ids:
            continue
        assert event.traits is not None
        email = event.email if event.email is not None else UNCHANGED
        await upsert_contact(connection, ContactUpsert(contact_id, email, event.traits,
                                                       UNCHANGED), event.occurred_at)
