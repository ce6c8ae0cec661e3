"""The published JSON Schema of workflow files and readable messages for its violations.

:func:`workflow_schema` loads ``automation/loading/workflow_schema.json`` (draft 2020-12,
shipped with the package, usable by editors); :func:`schema_problems` validates a document
against it and turns each violation into one ``KEY.PATH: message`` line, in document order:
unknown keys list the allowed ones, missing keys are named, a failed ``anyOf``/``oneOf`` reports
the one alternative whose shape fits, and a schema's ``x-error`` supplies a custom message. Pure
apart from reading the packaged schema once. Used by :mod:`automation.loading.loader`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import cache
from importlib import resources
from typing import Any

import jsonschema

from automation.errors import key_path


@cache
def workflow_schema() -> dict[str, Any]:
    """The published JSON Schema of a workflow file."""
    text = resources.files("automation.loading").joinpath("workflow_schema.json").read_text("utf-8")
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
