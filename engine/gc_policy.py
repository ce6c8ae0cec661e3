"""How a serving process keeps Python's cyclic garbage collector off its hot path.

A Herald process imports every module of its roles and builds their long-lived state (routes,
settings, caches, pools) before it serves: a few hundred thousand objects the collector would
walk again in every full collection, although none of them ever becomes garbage. Serving then
allocates short-lived objects that live across an await (an intake request's future and events
wait for their group commit), so the young generation fills and is promoted steadily and full
collections come every few seconds, each tens of milliseconds of CPU on the event loop.

:func:`settle` runs once every role has started: a collection of the young generations (what
start-up left as garbage lately), then ``gc.freeze()`` moves everything still alive into the
permanent generation, which no collection walks. Never a full collection there: the automation
role may be restoring its index (millions of objects) at that moment, with the collector off
while it builds a piece; then nothing is collected, only frozen. :func:`tune` raises the young
threshold so a young collection walks a larger batch less often. Reference counting frees
everything acyclic as before; only cycles wait a little longer.

The automation role needs the thresholds most: its follower allocates a few short-lived
objects per event and per fire, and with the default threshold (a young collection every 700
net allocations) the collector took about a third of the CPU of trigger evaluation. It applies
:func:`tune` when it starts (so do the benches that measure it) and freezes its long-lived
index after loading and after each snapshot (:mod:`automation.live.service`).
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 50_000  # CPython's default: 700
OLDER_THRESHOLDS = (20, 10)  # default (10, 10)


def tune() -> None:
    """Apply the thresholds to this process (idempotent)."""
    gc.set_threshold(YOUNG_THRESHOLD, *OLDER_THRESHOLDS)


def settle() -> None:
    """Collect start-up's recent garbage, then keep what is left out of every later
    collection (freezing is a list splice: it costs nothing however large the heap)."""
    if gc.isenabled():
        gc.collect(1)
    gc.freeze()
