"""The process's one LISTEN connection, shared by every role in it.

Postgres (15, 16) signals every LISTENing backend of the database on each NOTIFY, whatever
its channel: ~20 µs of its CPU per listener and NOTIFY (``herald bench listener-wakeups``).
So a process LISTENs on one connection for all its channels (the erasures every process
hears, the MTA's new mail, the outbox's new rows) instead of one connection each. The
automation leader keeps its own: its LISTENs share the fate of its leader lock.

The connection is re-made whenever it is lost (Postgres restarting, or unreachable at
start-up), with every channel subscribed so far. While it is down a notification can go
unheard, so each subscriber's ``on_gap`` runs when it is lost and again each time it is back
(on the first connection too): the subscriber does then what a missed notification would have
made it do (empty its caches, look for work).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import asyncpg

from engine.database import Database, connect_one
from engine.db_errors import database_errors
from engine.errors import DatabaseError
from engine.tasks import cancel_and_wait

log = logging.getLogger("herald.notifications")

RETRY_SECONDS = (0.5, 1.0, 2.0, 5.0)  # between attempts to (re)connect; the last repeats
CLOSE_TIMEOUT = 2.0

OnNotify = Callable[[str], None]  # called with the notification's payload
OnGap = Callable[[], None]


class Notifications:
    def __init__(self, database: Database) -> None:
        self.database = database
        self._subscribers: dict[str, list[OnNotify]] = {}
        self._on_gap: list[OnGap] = []
        self._connected = asyncio.Event()
        self._lost = asyncio.Event()
        self._listening_lock = asyncio.Lock()  # one LISTEN change at a time on the connection
        self._task: asyncio.Task[None] | None = None
        self._connection: asyncpg.Connection | None = None
        self._listened: set[str] = set()  # the channels LISTENed on the current connection

    async def subscribe(self, channel: str, on_notify: OnNotify,
                        on_gap: OnGap | None = None) -> None:
        """Call ``on_notify(payload)`` for each notification on ``channel`` from now on (from
        the connection's next start when it is down), and ``on_gap()`` whenever some may have
        gone unheard."""
        if on_gap is not None:
            self._on_gap.append(on_gap)
        self._subscribers.setdefault(channel, []).append(on_notify)
        async with self._listening_lock:
            connection = self._connection
            if connection is None or channel in self._listened:
                return  # LISTENed to when the connection is (re)made, or already
            try:
                with database_errors():
                    await connection.add_listener(channel, self._dispatch)
                self._listened.add(channel)
            except DatabaseError:
                self._lost.set()  # re-made, with this channel too

    async def start(self, timeout: float = 5.0) -> None:
        """Start listening; waits at most ``timeout`` s for the first connection (it keeps
        trying in the background after that)."""
        self._task = asyncio.create_task(self._run(), name="notifications")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.listening(), timeout)

    async def listening(self) -> None:
        """Returns once the connection is up and LISTENing on every subscribed channel."""
        await self._connected.wait()

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)
        await self._close()

    def _dispatch(self, _connection: Any, _pid: int, channel: str, payload: str) -> None:
        for on_notify in self._subscribers.get(channel, ()):
            try:
                on_notify(payload)
            except Exception:  # one subscriber's bug must not silence the others
                log.exception("a notification's subscriber failed", extra={"channel": channel})

    def _gap(self) -> None:
        for on_gap in self._on_gap:
            try:
                on_gap()
            except Exception:
                log.exception("a notification subscriber's gap handler failed")

    def _on_lost(self, *_args: Any) -> None:
        self._lost.set()

    async def _run(self) -> None:
        failures = 0
        while True:
            try:
                await self._connect()
            except DatabaseError as exc:
                await self._close()
                if failures == 0:
                    log.warning("not listening for notifications; retrying",
                                extra={"error": str(exc), "channels": sorted(self._subscribers)})
                self._gap()
                await asyncio.sleep(RETRY_SECONDS[min(failures, len(RETRY_SECONDS) - 1)])
                failures += 1
                continue
            if failures:
                log.info("listening for notifications again")
            failures = 0
            self._gap()  # anything sent while not listening
            self._connected.set()
            await self._lost.wait()
            self._connected.clear()
            log.warning("the notifications connection was lost; reconnecting")
            self._gap()
            await self._close()

    async def _connect(self) -> None:
        connection = await connect_one(self.database.url, self.database.timeouts.connect)
        async with self._listening_lock:
            self._connection = connection
            self._listened = set()
            self._lost.clear()
            connection.add_termination_listener(self._on_lost)
            with database_errors():
                for channel in list(self._subscribers):
                    await connection.add_listener(channel, self._dispatch)
                    self._listened.add(channel)

    async def _close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None and not connection.is_closed():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(connection.close(), CLOSE_TIMEOUT)
