"""Numbered SQL migrations, one folder per component, applied in order under an advisory lock.

A component's folder holds files named ``NNNN_what_it_does.sql``. Each file runs in its own
transaction and is recorded in ``schema_migrations``; applying is idempotent and safe when two
processes start at once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from engine.errors import MigrationError

_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_LOCK_KEY = 0x6865_7261_6C64  # "herald"


@dataclass(frozen=True, slots=True)
class Migration:
    component: str
    version: int
    name: str
    sql: str


@dataclass(frozen=True, slots=True)
class MigrationSource:
    component: str
    directory: Path


def discover(source: MigrationSource) -> list[Migration]:
    migrations = []
    for path in sorted(source.directory.glob("*.sql")):
        match = _NAME.match(path.name)
        if not match:
            raise MigrationError(f"{path}: migration files are named NNNN_description.sql")
        migrations.append(Migration(source.component, int(match.group(1)), match.group(2),
                                    path.read_text(encoding="utf-8")))
    versions = [m.version for m in migrations]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"{source.directory}: two migrations share a number")
    return migrations


async def apply_migrations(connection: asyncpg.Connection,
                           sources: list[MigrationSource]) -> list[Migration]:
    """Apply every migration not yet recorded; returns the ones applied now."""
    applied_now: list[Migration] = []
    await connection.execute("SELECT pg_advisory_lock($1)", _LOCK_KEY)
    try:
        await connection.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                   component text NOT NULL,
                   version integer NOT NULL,
                   name text NOT NULL,
                   applied_at timestamptz NOT NULL DEFAULT now(),
                   PRIMARY KEY (component, version))"""
        )
        rows = await connection.fetch("SELECT component, version FROM schema_migrations")
        done = {(row["component"], row["version"]) for row in rows}
        for source in sources:
            for migration in discover(source):
                if (migration.component, migration.version) in done:
                    continue
                try:
                    async with connection.transaction():
                        await connection.execute(migration.sql)
                        await connection.execute(
                            "INSERT INTO schema_migrations (component, version, name) "
                            "VALUES ($1, $2, $3)",
                            migration.component, migration.version, migration.name,
                        )
                except asyncpg.PostgresError as exc:
                    raise MigrationError(
                        f"migration {migration.component}/{migration.version:04d}_"
                        f"{migration.name} failed: {exc}"
                    ) from exc
                applied_now.append(migration)
    finally:
        await connection.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)
    return applied_now


ENGINE_MIGRATIONS = MigrationSource("engine", Path(__file__).parent / "migrations")
