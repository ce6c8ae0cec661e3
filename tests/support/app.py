"""Run Herald's HTTP role in-process on an ephemeral loopback port, with keys to call it."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx

from engine.config import EngineSettings, HttpSettings
from engine.database import Database, DatabaseTimeouts, connect_one
from engine.keys import SCOPES, NewKey, create_key
from engine.outbox.settings import WebhooksSettings
from engine.values import HostPort
from herald.roles import HttpRole
from herald.settings import Settings
from mta.settings import MtaSettings
from mta.tracking.settings import TrackingSettings

# The domains the tests' admin key may send from (keys carry their sender domains).
TEST_FROM_DOMAINS = ("shop.test", "shop.example")


@dataclass
class RunningApp:
    base_url: str
    database: Database
    admin_key: str
    role: HttpRole

    def client(self, key: str | None = None, **kwargs: Any) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {key or self.admin_key}"}
        kwargs.setdefault("timeout", 10.0)
        return httpx.AsyncClient(base_url=self.base_url, headers=headers, **kwargs)

    async def new_key(self, *scopes: str, publishable: bool = False,
                      event_types: tuple[str, ...] = (),
                      properties: tuple[str, ...] = (),
                      from_domains: tuple[str, ...] = ()) -> str:
        return (await self.new_site_key(event_types, properties, scopes, publishable,
                                        from_domains)).token

    async def new_site_key(self, event_types: tuple[str, ...], properties: tuple[str, ...] = (),
                           scopes: tuple[str, ...] = (), publishable: bool = True,
                           from_domains: tuple[str, ...] = ()) -> NewKey:
        """A publishable key by default, with its contact-token secret."""
        connection = await connect_one(self.database.url)
        try:
            return await create_key(connection, "test", tuple(scopes), publishable,
                                    event_types, properties, from_domains)
        finally:
            await connection.close()


def test_settings(database_url: str, mta: MtaSettings | None = None,
                  tracking: TrackingSettings | None = None,
                  webhooks: WebhooksSettings | None = None, **http_overrides: Any) -> Settings:
    http = dataclasses.replace(HttpSettings(listen=HostPort("127.0.0.1", 0)), **http_overrides)
    return Settings(engine=EngineSettings(database_url=database_url), http=http,
                    mta=mta or MtaSettings(), tracking=tracking or TrackingSettings(),
                    webhooks=webhooks or WebhooksSettings())


@asynccontextmanager
async def running_app(database_url: str, mta: MtaSettings | None = None,
                      timeouts: DatabaseTimeouts | None = None,
                      tracking: TrackingSettings | None = None,
                      webhooks: WebhooksSettings | None = None,
                      **http_overrides: Any) -> AsyncIterator[RunningApp]:
    settings = test_settings(database_url, mta, tracking, webhooks, **http_overrides)
    database = await Database.connect(database_url, min_size=1, max_size=8, timeouts=timeouts)
    role = HttpRole(settings, database)
    await role.start()
    assert role.server is not None
    app = RunningApp(f"http://127.0.0.1:{role.server.port}", database, "", role)
    app.admin_key = await app.new_key(*SCOPES, from_domains=TEST_FROM_DOMAINS)
    try:
        yield app
    finally:
        await role.stop()
        await database.close()
