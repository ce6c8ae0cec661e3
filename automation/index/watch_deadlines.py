"""Deadline triggers: absence (A, then no correlated B) and inactivity (pure).

Both keep the LATEST trigger event (time, type, packed properties) and fire at its time plus each
member's duration, with that event as the trigger event; a ``done`` bit per member records that
it fired (or, for absence, was cancelled). The latest is the newest by time: an event older than
the kept one is ignored (the log may carry late timestamps).

When a newer event replaces an item whose deadline already passed (the runtime fed events faster
than it advanced the clock, e.g. while catching up on the log), the index fires the old item's
due members first, from :meth:`observe`, with their true deadline as ``at``: the fires do not
depend on how often the runtime calls :meth:`fire_due`.

Absence, per correlation key (``missing.correlate.trigger`` of A; one key without correlation):
a B passing ``missing.where`` and correlated with the kept A cancels every member whose window
``[A, A + within)`` contains B's time. A B at the very deadline is too late: the runtime fires
timers due at ``t`` before it feeds events of ``t``, and the index answers the same whichever
comes first (likewise a new A at the old deadline lets the old one fire). A new A replaces the
kept one; if it fails ``condition.where`` the key is dropped (the latest A does not qualify, so
nothing fires). One contact keeps at most :data:`MAX_KEYS` keys (the oldest A goes first); a
single key is stored without a dict.

Inactivity: fires once per quiet period; after every member fired, only the latest time is kept
(an int), so an older event arriving late cannot start a new period.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence
from datetime import datetime
from typing import Any

from automation.index.contact_state import ContactTable
from automation.index.types import IndexEvent, Packed, compact_key, from_us, key_text
from automation.index.types import unpack as unpack_properties
from automation.index.watch_base import Handler, Member, Out, Watcher, emit, full_mask, remap_mask
from automation.model.definitions import AbsenceTrigger, InactivityTrigger

MAX_KEYS = 64


class Kept:
    """A kept trigger event (time, interned type, packed properties) and which members are
    done with it: an inactivity's latest activity, a send awaiting its open. Four slots, no
    key: a million contacts each keep one."""

    __slots__ = ("at", "done", "props", "type")

    def __init__(self, at: int, event_type: str, props: Packed, done: int = 0) -> None:
        self.at = at
        self.type = event_type
        self.props = props
        self.done = done


class Latest(Kept):
    """The latest trigger event of an absence's correlation key."""

    __slots__ = ("key",)

    def __init__(self, key: Hashable, at: int, event_type: str, props: Packed,
                 done: int = 0) -> None:
        super().__init__(at, event_type, props, done)
        self.key = key


class _DeadlineWatcher(Watcher):
    """Members' parameter: the duration in microseconds (sorted ascending)."""

    stateful = True
    timed = True
    kind = ""

    def __init__(self, key: str, members: Sequence[Member], table: ContactTable) -> None:
        super().__init__(key, members, table)
        self.durations = tuple(int(m.param) for m in self.members)
        self.full = full_mask(len(self.members))

    def first_due(self, item: Kept) -> int | None:
        for index, duration in enumerate(self.durations):
            if not item.done >> index & 1:
                return item.at + duration
        return None

    def fire(self, contact_id: str, item: Kept, limit: int, out: Out) -> None:
        """Fire the item's members due at or before ``limit`` that are not done."""
        at = item.at
        durations = self.durations
        due_members = [index for index, duration in enumerate(durations)
                       if at + duration <= limit and not item.done >> index & 1]
        if not due_members:
            return
        properties = unpack_properties(item.props)  # these three are the same for every member
        trigger_at = from_us(at)
        entry_key = self.entry_key(item, trigger_at)
        members = self.members
        for index in due_members:
            item.done |= 1 << index
            due = at + durations[index]
            emit(out, members[index].targets, contact_id, due, from_us(due), item.type,
                 properties, trigger_at, entry_key)

    def entry_key(self, item: Kept, at: datetime) -> str:
        """The fires' entry key; ``at`` is ``from_us(item.at)``."""
        raise NotImplementedError


class AbsenceWatcher(_DeadlineWatcher):
    kind = "absence"

    def __init__(self, key: str, members: Sequence[Member], table: ContactTable,
                 trigger: AbsenceTrigger) -> None:
        super().__init__(key, members, table)
        self.trigger = trigger
        self.link = trigger.missing.correlate
        self.where = trigger.condition.where.predicate  # the Filters' own, without their call
        self.missing_where = trigger.missing.where.predicate

    def routes(self) -> Iterable[tuple[str, Handler]]:
        missing = [(t, self.on_missing) for t in sorted(self.trigger.missing.types)]
        return missing + [(t, self.on_trigger) for t in sorted(self.trigger.condition.types)]

    def entry_key(self, item: Kept, at: datetime) -> str:
        assert isinstance(item, Latest)
        return f"absence:{key_text(item.key)}:{at.isoformat()}"  # isoformat(): iso(item.at)

    # state: one Latest, or a dict key -> Latest

    def on_trigger(self, event: IndexEvent, t: int, out: Out) -> None:
        properties = event.properties
        link = self.link
        key = () if link is None else compact_key(link.trigger.first(properties))
        if key is None:
            return  # an A without the correlation property is ignored
        contact_id = event.contact_id
        state = self.table.state(contact_id, self.slot)
        old = _find(state, key)
        if old is not None:
            if t < old.at:
                return  # older than the latest A of this key
            self.fire(contact_id, old, t, out)
        if not self.where(properties):
            if old is not None:
                self.table.put(contact_id, self.slot, _without(state, key))
            return
        item = Latest(key, t, self.table.intern(event.type), self.table.pack(properties))
        contact = self.table.put(contact_id, self.slot, _with(state, item))
        assert contact is not None
        self.table.arm(contact_id, contact, t + self.durations[0])

    def on_missing(self, event: IndexEvent, t: int, out: Out) -> None:
        contact_id = event.contact_id
        state = self.table.state(contact_id, self.slot)
        if state is None or not self.missing_where(event.properties):
            return
        link = self.link
        keys = [()] if link is None else [compact_key(value) for value in
                                          link.property.values(event.properties)]
        for key in keys:
            item = _find(state, key) if key is not None else None
            if item is None or t < item.at:
                continue  # B before the latest A does not cancel it
            for index, duration in enumerate(self.durations):
                if t < item.at + duration:
                    item.done |= 1 << index
            if item.done == self.full:
                state = _without(state, key)
        self.table.put(contact_id, self.slot, state)

    def next_due(self, state: Any) -> int | None:
        if not isinstance(state, dict):
            return self.first_due(state)  # one key: the common case
        dues = [due for due in map(self.first_due, state.values()) if due is not None]
        return min(dues) if dues else None

    def run_due(self, contact_id: str, state: Any, due: int, out: Out) -> Any:
        for item in list(state.values() if isinstance(state, dict) else (state,)):
            self.fire(contact_id, item, due, out)
            if item.done == self.full:
                state = _without(state, item.key)
        return state

    def remap(self, state: Any, old_params: tuple[Any, ...]) -> Any:
        for item in list(state.values() if isinstance(state, dict) else (state,)):
            item.done = remap_mask(item.done, old_params, self.params)
            if item.done == self.full:
                state = _without(state, item.key)
        return state

    def measure(self, state: Any, stats: dict[str, int]) -> None:
        count = len(state) if isinstance(state, dict) else 1
        stats["absence_pending"] = stats.get("absence_pending", 0) + count

    def dump(self, state: Any) -> Any:
        return tuple((item.key, item.at, item.type, item.props, item.done) for item in (
            state.values() if isinstance(state, dict) else (state,)))

    def load(self, data: Any) -> Any:
        items = [Latest(*row) for row in data]
        return items[0] if len(items) == 1 else {item.key: item for item in items}


def _find(state: Any, key: Hashable) -> Latest | None:
    if state is None:
        return None
    if isinstance(state, dict):
        found: Latest | None = state.get(key)
        return found
    return state if state.key == key else None


def _with(state: Any, item: Latest) -> Any:
    if state is None or (not isinstance(state, dict) and state.key == item.key):
        return item
    if not isinstance(state, dict):
        state = {state.key: state}
    state[item.key] = item
    if len(state) > MAX_KEYS:
        del state[min(state, key=lambda k: state[k].at)]
    return state


def _without(state: Any, key: Hashable) -> Any:
    if state is None:
        return None
    if not isinstance(state, dict):
        return None if state.key == key else state
    state.pop(key, None)
    if len(state) == 1:
        return next(iter(state.values()))
    return state or None


class InactivityWatcher(_DeadlineWatcher):
    kind = "inactivity"

    def __init__(self, key: str, members: Sequence[Member], table: ContactTable,
                 trigger: InactivityTrigger) -> None:
        super().__init__(key, members, table)
        self.types = trigger.types

    def routes(self) -> Iterable[tuple[str, Handler]]:
        return [(t, self.on_activity) for t in sorted(self.types)]

    def entry_key(self, item: Kept, at: datetime) -> str:
        return f"inactivity:{at.isoformat()}"  # isoformat(): iso(item.at)

    # state: a Kept, or the int time of the latest once every member fired

    def on_activity(self, event: IndexEvent, t: int, out: Out) -> None:
        contact_id = event.contact_id
        table = self.table
        contact = table.contacts.get(contact_id)
        state = None if contact is None else contact[self.slot]
        first = self.durations[0]
        if type(state) is Kept:
            if t < state.at:
                return
            if state.at + first <= t:
                self.fire(contact_id, state, t, out)
            state.at, state.type, state.props, state.done = (
                t, table.intern(event.type), table.pack(event.properties), 0)
        else:
            if state is not None and t < state:
                return
            if contact is None:
                contact = table.ensure(contact_id)
            contact[self.slot] = Kept(t, table.intern(event.type), table.pack(event.properties))
        assert contact is not None
        due = t + first
        queued = contact.queued
        if queued is None or due < queued:  # arm's own test: the deadline usually moves later
            table.arm(contact_id, contact, due)

    def next_due(self, state: Any) -> int | None:
        return None if isinstance(state, int) else self.first_due(state)

    def run_due(self, contact_id: str, state: Any, due: int, out: Out) -> Any:
        if isinstance(state, int):
            return state
        self.fire(contact_id, state, due, out)
        return state.at if state.done == self.full else state

    def remap(self, state: Any, old_params: tuple[Any, ...]) -> Any:
        if isinstance(state, int):
            return state
        state.done = remap_mask(state.done, old_params, self.params)
        return state.at if state.done == self.full else state

    def measure(self, state: Any, stats: dict[str, int]) -> None:
        name = "inactivity_quiet" if isinstance(state, int) else "inactivity_pending"
        stats[name] = stats.get(name, 0) + 1

    def dump(self, state: Any) -> Any:
        return state if isinstance(state, int) else (state.at, state.type, state.props,
                                                     state.done)

    def load(self, data: Any) -> Any:
        return data if isinstance(data, int) else Kept(*data)
