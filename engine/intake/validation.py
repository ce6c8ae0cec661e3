"""Turn a decoded ``POST /v1/events`` body into validated events (pure; no I/O).

Every problem is reported as :class:`InvalidEvent` naming the field, e.g.
``events[3].timestamp: must be an RFC 3339 date-time with an offset``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from engine.addresses import AddressError, normalize_email
from engine.contacts import CONTACT_ID
from engine.timestamps import parse_rfc3339

EVENT_TYPE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:\-]{0,127}$")
MAX_ID_LENGTH = 255
MAX_FUTURE = timedelta(hours=24)
EVENT_KEYS = frozenset({"type", "contact_id", "email", "properties", "timestamp", "id"})


class InvalidEvent(ValueError):
    """A field of an event is missing or wrong; ``field`` is its JSON path."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


# Not frozen: a frozen dataclass sets each field through object.__setattr__ (about five times
# the cost of a plain one), and the intake builds one per event; treat it as immutable.
@dataclass(slots=True)
class EventIn:
    type: str
    contact_id: str | None
    email: str | None
    properties: dict[str, Any]
    occurred_at: datetime
    event_id: str | None
    # The Segment dialect (engine.intake.segment): an event naming only ``anonymous_id``
    # belongs to the contact that id is joined to, else to 'anon:<id>'; ``joins_anonymous``
    # joins the id to this event's contact (identify, alias); ``traits`` are merged into the
    # contact's attributes when the event is stored (identify).
    anonymous_id: str | None = None
    joins_anonymous: bool = False
    traits: dict[str, Any] | None = None


def parse_event_body(body: Any, now: datetime, max_events: int) -> list[EventIn]:
    """Accept one event object or ``{"events": [...]}``."""
    if not isinstance(body, dict):
        raise InvalidEvent("body", "must be a JSON object: one event or {\"events\": [...]}")
    if "events" in body:
        extra = set(body) - {"events"}
        if extra:
            raise InvalidEvent(sorted(extra)[0], "unexpected key beside 'events'")
        items = body["events"]
        if not isinstance(items, list):
            raise InvalidEvent("events", "must be an array of event objects")
        if not items:
            raise InvalidEvent("events", "must contain at least one event")
        if len(items) > max_events:
            raise InvalidEvent("events", f"at most {max_events} events per request, "
                                         f"got {len(items)}")
        # Each event's path is named only when it is wrong (formatting "events[i]" and its
        # fields' paths for every event cost about as much as the checks themselves).
        i = 0
        try:
            events = []
            for i, item in enumerate(items):  # noqa: B007 - i names the event in an error
                events.append(parse_event(item, "", now))
        except InvalidEvent as exc:
            raise InvalidEvent(f"events[{i}]{exc.field}", exc.message) from None
        return events
    return [parse_event(body, "event", now)]


def _identifier(value: Any, where: str, name: str) -> str:
    # The common case in C: printable ASCII holds no control character.
    if (value.__class__ is str and value.isascii() and value.isprintable()
            and 0 < len(value) <= MAX_ID_LENGTH):
        return value
    where = f"{where}.{name}"
    if not isinstance(value, str):
        raise InvalidEvent(where, "must be a string")
    if not value or len(value) > MAX_ID_LENGTH:
        raise InvalidEvent(where, f"must be 1 to {MAX_ID_LENGTH} characters")
    if not CONTACT_ID.match(value):
        raise InvalidEvent(where, "must not contain control characters")
    return value


# Event types seen valid (a sender uses a few): a set lookup instead of the regex per event.
_VALID_TYPES: set[str] = set()
_VALID_TYPES_LIMIT = 4096


def _valid_type(event_type: Any) -> bool:
    if event_type.__class__ is str and event_type in _VALID_TYPES:
        return True
    if not isinstance(event_type, str) or not EVENT_TYPE.match(event_type):
        return False
    if len(_VALID_TYPES) >= _VALID_TYPES_LIMIT:
        _VALID_TYPES.clear()
    _VALID_TYPES.add(event_type)
    return True


def parse_event(item: Any, where: str, now: datetime | None,
                max_future: timedelta | None = MAX_FUTURE) -> EventIn:
    """Validate one event object. ``now=None`` requires an explicit timestamp (simulation)."""
    if not isinstance(item, dict):
        raise InvalidEvent(where, "must be a JSON object")
    if not EVENT_KEYS.issuperset(item):
        unknown = set(item) - EVENT_KEYS
        raise InvalidEvent(f"{where}.{sorted(unknown)[0]}",
                           "unknown field (allowed: " + ", ".join(sorted(EVENT_KEYS)) + ")")
    if None in item.values():  # the document says string or object: leave a field out instead
        name = next(name for name, value in item.items() if value is None)
        raise InvalidEvent(f"{where}.{name}", "must not be null (leave the field out)")
    event_type = item.get("type")
    if event_type is None:
        raise InvalidEvent(f"{where}.type", "is required")
    if not _valid_type(event_type):
        raise InvalidEvent(f"{where}.type", "must be a string of 1-128 letters, digits, "
                                            "'_', '.', ':' or '-'")
    contact_id = item.get("contact_id")
    email = item.get("email")
    if contact_id is None and email is None:
        raise InvalidEvent(f"{where}.contact_id", "contact_id or email is required")
    if contact_id is not None:
        contact_id = _identifier(contact_id, where, "contact_id")
    if email is not None:
        if not isinstance(email, str):
            raise InvalidEvent(f"{where}.email", "must be a string")
        try:
            email = normalize_email(email)
        except AddressError as exc:
            raise InvalidEvent(f"{where}.email", str(exc)) from None
    properties = item.get("properties", {})
    if not isinstance(properties, dict):  # null too: it would come back as {}
        raise InvalidEvent(f"{where}.properties", "must be a JSON object")
    timestamp = item.get("timestamp")
    if timestamp is None:
        if now is None:
            raise InvalidEvent(f"{where}.timestamp", "is required")
        occurred_at = now
    else:
        if not isinstance(timestamp, str):
            raise InvalidEvent(f"{where}.timestamp", "must be an RFC 3339 string")
        try:
            occurred_at = parse_rfc3339(timestamp)
        except ValueError as exc:
            raise InvalidEvent(f"{where}.timestamp", str(exc)) from None
        if now is not None and max_future is not None and occurred_at > now + max_future:
            raise InvalidEvent(f"{where}.timestamp", "is more than 24 hours in the future")
    event_id = item.get("id")
    if event_id is not None:
        event_id = _identifier(event_id, where, "id")
    return EventIn(event_type, contact_id, email, properties, occurred_at, event_id)
