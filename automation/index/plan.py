"""From workflows to watchers: which triggers share state, and in which order fires come (pure).

Enabled workflows are ranked by priority (highest first), then name; a fire's rank orders fires
of the same instant. Each trigger maps to a watcher kind, a *state key* and a member parameter:

=================  ==========================================  =============================
kind               state key (shared state)                    member parameter
=================  ==========================================  =============================
event              condition                                   (none)
absence            A condition, B condition                    within
count              condition, group_by, unless                 (at_least, within)
inactivity         event types                                 period
milestone          condition, sum_of                           threshold
email_engagement   (workflow, step) of the send                (action, within, link)
attribute_change   the workflow                                (none)
segment_entry      the segment definition                      (none)
date               attribute, anniversary, offset, time        (none)
=================  ==========================================  =============================

Workflows with equal key and parameter become one member (several targets); equal keys share one
watcher. Stateful watchers get the slots of :class:`ContactState` in order of first appearance.
A trigger that accepts browser-sourced events sees other events than one that does not, so
``+browser`` is part of its state key.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from automation.index.contact_state import ContactTable
from automation.index.types import duration_us
from automation.index.watch_base import Member, Watcher, condition_key
from automation.index.watch_count import CountWatcher
from automation.index.watch_date import DateWatcher
from automation.index.watch_deadlines import AbsenceWatcher, InactivityWatcher
from automation.index.watch_engagement import NO_WITHIN, EngagementHub, EngagementWatcher
from automation.index.watch_events import AttributeChangeWatcher, EventWatcher, MilestoneWatcher
from automation.index.watch_segment import SegmentWatcher
from automation.model import definitions as d


def ranked(workflows: Sequence[d.Workflow]) -> list[d.Workflow]:
    """The enabled workflows in fire order: higher priority first, then by name."""
    return sorted((w for w in workflows if w.enabled), key=lambda w: (-w.priority, w.name))


def _text(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS, default=str).decode()


def segment_key(segment: d.Segment) -> str:
    return _text([segment.name, segment.condition.spec, [
        [a.name, a.measure, condition_key(a.condition), a.property and a.property.text,
         a.within_seconds] for a in segment.aggregates]])


def state_key(workflow: d.Workflow) -> tuple[str, Any]:
    """The trigger's (state key, member parameter)."""
    key, param = _trigger_key(workflow)
    return (key + "+browser" if workflow.accept_browser_events else key), param


def _trigger_key(workflow: d.Workflow) -> tuple[str, Any]:
    trigger = workflow.trigger
    if isinstance(trigger, d.EventTrigger):
        return "event:" + condition_key(trigger.condition), None
    if isinstance(trigger, d.AbsenceTrigger):
        return ("absence:" + condition_key(trigger.condition) + condition_key(trigger.missing),
                duration_us(trigger.within_seconds))
    if isinstance(trigger, d.CountTrigger):
        return ("count:" + condition_key(trigger.condition) + condition_key(trigger.unless)
                + _text(trigger.group_by and trigger.group_by.text),
                (trigger.at_least, duration_us(trigger.within_seconds)))
    if isinstance(trigger, d.InactivityTrigger):
        return "inactivity:" + _text(sorted(trigger.types)), duration_us(trigger.period_seconds)
    if isinstance(trigger, d.MilestoneTrigger):
        return ("milestone:" + condition_key(trigger.condition)
                + _text(trigger.sum_of and trigger.sum_of.text), float(trigger.threshold))
    if isinstance(trigger, d.EngagementTrigger):
        within = NO_WITHIN if trigger.within_seconds is None else duration_us(
            trigger.within_seconds)
        # include_machine only extends the parameter when set, so the parameters of existing
        # triggers (and the pending not_opened items of snapshots taken with them) still match.
        return ("engagement:" + _text([trigger.workflow, trigger.step]),
                (trigger.action, within, trigger.link or "")
                + ((True,) if trigger.include_machine else ()))
    if isinstance(trigger, d.AttributeChangeTrigger):
        return f"attribute:{workflow.name}:{workflow.version}", None
    if isinstance(trigger, d.SegmentEntryTrigger):
        return "segment:" + segment_key(trigger.segment), None
    if isinstance(trigger, d.DateTrigger):
        return ("date:" + _text([trigger.attribute, trigger.yearly, trigger.offset_days,
                                 trigger.at.isoformat()]), None)
    raise TypeError(f"unknown trigger {trigger!r}")


def build_watchers(workflows: Sequence[d.Workflow], table: ContactTable) -> list[Watcher]:
    """Watchers for the enabled workflows (stateful ones first, in slot order), the engagement
    hub last."""
    groups: dict[str, tuple[d.Workflow, dict[Any, list[tuple[int, str]]]]] = {}
    for rank, workflow in enumerate(ranked(workflows)):
        key, param = state_key(workflow)
        _, by_param = groups.setdefault(key, (workflow, {}))
        by_param.setdefault(param, []).append((rank, workflow.name))
    watchers: list[Watcher] = []
    engagement: list[EngagementWatcher] = []
    for key, (first, by_param) in groups.items():
        members = [Member(param, tuple(targets)) for param, targets in
                   sorted(by_param.items(), key=lambda item: _order(item[0]))]
        watcher = _watcher(key, members, table, first.trigger)
        watcher.accepts_browser = first.accept_browser_events
        if isinstance(watcher, EngagementWatcher):
            engagement.append(watcher)
        watchers.append(watcher)
    watchers.sort(key=lambda w: not w.stateful)  # stable: slots in order of appearance
    if engagement:
        watchers.append(EngagementHub(engagement, table))
    return watchers


def _order(param: Any) -> Any:
    return (0,) if param is None else (1, param)


def _watcher(key: str, members: list[Member], table: ContactTable,
             trigger: d.Trigger) -> Watcher:
    if isinstance(trigger, d.EventTrigger):
        return EventWatcher(key, members, table, trigger.condition)
    if isinstance(trigger, d.AbsenceTrigger):
        return AbsenceWatcher(key, members, table, trigger)
    if isinstance(trigger, d.CountTrigger):
        return CountWatcher(key, members, table, trigger)
    if isinstance(trigger, d.InactivityTrigger):
        return InactivityWatcher(key, members, table, trigger)
    if isinstance(trigger, d.MilestoneTrigger):
        return MilestoneWatcher(key, members, table, trigger)
    if isinstance(trigger, d.EngagementTrigger):
        return EngagementWatcher(key, members, table, trigger.workflow, trigger.step)
    if isinstance(trigger, d.AttributeChangeTrigger):
        return AttributeChangeWatcher(key, members, table, trigger)
    if isinstance(trigger, d.SegmentEntryTrigger):
        return SegmentWatcher(key, members, table, trigger.segment)
    return DateWatcher(key, members, table, trigger)
