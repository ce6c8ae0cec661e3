"""Which transitions read the contact's recent events (pure): the run store skips the
recent-events read (:data:`automation.stores.group_sql.RECENT_EVENTS`, the heaviest statement
of a group: every partition of the event log probed per run) for runs that cannot use it.

The recent events reach a program only through :class:`~automation.runtime.interpreter.RunInputs`:

* ``events_since_entry``, ``opened``, ``clicked`` (and their ``_with_machine`` forms): the
  context of a ``Branch`` (any branch counts: its conditions may read them);
* ``recommendations`` (from the product views): the message context of a ``Send`` whose
  template (any part, any layout or partial it extends, includes or imports) names
  ``recommendations``, and of a ``CallWebhook`` whose body template does.

From a run's program counter, :func:`reads_recent_events` follows every path the interpreter
may take until it must pause: a ``WaitFor`` after the first instruction, a ``Wait`` whose
deadline is certainly in the future (a positive delay after now; after entry only for a run
that enters now), an ``Exit`` or the ``End``. A wait with no delay, quiet hours and the first
instruction of a resumed run (its timer or event is what resumes it) are walked through.
Anything it cannot decide (a missing template, an include by a computed name, a template that
does not parse) counts as reading.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import jinja2
from jinja2 import meta

from automation.content.templates import PARTS, TemplateSet
from automation.runtime import program as p

RECOMMENDATIONS = "recommendations"


class EventNeeds:
    """Per program (a workflow version, compiled once) and program counter: does advancing
    a run from there read the recent events? Answers are computed once per version."""

    def __init__(self, templates: TemplateSet) -> None:
        self.templates = templates
        self._programs: dict[tuple[str, str], tuple[tuple[bool, ...], bool]] = {}
        self._templates: dict[str, bool] = {}

    def needed(self, program: p.Program, pc: int, *, entering: bool) -> bool:
        """``entering``: the run starts now at ``pc`` (a new run: entered now, nothing to
        resume); otherwise it is resumed at ``pc`` (a timer, an event, quiet hours over)."""
        key = (program.workflow, program.version)
        known = self._programs.get(key)
        if known is None:
            known = (tuple(self._reads(program, at, entering=False)
                           for at in range(len(program))),
                     self._reads(program, 0, entering=True))
            self._programs[key] = known
        resumed, entered = known
        if entering and pc == 0:
            return entered
        return resumed[pc] if 0 <= pc < len(resumed) else True

    def _reads(self, program: p.Program, pc: int, *, entering: bool) -> bool:
        seen: set[int] = set()
        stack = [(pc, True)]
        while stack:
            at, first = stack.pop()
            if at in seen or not 0 <= at < len(program):
                continue
            seen.add(at)
            instruction = program[at]
            if self._instruction_reads(instruction):
                return True
            stack.extend((target, False) for target in self._next(
                instruction, at, resumed=first and not entering, entering=entering))
        return False

    def _instruction_reads(self, instruction: p.Instruction) -> bool:
        if isinstance(instruction, p.Branch):
            return True
        if isinstance(instruction, p.Send):
            return self.template_reads(instruction.step.template)
        if isinstance(instruction, p.CallWebhook):
            body = instruction.step.body
            return body is not None and any(
                self._source_reads(text) for text in _string_leaves(body.source))
        return False

    @staticmethod
    def _next(instruction: p.Instruction, at: int, *, resumed: bool,
              entering: bool) -> list[int]:
        """Where execution may go on after ``instruction`` without pausing for certain."""
        if isinstance(instruction, p.Exit | p.End):
            return []
        if isinstance(instruction, p.Jump):
            return [instruction.target]
        if isinstance(instruction, p.Branch):
            return [*instruction.targets, instruction.otherwise]
        if isinstance(instruction, p.Split):
            return [*instruction.targets, instruction.holdout]
        if isinstance(instruction, p.WaitFor):
            return [at + 1, instruction.on_timeout] if resumed else []
        if isinstance(instruction, p.Wait) and not resumed:
            step = instruction.step
            # due = max(base + delay, now), then the window (never earlier): a positive delay
            # after now, or after an entry that is now, is a pause
            if step.delay_seconds > 0 and (entering or not step.from_entry):
                return []
        return [at + 1]

    def template_reads(self, name: str) -> bool:
        """A message template (any part, and every template those reach) names
        ``recommendations``; True when that cannot be told."""
        known = self._templates.get(name)
        if known is None:
            if name not in self.templates:
                known = True
            else:
                known = self._files_read([f"{name}/{file}" for file in PARTS.values()
                                          if f"{name}/{file}" in self.templates.sources])
            self._templates[name] = known
        return known

    def _files_read(self, files: list[str | None]) -> bool:
        """Any of the template files (or a file they reach) names ``recommendations``; None
        is a name computed at render time, which could be anything."""
        sources = self.templates.sources
        seen: set[str] = set()
        while files:
            name = files.pop()
            if name is None:
                return True
            if name in seen:
                continue
            seen.add(name)
            source = sources.get(name)
            if source is None or self._names_recommendations(source, files):
                return True
        return False

    def _source_reads(self, text: str) -> bool:
        """A webhook body's string leaf (a template compiled in the same environment)."""
        if "{" not in text:
            return False
        references: list[str | None] = []
        return self._names_recommendations(text, references) or self._files_read(references)

    def _names_recommendations(self, source: str, references: list[str | None]) -> bool:
        """The source names ``recommendations``, or cannot be analysed; otherwise the names
        of the templates it extends, includes or imports are added to ``references``. Parsed
        in the environment the templates were compiled in (its filters and tests known)."""
        try:
            tree = self.templates.environment.parse(source)
            if RECOMMENDATIONS in meta.find_undeclared_variables(tree):
                return True
        except jinja2.TemplateError:  # not parsed or not analysed: may read
            return True
        references.extend(meta.find_referenced_templates(tree))
        return False


def _string_leaves(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for item in value:
            yield from _string_leaves(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _string_leaves(item)
