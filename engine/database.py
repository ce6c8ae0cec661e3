"""The asyncpg pool, its jsonb codec, and translation of connection failures.

Every connectivity failure that asyncpg (or the socket below it) can raise becomes
:class:`engine.errors.DatabaseUnavailable`, so callers answer 503 or retry, never crash.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import orjson

from engine.errors import DatabaseUnavailable

# Errors that mean "the server is not there right now", as opposed to a bug in a query.
CONNECTIVITY_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.OperatorInterventionError,
    asyncpg.ConnectionDoesNotExistError,
)


def _encode_jsonb(value: Any) -> bytes:
    return b"\x01" + orjson.dumps(value)


def _decode_jsonb(data: bytes) -> Any:
    return orjson.loads(data[1:])


async def _init_connection(connection: asyncpg.Connection) -> None:
    for type_name in ("jsonb", "json"):
        encoder = _encode_jsonb if type_name == "jsonb" else orjson.dumps
        decoder = _decode_jsonb if type_name == "jsonb" else orjson.loads
        await connection.set_type_codec(
            type_name, schema="pg_catalog", encoder=encoder, decoder=decoder, format="binary"
        )


async def connect_one(url: str, timeout: float = 10.0) -> asyncpg.Connection:
    """A single connection with Herald's codecs (for LISTEN, migrations and tools)."""
    try:
        connection = await asyncpg.connect(url, timeout=timeout)
    except CONNECTIVITY_ERRORS as exc:
        raise DatabaseUnavailable(f"cannot connect to Postgres: {describe(exc)}") from exc
    await _init_connection(connection)
    return connection


def describe(exc: BaseException) -> str:
    """A one-line description of a database error that never includes credentials."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:300]


class Database:
    """A pool of connections to Herald's Postgres, with errors translated at the boundary."""

    def __init__(self, pool: asyncpg.Pool, url: str) -> None:
        self.pool = pool
        self.url = url

    @classmethod
    async def connect(cls, url: str, min_size: int = 2, max_size: int = 10) -> Database:
        try:
            pool = await asyncpg.create_pool(
                url, min_size=min_size, max_size=max_size, init=_init_connection,
                max_inactive_connection_lifetime=300.0, timeout=10.0, command_timeout=60.0,
            )
        except CONNECTIVITY_ERRORS as exc:
            raise DatabaseUnavailable(f"cannot connect to Postgres: {describe(exc)}") from exc
        assert pool is not None
        return cls(pool, url)

    async def close(self) -> None:
        try:
            await asyncio.wait_for(self.pool.close(), timeout=5.0)
        except CONNECTIVITY_ERRORS:  # includes TimeoutError
            self.pool.terminate()

    @asynccontextmanager
    async def connection(self, timeout: float = 5.0) -> AsyncIterator[asyncpg.Connection]:
        """Acquire a connection; connectivity failures become DatabaseUnavailable."""
        try:
            async with self.pool.acquire(timeout=timeout) as connection:
                yield connection
        except CONNECTIVITY_ERRORS as exc:
            raise DatabaseUnavailable(f"database unavailable: {describe(exc)}") from exc

    @asynccontextmanager
    async def transaction(self, timeout: float = 5.0) -> AsyncIterator[asyncpg.Connection]:
        async with self.connection(timeout) as connection, connection.transaction():
            yield connection

    async def ping(self) -> bool:
        try:
            async with self.connection(timeout=2.0) as connection:
                await connection.fetchval("SELECT 1", timeout=2.0)
        except DatabaseUnavailable:
            return False
        return True
