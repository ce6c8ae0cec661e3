"""The workflow data model: conditions, triggers, steps and workflows (typed, frozen, pure).

Built by :mod:`automation.loader` from YAML; the runtime reads it. Conventions:

* Durations are float seconds (fields end in ``_seconds``); instants are aware datetimes.
* "Properties" are an event's ``properties`` object. Filters (``where``) read them directly.
* A *correlation* compares a property of a later event with a property of the run's trigger
  event (for count triggers: the counted event; for absence triggers: the latest event A).
  Correlation values are scalars; :func:`scalar_key` turns one into a type-strict dict key.
* Engagement outcomes arrive as events ``email_opened`` / ``email_clicked`` whose properties
  carry ``workflow`` and ``step`` (the send step's id) and, for clicks, ``url``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Hashable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from fnmatch import fnmatchcase
from typing import Any, Literal

from automation.durations import LocalWindow, next_date_fire, next_in_window, parse_date_value, zone
from automation.filters import Filter, PropertyPath, ValueTest, same_value
from automation.templates import JsonTemplate

OPENED_EVENT = "email_opened"
CLICKED_EVENT = "email_clicked"
CONTACT_UPDATED_EVENT = "contact_updated"
TAGS_ATTRIBUTE = "tags"
ReentryPolicy = Literal["once", "always", "once_per"]


def scalar_key(value: Any) -> Hashable | None:
    """A hashable key for a correlation/group value that keeps JSON types apart (``"1"`` is not
    ``1``, ``true`` is not ``1``; ``1`` is ``1.0``). ``None`` for missing or non-scalar values."""
    if isinstance(value, bool):
        return ("b", value)
    if isinstance(value, int | float):
        return ("n", value)
    if isinstance(value, str):
        return ("s", value)
    return None


# --- conditions ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Correlation:
    """``property`` of the candidate event (may contain ``*``: any element) must equal
    ``trigger`` of the trigger event (a single value)."""

    property: PropertyPath
    trigger: PropertyPath

    def trigger_key(self, trigger_properties: Mapping[str, Any]) -> Hashable | None:
        return scalar_key(self.trigger.first(trigger_properties))

    def matches(self, properties: Mapping[str, Any],
                trigger_properties: Mapping[str, Any]) -> bool:
        wanted = self.trigger.first(trigger_properties)
        if scalar_key(wanted) is None:
            return False  # nothing to correlate with: never matches
        return any(same_value(value, wanted) for value in self.property.values(properties))


@dataclass(frozen=True, slots=True)
class EventCondition:
    """An event of one of ``types`` whose properties pass ``where`` and, when ``correlate`` is
    set, correlate with the trigger event. YAML: ``{event: TYPE | [TYPE...], where: FILTER,
    correlate: PATH | {property: PATH, trigger: PATH}}``."""

    types: frozenset[str]
    where: Filter
    correlate: Correlation | None = None

    def matches(self, event_type: str, properties: Mapping[str, Any],
                trigger_properties: Mapping[str, Any] | None = None) -> bool:
        if event_type not in self.types or not self.where(properties):
            return False
        if self.correlate is None:
            return True
        return trigger_properties is not None and self.correlate.matches(
            properties, trigger_properties)


# --- triggers -----------------------------------------------------------------------------


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
    kind: Literal["email_engagement"] = "email_engagement"

    @property
    def event_type(self) -> str:
        return CLICKED_EVENT if self.action == "clicked" else OPENED_EVENT

    def matches(self, event_type: str, properties: Mapping[str, Any]) -> bool:
        """Whether an engagement event concerns the watched send (the window is the caller's)."""
        if event_type != self.event_type or properties.get("workflow") != self.workflow \
                or properties.get("step") != self.step:
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


# --- steps --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SendStep:
    """Render ``template`` and enqueue it; ``transactional`` overrides the workflow's flag."""

    id: str
    template: str
    transactional: bool | None = None


@dataclass(frozen=True, slots=True)
class WaitStep:
    """Wait ``delay_seconds`` after now (or after run entry, ``from_entry``), then, with a
    ``window``, until the contact's local time is inside it."""

    id: str
    delay_seconds: float = 0.0
    from_entry: bool = False
    window: LocalWindow | None = None

    def due_at(self, now: datetime, entered_at: datetime, timezone: str | None) -> datetime:
        base = (entered_at if self.from_entry else now) + timedelta(seconds=self.delay_seconds)
        base = max(base, now)
        return base if self.window is None else next_in_window(base, self.window, zone(timezone))


@dataclass(frozen=True, slots=True)
class WaitForStep:
    """Wait for an event matching ``condition`` (after the step starts) for at most
    ``timeout_seconds``; continue with ``on_event`` or ``on_timeout``."""

    id: str
    condition: EventCondition
    timeout_seconds: float
    on_event: tuple[Step, ...]
    on_timeout: tuple[Step, ...]


@dataclass(frozen=True, slots=True)
class BranchCase:
    """``condition`` is a filter over the branch context (see :class:`BranchStep`)."""

    condition: Filter
    steps: tuple[Step, ...]


@dataclass(frozen=True, slots=True)
class BranchStep:
    """The first case whose condition holds runs its steps, else ``otherwise``. The runtime
    passes the context ``{"attributes": {...}, "event": trigger properties, "opened": ids,
    "clicked": ids, "events": [(type, properties), ...]}``: ``opened``/``clicked`` hold the send
    step ids of THIS run that were opened/clicked; ``events`` the contact's events since run entry
    (oldest first; only ``event_types`` are needed). Condition keys beyond filters:
    ``clicked: ID | [ID...]`` and ``opened: ...`` (any of them), ``occurred: EVENT CONDITION``."""

    id: str
    cases: tuple[BranchCase, ...]
    otherwise: tuple[Step, ...]
    event_types: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class SplitVariant:
    name: str
    weight: int
    steps: tuple[Step, ...]


@dataclass(frozen=True, slots=True)
class SplitStep:
    """A/B/n: each contact lands, deterministically, in one variant (by weight) or in the
    holdout (``holdout_percent``, which skips the split's variants)."""

    id: str
    variants: tuple[SplitVariant, ...]
    holdout_percent: float = 0.0

    def assign(self, workflow: str, contact_id: str) -> int | None:
        """The variant index for this contact, or ``None`` for the holdout. Uniform in [0, 1)
        from SHA-256 of (workflow, step id, contact id), so it survives edits and restarts."""
        digest = hashlib.sha256(f"{workflow}\0{self.id}\0{contact_id}".encode()).digest()
        point = int.from_bytes(digest[:8], "big") / 2.0**64
        holdout = self.holdout_percent / 100.0
        if point < holdout:
            return None
        point = (point - holdout) / (1.0 - holdout) * sum(v.weight for v in self.variants)
        for index, variant in enumerate(self.variants):
            point -= variant.weight
            if point < 0:
                return index
        return len(self.variants) - 1


@dataclass(frozen=True, slots=True)
class UpdateContactStep:
    """Set/unset attributes and add/remove tags (tags live in the ``tags`` attribute, a list)."""

    id: str
    set_attributes: tuple[tuple[str, Any], ...] = ()
    unset_attributes: tuple[str, ...] = ()
    add_tags: tuple[str, ...] = ()
    remove_tags: tuple[str, ...] = ()

    def apply(self, attributes: Mapping[str, Any]) -> dict[str, Any]:
        """The attributes after this step (a new dict; ``attributes`` is left alone)."""
        result = dict(attributes)
        result.update(self.set_attributes)
        for name in self.unset_attributes:
            result.pop(name, None)
        if self.add_tags or self.remove_tags:
            current = result.get(TAGS_ATTRIBUTE)
            tags = [t for t in current if isinstance(t, str)] if isinstance(current, list) else []
            tags += [t for t in self.add_tags if t not in tags]
            result[TAGS_ATTRIBUTE] = [t for t in tags if t not in self.remove_tags]
        return result


@dataclass(frozen=True, slots=True)
class WebhookStep:
    """POST ``body`` (JSON; string leaves are templates rendered with the message context;
    ``None``: the runtime's standard payload) to ``url`` with ``headers``, waiting at most
    ``timeout_seconds`` per attempt and retrying failures up to ``retries`` times."""

    id: str
    url: str
    headers: tuple[tuple[str, str], ...] = ()
    body: JsonTemplate | None = None
    timeout_seconds: float = 10.0
    retries: int = 3


@dataclass(frozen=True, slots=True)
class ExitStep:
    id: str
    reason: str = "exit step"


Step = (SendStep | WaitStep | WaitForStep | BranchStep | SplitStep | UpdateContactStep
        | WebhookStep | ExitStep)


def nested_steps(step: Step) -> Iterator[tuple[Step, ...]]:
    """The step lists directly inside ``step`` (none for simple steps)."""
    if isinstance(step, WaitForStep):
        yield step.on_event
        yield step.on_timeout
    elif isinstance(step, BranchStep):
        yield from (case.steps for case in step.cases)
        yield step.otherwise
    elif isinstance(step, SplitStep):
        yield from (variant.steps for variant in step.variants)


def walk_steps(steps: tuple[Step, ...]) -> Iterator[Step]:
    """Every step, depth first, in document order."""
    for step in steps:
        yield step
        for inner in nested_steps(step):
            yield from walk_steps(inner)


# --- workflows ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Reentry:
    """Who may start a run. Runs are partitioned by ``key`` (a trigger-event property; one
    partition per contact without it, and trigger events lacking it share the ``None``
    partition). At most one ACTIVE run per (workflow, contact, key) at any time; besides,
    ``once``: never again after a run started; ``once_per``: only when the previous run for that
    key started at least ``period_seconds`` ago; ``always``: whenever none is active."""

    policy: ReentryPolicy = "once"
    period_seconds: float | None = None
    key: PropertyPath | None = None

    def key_of(self, trigger_properties: Mapping[str, Any]) -> Hashable | None:
        return () if self.key is None else scalar_key(self.key.first(trigger_properties))

    def allows(self, *, active: bool, last_started_at: datetime | None, now: datetime) -> bool:
        if active:
            return False
        if last_started_at is None or self.policy == "always":
            return True
        if self.policy == "once":
            return False
        assert self.period_seconds is not None
        return (now - last_started_at).total_seconds() >= self.period_seconds


@dataclass(frozen=True, slots=True)
class Workflow:
    """One workflow file. ``version`` is a content hash of the normalised definition: runs in
    flight keep the version (and program) they started with. Higher ``priority`` is evaluated
    first (and wins under the frequency cap). ``exit_when`` conditions (correlated with the trigger
    event) end a run whenever a matching event arrives. ``transactional`` sends are exempt from
    the frequency cap."""

    name: str
    version: str
    source: str
    trigger: Trigger
    steps: tuple[Step, ...]
    description: str = ""
    enabled: bool = True
    priority: int = 0
    transactional: bool = False
    reentry: Reentry = Reentry()
    exit_when: tuple[EventCondition, ...] = ()

    def walk(self) -> Iterator[Step]:
        return walk_steps(self.steps)

    def step(self, step_id: str) -> Step:
        for step in self.walk():
            if step.id == step_id:
                return step
        raise KeyError(step_id)

    def templates(self) -> frozenset[str]:
        return frozenset(s.template for s in self.walk() if isinstance(s, SendStep))

    def exits_on(self, event_type: str, properties: Mapping[str, Any],
                 trigger_properties: Mapping[str, Any]) -> bool:
        return any(c.matches(event_type, properties, trigger_properties) for c in self.exit_when)

    def event_types(self) -> frozenset[str]:
        """Every event type this workflow reacts to (trigger, exits, waits, branches)."""
        types: set[str] = set()
        trigger = self.trigger
        if isinstance(trigger, EventTrigger | MilestoneTrigger):
            types |= trigger.condition.types
        elif isinstance(trigger, AbsenceTrigger):
            types |= trigger.condition.types | trigger.missing.types
        elif isinstance(trigger, CountTrigger):
            types |= trigger.condition.types | (trigger.unless.types if trigger.unless else set())
        elif isinstance(trigger, InactivityTrigger):
            types |= trigger.types
        elif isinstance(trigger, EngagementTrigger):
            types.add(trigger.event_type)
        elif isinstance(trigger, SegmentEntryTrigger):
            types.add(CONTACT_UPDATED_EVENT)
            for aggregate in trigger.segment.aggregates:
                types |= aggregate.condition.types
        elif isinstance(trigger, AttributeChangeTrigger | DateTrigger):
            types.add(CONTACT_UPDATED_EVENT)
        for condition in self.exit_when:
            types |= condition.types
        for step in self.walk():
            if isinstance(step, WaitForStep):
                types |= step.condition.types
            elif isinstance(step, BranchStep):
                types |= step.event_types
        return frozenset(types)
