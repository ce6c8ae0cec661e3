"""The live automation role: follow the event log, keep the trigger index, drive the core.

Only one process per database drives workflows at a time (a Postgres advisory lock held on the
follower's own connection); another ``herald run`` waits as a standby and takes over within
seconds when the leader's connection goes away. The trigger index is snapshotted to Postgres with
the log cursor it corresponds to, so a restart replays only the events since the snapshot (fires
re-derived from them are recognised by their entry keys and do not start runs twice).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from datetime import UTC, datetime
from typing import Any

import asyncpg

from automation.index.trigger_index import IndexEvent, TriggerIndex
from automation.live import quarantine
from automation.live.snapshots import restore_index, serialise_index
from automation.loading.catalog import Catalog
from automation.metrics import (
    EVENTS_PROCESSED,
    LAG,
    LEADER,
    TIMER_LATENESS,
    TIMERS_DUE,
    TIMERS_FIRED,
    TIMERS_PENDING,
)
from automation.runtime.core import AutomationCore
from automation.settings import AutomationSettings
from automation.stores.postgres import PgStore
from engine import gc_policy
from engine.database import GENERIC_PLANS, Database, connect_one
from engine.db_errors import database_errors
from engine.errors import DatabaseError
from engine.eventlog import EVENTS_CHANNEL
from engine.eventlog_reader import LogCursor, LoggedEvent, head, read_after
from engine.privacy.service import ERASED_CHANNEL

log = logging.getLogger("herald.automation.service")

LEADER_LOCK = 0x6865_7261_6C65  # "herale"
# NOTIFYed after the batches of events the leader has acted on (tools and tests wait on it).
# Postgres signals every listening backend on each NOTIFY (~20 µs of its CPU per listener,
# engine.notifications), so at most one goes out per PROCESSED_NOTIFY_INTERVAL: at once after
# a batch when none went out within it, else when it is up (one notice covers every batch
# before it). docs/PERFORMANCE.md, "Postgres per send".
PROCESSED_CHANNEL = "herald_automation"
PROCESSED_NOTIFY = f"NOTIFY {PROCESSED_CHANNEL}"
PROCESSED_NOTIFY_INTERVAL = 0.1
STANDBY_RETRY = 2.0
MAX_SLEEP = 1.0
# Erased contacts waiting to be dropped from the index; past this (a mass erase between two
# steps) the rest keep their counters in memory, and fires for them are refused by the store.
MAX_ERASED = 100_000
# Reading or writing a snapshot moves tens of megabytes at a million contacts: it gets a longer
# bound than ordinary statements ([engine] database_statement_timeout).
SNAPSHOT_IO_TIMEOUT = 300.0


class QuarantinedEvent(Exception):
    """An event was set aside: reload the index and replay without it."""


def index_event(event: LoggedEvent) -> IndexEvent:
    return IndexEvent(event.contact_id, event.type, event.properties, event.occurred_at,
                      event.position, event.source)


async def leader_connection(database: Database) -> asyncpg.Connection:
    """The leader's own connection (its lock, its LISTENs, the log's reads), planning
    generically: at scale `auto` planned read_after again on every batch (~0.2 ms of Postgres
    CPU); its generic plan reads each partition's (txid, position) index."""
    connection = await connect_one(database.url, command_timeout=database.timeouts.statement)
    try:
        await connection.execute(GENERIC_PLANS)
    except BaseException:
        connection.terminate()
        raise
    return connection


class AutomationService:
    def __init__(self, database: Database, catalog: Catalog, store: PgStore,
                 settings: AutomationSettings,
                 processed_notify_interval: float = PROCESSED_NOTIFY_INTERVAL) -> None:
        self.database = database
        self.catalog = catalog
        self.store = store
        self.settings = settings
        self.core: AutomationCore | None = None
        self.cursor = LogCursor()
        self.leader = False
        self._connection: asyncpg.Connection | None = None
        self._wake = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._snapshot_at = 0.0
        self._quarantined: set[LogCursor] = set()
        self._failing: LogCursor | None = None  # the end of the batch being acted on
        self._isolate_until: LogCursor | None = None  # replay one event at a time up to here
        self._erased: set[str] = set()  # contacts erased since the last step (NOTIFY payloads)
        self.processed = 0
        self._processed_notify_interval = processed_notify_interval
        self._processed_owed = False  # batches acted on since the last PROCESSED_NOTIFY
        self._processed_sent_at = float("-inf")  # monotonic
        self.processed_notices = 0  # PROCESSED_NOTIFYs sent (tests)
        self._caught_up_at: float | None = None  # monotonic; None: not leading
        self.settled = asyncio.Event()  # set once this process is leader or knows it is not
        self.leading = asyncio.Event()  # set once this process leads and has loaded its state

    def lag(self) -> float:
        """Seconds since the follower last reached the end of the log (0 when not leading)."""
        if self._caught_up_at is None or not self.leader:
            return 0.0
        return time.monotonic() - self._caught_up_at

    async def start(self) -> None:
        LAG.set_function(self.lag)
        gc_policy.tune()
        await self.store.save_versions()
        self._task = asyncio.create_task(self._run(), name="automation")

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
        if self.leader:
            try:  # the notice still owed: whoever waits on it sees the last batches
                with database_errors():
                    await self._notify_processed(due_only=False)
            except DatabaseError:
                log.warning("could not send the last processed notice", exc_info=True)
        if self.leader and self.core is not None:
            try:
                await self._save_snapshot()
            except (DatabaseError, OSError):
                log.warning("could not save the trigger index on shutdown", exc_info=True)
        if self._connection is not None:
            await self._connection.close()

    async def _run(self) -> None:
        while not self._stopping:
            try:
                with database_errors():  # this process's own connection is asyncpg's
                    if not self.leader:
                        await self._become_leader()
                        continue
                    await self._step()
            except QuarantinedEvent:
                # The index may hold part of the event: reload and replay without it.
                await self._reset_connection()
            except Exception as error:  # a bug must not stop automation for good
                if not quarantine.is_transient(error) and self._isolate_until is None:
                    # Replay the failing batch one event at a time to find the culprit.
                    self._isolate_until = self._failing
                if quarantine.is_transient(error):
                    log.warning("automation loop error; reloading and retrying", exc_info=True)
                else:
                    log.exception("unexpected automation error; reloading and retrying")
                self._failing = None
                await self._reset_connection()
                await self._sleep(STANDBY_RETRY)

    async def _reset_connection(self) -> None:
        if self._connection is not None:
            self._connection.terminate()
        self._connection = None
        self.leader = False  # the lock went with the connection
        LEADER.set(0)
        self.leading.clear()

    async def _become_leader(self) -> None:
        if self._connection is None:
            self._connection = await leader_connection(self.database)
        got = await self._connection.fetchval("SELECT pg_try_advisory_lock($1)", LEADER_LOCK)
        if not got:
            self.settled.set()
            await self._sleep(STANDBY_RETRY)
            return
        await self._connection.add_listener(EVENTS_CHANNEL, lambda *_: self._wake.set())
        await self._connection.add_listener(ERASED_CHANNEL, self._on_erased)
        self.leader = True
        await self._load()
        self._caught_up_at = time.monotonic()
        LEADER.set(1)
        self.leading.set()
        self.settled.set()
        log.info("automation leader", extra={"cursor": str(self.cursor),
                                             "workflows": len(self.catalog.current)})

    async def _load(self) -> None:
        assert self._connection is not None
        workflows = self.catalog.ordered()
        self._quarantined = await quarantine.load(self._connection)
        row = await self._connection.fetchrow(
            "SELECT cursor_txid, cursor_pos, snapshot FROM automation_state WHERE id = 1",
            timeout=SNAPSHOT_IO_TIMEOUT)
        if row is not None and row["snapshot"] is not None:
            index = await restore_index(bytes(row["snapshot"]), workflows)
            self.cursor = LogCursor(row["cursor_txid"], row["cursor_pos"])
            index.set_workflows(workflows)
        else:
            # First start: learn the history without acting on it, then follow from its end.
            index = TriggerIndex(workflows, keep_contacts=False)
            end = await head(self._connection)
            cursor = LogCursor()
            while cursor < end:
                events = await read_after(self._connection, cursor, self.settings.read_batch)
                if not events:
                    break
                for event in events:
                    if event.cursor > end:
                        break
                    index.observe(index_event(event))
                cursor = min(events[-1].cursor, end)
            self.cursor = end
            index.fire_due(datetime.now(UTC))  # deadlines that passed in history: not acted on
        self.core = AutomationCore(self.catalog, index, self.store)
        await self.core.load_active()
        gc.freeze()  # the restored index is long-lived: keep it out of collections
        await self._save_snapshot()

    def _on_erased(self, *args: Any) -> None:
        # (the process's caches of personal data are emptied by herald run's erasure listener,
        # engine.privacy.erasure_listener)
        if len(self._erased) < MAX_ERASED:
            self._erased.add(str(args[3]))  # (connection, pid, channel, payload)
        self._wake.set()

    async def _step(self) -> None:
        assert self._connection is not None and self.core is not None
        self._wake.clear()
        while self._erased:
            self.core.forget(self._erased.pop())
        read = await read_after(self._connection, self.cursor, self.settings.read_batch)
        more = len(read) == self.settings.read_batch
        isolated = self._isolate_until is not None
        if isolated:
            handled = await self._replay_isolated(read)
            more = more or len(handled) < len(read)
            read = handled
        events = [e for e in read if e.cursor not in self._quarantined]
        if not isolated and events:
            # Contacts are independent: their transitions run concurrently (each contact's in
            # log order). If any fails, the loop reloads the snapshot and replays, so the index
            # never counts an event twice; a batch that fails for a reason other than the
            # database is then replayed event by event (see _replay_isolated).
            self._failing = read[-1].cursor
            await self.store.record_events(events)
            await self.core.on_events([index_event(e) for e in events], datetime.now(UTC),
                                      self.settings.concurrency)
            self._failing = None
        if read:
            self.cursor = read[-1].cursor
        self.processed += len(events)
        EVENTS_PROCESSED.inc(len(events))
        if not more:
            self._caught_up_at = time.monotonic()
        await self._tick()
        if events:
            self._processed_owed = True
        await self._notify_processed(due_only=True)
        if time.monotonic() - self._snapshot_at >= self.settings.snapshot_interval:
            await self._save_snapshot()
        if not more:
            due = self.core.next_due()
            wait = MAX_SLEEP
            if due is not None:
                wait = max(0.0, min(MAX_SLEEP, (due - datetime.now(UTC)).total_seconds()))
            if self._processed_owed:  # wake up to send it when its interval is up
                wait = min(wait, max(0.0, self._processed_notice_due_in()))
            await self._sleep(wait)

    def _processed_notice_due_in(self) -> float:
        """Seconds until the next PROCESSED_NOTIFY may go out (<= 0: now)."""
        return self._processed_sent_at + self._processed_notify_interval - time.monotonic()

    async def _notify_processed(self, due_only: bool) -> None:
        """Send the PROCESSED_NOTIFY owed, if its interval is up (``due_only``) or at once."""
        if not self._processed_owed or self._connection is None:
            return
        if due_only and self._processed_notice_due_in() > 0:
            return
        self._processed_owed = False
        self._processed_sent_at = time.monotonic()
        await self._connection.execute(PROCESSED_NOTIFY)
        self.processed_notices += 1

    async def _tick(self) -> None:
        """Timers and run wake-ups that are due, with their metrics."""
        assert self.core is not None
        now = datetime.now(UTC)
        due = self.core.next_due()
        handled = await self.core.on_time(now, self.settings.concurrency)
        TIMERS_DUE.set(handled)
        TIMERS_FIRED.inc(handled)
        TIMER_LATENESS.set(max(0.0, (now - due).total_seconds()) if due and due <= now else 0.0)
        TIMERS_PENDING.set(self.core.timers_pending())

    async def _replay_isolated(self, read: list[LoggedEvent]) -> list[LoggedEvent]:
        """Act on events one at a time up to the end of the batch that failed; one that fails
        alone for a reason other than the database is quarantined. Returns the events handled
        (a prefix of ``read``)."""
        assert self.core is not None and self._isolate_until is not None
        handled: list[LoggedEvent] = []
        for event in read:
            if event.cursor > self._isolate_until:
                break
            handled.append(event)
            if event.cursor in self._quarantined:
                continue
            try:
                await self.store.record_events([event])
                await self.core.on_events([index_event(event)], datetime.now(UTC))
            except Exception as error:
                if quarantine.is_transient(error):
                    raise
                async with self.database.connection() as connection:
                    await quarantine.add(connection, event, error)
                self._quarantined.add(event.cursor)
                raise QuarantinedEvent from error
        if not read or read[-1].cursor >= self._isolate_until or len(handled) < len(read):
            self._isolate_until = None  # past the batch that failed: back to batches
        return handled

    async def _save_snapshot(self) -> None:
        """Save the index with the cursor it corresponds to, taken in pieces so the loop keeps
        serving (see :mod:`automation.live.snapshots`)."""
        assert self.core is not None
        cursor = self.cursor
        data = await serialise_index(self.core.index)
        async with self.database.connection() as connection:
            await connection.execute(
                """INSERT INTO automation_state (id, cursor_txid, cursor_pos, snapshot, saved_at)
                   VALUES (1, $1, $2, $3, now())
                   ON CONFLICT (id) DO UPDATE SET cursor_txid = $1, cursor_pos = $2,
                       snapshot = $3, saved_at = now()""",
                cursor.txid, cursor.position, data, timeout=SNAPSHOT_IO_TIMEOUT)
        self._snapshot_at = time.monotonic()
        gc.freeze()

    async def _sleep(self, seconds: float) -> None:
        if self._stopping:
            return
        try:
            await asyncio.wait_for(self._wake.wait(), seconds)
        except TimeoutError:
            pass

