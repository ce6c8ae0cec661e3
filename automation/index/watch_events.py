"""Watchers that fire on the arriving event itself: event, attribute change, milestone (pure).

* :class:`EventWatcher`: every event passing the condition fires (no state).
* :class:`AttributeChangeWatcher`: a ``contact_updated`` event whose change passes the trigger's
  from/to tests fires (no state).
* :class:`MilestoneWatcher`: a running count or sum per contact (one float, kept only once some
  event added to it); each member's threshold fires when an event takes the total from below it
  to at least it (again only if the total first falls below it, e.g. through negative amounts).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from automation.index.contact_state import ContactTable
from automation.index.types import IndexEvent
from automation.index.watch_base import Handler, Member, Out, Watcher, all_targets, emit_event
from automation.model.definitions import (
    CONTACT_UPDATED_EVENT,
    AttributeChangeTrigger,
    EventCondition,
    MilestoneTrigger,
)


class EventWatcher(Watcher):
    def __init__(self, key: str, members: Sequence[Member], table: ContactTable,
                 condition: EventCondition) -> None:
        super().__init__(key, members, table)
        self.where = condition.where.predicate  # the Filter's own, without its call
        self.types = condition.types
        self.targets = all_targets(self.members)

    def routes(self) -> Iterable[tuple[str, Handler]]:
        return [(event_type, self.on_event) for event_type in sorted(self.types)]

    def on_event(self, event: IndexEvent, t: int, out: Out) -> None:
        if self.where(event.properties):
            emit_event(out, self.targets, event, t, "event")


class AttributeChangeWatcher(Watcher):
    def __init__(self, key: str, members: Sequence[Member], table: ContactTable,
                 trigger: AttributeChangeTrigger) -> None:
        super().__init__(key, members, table)
        self.trigger = trigger
        self.targets = all_targets(self.members)

    def routes(self) -> Iterable[tuple[str, Handler]]:
        return [(CONTACT_UPDATED_EVENT, self.on_event)]

    def on_event(self, event: IndexEvent, t: int, out: Out) -> None:
        if self.trigger.matches(event.properties):
            emit_event(out, self.targets, event, t, "attribute")


class MilestoneWatcher(Watcher):
    """Members' parameter: the threshold."""

    stateful = True

    def __init__(self, key: str, members: Sequence[Member], table: ContactTable,
                 trigger: MilestoneTrigger) -> None:
        super().__init__(key, members, table)
        self.trigger = trigger
        self.thresholds = tuple((float(m.param), m.targets) for m in self.members)
        self.where = trigger.condition.where.predicate

    def routes(self) -> Iterable[tuple[str, Handler]]:
        return [(event_type, self.on_event) for event_type in sorted(self.trigger.condition.types)]

    def on_event(self, event: IndexEvent, t: int, out: Out) -> None:
        properties = event.properties
        if not self.where(properties):
            return
        increment = self.trigger.increment(properties)
        if increment == 0.0:
            return
        contact = self.table.ensure(event.contact_id)
        before = contact[self.slot]
        if before is None:
            before = 0.0
        after = before + increment
        contact[self.slot] = after
        for threshold, targets in self.thresholds:
            if before < threshold <= after:
                emit_event(out, targets, event, t, "milestone")

    def measure(self, state: Any, stats: dict[str, int]) -> None:
        stats["milestone_totals"] = stats.get("milestone_totals", 0) + 1
