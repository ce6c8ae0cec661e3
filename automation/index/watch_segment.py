"""Segment entry, kept current incrementally (pure).

A contact's membership is re-evaluated only when one of its inputs changes: a ``contact_updated``
event that changes an attribute the condition reads, or an event feeding one of the segment's
aggregates. Membership turning from false to true fires, with that event as trigger event; a
contact never evaluated counts as outside.

Per contact a :class:`SegmentState` keeps the membership, the attributes the condition reads
(a projection, not the whole contact), one value per aggregate, and the next instant at which
membership could change with time alone:

* ``count`` / ``sum`` without window: a running float;
* with ``within``: the matching instants (and contributions, for ``sum``), sorted, at most
  :data:`MAX_WINDOW` (the oldest are dropped beyond that); an instant stops counting just after
  ``instant + within``;
* ``days_since``: the latest instant; the condition's numeric operands for that aggregate give
  the instants where ``days_since`` crosses them (``latest + v days``, and one microsecond later
  for strict comparisons).

Those instants become the contact's timer; at each, membership is evaluated again, and entering
fires with trigger type ``segment_entry`` and properties ``{"segment": NAME, "aggregates": {...}}``.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from automation.index.contact_state import ContactTable
from automation.index.types import DAY_US, IndexEvent, duration_us, from_us, iso
from automation.index.watch_base import Handler, Member, Out, Watcher, all_targets, emit, emit_event
from automation.model.definitions import CONTACT_UPDATED_EVENT, Aggregate, Segment

MAX_WINDOW = 1000
SEGMENT_ENTRY = "segment_entry"


class Window:
    __slots__ = ("times", "values")

    def __init__(self, summed: bool) -> None:
        self.times = array("q")
        self.values: array[float] | None = array("d") if summed else None


def _window(data: tuple[Any, ...]) -> Window:
    times, values = data
    window = Window(values is not None)
    window.times.extend(times)
    if window.values is not None:
        window.values.extend(values)
    return window


class SegmentState:
    __slots__ = ("aggregates", "attributes", "check", "member")

    def __init__(self, size: int) -> None:
        self.member = False
        self.attributes: dict[str, Any] | None = None
        self.aggregates: list[Any] | None = [None] * size if size else None
        self.check: int | None = None


def operands(spec: Any) -> dict[str, list[float]]:
    """Numbers each ``aggregates.NAME`` field is compared with, anywhere in a filter spec."""
    found: dict[str, list[float]] = {}

    def numbers(value: Any) -> list[float]:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return [float(value)]
        if isinstance(value, list):
            return [n for item in value for n in numbers(item)]
        if isinstance(value, Mapping):
            return [n for op, item in value.items() if op != "exists" for n in numbers(item)]
        return []

    def walk(node: Any) -> None:
        if not isinstance(node, Mapping):
            return
        for key, value in node.items():
            if key in ("all", "any") and isinstance(value, list):
                for item in value:
                    walk(item)
            elif key == "not":
                walk(value)
            elif isinstance(key, str) and key.startswith("aggregates."):
                found.setdefault(key.split(".")[1], []).extend(numbers(value))
    walk(spec)
    return found


class SegmentWatcher(Watcher):
    stateful = True
    timed = True

    def __init__(self, key: str, members: Sequence[Member], table: ContactTable,
                 segment: Segment) -> None:
        super().__init__(key, members, table)
        self.segment = segment
        self.targets = all_targets(self.members)
        self.attribute_names = tuple(sorted({
            path.split(".")[1] for path in segment.condition.paths
            if path.startswith("attributes.")}))
        self.windows = tuple(None if a.within_seconds is None or a.measure == "days_since"
                             else duration_us(a.within_seconds) for a in segment.aggregates)
        found = operands(segment.condition.spec)
        self.crossings = tuple(sorted({round(v * DAY_US) for v in found.get(a.name, ())})
                               for a in segment.aggregates)
        self.by_type: dict[str, tuple[tuple[int, Aggregate], ...]] = {}
        for index, aggregate in enumerate(segment.aggregates):
            for event_type in aggregate.condition.types:
                self.by_type[event_type] = (*self.by_type.get(event_type, ()),
                                            (index, aggregate))

    def routes(self) -> Iterable[tuple[str, Handler]]:
        routes: list[tuple[str, Handler]] = [(CONTACT_UPDATED_EVENT, self.on_contact)]
        return routes + [(t, self.on_aggregate) for t in sorted(self.by_type)
                         if t != CONTACT_UPDATED_EVENT]

    # inputs

    def on_contact(self, event: IndexEvent, t: int, out: Out) -> None:
        attributes = event.properties.get("attributes")
        if not isinstance(attributes, Mapping):
            attributes = {}
        projection = {name: attributes[name] for name in self.attribute_names
                      if attributes.get(name) is not None} or None
        state = self._before(event.contact_id, t, out)
        changed = state is None or state.attributes != projection
        if state is None:
            state = SegmentState(len(self.segment.aggregates))
        state.attributes = projection
        if CONTACT_UPDATED_EVENT in self.by_type:
            changed = self._add(state, CONTACT_UPDATED_EVENT, event.properties, t) or changed
        if changed:
            self._evaluate(event.contact_id, state, t, out, event)

    def on_aggregate(self, event: IndexEvent, t: int, out: Out) -> None:
        state = self._before(event.contact_id, t, out)
        if state is None:
            state = SegmentState(len(self.segment.aggregates))
        if self._add(state, event.type, event.properties, t):
            self._evaluate(event.contact_id, state, t, out, event)

    def _before(self, contact_id: str, t: int, out: Out) -> SegmentState | None:
        """The contact's state, after any time-based change due by ``t`` was evaluated."""
        state: SegmentState | None = self.table.state(contact_id, self.slot)
        while state is not None and state.check is not None and state.check <= t:
            due, state.check = state.check, None
            self._evaluate(contact_id, state, due, out, None)
        return state

    def _add(self, state: SegmentState, event_type: str, properties: Mapping[str, Any],
             t: int) -> bool:
        added = False
        for index, aggregate in self.by_type.get(event_type, ()):
            if not aggregate.condition.where(properties):
                continue
            assert state.aggregates is not None
            value = state.aggregates[index]
            if aggregate.measure == "days_since":
                state.aggregates[index] = t if value is None or value < t else value
            elif self.windows[index] is None:
                state.aggregates[index] = (value or 0.0) + aggregate.contribution(properties)
            else:
                window = value if value is not None else Window(aggregate.measure == "sum")
                state.aggregates[index] = window
                at = bisect_right(window.times, t)
                window.times.insert(at, t)
                if window.values is not None:
                    window.values.insert(at, aggregate.contribution(properties))
                if len(window.times) > MAX_WINDOW:
                    del window.times[0]
                    if window.values is not None:
                        del window.values[0]
            added = True
        return added

    # evaluation

    def values(self, state: SegmentState, t: int) -> dict[str, float]:
        result: dict[str, float] = {}
        for index, aggregate in enumerate(self.segment.aggregates):
            value = state.aggregates[index] if state.aggregates is not None else None
            if aggregate.measure == "days_since":
                if value is not None:
                    result[aggregate.name] = (t - value) / DAY_US
            elif isinstance(value, Window):
                result[aggregate.name] = self._windowed(value, t, self.windows[index] or 0)
            else:
                result[aggregate.name] = value or 0.0
        return result

    @staticmethod
    def _windowed(window: Window, t: int, within: int) -> float:
        start = bisect_left(window.times, t - within)
        if start:  # instants before every future window: gone for good
            del window.times[:start]
            if window.values is not None:
                del window.values[:start]
        end = bisect_right(window.times, t)
        if window.values is None:
            return float(end)
        return float(sum(window.values[:end]))

    def _evaluate(self, contact_id: str, state: SegmentState, t: int, out: Out,
                  event: IndexEvent | None) -> None:
        values = self.values(state, t)
        member = self.segment.contains(state.attributes or {}, values)
        if member and not state.member:
            if event is not None:
                emit_event(out, self.targets, event, t, "segment")
            else:
                emit(out, self.targets, contact_id, t, from_us(t), SEGMENT_ENTRY,
                     {"segment": self.segment.name, "aggregates": values}, from_us(t),
                     f"segment:{iso(t)}")
        state.member = member
        state.check = self._next_change(state, t)
        contact = self.table.put(contact_id, self.slot, state)
        if contact is not None and state.check is not None:
            self.table.arm(contact_id, contact, state.check)

    def _next_change(self, state: SegmentState, t: int) -> int | None:
        candidates: list[int] = []
        for index, value in enumerate(state.aggregates or ()):
            if isinstance(value, Window) and value.times:
                within = self.windows[index] or 0
                start = bisect_left(value.times, t - within)
                if start < len(value.times) and value.times[start] <= t:
                    candidates.append(value.times[start] + within + 1)
                later = bisect_right(value.times, t)
                if later < len(value.times):
                    candidates.append(value.times[later])
            elif isinstance(value, int) and self.crossings[index]:
                for offset in self.crossings[index]:
                    for due in (value + offset, value + offset + 1):
                        if due > t:
                            candidates.append(due)
                            break
                    else:
                        continue
                    break
        return min(candidates) if candidates else None

    def next_due(self, state: SegmentState) -> int | None:
        return state.check

    def run_due(self, contact_id: str, state: SegmentState, due: int, out: Out) -> Any:
        if state.check is not None and state.check <= due:
            state.check = None
            self._evaluate(contact_id, state, due, out, None)
        return self.table.state(contact_id, self.slot)

    def dump(self, state: SegmentState) -> Any:
        aggregates = None if state.aggregates is None else tuple(
            (tuple(value.times), None if value.values is None else tuple(value.values))
            if isinstance(value, Window) else value for value in state.aggregates)
        return state.member, state.attributes, aggregates, state.check

    def load(self, data: Any) -> Any:
        state = SegmentState(0)
        state.member, state.attributes, aggregates, state.check = data
        if aggregates is not None:
            state.aggregates = [_window(value) if isinstance(value, tuple) else value
                                for value in aggregates]
        return state

    def measure(self, state: SegmentState, stats: dict[str, int]) -> None:
        stats["segment_states"] = stats.get("segment_states", 0) + 1
        stats["segment_members"] = stats.get("segment_members", 0) + state.member
