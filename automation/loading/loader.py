"""Load workflow YAML files: strict YAML, the published JSON Schema, then semantic checks.

``load_workflows(directory, templates)`` reads every ``*.yaml`` / ``*.yml`` file (sorted by name)
and returns the workflows, highest priority first (then by name); or raises one
:class:`DefinitionError` listing EVERY problem as ``FILE: KEY.PATH: message``
(``FILE:LINE:COLUMN: message`` for YAML syntax), e.g.
``config/workflows/welcome.yaml: steps[2].wait.duration: '1 dai' is not a duration (e.g. 30m,
4h, 1d)``.

1. Strict YAML (:mod:`automation.loading.strict_yaml`): duplicate keys and aliases are errors, only
   ``true``/``false`` are booleans (``on``/``no`` stay strings), dates stay strings, keys
   must be strings.
2. The shape is checked against ``automation/loading/workflow_schema.json`` (draft 2020-12, shipped
   with the package, usable by editors; messages from :mod:`automation.loading.schema`).
3. :class:`~automation.loading.builder.WorkflowBuilder` turns the document into
   :mod:`automation.model.definitions` objects, checking what a schema cannot: durations, filters,
   paths, windows, templates that exist, unique step ids (explicit, or derived from the
   position: ``steps[6].branch.cases[0].then[0]``), engagement references to EARLIER send
   steps, webhook URLs and headers; then (across files, :func:`cross_check`) unique names and
   engagement triggers that name an existing workflow's send step.

A workflow's ``name`` defaults to the file name without extension. Its ``version``
(:func:`~automation.loading.builder.workflow_version`) is the first 16 hex digits of SHA-256 over
the canonical JSON of the document (sorted keys, no whitespace, name filled in): stable across
formatting and key order, different on any change of content.
"""

from __future__ import annotations

from pathlib import Path

from automation.content.templates import TemplateSet
from automation.errors import DefinitionError
from automation.loading.builder import WorkflowBuilder
from automation.loading.schema import schema_problems as schema_problems
from automation.loading.schema import workflow_schema as workflow_schema
from automation.loading.strict_yaml import non_string_keys
from automation.loading.strict_yaml import parse_yaml as parse_yaml
from automation.model import definitions as d

MAX_FILE_BYTES = 256 * 1024
MAX_FILES = 500


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
    problems = non_string_keys(document, "") or schema_problems(document)
    if not problems and "name" not in document:
        if default_name is None or schema_problems({**document, "name": default_name}):
            problems = [f"name: missing, and the file name {default_name!r} is not a valid "
                        "name (lower-case letters, digits, '-', '_')"]
        else:
            document = {"name": default_name, **document}
    if problems:
        raise DefinitionError(f"{source}: {problem}" for problem in problems)
    builder = WorkflowBuilder(templates)
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

