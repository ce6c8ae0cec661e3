"""Consent in Postgres: the ``contacts.consent_*`` columns, and the event each change logs.

:func:`record_consent` (the contacts API, the confirm link) writes the state and appends its
event in the caller's transaction; :func:`apply_consent` applies an event already in the log
(posted by a sender) without logging another. Both keep the newest: an older record never
overwrites a newer one.
"""

from __future__ import annotations

from datetime import datetime

import asyncpg

from engine.eventlog import LogEvent, append_events
from engine.privacy.consent import STATE_EVENTS, Consent

# Insert the contact when unknown; otherwise only move consent forward in time.
_APPLY = """
    INSERT INTO contacts (contact_id, consent_state, consent_at, consent_source)
    VALUES ($1, $2, $3, $4)
    ON CONFLICT (contact_id) DO UPDATE
        SET consent_state = EXCLUDED.consent_state, consent_at = EXCLUDED.consent_at,
            consent_source = EXCLUDED.consent_source, updated_at = now()
        WHERE contacts.consent_at IS NULL OR contacts.consent_at <= EXCLUDED.consent_at
    RETURNING *
"""


async def apply_consent(connection: asyncpg.Connection, contact_id: str,
                        consent: Consent) -> asyncpg.Record | None:
    """Set the contact's consent unless a newer one is stored; the row when it was set."""
    return await connection.fetchrow(_APPLY, contact_id, consent.state, consent.at,
                                     consent.source)


async def record_consent(connection: asyncpg.Connection, contact_id: str, email: str | None,
                         consent: Consent, now: datetime,
                         event_source: str = "api") -> asyncpg.Record | None:
    """Set the consent and log its event (``consent_given`` ...) with ``state`` and
    ``source``; returns the row, or None when a newer consent was already stored."""
    row = await apply_consent(connection, contact_id, consent)
    if row is not None:
        await append_events(connection, [LogEvent(
            STATE_EVENTS[consent.state], contact_id, email,
            {"state": consent.state, "source": consent.source}, consent.at, event_source)])
    return row
