"""Group reads: concurrent look-ups share one query, as concurrent events share one commit.

A caller that finds no query running leads: it takes the waiting keys (its own among them,
at most ``max_batch``), runs one query for all, answers everyone in it, and, if more keys
arrived meanwhile, runs one more batch before it returns; the waiters left then are woken and
one of them leads next. So under load one round trip serves many hits, and no caller waits
for more than two queries plus its own. A failed query fails the callers of that batch (each
gets the error); a leader cancelled mid-query puts its batch back for the next leader.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from itertools import islice
from typing import Any, Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()  # a waiter may be gone: never "exception was never retrieved"


class GroupedLookup(Generic[K, V]):
    def __init__(self, fetch: Callable[[list[K]], Awaitable[dict[K, V]]],
                 max_batch: int = 500) -> None:
        self._fetch = fetch
        self._max_batch = max_batch
        self._waiting: dict[K, asyncio.Future[V | None]] = {}
        self._running = False
        self._handoff: asyncio.Future[None] | None = None

    async def get(self, key: K) -> V | None:
        loop = asyncio.get_running_loop()
        future = self._waiting.get(key)
        if future is None:
            future = self._waiting[key] = loop.create_future()
            future.add_done_callback(_retrieve)
        while not future.done():
            if not self._running:
                await self._lead(key)
                continue
            if self._handoff is None:
                self._handoff = loop.create_future()
            await asyncio.wait((future, self._handoff), return_when=asyncio.FIRST_COMPLETED)
        return future.result()

    async def _lead(self, own: K) -> None:
        self._running = True
        try:
            for _ in range(2):
                if not self._waiting:
                    break
                keys = list(islice(self._waiting, self._max_batch))
                if own in self._waiting and own not in keys:
                    keys[-1] = own
                await self._run({key: self._waiting.pop(key) for key in keys})
        finally:
            self._running = False
            handoff, self._handoff = self._handoff, None
            if handoff is not None and not handoff.done():
                handoff.set_result(None)

    async def _run(self, batch: dict[K, asyncio.Future[V | None]]) -> None:
        try:
            found = await self._fetch(list(batch))
        except asyncio.CancelledError:
            for key, future in batch.items():  # for the next leader
                if not future.done():
                    self._waiting.setdefault(key, future)
            raise
        except Exception as exc:
            for future in batch.values():
                if not future.done():
                    future.set_exception(exc)
            return
        for key, future in batch.items():
            if not future.done():
                future.set_result(found.get(key))
