"""Browser-sourced events (the tracking pixel): what a page may say, and what it may not (pure).

A publishable key is public, so a pixel hit is treated as coming from anyone:

* it cannot name a contact by ``email`` or ``contact_id`` (refused). It is either anonymous
  (``anonymous_id``: stored under the contact ``anon:<id>``, which has no address and is never
  mailed) or identified by a ``contact_token`` that the sender's backend signed for this key
  (:mod:`engine.contact_tokens`); a bad, expired or foreign token refuses the hit;
* ``timestamp`` is ignored: the server's clock is the event's time;
* ``id`` cannot collide with a backend's ids: it is namespaced by key and contact;
* only the properties the key lists are kept (others are dropped), each at most
  :data:`MAX_VALUE_LENGTH` characters, at most :data:`MAX_PROPERTIES` of them.

:func:`browser_event` returns the event and its log source, or raises :class:`PixelRefused`
whose ``reason`` is a metric label.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from engine.contact_tokens import ContactTokenError, verify
from engine.intake.validation import EventIn, InvalidEvent, parse_event
from engine.keys import ApiKey
from engine.sources import PIXEL, PIXEL_ANONYMOUS

ANONYMOUS_PREFIX = "anon:"
ANONYMOUS_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-]{0,127}$")
IDENTITY_PARAMETERS = frozenset({"email", "contact_id"})
CONTROL_PARAMETERS = frozenset({"key", "type", "id", "timestamp", "contact_token",
                                "anonymous_id"})
MAX_PROPERTIES = 20
MAX_VALUE_LENGTH = 512
MAX_ID_LENGTH = 255


class PixelRefused(ValueError):
    """The hit is not recorded; ``reason`` says why (a short label for metrics and logs)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class BrowserEvent:
    event: EventIn
    source: str  # PIXEL (identified by a token) or PIXEL_ANONYMOUS
    dropped: tuple[str, ...]  # property names the key does not allow


def _identity(params: dict[str, str], key: ApiKey, now: datetime) -> tuple[str, str]:
    """(contact id, source) of the hit."""
    if IDENTITY_PARAMETERS & params.keys():
        raise PixelRefused("bare_identity")
    token = params.get("contact_token")
    if token is not None:
        try:
            claims = verify(token, key_id=key.key_id, secret=key.token_secret,
                            now=now.timestamp())
        except ContactTokenError as exc:
            raise PixelRefused(f"token_{exc.reason}") from None
        return claims.contact_id, PIXEL
    anonymous = params.get("anonymous_id")
    if anonymous is None:
        raise PixelRefused("no_identity")
    if not ANONYMOUS_ID.match(anonymous):
        raise PixelRefused("bad_anonymous_id")
    return ANONYMOUS_PREFIX + anonymous, PIXEL_ANONYMOUS


def namespaced_id(key_id: str, contact_id: str, event_id: str) -> str:
    """A browser's idempotency id, in a space no backend id shares by accident."""
    digest = hashlib.sha256(f"{contact_id}\n{event_id}".encode()).hexdigest()[:40]
    return f"browser:{key_id}:{digest}"


def browser_event(items: Iterable[tuple[str, str]], key: ApiKey, now: datetime) -> BrowserEvent:
    """The event a pixel hit with query parameters ``items`` records for ``key`` (an active
    publishable key), at ``now``."""
    params: dict[str, str] = {}
    for name, value in items:
        if name in params:
            raise PixelRefused("repeated_parameter")
        if "\x00" in name or "\x00" in value:
            raise PixelRefused("invalid_event")
        params[name] = value
    event_type = params.get("type", "")
    if event_type not in key.event_types:
        raise PixelRefused("event_type_not_allowed")
    contact_id, source = _identity(params, key, now)
    properties: dict[str, object] = {}
    dropped: list[str] = []
    for name, value in params.items():
        if name in CONTROL_PARAMETERS:
            continue
        if name not in key.properties:
            dropped.append(name)
            continue
        if len(value) > MAX_VALUE_LENGTH:
            raise PixelRefused("property_too_long")
        properties[name] = value
    if len(properties) > MAX_PROPERTIES:
        raise PixelRefused("too_many_properties")
    if source == PIXEL and "anonymous_id" in params:
        anonymous = params["anonymous_id"]
        if ANONYMOUS_ID.match(anonymous):
            properties["anonymous_id"] = anonymous  # for joining the visit to the contact
    item: dict[str, object] = {"type": event_type, "contact_id": contact_id,
                               "properties": properties}
    if "id" in params:
        if not 0 < len(params["id"]) <= MAX_ID_LENGTH:
            raise PixelRefused("invalid_event")
        item["id"] = namespaced_id(key.key_id, contact_id, params["id"])
    try:
        event = parse_event(item, "pixel", now)
    except InvalidEvent:
        raise PixelRefused("invalid_event") from None
    return BrowserEvent(event, source, tuple(dropped))
