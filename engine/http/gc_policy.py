"""How an HTTP process keeps Python's cyclic garbage collector off the intake's hot path.

A 500-event request allocates a few thousand containers (the decoded body's dicts, one
``EventIn`` and one row tuple per event), and they live until their batch commits, so many
survive the young collections and are promoted: with CPython's default thresholds (a young
collection every 700 net allocations) a full collection, which walks every object of the
process (~80,000 after start-up, ~75 ms each on the bench machine), ran about once a second
under load, and the collector took ~20 % of the HTTP process's CPU in the batch bench
(docs/PERFORMANCE.md, "Intake: batches of 500", fourth round).

:func:`settle` (once the process has started) moves everything allocated so far out of the
collector's sight with ``gc.freeze()`` (modules, the app, the settings: they live as long as
the process) and raises the young threshold, so a collection walks a larger batch less often.
Reference counting frees the intake's objects (none forms a cycle) as before; only cyclic
garbage waits a little longer. The same thresholds as the automation process
(``automation.live.gc_policy``), so a process running both roles gets one policy.
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 50_000  # CPython's default: 700
OLDER_THRESHOLDS = (20, 10)  # default (10, 10)


def settle() -> None:
    """Freeze what start-up allocated and apply the thresholds (idempotent)."""
    gc.collect()  # start-up's cyclic garbage goes now, not frozen with the rest
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, *OLDER_THRESHOLDS)
