"""Group commit for SMTP servers: sessions that reach the end of DATA at the same time share
one transaction, so durability costs one fsync per batch, not per message (Postfix fsyncs each
queue file; Postgres lets us share the flush).

A session's :meth:`GroupCommitter.store` returns only after its item is committed, and raises
when it could not be (the session answers 451). The commit runs in the writer task, so a
client that hangs up mid-commit cannot leave it half done. When a batch of several items is
refused for a reason other than an unreachable database, each item is committed alone, so one
bad message never costs the others their 250.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

import asyncpg

from engine.database import Database
from engine.errors import DatabaseUnavailable

MAX_BATCH_ITEMS = 200
MAX_BATCH_BYTES = 16 * 1024 * 1024

T = TypeVar("T")
Writer = Callable[[asyncpg.Connection, list[T]], Awaitable[None]]


class CommitterStopped(RuntimeError):
    """The server is stopping and takes no new messages."""


class GroupCommitter(Generic[T]):
    """``write(connection, items)`` runs inside the batch's transaction; ``size(item)`` bounds
    a batch's bytes."""

    def __init__(self, database: Database, write: Writer[T], size: Callable[[T], int],
                 name: str = "smtp-committer") -> None:
        self._database = database
        self._write = write
        self._size = size
        self._name = name
        self._pending: deque[tuple[T, asyncio.Future[None]]] = deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=self._name)

    async def stop(self) -> None:
        """Take nothing new; commit what is queued; stop."""
        self._closing = True
        self._wake.set()
        task, self._task = self._task, None
        if task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def store(self, item: T) -> None:
        if self._closing:
            raise CommitterStopped("the server is stopping")
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        future.add_done_callback(_retrieve)  # a session that hung up never awaits it
        self._pending.append((item, future))
        self._wake.set()
        await asyncio.shield(future)

    def _take(self) -> list[tuple[T, asyncio.Future[None]]]:
        batch: list[tuple[T, asyncio.Future[None]]] = []
        size = 0
        while self._pending and len(batch) < MAX_BATCH_ITEMS and (
                not batch or size + self._size(self._pending[0][0]) <= MAX_BATCH_BYTES):
            item = self._pending.popleft()
            batch.append(item)
            size += self._size(item[0])
        return batch

    async def _commit(self, batch: list[tuple[T, asyncio.Future[None]]]) -> None:
        try:
            async with self._database.transaction() as connection:
                await self._write(connection, [item for item, _ in batch])
        except Exception as exc:
            if len(batch) > 1 and not isinstance(exc, DatabaseUnavailable):
                for single in batch:  # find the one the database refuses
                    await self._commit([single])
                return
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
        else:
            for _, future in batch:
                if not future.done():
                    future.set_result(None)

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                await self._commit(self._take())
            if self._closing:
                return


def _retrieve(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()
