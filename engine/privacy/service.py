"""GDPR export and erase over the parts every layer contributes (:mod:`engine.privacy.parts`),
each recorded in the audit log.

Export streams one JSON document: the contact, its consent, then each part's sections a page
at a time (events in pages of 1,000), so a contact with millions of events never sits in
memory. Erase runs every part in ONE transaction (the contact row locked), then keeps only
hashes: the erased addresses' (so they stay suppressed) and the contact's (in the audit log).
Erasing again answers that it was done, when; a contact never known is None (404).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg
import orjson

from engine.intake.known_contacts import ERASE_BARRIER
from engine.privacy import audit
from engine.privacy.consent import consent_json
from engine.privacy.contact_records import ContactRecords, find_subject
from engine.privacy.forgetting import forget_personal_data
from engine.privacy.hashing import contact_hash, load_key
from engine.privacy.parts import PrivacyPart, Subject
from engine.timestamps import format_rfc3339

Connect = Callable[[], AbstractAsyncContextManager[asyncpg.Connection]]
# NOTIFY at an erase's commit, with the contact id as payload (never stored): the automation
# leader drops what its in-memory trigger index holds for the contact.
ERASED_CHANNEL = "herald_contact_erased"


@dataclass(frozen=True, slots=True)
class Erasure:
    contact_hash: str
    erased_at: datetime
    already_erased: bool
    removed: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"erased": True, "already_erased": self.already_erased,
                "contact_hash": self.contact_hash,
                "erased_at": format_rfc3339(self.erased_at), "removed": self.removed}


def _contact(row: asyncpg.Record | None) -> dict[str, Any] | None:
    if row is None:
        return None
    return {"contact_id": row["contact_id"], "email": row["email"],
            "attributes": row["attributes"], "timezone": row["timezone"],
            "created_at": format_rfc3339(row["created_at"]),
            "updated_at": format_rfc3339(row["updated_at"])}


class Privacy:
    """``parts``: the layers above the engine (the MTA's, the automation's), in erase order;
    the engine's own contacts and events come last."""

    def __init__(self, parts: Sequence[PrivacyPart] = ()) -> None:
        self.parts: tuple[PrivacyPart, ...] = (*parts, ContactRecords())

    async def open_export(self, connection: asyncpg.Connection, contact_id: str, actor: str,
                          now: datetime) -> Subject | None:
        """Find the subject and record the export in the audit log; None: unknown contact."""
        key = await load_key(connection)
        subject = await find_subject(connection, contact_id, contact_hash(key, contact_id))
        if subject is not None:
            await audit.record(connection, audit.EXPORT, actor, subject.contact_hash, {}, now)
        return subject

    async def export_chunks(self, connect: Connect, subject: Subject,
                            now: datetime) -> AsyncIterator[bytes]:
        """The export document as JSON, in pieces."""
        async with connect() as connection:
            row = await connection.fetchrow("SELECT * FROM contacts WHERE contact_id = $1",
                                            subject.contact_id)
        head = {"contact_id": subject.contact_id, "exported_at": format_rfc3339(now),
                "contact": _contact(row),
                "consent": consent_json(row["consent_state"], row["consent_at"],
                                        row["consent_source"]) if row else None,
                "addresses": list(subject.emails)}
        yield orjson.dumps(head)[:-1]
        for part in self.parts:
            for section in part.sections():
                yield b',"' + section.name.encode() + b'":['
                cursor: Any = None
                first = True
                while True:
                    async with connect() as connection:
                        items, cursor = await section.read(connection, subject, cursor)
                    for item in items:
                        yield (b"" if first else b",") + orjson.dumps(item)
                        first = False
                    if cursor is None:
                        break
                yield b"]"
        yield b"}"

    async def erase(self, connection: asyncpg.Connection, contact_id: str, actor: str,
                    now: datetime) -> Erasure | None:
        """Erase in one transaction; None when the contact is unknown and was never erased.
        It first takes the intake's contacts lock and moves the erasure generation on
        (:mod:`engine.intake.known_contacts`): intake processes then write this contact's
        row again for its later events. Read committed, so that its deletes see every batch
        that committed while it waited for the lock."""
        async with connection.transaction(isolation="read_committed"):
            await connection.execute(ERASE_BARRIER)
            key = await load_key(connection)
            hashed = contact_hash(key, contact_id)
            await connection.execute("SELECT 1 FROM contacts WHERE contact_id = $1 FOR UPDATE",
                                     contact_id)
            subject = await find_subject(connection, contact_id, hashed)
            if subject is None:
                erased_at = await audit.erased_before(connection, hashed)
                if erased_at is None:
                    return None
                await audit.record(connection, audit.ERASE, actor, hashed,
                                   {"already_erased": True}, now)
                return Erasure(hashed, erased_at, True)
            removed: dict[str, int] = {}
            for part in self.parts:
                removed.update(await part.erase(connection, subject, key))
            await connection.execute("SELECT pg_notify($1, $2)", ERASED_CHANNEL, contact_id)
            await audit.record(connection, audit.ERASE, actor, hashed, {"removed": removed},
                               now)
        forget_personal_data()  # this process's caches keep no copy of the contact's data
        return Erasure(hashed, now, False, removed)
