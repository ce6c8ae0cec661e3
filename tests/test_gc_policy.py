"""A serving process keeps what start-up built out of the collector's way."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from engine import gc_policy


@pytest.fixture
def restored_collector() -> Iterator[None]:
    thresholds = gc.get_threshold()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)


def test_settle_collects_start_up_garbage_then_freezes_the_rest(
        restored_collector: None) -> None:
    class Node:
        def __init__(self) -> None:
            self.me = self

    alive = Node()
    garbage = weakref.ref(Node())  # a cycle nobody holds
    gc.unfreeze()
    gc_policy.settle()
    assert garbage() is None  # collected, not frozen for good
    assert gc.get_freeze_count() > 0
    assert alive.me is alive


def test_settle_collects_nothing_while_the_collector_is_off(restored_collector: None) -> None:
    class Node:
        def __init__(self) -> None:
            self.me = self

    garbage = weakref.ref(Node())
    gc.disable()  # as while the automation role builds a piece of its index
    try:
        gc_policy.settle()
    finally:
        gc.enable()
    assert garbage() is not None  # frozen, not walked
    assert gc.get_freeze_count() > 0


def test_tune_raises_the_young_threshold_for_every_role(restored_collector: None) -> None:
    gc_policy.tune()
    assert gc.get_threshold() == (gc_policy.YOUNG_THRESHOLD, *gc_policy.OLDER_THRESHOLDS)
