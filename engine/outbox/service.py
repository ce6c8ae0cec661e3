"""The outbox role's work: the delivery worker, the outcome follower, and the depth metric.

Every process running the ``outbox`` role runs all three; several may run at once (claims skip
rows another worker holds; the follower's cursor row is locked by one of them per batch).
"""

from __future__ import annotations

import asyncio
import logging

import asyncpg

from engine.database import Database
from engine.errors import DatabaseError
from engine.notifications import Notifications
from engine.outbox import follower, store
from engine.outbox.metrics import OUTBOX_DEPTH
from engine.outbox.settings import WebhooksSettings
from engine.outbox.signing import new_secret, parse_secret
from engine.outbox.targets import parse_allow
from engine.outbox.transport import HostResolver, guarded_client
from engine.outbox.worker import OutboxWorker

log = logging.getLogger("herald.outbox")

DEPTH_INTERVAL = 5.0


async def step_secret(connection: asyncpg.Connection, settings: WebhooksSettings) -> str:
    """``[webhooks] step_secret``, else the one generated once and kept in the database."""
    if settings.step_secret is not None:
        return settings.step_secret
    await connection.execute(
        "INSERT INTO outbox_secrets (name, secret) VALUES ('step', $1) "
        "ON CONFLICT (name) DO NOTHING", new_secret())
    secret: str = await connection.fetchval(
        "SELECT secret FROM outbox_secrets WHERE name = 'step'")
    return secret


class OutboxService:
    def __init__(self, database: Database, settings: WebhooksSettings,
                 notifications: Notifications | None = None) -> None:
        """``notifications``: the process's LISTEN connection (:mod:`engine.notifications`);
        without one the service makes its own."""
        self.database = database
        self.settings = settings
        self.client = guarded_client(parse_allow(settings.allow),
                                     HostResolver(settings.resolver), settings.timeout)
        self.worker: OutboxWorker | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._notifications = notifications
        self._own_notifications: Notifications | None = None

    async def start(self) -> None:
        async with self.database.connection() as connection:
            key = parse_secret(await step_secret(connection, self.settings))
            await follower.ensure_cursor(connection)
        self.worker = OutboxWorker(self.database, self.settings, self.client, key)
        await self._listen()
        self._tasks = [asyncio.create_task(self.worker.run(), name="outbox-worker"),
                       asyncio.create_task(self._follow(), name="outbox-follower"),
                       asyncio.create_task(self._housekeeping(), name="outbox-depth")]
        log.info("outbox started", extra={"owner": self.worker.owner})

    async def _listen(self) -> None:
        """New outbox rows wake the worker; so does a gap in the notifications (some may
        have gone unheard). Without them it still polls every poll_interval."""
        notifications = self._notifications or Notifications(self.database)
        await notifications.subscribe(store.CHANNEL, self._woken, on_gap=self._woken)
        if self._notifications is None:
            self._own_notifications = notifications
            await notifications.start()

    def _woken(self, *_: object) -> None:
        if self.worker is not None:
            self.worker.wake.set()

    async def _follow(self) -> None:
        while True:
            try:
                passed = await follower.follow_once(self.database)
            except DatabaseError as exc:
                log.warning("outbox follower: database error; retrying",
                            extra={"error": str(exc)})
                passed = 0
            if not passed:
                await asyncio.sleep(self.settings.poll_interval)

    async def _housekeeping(self) -> None:
        while True:
            try:
                async with self.database.connection() as connection:
                    for state, count in (await store.depth(connection)).items():
                        OUTBOX_DEPTH.labels(state).set(count)
                    await store.purge_delivered(connection, self.settings.keep_delivered)
            except DatabaseError as exc:
                log.warning("outbox depth not read", extra={"error": str(exc)})
            await asyncio.sleep(DEPTH_INTERVAL)

    async def stop(self, grace: float = 4.0) -> None:
        for task in self._tasks:
            task.cancel()
        if self._tasks:  # bounded: a task stuck past its cancellation is left behind
            await asyncio.wait(self._tasks, timeout=5.0)
        if self.worker is not None:
            await self.worker.drain(grace)
        if self._own_notifications is not None:
            await self._own_notifications.stop()
        await self.client.aclose()
