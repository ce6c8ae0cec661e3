"""Postgres for tests: the server in HERALD_TEST_DATABASE_URL, or an embedded one.

Each test gets a fresh database cloned from a migrated template database (fast, isolated;
never a shared rolled-back transaction).
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from engine.database_creation import create_database
from engine.embedded_postgres import c_collation_for_initdb
from engine.migrations import apply_migrations
from herald.database import MIGRATION_SOURCES


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + name))


class EmbeddedTestServer:
    """A throw-away pgserver instance that tests may also stop and start."""

    def __init__(self, directory: Path | None = None) -> None:
        import pgserver

        self.directory = Path(directory or tempfile.mkdtemp(prefix="herald-pg-"))
        pgdata = self.directory / "pgdata"
        with c_collation_for_initdb(pgdata):  # like production's embedded cluster
            self._server = pgserver.get_server(pgdata, cleanup_mode="delete")
        self.url = self._server.get_uri()

    def stop_server(self) -> None:
        from pgserver._commands import pg_ctl

        pg_ctl(["-w", "-m", "fast", "stop"], pgdata=self._server.pgdata,
               user=self._server.system_user)

    def start_server(self) -> None:
        self._server.ensure_postgres_running()

    def cleanup(self) -> None:
        try:
            self._server.cleanup()
        except (subprocess.CalledProcessError, OSError):
            pass


class TestDatabases:
    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url
        self.template = f"herald_template_{os.getpid()}"

    async def create_template(self) -> None:
        admin = await asyncpg.connect(self.admin_url)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{self.template}" WITH (FORCE)')
            # the clones inherit its collation: "C", as the embedded cluster Herald makes
            await create_database(admin, self.template)
        finally:
            await admin.close()
        connection = await asyncpg.connect(with_database(self.admin_url, self.template))
        try:
            await apply_migrations(connection, MIGRATION_SOURCES)
        finally:
            await connection.close()

    async def create(self) -> str:
        name = f"herald_test_{uuid.uuid4().hex[:12]}"
        admin = await asyncpg.connect(self.admin_url)
        try:
            await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{self.template}"')
        finally:
            await admin.close()
        return with_database(self.admin_url, name)

    async def drop(self, url: str) -> None:
        name = urlsplit(url).path.lstrip("/")
        admin = await asyncpg.connect(self.admin_url)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()

    async def drop_template(self) -> None:
        admin = await asyncpg.connect(self.admin_url)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{self.template}" WITH (FORCE)')
        finally:
            await admin.close()
