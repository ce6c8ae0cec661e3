"""Strict YAML for workflow files: a SafeLoader without surprises (pure).

Duplicate keys and aliases (``*name``) are errors, only ``true``/``false`` (any case) are
booleans (``on``/``no`` stay strings), and dates stay strings. :func:`parse_yaml` turns syntax
errors into a :class:`~automation.errors.DefinitionError` located as ``FILE:LINE:COLUMN``;
:func:`non_string_keys` lists the mapping keys that are not strings (YAML allows them, workflow
files do not). Used by :mod:`automation.loading.loader`.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from automation.errors import DefinitionError, key_path


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
