"""The loaded workflows: current definitions by name, and programs of every version in use."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from automation.content.templates import TemplateSet
from automation.loading.loader import load_workflows, parse_workflow
from automation.model.definitions import Workflow
from automation.runtime.program import Program, compile_program


class Catalog:
    def __init__(self, workflows: Iterable[Workflow], templates: TemplateSet,
                 sources: dict[str, str] | None = None) -> None:
        self.templates = templates
        self.current: dict[str, Workflow] = {}
        self.sources: dict[tuple[str, str], str] = {}
        self._versions: dict[tuple[str, str], tuple[Workflow, Program]] = {}
        for workflow in workflows:
            self.current[workflow.name] = workflow
            self._versions[(workflow.name, workflow.version)] = (workflow,
                                                                 compile_program(workflow))
            if sources and workflow.name in sources:
                self.sources[(workflow.name, workflow.version)] = sources[workflow.name]

    @classmethod
    def load(cls, workflows_dir: Path, templates_dir: Path) -> Catalog:
        templates = TemplateSet.load(templates_dir)
        workflows = load_workflows(workflows_dir, templates)
        sources = {w.name: Path(w.source).read_text(encoding="utf-8") for w in workflows
                   if Path(w.source).is_file()}
        return cls(workflows, templates, sources)

    def version(self, name: str, version: str) -> tuple[Workflow, Program] | None:
        return self._versions.get((name, version))

    def add_version(self, name: str, version: str, source: str) -> tuple[Workflow, Program]:
        """Parse a stored older definition (for runs started before the file changed)."""
        workflow = parse_workflow(source, f"{name}@{version}", self.templates, default_name=name)
        entry = (workflow, compile_program(workflow))
        self._versions[(name, version)] = entry
        return entry

    def ordered(self) -> list[Workflow]:
        """Higher priority first, then by name (the order fires are handled in)."""
        return sorted(self.current.values(), key=lambda w: (-w.priority, w.name))
