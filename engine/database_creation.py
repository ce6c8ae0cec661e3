"""Create a database for Herald with the "C" collation, when the server allows it.

Herald's text keys (event ids, contact ids, normalised addresses) need only byte order, and with
a libc collation other than "C"/"POSIX" Postgres compares btree keys through strcoll (about
15 % of its CPU on the intake's batch path). The character classification (LC_CTYPE, used by
``lower()``) is the server's default, so non-ASCII case folding keeps working.
"""

from __future__ import annotations

import logging

import asyncpg

log = logging.getLogger("herald.database_creation")

FAST_COLLATIONS = frozenset({"C", "POSIX"})


async def create_database(admin: asyncpg.Connection, name: str) -> None:
    """``CREATE DATABASE name`` from template0 with LC_COLLATE 'C', LC_CTYPE the cluster's; a
    plain ``CREATE DATABASE`` when the server refuses (e.g. a non-UTF-8 LC_CTYPE)."""
    ctype = await admin.fetchval("SELECT datctype FROM pg_database WHERE datname = 'template0'")
    provider = " LOCALE_PROVIDER libc" if admin.get_server_version().major >= 15 else ""
    quoted = '"' + name.replace('"', '""') + '"'
    try:
        await admin.execute(
            f"CREATE DATABASE {quoted} TEMPLATE template0 ENCODING 'UTF8'{provider} "
            f"LC_COLLATE 'C' LC_CTYPE {_literal(ctype)}")
    except asyncpg.PostgresError as exc:
        log.info("C collation refused; default collation", extra={"database": name,
                                                                  "error": str(exc)})
        await admin.execute(f"CREATE DATABASE {quoted}")


async def database_collation(connection: asyncpg.Connection) -> str:
    """The current database's LC_COLLATE (its default collation's sort order)."""
    return str(await connection.fetchval(
        "SELECT datcollate FROM pg_database WHERE datname = current_database()"))


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"
