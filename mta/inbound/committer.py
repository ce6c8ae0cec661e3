"""Group commit for received messages: sessions that reach the end of DATA at the same time share
one transaction, so durability costs one fsync per batch, not per message (Postfix fsyncs each
queue file; Postgres lets us share the flush).

A session's :meth:`GroupCommitter.store` returns only after its row is committed, and raises
when the batch could not be committed (the session answers 451). The commit runs in the
writer task, so a client that hangs up mid-commit cannot leave it half done.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque

from engine.database import Database
from mta.inbound.store import Received, insert_many

MAX_BATCH_MESSAGES = 200
MAX_BATCH_BYTES = 16 * 1024 * 1024


class CommitterStopped(RuntimeError):
    """The server is stopping and takes no new messages."""


class GroupCommitter:
    def __init__(self, database: Database) -> None:
        self._database = database
        self._pending: deque[tuple[Received, asyncio.Future[None]]] = deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="inbound-committer")

    async def stop(self) -> None:
        """Take nothing new; commit what is queued; stop."""
        self._closing = True
        self._wake.set()
        task, self._task = self._task, None
        if task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def store(self, message: Received) -> None:
        if self._closing:
            raise CommitterStopped("the inbound server is stopping")
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        future.add_done_callback(_retrieve)  # a session that hung up never awaits it
        self._pending.append((message, future))
        self._wake.set()
        await asyncio.shield(future)

    def _take(self) -> list[tuple[Received, asyncio.Future[None]]]:
        batch: list[tuple[Received, asyncio.Future[None]]] = []
        size = 0
        while self._pending and len(batch) < MAX_BATCH_MESSAGES and (
                not batch or size + len(self._pending[0][0].raw) <= MAX_BATCH_BYTES):
            item = self._pending.popleft()
            batch.append(item)
            size += len(item[0].raw)
        return batch

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                batch = self._take()
                try:
                    async with self._database.transaction() as connection:
                        await insert_many(connection, [m for m, _ in batch])
                except Exception as exc:  # every session of the batch answers 451
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                else:
                    for _, future in batch:
                        if not future.done():
                            future.set_result(None)
            if self._closing:
                return


def _retrieve(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()
