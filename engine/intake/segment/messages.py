"""Segment tracking API messages as Herald events (pure; no I/O).

A body is one message (``/v1/track``, ``/v1/identify``, ... : the path names its type) or a
batch (``/v1/batch``: ``{"batch": [...], "sentAt": ...}``, each message naming its ``type``).
Like Segment, a message that cannot be used is set aside with the reason and the others are
stored; only a body that is not such an object at all is refused (:class:`InvalidBody`).

The mapping (also README's table):

* ``userId`` is the contact id; ``anonymousId`` alone names an anonymous visitor (stored under
  ``anon:<id>`` until an identify or alias joins it to a contact, see
  :mod:`engine.intake.identities`); an ``identify`` without ``userId`` but with
  ``traits.email`` names the contact with that address, as a native event with only ``email``;
* ``track`` -> the event named ``event`` (spaces allowed: "Order Completed"), its
  ``properties``; ``page``/``screen`` -> ``page_viewed``/``screen_viewed`` with ``name`` and
  ``category`` added to the properties; ``identify`` -> ``identified`` with ``{"traits"}``,
  and the traits merged into the contact's attributes (``traits.email`` is the contact's
  address); ``group`` -> ``grouped`` with ``{"group_id", "traits"}``; ``alias`` -> ``aliased``
  with ``{"previous_id"}``, joining ``previousId`` (as an anonymous id) to ``userId``;
* ``messageId`` -> the event id ``segment:<messageId>`` (a retry is a duplicate);
* ``context``, ``anonymousId``, ``userId``, ``messageId``, the call type and the three clock
  readings are kept under the reserved property ``_segment``;
* time: ``receivedAt`` is the server's clock; the event happened at
  ``receivedAt - (sentAt - timestamp)`` (the client's clock skew cancels out, as Segment
  computes it); without ``sentAt``, at ``timestamp``; without either, at ``receivedAt``; never
  later than ``receivedAt``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from engine.addresses import AddressError, normalize_email
from engine.intake.validation import EventIn
from engine.timestamps import format_rfc3339, parse_rfc3339

TYPES = ("track", "identify", "page", "screen", "group", "alias")
EVENT_TYPES = {"page": "page_viewed", "screen": "screen_viewed", "identify": "identified",
               "group": "grouped", "alias": "aliased"}
SEGMENT_KEY = "_segment"
ID_PREFIX = "segment:"
MAX_NAME_LENGTH = 128
MAX_ID_LENGTH = 200


class InvalidBody(ValueError):
    """The body is not a Segment message or batch at all (the request is refused)."""


class InvalidMessage(ValueError):
    """One message cannot be stored; the others can."""


@dataclass(frozen=True, slots=True)
class Rejected:
    index: int
    message_id: str | None
    error: str

    def json(self) -> dict[str, Any]:
        return {"index": self.index, "messageId": self.message_id, "error": self.error}


@dataclass(frozen=True, slots=True)
class Parsed:
    events: list[EventIn]
    rejected: list[Rejected]


def parse_body(body: Any, path_type: str | None, received_at: datetime,
               max_messages: int) -> Parsed:
    """``path_type``: the type a single-message path implies, None for ``/v1/batch``."""
    if not isinstance(body, dict):
        raise InvalidBody("the body must be a JSON object")
    if path_type is None:
        messages = body.get("batch")
        if not isinstance(messages, list):
            raise InvalidBody("batch: must be an array of messages")
        if len(messages) > max_messages:
            raise InvalidBody(f"batch: at most {max_messages} messages, got {len(messages)}")
    else:
        messages = [body]
    batch_sent_at = body.get("sentAt")
    events: list[EventIn] = []
    rejected: list[Rejected] = []
    for index, message in enumerate(messages):
        try:
            events.append(parse_message(message, path_type, batch_sent_at, received_at))
        except InvalidMessage as exc:
            message_id = message.get("messageId") if isinstance(message, dict) else None
            rejected.append(Rejected(index, message_id if isinstance(message_id, str)
                                     else None, str(exc)))
    return Parsed(events, rejected)


def _identifier(value: Any, field: str, limit: int = MAX_ID_LENGTH) -> str | None:
    """Segment ids are strings (numbers are accepted and turned into text)."""
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise InvalidMessage(f"{field}: must be a string")
    text = value if isinstance(value, str) else str(value)
    if len(text) > limit:
        raise InvalidMessage(f"{field}: at most {limit} characters")
    if not text.isprintable():
        raise InvalidMessage(f"{field}: must not contain control characters")
    return text


def _object(message: dict[str, Any], field: str) -> dict[str, Any]:
    value = message.get(field)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidMessage(f"{field}: must be a JSON object")
    return value


def parse_time(value: Any, field: str) -> datetime | None:
    """An ISO 8601 date-time; one without an offset is UTC."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidMessage(f"{field}: must be an ISO 8601 date-time string")
    try:
        return parse_rfc3339(value)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(value)
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    except ValueError:
        raise InvalidMessage(f"{field}: {value[:40]!r} is not an ISO 8601 date-time") from None
    except OverflowError:  # 0001-01-01T00:00:00+01:00 is in year 0 in UTC
        raise InvalidMessage(f"{field}: in UTC it falls outside the years 1-9999") from None


def occurred_at(original: datetime | None, sent_at: datetime | None,
                received_at: datetime) -> datetime:
    """When the event happened, by the server's clock (see the module docstring)."""
    if original is None:
        return received_at
    try:
        moment = received_at - (sent_at - original) if sent_at is not None else original
    except OverflowError:  # sentAt far later than the timestamp: before year 1
        raise InvalidMessage("timestamp: corrected by sentAt, it falls before the year 1") from None
    return min(moment, received_at)


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any("\x00" in key or _has_nul(item) for key, item in value.items())
    if isinstance(value, list):
        return any(_has_nul(item) for item in value)
    return False


def parse_message(message: Any, path_type: str | None, batch_sent_at: Any,
                  received_at: datetime) -> EventIn:
    if not isinstance(message, dict):
        raise InvalidMessage("a message must be a JSON object")
    kind = message.get("type") if path_type is None else path_type
    if kind not in TYPES:
        raise InvalidMessage(f"type: must be one of {', '.join(TYPES)}")
    if _has_nul(message):
        raise InvalidMessage("strings must not contain U+0000")
    message_id = _identifier(message.get("messageId"), "messageId")
    user_id = _identifier(message.get("userId"), "userId", 255)
    anonymous_id = _identifier(message.get("anonymousId"), "anonymousId")
    context = _object(message, "context")
    original = parse_time(message.get("originalTimestamp", message.get("timestamp")),
                          "timestamp")
    sent_at = parse_time(message.get("sentAt", batch_sent_at), "sentAt")
    moment = occurred_at(original, sent_at, received_at)
    email: str | None = None
    traits: dict[str, Any] | None = None
    joins = False
    if kind == "track":
        name = message.get("event")
        if not isinstance(name, str) or not name.strip():
            raise InvalidMessage("event: the event name is required")
        if len(name) > MAX_NAME_LENGTH or not name.isprintable() or name[0].isspace():
            raise InvalidMessage(f"event: at most {MAX_NAME_LENGTH} printable characters, "
                                 "not starting with a space")
        event_type = name
        properties = dict(_object(message, "properties"))
    elif kind in ("page", "screen"):
        event_type = EVENT_TYPES[kind]
        properties = dict(_object(message, "properties"))
        for field in ("name", "category"):
            if isinstance(message.get(field), str):
                properties.setdefault(field, message[field])
    elif kind == "identify":
        event_type = EVENT_TYPES[kind]
        given = _object(message, "traits") or _object(context, "traits")  # RudderStack's
        traits = dict(given)
        raw_email = traits.pop("email", None)
        if isinstance(raw_email, str) and raw_email.strip():
            try:
                email = normalize_email(raw_email)
            except AddressError as exc:
                raise InvalidMessage(f"traits.email: {exc}") from None
        properties = {"traits": given}
        joins = True
    elif kind == "group":
        event_type = EVENT_TYPES[kind]
        group_id = _identifier(message.get("groupId"), "groupId")
        if group_id is None:
            raise InvalidMessage("groupId: is required")
        properties = {"group_id": group_id, "traits": _object(message, "traits")}
    else:  # alias
        event_type = EVENT_TYPES[kind]
        previous = _identifier(message.get("previousId"), "previousId")
        if previous is None or user_id is None:
            raise InvalidMessage("alias needs previousId and userId")
        properties = {"previous_id": previous}
        anonymous_id, joins = previous, True
    if user_id is None and anonymous_id is None and email is None:
        raise InvalidMessage("userId or anonymousId is required")
    properties[SEGMENT_KEY] = {
        "type": kind, "message_id": message_id, "user_id": user_id,
        "anonymous_id": anonymous_id, "context": context,
        "original_timestamp": None if original is None else format_rfc3339(original),
        "sent_at": None if sent_at is None else format_rfc3339(sent_at),
        "received_at": format_rfc3339(received_at),
    }
    return EventIn(event_type, user_id, email, properties, moment,
                   None if message_id is None else ID_PREFIX + message_id,
                   anonymous_id=anonymous_id, joins_anonymous=joins and anonymous_id is not None,
                   traits=traits)
