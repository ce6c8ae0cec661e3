"""Shared fixtures: a fresh migrated Postgres database per test, API keys, a running app."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator

import pytest

from engine.database import Database
from tests.support.postgres import EmbeddedTestServer, TestDatabases


@pytest.fixture(scope="session")
def postgres_admin_url() -> Iterator[str]:
    configured = os.environ.get("HERALD_TEST_DATABASE_URL")
    if configured:
        yield configured
        return
    server = EmbeddedTestServer()
    try:
        yield server.url
    finally:
        server.cleanup()


@pytest.fixture(scope="session")
def test_databases(postgres_admin_url: str) -> Iterator[TestDatabases]:
    databases = TestDatabases(postgres_admin_url)
    asyncio.run(databases.create_template())
    try:
        yield databases
    finally:
        asyncio.run(databases.drop_template())


@pytest.fixture
async def database_url(test_databases: TestDatabases) -> AsyncIterator[str]:
    url = await test_databases.create()
    try:
        yield url
    finally:
        await test_databases.drop(url)


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[Database]:
    db = await Database.connect(database_url, min_size=1, max_size=8)
    try:
        yield db
    finally:
        await db.close()
