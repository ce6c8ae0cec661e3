"""The trigger index is saved and restored in pieces that hand the loop back between them
(no forked child), and what comes back is the same index."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

from automation.content.templates import TemplateSet
from automation.index.trigger_index import SNAPSHOT_CHUNK, IndexEvent, TriggerIndex
from automation.live.snapshots import restore_index, serialise_index
from automation.loading.loader import load_workflows

REPO = Path(__file__).resolve().parent.parent
T = TypeVar("T")


async def counting_other_work(work: Awaitable[T]) -> tuple[T, int]:
    """Run ``work`` while another task counts how often the loop let it run."""
    task = asyncio.ensure_future(work)
    ticks = 0
    while not task.done():
        ticks += 1
        await asyncio.sleep(0)
    return await task, ticks


async def test_snapshot_save_and_restore_yield_between_pieces() -> None:
    workflows = load_workflows(REPO / "config/workflows",
                               TemplateSet.load(REPO / "config/templates"))
    index = TriggerIndex(workflows)
    start = datetime(2026, 3, 2, 9, tzinfo=UTC)
    contacts = SNAPSHOT_CHUNK * 2 + 1  # three pieces of contacts
    for n in range(contacts):
        index.observe(IndexEvent(f"c{n}", "cart_updated", {"cart_id": f"A{n}", "items": []},
                                 start + timedelta(seconds=n), position=n + 1))

    data, save_ticks = await counting_other_work(serialise_index(index))
    restored, restore_ticks = await counting_other_work(restore_index(data, workflows))

    assert save_ticks >= 3 and restore_ticks >= 3  # other work ran between the pieces
    assert restored.stats() == {**index.stats(), "interned": 0,
                                "timer_heap": restored.stats()["timers"]}
    assert restored.next_due() == index.next_due()
    assert restored.position == index.position
    assert TriggerIndex.restore(data, workflows).stats() == restored.stats()  # sync wrapper
    later = start + timedelta(days=30)
    fired = sorted((f.workflow, f.contact_id, f.at) for f in index.fire_due(later))
    assert fired and sorted((f.workflow, f.contact_id, f.at)
                            for f in restored.fire_due(later)) == fired
