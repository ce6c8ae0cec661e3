"""Building workflow definitions from a schema-valid document: the checks a schema cannot make.

:class:`WorkflowBuilder` turns one parsed, schema-valid workflow document into
:mod:`automation.model.definitions` objects, checking durations, filters, paths, windows, templates
that exist, unique step ids (explicit, or derived from the position:
``steps[6].branch.cases[0].then[0]``), engagement references to EARLIER send steps, webhook URLs
and headers, and the bounds on steps and nesting. It collects every problem (per step) instead
of stopping at the first. :func:`workflow_version` is the content hash that names a version.
Used by :mod:`automation.loading.loader`, which reads the files and checks across them.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from datetime import timedelta
from typing import Any, cast

from automation.content.templates import TemplateSet
from automation.errors import DefinitionError, key_path
from automation.model import definitions as d
from automation.model.conditions import ENGAGEMENT_EVENTS, excluding_machine
from automation.model.durations import duration_seconds, parse_clock, parse_window
from automation.model.filters import Predicate, compile_filter, compile_value_test, parse_path
from automation.model.goals import NO_GOAL, Goal, GoalChoice
from engine.mailboxes import HeaderError, check_header_value

MAX_STEPS = 300
MAX_DEPTH = 8
MAX_WEBHOOK_TIMEOUT = 60.0
DEFAULT_GOAL_VALUE, DEFAULT_GOAL_WINDOW = "amount", "5d"  # as [stats]'s defaults
MAX_GOAL_WINDOW = 400 * 86400.0
_URL = re.compile(r"^https?://[^\s/?#@]+(?:[/?#]\S*)?$")


def workflow_version(document: Mapping[str, Any]) -> str:
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


class WorkflowBuilder:
    """Builds one workflow from a schema-valid document, collecting problems per step."""

    def __init__(self, templates: TemplateSet) -> None:
        self.templates = templates
        self.problems: list[str] = []
        self.order: dict[str, tuple[int, d.Step | None]] = {}  # step id -> (position, step)
        self.references: list[tuple[str, str, int]] = []  # (where, step id, branch position)

    def collect(self, problem: DefinitionError) -> None:
        self.problems.extend(problem.problems)

    def workflow(self, doc: Mapping[str, Any], source: str) -> d.Workflow | None:
        trigger: d.Trigger | None = None
        reentry = d.Reentry()
        exits: list[d.EventCondition] = []
        try:
            trigger = self.trigger(doc["trigger"], "trigger")
        except DefinitionError as exc:
            self.collect(exc)
        try:
            reentry = self.reentry(doc.get("reentry", "once"), "reentry")
        except DefinitionError as exc:
            self.collect(exc)
        for index, raw in enumerate(doc.get("exit_when", [])):
            try:
                exits.append(self.condition(raw, f"exit_when[{index}]"))
            except DefinitionError as exc:
                self.collect(exc)
        goal: GoalChoice = None
        try:
            goal = self.goal(doc.get("goal"), "goal")
        except DefinitionError as exc:
            self.collect(exc)
        steps = self.steps(doc["steps"], "steps", 0)
        if len(self.order) > MAX_STEPS:
            self.problems.append(f"steps: more than {MAX_STEPS} steps")
        for where, step_id, position in self.references:
            target = self.order.get(step_id)
            if target is None or not isinstance(target[1], d.SendStep):
                self.problems.append(f"{where}: {step_id!r} is not a send step of this workflow")
            elif target[0] > position:
                self.problems.append(f"{where}: {step_id!r} comes after this branch")
        if self.problems or trigger is None:
            return None
        return d.Workflow(
            name=doc["name"], version=workflow_version(doc), source=source, trigger=trigger,
            steps=steps, description=doc.get("description", ""),
            enabled=doc.get("enabled", True), priority=doc.get("priority", 0),
            transactional=doc.get("transactional", False), reentry=reentry,
            requires_consent=doc.get("requires_consent"),
            exit_when=tuple(exits),
            accept_browser_events=doc["trigger"].get("accept_browser_events", False),
            goal=goal)

    def goal(self, raw: Any, where: str) -> GoalChoice:
        """``goal:``: absent (None: [stats]'s goal), ``false`` (no attribution) or
        ``{event, value, window}`` (value defaults to ``amount``, window to 5d)."""
        if raw is None:
            return None
        if raw is False:
            return NO_GOAL
        window = duration_seconds(raw.get("window", DEFAULT_GOAL_WINDOW),
                                  key_path(where, "window"), allow_zero=False)
        if window > MAX_GOAL_WINDOW:
            raise DefinitionError(f"{key_path(where, 'window')}: at most 400d")
        return Goal(raw["event"], raw.get("value", DEFAULT_GOAL_VALUE), timedelta(seconds=window))

    # conditions and triggers

    def condition(self, raw: Mapping[str, Any], where: str, *,
                  correlate: bool = True) -> d.EventCondition:
        event = raw["event"]
        types = frozenset([event] if isinstance(event, str) else event)
        link = None
        if correlate and "correlate" in raw:
            spec = raw["correlate"]
            here = key_path(where, "correlate")
            if isinstance(spec, str):
                link = d.Correlation(parse_path(spec, here),
                                     parse_path(spec, here, allow_wildcard=False))
            else:
                link = d.Correlation(parse_path(spec["property"], key_path(here, "property")),
                                     parse_path(spec["trigger"], key_path(here, "trigger"),
                                                allow_wildcard=False))
        test = compile_filter(raw.get("where"), key_path(where, "where"))
        if types & ENGAGEMENT_EVENTS and not raw.get("include_machine", False):
            test = excluding_machine(test)
        return d.EventCondition(types, test, link)

    def trigger(self, raw: Mapping[str, Any], where: str) -> d.Trigger:
        kind = raw.get("type", "event")

        def at(key: str) -> str:
            return key_path(where, key)
        if kind == "event":
            return d.EventTrigger(self.condition(raw, where, correlate=False))
        if kind == "absence":
            return d.AbsenceTrigger(self.condition(raw, where, correlate=False),
                                    self.condition(raw["missing"], at("missing")),
                                    duration_seconds(raw["within"], at("within"),
                                                     allow_zero=False))
        if kind == "count":
            return d.CountTrigger(
                self.condition(raw, where, correlate=False), raw["at_least"],
                duration_seconds(raw["within"], at("within"), allow_zero=False),
                parse_path(raw["group_by"], at("group_by"), allow_wildcard=False)
                if "group_by" in raw else None,
                self.condition(raw["unless"], at("unless")) if "unless" in raw else None)
        if kind == "inactivity":
            events = raw["events"]
            return d.InactivityTrigger(frozenset([events] if isinstance(events, str) else events),
                                       duration_seconds(raw["for"], at("for"), allow_zero=False))
        if kind == "email_engagement":
            return d.EngagementTrigger(
                raw["action"], raw["workflow"], raw["step"],
                duration_seconds(raw["within"], at("within"), allow_zero=False)
                if "within" in raw else None, raw.get("link"),
                raw.get("include_machine", False))
        if kind == "attribute_change":
            return d.AttributeChangeTrigger(
                raw["attribute"],
                compile_value_test(raw["from"], at("from")) if "from" in raw else None,
                compile_value_test(raw["to"], at("to")) if "to" in raw else None)
        if kind == "segment_entry":
            return d.SegmentEntryTrigger(self.segment(raw["segment"], at("segment")))
        if kind == "date":
            return d.DateTrigger(raw["attribute"], raw.get("anniversary", True),
                                 raw.get("offset_days", 0),
                                 parse_clock(raw.get("at", "09:00"), at("at")))
        if kind == "milestone":
            return d.MilestoneTrigger(
                self.condition(raw, where, correlate=False), float(raw["reaches"]),
                parse_path(raw["sum"], at("sum"), allow_wildcard=False) if "sum" in raw else None)
        raise DefinitionError(f"{at('type')}: unknown trigger type {kind!r}")

    def segment(self, raw: Mapping[str, Any], where: str) -> d.Segment:
        aggregates = []
        for name, spec in raw.get("aggregates", {}).items():
            here = key_path(key_path(where, "aggregates"), name)
            aggregates.append(d.Aggregate(
                name, spec["measure"], self.condition(spec, here, correlate=False),
                parse_path(spec["property"], key_path(here, "property"), allow_wildcard=False)
                if "property" in spec else None,
                duration_seconds(spec["within"], key_path(here, "within"), allow_zero=False)
                if "within" in spec else None))
        condition = compile_filter(raw["condition"], key_path(where, "condition"))
        names = {a.name for a in aggregates}
        for path in sorted(condition.paths):
            head, _, rest = path.partition(".")
            if not rest or head not in ("attributes", "aggregates") or (
                    head == "aggregates" and rest not in names):
                raise DefinitionError(
                    f"{key_path(where, 'condition')}: {path!r} is neither 'attributes.NAME' nor "
                    f"'aggregates.NAME' of a defined aggregate ({', '.join(sorted(names))})")
        return d.Segment(raw["name"], tuple(aggregates), condition)

    def reentry(self, raw: Any, where: str) -> d.Reentry:
        if isinstance(raw, str):
            return d.Reentry(cast(d.ReentryPolicy, raw))
        key = parse_path(raw["key"], key_path(where, "key"), allow_wildcard=False) \
            if "key" in raw else None
        if "once_per" in raw:
            return d.Reentry("once_per", duration_seconds(
                raw["once_per"], key_path(where, "once_per"), allow_zero=False), key)
        return d.Reentry(cast(d.ReentryPolicy, raw["policy"]), None, key)

    # steps

    def steps(self, raw: list[Any], where: str, depth: int) -> tuple[d.Step, ...]:
        if depth > MAX_DEPTH:
            self.problems.append(f"{where}: steps nested deeper than {MAX_DEPTH} levels")
            return ()
        built: list[d.Step] = []
        for index, item in enumerate(raw):
            here = f"{where}[{index}]"
            step_id = item.get("id", here)
            if step_id in self.order:
                self.problems.append(f"{here}.id: duplicate step id {step_id!r}")
            position = len(self.order)
            self.order[step_id] = (position, None)
            try:
                step = self.step(item, here, step_id, position, depth)
            except DefinitionError as exc:
                self.collect(exc)
                continue
            self.order[step_id] = (position, step)
            built.append(step)
        return tuple(built)

    def step(self, raw: Mapping[str, Any], where: str, step_id: str, position: int,
             depth: int) -> d.Step:
        action = next(key for key in raw if key != "id")
        value = raw[action]
        here = key_path(where, action)
        if action == "send":
            spec: Mapping[str, Any] = {"template": value} if isinstance(value, str) else value
            if spec["template"] not in self.templates:
                raise DefinitionError(f"{here}: no template named {spec['template']!r}")
            transactional: bool | None = spec.get("transactional")
            return d.SendStep(step_id, spec["template"], transactional,
                              spec.get("requires_consent"))
        if action == "wait":
            return self.wait(value, here, step_id)
        if action == "wait_for":
            return d.WaitForStep(
                step_id, self.condition(value, here),
                duration_seconds(value["timeout"], key_path(here, "timeout"), allow_zero=False),
                self.steps(value.get("on_event", []), key_path(here, "on_event"), depth + 1),
                self.steps(value.get("on_timeout", []), key_path(here, "on_timeout"), depth + 1))
        if action == "branch":
            return self.branch(value, here, step_id, position, depth)
        if action == "split":
            variants = tuple(
                d.SplitVariant(v["name"], v.get("weight", 1),
                               self.steps(v["steps"], f"{here}.variants[{i}].steps", depth + 1))
                for i, v in enumerate(value["variants"]))
            names = [v.name for v in variants]
            if len(set(names)) != len(names):
                raise DefinitionError(f"{here}.variants: variant names must be unique")
            return d.SplitStep(step_id, variants, float(value.get("holdout", 0)))
        if action == "update_contact":
            return d.UpdateContactStep(step_id, tuple(value.get("set", {}).items()),
                                       tuple(value.get("unset", ())),
                                       tuple(value.get("add_tags", ())),
                                       tuple(value.get("remove_tags", ())))
        if action == "webhook":
            return self.webhook(value, here, step_id)
        reason = value if isinstance(value, str) else (
            value.get("reason", "exit step") if isinstance(value, Mapping) else "exit step")
        return d.ExitStep(step_id, reason)

    def wait(self, value: Any, where: str, step_id: str) -> d.WaitStep:
        if not isinstance(value, Mapping):
            return d.WaitStep(step_id, duration_seconds(value, where))
        window = None
        if "until_time" in value:
            window = parse_window(value["until_time"], value.get("days"),
                                  key_path(where, "until_time"))
        if "after_entry" in value:
            return d.WaitStep(step_id, duration_seconds(
                value["after_entry"], key_path(where, "after_entry")), True, window)
        return d.WaitStep(step_id, duration_seconds(
            value.get("duration", 0), key_path(where, "duration")), False, window)

    def branch(self, value: Mapping[str, Any], where: str, step_id: str, position: int,
               depth: int) -> d.BranchStep:
        event_types: set[str] = set()

        def engagement(kind: str) -> Any:
            def compile_reference(spec: Any, here: str) -> Predicate:
                # ID | [ID...] | {steps: ID | [ID...], include_machine: BOOL}
                key = kind
                if isinstance(spec, Mapping):
                    machine = spec.get("include_machine", False)
                    if "steps" not in spec or not set(spec) <= {"steps", "include_machine"} \
                            or not isinstance(machine, bool):
                        raise DefinitionError(f"{here}: expected {{steps: ID | [ID...], "
                                              "include_machine: true|false}")
                    key = f"{kind}_with_machine" if machine else kind
                    spec, here = spec["steps"], key_path(here, "steps")
                ids = [spec] if isinstance(spec, str) else spec
                if not isinstance(ids, list) or not ids or not all(
                        isinstance(i, str) for i in ids):
                    raise DefinitionError(f"{here}: expected a send step id or a list of them")
                self.references += [(here, i, position) for i in ids]
                wanted = frozenset(ids)
                return lambda context: not wanted.isdisjoint(context.get(key) or ())
            return compile_reference

        def occurred(spec: Any, here: str) -> Predicate:
            if not isinstance(spec, Mapping) or "event" not in spec or not set(spec) <= {
                    "event", "where", "correlate", "include_machine"}:
                raise DefinitionError(f"{here}: expected {{event: TYPE, where: FILTER, "
                                      "correlate: PATH, include_machine: BOOL}")
            event = spec["event"]
            if not (isinstance(event, str) or (isinstance(event, list) and event and all(
                    isinstance(e, str) for e in event))):
                raise DefinitionError(f"{here}.event: expected an event type or a list of them")
            condition = self.condition(spec, here)
            event_types.update(condition.types)
            return lambda context: any(
                condition.matches(t, p, context.get("event")) for t, p in
                context.get("events") or ())

        extensions = {"clicked": engagement("clicked"), "opened": engagement("opened"),
                      "occurred": occurred}
        cases = []
        for index, case in enumerate(value["cases"]):
            here = f"{where}.cases[{index}]"
            condition = compile_filter(case["when"], f"{here}.when", extensions)
            cases.append(d.BranchCase(condition, self.steps(case["then"], f"{here}.then",
                                                            depth + 1)))
        otherwise = self.steps(value.get("else", []), key_path(where, "else"), depth + 1)
        return d.BranchStep(step_id, tuple(cases), otherwise, frozenset(event_types))

    def webhook(self, value: Mapping[str, Any], where: str, step_id: str) -> d.WebhookStep:
        if not _URL.match(value["url"]):
            raise DefinitionError(f"{where}.url: {value['url']!r} is not an http(s) URL")
        headers = []
        for name, text in value.get("headers", {}).items():
            try:
                check_header_value(name, text)
            except HeaderError as exc:
                raise DefinitionError(f"{key_path(key_path(where, 'headers'), name)}: {exc}"
                                      ) from None
            headers.append((name, text))
        timeout = duration_seconds(value.get("timeout", 10), key_path(where, "timeout"),
                                   allow_zero=False)
        if timeout > MAX_WEBHOOK_TIMEOUT:
            raise DefinitionError(f"{where}.timeout: at most {MAX_WEBHOOK_TIMEOUT:g} seconds")
        body = self.templates.compile_json(value["body"], key_path(where, "body")) \
            if "body" in value else None
        return d.WebhookStep(step_id, value["url"], tuple(headers), body, timeout,
                             value.get("retries", 3))
