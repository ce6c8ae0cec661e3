"""Contacts: validation of upserts (pure) and their storage.

An upsert merges ``attributes`` into what is stored (a ``null`` value removes that attribute)
and, in the same transaction, appends a ``contact_updated`` event listing what changed, so the
automation core sees attribute changes by following the event log alone. A ``consent`` field
records the contact's consent (:mod:`engine.privacy.consent`) with its own event.
"""

from __future__ import annotations

import re
import zoneinfo
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg

from engine.addresses import AddressError, normalize_email
from engine.eventlog import LogEvent, append_events
from engine.privacy.consent import Consent, InvalidConsent, consent_json, parse_consent
from engine.privacy.consent_store import record_consent

# Printable: no C0 or C1 controls, no line or paragraph separator (the OpenAPI document's
# PRINTABLE_ID); contact ids and event ids alike.
CONTACT_ID = re.compile("[^\x00-\x1f\x7f-\x9f\u2028\u2029]{1,255}\\Z")
CONTACT_KEYS = frozenset({"contact_id", "email", "attributes", "timezone", "consent"})
UNCHANGED = object()


class InvalidContact(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


@dataclass(frozen=True, slots=True)
class ContactUpsert:
    contact_id: str
    email: str | object | None  # UNCHANGED: keep what is stored
    attributes: dict[str, Any]
    timezone: str | object | None
    consent: Consent | None = None


def parse_contact(body: Any, now: datetime | None = None) -> ContactUpsert:
    if not isinstance(body, dict):
        raise InvalidContact("body", "must be a JSON object")
    unknown = set(body) - CONTACT_KEYS
    if unknown:
        raise InvalidContact(sorted(unknown)[0], "unknown field (allowed: "
                             + ", ".join(sorted(CONTACT_KEYS)) + ")")
    contact_id = body.get("contact_id")
    if not isinstance(contact_id, str) or not CONTACT_ID.match(contact_id):
        raise InvalidContact("contact_id", "is required: a string of 1-255 printable characters")
    email: str | object | None = UNCHANGED
    if "email" in body:
        if body["email"] is None:
            email = None
        elif not isinstance(body["email"], str):
            raise InvalidContact("email", "must be a string")
        else:
            try:
                email = normalize_email(body["email"])
            except AddressError as exc:
                raise InvalidContact("email", str(exc)) from None
    attributes = body.get("attributes", {})
    if not isinstance(attributes, dict):
        raise InvalidContact("attributes", "must be a JSON object")
    timezone: str | object | None = UNCHANGED
    if "timezone" in body:
        timezone = body["timezone"]
        if timezone is not None:
            if not isinstance(timezone, str):
                raise InvalidContact("timezone", "must be an IANA time zone name")
            try:
                zoneinfo.ZoneInfo(timezone)
            except (zoneinfo.ZoneInfoNotFoundError, ValueError):
                raise InvalidContact("timezone", f"{timezone!r} is not an IANA time zone name "
                                     "(e.g. Europe/Paris)") from None
    consent = None
    if "consent" in body:
        try:
            consent = parse_consent(body["consent"], now or datetime.now(UTC))
        except InvalidConsent as exc:
            field, _, message = str(exc).partition(": ")
            raise InvalidContact(field, message) from None
    return ContactUpsert(contact_id, email, attributes, timezone, consent)


def contact_json(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "contact_id": row["contact_id"],
        "email": row["email"],
        "attributes": row["attributes"],
        "timezone": row["timezone"],
        "consent": consent_json(row["consent_state"], row["consent_at"], row["consent_source"]),
        "created_at": row["created_at"].isoformat(),
        "updated_at": row["updated_at"].isoformat(),
    }


async def upsert_contact(connection: asyncpg.Connection, upsert: ContactUpsert,
                         now: datetime) -> tuple[asyncpg.Record, bool]:
    """Insert or merge one contact and log what changed; returns (row, created)."""
    async with connection.transaction():
        before = await connection.fetchrow(
            "SELECT * FROM contacts WHERE contact_id = $1 FOR UPDATE", upsert.contact_id)
        old_attributes: dict[str, Any] = dict(before["attributes"]) if before else {}
        merged = dict(old_attributes)
        for name, value in upsert.attributes.items():
            if value is None:
                merged.pop(name, None)
            else:
                merged[name] = value
        email = (before["email"] if before else None) if upsert.email is UNCHANGED else upsert.email
        timezone = ((before["timezone"] if before else None) if upsert.timezone is UNCHANGED
                    else upsert.timezone)
        row = await connection.fetchrow(
            """INSERT INTO contacts (contact_id, email, attributes, timezone)
               VALUES ($1, $2, $3, $4)
               ON CONFLICT (contact_id) DO UPDATE
                   SET email = EXCLUDED.email, attributes = EXCLUDED.attributes,
                       timezone = EXCLUDED.timezone, updated_at = now()
               RETURNING *""",
            upsert.contact_id, email, merged, timezone)
        changed = sorted(name for name in set(merged) | set(old_attributes)
                         if merged.get(name) != old_attributes.get(name))
        if before is None or changed or email != before["email"] \
                or timezone != before["timezone"]:
            properties = {
                "created": before is None,
                "changed": changed,
                "previous": {name: old_attributes.get(name) for name in changed},
                "attributes": merged,
                "email": email,
                "timezone": timezone,
            }
            await append_events(connection, [LogEvent(
                "contact_updated", upsert.contact_id, email if isinstance(email, str) else None,
                properties, now, "api")])
        if upsert.consent is not None:
            consented = await record_consent(connection, upsert.contact_id,
                                             email if isinstance(email, str) else None,
                                             upsert.consent, now)
            row = consented or row
    return row, before is None


async def get_contact(connection: asyncpg.Connection, contact_id: str) -> asyncpg.Record | None:
    return await connection.fetchrow("SELECT * FROM contacts WHERE contact_id = $1", contact_id)


async def contact_events(connection: asyncpg.Connection, contact_id: str, limit: int,
                         before: int | None) -> list[asyncpg.Record]:
    """Newest first; ``before`` is a position cursor from the previous page."""
    return await connection.fetch(
        """SELECT position, event_id, type, email, properties, occurred_at, received_at, source
           FROM events WHERE contact_id = $1 AND ($2::bigint IS NULL OR position < $2)
           ORDER BY position DESC LIMIT $3""",
        contact_id, before, limit)
