"""The outbox worker: claim due rows with a lease, send each signed request, record the outcome.

At most ``concurrency`` rows are held in memory (claimed only while there is room) and at most
``endpoint_concurrency`` requests go to one endpoint at once. A 2xx delivers; anything else (a
status, a transport error, a timeout, a name that does not resolve) is retried after a
full-jitter backoff until ``max_attempts``, then the row is dead; a refused target (private
address not allow-listed) is dead at once. The request body is never read back beyond the
status line. A worker that dies leaves its rows leased; they are claimed again when the lease
ends, with the same ``webhook-id``.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta

import httpx

from engine.database import Database
from engine.errors import DatabaseError
from engine.outbox import store
from engine.outbox.backoff import full_jitter
from engine.outbox.metrics import OUTBOX_ATTEMPTS
from engine.outbox.settings import WebhooksSettings
from engine.outbox.signing import InvalidSecret, parse_secret, signed_headers
from engine.outbox.targets import TargetRefused
from engine.outbox.transport import TargetUnresolved

log = logging.getLogger("herald.outbox.worker")

USER_AGENT = "Herald-Webhooks/1"


class OutboxWorker:
    def __init__(self, database: Database, settings: WebhooksSettings,
                 client: httpx.AsyncClient, step_key: bytes) -> None:
        self.database = database
        self.settings = settings
        self.client = client
        self.step_key = step_key
        self.owner = f"outbox-{uuid.uuid4().hex[:12]}"
        self.wake = asyncio.Event()
        self.recorded = asyncio.Event()  # set after each outcome is written (tests wait on it)
        self._tasks: set[asyncio.Task[None]] = set()
        self._busy: Counter[str] = Counter()
        self._gates: dict[str, asyncio.Semaphore] = {}

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    async def run(self) -> None:
        """Claim and send until cancelled."""
        settings = self.settings
        while True:
            free = settings.concurrency - len(self._tasks)
            claimed: list[store.Claimed] = []
            if free > 0:
                full = [endpoint for endpoint, n in self._busy.items()
                        if n >= settings.endpoint_concurrency]
                try:
                    async with self.database.connection() as connection:
                        claimed = await store.claim(connection, self.owner, settings.lease,
                                                    free, settings.endpoint_concurrency, full)
                except DatabaseError as exc:
                    log.warning("outbox claim failed; retrying", extra={"error": str(exc)})
            for row in claimed:
                self._busy[row.endpoint] += 1
                task = asyncio.create_task(self._deliver(row))
                self._tasks.add(task)
                task.add_done_callback(self._done)
            if len(claimed) == free and free > 0:
                continue  # there may be more due rows
            try:
                await asyncio.wait_for(self.wake.wait(), settings.poll_interval)
            except TimeoutError:
                pass
            self.wake.clear()

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self.wake.set()  # room for another claim

    async def drain(self, grace: float) -> None:
        """Let requests in flight finish within ``grace``; cancel the rest (their rows are due
        again at once, or after the lease if that cannot be written: at least once)."""
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=grace)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)

    async def _deliver(self, row: store.Claimed) -> None:
        gate = self._gates.setdefault(row.endpoint,
                                      asyncio.Semaphore(self.settings.endpoint_concurrency))
        try:
            async with gate:
                state, status, error = await self._attempt(row)
            await self._record(row, state, status, error)
        except asyncio.CancelledError:  # stopping: hand the row back now, not at lease end
            await asyncio.shield(self._release(row))
            raise
        finally:
            self._busy[row.endpoint] -= 1
            if self._busy[row.endpoint] <= 0:
                del self._busy[row.endpoint]
                self._gates.pop(row.endpoint, None)

    async def _attempt(self, row: store.Claimed) -> tuple[str, int | None, str | None]:
        """(delivered | retry | dead, HTTP status, error)."""
        try:
            key = parse_secret(row.secret) if row.secret else self.step_key
        except InvalidSecret as exc:
            return "dead", None, f"bad secret: {exc}"
        timeout = min(row.timeout or self.settings.timeout, self.settings.lease / 2)
        headers = {**dict(row.headers), "content-type": "application/json",
                   "user-agent": USER_AGENT,
                   **signed_headers(key, row.message_id, int(time.time()), row.body)}
        try:
            async with asyncio.timeout(timeout):
                async with self.client.stream("POST", row.url, content=row.body,
                                              headers=headers) as response:
                    status = response.status_code
        except TargetRefused as exc:
            return "dead", None, f"refused: {exc}"
        except TargetUnresolved as exc:
            return "retry", None, str(exc)
        except TimeoutError:
            return "retry", None, f"no answer within {timeout:g}s"
        except httpx.HTTPError as exc:
            return "retry", None, f"{type(exc).__name__}: {exc}"[:300]
        if 200 <= status < 300:
            return "delivered", status, None
        return "retry", status, f"HTTP {status}"

    async def _release(self, row: store.Claimed) -> None:
        """Due again at once (the request may have arrived: the same webhook-id lets the
        receiver drop it)."""
        try:
            async with self.database.connection() as connection:
                await store.record(connection, row.id, self.owner, "pending", None,
                                   "interrupted: the worker stopped", datetime.now(UTC))
        except DatabaseError:
            pass  # the lease runs out instead

    async def _record(self, row: store.Claimed, outcome: str, status: int | None,
                      error: str | None) -> None:
        retry_at = None
        if outcome == "retry" and row.attempts >= (row.max_attempts
                                                   or self.settings.max_attempts):
            outcome = "dead"
            error = f"gave up after {row.attempts} attempts: {error}"
        if outcome == "retry":
            delay = full_jitter(row.attempts, self.settings.backoff_base,
                                self.settings.backoff_cap)
            retry_at = datetime.now(UTC) + timedelta(seconds=delay)
        state = {"delivered": "delivered", "dead": "dead", "retry": "pending"}[outcome]
        try:
            async with self.database.connection() as connection:
                kept = await store.record(connection, row.id, self.owner, state, status,
                                          error, retry_at)
        except DatabaseError as exc:  # the lease runs out and the row is sent again
            log.warning("outbox outcome not recorded", extra={"row": row.id,
                                                              "error": str(exc)})
            return
        OUTBOX_ATTEMPTS.labels(outcome if kept else "lease_lost").inc()
        self.recorded.set()
        if not kept:
            log.warning("outbox lease lost", extra={"row": row.id})
        elif outcome != "delivered":
            log.info("outbox attempt failed", extra={
                "row": row.id, "endpoint": row.endpoint, "attempt": row.attempts,
                "outcome": outcome, "error": error})
