"""RFC 3339 timestamps: strict parsing and UTC formatting (pure)."""

from __future__ import annotations

import re
from datetime import UTC, datetime

_RFC3339 = re.compile(
    r"(\d{4}-\d{2}-\d{2})[Tt ](\d{2}:\d{2}:\d{2})(?:\.(\d{1,9}))?([Zz]|[+-]\d{2}:\d{2})\Z",
    re.ASCII,  # \d is 0-9 only
)


def parse_rfc3339(text: str) -> datetime:
    """Parse an RFC 3339 date-time with an explicit offset into an aware UTC datetime."""
    match = _RFC3339.match(text)
    if not match:
        raise ValueError("must be an RFC 3339 date-time with an offset, "
                         "e.g. 2026-01-31T09:30:00Z")
    date, clock, fraction, offset = match.groups()
    micro = (fraction or "").ljust(6, "0")[:6]
    offset = "+00:00" if offset in ("Z", "z") else offset
    try:
        parsed = datetime.fromisoformat(f"{date}T{clock}.{micro}{offset}")
    except ValueError as exc:
        raise ValueError(f"is not a valid date-time: {exc}") from None
    try:
        return parsed.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00:00+01:00 is in year 0 in UTC
        raise ValueError("is out of range: in UTC it falls outside the years 1-9999") from None


def format_rfc3339(moment: datetime) -> str:
    """UTC, millisecond precision, ``Z`` suffix, four-digit year: ``2026-01-31T09:30:00.000Z``
    (strftime's ``%Y`` writes year 1 as ``1`` on glibc)."""
    utc = moment.astimezone(UTC)
    return (f"{utc.year:04d}-{utc.month:02d}-{utc.day:02d}T{utc.hour:02d}:{utc.minute:02d}:"
            f"{utc.second:02d}.{utc.microsecond // 1000:03d}Z")
