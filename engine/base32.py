"""Unpadded lower-case base32 (RFC 4648 alphabet), spelled exactly as
``base64.b32encode(data).decode().rstrip("=").lower()`` spells it, at about a third of the cost
(pure). Tokens in links and addresses use it: they are made for every message.

The data are one integer whose 5-bit groups are spread apart into bytes by a few whole-integer
mask-and-shift steps (the halves of each block of groups move apart, as in Morton coding), so
the work is a handful of big-integer operations and one ``bytes.translate`` whatever the length,
instead of a Python loop over the groups."""

from __future__ import annotations

import functools

_ALPHABET = "abcdefghijklmnopqrstuvwxyz234567"
_LETTERS = bytes.maketrans(bytes(range(32)), _ALPHABET.encode())


@functools.lru_cache(maxsize=64)
def _plan(groups: int) -> tuple[int, tuple[tuple[int, int, int], ...]]:
    """For ``groups`` 5-bit groups: the power of two ``size`` >= groups, and the steps (low
    mask, high mask, shift) that move ``size`` packed groups into ``size`` bytes. Each step
    halves the blocks: in every slot of ``8 * block`` bits holding ``block`` packed groups, the
    upper half of the groups moves up by ``3 * block / 2`` bits into a slot of its own."""
    size = 1
    while size < groups:
        size *= 2
    steps = []
    block = size
    while block > 1:
        half = block // 2
        low = (1 << (5 * half)) - 1
        high = ((1 << (5 * block)) - 1) ^ low
        low_mask = high_mask = 0
        for slot in range(size // block):
            low_mask |= low << (8 * block * slot)
            high_mask |= high << (8 * block * slot)
        steps.append((low_mask, high_mask, 3 * half))
        block = half
    return size, tuple(steps)


def b32_lower(data: bytes) -> str:
    bits = len(data) * 8
    groups = (bits + 4) // 5
    number = int.from_bytes(data, "big") << (groups * 5 - bits)
    size, steps = _plan(groups)
    for low_mask, high_mask, shift in steps:
        number = (number & low_mask) | ((number & high_mask) << shift)
    return number.to_bytes(size, "big")[size - groups:].translate(_LETTERS).decode()
