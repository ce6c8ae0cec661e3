"""A group commit's rows: which contact each event belongs to, and the joins and trait updates
its storing brings (pure, apart from one read of the contacts that addresses belong to)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import asyncpg

from engine.intake.identities import Join, anonymous_contact
from engine.intake.validation import EventIn
from engine.sources import ANONYMOUS_SOURCE

RESOLVE_EMAILS = """
    SELECT DISTINCT ON (lower(email)) lower(email) AS email, contact_id
    FROM contacts WHERE lower(email) = ANY($1::text[])
    ORDER BY lower(email), created_at
"""


class RequestPart(NamedTuple):
    """One request's events in a batch; ``duplicates``: per event, repeated earlier in it."""

    source: str
    events: list[EventIn]
    duplicates: list[bool]


async def email_owners(connection: asyncpg.Connection, events: list[EventIn]) -> dict[str, str]:
    """The contact of each address that email-only events name (by lower-cased address)."""
    orphan_emails = sorted({e.email.lower() for e in events
                            if e.contact_id is None and e.email is not None})
    if not orphan_emails:
        return {}
    return {row["email"]: row["contact_id"]
            for row in await connection.fetch(RESOLVE_EMAILS, orphan_emails)}


@dataclass(slots=True)
class BatchRows:
    rows: list[tuple[object, ...]] = field(default_factory=list)
    contacts: dict[str, str | None] = field(default_factory=dict)  # id -> an email, if any
    joins: list[Join] = field(default_factory=list)
    updates: list[tuple[str, EventIn]] = field(default_factory=list)


def batch_rows(parts: list[RequestPart], email_owner: dict[str, str], joined: dict[str, str],
               already: set[str]) -> BatchRows:
    """The event rows of a batch (duplicates left out), their contacts, and the joins and
    trait updates to apply once they are stored. ``joined``: anonymous ids joined to contacts
    (updated as identifies join more); ``already``: ids of joining events stored before."""
    built = BatchRows()
    for source_of_request, events, duplicates in parts:
        for event, duplicate in zip(events, duplicates, strict=True):
            if duplicate:
                continue
            contact_id = event.contact_id
            source = source_of_request
            if contact_id is None and event.email is None:
                assert event.anonymous_id is not None
                contact_id = joined.get(event.anonymous_id)
                if contact_id is None:
                    contact_id = anonymous_contact(event.anonymous_id)
                    source = ANONYMOUS_SOURCE.get(source, source)
            elif contact_id is None:
                assert event.email is not None
                # An email-only event belongs to the contact with that address, or to a
                # contact whose id is the (lower-cased) address itself.
                lowered = event.email.lower()
                contact_id = email_owner.get(lowered, lowered)
            if built.contacts.get(contact_id) is None:
                built.contacts[contact_id] = event.email
            built.rows.append((event.event_id, event.type, contact_id, event.email,
                               event.properties, event.occurred_at, source))
            if event.event_id in already:
                continue  # a retried identify: its join and traits were applied
            if event.joins_anonymous and event.anonymous_id is not None:
                joined[event.anonymous_id] = contact_id  # for the events after it
                built.joins.append(Join(event.anonymous_id, contact_id, source, event.event_id))
            if event.traits is not None:
                built.updates.append((contact_id, event))
    return built
