"""The event log reader never lets a late-committing event fall behind its cursor."""

from __future__ import annotations

from datetime import UTC, datetime

from engine.database import Database, connect_one
from engine.eventlog import LogEvent, append_events
from engine.eventlog_reader import LogCursor, head, read_after


def event(kind: str) -> LogEvent:
    return LogEvent(kind, "c1", None, {}, datetime.now(UTC), "test")


async def test_open_transaction_holds_back_later_events(database: Database,
                                                        database_url: str) -> None:
    slow = await connect_one(database_url)
    fast = await connect_one(database_url)
    reader = await connect_one(database_url)
    try:
        transaction = slow.transaction()
        await transaction.start()
        await append_events(slow, [event("first")])  # smaller position, commits last
        await append_events(fast, [event("second")])
        assert await read_after(reader, LogCursor(), 100) == []
        await transaction.commit()
        events = await read_after(reader, LogCursor(), 100)
        assert [e.type for e in events] == ["first", "second"]
        assert await read_after(reader, events[-1].cursor, 100) == []
        assert await head(reader) == events[-1].cursor
    finally:
        for connection in (slow, fast, reader):
            await connection.close()


async def test_reads_in_pages_from_a_cursor(database: Database, database_url: str) -> None:
    async with database.connection() as connection:
        for i in range(5):
            await append_events(connection, [event(f"e{i}")])
        first = await read_after(connection, LogCursor(), 2)
        rest = await read_after(connection, first[-1].cursor, 10)
    assert [e.type for e in first + rest] == [f"e{i}" for i in range(5)]
