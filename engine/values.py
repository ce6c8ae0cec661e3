"""Small typed values used in settings: durations, host:port pairs, byte sizes (pure parsing)."""

from __future__ import annotations

import re
from dataclasses import dataclass

# Only 0-9: str.isdigit() also accepts '²' (which int() refuses) and '٣' (which int() reads as 3).
ASCII_DIGITS = re.compile(r"[0-9]+\Z")
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)\s*(ms|s|m|h|d|w)")
_NUMBER = re.compile(r"-?[0-9]+(?:\.[0-9]+)?\Z")  # seconds; no 'inf', 'nan' or exponents
# Longer than anything Herald schedules, and well inside what datetime and timedelta hold.
MAX_DURATION_SECONDS = 100 * 366 * 86400.0
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


def parse_duration(text: str | int | float) -> float:
    """Parse ``"90s"``, ``"5m"``, ``"1h30m"``, ``"4d"`` or a number of seconds into seconds."""
    if isinstance(text, bool):
        raise ValueError("expected a duration like '30s', '5m', '4h' or '2d'")
    if isinstance(text, int | float):
        if not 0 <= text <= MAX_DURATION_SECONDS:  # NaN fails this too
            raise ValueError(f"a duration is 0 to {MAX_DURATION_SECONDS:.0f} seconds")
        return float(text)
    if not isinstance(text, str):
        raise ValueError("expected a duration like '30s', '5m', '4h' or '2d'")
    compact = text.strip().lower().replace(" ", "")
    if not compact:
        raise ValueError("expected a duration like '30s', '5m', '4h' or '2d'")
    if _NUMBER.match(compact):
        return parse_duration(float(compact))
    position = 0
    total = 0.0
    for match in _DURATION_PART.finditer(compact):
        if match.start() != position:
            break
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        position = match.end()
    if position != len(compact):
        raise ValueError(f"{text!r} is not a duration like '30s', '5m', '4h' or '2d'")
    return parse_duration(total)


@dataclass(frozen=True, slots=True)
class HostPort:
    """An address to listen on or connect to."""

    host: str
    port: int

    @classmethod
    def parse(cls, text: str, default_port: int | None = None) -> HostPort:
        text = text.strip()
        if text.startswith("["):  # [::1]:25
            host, sep, rest = text[1:].partition("]")
            if not sep:
                raise ValueError(f"{text!r}: unbalanced '[' in IPv6 address")
            port_text = rest[1:] if rest.startswith(":") else ""
        elif text.count(":") == 1:
            host, _, port_text = text.partition(":")
        else:
            host, port_text = text, ""
        if not host:
            raise ValueError(f"{text!r} has no host; expected HOST:PORT")
        if not port_text:
            if default_port is None:
                raise ValueError(f"{text!r} has no port; expected HOST:PORT")
            return cls(host, default_port)
        if not ASCII_DIGITS.match(port_text) or not 0 <= int(port_text) <= 65535:
            raise ValueError(f"{text!r} has an invalid port; expected HOST:PORT with port 0-65535")
        return cls(host, int(port_text))

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


_SIZE = re.compile(r"^([0-9]+)\s*(b|kb|kib|mb|mib|gb|gib)?$")
_SIZE_FACTOR = {None: 1, "b": 1, "kb": 1000, "kib": 1024, "mb": 10**6, "mib": 1024**2,
                "gb": 10**9, "gib": 1024**3}


def parse_size(text: str | int) -> int:
    """Parse ``"1MiB"``, ``"512kb"`` or a plain number of bytes."""
    if isinstance(text, bool):
        raise ValueError("expected a size like '1MiB' or a number of bytes")
    if isinstance(text, int):
        if text < 0:
            raise ValueError("a size cannot be negative")
        return text
    match = _SIZE.match(text.strip().lower())
    if not match:
        raise ValueError(f"{text!r} is not a size like '1MiB', '512KiB' or a number of bytes")
    return int(match.group(1)) * _SIZE_FACTOR[match.group(2)]
