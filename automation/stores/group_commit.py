"""Group commit for run transitions: transitions of different contacts share one transaction
and are handled together, set-based.

One commit (one WAL flush) and a dozen round trips per transition cap the live engine at a few
hundred transitions a second. :class:`GroupCommit` queues the transitions that callers submit
and hands each group of them (up to ``max_batch``) to ``handle(connection, items)`` in ONE
transaction, so the handler can serve the whole group with a few set-based statements:

* **atomic per transition**: a transition's writes (run row, enqueued messages, decision log,
  contact updates) are all in its group's transaction, so they commit together or not at all;
* **isolated failures**: if the handler raises for a group (a bad transition: a bug in a step,
  a constraint it breaks), the group is rolled back and every member is tried again alone, in
  its own transaction: the bad one gets its error, the others commit. Only a failed COMMIT
  (the connection went away) fails every member of that transaction, and then none took
  effect;
* **durable before it returns**: :meth:`GroupCommit.run` returns only after its transaction
  committed, so a caller that goes on (the next transition of the same contact, the
  follower's cursor) builds on committed state; a contact's transitions therefore stay in log
  order. Items with the same ``key`` (a contact) never share a group;
* **bounded**: at most ``connections`` groups are in flight at once, each of at most
  ``max_batch`` transitions. A free connection takes what is waiting at once (a lone
  transition waits for nobody); while all are busy, newcomers gather into the next group;
* **sized to the backlog**: a group takes at most ``cap`` transitions; the cap starts at
  ``min_batch``, doubles (up to ``max_batch``) each time a group leaves transitions waiting
  behind it, and is back at ``min_batch`` once the queue drained and no group is in
  flight. A short backlog is so drained by several smaller groups in flight at once (each
  member returns only when its whole group committed, so one large group would hold its
  first members back), and a lasting one (a burst) by large groups, which cost less per
  transition.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Generic, TypeVar

import asyncpg

from engine.database import Database
from engine.db_errors import database_errors

T = TypeVar("T")
R = TypeVar("R")

Handler = Callable[[asyncpg.Connection, Sequence[T]], Awaitable[Sequence[R]]]


class GroupFailed(Exception):
    """The handler failed for a group of several items: each is tried again alone."""


class GroupCommit(Generic[T, R]):
    def __init__(self, database: Database, handle: Handler[T, R], *,
                 key: Callable[[T], Hashable] | None = None, connections: int = 8,
                 max_batch: int = 8, min_batch: int | None = None) -> None:
        """``handle(connection, items)`` runs inside the group's transaction and returns one
        result per item, in order. ``key(item)``: items with equal keys go to different
        groups (in submission order). Groups are sized between ``min_batch`` (default
        ``max_batch``: take all that waits) and ``max_batch`` by the backlog (see above)."""
        if connections < 1 or max_batch < 1:
            raise ValueError("group commit needs connections >= 1 and max_batch >= 1")
        if min_batch is None:
            min_batch = max_batch
        if not 1 <= min_batch <= max_batch:
            raise ValueError("group commit needs 1 <= min_batch <= max_batch")
        self.database = database
        self.handle = handle
        self.key = key
        self.connections = connections
        self.max_batch = max_batch
        self.min_batch = min_batch
        self.cap = min_batch  # the next group's size at most
        self._pending: deque[tuple[T, asyncio.Future[R]]] = deque()
        self._workers = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self.commits = 0  # transactions committed (for benches and tests)
        self.committed = 0  # transitions committed
        self.retried = 0  # groups that failed and were retried one item at a time

    async def run(self, item: T) -> R:
        """Handle ``item`` in a shared transaction; return its result once that committed.
        Errors (the item's own, or the COMMIT's) leave as :mod:`engine.errors` types where
        they are the database's."""
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if self._workers < self.connections:
            self._workers += 1
            task = asyncio.create_task(self._work())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        # Not shielded: a caller cancelled meanwhile cancels its own future, which the group
        # then leaves alone (it sets only futures not done); its transition is handled all the
        # same, as a shielded one was.
        return await future

    def _take(self) -> list[tuple[T, asyncio.Future[R]]]:
        batch = self._take_up_to(self.cap)
        if self._pending:  # a backlog longer than a group: larger groups
            self.cap = min(self.max_batch, self.cap * 2)
        return batch

    def _take_up_to(self, size: int) -> list[tuple[T, asyncio.Future[R]]]:
        batch: list[tuple[T, asyncio.Future[R]]] = []
        if self.key is None:
            while self._pending and len(batch) < size:
                batch.append(self._pending.popleft())
            return batch
        keys: set[Hashable] = set()
        later: list[tuple[T, asyncio.Future[R]]] = []
        while self._pending and len(batch) < size:
            entry = self._pending.popleft()
            key = self.key(entry[0])
            if key in keys:
                later.append(entry)  # the same contact: a later group, in order
            else:
                keys.add(key)
                batch.append(entry)
        self._pending.extendleft(reversed(later))
        return batch

    async def _work(self) -> None:
        """One connection's loop: take what is waiting, handle it, until nothing is."""
        try:
            while batch := self._take():
                await self._group(batch)
        finally:
            self._workers -= 1
            if not self._workers:  # drained, every connection idle: small groups again
                self.cap = self.min_batch

    async def _group(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        items = [item for item, _ in batch]
        try:
            async with self.database.connection() as connection:
                try:
                    results: Sequence[R | BaseException] = await self._attempt(connection,
                                                                                items)
                except GroupFailed:
                    self.retried += 1
                    results = [await self._alone(connection, item) for item in items]
        except BaseException as error:  # no connection, or the COMMIT failed: none took effect
            for _, future in batch:
                if not future.done():
                    future.set_exception(error)
                    future.exception()  # retrieved: a caller that went away never awaits it
            if not isinstance(error, Exception):
                raise
            return
        for (_, future), result in zip(batch, results, strict=True):
            if future.done():
                continue
            if isinstance(result, BaseException):
                future.set_exception(result)
                future.exception()
            else:
                future.set_result(result)

    async def _attempt(self, connection: asyncpg.Connection, items: list[T]) -> Sequence[R]:
        """One transaction for ``items``; GroupFailed (rolled back) if the handler raised for
        several items, the handler's error if for one."""
        with database_errors():
            transaction = connection.transaction()
            await transaction.start()
            try:
                results = await self.handle(connection, items)
                if len(results) != len(items):
                    raise RuntimeError("group handler returned a result count unlike its items")
            except Exception as error:
                await transaction.rollback()
                if len(items) == 1:
                    raise
                raise GroupFailed from error
            except BaseException:
                await transaction.rollback()
                raise
            await transaction.commit()
        self.commits += 1
        self.committed += len(items)
        return results

    async def _alone(self, connection: asyncpg.Connection, item: T) -> R | BaseException:
        try:
            return (await self._attempt(connection, [item]))[0]
        except Exception as error:
            return error

    async def close(self) -> None:
        """Wait for groups in flight to finish."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
