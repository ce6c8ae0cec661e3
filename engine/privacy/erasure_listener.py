"""Every serving process forgets its caches of personal data when a contact is erased by any
process (:data:`engine.privacy.service.ERASED_CHANNEL`).

One LISTEN connection per process. While it is not connected (at start-up when Postgres
cannot be reached, or after the connection was lost) an erasure could go unheard, so the
caches are emptied each time the connection is lost and again once it is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import asyncpg

from engine.database import Database, connect_one
from engine.db_errors import database_errors
from engine.errors import DatabaseError
from engine.privacy.forgetting import forget_personal_data
from engine.privacy.service import ERASED_CHANNEL

log = logging.getLogger("herald.privacy")

RETRY_SECONDS = (0.5, 1.0, 2.0, 5.0)  # between attempts to (re)connect; the last repeats


class ErasureListener:
    def __init__(self, database: Database) -> None:
        self.database = database
        self.heard = 0  # erasures heard (metrics and tests)
        self._connected = asyncio.Event()
        self._lost = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._connection: asyncpg.Connection | None = None

    async def start(self, timeout: float = 5.0) -> None:
        """Start listening; waits at most ``timeout`` s for the first connection (the listener
        keeps trying in the background after that)."""
        self._task = asyncio.create_task(self._run(), name="erasure-listener")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.listening(), timeout)

    async def listening(self) -> None:
        """Returns once the listener is connected and LISTENing."""
        await self._connected.wait()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._close()

    def _on_erased(self, *_args: Any) -> None:
        self.heard += 1
        forget_personal_data()

    def _on_lost(self, *_args: Any) -> None:
        self._lost.set()

    async def _run(self) -> None:
        failures = 0
        while True:
            try:
                connection = await connect_one(self.database.url,
                                               self.database.timeouts.connect)
                self._connection = connection
                with database_errors():
                    await connection.add_listener(ERASED_CHANNEL, self._on_erased)
                connection.add_termination_listener(self._on_lost)
            except DatabaseError as exc:
                await self._close()
                if failures == 0:
                    log.warning("not listening for erasures; caches are emptied until it is",
                                extra={"error": str(exc)})
                forget_personal_data()
                await asyncio.sleep(RETRY_SECONDS[min(failures, len(RETRY_SECONDS) - 1)])
                failures += 1
                continue
            if failures:
                log.info("listening for erasures again")
            failures = 0
            forget_personal_data()  # anything erased while not listening
            self._lost.clear()
            self._connected.set()
            await self._lost.wait()
            self._connected.clear()
            log.warning("the erasure listener lost its connection; reconnecting")
            forget_personal_data()
            await self._close()

    async def _close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None and not connection.is_closed():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(connection.close(), 2.0)


@contextlib.asynccontextmanager
async def erasures_heard(database: Database) -> AsyncIterator[ErasureListener]:
    listener = ErasureListener(database)
    await listener.start()
    try:
        yield listener
    finally:
        await listener.stop()
