"""How the automation process keeps Python's cyclic garbage collector off its hot path.

The follower allocates a few short-lived objects per event and per fire (fires, decisions,
query results); with the default threshold (a young collection every 700 net allocations) the
collector runs thousands of times a second and each run walks every young object, which is
about a third of the CPU of trigger evaluation. :func:`tune` raises the young threshold
(:mod:`engine.gc_policy`, shared with every serving process), so a collection walks a larger
batch less often (the same objects, fewer passes); the long-lived index is moved out of the
collector's sight with ``gc.freeze()`` after loading and after each snapshot (see
:mod:`automation.live.service`). Reference counting frees everything acyclic as before; only
cycles wait a little longer.
"""

from __future__ import annotations

from engine.gc_policy import OLDER_THRESHOLDS, YOUNG_THRESHOLD, tune

__all__ = ["OLDER_THRESHOLDS", "YOUNG_THRESHOLD", "tune"]
