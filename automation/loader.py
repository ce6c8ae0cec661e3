"""Load workflow YAML files: strict YAML, the published JSON Schema, then semantic checks.

``load_workflows(directory, templates)`` reads every ``*.yaml`` / ``*.yml`` file (sorted by name)
and returns the workflows, highest priority first (then by name); or raises one
:class:`DefinitionError` listing EVERY problem as ``FILE: KEY.PATH: message``
(``FILE:LINE:COLUMN: message`` for YAML syntax), e.g.
``config/workflows/welcome.yaml: steps[2].wait.duration: '1 dai' is not a duration (e.g. 30m,
4h, 1d)``.

1. Strict YAML: duplicate keys and aliases are errors, only ``true``/``false`` are booleans
   (``on``/``no`` stay strings), dates stay strings, keys must be strings.
2. The shape is checked against ``automation/workflow_schema.json`` (draft 2020-12, shipped
   with the package, usable by editors).
3. :class:`_Builder` turns the document into :mod:`automation.definitions` objects, checking what
   a schema cannot: durations, filters, paths, windows, templates that exist, unique step ids
   (explicit, or derived from the position: ``steps[6].branch.cases[0].then[0]``), engagement
   references to EARLIER send steps, webhook URLs and headers, and (across files) unique names and
   engagement triggers that name an existing workflow's send step.

A workflow's ``name`` defaults to the file name without extension. Its ``version`` is the first 16
hex digits of SHA-256 over the canonical JSON of the document (sorted keys, no whitespace, name
filled in): stable across formatting and key order, different on any change of content.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, cast

import jsonschema
import yaml

from automation import definitions as d
from automation.durations import duration_seconds, parse_clock, parse_window
from automation.errors import DefinitionError, key_path
from automation.filters import Predicate, compile_filter, compile_value_test, parse_path
from automation.templates import TemplateSet
from engine.addresses import HeaderError, check_header_value

MAX_FILE_BYTES = 256 * 1024
MAX_FILES = 500
MAX_STEPS = 300
MAX_DEPTH = 8
MAX_WEBHOOK_TIMEOUT = 60.0
_URL = re.compile(r"^https?://[^\s/?#@]+(?:[/?#]\S*)?$")


# --- strict YAML --------------------------------------------------------------------------


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader without surprises: no aliases, no duplicate keys, YAML 1.2-like booleans,
    no implicit dates."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            raise yaml.composer.ComposerError(None, None, "aliases (*name) are not allowed",
                                              self.peek_event().start_mark)
        return super().compose_node(parent, index)

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        self.flatten_mapping(node)
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, str) and key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}",
                                                        key_node.start_mark)
            if isinstance(key, str):
                seen.add(key)
        return super().construct_mapping(node, deep)


_StrictLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers
            if tag not in ("tag:yaml.org,2002:bool", "tag:yaml.org,2002:timestamp")]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
    list("tTfF"))


def parse_yaml(text: str, source: str) -> Any:
    try:
        return yaml.load(text, Loader=_StrictLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        raise DefinitionError(f"{where}: {exc.problem or exc.context}") from None
    except yaml.YAMLError as exc:
        raise DefinitionError(f"{source}: {exc}") from None


def _non_string_keys(value: Any, where: str) -> list[str]:
    if isinstance(value, dict):
        found = [f"{where or '(document)'}: key {key!r} must be a string"
                 for key in value if not isinstance(key, str)]
        for key, item in value.items():
            if isinstance(key, str):
                found += _non_string_keys(item, key_path(where, key))
        return found
    if isinstance(value, list):
        return [p for i, item in enumerate(value) for p in _non_string_keys(item, f"{where}[{i}]")]
    return []


# --- schema -------------------------------------------------------------------------------


@cache
def workflow_schema() -> dict[str, Any]:
    """The published JSON Schema of a workflow file."""
    text = resources.files("automation").joinpath("workflow_schema.json").read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


@cache
def _validator() -> jsonschema.protocols.Validator:
    return jsonschema.Draft202012Validator(workflow_schema())


def _error_path(error: jsonschema.ValidationError) -> str:
    path = ""
    for part in error.absolute_path:
        path = key_path(path, part)
    return path or "(document)"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


_WRONG_SHAPE = frozenset({"type", "const", "enum", "required"})


def _plausible_branch(error: jsonschema.ValidationError) -> list[jsonschema.ValidationError]:
    """For a failed anyOf/oneOf: the errors of the one alternative whose shape fits the value
    (no type/const/enum/required failure at its top), or [] when none or several fit."""
    if error.validator not in ("anyOf", "oneOf") or not error.context:
        return []
    branches: dict[Any, list[jsonschema.ValidationError]] = {}
    for sub in error.context:
        branches.setdefault(sub.relative_schema_path[0], []).append(sub)
    fitting = [errors for errors in branches.values()
               if not any(e.validator in _WRONG_SHAPE and not e.relative_path for e in errors)]
    return fitting[0] if len(fitting) == 1 else []


def _error_messages(error: jsonschema.ValidationError) -> list[str]:
    schema = error.schema if isinstance(error.schema, Mapping) else {}
    where = _error_path(error)
    instance = error.instance
    branch = _plausible_branch(error)
    if branch:
        return [message for sub in branch for message in _error_messages(sub)]
    if error.validator == "additionalProperties" and isinstance(instance, Mapping):
        allowed = sorted(schema.get("properties", {}))
        return [f"{key_path(where if where != '(document)' else '', key)}: unknown key "
                f"(allowed: {', '.join(allowed)})"
                for key in instance if key not in schema.get("properties", {})]
    if error.validator == "required" and isinstance(instance, Mapping):
        return [f"{where}: missing required key {key!r}"
                for key in error.validator_value if key not in instance]
    if "x-error" in schema:
        return [f"{where}: " + str(schema["x-error"]).replace("{value}", _short(instance))]
    return [f"{where}: {error.message if len(error.message) <= 200 else error.message[:197]}"]


def schema_problems(document: Any) -> list[str]:
    """Every schema violation of ``document`` as ``KEY.PATH: message``, in document order."""
    problems: list[str] = []
    errors = sorted(_validator().iter_errors(document),
                    key=lambda e: [str(p) for p in e.absolute_path])
    for error in errors:
        for message in _error_messages(error):
            if message not in problems:
                problems.append(message)
    return problems


def workflow_version(document: Mapping[str, Any]) -> str:
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


# --- files --------------------------------------------------------------------------------


def load_workflows(directory: Path, templates: TemplateSet) -> list[d.Workflow]:
    """Every workflow file in ``directory``; :class:`DefinitionError` lists all problems."""
    if not directory.is_dir():
        raise DefinitionError(f"{directory}: workflows directory not found")
    files = sorted(p for p in directory.iterdir()
                   if p.suffix in (".yaml", ".yml") and not p.name.startswith("."))
    if len(files) > MAX_FILES:
        raise DefinitionError(f"{directory}: more than {MAX_FILES} workflow files")
    problems: list[str] = []
    workflows: list[d.Workflow] = []
    for path in files:
        try:
            workflows.append(load_workflow_file(path, templates))
        except DefinitionError as exc:
            problems.extend(exc.problems)
    problems += cross_check(workflows)
    if problems:
        raise DefinitionError(problems)
    return sorted(workflows, key=lambda w: (-w.priority, w.name))


def load_workflow_file(path: Path, templates: TemplateSet) -> d.Workflow:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DefinitionError(f"{path}: cannot read: {exc.strerror}") from None
    if len(data) > MAX_FILE_BYTES:
        raise DefinitionError(f"{path}: larger than {MAX_FILE_BYTES} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise DefinitionError(f"{path}: not UTF-8 text") from None
    return parse_workflow(text, str(path), templates, default_name=path.stem)


def parse_workflow(text: str, source: str, templates: TemplateSet,
                   default_name: str | None = None) -> d.Workflow:
    """One workflow from YAML text; ``source`` prefixes every message."""
    document = parse_yaml(text, source)
    if document is None:
        document = {}
    problems = _non_string_keys(document, "") or schema_problems(document)
    if not problems and "name" not in document:
        if default_name is None or schema_problems({**document, "name": default_name}):
            problems = [f"name: missing, and the file name {default_name!r} is not a valid "
                        "name (lower-case letters, digits, '-', '_')"]
        else:
            document = {"name": default_name, **document}
    if problems:
        raise DefinitionError(f"{source}: {problem}" for problem in problems)
    builder = _Builder(templates)
    workflow = builder.workflow(document, source)
    if builder.problems:
        raise DefinitionError(f"{source}: {problem}" for problem in builder.problems)
    assert workflow is not None
    return workflow


def cross_check(workflows: list[d.Workflow]) -> list[str]:
    """Problems between files: duplicate names, engagement triggers on unknown sends."""
    problems: list[str] = []
    by_name: dict[str, d.Workflow] = {}
    for workflow in workflows:
        if workflow.name in by_name:
            problems.append(f"{workflow.source}: name: {workflow.name!r} is also the name of "
                            f"{by_name[workflow.name].source}")
        by_name.setdefault(workflow.name, workflow)
    for workflow in workflows:
        trigger = workflow.trigger
        if not isinstance(trigger, d.EngagementTrigger):
            continue
        target = by_name.get(trigger.workflow)
        sends = {s.id for s in target.walk() if isinstance(s, d.SendStep)} if target else set()
        if target is None:
            problems.append(f"{workflow.source}: trigger.workflow: no workflow named "
                            f"{trigger.workflow!r}")
        elif trigger.step not in sends:
            problems.append(f"{workflow.source}: trigger.step: {trigger.workflow!r} has no send "
                            f"step {trigger.step!r}")
    return problems


# --- building definitions -------------------------------------------------------------------


class _Builder:
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
            exit_when=tuple(exits))

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
        return d.EventCondition(types, compile_filter(raw.get("where"), key_path(where, "where")),
                                link)

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
                if "within" in raw else None, raw.get("link"))
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
            return d.SendStep(step_id, spec["template"], transactional)
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
                ids = [spec] if isinstance(spec, str) else spec
                if not isinstance(ids, list) or not ids or not all(
                        isinstance(i, str) for i in ids):
                    raise DefinitionError(f"{here}: expected a send step id or a list of them")
                self.references += [(here, i, position) for i in ids]
                wanted = frozenset(ids)
                return lambda context: not wanted.isdisjoint(context.get(kind) or ())
            return compile_reference

        def occurred(spec: Any, here: str) -> Predicate:
            if not isinstance(spec, Mapping) or "event" not in spec or not set(spec) <= {
                    "event", "where", "correlate"}:
                raise DefinitionError(f"{here}: expected {{event: TYPE, where: FILTER, "
                                      "correlate: PATH}")
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
