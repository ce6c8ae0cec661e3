"""The leader's "processed" notice (automation.live.service.PROCESSED_CHANNEL): at most one per
interval, at once when none went out within it, the one owed sent when the interval is up or
when the service stops; each sent after the leader has acted on the events it covers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from automation.live.service import PROCESSED_CHANNEL, AutomationService
from engine.database import Database, connect_one
from tests.support.automation import automation_service, post_event, wait_for


class Notices:
    """A LISTEN connection that records, for each notice, how many events the service had
    acted on when it arrived."""

    def __init__(self) -> None:
        self.processed_at_notice: list[int] = []
        self.arrived = asyncio.Event()
        self.service: AutomationService | None = None
        self.connection: Any = None

    def on_notice(self, *_args: object) -> None:
        assert self.service is not None
        self.processed_at_notice.append(self.service.processed)
        self.arrived.set()

    async def next(self, count: int) -> None:
        async with asyncio.timeout(20):
            while len(self.processed_at_notice) < count:
                self.arrived.clear()
                await self.arrived.wait()

    async def settle(self) -> None:
        """Every notice committed before this call has been received (Postgres delivers them
        before the answer to a query)."""
        await self.connection.fetchval("SELECT 1")


@asynccontextmanager
async def listening(database_url: str) -> AsyncIterator[Notices]:
    notices = Notices()
    notices.connection = await connect_one(database_url)
    try:
        await notices.connection.add_listener(PROCESSED_CHANNEL, notices.on_notice)
        yield notices
    finally:
        await notices.connection.close()


@asynccontextmanager
async def watched_service(database: Database, database_url: str,
                          interval: float) -> AsyncIterator[Notices]:
    """The live service with that notice interval, and a listener for its notices; on leaving,
    the service has stopped and every notice it sent has arrived."""
    async with listening(database_url) as notices:
        async with automation_service(database, processed_notify_interval=interval) as service:
            notices.service = service
            yield notices
        await notices.settle()


async def outbound_count(connection: Any) -> int:
    return int(await connection.fetchval("SELECT count(*) FROM outbound_messages"))


async def test_notices_are_throttled_and_the_owed_one_goes_out_at_stop(
        database: Database, database_url: str) -> None:
    async with watched_service(database, database_url, interval=3600) as notices:
        await post_event(database, "c1", "signed_up", email="c1@example.com")
        await notices.next(1)  # none went out before: at once, after the event was acted on
        assert notices.processed_at_notice == [1]
        for contact in ("c2", "c3", "c4"):
            await post_event(database, contact, "signed_up", email=f"{contact}@example.com")

        async def all_sent(connection: Any) -> bool:
            return await outbound_count(connection) == 4

        await wait_for(database_url, all_sent)
    # Within the interval no other notice went out; the one owed for c2-c4 went out as the
    # service stopped, after the last of them was acted on.
    assert notices.service is not None and notices.service.processed_notices == 2
    assert notices.processed_at_notice == [1, 4]


async def test_the_owed_notice_goes_out_when_its_interval_is_up(
        database: Database, database_url: str) -> None:
    async with watched_service(database, database_url, interval=1.0) as notices:
        await post_event(database, "c1", "signed_up", email="c1@example.com")
        await notices.next(1)
        await post_event(database, "c2", "signed_up", email="c2@example.com")
        await notices.next(2)  # no other event, the service running: the interval ends it
        assert notices.processed_at_notice == [1, 2]
    assert notices.processed_at_notice == [1, 2]  # none was owed at the stop
    assert notices.service is not None and notices.service.processed_notices == 2
