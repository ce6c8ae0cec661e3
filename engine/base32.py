"""Unpadded lower-case base32 (RFC 4648 alphabet), spelled exactly as
``base64.b32encode(data).decode().rstrip("=").lower()`` spells it, at about half the cost (one
integer and a table of two-character groups instead of a loop over five-byte blocks) (pure).
Tokens in links and addresses use it: they are made for every message."""

from __future__ import annotations

_ALPHABET = "abcdefghijklmnopqrstuvwxyz234567"
_PAIRS = [first + second for first in _ALPHABET for second in _ALPHABET]  # 10 bits -> 2 chars


def b32_lower(data: bytes) -> str:
    bits = len(data) * 8
    padding = -bits % 10
    number = int.from_bytes(data, "big") << padding
    top = bits + padding - 10
    pairs = _PAIRS
    text = "".join([pairs[(number >> shift) & 0x3FF] for shift in range(top, -1, -10)])
    return text[:(bits + 4) // 5]
