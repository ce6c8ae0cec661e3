"""The intake writer's timestamptz codec writes and reads exactly what asyncpg's own does, and
is on a held connection only while it is held."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from engine.database import Database
from engine.intake import timestamp_codec
from engine.intake.held_connection import HeldConnection
from engine.intake.timestamp_codec import TimestampCodec

VALUES: list[object] = [
    datetime(2026, 12, 2, 13, 46, 30, 638793, tzinfo=UTC),
    datetime(2020, 5, 1, 12, 0, tzinfo=timezone(timedelta(hours=-7))),
    datetime(1999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),  # before the Postgres epoch
    datetime(1, 1, 1, tzinfo=UTC),  # asyncpg writes these two as -infinity and infinity
    datetime.max.replace(tzinfo=UTC),
    datetime.min,  # naive: asyncpg's own infinity datetimes
    datetime.max,
    datetime(2021, 3, 3, 3, 3, 3),  # naive: local time
    date(2024, 2, 29),
]


async def _stored(database: Database, install: bool) -> tuple[list[str], list[object]]:
    async with database.connection() as connection:
        if install:
            await timestamp_codec.install(connection)
        try:
            await connection.execute("CREATE TEMP TABLE t (n int, v timestamptz)")
            await connection.copy_records_to_table("t", records=list(enumerate(VALUES)),
                                                   columns=("n", "v"))
            await connection.execute("INSERT INTO t VALUES (100, $1)", VALUES[1])
            texts = [row[0] for row in await connection.fetch("SELECT v::text FROM t ORDER BY n")]
            decoded = [row[0] for row in await connection.fetch("SELECT v FROM t ORDER BY n")]
            await connection.execute("DROP TABLE t")
        finally:
            if install:
                await timestamp_codec.remove(connection)
    return texts, decoded


async def test_it_writes_and_reads_what_asyncpg_does(database: Database) -> None:
    texts, decoded = await _stored(database, install=True)
    assert (texts, decoded) == await _stored(database, install=False)
    assert texts[3:7] == ["-infinity", "infinity", "-infinity", "infinity"]


def test_a_repeated_datetime_is_encoded_once_and_others_each_time() -> None:
    codec = TimestampCodec()
    first = datetime(2026, 1, 1, tzinfo=UTC)
    encoded = codec.encode(first)
    assert codec.encode(first) is encoded
    later = first + timedelta(microseconds=1)
    assert codec.encode(later) == (encoded[0] + 1,)
    assert codec.encode(first) == encoded
    assert codec.decode(encoded) == first


def test_other_types_are_refused_as_asyncpg_does() -> None:
    with pytest.raises(TypeError, match=r"expected a datetime\.date or datetime\.datetime"):
        TimestampCodec().encode("2026-01-01")  # type: ignore[arg-type]


async def test_only_a_held_connection_uses_it(database: Database,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[object] = []
    real = TimestampCodec.encode

    def counting(self: TimestampCodec, value: datetime) -> tuple[int]:
        calls.append(value)
        return real(self, value)

    monkeypatch.setattr(TimestampCodec, "encode", counting)
    moment = datetime(2026, 1, 1, tzinfo=UTC)
    held = HeldConnection(database)
    try:
        async with held.connection() as connection:
            assert await connection.fetchval("SELECT $1::timestamptz", moment) == moment
        assert calls == [moment]
    finally:
        await held.release()
    connections = [await database.pool.acquire() for _ in range(database.pool.get_size())]
    try:
        for connection in connections:
            assert await connection.fetchval("SELECT $1::timestamptz", moment) == moment
    finally:
        for connection in connections:
            await database.pool.release(connection)
    assert calls == [moment]  # back in the pool: asyncpg's codec again
