"""The database boundary: asyncpg errors become unavailable (503), rejected (4xx naming the
field) or faults (500 with a request id that is also in the log), and nothing outside
``engine`` handles asyncpg's exceptions."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

import engine.intake.batch_write
from engine.config import IntakeSettings
from engine.database import Database
from engine.errors import (
    DatabaseConflict,
    DatabaseError,
    DatabaseFault,
    DatabaseRejected,
    DatabaseUnavailable,
)
from engine.intake.validation import EventIn
from engine.intake.writer import EventsRejected, EventWriter, StoreResult
from tests.support.app import RunningApp, running_app

ROOT = Path(__file__).resolve().parent.parent


def nested(levels: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(levels - 1):
        value = {"a": value}
    return value


@pytest.fixture
async def app(database_url: str) -> AsyncIterator[RunningApp]:
    async with running_app(database_url) as running:
        yield running


@pytest.mark.parametrize(("sql", "args", "expected"), [
    ("SELECT 'abc'::int", (), DatabaseRejected),  # 22P02 invalid text representation
    ("SELECT 2147483647::int + 1", (), DatabaseRejected),  # 22003 numeric out of range
    ("SELECT convert_from('\\xff'::bytea, 'UTF8')", (), DatabaseRejected),  # 22021
    ("SELECT $1::jsonb", ([[nested(254)]],), DatabaseRejected),  # too deep to encode
    ("SELECT * FROM no_such_table", (), DatabaseFault),  # 42P01: a bug
    ("SELECT pg_terminate_backend(pg_backend_pid())", (), DatabaseUnavailable),  # 57P01
])
async def test_errors_are_classified_at_the_boundary(
        database: Database, sql: str, args: tuple[Any, ...], expected: type) -> None:
    with pytest.raises(expected) as caught:
        async with database.connection() as connection:
            await connection.fetch(sql, *args)
    assert type(caught.value).__module__ == "engine.errors"
    assert len(str(caught.value)) < 400  # never the whole argument


async def test_statement_timeout_and_unique_violation(database: Database) -> None:
    with pytest.raises(DatabaseUnavailable):
        async with database.transaction() as connection:
            await connection.execute("SET LOCAL statement_timeout = '20ms'")
            await connection.execute("SELECT pg_sleep(30)")  # 57014 query_canceled
    with pytest.raises(DatabaseConflict):
        async with database.connection() as connection:
            await connection.execute("CREATE TEMP TABLE t (k int PRIMARY KEY)")
            await connection.execute("INSERT INTO t VALUES (1), (1)")


async def test_deeply_nested_properties_are_a_4xx_not_a_retryable_503(app: RunningApp) -> None:
    async with app.client() as client:  # the request: 253 levels in properties
        refused = await client.post("/v1/events", json={
            "type": "t", "contact_id": "c1", "properties": nested(253)})
        fine = await client.post("/v1/events", json={"type": "t", "contact_id": "c2"})
    # Refused before the database since issue 12 item 11 (strict JSON: at most 32 levels);
    # the database's own refusal is tested through the writer below.
    assert refused.status_code == 400, refused.text
    assert "Retry-After" not in refused.headers  # a poison request is not worth retrying
    assert refused.json()["message"].startswith("properties."), refused.json()
    assert "nests deeper than 32 levels" in refused.json()["message"]
    assert fine.status_code == 202
    async with app.database.connection() as connection:
        assert await connection.fetchval("SELECT array_agg(contact_id) FROM events") == ["c2"]


async def test_the_writer_names_the_refused_event_and_spares_the_others(
        database: Database) -> None:
    writer = EventWriter(database, IntakeSettings(commit_max_wait=0.05))
    await writer.start()
    try:
        def event(contact: str, properties: dict[str, Any] | None = None) -> EventIn:
            return EventIn("t", contact, None, properties or {}, datetime.now(UTC), None)

        poison = [event(f"p{i}", nested(253) if i == 5 else None) for i in range(8)]
        # Likely committed in one group with the poison request, then isolated from it.
        outcomes = await asyncio.gather(writer.store([event("a")]), writer.store(poison),
                                        writer.store([event("b")]), return_exceptions=True)
    finally:
        await writer.stop()
    good_a, refused, good_b = outcomes
    assert isinstance(refused, EventsRejected) and refused.index == 5, refused
    assert good_a == good_b == StoreResult(1, 0)
    async with database.connection() as connection:
        stored = await connection.fetchval("SELECT array_agg(contact_id ORDER BY contact_id) "
                                           "FROM events")
    assert stored == ["a", "b"]


async def test_a_query_bug_is_a_500_with_the_request_id_in_the_log(
        app: RunningApp, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    # A single event takes the plain path: its one statement (contacts and events).
    monkeypatch.setattr(engine.intake.batch_write, "WRITE_PLAIN",
                        "INSERT INTO no_such_table SELECT $1::jsonb, $2::text[], $3::text[] "
                        "RETURNING NULL AS event_id")
    with caplog.at_level(logging.ERROR, logger="herald.http"):
        async with app.client() as client:
            response = await client.post("/v1/events", json={"type": "t", "contact_id": "c"})
    assert response.status_code == 500
    request_id = response.json()["request_id"]
    assert re.fullmatch(r"[0-9a-f]{32}", request_id)
    assert response.headers["X-Request-Id"] == request_id
    assert request_id in response.json()["message"]
    logged = [r for r in caplog.records if getattr(r, "request_id", None) == request_id]
    assert logged and logged[0].exc_info is not None
    assert isinstance(logged[0].exc_info[1], DatabaseFault)


def test_asyncpg_exceptions_stay_inside_engine() -> None:
    """mta/ and automation/ catch engine's DatabaseError types, never asyncpg's."""
    pattern = re.compile(r"asyncpg\.(exceptions\b|\w*(Error|Exception|Violation)\b)")
    offenders = [f"{path.relative_to(ROOT)}:{number}"
                 for package in ("mta", "automation")
                 for path in sorted((ROOT / package).rglob("*.py"))
                 for number, line in enumerate(path.read_text().splitlines(), start=1)
                 if pattern.search(line)]
    assert offenders == []
    assert issubclass(DatabaseUnavailable, DatabaseError)
