"""Send guards (pure): who may be mailed, how often, and when.

Checked when a send step executes, in this order; each skip has a short reason that is recorded
and shown by ``herald explain``:

1. the step already sent in this run ("already sent in this run");
2. the contact has no address ("no email address");
3. the address is on the suppression list ("suppressed: <reason>"), decided by
   :func:`mta.suppression.rules.blocking_reason` exactly as the MTA decides it (transactional
   mail ignores unsubscribes, never hard bounces or complaints);
4. marketing only, when the send needs consent (the step's or workflow's
   ``requires_consent``, else ``[privacy] require_consent``): the contact's consent is not
   ``opted_in`` ("no consent (pending)", "no consent (none recorded)", ...);
5. marketing only: the contact unsubscribed, or is marked ``status: inactive``;
6. marketing only: the per-contact frequency cap across workflows ("frequency cap");
7. marketing only: quiet hours in the contact's timezone: the send WAITS until they end.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, time
from typing import Any

from automation.model.durations import LocalWindow, next_in_window, zone
from engine.privacy.consent import missing_consent
from mta.suppression.rules import ALL_CATEGORIES, blocking_reason

ALL_DAYS = frozenset(range(7))


@dataclass(frozen=True, slots=True)
class GuardInputs:
    email: str | None
    attributes: Mapping[str, Any]
    timezone: str | None
    suppressions: tuple[tuple[str, str], ...]  # (reason, category) entries of the address
    recent_sends: int
    consent: str | None = None  # the contact's consent state (engine.privacy.consent)


@dataclass(frozen=True, slots=True)
class Verdict:
    send: bool
    skip_reason: str | None = None
    wait_until: datetime | None = None


def parse_quiet_hours(text: str) -> LocalWindow | None:
    """``"21:00-08:00"`` -> the window in which sending is ALLOWED (08:00-21:00)."""
    if not text.strip():
        return None
    try:
        start_text, end_text = text.split("-")
        quiet_start = time.fromisoformat(start_text.strip())
        quiet_end = time.fromisoformat(end_text.strip())
    except ValueError:
        raise ValueError(f"quiet_hours: {text!r} is not like '21:00-08:00'") from None
    if quiet_start == quiet_end:
        raise ValueError("quiet_hours: start and end are the same")
    return LocalWindow(quiet_end, quiet_start, ALL_DAYS)


def check_send(inputs: GuardInputs, *, already_sent: bool, transactional: bool,
               frequency_cap: int, allowed_window: LocalWindow | None,
               now: datetime, requires_consent: bool = False) -> Verdict:
    if already_sent:
        return Verdict(False, "already sent in this run")
    if not inputs.email:
        return Verdict(False, "no email address")
    suppressed = blocking_reason(inputs.suppressions, ALL_CATEGORIES, transactional)
    if suppressed:
        return Verdict(False, f"suppressed: {suppressed}")
    if transactional:
        return Verdict(True)
    if requires_consent and (missing := missing_consent(inputs.consent)):
        return Verdict(False, missing)
    if inputs.attributes.get("unsubscribed") is True:
        return Verdict(False, "unsubscribed")
    if inputs.attributes.get("status") == "inactive":
        return Verdict(False, "contact is inactive")
    if inputs.recent_sends >= frequency_cap:
        return Verdict(False, f"frequency cap ({frequency_cap} per window) reached")
    if allowed_window is not None:
        allowed_at = next_in_window(now, allowed_window, zone(inputs.timezone))
        if allowed_at > now:
            return Verdict(False, wait_until=allowed_at)
    return Verdict(True)
