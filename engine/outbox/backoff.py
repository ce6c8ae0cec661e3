"""Retry delays: exponential backoff with full jitter (pure)."""

from __future__ import annotations

import random


def full_jitter(attempt: int, base: float, cap: float,
                rng: random.Random | None = None) -> float:
    """Seconds before the next try after ``attempt`` failed tries (1 = the first):
    uniform(0, min(cap, base * 2^(attempt-1)))."""
    ceiling = min(cap, base * 2.0 ** min(max(attempt - 1, 0), 60))
    return (rng or random).uniform(0.0, ceiling)
