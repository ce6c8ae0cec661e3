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

import asyncpg

from automation.index.trigger_index import IndexEvent, TriggerIndex
from automation.live.snapshots import restore_index, serialise_index
from automation.loading.catalog import Catalog
from automation.runtime.core import AutomationCore
from automation.settings import AutomationSettings
from automation.stores.postgres import PgStore
from engine.database import Database, connect_one
from engine.db_errors import database_errors
from engine.errors import DatabaseError
from engine.eventlog import EVENTS_CHANNEL
from engine.eventlog_reader import LogCursor, LoggedEvent, head, read_after

log = logging.getLogger("herald.automation.service")

LEADER_LOCK = 0x6865_7261_6C65  # "herale"
# NOTIFYed after each batch of events the leader has acted on (tools and tests can wait on it).
PROCESSED_CHANNEL = "herald_automation"
STANDBY_RETRY = 2.0
MAX_SLEEP = 1.0
# Reading or writing a snapshot moves tens of megabytes at a million contacts: it gets a longer
# bound than ordinary statements ([engine] database_statement_timeout).
SNAPSHOT_IO_TIMEOUT = 300.0


def index_event(event: LoggedEvent) -> IndexEvent:
    return IndexEvent(event.contact_id, event.type, event.properties, event.occurred_at,
                      event.position, event.source)


class AutomationService:
    def __init__(self, database: Database, catalog: Catalog, store: PgStore,
                 settings: AutomationSettings) -> None:
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
        self.processed = 0
        self.settled = asyncio.Event()  # set once this process is leader or knows it is not
        self.leading = asyncio.Event()  # set once this process leads and has loaded its state

    async def start(self) -> None:
        await self.store.save_versions()
        self._task = asyncio.create_task(self._run(), name="automation")

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
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
            except (DatabaseError, OSError):
                log.warning("automation loop error; reloading and retrying", exc_info=True)
                await self._reset_connection()
                await self._sleep(STANDBY_RETRY)
            except Exception:  # a bug must not stop automation for good: reload and go on
                log.exception("unexpected automation error; reloading and retrying")
                await self._reset_connection()
                await self._sleep(STANDBY_RETRY)

    async def _reset_connection(self) -> None:
        if self._connection is not None:
            self._connection.terminate()
        self._connection = None
        self.leader = False  # the lock went with the connection
        self.leading.clear()

    async def _become_leader(self) -> None:
        if self._connection is None:
            self._connection = await connect_one(
                self.database.url, command_timeout=self.database.timeouts.statement)
        got = await self._connection.fetchval("SELECT pg_try_advisory_lock($1)", LEADER_LOCK)
        if not got:
            self.settled.set()
            await self._sleep(STANDBY_RETRY)
            return
        await self._connection.add_listener(EVENTS_CHANNEL, lambda *_: self._wake.set())
        self.leader = True
        await self._load()
        self.leading.set()
        self.settled.set()
        log.info("automation leader", extra={"cursor": str(self.cursor),
                                             "workflows": len(self.catalog.current)})

    async def _load(self) -> None:
        assert self._connection is not None
        workflows = self.catalog.ordered()
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

    async def _step(self) -> None:
        assert self._connection is not None and self.core is not None
        self._wake.clear()
        events = await read_after(self._connection, self.cursor, self.settings.read_batch)
        # Contacts are independent: their transitions run concurrently (each contact's in log
        # order). If any fails, the loop reloads the snapshot and replays, so the index never
        # counts an event twice.
        await self.store.record_events(events)
        await self.core.on_events([index_event(e) for e in events], datetime.now(UTC),
                                  self.settings.concurrency)
        if events:
            self.cursor = events[-1].cursor
        self.processed += len(events)
        await self.core.on_time(datetime.now(UTC), self.settings.concurrency)
        if events:
            await self._connection.execute(f"NOTIFY {PROCESSED_CHANNEL}")
        if time.monotonic() - self._snapshot_at >= self.settings.snapshot_interval:
            await self._save_snapshot()
        if len(events) < self.settings.read_batch:
            due = self.core.next_due()
            wait = MAX_SLEEP
            if due is not None:
                wait = max(0.0, min(MAX_SLEEP, (due - datetime.now(UTC)).total_seconds()))
            await self._sleep(wait)

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

