"""Strict YAML 1.2 for workflow files, on ruamel.yaml (pure).

YAML 1.2's core schema, so ``at: 17:00`` is the string ``"17:00"`` (YAML 1.1 made it the
base-60 integer 1020), ``010`` is ten (1.1: octal 8), and only ``true``/``false`` (any case)
are booleans (``on``/``no`` stay strings). On top of that: duplicate keys and aliases
(``*name``) are errors, dates stay strings, and a ``%YAML 1.1`` directive is refused.
:func:`parse_yaml` turns syntax errors into a :class:`~automation.errors.DefinitionError`
located as ``FILE:LINE:COLUMN``; :func:`non_string_keys` lists the mapping keys that are not
strings (YAML allows them, workflow files do not). Used by :mod:`automation.loading.loader`.
"""

from __future__ import annotations

from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.composer import Composer, ComposerError
from ruamel.yaml.constructor import ConstructorError, SafeConstructor
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.events import AliasEvent, DocumentStartEvent

from automation.errors import DefinitionError, key_path


class _StrictComposer(Composer):
    """No aliases; no YAML version but 1.2."""

    def compose_document(self) -> Any:
        event = self.parser.peek_event()
        if isinstance(event, DocumentStartEvent) and event.version not in (None, (1, 2)):
            version = ".".join(str(part) for part in event.version)
            raise ComposerError(None, None, f"workflow files are YAML 1.2 (found %YAML "
                                f"{version})", event.start_mark)
        return super().compose_document()

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.parser.check_event(AliasEvent):
            raise ComposerError(None, None, "aliases (*name) are not allowed",
                                self.parser.peek_event().start_mark)
        return super().compose_node(parent, index)


class _StrictConstructor(SafeConstructor):
    """Duplicate keys are errors (named plainly); timestamps stay strings."""

    def check_mapping_key(self, node: Any, key_node: Any, mapping: Any, key: Any,
                          value: Any) -> bool:
        if key in mapping:
            raise ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        return True


_StrictConstructor.add_constructor("tag:yaml.org,2002:timestamp",
                                   SafeConstructor.construct_yaml_str)


def _loader() -> YAML:
    yaml = YAML(typ="safe", pure=True)
    yaml.Composer = _StrictComposer
    yaml.Constructor = _StrictConstructor
    return yaml


def parse_yaml(text: str, source: str) -> Any:
    try:
        return _loader().load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        raise DefinitionError(f"{where}: {exc.problem or exc.context}") from None
    except YAMLError as exc:
        raise DefinitionError(f"{source}: {exc}") from None


def non_string_keys(value: Any, where: str) -> list[str]:
    if isinstance(value, dict):
        found = [f"{where or '(document)'}: key {key!r} must be a string"
                 for key in value if not isinstance(key, str)]
        for key, item in value.items():
            if isinstance(key, str):
                found += non_string_keys(item, key_path(where, key))
        return found
    if isinstance(value, list):
        return [p for i, item in enumerate(value) for p in non_string_keys(item, f"{where}[{i}]")]
    return []
