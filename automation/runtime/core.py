"""The automation core: events and time in, workflow runs advanced out.

One implementation serves the live engine
(with :class:`~automation.stores.postgres.PgStore`) and the
simulator (with :class:`~automation.stores.memory.MemoryStore` on a virtual clock). The core
keeps the trigger index, a registry of active runs per contact (to route exits and wait_for
events without touching the database) and a heap of run wake-up times; the store owns durable
state and runs each transition in one transaction.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from datetime import datetime
from itertools import groupby
from operator import itemgetter
from typing import Any, Protocol

from automation.index.trigger_index import Fire, IndexEvent, TriggerIndex
from automation.loading.catalog import Catalog
from automation.runtime import program as p
from automation.runtime.runs import EventResume, Resume, Run, TimerResume

log = logging.getLogger("herald.automation")
_CONTACT = itemgetter(1)  # Fire.contact_id


class Store(Protocol):
    async def start_run(self, fire: Fire, now: datetime) -> Run | None:
        """Apply re-entry, create the run and advance it to its first pause (None: not
        entered)."""
        ...

    async def advance(self, run_id: int, resume: Resume, now: datetime) -> Run | None: ...

    async def exit_run(self, run_id: int, reason: str, now: datetime) -> None: ...

    async def active_runs(self) -> list[Run]: ...


@dataclass(slots=True)
class RunRef:
    """What the core needs to route events to an active run."""

    id: int
    workflow: str
    version: str
    state: str
    pc: int
    trigger_properties: dict[str, Any]
    wake_at: datetime | None


class AutomationCore:
    def __init__(self, catalog: Catalog, index: TriggerIndex, store: Store) -> None:
        self.catalog = catalog
        self.index = index
        self.store = store
        self._runs: dict[str, dict[int, RunRef]] = {}  # contact -> run id -> ref
        self._contact_of: dict[int, str] = {}
        self._wakes: list[tuple[datetime, int]] = []  # heap; stale entries skipped
        self.events_seen = 0
        self.fires = 0

    async def load_active(self) -> None:
        for run in await self.store.active_runs():
            self._track(run)

    # --- inputs ---------------------------------------------------------------------------

    async def on_event(self, event: IndexEvent, now: datetime) -> None:
        """Route one logged event: exits and wait_for first, then triggers."""
        self.events_seen += 1
        runs = self._runs.get(event.contact_id)
        if runs:
            for ref in list(runs.values()):
                await self._route(ref, event, now)
        fires = self.index.observe(event)
        if fires:
            await self._enter_all(fires, now)

    async def on_events(self, events: Sequence[IndexEvent], now: datetime,
                        concurrency: int = 1) -> None:
        """Several events: each contact's in log order, up to ``concurrency`` contacts at a
        time (their transactions then share commits). 1 keeps the exact global order, which
        the simulator relies on for its determinism."""
        if concurrency <= 1:
            for event in events:
                await self.on_event(event, now)
            return
        by_contact: dict[str, list[IndexEvent]] = {}
        for event in events:
            by_contact.setdefault(event.contact_id, []).append(event)

        async def one_contact(contact_events: list[IndexEvent]) -> None:
            for event in contact_events:
                await self.on_event(event, now)

        await _bounded(concurrency, [one_contact(e) for e in by_contact.values()])

    async def on_time(self, now: datetime, concurrency: int = 1) -> int:
        """Fire trigger timers and wake runs whose time has come; returns how many were due."""
        # per contact: its trigger fires, then its runs' wake-ups (the order they are done in)
        work: dict[str, tuple[list[Fire], list[int]]] = {}
        fires = self.index.fire_due(now)
        due_count = len(fires)
        for contact_id, group in groupby(fires, _CONTACT):  # a contact's fires come together
            found = work.get(contact_id)
            if found is None:
                work[contact_id] = (list(group), [])
            else:
                found[0].extend(group)
        while self._wakes and self._wakes[0][0] <= now:
            due, run_id = heapq.heappop(self._wakes)
            contact = self._contact_of.get(run_id)
            ref = self._runs.get(contact, {}).get(run_id) if contact else None
            if contact is None or ref is None or ref.wake_at != due:
                continue  # the run moved on since this wake-up was scheduled
            work.setdefault(contact, ([], []))[1].append(run_id)
            due_count += 1

        async def one_contact(due_fires: list[Fire], run_ids: list[int]) -> None:
            if due_fires:
                await self._enter_all(due_fires, now)
            for run_id in run_ids:
                await self._advance(run_id, TimerResume(), now)

        if concurrency <= 1:
            for due_fires, run_ids in work.values():
                await one_contact(due_fires, run_ids)
        else:
            await _bounded(concurrency, [one_contact(*items) for items in work.values()])
        return due_count

    def timers_pending(self) -> int:
        """Trigger timers plus run wake-ups waiting (wake-ups may include superseded ones)."""
        return self.index.timers_pending + len(self._wakes)

    def next_due(self) -> datetime | None:
        candidates = [t for t in (self.index.next_due(),
                                  self._wakes[0][0] if self._wakes else None) if t is not None]
        return min(candidates) if candidates else None

    def active_count(self) -> int:
        return len(self._contact_of)

    # --- runs -----------------------------------------------------------------------------

    async def _route(self, ref: RunRef, event: IndexEvent, now: datetime) -> None:
        entry = self.catalog.version(ref.workflow, ref.version)
        if entry is None:
            return
        workflow, program = entry
        if workflow.exits_on(event.type, event.properties, ref.trigger_properties):
            await self.store.exit_run(ref.id, f"exit_when: {event.type}", now)
            self._untrack(ref.id)
            return
        if ref.state == "waiting_event":
            instruction = program[ref.pc]
            if isinstance(instruction, p.WaitFor) and instruction.step.condition.matches(
                    event.type, event.properties, ref.trigger_properties):
                await self._advance(ref.id, EventResume(event.type, dict(event.properties)),
                                    now)

    async def _enter_all(self, fires: list[Fire], now: datetime) -> None:
        """Enter each fire's run, in order (one coroutine for all of them: a call per fire
        cost more than the rest of the core's work on it)."""
        start_run = self.store.start_run
        for fire in fires:
            workflow = self.catalog.current.get(fire.workflow)
            if workflow is None or not workflow.enabled:
                continue
            self.fires += 1
            run = await start_run(fire, now)
            if run is not None and run.active:
                self._track(run)

    async def _advance(self, run_id: int, resume: Resume, now: datetime) -> None:
        run = await self.store.advance(run_id, resume, now)
        if run is None or not run.active:
            self._untrack(run_id)
        else:
            self._track(run)

    def _track(self, run: Run) -> None:
        ref = RunRef(run.id, run.workflow, run.version, run.state, run.pc,
                     run.trigger_properties, run.wake_at)
        self._runs.setdefault(run.contact_id, {})[run.id] = ref
        self._contact_of[run.id] = run.contact_id
        if run.wake_at is not None:
            heapq.heappush(self._wakes, (run.wake_at, run.id))

    def forget(self, contact_id: str) -> None:
        """An erased contact: its trigger state, timers and tracked runs go (their rows were
        exited by the erase)."""
        self.index.forget(contact_id)
        for run_id in list(self._runs.get(contact_id, {})):
            self._untrack(run_id)

    def _untrack(self, run_id: int) -> None:
        contact = self._contact_of.pop(run_id, None)
        if contact is None:
            return
        runs = self._runs.get(contact)
        if runs is not None:
            runs.pop(run_id, None)
            if not runs:
                del self._runs[contact]


async def _bounded(limit: int, coroutines: list[Coroutine[Any, Any, None]]) -> None:
    """Run the coroutines in order, at most ``limit`` at once; the first error (in list order)
    propagates after all have finished (the caller then reloads its state).

    ``limit`` workers take the next coroutine as they finish one: only ``limit`` tasks, however
    many contacts a batch holds (a task and a semaphore wait per contact cost more than most
    contacts' own work)."""
    pending = iter(enumerate(coroutines))
    errors: list[tuple[int, BaseException]] = []

    async def worker() -> None:
        for index, coroutine in pending:
            try:
                await coroutine
            except BaseException as error:  # the others go on; the first is raised at the end
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise  # this run is being cancelled, not failing
                errors.append((index, error))

    try:
        await asyncio.gather(*(worker() for _ in range(min(limit, len(coroutines)))))
    finally:
        for _index, coroutine in pending:  # left when cancelled: never started
            coroutine.close()
    if errors:
        raise min(errors, key=lambda item: item[0])[1]
