"""Open Herald's database: the configured server, or the embedded one; then migrate."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from automation.migrations import AUTOMATION_MIGRATIONS
from engine.database import Database, connect_one
from engine.embedded_postgres import EmbeddedPostgres, start_embedded
from engine.migrations import ENGINE_MIGRATIONS, MigrationSource, apply_migrations
from herald.settings import Settings
from mta.migrations import MTA_MIGRATIONS

log = logging.getLogger("herald.database")

MIGRATION_SOURCES: list[MigrationSource] = [ENGINE_MIGRATIONS, MTA_MIGRATIONS,
                                             AUTOMATION_MIGRATIONS]


@asynccontextmanager
async def database_url(settings: Settings) -> AsyncIterator[str]:
    """The configured URL, or that of an embedded Postgres started (and stopped) here."""
    if settings.engine.database_url:
        yield settings.engine.database_url
        return
    embedded: EmbeddedPostgres = await asyncio.to_thread(start_embedded, settings.engine.data_dir)
    try:
        yield embedded.url
    finally:
        await asyncio.to_thread(embedded.stop)


async def migrate(url: str) -> list[str]:
    connection = await connect_one(url)
    try:
        applied = await apply_migrations(connection, MIGRATION_SOURCES)
    finally:
        await connection.close()
    names = [f"{m.component}/{m.version:04d}_{m.name}" for m in applied]
    if names:
        log.info("migrations applied", extra={"migrations": names})
    return names


@asynccontextmanager
async def open_database(settings: Settings) -> AsyncIterator[Database]:
    async with database_url(settings) as url:
        await migrate(url)
        database = await Database.connect(url, settings.engine.pool_min_size,
                                          settings.engine.pool_max_size,
                                          settings.engine.database_timeouts)
        try:
            yield database
        finally:
            await database.close()
