"""Who may be mailed (pure): suppression entries, the events that imply them, and the verdict
for one message. The live engine, the MTA and the simulator all decide through this module.

An entry has a ``reason`` and a ``category``: ``""`` covers all mail; a named category covers
only messages of that category (unsubscribes from one kind of mail). Transactional messages
ignore unsubscribes (they are marketing preferences), never a hard bounce, a complaint,
repeated soft bounces or a manual entry.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from mta.suppression.addresses import normalise_lenient

HARD_BOUNCE = "hard_bounce"
COMPLAINT = "complaint"
UNSUBSCRIBE = "unsubscribe"
SOFT_BOUNCES = "soft_bounces"
MANUAL = "manual"
REASONS = (HARD_BOUNCE, COMPLAINT, UNSUBSCRIBE, SOFT_BOUNCES, MANUAL)
# The address of an erased contact (engine.privacy): kept only as a hash, never as an entry of
# the list; it blocks every message, transactional ones too. Nobody adds it by hand; removing
# the address (mta.suppression.store.remove) lifts it, reported as a removal of this reason.
ERASED = "erased"
ALL_CATEGORIES = ""
MAX_CATEGORY = 64


@dataclass(frozen=True, slots=True)
class Suppression:
    email: str  # normalised (mta.suppression.addresses.normalise)
    reason: str
    category: str = ALL_CATEGORIES
    source: str = ""
    message_id: uuid.UUID | None = None
    detail: str = ""

    def __post_init__(self) -> None:
        if self.reason not in REASONS and self.reason != ERASED:
            raise ValueError(f"reason must be one of {', '.join(REASONS)}")
        if self.category and self.reason != UNSUBSCRIBE:
            raise ValueError("only an unsubscribe can be limited to a category")
        check_category(self.category)


def check_category(category: str) -> str:
    if not isinstance(category, str) or len(category) > MAX_CATEGORY or any(
            not (c.isalnum() or c in "-_.") for c in category):
        raise ValueError(f"category must be up to {MAX_CATEGORY} letters, digits, '-', '_' "
                         "or '.'")
    return category


def message_category(metadata: Mapping[str, Any]) -> str:
    value = metadata.get("category")
    return value if isinstance(value, str) else ALL_CATEGORIES


def is_transactional(metadata: Mapping[str, Any]) -> bool:
    return metadata.get("transactional") is True


def blocking_reason(entries: Iterable[tuple[str, str]], category: str,
                    transactional: bool) -> str | None:
    """The reason an address with these ``(reason, category)`` entries may not get a message of
    ``category``; None when it may. Hard reasons win over an unsubscribe in the answer."""
    unsubscribed = None
    for reason, scope in entries:
        if reason != UNSUBSCRIBE:
            return reason
        if not transactional and (scope == ALL_CATEGORIES or scope == category):
            unsubscribed = reason if scope == ALL_CATEGORIES else f"{reason} ({scope})"
    return unsubscribed


def from_event(event_type: str, email: str | None,
               properties: Mapping[str, Any]) -> Suppression | None:
    """The suppression an event in the log implies, if any: hard bounces (``hard`` true, or the
    SMTP classification ``category: hard``), complaints, and unsubscribes (``email_unsubscribed``
    from Herald, ``unsubscribed`` posted by the sender; all mail unless ``category`` says)."""
    if not email:
        return None
    address = normalise_lenient(email)
    message = _uuid(properties.get("message_id"))
    if event_type == "email_bounced" and (properties.get("hard") is True
                                          or properties.get("category") == "hard"):
        return Suppression(address, HARD_BOUNCE, source=str(properties.get("source") or "smtp"),
                           message_id=message)
    if event_type == "email_complained":
        return Suppression(address, COMPLAINT, source=str(properties.get("source") or "arf"),
                           message_id=message)
    if event_type in ("email_unsubscribed", "unsubscribed"):
        scope = properties.get("unsubscribe_category", ALL_CATEGORIES)
        try:
            scope = check_category(scope) if isinstance(scope, str) else ALL_CATEGORIES
        except ValueError:
            scope = ALL_CATEGORIES
        return Suppression(address, UNSUBSCRIBE, scope,
                           str(properties.get("source") or "event"), message)
    return None


def _uuid(value: Any) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(value)) if value else None
    except ValueError:
        return None
