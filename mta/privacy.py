"""The MTA's share of GDPR export and erase (:mod:`engine.privacy.parts`): the contact's
queued and sent messages (metadata and delivery attempts, never bodies), the suppression
entries of its addresses, soft bounces, and the reports received about its messages.

Erase deletes them and adds the privacy hash of every address (normalised as the suppression
list normalises it) to ``erased_addresses``, which :func:`mta.suppression.store.lookup`
consults: an erased address stays suppressed, for every kind of mail.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import asyncpg

from engine.privacy.hashing import HashKey, keyed_hash
from engine.privacy.parts import Page, Section, Subject
from engine.timestamps import format_rfc3339
from mta.suppression import store as suppressions
from mta.suppression.addresses import normalise_lenient

MESSAGES_PAGE = 500


def _time(value: Any) -> str | None:
    return format_rfc3339(value) if value is not None else None


async def addresses(connection: asyncpg.Connection, subject: Subject) -> list[str]:
    """The subject's addresses in the suppression list's normal form: its own and every
    recipient of its messages."""
    recipients = [r["recipient"] for r in await connection.fetch(
        "SELECT DISTINCT recipient FROM outbound_messages WHERE contact_id = ANY($1::text[])",
        list(subject.ids))]
    return sorted({normalise_lenient(a) for a in (*subject.emails, *recipients)})


async def _messages(connection: asyncpg.Connection, subject: Subject, cursor: Any) -> Page:
    """Oldest first, by (created_at, id)."""
    after_at, after_id = cursor or (None, None)
    rows = await connection.fetch(
        """SELECT id, created_at, state, header_from, recipient, tags, metadata, source,
                  attempts, next_attempt_at, expires_at, last_code, last_reply, finished_at
           FROM outbound_messages WHERE contact_id = ANY($1::text[])
             AND ($2::timestamptz IS NULL OR (created_at, id) > ($2, $3::uuid))
           ORDER BY created_at, id LIMIT $4""",
        list(subject.ids), after_at, after_id, MESSAGES_PAGE)
    attempts: dict[uuid.UUID, list[dict[str, Any]]] = {}
    for a in await connection.fetch(
            "SELECT message_id, attempt, at, outcome, remote_host, code, enhanced, reply, "
            "category FROM delivery_attempts WHERE message_id = ANY($1::uuid[]) "
            "ORDER BY message_id, attempt", [r["id"] for r in rows]):
        attempts.setdefault(a["message_id"], []).append({
            "attempt": a["attempt"], "at": _time(a["at"]), "outcome": a["outcome"],
            "remote_host": a["remote_host"], "code": a["code"], "enhanced": a["enhanced"],
            "reply": a["reply"], "category": a["category"]})
    items = [{"id": str(r["id"]), "created_at": _time(r["created_at"]), "state": r["state"],
              "from": r["header_from"], "recipient": r["recipient"], "tags": list(r["tags"]),
              "metadata": r["metadata"], "source": r["source"], "attempts": r["attempts"],
              "next_attempt_at": _time(r["next_attempt_at"]),
              "expires_at": _time(r["expires_at"]), "last_code": r["last_code"],
              "last_reply": r["last_reply"], "finished_at": _time(r["finished_at"]),
              "delivery_attempts": attempts.get(r["id"], [])} for r in rows]
    last = rows[-1] if len(rows) == MESSAGES_PAGE else None
    return items, (last["created_at"], last["id"]) if last is not None else None


async def _suppressions(connection: asyncpg.Connection, subject: Subject,
                        cursor: Any) -> Page:
    entries: list[dict[str, Any]] = []
    for address in await addresses(connection, subject):
        entries.extend(e.to_json() for e in await suppressions.entries_for(connection, address))
    return entries, None


class MtaRecords:
    name = "mta"

    def sections(self) -> Sequence[Section]:
        return (Section("messages", _messages), Section("suppressions", _suppressions))

    async def erase(self, connection: asyncpg.Connection, subject: Subject,
                    key: HashKey) -> dict[str, int]:
        ids = list(subject.ids)
        emails = await addresses(connection, subject)
        message_ids = [str(r["id"]) for r in await connection.fetch(
            "SELECT id FROM outbound_messages WHERE contact_id = ANY($1::text[])", ids)]
        inbound = await connection.execute(
            "DELETE FROM inbound_messages m WHERE EXISTS (SELECT 1 FROM "
            "jsonb_array_elements(m.recipients) AS r WHERE r->>2 = ANY($1::text[]))",
            message_ids) if message_ids else "DELETE 0"
        messages = await connection.execute(
            "DELETE FROM outbound_messages WHERE contact_id = ANY($1::text[])", ids)
        entries = await connection.execute(
            "DELETE FROM suppressions WHERE email = ANY($1::text[])", emails)
        soft = await connection.execute(
            "DELETE FROM soft_bounces WHERE email = ANY($1::text[])", emails)
        await connection.executemany(
            "INSERT INTO erased_addresses (hash) VALUES ($1) ON CONFLICT DO NOTHING",
            [(keyed_hash(key, email),) for email in emails])
        return {"outbound_messages": _count(messages), "suppressions": _count(entries),
                "soft_bounces": _count(soft), "inbound_messages": _count(inbound),
                "erased_addresses": len(emails)}


def _count(status: str) -> int:
    return int(status.rsplit(" ", 1)[-1])
