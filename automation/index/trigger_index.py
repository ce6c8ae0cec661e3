"""The in-memory trigger index: every event of the log in order, and the clock, in; fires out.

Pure (no I/O, no asyncio). The runtime feeds :meth:`TriggerIndex.observe` every event in log
order and calls :meth:`TriggerIndex.fire_due` with the (real or virtual) clock; both return
:class:`Fire` objects ordered by fire time, then by workflow priority. What each trigger means is
documented in
:mod:`automation.model.definitions`; how each is kept is in the ``watch_*`` modules, and
which workflows share state in :mod:`automation.index.plan`.

Costs, by design:

* an event of a type no enabled workflow watches: one dict lookup;
* per contact: nothing until a trigger needs to remember something, then one
  :class:`~automation.index.contact_state.ContactState` (a list with one item per stateful watcher)
  and small per-trigger objects (integer microseconds, compact JSON for properties kept until a
  timer fires, ``array('q')`` for count windows); bounded per contact (keys, windows, sends);
* timers: at most one valid heap entry per contact, for its earliest deadline; a deadline that
  moves later costs nothing until the old one surfaces.

Events from browsers (:data:`engine.sources.BROWSER_SOURCES`) reach only the watchers of
triggers that accept them (a second route table, so trusted events pay nothing); anonymous
events (:data:`engine.sources.ANONYMOUS_SOURCES`: the pixel's and the Segment dialect's before
an identify) reach none.

A fire whose deadline passed before an event replaced its state is returned by :meth:`observe`
(with ``at`` = the deadline), so the fires never depend on how often :meth:`fire_due` runs.

:meth:`snapshot` serialises the whole state (pickle + zlib: it is our own data, stored by the
runtime in Postgres) with the layout of stateful watchers; :meth:`restore` and
:meth:`set_workflows` keep the state of every watcher whose state key is unchanged (see
:mod:`automation.index.plan`) and drop the rest.
"""

from __future__ import annotations

import gc
import pickle
import zlib
from collections.abc import Generator, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from operator import itemgetter
from sys import intern
from typing import Any

from automation.index.contact_state import ContactState, ContactTable
from automation.index.plan import build_watchers
from automation.index.types import (
    EPOCH,
    MICROSECOND,
    ContactView,
    Fire,
    IndexEvent,
    from_us,
    to_us,
)
from automation.index.watch_base import Handler, Out, Watcher
from automation.model.definitions import CONTACT_UPDATED_EVENT, Workflow
from engine.sources import ANONYMOUS_SOURCES, BROWSER_SOURCES

__all__ = ["ContactView", "Fire", "IndexEvent", "TriggerIndex"]

_UNTRUSTED_SOURCES = BROWSER_SOURCES | ANONYMOUS_SOURCES

# Format 3: SNAPSHOT_MAGIC, then frames (4-byte length + zlib(pickle)): a header, then pieces
# of contacts and of timers. Format 2 (one zlib(pickle) of everything) is still restored.
SNAPSHOT_FORMAT = 3
SINGLE_PIECE_FORMAT = 2
SNAPSHOT_MAGIC = b"HXI3"
SNAPSHOT_CHUNK = 5000
Layout = list[tuple[str, tuple[Any, ...]]]
_AT_RANK = itemgetter(0, 1)


@contextmanager
def _no_gc() -> Iterator[None]:
    """The cyclic collector off while millions of acyclic objects are made (it would walk them
    all, repeatedly, for nothing)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _frame(value: Any) -> bytes:
    data = zlib.compress(pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL), 1)
    return len(data).to_bytes(4, "big") + data


def _frames(data: memoryview) -> Iterator[Any]:
    offset = 0
    while offset < len(data):
        size = int.from_bytes(data[offset:offset + 4], "big")
        if size <= 0 or offset + 4 + size > len(data):
            raise ValueError("a truncated trigger index snapshot")
        yield pickle.loads(zlib.decompress(data[offset + 4:offset + 4 + size]))
        offset += 4 + size


def _ordered(out: Out) -> list[Fire]:
    """The fires of ``out``'s groups by time, then rank (stable). One group is in that order
    already: its fires share one time and its targets are in rank order."""
    if len(out) == 1:
        return out[0][2]
    flat = [(at, rank, fire) for at, targets, fires in out
            for (rank, _), fire in zip(targets, fires, strict=True)]
    flat.sort(key=_AT_RANK)
    return [fire for _, _, fire in flat]


class TriggerIndex:
    """Trigger state for every contact; see the module docstring.

    ``keep_contacts``: remember each contact's attributes, email and timezone from its
    ``contact_updated`` events for :meth:`contact` (the simulator's guards and templates); the
    live engine, which reads contacts from Postgres, can save that memory."""

    def __init__(self, workflows: Sequence[Workflow], *, keep_contacts: bool = True) -> None:
        self.keep_contacts = keep_contacts
        self.position: int | None = None  # of the last event observed
        self.events_seen = 0
        self.events_used = 0
        self._table = ContactTable()
        self._watchers: list[Watcher] = []
        self._stateful: list[Watcher] = []
        self._timed: list[Watcher] = []
        self._routes: dict[str, tuple[Handler, ...]] = {}
        self._browser_routes: dict[str, tuple[Handler, ...]] = {}
        self._install(workflows)

    # --- inputs ---------------------------------------------------------------------------

    def observe(self, event: IndexEvent) -> list[Fire]:
        """Update the state with one event (in log order); returns the fires it causes."""
        self.events_seen += 1
        position = event.position
        if position is not None:
            self.position = position
        source = event.source
        if source in _UNTRUSTED_SOURCES:
            if source in ANONYMOUS_SOURCES:
                return []
            handlers = self._browser_routes.get(event.type)
        else:
            handlers = self._routes.get(event.type)
        if handlers is None:
            return []
        self.events_used += 1
        t = (event.occurred_at - EPOCH) // MICROSECOND  # to_us(), inlined
        out: Out = []
        for handler in handlers:
            handler(event, t, out)
        return _ordered(out) if out else []

    @property
    def timers_pending(self) -> int:
        """Contacts with a pending timer (O(1))."""
        return self._table.live

    def next_due(self) -> datetime | None:
        """The earliest pending timer, or ``None`` (exact: a contact whose deadline moved later
        is queued again at its new time first)."""
        table = self._table
        while True:
            top = table.peek()
            if top is None:
                return None
            due, contact_id, contact = top
            if self._contact_due(contact) == due:
                return from_us(due)
            table.pop_due(due)
            self._rearm(contact_id, contact)

    def fire_due(self, now: datetime) -> list[Fire]:
        """Evaluate every timer due at or before ``now``, in due order; returns the fires."""
        limit = to_us(now)
        table = self._table
        pop_due = table.pop_due
        timed = self._timed
        fires: list[Fire] = []
        while True:
            popped = pop_due(limit)
            if popped is None:
                return fires
            due, contact_id, contact = popped
            out: Out = []
            soonest = None  # the contact's next due time once this one is done (_rearm's)
            for watcher in timed:
                slot = watcher.slot
                state = contact[slot]
                if state is None:
                    continue
                next_due = watcher.next_due(state)
                if next_due is not None and next_due <= due:
                    state = contact[slot] = watcher.run_due(contact_id, state, due, out)
                    if state is None:
                        continue
                    next_due = watcher.next_due(state)
                if next_due is not None and (soonest is None or next_due < soonest):
                    soonest = next_due
            if out:
                fires.extend(_ordered(out))
            if soonest is not None:
                table.arm(contact_id, contact, soonest)
            elif contact_id in table.contacts:
                table.release(contact_id, contact)

    def _contact_due(self, contact: ContactState) -> int | None:
        dues = [due for watcher in self._timed if contact[watcher.slot] is not None
                for due in (watcher.next_due(contact[watcher.slot]),) if due is not None]
        return min(dues) if dues else None

    def _rearm(self, contact_id: str, contact: ContactState) -> None:
        """Queue a contact whose timer just surfaced at its next due time, or let it go."""
        due = self._contact_due(contact)
        if due is not None:
            self._table.arm(contact_id, contact, due)
        elif contact_id in self._table.contacts:
            self._table.release(contact_id, contact)

    def _see_contact(self, event: IndexEvent, t: int, out: Out) -> None:
        properties = event.properties
        attributes = properties.get("attributes")
        email = properties.get("email")
        timezone = properties.get("timezone")
        contact = self._table.ensure(event.contact_id)
        contact.view = ContactView(attributes if isinstance(attributes, Mapping) else {},
                                   email if isinstance(email, str) else None,
                                   timezone if isinstance(timezone, str) else None)

    def forget(self, contact_id: str) -> bool:
        """Drop every state and timer kept for a contact (it was erased); True if any."""
        return self._table.forget(contact_id)

    # --- queries --------------------------------------------------------------------------

    def contact(self, contact_id: str) -> ContactView | None:
        """The contact as last seen in a ``contact_updated`` event (a copy), or ``None``."""
        contact = self._table.get(contact_id)
        view = None if contact is None else contact.view
        if view is None:
            return None
        return ContactView(dict(view.attributes), view.email, view.timezone)

    def stats(self) -> dict[str, int]:
        """Sizes of the state (walks every contact: O(contacts))."""
        table = self._table
        stats = {"contacts": len(table.contacts), "timers": table.live,
                 "timer_heap": len(table.timers), "watchers": len(self._watchers),
                 "stateful_watchers": len(self._stateful), "events_seen": self.events_seen,
                 "events_used": self.events_used, "interned": len(table.intern),
                 "contact_views": 0}
        for contact in table.contacts.values():
            stats["contact_views"] += contact.view is not None
            for watcher in self._stateful:
                state = contact[watcher.slot]
                if state is not None:
                    watcher.measure(state, stats)
        return stats

    # --- definitions, snapshots -----------------------------------------------------------

    def _install(self, workflows: Sequence[Workflow]) -> Layout:
        """Build the watchers; returns the layout of stateful watchers before."""
        old: Layout = [w.layout for w in self._stateful]
        watchers = build_watchers(workflows, self._table)
        self._watchers = watchers
        self._stateful = [w for w in watchers if w.stateful]
        for slot, watcher in enumerate(self._stateful):
            watcher.slot = slot
        self._timed = [w for w in self._stateful if w.timed]
        self._table.width = len(self._stateful)
        routes: dict[str, list[Handler]] = {}
        browser: dict[str, list[Handler]] = {}
        if self.keep_contacts:
            routes[CONTACT_UPDATED_EVENT] = [self._see_contact]
        for watcher in watchers:
            for event_type, handler in watcher.routes():
                routes.setdefault(event_type, []).append(handler)
                if watcher.accepts_browser:
                    browser.setdefault(event_type, []).append(handler)
        self._routes = {event_type: tuple(handlers) for event_type, handlers in routes.items()}
        self._browser_routes = {event_type: tuple(handlers)
                                for event_type, handlers in browser.items()}
        return old

    def set_workflows(self, workflows: Sequence[Workflow]) -> None:
        """Hot reload: state of watchers whose state key is unchanged is kept, the rest goes."""
        old = self._install(workflows)
        if old == [w.layout for w in self._stateful]:
            return
        table = self._table
        moves = self._moves(old)
        for contact_id, contact in list(table.contacts.items()):
            states = list(contact)
            contact[:] = [None] * table.width
            self._carry(contact_id, contact, states, moves, decode=False)

    def _moves(self, old: Layout) -> list[tuple[int, Watcher, tuple[Any, ...]]]:
        """(old slot, watcher, old member parameters) for every watcher whose state survives."""
        where = {key: (slot, params) for slot, (key, params) in enumerate(old)}
        return [(where[w.key][0], w, where[w.key][1]) for w in self._stateful if w.key in where]

    def _carry(self, contact_id: str, contact: ContactState, states: Sequence[Any],
               moves: list[tuple[int, Watcher, tuple[Any, ...]]], *, decode: bool) -> None:
        """Put a contact's surviving ``states`` (in the old layout) into their new slots, then
        make sure its timer surfaces at its (possibly earlier) next due time."""
        for old_slot, watcher, old_params in moves:
            state = states[old_slot]
            if state is None:
                continue
            if decode:
                state = watcher.load(state)
            if old_params != watcher.params:
                state = watcher.remap(state, old_params)
            contact[watcher.slot] = state
        table = self._table
        if contact.empty():
            if contact_id in table.contacts:
                table.release(contact_id, contact)
            return
        contact_id = intern(contact_id)
        table.contacts[contact_id] = contact
        due = self._contact_due(contact)
        if due is not None:
            table.arm(contact_id, contact, due)

    def snapshot(self) -> bytes:
        """The whole state, pending timers included, as bytes for :meth:`restore`. States are
        written as plain tuples (:meth:`Watcher.dump`), which pickle several times faster than
        objects."""
        return b"".join(self.snapshot_frames())

    def snapshot_frames(self, chunk: int = SNAPSHOT_CHUNK) -> Iterator[bytes]:
        """:meth:`snapshot` in pieces of ``chunk`` contacts (or timers), so a caller can let
        other work run between them. The index must not change until the last piece."""
        table = self._table
        dumps = [watcher.dump for watcher in self._stateful]
        items = list(table.contacts.items())
        timers = table.timers.entries()
        yield SNAPSHOT_MAGIC
        yield _frame({"format": SNAPSHOT_FORMAT, "layout": [w.layout for w in self._stateful],
                      "keep_contacts": self.keep_contacts, "position": self.position,
                      "events": (self.events_seen, self.events_used)})
        for start in range(0, len(items), chunk):
            with _no_gc():
                yield _frame(("contacts", [
                    (contact_id, contact.queued, None if contact.view is None else (
                        contact.view.attributes, contact.view.email, contact.view.timezone),
                     [None if state is None else dump(state)
                      for dump, state in zip(dumps, contact, strict=True)])
                    for contact_id, contact in items[start:start + chunk]]))
        for start in range(0, len(timers), chunk * 4):
            yield _frame(("timers", timers[start:start + chunk * 4]))

    @classmethod
    def restore(cls, data: bytes, workflows: Sequence[Workflow]) -> TriggerIndex:
        """An index from :meth:`snapshot` bytes, for (possibly changed) ``workflows``."""
        steps = cls.restore_steps(data, workflows)
        while True:
            try:
                next(steps)
            except StopIteration as done:
                return done.value

    @classmethod
    def restore_steps(cls, data: bytes, workflows: Sequence[Workflow]
                      ) -> Generator[None, None, TriggerIndex]:
        """:meth:`restore` in steps of one piece each (the generator's value is the index),
        so a caller can let other work run between them."""
        if not data.startswith(SNAPSHOT_MAGIC):
            with _no_gc():
                return cls._restore(data, workflows)  # a single-piece snapshot (format 2)
        frames = _frames(memoryview(data)[len(SNAPSHOT_MAGIC):])
        header = next(frames, None)
        if not isinstance(header, dict) or header.get("format") != SNAPSHOT_FORMAT:
            raise ValueError("not a trigger index snapshot of a known format")
        index = cls(workflows, keep_contacts=header["keep_contacts"])
        index.position = header["position"]
        index.events_seen, index.events_used = header["events"]
        table = index._table
        moves = index._moves(header["layout"])
        timers: list[Any] = []
        for kind, items in frames:
            if kind == "timers":
                timers += [(due, intern(contact_id)) for due, contact_id in items]
                continue
            with _no_gc():
                for contact_id, queued, view, states in items:
                    contact = ContactState(table.width)
                    if view is not None:
                        contact.view = ContactView(*view)
                    contact.queued = queued
                    index._carry(contact_id, contact, states, moves, decode=True)
            yield
        table.timers.extend(timers)  # only now: compaction needs every contact
        table.recount()
        return index

    @classmethod
    def _restore(cls, data: bytes, workflows: Sequence[Workflow]) -> TriggerIndex:
        loaded = pickle.loads(zlib.decompress(data))
        if not isinstance(loaded, dict) or loaded.get("format") != SINGLE_PIECE_FORMAT:
            raise ValueError("not a trigger index snapshot of a known format")
        index = cls(workflows, keep_contacts=loaded["keep_contacts"])
        index.position = loaded["position"]
        index.events_seen, index.events_used = loaded["events"]
        table = index._table
        moves = index._moves(loaded["layout"])
        for contact_id, queued, view, states in loaded["contacts"]:
            contact = ContactState(table.width)
            if view is not None:
                contact.view = ContactView(*view)
            contact.queued = queued
            index._carry(contact_id, contact, states, moves, decode=True)
        table.timers.extend((due, intern(contact_id))  # only now: compaction needs
                            for due, contact_id in loaded["timers"])  # every contact
        table.recount()
        return index
