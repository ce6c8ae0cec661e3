"""The asyncpg pool, its jsonb codec, its time bounds, and the error boundary.

Every asyncpg (or socket) error raised inside :meth:`Database.connection` /
:meth:`Database.transaction` (or :func:`engine.db_errors.database_errors`) leaves as an
:mod:`engine.errors` database error: unavailable (503 / retry), rejected (4xx) or a fault (500).
Every wait is bounded: connecting, acquiring a pooled connection, and each statement
(:class:`DatabaseTimeouts`); a statement past its bound is cancelled on the server and the
caller gets :class:`~engine.errors.DatabaseUnavailable`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson

from engine.db_errors import database_errors, describe
from engine.errors import DatabaseError, DatabaseUnavailable

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

# Statements that make a connection's (or, SET LOCAL, a transaction's) prepared statements run
# their generic plans, each planned once per connection. Under Postgres's default (``auto``) a
# statement whose first custom plans looked cheaper than its generic one is planned again on
# every run; a small array parameter makes them look cheaper (a custom plan knows the length
# of ``unnest($1::text[])`` or ``= ANY($1)``, a generic one assumes 10 elements), and so does a
# partitioned table at scale. Planning such a statement costs 0.1-0.5 ms of Postgres CPU
# (docs/PERFORMANCE.md: sixth pass of the single-event intake; "Postgres per send"). For
# connections whose statements read by their keys, whatever the parameters.
GENERIC_PLANS = "SET plan_cache_mode = force_generic_plan"
GENERIC_PLANS_IN_TRANSACTION = "SET LOCAL plan_cache_mode = force_generic_plan"


@dataclass(frozen=True, slots=True)
class DatabaseTimeouts:
    """Seconds. ``request``: how long an HTTP request waits for the database on its behalf
    (the intake's group commit) before it answers 503."""

    connect: float = 10.0
    acquire: float = 5.0
    statement: float = 10.0
    request: float = 10.0


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


async def connect_one(url: str, timeout: float = 10.0,
                      command_timeout: float | None = None) -> asyncpg.Connection:
    """A single connection with Herald's codecs (for LISTEN, migrations and tools).

    Errors raised by queries on it are asyncpg's own: wrap its use in
    :func:`engine.db_errors.database_errors` outside ``engine``."""
    with database_errors():
        try:
            connection = await asyncpg.connect(url, timeout=timeout,
                                               command_timeout=command_timeout)
        except CONNECTIVITY_ERRORS as exc:
            raise DatabaseUnavailable(f"cannot connect to Postgres: {describe(exc)}") from exc
        await _init_connection(connection)
    return connection


class Database:
    """A pool of connections to Herald's Postgres, with errors translated at the boundary."""

    def __init__(self, pool: asyncpg.Pool, url: str,
                 timeouts: DatabaseTimeouts | None = None) -> None:
        self.pool = pool
        self.url = url
        self.timeouts = timeouts or DatabaseTimeouts()

    @classmethod
    async def connect(cls, url: str, min_size: int = 2, max_size: int = 10,
                      timeouts: DatabaseTimeouts | None = None) -> Database:
        timeouts = timeouts or DatabaseTimeouts()
        try:
            pool = await asyncpg.create_pool(
                url, min_size=min_size, max_size=max_size, init=_init_connection,
                max_inactive_connection_lifetime=300.0, timeout=timeouts.connect,
                command_timeout=timeouts.statement,
            )
        except CONNECTIVITY_ERRORS as exc:
            raise DatabaseUnavailable(f"cannot connect to Postgres: {describe(exc)}") from exc
        assert pool is not None
        return cls(pool, url, timeouts)

    async def close(self) -> None:
        try:
            await asyncio.wait_for(self.pool.close(), timeout=5.0)
        except CONNECTIVITY_ERRORS:  # includes TimeoutError
            self.pool.terminate()

    @asynccontextmanager
    async def connection(self, timeout: float | None = None
                         ) -> AsyncIterator[asyncpg.Connection]:
        """Acquire a connection (waiting at most ``timeout``, default the acquire bound);
        database errors in the block leave as :mod:`engine.errors` types. The release is
        bounded by the same timeout (a connection that cannot be reset is terminated)."""
        with database_errors():
            async with self.pool.acquire(timeout=timeout or self.timeouts.acquire) as connection:
                yield connection

    @asynccontextmanager
    async def transaction(self, timeout: float | None = None
                          ) -> AsyncIterator[asyncpg.Connection]:
        async with self.connection(timeout) as connection, connection.transaction():
            yield connection

    async def ping(self) -> bool:
        try:
            async with self.connection(timeout=2.0) as connection:
                await connection.fetchval("SELECT 1", timeout=2.0)
        except DatabaseError:
            return False
        return True
