"""Workflow triggers: what starts a run, as typed, frozen, pure dataclasses.

One dataclass per trigger kind (event, absence, count, inactivity, email engagement, attribute
change, segment entry, date, milestone) plus the segment model (:class:`Aggregate`,
:class:`Segment`) that segment-entry triggers watch, and the :data:`Trigger` union. Each holds
the pure matching logic for its kind (keys, windows, thresholds); the stateful watching lives in
the ``automation.watch_*`` modules. Built by :mod:`automation.loading.loader`; re-exported by
:mod:`automation.model.definitions`. Durations are float seconds (fields end in ``_seconds``).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from datetime import datetime, time
from fnmatch import fnmatchcase
from typing import Any, Literal

from automation.model.conditions import (
    CLICKED_EVENT,
    OPENED_EVENT,
    EventCondition,
    is_machine,
    scalar_key,
)
from automation.model.durations import next_date_fire, parse_date_value, zone
from automation.model.filters import Filter, PropertyPath, ValueTest


@dataclass(frozen=True, slots=True)
class EventTrigger:
    """Fires on every event matching ``condition``; that event is the trigger event."""

    condition: EventCondition
    kind: Literal["event"] = "event"


@dataclass(frozen=True, slots=True)
class AbsenceTrigger:
    """Event A (``condition``'s types), then no ``missing`` event within ``within_seconds``.

    Per correlation key (``missing.correlate.trigger`` of A; one key per contact without
    correlation) only the LATEST event of A's types counts: each re-arms the deadline to its time
    plus ``within_seconds``. At the deadline the trigger fires, with that latest A as trigger
    event, if A passes ``condition.where`` and no ``missing`` event correlated with it occurred
    since. An A without the correlation property is ignored."""

    condition: EventCondition
    missing: EventCondition
    within_seconds: float
    kind: Literal["absence"] = "absence"

    def key_of(self, properties: Mapping[str, Any]) -> Hashable | None:
        if self.missing.correlate is None:
            return ()
        return self.missing.correlate.trigger_key(properties)


@dataclass(frozen=True, slots=True)
class CountTrigger:
    """At least ``at_least`` events matching ``condition`` within ``within_seconds`` (a sliding
    window ending at the newest), per ``group_by`` value when set (events without it are not
    counted). Evaluated when a matching event arrives: it fires, with that event as trigger event,
    if the ``at_least``-th newest matching event of its group is at most ``within_seconds`` older
    (so keeping the last ``at_least`` times per group suffices) and no ``unless`` event (correlated
    with the arriving event) occurred in the same window (``[t - within, t]``)."""

    condition: EventCondition
    at_least: int
    within_seconds: float
    group_by: PropertyPath | None = None
    unless: EventCondition | None = None
    kind: Literal["count"] = "count"

    def group_key(self, properties: Mapping[str, Any]) -> Hashable | None:
        return () if self.group_by is None else scalar_key(self.group_by.first(properties))


@dataclass(frozen=True, slots=True)
class InactivityTrigger:
    """None of ``types`` for ``period_seconds``, measured from the latest such event (a contact
    with none never fires). Fires once per quiet period, at latest + period, with that latest
    event as trigger event; the next such event re-arms it."""

    types: frozenset[str]
    period_seconds: float
    kind: Literal["inactivity"] = "inactivity"


@dataclass(frozen=True, slots=True)
class EngagementTrigger:
    """The contact ``opened`` / ``clicked`` (a URL matching the glob ``link``, if set) the
    message sent by ``workflow``'s send step ``step`` (within ``within_seconds`` of that send, if
    set), or did ``not_opened`` it within ``within_seconds`` of the send (a timer per send)."""

    action: Literal["opened", "clicked", "not_opened"]
    workflow: str
    step: str
    within_seconds: float | None = None
    link: str | None = None
    include_machine: bool = False  # also opens/clicks flagged machine (proxies, scanners)
    kind: Literal["email_engagement"] = "email_engagement"

    @property
    def event_type(self) -> str:
        return CLICKED_EVENT if self.action == "clicked" else OPENED_EVENT

    def matches(self, event_type: str, properties: Mapping[str, Any]) -> bool:
        """Whether an engagement event concerns the watched send (the window is the caller's)."""
        if event_type != self.event_type or properties.get("workflow") != self.workflow \
                or properties.get("step") != self.step:
            return False
        if not self.include_machine and is_machine(properties):
            return False
        url = properties.get("url")
        return self.link is None or (isinstance(url, str) and fnmatchcase(url, self.link))


@dataclass(frozen=True, slots=True)
class AttributeChangeTrigger:
    """A ``contact_updated`` event listing ``attribute`` in ``changed`` whose previous value passes
    ``from_test`` and new value passes ``to_test`` (each: a value, or filter operators such as
    ``{in: [...]}`` / ``{exists: false}``; ``None`` stands for an absent attribute)."""

    attribute: str
    from_test: ValueTest | None = None
    to_test: ValueTest | None = None
    kind: Literal["attribute_change"] = "attribute_change"

    def matches(self, properties: Mapping[str, Any]) -> bool:
        changed = properties.get("changed")
        if not isinstance(changed, list) or self.attribute not in changed:
            return False
        previous = (properties.get("previous") or {}).get(self.attribute)
        current = (properties.get("attributes") or {}).get(self.attribute)
        return ((self.from_test is None or self.from_test(previous))
                and (self.to_test is None or self.to_test(current)))


@dataclass(frozen=True, slots=True)
class Aggregate:
    """A per-contact number kept incrementally over events matching ``condition``:
    ``count`` (events), ``sum`` (of the numeric ``property``; other values add nothing) or
    ``days_since`` (days since the latest, as a float; missing when there is none). With
    ``within_seconds``, count and sum cover only that sliding window."""

    name: str
    measure: Literal["count", "sum", "days_since"]
    condition: EventCondition
    property: PropertyPath | None = None
    within_seconds: float | None = None

    def contribution(self, properties: Mapping[str, Any]) -> float:
        if self.property is None:
            return 1.0
        value = self.property.first(properties)
        return float(value) if isinstance(value, int | float) and not isinstance(
            value, bool) else 0.0


@dataclass(frozen=True, slots=True)
class Segment:
    """``condition`` over ``{"attributes": {...}, "aggregates": {name: number}}``."""

    name: str
    aggregates: tuple[Aggregate, ...]
    condition: Filter

    @property
    def time_dependent(self) -> bool:
        """Whether membership can change with time alone (windows, ``days_since``)."""
        return any(a.within_seconds is not None or a.measure == "days_since"
                   for a in self.aggregates)

    def contains(self, attributes: Mapping[str, Any], values: Mapping[str, float]) -> bool:
        return self.condition({"attributes": attributes, "aggregates": values})


@dataclass(frozen=True, slots=True)
class SegmentEntryTrigger:
    """Fires when a contact's membership of ``segment`` turns from false to true."""

    segment: Segment
    kind: Literal["segment_entry"] = "segment_entry"


@dataclass(frozen=True, slots=True)
class DateTrigger:
    """At local time ``at`` (contact's timezone) on the date in ``attribute`` plus
    ``offset_days``: every year (``yearly``, an anniversary) or once."""

    attribute: str
    yearly: bool
    offset_days: int
    at: time
    kind: Literal["date"] = "date"

    def next_fire(self, attribute_value: Any, timezone: str | None,
                  after: datetime) -> datetime | None:
        base = parse_date_value(attribute_value)
        if base is None:
            return None
        return next_date_fire(base, yearly=self.yearly, offset_days=self.offset_days, at=self.at,
                              timezone=zone(timezone), after=after)


@dataclass(frozen=True, slots=True)
class MilestoneTrigger:
    """The contact's running count of events matching ``condition`` (or the sum of their numeric
    ``sum_of`` property) goes from below ``threshold`` to at least it; the event that crosses it
    is the trigger event."""

    condition: EventCondition
    threshold: float
    sum_of: PropertyPath | None = None
    kind: Literal["milestone"] = "milestone"

    def increment(self, properties: Mapping[str, Any]) -> float:
        if self.sum_of is None:
            return 1.0
        value = self.sum_of.first(properties)
        return float(value) if isinstance(value, int | float) and not isinstance(
            value, bool) else 0.0

    def crossed(self, before: float, after: float) -> bool:
        return before < self.threshold <= after


Trigger = (EventTrigger | AbsenceTrigger | CountTrigger | InactivityTrigger | EngagementTrigger
           | AttributeChangeTrigger | SegmentEntryTrigger | DateTrigger | MilestoneTrigger)
