"""Group commit for run transitions: transitions of different contacts share transactions.

One commit (one WAL flush) per transition caps the live engine at a few hundred transitions a
second. :class:`GroupCommit` runs each transition in its own SAVEPOINT inside a transaction it
shares with the transitions of other contacts that arrive meanwhile, and commits them together:

* **atomic per transition**: a transition's writes (run row, enqueued messages, decision log,
  contact updates) are all inside its savepoint, so they commit together or not at all;
* **isolated failures**: a transition that raises rolls back to its savepoint and gets its error;
  the others in its group still commit. Only a failed COMMIT (the connection went away) fails
  every member, and then none of them took effect;
* **durable before it returns**: :meth:`GroupCommit.run` returns only after its group committed,
  so a caller that goes on (the next transition of the same contact, the follower's cursor)
  builds on committed state; a contact's transitions therefore stay in log order;
* **bounded**: at most ``connections`` groups are open at once, each of at most ``max_batch``
  transitions. A group stops taking members when it is full or when its last member finished
  (it then commits at once: a lone transition waits for nobody).

The members of a group run one after another on the group's connection (a connection runs one
statement at a time); several groups run concurrently on their own connections.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from typing import TypeVar

import asyncpg
from asyncpg.transaction import Transaction

from engine.database import Database
from engine.db_errors import database_errors

T = TypeVar("T")


class _Group:
    """One shared transaction and the transitions in it."""

    __slots__ = ("connection", "done", "exits", "joined", "lock", "ok", "open", "pending",
                 "ready", "transaction")

    def __init__(self) -> None:
        self.joined = 0  # members that ever joined
        self.pending = 0  # members that have not finished their work yet
        self.ok = 0  # members whose work succeeded (their savepoints were released)
        self.open = True  # still taking members
        self.lock = asyncio.Lock()  # members run one at a time on the connection
        loop = asyncio.get_running_loop()
        self.ready: asyncio.Future[None] = loop.create_future()  # connection and BEGIN done
        self.done: asyncio.Future[None] = loop.create_future()  # committed (or failed)
        self.connection: asyncpg.Connection | None = None
        self.transaction: Transaction | None = None
        self.exits = AsyncExitStack()


class GroupCommit:
    def __init__(self, database: Database, *, connections: int = 8,
                 max_batch: int = 8) -> None:
        if connections < 1 or max_batch < 1:
            raise ValueError("group commit needs connections >= 1 and max_batch >= 1")
        self.database = database
        self.max_batch = max_batch
        self._slots = asyncio.Semaphore(connections)
        self._open: _Group | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.commits = 0  # groups committed (for benches and tests)
        self.committed = 0  # transitions committed

    async def run(self, work: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        """Run ``work(connection)`` as one transition: in a savepoint of a shared transaction;
        returns its result once that transaction committed. Errors (the transition's own, or
        the group's COMMIT's) leave as :mod:`engine.errors` types where they are the
        database's."""
        group = self._join()
        failed = True
        try:
            await asyncio.shield(group.ready)
            async with group.lock:
                connection = group.connection
                assert connection is not None
                with database_errors():
                    async with connection.transaction():  # a SAVEPOINT in the shared one
                        result = await work(connection)
            failed = False
        finally:
            self._leave(group, failed)
        await asyncio.shield(group.done)
        return result

    def _join(self) -> _Group:
        group = self._open
        if group is None or not group.open:
            group = self._open = _Group()
            self._spawn(self._begin(group))
        group.joined += 1
        group.pending += 1
        if group.joined >= self.max_batch:
            self._close(group)
        return group

    def _leave(self, group: _Group, failed: bool) -> None:
        group.pending -= 1
        if not failed:
            group.ok += 1
        if group.pending == 0:
            self._close(group)
            self._spawn(self._commit(group))

    def _close(self, group: _Group) -> None:
        group.open = False
        if self._open is group:
            self._open = None

    def _spawn(self, coroutine: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _begin(self, group: _Group) -> None:
        try:
            await group.exits.enter_async_context(_Slot(self._slots))
            connection = await group.exits.enter_async_context(self.database.connection())
            group.connection = connection
            with database_errors():
                group.transaction = connection.transaction()
                await group.transaction.start()
        except BaseException as error:
            await group.exits.aclose()
            group.ready.set_exception(error)  # every member awaits it and so sees the error
            group.done.set_exception(error)
            group.done.exception()  # marked retrieved: members stop at ready
            return
        group.ready.set_result(None)

    async def _commit(self, group: _Group) -> None:
        try:
            await asyncio.shield(group.ready)
        except BaseException:
            return  # never began: the members already have the error
        assert group.transaction is not None
        try:
            with database_errors():
                await group.transaction.commit()
        except BaseException as error:
            try:
                with database_errors():
                    await group.transaction.rollback()
            except Exception:  # the connection is gone: the pool resets it
                pass
            group.done.set_exception(error)
        else:
            self.commits += 1
            self.committed += group.ok
            group.done.set_result(None)
        finally:
            await group.exits.aclose()

    async def close(self) -> None:
        """Wait for groups in flight to finish."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


class _Slot:
    """One of the ``connections`` groups that may be open at once."""

    def __init__(self, semaphore: asyncio.Semaphore) -> None:
        self.semaphore = semaphore

    async def __aenter__(self) -> None:
        await self.semaphore.acquire()

    async def __aexit__(self, *exc: object) -> None:
        self.semaphore.release()
