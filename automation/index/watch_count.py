"""The count trigger: at least N matching events within a sliding window, per group (pure).

Per contact, a :class:`CountState` holds, for each group value (e.g. a SKU), the times of its
newest matching events: one int, or an ``array('q')`` of at most ``max(at_least)`` microsecond
instants, sorted. An arriving event is inserted, then each member ``(at_least, within)`` fires
when at least ``at_least`` kept instants lie in ``[t - within, t]`` (so the ``at_least``-th
newest is at most ``within`` older) and no correlated ``unless`` event was seen in that window.

``unless`` events record, per correlation value they carry (``items.*.sku``: every SKU in the
cart), the time they were last seen; the check is one lookup with the arriving event's
``trigger`` value. Both maps are flat lists of ``key, value`` pairs (a contact has a handful of
groups: a list costs a third of a dict), pruned of entries older than the longest window
whenever they grow past :data:`PRUNE_AT` pairs, and capped at :data:`MAX_KEYS` (the stalest go
first), so a contact browsing thousands of products stays bounded.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left, bisect_right, insort
from collections.abc import Hashable, Iterable, Sequence
from typing import Any

from automation.index.contact_state import ContactTable
from automation.index.types import IndexEvent, compact_key
from automation.index.watch_base import Handler, Member, Out, Watcher, emit_event
from automation.model.definitions import CountTrigger

PRUNE_AT = 8
MAX_KEYS = 256


class CountState(list[Any]):
    """``[group, times, group, times, ...]``; ``unless``: ``[value, last seen, ...]`` or None."""

    __slots__ = ("unless",)

    def __init__(self) -> None:  # list.__init__ not called: the list is new and empty
        self.unless: list[Any] | None = None


def find(pairs: list[Any], key: Hashable) -> int:
    """The index of ``key`` among the keys (even positions) of a flat pair list, or -1."""
    if key not in pairs:
        return -1  # the common miss, without raising and catching ValueError
    start = 0
    while True:
        try:
            found = pairs.index(key, start)
        except ValueError:
            return -1
        if not found & 1:
            return found
        start = found + 1


class CountWatcher(Watcher):
    """Members' parameter: ``(at_least, within_us)``."""

    stateful = True

    def __init__(self, key: str, members: Sequence[Member], table: ContactTable,
                 trigger: CountTrigger) -> None:
        super().__init__(key, members, table)
        self.trigger = trigger
        self.rules = tuple((int(m.param[0]), int(m.param[1]), m.targets) for m in self.members)
        self.keep = max(rule[0] for rule in self.rules)
        self.horizon = max(rule[1] for rule in self.rules)
        self.where = trigger.condition.where.predicate  # the Filter's own, without its call
        self.group_by = trigger.group_by
        unless = trigger.unless
        self.unless_where = unless.where.predicate if unless is not None else None
        self.unless_link = unless.correlate if unless is not None else None

    def routes(self) -> Iterable[tuple[str, Handler]]:
        routes: list[tuple[str, Handler]] = []
        if self.trigger.unless is not None:
            routes += [(t, self.on_unless) for t in sorted(self.trigger.unless.types)]
        routes += [(t, self.on_event) for t in sorted(self.trigger.condition.types)]
        return routes

    def on_unless(self, event: IndexEvent, t: int, out: Out) -> None:
        properties = event.properties
        assert self.unless_where is not None
        if not self.unless_where(properties):
            return
        link = self.unless_link
        values = [()] if link is None else [compact_key(v) for v in link.property.values(
            properties)]
        keys = [self.table.intern(v) for v in values if v is not None]
        if not keys:
            return
        contact = self.table.ensure(event.contact_id)
        state = contact[self.slot]
        if state is None:
            state = contact[self.slot] = CountState()
        seen = state.unless
        if seen is None:
            seen = state.unless = []
        for key in keys:
            at = find(seen, key)
            if at < 0:
                seen += (key, t)
            elif seen[at + 1] < t:
                seen[at + 1] = t
        if len(seen) > 2 * PRUNE_AT:
            seen[:] = _pruned(seen, t - self.horizon, _itself)

    def on_event(self, event: IndexEvent, t: int, out: Out) -> None:
        properties = event.properties
        if not self.where(properties):
            return
        group_by = self.group_by
        group = () if group_by is None else compact_key(group_by.first(properties))
        if group is None:
            return  # events without the group value are not counted
        contact = self.table.ensure(event.contact_id)
        state = contact[self.slot]
        if state is None:
            state = contact[self.slot] = CountState()
        at = find(state, group)
        if at < 0:  # a group's first time is kept as an int, later ones in an array
            times: Any = t
            state += (self.table.intern(group), t)
            if len(state) > 2 * PRUNE_AT:
                state[:] = _pruned(state, t - self.horizon, _newest)
        else:
            times = state[at + 1]
            if type(times) is int:
                times = state[at + 1] = array("q", (times,))
            insort(times, t)
            if len(times) > self.keep:
                del times[0]
        count = 1 if type(times) is int else len(times)
        for at_least, within, targets in self.rules:
            if count < at_least:
                continue
            start = t - within
            if count > 1 and bisect_right(times, t) - bisect_left(times, start) < at_least:
                continue
            if self._suppressed(state, properties, start, t):
                continue
            emit_event(out, targets, event, t, "count")

    def _suppressed(self, state: CountState, properties: Any, start: int, t: int) -> bool:
        seen = state.unless
        if seen is None:
            return False
        link = self.unless_link
        key = () if link is None else compact_key(link.trigger.first(properties))
        if key is None:
            return False  # nothing to correlate with: no unless event can match
        at = find(seen, key)
        return at >= 0 and start <= seen[at + 1] <= t

    def measure(self, state: CountState, stats: dict[str, int]) -> None:
        stats["window_groups"] = stats.get("window_groups", 0) + len(state) // 2
        stats["window_entries"] = stats.get("window_entries", 0) + sum(
            1 if type(times) is int else len(times) for times in state[1::2])
        stats["unless_keys"] = stats.get("unless_keys", 0) + len(state.unless or ()) // 2


    def dump(self, state: CountState) -> Any:
        pairs = tuple(item if type(item) is not array else tuple(item) for item in state)
        return pairs, None if state.unless is None else tuple(state.unless)

    def load(self, data: Any) -> Any:
        pairs, unless = data
        state = CountState()
        state.extend(array("q", item) if type(item) is tuple and index & 1 else item
                     for index, item in enumerate(pairs))
        state.unless = None if unless is None else list(unless)
        return state


def _itself(last: int) -> int:
    return last


def _newest(times: int | array[int]) -> int:
    return times if type(times) is int else int(times[-1])  # type: ignore[index]


def _pruned(pairs: list[Any], oldest: int, newest_of: Any) -> list[Any]:
    """The pairs last seen at or after ``oldest``; the stalest beyond :data:`MAX_KEYS` go."""
    kept = [(key, value) for key, value in zip(pairs[::2], pairs[1::2], strict=True)
            if newest_of(value) >= oldest]
    if len(kept) > MAX_KEYS:
        kept = sorted(kept, key=lambda pair: newest_of(pair[1]))[len(kept) - MAX_KEYS:]
    return [item for pair in kept for item in pair]
