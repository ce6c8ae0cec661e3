"""The engine's share of export and erase: the contact row, its joined anonymous ids, its
events and the outbox requests about it. Statements on ``events`` select and delete by
``contact_id`` only, so they work the same on a plain and a time-partitioned table."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg
import orjson

from engine.privacy.hashing import HashKey
from engine.privacy.parts import Page, Section, Subject
from engine.timestamps import format_rfc3339

EVENTS_PAGE = 1000


async def find_subject(connection: asyncpg.Connection, contact_id: str,
                       contact_hash: str) -> Subject | None:
    """Everything that names this contact, or None when nothing does."""
    contact = await connection.fetchrow(
        "SELECT email FROM contacts WHERE contact_id = $1", contact_id)
    anonymous = [r["anonymous_id"] for r in await connection.fetch(
        "SELECT anonymous_id FROM identities WHERE contact_id = $1 ORDER BY anonymous_id",
        contact_id)]
    ids = [contact_id, *(f"anon:{a}" for a in anonymous)]
    emails = {r["email"] for r in await connection.fetch(
        "SELECT DISTINCT email FROM events WHERE contact_id = ANY($1::text[]) "
        "AND email IS NOT NULL", ids)}
    if contact is not None and contact["email"]:
        emails.add(contact["email"])
    if contact is None and not anonymous and not emails and not await connection.fetchval(
            "SELECT EXISTS (SELECT 1 FROM events WHERE contact_id = $1)", contact_id):
        return None
    lowered = sorted({e.lower() for e in emails} - set(ids))
    return Subject(contact_id, (*ids, *lowered), tuple(sorted(emails)), contact_hash)


async def _identities(connection: asyncpg.Connection, subject: Subject, cursor: Any) -> Page:
    rows = await connection.fetch(
        "SELECT anonymous_id, linked_at FROM identities WHERE contact_id = $1 "
        "ORDER BY anonymous_id", subject.contact_id)
    return [{"anonymous_id": r["anonymous_id"], "linked_at": format_rfc3339(r["linked_at"])}
            for r in rows], None


async def _events(connection: asyncpg.Connection, subject: Subject, cursor: Any) -> Page:
    """Oldest first, a page at a time by log position."""
    rows = await connection.fetch(
        """SELECT position, event_id, type, contact_id, email, properties, occurred_at,
                  received_at, source
           FROM events WHERE contact_id = ANY($1::text[]) AND position > $2
           ORDER BY position LIMIT $3""", list(subject.ids), cursor or 0, EVENTS_PAGE)
    items = [{"position": r["position"], "id": r["event_id"], "type": r["type"],
              "contact_id": r["contact_id"], "email": r["email"],
              "properties": r["properties"], "timestamp": format_rfc3339(r["occurred_at"]),
              "received_at": format_rfc3339(r["received_at"]), "source": r["source"]}
             for r in rows]
    return items, rows[-1]["position"] if len(rows) == EVENTS_PAGE else None


async def _webhook_requests(connection: asyncpg.Connection, subject: Subject,
                            cursor: Any) -> Page:
    """Outbound HTTP requests about the contact (webhook steps, outcome webhooks), oldest
    first; the body as JSON when it is JSON, else as text."""
    rows = await connection.fetch(
        """SELECT id, kind, event_type, url, state, attempts, body, created_at FROM outbox
           WHERE contact_id = ANY($1::text[]) AND id > $2 ORDER BY id LIMIT $3""",
        list(subject.ids), cursor or 0, EVENTS_PAGE)
    items = [{"id": r["id"], "kind": r["kind"], "event_type": r["event_type"],
              "url": r["url"], "state": r["state"], "attempts": r["attempts"],
              "body": _body(bytes(r["body"])), "created_at": format_rfc3339(r["created_at"])}
             for r in rows]
    return items, rows[-1]["id"] if len(rows) == EVENTS_PAGE else None


def _body(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return body.decode("utf-8", "replace")


class ContactRecords:
    name = "engine"

    def sections(self) -> Sequence[Section]:
        return (Section("identities", _identities), Section("events", _events),
                Section("webhook_requests", _webhook_requests))

    async def erase(self, connection: asyncpg.Connection, subject: Subject,
                    key: HashKey) -> dict[str, int]:
        ids = list(subject.ids)
        events = await connection.execute(
            "DELETE FROM events WHERE contact_id = ANY($1::text[])", ids)
        identities = await connection.execute(
            "DELETE FROM identities WHERE contact_id = $1", subject.contact_id)
        contacts = await connection.execute(
            "DELETE FROM contacts WHERE contact_id = ANY($1::text[])", ids)
        requests = await connection.execute(
            "DELETE FROM outbox WHERE contact_id = ANY($1::text[])", ids)
        return {"events": _count(events), "identities": _count(identities),
                "contacts": _count(contacts), "outbox": _count(requests)}


def _count(status: str) -> int:
    """The row count of a command tag (``DELETE 3``, ``UPDATE 2``)."""
    return int(status.rsplit(" ", 1)[-1])
