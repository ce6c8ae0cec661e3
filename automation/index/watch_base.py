"""What every trigger watcher shares: members, routes, fire emission and state keys (pure).

A *watcher* evaluates one kind of trigger for every workflow whose trigger needs the same state.
Its ``key`` names that state (e.g. absence: the A and B conditions); workflows that differ only
in a parameter (the absence's ``within``, a milestone's threshold, ...) are *members* of the same
watcher, so twenty workflows over the same events keep one state per contact, not twenty. Equal
keys across a reload or a restore mean "the same state": it is kept, and per-member progress
(which members have fired for the current item) is carried over by parameter (:func:`remap_mask`).

Watchers receive events through :meth:`Watcher.routes` (``(event type, handler)`` pairs, so an
event of a type nobody watches costs the index one dict lookup) and, when stateful, keep their
per-contact state in slot :attr:`Watcher.slot` of the :class:`ContactTable`. Fires are appended
to an :data:`Out` list one group per :func:`emit`, as ``(at_us, targets, fires)`` (one fire per
target, in the targets' order, which is rank order); the index orders them by time, then by the
workflow's rank (higher priority first). One group, the common case, is already in that order.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from automation.index.contact_state import ContactTable
from automation.index.types import Fire, IndexEvent, event_ref
from automation.model.definitions import EventCondition

Targets = tuple[tuple[int, str], ...]  # (rank, workflow name), ascending rank
Out = list[tuple[int, Targets, list[Fire]]]
Handler = Callable[[IndexEvent, int, Out], None]
_new_tuple = tuple.__new__


@dataclass(frozen=True, slots=True)
class Member:
    """The workflows (``targets``) that share a watcher with the same parameter ``param``,
    in rank order (:func:`emit` relies on it)."""

    param: Any
    targets: Targets


class Watcher:
    """Base class. Stateless watchers only implement :meth:`routes`."""

    stateful = False
    timed = False
    accepts_browser = False  # whether browser-sourced events reach its handlers

    def __init__(self, key: str, members: Sequence[Member], table: ContactTable) -> None:
        self.key = key
        self.members = tuple(Member(member.param, tuple(sorted(member.targets)))
                             for member in members)
        self.params = tuple(member.param for member in self.members)
        self.table = table
        self.slot = -1

    @property
    def layout(self) -> tuple[str, tuple[Any, ...]]:
        return self.key, self.params

    def routes(self) -> Iterable[tuple[str, Handler]]:
        raise NotImplementedError

    def next_due(self, state: Any) -> int | None:
        """The earliest due time in a contact's state (timed watchers)."""
        return None

    def run_due(self, contact_id: str, state: Any, due: int, out: Out) -> Any:
        """Fire what is due at ``due`` (never later than the state's next due); returns the new
        state (``None``: nothing left)."""
        return state

    def remap(self, state: Any, old_params: tuple[Any, ...]) -> Any:
        """Carry a state kept under other member parameters over to :attr:`params`."""
        return state

    def dump(self, state: Any) -> Any:
        """A contact's state as plain builtins (tuples, ints, strs...) for snapshots: pickle
        takes those several times faster than objects."""
        return state

    def load(self, data: Any) -> Any:
        """The inverse of :meth:`dump`."""
        return data

    def measure(self, state: Any, stats: dict[str, int]) -> None:
        """Add the state's size to ``stats``."""


def emit(out: Out, targets: Targets, contact_id: str, at_us: int, at: datetime,
         trigger_type: str, properties: Mapping[str, Any], trigger_at: datetime,
         entry_key: str) -> None:
    """One fire per target (``targets`` in rank order), as one group of ``out``. The fires are
    made with ``tuple.__new__`` (what :meth:`Fire._make` does, without its Python frame)."""
    out.append((at_us, targets, [
        _new_tuple(Fire, (workflow, contact_id, at, trigger_type, properties, trigger_at,
                          entry_key)) for _, workflow in targets]))


def emit_event(out: Out, targets: Targets, event: IndexEvent, at_us: int, kind: str) -> None:
    """Fires whose trigger event is ``event`` itself, at its time."""
    emit(out, targets, event.contact_id, at_us, event.occurred_at, event.type, event.properties,
         event.occurred_at, f"{kind}:{event_ref(event)}")


def condition_key(condition: EventCondition | None) -> str:
    """A canonical text for an event condition (types, filter source, correlation)."""
    if condition is None:
        return "null"
    link = condition.correlate
    return orjson.dumps([sorted(condition.types), condition.where.spec,
                         None if link is None else [link.property.text, link.trigger.text]],
                        option=orjson.OPT_SORT_KEYS, default=str).decode()


def all_targets(members: Sequence[Member]) -> Targets:
    """Every member's targets, in rank order."""
    return tuple(sorted(target for member in members for target in member.targets))


def full_mask(count: int) -> int:
    return (1 << count) - 1


def remap_mask(mask: int, old_params: Sequence[Hashable], new_params: Sequence[Hashable]
               ) -> int:
    """Per-member "done" bits under new parameters: a member that existed keeps its bit; a new
    member starts done (it does not fire for items that began before it existed)."""
    old_bit = {param: 1 << index for index, param in enumerate(old_params)}
    result = 0
    for index, param in enumerate(new_params):
        bit = old_bit.get(param)
        if bit is None or mask & bit:
            result |= 1 << index
    return result
