"""Event conditions: the shared vocabulary of triggers, waits, branches and exits (pure).

An :class:`EventCondition` selects events by type and ``where`` filter and, optionally, by a
:class:`Correlation` with the run's trigger event (a property of a later event compared with a
property of the trigger event: for count triggers the counted event, for absence triggers the
latest event A). Correlation values are scalars; :func:`scalar_key` turns one into a type-strict
dict key. Also the names of the built-in events: engagement outcomes arrive as ``email_opened`` /
``email_clicked`` (properties ``workflow``, ``step`` and, for clicks, ``url``), attribute changes
as ``contact_updated``. Opens and clicks by mail privacy proxies and link scanners carry
``machine: true``; a condition on engagement events ignores them unless the workflow says
``include_machine: true`` (:func:`excluding_machine`, applied when the condition is built).
Imported by :mod:`automation.model.triggers` and :mod:`automation.model.definitions`.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import Any

from automation.model.filters import Filter, PropertyPath, same_value

OPENED_EVENT = "email_opened"
CLICKED_EVENT = "email_clicked"
ENGAGEMENT_EVENTS = frozenset({OPENED_EVENT, CLICKED_EVENT})
MACHINE_PROPERTY = "machine"
CONTACT_UPDATED_EVENT = "contact_updated"


def is_machine(properties: Mapping[str, Any]) -> bool:
    """An open or click by a privacy proxy or link scanner (recorded, flagged by the MTA)."""
    return properties.get(MACHINE_PROPERTY) is True


def excluding_machine(where: Filter) -> Filter:
    """``where`` and not flagged ``machine: true`` (its spec says so, so conditions that differ
    only in ``include_machine`` never share index state)."""
    inner = where.predicate

    def predicate(properties: Mapping[str, Any]) -> bool:
        return properties.get(MACHINE_PROPERTY) is not True and inner(properties)

    return Filter({"all": [where.spec, {"not": {MACHINE_PROPERTY: True}}]},
                  where.paths | {MACHINE_PROPERTY}, predicate)


def scalar_key(value: Any) -> Hashable | None:
    """A hashable key for a correlation/group value that keeps JSON types apart (``"1"`` is not
    ``1``, ``true`` is not ``1``; ``1`` is ``1.0``). ``None`` for missing or non-scalar values."""
    if isinstance(value, bool):
        return ("b", value)
    if isinstance(value, int | float):
        return ("n", value)
    if isinstance(value, str):
        return ("s", value)
    return None


@dataclass(frozen=True, slots=True)
class Correlation:
    """``property`` of the candidate event (may contain ``*``: any element) must equal
    ``trigger`` of the trigger event (a single value)."""

    property: PropertyPath
    trigger: PropertyPath

    def trigger_key(self, trigger_properties: Mapping[str, Any]) -> Hashable | None:
        return scalar_key(self.trigger.first(trigger_properties))

    def matches(self, properties: Mapping[str, Any],
                trigger_properties: Mapping[str, Any]) -> bool:
        wanted = self.trigger.first(trigger_properties)
        if scalar_key(wanted) is None:
            return False  # nothing to correlate with: never matches
        return any(same_value(value, wanted) for value in self.property.values(properties))


@dataclass(frozen=True, slots=True)
class EventCondition:
    """An event of one of ``types`` whose properties pass ``where`` and, when ``correlate`` is
    set, correlate with the trigger event. YAML: ``{event: TYPE | [TYPE...], where: FILTER,
    correlate: PATH | {property: PATH, trigger: PATH}}``."""

    types: frozenset[str]
    where: Filter
    correlate: Correlation | None = None

    def matches(self, event_type: str, properties: Mapping[str, Any],
                trigger_properties: Mapping[str, Any] | None = None) -> bool:
        if event_type not in self.types or not self.where(properties):
            return False
        if self.correlate is None:
            return True
        return trigger_properties is not None and self.correlate.matches(
            properties, trigger_properties)
