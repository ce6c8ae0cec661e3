"""The trigger index's timer queue: whatever the pushes, contacts surface in (due, contact id)
order of their queued times, across the near heap and the far buckets, compaction and a
rebuild from snapshot entries."""

from __future__ import annotations

import random

import pytest

from automation.index.contact_state import ContactState, ContactTable
from automation.index.timers import SHIFT

BUCKET = 1 << SHIFT
T0 = 1_772_447_400_000_000  # 2026-03-02T10:30Z in microseconds


def expected_next(table: ContactTable) -> tuple[int, str] | None:
    """The oracle: the earliest (queued, contact id) of every contact with a timer."""
    queued = [(c.queued, cid) for cid, c in table.contacts.items() if c.queued is not None]
    return min(queued) if queued else None


def random_due(rng: random.Random, now: int) -> int:
    return now + rng.choice((0, 1, rng.randrange(BUCKET), rng.randrange(50 * BUCKET)))


@pytest.mark.parametrize("seed", range(6))
def test_contacts_surface_in_due_then_id_order_whatever_the_pushes(seed: int) -> None:
    rng = random.Random(seed)
    table = ContactTable(width=1)
    now = T0
    popped: list[tuple[int, str]] = []
    for _ in range(4000):
        action = rng.random()
        if action < 0.55:  # a watcher sets a due time (arm pushes only earlier ones)
            cid = f"c{rng.randrange(300)}"
            contact = table.ensure(cid)
            contact[0] = True
            table.arm(cid, contact, random_due(rng, now))
        elif action < 0.65:  # a contact is erased: its entry goes stale
            table.forget(f"c{rng.randrange(300)}")
        else:  # the clock moves on and what is due surfaces
            now += rng.choice((0, rng.randrange(BUCKET), rng.randrange(5 * BUCKET)))
            while True:
                want = expected_next(table)
                top = table.pop_due(now)
                if want is None or want[0] > now:
                    assert top is None
                    break
                assert top is not None and top[:2] == want
                popped.append(want)
                if rng.random() < 0.5:  # re-armed later, as a watcher with more to do
                    table.arm(top[1], top[2], random_due(rng, now))
        assert table.live == sum(c.queued is not None for c in table.contacts.values())
    assert popped == sorted(popped, key=lambda entry: entry[0])
    assert len(popped) > 500


def test_compaction_and_a_rebuild_from_entries_keep_exactly_the_valid_timers() -> None:
    rng = random.Random(7)
    table = ContactTable(width=1)
    for n in range(2000):
        cid = f"c{n % 500}"
        contact = table.ensure(cid)
        contact[0] = True
        table.arm(cid, contact, T0 + rng.randrange(40 * BUCKET))
    table.pop_due(T0 + BUCKET)  # a current bucket exists: some entries are near
    for n in range(0, 500, 3):
        table.forget(f"c{n}")
    entries = table.timers.entries()
    table.recount()
    assert len(table.timers) == table.live
    rebuilt = ContactTable(width=1)
    for cid, contact in table.contacts.items():
        copy = rebuilt.contacts[cid] = ContactState(1)
        copy[0], copy.queued = contact[0], contact.queued
    rebuilt.timers.extend(entries)
    rebuilt.recount()
    assert len(rebuilt.timers) == rebuilt.live == table.live
    order = []
    while (top := rebuilt.pop_due(T0 + 100 * BUCKET)) is not None:
        order.append(top[:2])
    assert order == sorted((c.queued, cid) for cid, c in table.contacts.items()
                           if c.queued is not None)
