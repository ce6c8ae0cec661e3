"""Email engagement triggers: opened, clicked (a link), not opened within T of a send (pure).

Engagement events (``email_opened`` / ``email_clicked``) and sends (``email_delivered``, or the
runtime's ``automation_sent``) carry ``workflow`` and ``step``; :class:`EngagementHub` routes
them by that pair to the one :class:`EngagementWatcher` watching that send step (a dict lookup).

Per contact, a watcher keeps only what its members need: the time of the latest send (when an
opened/clicked member has ``within``) and one pending item per send for ``not_opened`` members
(at most :data:`MAX_PENDING`; the oldest goes first). An open of that step at time ``t`` cancels,
for each ``not_opened`` member, every pending send with ``send <= t < send + within`` (an open
at the very deadline is too late, as for absence triggers). A click
counts as an open here: a message whose link was clicked was read, even with images blocked.
A ``not_opened`` fire has the send event as its trigger event and fires at ``send + within``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from fnmatch import fnmatchcase
from typing import Any

from automation.index.contact_state import ContactTable
from automation.index.types import SEND_EVENTS, IndexEvent, from_us, iso, unpack
from automation.index.watch_base import (
    Handler,
    Member,
    Out,
    Targets,
    Watcher,
    emit,
    emit_event,
    full_mask,
    remap_mask,
)
from automation.index.watch_deadlines import Kept
from automation.model.conditions import is_machine
from automation.model.definitions import CLICKED_EVENT, OPENED_EVENT

MAX_PENDING = 16
NO_WITHIN = -1


class SendState:
    __slots__ = ("last", "pending")

    def __init__(self) -> None:
        self.last: int | None = None
        self.pending: list[Kept] | None = None


class EngagementWatcher(Watcher):
    """One send step's engagement triggers. Members' parameter:
    ``(action, within_us or -1, link or "")``, plus ``(True,)`` for ``include_machine``: opens
    and clicks flagged ``machine`` (privacy proxies, link scanners) reach only those members,
    and cancel only those members' ``not_opened`` timers."""

    def __init__(self, key: str, members: Sequence[Member], table: ContactTable,
                 workflow: str, step: str) -> None:
        super().__init__(key, members, table)
        self.workflow = workflow
        self.step = step
        reactions: dict[str, list[tuple[int | None, str | None, bool, Targets]]] = {
            "opened": [], "clicked": []}
        silent: list[tuple[int, int, bool, Targets]] = []
        preset = 0
        for index, member in enumerate(self.members):
            action, within, link, *machine = member.param
            include_machine = bool(machine and machine[0])
            if action == "not_opened":
                silent.append((index, within, include_machine, member.targets))
            else:
                preset |= 1 << index
                reactions[action].append((None if within == NO_WITHIN else within,
                                          link or None, include_machine, member.targets))
        self.opened = tuple(reactions["opened"])
        self.clicked = tuple(reactions["clicked"])
        self.silent = tuple(sorted(silent, key=lambda s: s[1]))
        self.preset = preset
        self.full = full_mask(len(self.members))
        self.keeps_last = any(r[0] is not None for r in self.opened + self.clicked)
        self.stateful = bool(self.silent) or self.keeps_last
        self.timed = bool(self.silent)

    def routes(self) -> Iterable[tuple[str, Handler]]:
        return ()  # reached through the hub

    def on_send(self, event: IndexEvent, t: int, out: Out) -> None:
        if not self.stateful:
            return
        contact = self.table.ensure(event.contact_id)
        state = contact[self.slot]
        if state is None:
            state = contact[self.slot] = SendState()
        if self.keeps_last and (state.last is None or state.last < t):
            state.last = t
        if self.silent:
            pending = state.pending
            if pending is None:
                pending = state.pending = []
            pending.append(Kept(t, self.table.intern(event.type),
                                self.table.pack(event.properties), self.preset))
            if len(pending) > MAX_PENDING:
                del pending[0]
            self.table.arm(event.contact_id, contact, t + self.silent[0][1])

    def on_engaged(self, event: IndexEvent, t: int, out: Out) -> None:
        clicked = event.type == CLICKED_EVENT
        state: SendState | None = (self.table.state(event.contact_id, self.slot)
                                   if self.stateful else None)
        url = event.properties.get("url")
        machine = is_machine(event.properties)
        for within, link, include_machine, targets in (self.clicked if clicked else self.opened):
            if machine and not include_machine:
                continue
            if link is not None and not (isinstance(url, str) and fnmatchcase(url, link)):
                continue
            if within is not None:
                last = None if state is None else state.last
                if last is None or not last <= t <= last + within:
                    continue
            emit_event(out, targets, event, t, "clicked" if clicked else "opened")
        if state is not None and state.pending:
            for item in state.pending:
                if item.at <= t:
                    for index, within, include_machine, _ in self.silent:
                        if t < item.at + within and (include_machine or not machine):
                            item.done |= 1 << index
            self._settle(event.contact_id, state)

    def _settle(self, contact_id: str, state: SendState) -> SendState | None:
        """Drop finished sends; clear the state when nothing is left."""
        if state.pending is not None:
            state.pending = [item for item in state.pending if item.done != self.full] or None
        if state.pending is None and state.last is None:
            self.table.put(contact_id, self.slot, None)
            return None
        return state

    def next_due(self, state: SendState) -> int | None:
        dues = [item.at + within for item in state.pending or () for index, within, _, _ in
                self.silent if not item.done >> index & 1]
        return min(dues) if dues else None

    def run_due(self, contact_id: str, state: SendState, due: int, out: Out) -> Any:
        for item in state.pending or ():
            for index, within, _, targets in self.silent:
                at = item.at + within
                if at > due or item.done >> index & 1:
                    continue
                item.done |= 1 << index
                emit(out, targets, contact_id, at, from_us(at), item.type, unpack(item.props),
                     from_us(item.at), f"not_opened:{iso(item.at)}")
        if state.pending is not None:
            state.pending = [item for item in state.pending if item.done != self.full] or None
        return None if state.pending is None and state.last is None else state

    def remap(self, state: SendState, old_params: tuple[Any, ...]) -> Any:
        for item in state.pending or ():
            item.done = remap_mask(item.done, old_params, self.params)
        if state.pending is not None:
            state.pending = [item for item in state.pending if item.done != self.full] or None
        if not self.keeps_last:
            state.last = None
        return None if state.pending is None and state.last is None else state

    def measure(self, state: SendState, stats: dict[str, int]) -> None:
        stats["sends_pending"] = stats.get("sends_pending", 0) + len(state.pending or ())

    def dump(self, state: SendState) -> Any:
        return state.last, None if state.pending is None else tuple(
            (item.at, item.type, item.props, item.done) for item in state.pending)

    def load(self, data: Any) -> Any:
        state = SendState()
        state.last, pending = data
        state.pending = None if pending is None else [Kept(*row) for row in pending]
        return state


class EngagementHub(Watcher):
    """Routes sends and engagement events to the watcher of their (workflow, step)."""

    def __init__(self, watchers: Sequence[EngagementWatcher], table: ContactTable) -> None:
        super().__init__("engagement-hub", (), table)
        self.by_step = {(w.workflow, w.step): w for w in watchers}
        self.sends = any(w.stateful for w in watchers)

    def routes(self) -> Iterable[tuple[str, Handler]]:
        routes: list[tuple[str, Handler]] = [(OPENED_EVENT, self.on_engaged),
                                             (CLICKED_EVENT, self.on_engaged)]
        if self.sends:
            routes += [(t, self.on_send) for t in sorted(SEND_EVENTS)]
        return routes

    def _watcher(self, event: IndexEvent) -> EngagementWatcher | None:
        properties = event.properties
        workflow, step = properties.get("workflow"), properties.get("step")
        if not isinstance(workflow, str) or not isinstance(step, str):
            return None
        return self.by_step.get((workflow, step))

    def on_send(self, event: IndexEvent, t: int, out: Out) -> None:
        watcher = self._watcher(event)
        if watcher is not None:
            watcher.on_send(event, t, out)

    def on_engaged(self, event: IndexEvent, t: int, out: Out) -> None:
        watcher = self._watcher(event)
        if watcher is not None:
            watcher.on_engaged(event, t, out)
