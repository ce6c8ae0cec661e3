"""Time values in workflow definitions, and the local-time arithmetic the runtime needs (pure).

* Durations reuse :func:`engine.values.parse_duration` (``"30m"``, ``"1h30m"``, ``"7d"``, seconds)
  and are held as float seconds, bounded by :data:`MAX_DURATION_SECONDS`.
* A :class:`LocalWindow` is a time-of-day window on some weekdays in the contact's timezone
  (``"09:00-17:00"`` on ``[mon, tue, wed, thu, fri]``); ``start > end`` wraps past midnight and
  belongs to the weekday it starts on. :func:`next_in_window` gives the first instant at or after
  a moment that lies inside the window.
* Date triggers: :func:`parse_date_value` reads a date attribute (``YYYY-MM-DD``, or the date part
  of an RFC 3339 date-time); :func:`next_date_fire` gives the next firing instant after a moment.
  An anniversary of 29 February falls on 28 February in other years.

Timezones are IANA names; ``None`` or an unknown name means UTC. A local time that does not exist
(spring-forward gap) resolves the way :mod:`zoneinfo` does (``fold=0``: the offset before the gap).
"""

from __future__ import annotations

import re
import zoneinfo
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Any

from automation.errors import DefinitionError
from engine.values import parse_duration

MAX_DURATION_SECONDS = 3650 * 86400.0  # ten years: anything longer is a typo
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_CLOCK = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")
_DATE_PREFIX = re.compile(r"^(\d{4})-(\d{2})-(\d{2})(?:$|[Tt ])")


def duration_seconds(value: Any, where: str, *, allow_zero: bool = True) -> float:
    """Parse a duration at key path ``where`` into seconds, or raise :class:`DefinitionError`."""
    try:
        seconds = parse_duration(value)
    except (ValueError, TypeError, AttributeError):
        raise DefinitionError(f"{where}: {value!r} is not a duration (e.g. 30m, 4h, 1d)") from None
    if seconds > MAX_DURATION_SECONDS:
        raise DefinitionError(f"{where}: {value!r} is longer than ten years")
    if seconds == 0 and not allow_zero:
        raise DefinitionError(f"{where}: must be longer than zero")
    return seconds


def parse_clock(value: Any, where: str) -> time:
    """``"09:00"`` (24-hour ``HH:MM``) into a :class:`datetime.time`."""
    match = _CLOCK.match(value) if isinstance(value, str) else None
    if not match:
        raise DefinitionError(f"{where}: {value!r} is not a time of day like '09:00'")
    return time(int(match.group(1)), int(match.group(2)))


@dataclass(frozen=True, slots=True)
class LocalWindow:
    """Local times ``start``..``end`` (end exclusive) on ``days`` (0 = Monday ... 6 = Sunday)."""

    start: time
    end: time
    days: frozenset[int]

    @property
    def wraps(self) -> bool:
        return self.start > self.end

    def contains(self, moment: datetime, timezone: tzinfo) -> bool:
        return next_in_window(moment, self, timezone) == moment


def parse_window(text: Any, days: Any, where: str) -> LocalWindow:
    """``"09:00-17:00"`` plus a list of weekday names (``None``: every day)."""
    if not isinstance(text, str) or text.count("-") != 1:
        raise DefinitionError(f"{where}: {text!r} is not a window like '09:00-17:00'")
    first, second = text.split("-")
    start = parse_clock(first.strip(), where)
    end = parse_clock(second.strip(), where)
    if start == end:
        raise DefinitionError(f"{where}: the window {text!r} is empty")
    if days is None:
        return LocalWindow(start, end, frozenset(range(7)))
    day_where = where.rsplit(".", 1)[0] + ".days"
    if not isinstance(days, list) or not days:
        raise DefinitionError(f"{day_where}: expected a list of weekdays (mon ... sun)")
    numbers = set()
    for index, name in enumerate(days):
        if name not in WEEKDAYS:
            raise DefinitionError(f"{day_where}[{index}]: {name!r} is not one of "
                                  + ", ".join(WEEKDAYS))
        numbers.add(WEEKDAYS.index(name))
    return LocalWindow(start, end, frozenset(numbers))


def zone(name: str | None) -> tzinfo:
    """The contact's timezone; UTC when ``name`` is empty or unknown."""
    if not name:
        return UTC
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return UTC


def _local(day: date, clock: time, timezone: tzinfo) -> datetime:
    return datetime.combine(day, clock, tzinfo=timezone).astimezone(UTC)


def next_in_window(moment: datetime, window: LocalWindow, timezone: tzinfo) -> datetime:
    """``moment`` itself if it lies inside ``window`` (local to ``timezone``), else the next
    opening of the window. ``moment`` must be timezone-aware; the result is in UTC."""
    moment = moment.astimezone(UTC)
    today = moment.astimezone(timezone).date()
    best: datetime | None = None
    for offset in range(-1, 9):
        day = today + timedelta(days=offset)
        if day.weekday() not in window.days:
            continue
        opens = _local(day, window.start, timezone)
        closes = _local(day + timedelta(days=1) if window.wraps else day, window.end, timezone)
        if opens <= moment < closes:
            return moment
        if opens > moment and (best is None or opens < best):
            best = opens
    assert best is not None  # days is non-empty, so some day within the next week qualifies
    return best


def parse_date_value(value: Any) -> date | None:
    """A date attribute's date, or ``None`` when the value is not a date."""
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    match = _DATE_PREFIX.match(value) if isinstance(value, str) else None
    if not match:
        return None
    try:
        return date(int(match.group(1)), int(match.group(2)), int(match.group(3)))
    except ValueError:
        return None


def anniversary(base: date, year: int) -> date:
    """``base``'s month and day in ``year`` (29 February becomes 28 February)."""
    try:
        return base.replace(year=year)
    except ValueError:
        return base.replace(year=year, day=28)


def next_date_fire(base: date, *, yearly: bool, offset_days: int, at: time,
                   timezone: tzinfo, after: datetime) -> datetime | None:
    """The first instant strictly after ``after`` at which a date trigger fires: ``at`` local time
    on ``base + offset_days`` (once), or on each anniversary of ``base`` plus ``offset_days``
    (``yearly``; ``abs(offset_days) <= 366``). ``None`` when a one-off date has passed."""
    after = after.astimezone(UTC)
    if not yearly:
        fire = _local(base + timedelta(days=offset_days), at, timezone)
        return fire if fire > after else None
    year = after.astimezone(timezone).year - 2  # offsets are bounded to +-366 days
    while True:  # at most five iterations
        fire = _local(anniversary(base, year) + timedelta(days=offset_days), at, timezone)
        if fire > after:
            return fire
        year += 1
