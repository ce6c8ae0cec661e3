"""The workflow data model: steps, re-entry and workflows (typed, frozen, pure).

Built by :mod:`automation.loading.loader` from YAML; the runtime reads it. Conditions live in
:mod:`automation.model.conditions` and triggers in
:mod:`automation.model.triggers`; both are re-exported
here, so ``automation.model.definitions`` remains the one import for the whole model. Durations are
float seconds (fields end in ``_seconds``); instants are aware datetimes. "Properties" are an
event's ``properties`` object; filters (``where``) read them directly.
"""

from __future__ import annotations

import hashlib
from collections.abc import Hashable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from automation.content.templates import JsonTemplate
from automation.model.conditions import CLICKED_EVENT as CLICKED_EVENT
from automation.model.conditions import CONTACT_UPDATED_EVENT as CONTACT_UPDATED_EVENT
from automation.model.conditions import OPENED_EVENT as OPENED_EVENT
from automation.model.conditions import Correlation as Correlation
from automation.model.conditions import EventCondition as EventCondition
from automation.model.conditions import scalar_key as scalar_key
from automation.model.durations import LocalWindow, next_in_window, zone
from automation.model.filters import Filter, PropertyPath
from automation.model.goals import GoalChoice
from automation.model.triggers import AbsenceTrigger as AbsenceTrigger
from automation.model.triggers import Aggregate as Aggregate
from automation.model.triggers import AttributeChangeTrigger as AttributeChangeTrigger
from automation.model.triggers import CountTrigger as CountTrigger
from automation.model.triggers import DateTrigger as DateTrigger
from automation.model.triggers import EngagementTrigger as EngagementTrigger
from automation.model.triggers import EventTrigger as EventTrigger
from automation.model.triggers import InactivityTrigger as InactivityTrigger
from automation.model.triggers import MilestoneTrigger as MilestoneTrigger
from automation.model.triggers import Segment as Segment
from automation.model.triggers import SegmentEntryTrigger as SegmentEntryTrigger
from automation.model.triggers import Trigger as Trigger

TAGS_ATTRIBUTE = "tags"
ReentryPolicy = Literal["once", "always", "once_per"]


# --- steps --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SendStep:
    """Render ``template`` and enqueue it; ``transactional`` and ``requires_consent``
    override the workflow's flags."""

    id: str
    template: str
    transactional: bool | None = None
    requires_consent: bool | None = None


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
    the frequency cap. ``requires_consent``: marketing sends go only to contacts whose consent
    is ``opted_in`` (None: ``[privacy] require_consent`` decides). ``accept_browser_events``:
    the trigger also sees events a browser sent
    about an identified contact (the pixel with a contact token); otherwise browser-sourced events
    are invisible to it (anonymous ones are invisible to every trigger)."""

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
    requires_consent: bool | None = None
    exit_when: tuple[EventCondition, ...] = ()
    accept_browser_events: bool = False
    goal: GoalChoice = None  # None: [stats]'s goal; NO_GOAL: no attribution; else its own

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
