"""Date triggers: a date attribute's anniversary, or a fixed offset from it, at local time (pure).

The date and the timezone come from ``contact_updated`` events (``attributes`` and ``timezone``,
as :func:`engine.contacts.upsert_contact` logs them). Per contact a :class:`DateState` keeps the
parsed date, the timezone and the next firing instant, computed by
:func:`automation.model.durations.next_date_fire` strictly after the event's time, so a date set at
08:00 on the day itself still fires at 09:00 that day. When the date or the timezone changes the
instant is computed again; an occurrence already due by then fires first. After firing, a yearly
trigger computes next year's instant from scratch in the contact's zone (so DST never shifts the
local time); a one-off trigger forgets the contact.

Fires have trigger type ``date`` and properties ``{"attribute", "value", "date"}`` (``value``:
the stored date, ``date``: the local date of this occurrence); the entry key names that local
date, so the same occurrence is never entered twice, even if the zone changes after it fired.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import date
from typing import Any

from automation.index.contact_state import ContactTable
from automation.index.types import IndexEvent, from_us, to_us
from automation.index.watch_base import Handler, Member, Out, Watcher, all_targets, emit
from automation.model.definitions import CONTACT_UPDATED_EVENT, DateTrigger
from automation.model.durations import next_date_fire, parse_date_value, zone

DATE_TRIGGER = "date"


class DateState:
    __slots__ = ("day", "due", "timezone")

    def __init__(self, day: date, timezone: str | None, due: int) -> None:
        self.day = day
        self.timezone = timezone
        self.due = due


class DateWatcher(Watcher):
    stateful = True
    timed = True

    def __init__(self, key: str, members: Sequence[Member], table: ContactTable,
                 trigger: DateTrigger) -> None:
        super().__init__(key, members, table)
        self.trigger = trigger
        self.targets = all_targets(self.members)

    def routes(self) -> Iterable[tuple[str, Handler]]:
        return [(CONTACT_UPDATED_EVENT, self.on_contact)]

    def next_fire(self, day: date, timezone: str | None, after: int) -> int | None:
        trigger = self.trigger
        fire = next_date_fire(day, yearly=trigger.yearly, offset_days=trigger.offset_days,
                              at=trigger.at, timezone=zone(timezone), after=from_us(after))
        return None if fire is None else to_us(fire)

    def on_contact(self, event: IndexEvent, t: int, out: Out) -> None:
        properties = event.properties
        attributes = properties.get("attributes")
        value = attributes.get(self.trigger.attribute) if isinstance(attributes, Mapping) \
            else None
        day = parse_date_value(value)
        timezone = properties.get("timezone")
        if not isinstance(timezone, str) or not timezone:
            timezone = None
        contact_id = event.contact_id
        state: DateState | None = self.table.state(contact_id, self.slot)
        if state is not None:
            if state.day == day and state.timezone == timezone:
                return
            while state is not None and state.due <= t:  # occurrences due before the change
                state = self.run_due(contact_id, state, state.due, out)
        due = None if day is None else self.next_fire(day, timezone, t)
        if day is None or due is None:
            self.table.put(contact_id, self.slot, None)
            return
        timezone = None if timezone is None else self.table.intern(timezone)
        contact = self.table.put(contact_id, self.slot, DateState(day, timezone, due))
        assert contact is not None
        self.table.arm(contact_id, contact, due)

    def _fire(self, contact_id: str, state: DateState, out: Out) -> None:
        at = from_us(state.due)
        local = at.astimezone(zone(state.timezone)).date().isoformat()
        properties = {"attribute": self.trigger.attribute, "value": state.day.isoformat(),
                      "date": local}
        emit(out, self.targets, contact_id, state.due, at, DATE_TRIGGER, properties, at,
             f"date:{local}")

    def next_due(self, state: DateState) -> int | None:
        return state.due

    def run_due(self, contact_id: str, state: DateState, due: int, out: Out) -> Any:
        if state.due > due:
            return state
        self._fire(contact_id, state, out)
        following = self.next_fire(state.day, state.timezone, state.due)
        if following is None:
            return None
        state.due = following
        return state

    def dump(self, state: DateState) -> Any:
        return state.day.toordinal(), state.timezone, state.due

    def load(self, data: Any) -> Any:
        day, timezone, due = data
        return DateState(date.fromordinal(day), timezone, due)

    def measure(self, state: DateState, stats: dict[str, int]) -> None:
        stats["date_pending"] = stats.get("date_pending", 0) + 1
