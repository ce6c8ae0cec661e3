"""Once settled, an HTTP process's start-up objects are out of the collector's sight and young
collections come in larger, rarer batches."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from engine.http import gc_policy


@pytest.fixture
def restored_gc() -> Iterator[None]:
    thresholds = gc.get_threshold()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)


def test_settle_freezes_what_exists_and_raises_the_young_threshold(restored_gc: None) -> None:
    gc.unfreeze()
    long_lived = [[object()] for _ in range(1000)]  # containers: tracked by the collector
    gc_policy.settle()
    assert gc.get_freeze_count() >= len(long_lived)
    assert gc.get_threshold() == (gc_policy.YOUNG_THRESHOLD, *gc_policy.OLDER_THRESHOLDS)
