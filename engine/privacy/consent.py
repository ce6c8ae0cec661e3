"""Consent to marketing mail (pure): the states, the ``consent`` field of a contact upsert, and
the events that record a change.

A contact's consent is a state, the time it was recorded and its source:

- ``pending``: asked, not confirmed (double opt-in sent, not clicked);
- ``opted_in``: given (a confirmed double opt-in, a ticked box, an import with proof);
- ``opted_out``: withdrawn;
- none recorded (``null`` in the contact): never asked.

Each change is one event in the log, named after the new state (:data:`EVENT_STATES`); the
same events posted to ``POST /v1/events`` set the state (applied by the live automation
follower, the newest ``timestamp`` winning), so a sender can record consent either way.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from engine.timestamps import parse_rfc3339

PENDING = "pending"
OPTED_IN = "opted_in"
OPTED_OUT = "opted_out"
STATES = (PENDING, OPTED_IN, OPTED_OUT)
EVENT_STATES = {"consent_requested": PENDING, "consent_given": OPTED_IN,
                "consent_withdrawn": OPTED_OUT}
STATE_EVENTS = {state: event for event, state in EVENT_STATES.items()}
CONSENT_KEYS = frozenset({"state", "source", "at"})
SOURCE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:\-]{0,99}\Z")
DEFAULT_SOURCE = "api"
EVENT_SOURCE = "event"
MAX_AHEAD = timedelta(hours=24)


class InvalidConsent(ValueError):
    """The ``consent`` value is malformed; the message names the field."""


@dataclass(frozen=True, slots=True)
class Consent:
    state: str
    at: datetime
    source: str

    def to_json(self) -> dict[str, Any]:
        return {"state": self.state, "at": self.at.isoformat(), "source": self.source}


def parse_consent(value: Any, now: datetime) -> Consent:
    """``"opted_in"`` or ``{"state": "opted_in", "source": "signup_form", "at": RFC 3339}``
    (source defaults to ``api``, at to now)."""
    spec: Mapping[str, Any] = {"state": value} if isinstance(value, str) else value
    if not isinstance(spec, Mapping):
        raise InvalidConsent("consent: a state (" + ", ".join(STATES) + ") or an object "
                             "{state, source, at}")
    unknown = set(spec) - CONSENT_KEYS
    if unknown:
        raise InvalidConsent(f"consent.{sorted(unknown)[0]}: unknown field (allowed: at, "
                             "source, state)")
    state = spec.get("state")
    if state not in STATES:
        raise InvalidConsent("consent.state: one of " + ", ".join(STATES))
    source = spec.get("source", DEFAULT_SOURCE)
    if not isinstance(source, str) or not SOURCE.match(source):
        raise InvalidConsent("consent.source: 1-100 letters, digits, '_', '.', ':' or '-'")
    at = now
    if "at" in spec:
        if not isinstance(spec["at"], str):
            raise InvalidConsent("consent.at: an RFC 3339 time with an offset")
        try:
            at = parse_rfc3339(spec["at"])
        except ValueError as exc:
            raise InvalidConsent(f"consent.at: {exc}") from None
        if at > now + MAX_AHEAD:
            raise InvalidConsent("consent.at: more than 24 h in the future")
    return Consent(state, at, source)


def consent_from_event(event_type: str, properties: Mapping[str, Any],
                       occurred_at: datetime) -> Consent | None:
    """The consent a logged event records (``consent_given`` ...), or None."""
    state = EVENT_STATES.get(event_type)
    if state is None:
        return None
    source = properties.get("source")
    if not isinstance(source, str) or not SOURCE.match(source):
        source = EVENT_SOURCE
    return Consent(state, occurred_at, source)


def consent_json(state: str | None, at: datetime | None,
                 source: str | None) -> dict[str, Any] | None:
    """A contact's consent as the API shows it; None when never recorded."""
    if state is None or at is None:
        return None
    return {"state": state, "at": at.isoformat(), "source": source}


def missing_consent(state: str | None) -> str | None:
    """Why a contact in this state may not get mail that needs consent; None if it may."""
    if state == OPTED_IN:
        return None
    return f"no consent ({state})" if state else "no consent (none recorded)"
