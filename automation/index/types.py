"""What the trigger index takes and gives, and the small pure helpers its watchers share.

* :class:`IndexEvent` in, :class:`Fire` out, :class:`ContactView` for the runtime's guards.
* Instants inside the index are integer microseconds since the Unix epoch (:func:`to_us`,
  :func:`from_us`): exact, so a deadline re-derived after a restore is the very same instant.
* :func:`compact_key` is :func:`automation.model.definitions.scalar_key` without the tuple:
  strings and numbers are their own keys (``1 == 1.0`` as in correlation, ``"1"`` stays apart
  from ``1``), booleans are wrapped so that ``true`` never meets ``1``.
* Properties an index must keep until a timer fires (the latest cart of an absence, the latest
  activity of an inactivity trigger, a send) are kept as compact JSON text (:func:`pack`).
* :func:`event_ref` names an event deterministically for entry keys: its log position, or (in
  simulations without positions) its time, type and a hash of its properties.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple, TypeVar

import orjson

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MICROSECOND = timedelta(microseconds=1)
SECOND_US = 1_000_000
DAY_US = 86_400 * SECOND_US
SEND_EVENTS = frozenset({"email_delivered", "automation_sent"})
MAX_INTERNED = 200_000
H = TypeVar("H", bound=Hashable)


@dataclass(frozen=True, slots=True)
class IndexEvent:
    """One event of the log, as the runtime feeds it (in log order)."""

    contact_id: str
    type: str
    properties: Mapping[str, Any]
    occurred_at: datetime  # aware
    position: int | None = None  # log position (None in some simulations)
    source: str = "api"  # the log's source column (engine.sources): browsers are trusted less


class Fire(NamedTuple):
    """A trigger fired for one workflow and contact.

    ``at`` is the fire time (the event's time, or the timer's due time); ``trigger_type``,
    ``trigger_properties`` and ``trigger_at`` describe the trigger event; ``entry_key`` is the same
    whenever the same fire is derived again (after a restore or a replay of the log).

    A named tuple, not a frozen dataclass: the index makes one per workflow per fire (millions
    when catching up), and a tuple is made about five times faster (:meth:`_make`)."""

    workflow: str
    contact_id: str
    at: datetime
    trigger_type: str
    trigger_properties: Mapping[str, Any]
    trigger_at: datetime
    entry_key: str


@dataclass(frozen=True, slots=True)
class ContactView:
    """A contact as last seen in its ``contact_updated`` events."""

    attributes: Mapping[str, Any]
    email: str | None
    timezone: str | None


def to_us(moment: datetime) -> int:
    """An aware datetime as integer microseconds since the epoch (exact)."""
    return (moment - EPOCH) // MICROSECOND


def from_us(us: int) -> datetime:
    return EPOCH + timedelta(0, 0, us)  # positional: a keyword costs a third more


def duration_us(seconds: float) -> int:
    return round(seconds * SECOND_US)


def iso(us: int) -> str:
    return from_us(us).isoformat()


def compact_key(value: Any) -> Hashable | None:
    """A dict key for a correlation or group value with :func:`same_value` semantics, or
    ``None`` for missing and non-scalar values."""
    kind = type(value)
    if kind is str or kind is int or kind is float:
        return value
    if kind is bool:
        return (value,)
    if isinstance(value, bool):
        return (bool(value),)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, int | float):
        return value
    return None


def key_text(key: Hashable) -> str:
    """A compact key as text for entry keys (JSON; booleans as ``true``/``false``)."""
    if isinstance(key, tuple):
        return "" if not key else json.dumps(key[0])
    return json.dumps(key)


Packed = str | Mapping[str, Any]


def pack(properties: Mapping[str, Any]) -> Packed:
    """Properties as compact JSON text (the mapping itself if it is not JSON). Text, not the
    bytes orjson returns: those keep orjson's 4 KiB write buffer allocated."""
    try:
        return orjson.dumps(properties).decode()
    except TypeError:
        return properties


def unpack(packed: Packed) -> Mapping[str, Any]:
    if isinstance(packed, str):
        loaded: dict[str, Any] = orjson.loads(packed)
        return loaded
    return packed


def _digest(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=6).hexdigest()


def event_ref(event: IndexEvent) -> str:
    """``p<position>``, or ``t<time>:<type>:<hash of properties>`` without a position."""
    if event.position is not None:
        return f"p{event.position}"
    try:
        packed = orjson.dumps(event.properties, option=orjson.OPT_SORT_KEYS, default=str)
    except TypeError:  # not JSON (keys that are not strings): still deterministic
        packed = repr(sorted(event.properties.items(), key=repr)).encode()
    return f"t{event.occurred_at.isoformat()}:{event.type}:{_digest(packed)}"


class Interner:
    """Shares equal strings (SKUs, event types, time zones) between contacts; bounded."""

    __slots__ = ("_seen",)

    def __init__(self) -> None:
        self._seen: dict[Any, Any] = {}

    def __call__(self, value: H) -> H:
        found: H | None = self._seen.get(value)
        if found is not None:
            return found
        if type(value) is str and len(self._seen) < MAX_INTERNED:
            self._seen[value] = value
        return value

    def __len__(self) -> int:
        return len(self._seen)
