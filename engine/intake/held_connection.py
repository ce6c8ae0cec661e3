"""One pooled connection kept by a group-commit writer from one batch to the next.

Giving a connection back to asyncpg's pool resets it (one more round trip: advisory locks,
cursors, listeners, settings), and taking one costs a little bookkeeping; a writer that commits
batch after batch keeps its connection instead. :class:`HeldConnection` is a :class:`Database`
over the same pool whose :meth:`connection` hands out that one connection, acquiring it on
first use.

A batch leaves nothing behind on the connection (its statements run in autocommit or in a
transaction that commits or rolls back; ``set_config(..., true)`` lasts until the end of its
own statement's transaction), so the reset is only worth it after something went wrong: after
any error in a block the connection goes back to the pool (reset, or dropped when broken) and
the next block acquires another. Not for concurrent use: one per writer task.

While held, the connection encodes ``timestamptz`` with :mod:`engine.intake.timestamp_codec`
(a batch's repeated ``occurred_at`` encoded once); asyncpg's codec is put back before the
connection returns to the pool.

While held, it also plans with ``plan_cache_mode = force_generic_plan``: each prepared
statement is planned once, not on every run. Under the default (``auto``) Postgres compares a
generic plan's estimate with those of its first custom plans, and for a statement over a small
array parameter (``unnest($2::text[])``, ``= ANY($1)``: a custom plan knows its length) it can
keep re-planning at every run; the plain batch's statement did, about 0.2 ms of Postgres CPU
each time, until its contacts became JSON text (docs/PERFORMANCE.md, sixth pass). Forcing the
generic plan keeps the writers' other array statements from doing the same. Every statement a
writer runs has an index for its keys either way. The pool's reset on release (``RESET ALL``)
puts the default back for the pool's other users.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg

from engine.database import GENERIC_PLANS, Database
from engine.db_errors import database_errors
from engine.intake import timestamp_codec


class HeldConnection(Database):
    def __init__(self, database: Database) -> None:
        super().__init__(database.pool, database.url, database.timeouts)
        self._held: asyncpg.Connection | None = None

    @asynccontextmanager
    async def connection(self, timeout: float | None = None
                         ) -> AsyncIterator[asyncpg.Connection]:
        """The held connection (acquired within ``timeout`` if none is held); database errors
        in the block leave as :mod:`engine.errors` types, and give the connection back."""
        with database_errors():
            if self._held is None:
                held = await self.pool.acquire(timeout=timeout or self.timeouts.acquire)
                try:
                    await timestamp_codec.install(held)
                    await held.execute(GENERIC_PLANS)
                except BaseException:
                    await self.pool.release(held)
                    raise
                self._held = held
            try:
                yield self._held
            except BaseException:
                await self.release()
                raise

    async def release(self) -> None:
        """Give the connection back to the pool (which resets it, or drops it if broken)."""
        held, self._held = self._held, None
        if held is None:
            return
        try:
            await timestamp_codec.remove(held)
        except Exception:  # a connection that cannot be restored is of no use
            held.terminate()  # the pool replaces it
        try:
            await self.pool.release(held, timeout=self.timeouts.acquire)
        except Exception:  # a connection that cannot be reset is of no use
            with contextlib.suppress(Exception):
                held.terminate()
