"""Group commit for the event log: many concurrent requests share one transaction.

Requests hand their validated events to :meth:`EventWriter.store` and wait; writer tasks take
everything queued (up to ``commit_max_events``) and commit it in one transaction, so
durability costs one fsync per batch, not per request. A second commit starts beside one in
flight only for a large queue or a slow commit (:data:`OVERLAP_MIN_EVENTS`): otherwise what
arrives meanwhile waits for the writer in flight, in one larger group. Before it takes a
batch, a writer lets the event loop take one turn: the answers to the batch it just committed
go out first, and requests the connections have received meanwhile join the batch (a writer
woken by a request would otherwise take it alone, ahead of the reads already waiting). A
request's future resolves only after its events are committed. Idempotency keys already in
the log (or earlier in the same batch) are counted as duplicates and not stored again.

How a batch is written (a small plain batch in one statement, others in one transaction) is
:mod:`engine.intake.batch_write`. Each writer task keeps its pooled connection from one batch to
the next (:mod:`engine.intake.held_connection`: no release and reset round trip per batch).
The log's followers are woken after the commits, at most once per ``notify_interval``
(:mod:`engine.intake.log_wakeups`), not by a NOTIFY in every commit.

Every wait is bounded: a request waits at most the database's ``request`` timeout for its
commit (checked by one sweeper task every :data:`SWEEP_FRACTION` of it, not by a timer per
request), then gets :class:`~engine.errors.DatabaseUnavailable` (503). If its events had not
been taken into a batch yet they are withdrawn and never stored; if they had, the commit may
still happen (or may have happened with its acknowledgement lost): a retry of an event with an
``id`` is then counted as a duplicate, while an event without one may be stored twice.

The hand-off costs a request one future and a deque append: no lock, no timer, no extra task.

A batch the database refuses is split: each request is committed on its own, and a refused
request gets :class:`EventsRejected` naming the first event the database would not store.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Any

from engine.config import IntakeSettings
from engine.database import Database
from engine.errors import (
    DatabaseContention,
    DatabaseError,
    DatabaseRejected,
    DatabaseUnavailable,
    HeraldError,
)
from engine.intake.batch_write import DryRunDone, is_plain, write_in_transaction, write_plain
from engine.intake.held_connection import HeldConnection
from engine.intake.identities import anonymous_ids
from engine.intake.known_contacts import KnownContacts
from engine.intake.log_wakeups import LogWakeups
from engine.intake.rows import RequestPart
from engine.intake.validation import EventIn
from engine.metrics import (
    EVENT_DUPLICATES,
    EVENTS_STORED,
    INTAKE_BATCH_EVENTS,
    INTAKE_QUEUE_EVENTS,
)

log = logging.getLogger("herald.intake")

SWEEP_FRACTION = 0.05  # the sweeper runs every 5 % of the request timeout (at most 100 ms)
# Commits in flight at most, each on a connection of its own (more were measured: smaller
# batches, more work per event, no higher rate; docs/PERFORMANCE.md, "Intake").
WRITERS = 2
# A second commit starts beside one in flight only when this many events wait (batches keep
# two commits overlapping; single events form fewer, larger groups: less work per event in
# Postgres) or when the one in flight has run SLOW_COMMIT_SECONDS (a commit waiting on a lock
# holds up nobody else for longer). docs/PERFORMANCE.md, "Eleventh pass".
OVERLAP_MIN_EVENTS = 128
SLOW_COMMIT_SECONDS = 0.05


class IntakeOverloaded(HeraldError):
    """More events are waiting than the configured bound: answer 503 and let the client retry."""


class WriterStopped(HeraldError):
    """The writer is shutting down and takes no new events."""


class EventsRejected(HeraldError):
    """The database refused a request's events (a 4xx, never worth retrying as is).
    ``index`` is the position of the first refused event in the request, when found."""

    def __init__(self, reason: str, index: int | None) -> None:
        super().__init__(reason if index is None else f"event {index}: {reason}")
        self.reason = reason
        self.index = index


@dataclass(frozen=True, slots=True)
class StoreResult:
    accepted: int
    duplicates: int


@dataclass(slots=True)
class _Request:
    events: list[EventIn]
    source: str
    future: asyncio.Future[StoreResult]
    deadline: float = 0.0  # loop time past which the caller gets 503
    duplicate_flags: list[bool] = field(default_factory=list)
    taken: bool = False  # in a batch being written: its outcome is up to the database now
    abandoned: bool = False  # its caller gave up before it was taken: never written


class EventWriter:
    def __init__(self, database: Database, settings: IntakeSettings, writers: int = WRITERS,
                 slow_commit: float = SLOW_COMMIT_SECONDS) -> None:
        self._database = database
        self._settings = settings
        self._writers = writers
        self._slow_commit = slow_commit
        self._pending: deque[_Request] = deque()
        self._pending_events = 0
        # batches being written, each with the loop time its commit began (oldest first)
        self._in_flight: list[tuple[float, list[_Request]]] = []
        self._wakeup = asyncio.Event()  # set when requests are pending (or when closing)
        self._tasks: list[asyncio.Task[None]] = []
        self._sweeper: asyncio.Task[None] | None = None
        self._closing = False
        self._known_contacts = KnownContacts()  # contacts that exist (per database)
        self.wakeups = LogWakeups(database, settings.notify_interval)  # the followers' NOTIFY

    async def start(self) -> None:
        self._tasks = [asyncio.create_task(self._run(), name=f"intake-writer-{i}")
                       for i in range(self._writers)]
        self._sweeper = asyncio.create_task(self._sweep(), name="intake-sweeper")

    async def stop(self) -> None:
        """Refuse new events, commit everything queued, then stop the writer tasks."""
        self._closing = True
        self._wakeup.set()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
            self._sweeper = None
        await self.wakeups.stop()  # after the last commit: the NOTIFY it is owed

    async def store(self, events: list[EventIn], source: str = "api") -> StoreResult:
        request = self._enqueue(events, source)
        # A caller cancelled while it waits (its client went away) cancels only its own
        # future: the batch it may be in is written by the writer task all the same.
        try:
            return await request.future
        except asyncio.CancelledError:
            self._withdraw(request)
            raise

    def submit(self, events: list[EventIn], source: str = "api") -> asyncio.Future[StoreResult]:
        """:meth:`store` for a caller that takes the outcome in a callback, not in a task (the
        direct route of :mod:`engine.http.events_routes`): the future resolves once the events
        are committed (or with the error :meth:`store` would raise). Raises
        :class:`WriterStopped` or :class:`IntakeOverloaded` at once, as :meth:`store` does."""
        return self._enqueue(events, source).future

    def _enqueue(self, events: list[EventIn], source: str) -> _Request:
        if self._closing:
            raise WriterStopped("the intake is shutting down")
        if self._pending_events + len(events) > self._settings.queue_max_events:
            raise IntakeOverloaded("too many events are waiting to be committed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[StoreResult] = loop.create_future()
        request = _Request(events, source, future, loop.time() + self._database.timeouts.request)
        self._pending.append(request)
        self._pending_events += len(events)
        if not self._wakeup.is_set() and (not self._in_flight
                                          or self._may_overlap(loop.time())):
            self._wakeup.set()  # else the writer in flight takes them when it is done
        return request

    def _withdraw(self, request: _Request) -> None:
        """Take a request that is not in a batch yet out of the queue's count; _take_batch
        skips it."""
        if not request.taken and not request.abandoned:
            request.abandoned = True
            self._pending_events -= len(request.events)

    async def _sweep(self) -> None:
        """Answer 503 to every request past its deadline (see the module's docstring)."""
        interval = min(0.1, self._database.timeouts.request * SWEEP_FRACTION)
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(interval)
            now = loop.time()
            pending = self._pending
            while pending and (pending[0].abandoned or pending[0].deadline <= now):
                request = pending.popleft()
                if request.abandoned:
                    continue
                self._withdraw(request)
                if not request.future.done():
                    request.future.set_exception(DatabaseUnavailable(
                        "the database did not answer in time; nothing was stored"))
            for _, batch in self._in_flight:
                for request in batch:
                    if request.deadline <= now and not request.future.done():
                        request.future.set_exception(DatabaseUnavailable(
                            "the database did not confirm the commit in time; retry (events "
                            "with an id are never stored twice)"))

    def _take_batch(self) -> list[_Request]:
        batch: list[_Request] = []
        count = 0
        INTAKE_QUEUE_EVENTS.set(self._pending_events)  # sampled as each batch forms
        while self._pending:
            request = self._pending[0]
            if request.abandoned or request.future.done():  # withdrawn or already answered
                self._pending.popleft()
                continue
            if batch and count + len(request.events) > self._settings.commit_max_events:
                break
            self._pending.popleft()
            request.taken = True
            batch.append(request)
            count += len(request.events)
        self._pending_events -= count
        return batch

    async def _run(self) -> None:
        database = HeldConnection(self._database)  # this writer's, kept between batches
        loop = asyncio.get_running_loop()
        try:
            while True:
                if not self._pending or (self._in_flight
                                         and not self._may_overlap(loop.time())):
                    if self._closing and not self._pending:
                        return
                    await self._wait_for_work(loop)
                    continue
                if self._settings.commit_max_wait > 0 and not self._closing and \
                        self._pending_events < self._settings.commit_max_events:
                    await asyncio.sleep(self._settings.commit_max_wait)
                elif not self._closing:
                    # One turn of the event loop before the batch is taken: the answers to the
                    # batch just committed go out first, and what the connections have received
                    # meanwhile is read and joins this batch. docs/PERFORMANCE.md, "Thirteenth
                    # pass".
                    await asyncio.sleep(0)
                batch = self._take_batch()
                if batch:
                    entry = (loop.time(), batch)
                    self._in_flight.append(entry)
                    try:
                        await self._commit(database, batch)
                    finally:
                        self._in_flight.remove(entry)
        finally:
            await database.release()

    def _may_overlap(self, now: float) -> bool:
        """Whether a commit may start beside those in flight (see OVERLAP_MIN_EVENTS)."""
        return self._closing or self._pending_events >= OVERLAP_MIN_EVENTS or \
            now - self._in_flight[0][0] >= self._slow_commit

    async def _wait_for_work(self, loop: asyncio.AbstractEventLoop) -> None:
        """Until events wait that this writer may take: woken by _enqueue, and, while a
        commit is in flight that has not turned slow yet, when it does (a writer in flight
        takes what waits when it is done, without this one)."""
        self._wakeup.clear()
        if self._in_flight:
            left = self._in_flight[0][0] + self._slow_commit - loop.time()
            if left > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), left)
                return
        await self._wakeup.wait()

    async def _commit(self, database: Database, batch: list[_Request]) -> None:
        try:
            results = await self._write_with_retry(database, batch)
        except DatabaseUnavailable as exc:
            for request in batch:
                if not request.future.done():
                    request.future.set_exception(DatabaseUnavailable(str(exc)))
            return
        except DatabaseError:
            if len(batch) == 1:
                await self._commit_alone(database, batch[0])
                return
            # Something in one request made the whole batch fail: isolate it by committing
            # each request on its own, so one bad request cannot fail the others.
            log.warning("batch commit failed; retrying requests one by one", exc_info=True)
            for request in batch:
                await self._commit_alone(database, request)
            return
        for request, result in zip(batch, results, strict=True):
            if not request.future.done():
                request.future.set_result(result)

    async def _commit_alone(self, database: Database, request: _Request) -> None:
        try:
            result = (await self._write_with_retry(database, [request]))[0]
        except DatabaseRejected as exc:
            outcome: BaseException = EventsRejected(
                exc.reason, await self._first_refused(database, request))
        except DatabaseError as exc:
            outcome = exc
        else:
            if not request.future.done():
                request.future.set_result(result)
            return
        if not request.future.done():
            request.future.set_exception(outcome)

    async def _first_refused(self, database: Database, request: _Request) -> int | None:
        """The index of an event the database refuses on its own, found by bisection with
        rolled-back dry runs (a few transactions, only for a refused request)."""
        if len(request.events) == 1:
            return 0
        low, high = 0, len(request.events)  # the refused event is presumed in [low, high)
        try:
            while high - low > 1:
                middle = (low + high) // 2
                if await self._refused(database, request, low, middle):
                    high = middle
                else:
                    low = middle
            return low if await self._refused(database, request, low, low + 1) else None
        except DatabaseError:
            return None

    async def _refused(self, database: Database, request: _Request, start: int,
                       stop: int) -> bool:
        part = _Request(request.events[start:stop], request.source, request.future)
        try:
            await self._write(database, [part], commit=False)
        except DryRunDone:
            return False
        except DatabaseRejected:
            return True
        return False

    async def _write_with_retry(self, database: Database, batch: list[_Request]
                                ) -> list[StoreResult]:
        for attempt in range(3):
            try:
                return await self._write(database, batch)
            except DatabaseContention:
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    async def _write(self, database: Database, batch: list[_Request],
                     commit: bool = True) -> list[StoreResult]:
        # Each event's duplicate flag (its id earlier in the batch) and the batch's events, in
        # one pass: the rows built from them never repeat an id (batch_write relies on it).
        seen: set[str] = set()
        events: list[EventIn] = []
        for request in batch:
            flags = []
            for event in request.events:
                event_id = event.event_id
                if event_id is None:
                    flags.append(False)
                elif event_id in seen:
                    flags.append(True)
                else:
                    seen.add(event_id)
                    flags.append(False)
            request.duplicate_flags = flags
            events += request.events

        anonymous = anonymous_ids(events)
        if commit and is_plain(events, anonymous):
            not_stored = await write_plain(database, _parts(batch), events)
            self.wakeups.committed()
            return self._results(batch, not_stored=not_stored)
        # (a dry run, commit false, ends in DryRunDone: it wakes nobody)
        stored_ids = await write_in_transaction(database, _parts(batch), events,
                                                anonymous, commit, self._known_contacts)
        self.wakeups.committed()
        return self._results(batch, stored_ids=stored_ids)

    def _results(self, batch: list[_Request], stored_ids: set[str] | None = None,
                 not_stored: AbstractSet[str] = frozenset()) -> list[StoreResult]:
        """Each request's counts: an event is a duplicate when flagged (repeated earlier in
        the batch), when its id is in ``not_stored``, or, given ``stored_ids``, when it has
        an id not in them."""
        results = []
        stored_by_source: dict[str, int] = {}
        all_duplicates = 0
        check_ids = stored_ids is not None or bool(not_stored)
        for request in batch:
            if check_ids:
                accepted = duplicates = 0
                for event, duplicate in zip(request.events, request.duplicate_flags,
                                            strict=True):
                    event_id = event.event_id
                    if duplicate or (event_id is not None and (
                            event_id in not_stored if stored_ids is None
                            else event_id not in stored_ids)):
                        duplicates += 1
                    else:
                        accepted += 1
                result = StoreResult(accepted, duplicates)
            else:  # every event stored but those flagged
                duplicates = request.duplicate_flags.count(True)
                accepted = len(request.events) - duplicates
                result = StoreResult(accepted, duplicates)
            all_duplicates += duplicates
            stored_by_source[request.source] = stored_by_source.get(request.source, 0) + accepted
            results.append(result)
        # Metrics once per batch, not per request.
        if all_duplicates:
            EVENT_DUPLICATES.inc(all_duplicates)
        for source, accepted in stored_by_source.items():
            if accepted:
                _stored_counter(source).inc(accepted)
        INTAKE_BATCH_EVENTS.observe(sum(stored_by_source.values()))
        return results


# The events_stored counter of each source (a handful: the API, the pixel, Segment's), looked up
# once: ``labels()`` validates and hashes its values on every call.
_STORED_COUNTERS: dict[str, Any] = {}


def _stored_counter(source: str) -> Any:
    counter = _STORED_COUNTERS.get(source)
    if counter is None:
        counter = _STORED_COUNTERS[source] = EVENTS_STORED.labels(source)
    return counter


def _parts(batch: list[_Request]) -> list[RequestPart]:
    return [RequestPart(r.source, r.events, r.duplicate_flags) for r in batch]
