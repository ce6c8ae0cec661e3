"""``since``: the first UTC day counted (pure). Counters are bucketed by UTC day, so a time
of day is rounded down to its day."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from engine.timestamps import parse_rfc3339
from engine.values import parse_duration

HELP = "a date (2026-01-31), an RFC 3339 time (its UTC day) or an age such as 7d (today - 7d)"


def parse_since(text: str, today: date) -> date:
    """Raises ValueError with a message naming the accepted forms."""
    value = text.strip()
    if not value.isascii():
        raise ValueError(f"{text!r} is not {HELP}")
    if len(value) == 10 and value[4:5] == "-" and value[7:8] == "-":
        try:
            return date.fromisoformat(value)
        except ValueError:
            pass
    elif "T" in value or "t" in value:
        try:
            moment: datetime = parse_rfc3339(value)
            return moment.astimezone(UTC).date()
        except ValueError:
            pass
    elif value and value[-1:] in "smhd" and value[:1].isascii() and value[:1].isdigit():
        try:
            seconds = parse_duration(value)
            if 0 <= seconds <= 3660 * 86400:
                return today - timedelta(days=int(seconds // 86400))
        except ValueError:
            pass
    raise ValueError(f"{text!r} is not {HELP}")
