"""MTA-STS records and policies (RFC 8461): parsing and MX matching (pure).

``_mta-sts.DOMAIN`` TXT: exactly one record starting ``v=STSv1`` with an ``id`` (1-32
alphanumerics) makes a policy announcement (§3.1); several, or a malformed one, count as none.
The policy file (§3.2) is ``key: value`` lines: ``version: STSv1``, ``mode`` (enforce, testing,
none), ``max_age`` (seconds, at most a year) and one or more ``mx`` patterns (a leading ``*.``
matches exactly one label, §4.1).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from engine.values import ASCII_DIGITS
from mta.errors import MtaError

StsMode = Literal["enforce", "testing", "none"]
MAX_AGE_LIMIT = 31_557_600  # RFC 8461 §3.2
MAX_MX_PATTERNS = 64
_ID = re.compile(r"^[A-Za-z0-9]{1,32}$")
_FIELD = re.compile(r"^([A-Za-z0-9_]+)\s*:\s*(.*?)\s*$")
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


class StsPolicyInvalid(MtaError):
    """The policy file does not parse (RFC 8460 result type ``sts-policy-invalid``)."""


@dataclass(frozen=True, slots=True)
class StsPolicy:
    policy_id: str
    mode: StsMode
    mx: tuple[str, ...]
    max_age: int
    text: str  # the policy as served, for TLS-RPT's policy-string

    def matches(self, host: str) -> bool:
        return any(mx_matches(pattern, host) for pattern in self.mx)

    @property
    def lines(self) -> list[str]:
        return [line for line in self.text.replace("\r\n", "\n").split("\n") if line.strip()]


def parse_sts_txt(records: Sequence[str]) -> str | None:
    """The policy id announced by the TXT records, or None (no record, several, malformed)."""
    found = [r for r in records if r.startswith("v=STSv1")]
    if len(found) != 1:
        return None
    fields: dict[str, str] = {}
    for part in found[0].split(";"):
        key, _, value = part.strip().partition("=")
        if key:
            fields.setdefault(key.strip(), value.strip())
    if fields.get("v") != "STSv1":
        return None
    policy_id = fields.get("id", "")
    return policy_id if _ID.match(policy_id) else None


def parse_policy(text: str, policy_id: str) -> StsPolicy:
    """The policy file's text; raises StsPolicyInvalid naming what is wrong."""
    values: dict[str, str] = {}
    mx: list[str] = []
    for line in text.replace("\r\n", "\n").split("\n"):
        if not line.strip():
            continue
        match = _FIELD.match(line)
        if match is None:
            raise StsPolicyInvalid(f"not a 'key: value' line: {line[:80]!r}")
        key, value = match.group(1), match.group(2)
        if key == "mx":
            mx.append(value.lower().rstrip("."))
        else:
            values.setdefault(key, value)
    if values.get("version") != "STSv1":
        raise StsPolicyInvalid("version: must be STSv1")
    mode = values.get("mode")
    if mode not in ("enforce", "testing", "none"):
        raise StsPolicyInvalid("mode: must be enforce, testing or none")
    max_age_text = values.get("max_age", "")
    if not ASCII_DIGITS.match(max_age_text) or len(max_age_text) > 10:
        raise StsPolicyInvalid("max_age: must be a number of seconds")
    max_age = min(int(max_age_text), MAX_AGE_LIMIT)
    if mode != "none" and not mx:
        raise StsPolicyInvalid("mx: at least one pattern is required")
    if len(mx) > MAX_MX_PATTERNS or not all(_valid_pattern(p) for p in mx):
        raise StsPolicyInvalid("mx: patterns must be host names, optionally starting with '*.'")
    return StsPolicy(policy_id, mode, tuple(mx), max_age, text)  # type: ignore[arg-type]


def _valid_pattern(pattern: str) -> bool:
    labels = pattern.split(".")
    if labels[0] == "*":
        labels = labels[1:]
    return len(labels) >= 1 and all(_LABEL.match(label) for label in labels)


def mx_matches(pattern: str, host: str) -> bool:
    """RFC 8461 §4.1: exact (case-insensitive), or ``*.`` standing for one leftmost label."""
    pattern = pattern.lower().rstrip(".")
    host = host.lower().rstrip(".")
    if pattern.startswith("*."):
        first, _, rest = host.partition(".")
        return bool(first) and rest == pattern[2:]
    return host == pattern
