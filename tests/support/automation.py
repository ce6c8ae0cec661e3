"""Run the live automation service in-process against a test database."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from automation.content.link_policy import normalize_domains
from automation.live.service import PROCESSED_CHANNEL, AutomationService
from automation.loading.catalog import Catalog
from automation.runtime.guards import parse_quiet_hours
from automation.runtime.interpreter import Policy
from automation.settings import AutomationSettings
from automation.stores.postgres import PgStore
from engine.database import Database, connect_one
from engine.eventlog import EVENTS_CHANNEL, LogEvent, append_events
from engine.link_keys import LinkKeys
from mta.queue.enqueue import OUTBOUND_CHANNEL
from tests.support.mta import identity_for, mta_settings

REPO = Path(__file__).resolve().parent.parent.parent
PUBLIC_URL = "http://127.0.0.1:8025"
TEST_LINK_KEYS = LinkKeys("t1", {"t1": b"k" * 32})


def example_catalog() -> Catalog:
    return Catalog.load(REPO / "config" / "workflows", REPO / "config" / "templates")


@asynccontextmanager
async def automation_service(database: Database, catalog: Catalog | None = None,
                             lead: bool = True, public_url: str | None = PUBLIC_URL,
                             store_type: type[PgStore] = PgStore, track: bool = True,
                             require_consent: bool = False,
                             processed_notify_interval: float | None = None,
                             **overrides: Any) -> AsyncIterator[AutomationService]:
    """``lead``: wait until this service leads (else until it knows it stands by);
    ``require_consent``: ``[privacy] require_consent``; ``processed_notify_interval``: the
    service's (its default when None)."""
    catalog = catalog or example_catalog()
    settings = AutomationSettings(from_address="Shop <news@shop.test>", **overrides)
    policy = Policy(catalog.templates, settings.frequency_cap,
                    parse_quiet_hours(settings.quiet_hours),
                    normalize_domains(settings.link_domains), require_consent)
    identity = await identity_for(database, mta_settings())
    store = store_type(database, catalog, policy, settings, identity, TEST_LINK_KEYS,
                    public_url, track=track)
    service = (AutomationService(database, catalog, store, settings)
               if processed_notify_interval is None else
               AutomationService(database, catalog, store, settings,
                                 processed_notify_interval=processed_notify_interval))
    await service.start()
    try:
        await asyncio.wait_for((service.leading if lead else service.settled).wait(), 20)
        yield service
    finally:
        await service.stop()


async def post_event(database: Database, contact_id: str, kind: str, email: str | None = None,
                     when: datetime | None = None, **properties: Any) -> None:
    async with database.transaction() as connection:
        if email is not None:
            await connection.execute(
                "INSERT INTO contacts (contact_id, email) VALUES ($1, $2) "
                "ON CONFLICT (contact_id) DO UPDATE SET email = EXCLUDED.email",
                contact_id, email)
        await append_events(connection, [LogEvent(kind, contact_id, email, properties,
                                                   when or datetime.now(UTC), "test")])


async def wait_for(database_url: str, check: Callable[[Any], Awaitable[bool]],
                   timeout: float = 20.0) -> None:
    """Re-run ``check(connection)`` whenever a message is queued or an event is logged."""
    woken = asyncio.Event()
    connection = await connect_one(database_url)

    def wake(*_args: object) -> None:
        woken.set()

    await connection.add_listener(OUTBOUND_CHANNEL, wake)
    await connection.add_listener(EVENTS_CHANNEL, wake)
    await connection.add_listener(PROCESSED_CHANNEL, wake)
    try:
        async with asyncio.timeout(timeout):
            while True:
                woken.clear()
                if await check(connection):
                    return
                await woken.wait()
    finally:
        await connection.close()
