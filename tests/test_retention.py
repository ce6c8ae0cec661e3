"""Retention: partitions ahead, old partitions dropped whole (never row deletes), message
bodies dropped after their final state, dry runs, the CLI and its settings."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path

import asyncpg
import pytest

from engine import partitions
from engine.database import Database
from engine.errors import ConfigError
from engine.eventlog_reader import LogCursor
from herald.retention import RetentionSettings, run_pass
from herald.settings import load_settings
from mta.api import message_json
from mta.queue import control

DAY = 86400.0
INSERT_AT = """
    INSERT INTO events (type, contact_id, occurred_at, received_at)
    VALUES ($1, 'c1', $2, $2)
"""
INSERT_MESSAGE = """
    INSERT INTO outbound_messages (id, state, header_from, envelope_from, recipient,
                                   recipient_domain, contact_id, body, expires_at, finished_at)
    VALUES ($1, $2, 'a@shop.example', 'b@bounce.example', 'r@dest.example', 'dest.example',
            'c1', $3, now() + interval '5 days', $4)
"""
# Any row delete on the event log fails: retention must drop partitions instead.
FORBID_DELETES = """
    CREATE FUNCTION forbid_delete() RETURNS trigger LANGUAGE plpgsql AS
    $$ BEGIN RAISE EXCEPTION 'row delete on events'; END $$;
    CREATE TRIGGER no_deletes BEFORE DELETE ON events
        FOR EACH ROW EXECUTE FUNCTION forbid_delete();
"""


def settings(**values: object) -> RetentionSettings:
    base: dict[str, object] = {"events": 30 * DAY, "message_bodies": 10 * DAY}
    return RetentionSettings(**{**base, **values})  # type: ignore[arg-type]


async def _old_partition(connection: asyncpg.Connection, days_ago: int) -> partitions.Partition:
    start = partitions.aligned_start((datetime.now(UTC) - timedelta(days=days_ago)).date(), 7)
    part = partitions.partition_for(start, 7)
    if part.name not in {p.name for p in await partitions.list_partitions(connection)}:
        await partitions.create(connection, part)
    return part


async def test_a_fresh_database_has_partitions_ahead_and_a_pass_adds_more(
        database: Database) -> None:
    now = datetime.now(UTC)
    async with database.connection() as connection:
        existing = await partitions.list_partitions(connection)
        assert existing[0].start <= now < existing[0].end
        assert existing[-1].end >= now + timedelta(days=28)
        report = await run_pass(connection, settings(partitions_ahead=8), now=now)
        after = await partitions.list_partitions(connection)
    assert len(report.created) == 4 and report.created == [p.name for p in after[-4:]]
    assert after[-1].end >= now + timedelta(days=56)
    assert all(a.end == b.start for a, b in pairwise(after))


async def test_old_partitions_are_dropped_whole_and_recent_ones_kept(database: Database) -> None:
    now = datetime.now(UTC)
    async with database.connection() as connection:
        old = await _old_partition(connection, 70)
        recent = await _old_partition(connection, 14)
        await connection.execute(INSERT_AT, "old", old.start + timedelta(hours=1))
        await connection.execute(INSERT_AT, "recent", recent.start + timedelta(hours=1))
        await connection.execute(INSERT_AT, "now", now)
        await connection.execute(
            "INSERT INTO event_ids VALUES ('old-id', $1), ('recent-id', $2)",
            old.start + timedelta(hours=1), recent.start + timedelta(hours=1))
        await connection.execute(FORBID_DELETES)

        report = await run_pass(connection, settings(), now=now)

        names = {p.name for p in await partitions.list_partitions(connection)}
        types = [r["type"] for r in await connection.fetch(
            "SELECT type FROM events ORDER BY position")]
        ids = [r["event_id"] for r in await connection.fetch(
            "SELECT event_id FROM event_ids ORDER BY event_id")]
        exists = await connection.fetchval("SELECT to_regclass($1) IS NOT NULL", old.name)
    assert [p.name for p in report.dropped] == [old.name]
    assert report.dropped[0].bytes > 0
    assert old.name not in names and recent.name in names and not exists
    assert types == ["recent", "now"]
    assert ids == ["recent-id"]


async def test_a_partition_the_automation_core_has_not_read_is_kept(database: Database) -> None:
    now = datetime.now(UTC)
    async with database.connection() as connection:
        old = await _old_partition(connection, 70)
        await connection.execute(INSERT_AT, "unread", old.start + timedelta(hours=1))
        row = await connection.fetchrow(
            "SELECT txid::text::bigint AS txid, position FROM events WHERE type = 'unread'")
        behind = LogCursor(row["txid"] - 1, 0)
        await connection.execute(
            "INSERT INTO automation_state (id, cursor_txid, cursor_pos) VALUES (1, $1, $2)",
            behind.txid, behind.position)
        report = await run_pass(connection, settings(), now=now)
        assert report.kept_unread == [old.name] and report.dropped == []
        await connection.execute("UPDATE automation_state SET cursor_txid = $1, cursor_pos = $2",
                                 row["txid"], row["position"])
        await connection.execute("UPDATE workflow_stats_state SET events_txid = $1, "
                                 "events_pos = $2", row["txid"], row["position"])
        report = await run_pass(connection, settings(), now=now)
    assert [p.name for p in report.dropped] == [old.name]


async def test_a_partition_the_stats_follower_has_not_counted_is_kept(database: Database) -> None:
    now = datetime.now(UTC)
    async with database.connection() as connection:
        old = await _old_partition(connection, 70)
        await connection.execute(INSERT_AT, "uncounted", old.start + timedelta(hours=1))
        row = await connection.fetchrow(
            "SELECT txid::text::bigint AS txid, position FROM events WHERE type = 'uncounted'")
        await connection.execute(
            "INSERT INTO automation_state (id, cursor_txid, cursor_pos) VALUES (1, $1, $2)",
            row["txid"], row["position"])
        report = await run_pass(connection, settings(), now=now)
        assert report.kept_unread == [old.name]  # the stats follower is still at the start
        await connection.execute("UPDATE workflow_stats_state SET events_txid = $1, "
                                 "events_pos = $2", row["txid"], row["position"])
        report = await run_pass(connection, settings(), now=now)
    assert [p.name for p in report.dropped] == [old.name]


async def test_rows_in_the_default_partition_move_into_their_new_partition(
        database: Database) -> None:
    now = datetime.now(UTC)
    async with database.connection() as connection:
        last = (await partitions.list_partitions(connection))[-1]
        stray = last.end + timedelta(days=3)  # no partition covers it yet
        await connection.execute(INSERT_AT, "stray", stray)
        assert await connection.fetchval("SELECT count(*) FROM events_default") == 1
        report = await run_pass(connection, settings(), now=now + timedelta(days=14))
        home = await connection.fetchval(
            "SELECT tableoid::regclass::text FROM events WHERE type = 'stray'")
        left = await connection.fetchval("SELECT count(*) FROM events_default")
    assert report.moved_rows == 1
    assert home in report.created and left == 0


async def _messages(connection: asyncpg.Connection, now: datetime) -> dict[str, uuid.UUID]:
    ids = {name: uuid.uuid4() for name in ("old_delivered", "old_purged", "new_bounced",
                                           "queued")}
    await connection.execute(INSERT_MESSAGE, ids["old_delivered"], "delivered", b"body-1",
                             now - timedelta(days=11))
    await connection.execute(INSERT_MESSAGE, ids["old_purged"], "purged", b"body-2",
                             now - timedelta(days=30))
    await connection.execute(INSERT_MESSAGE, ids["new_bounced"], "bounced", b"body-3",
                             now - timedelta(days=9))
    await connection.execute(INSERT_MESSAGE, ids["queued"], "queued", b"body-4", None)
    return ids


async def test_bodies_are_dropped_days_after_their_final_state_and_rows_stay(
        database: Database) -> None:
    now = datetime.now(UTC)
    async with database.connection() as connection:
        ids = await _messages(connection, now)
        report = await run_pass(connection, settings(), now=now)
        rows = {r["id"]: r for r in await connection.fetch(
            "SELECT id, state, body, body_dropped_at, header_from, recipient, contact_id, "
            "tags, metadata, attempts, created_at, next_attempt_at, expires_at, last_reply, "
            "finished_at FROM outbound_messages")}
        # Queue control still works on a message whose body is gone.
        result = await control.apply(connection, "retry",
                                     control.Selector(message=ids["old_delivered"]), "ops",
                                     max_rows=10)
    assert report.bodies_dropped == 2
    assert rows[ids["old_delivered"]]["body"] is None
    assert rows[ids["old_purged"]]["body"] is None
    assert rows[ids["new_bounced"]]["body"] == b"body-3"
    assert rows[ids["queued"]]["body"] == b"body-4"
    shown = message_json(rows[ids["old_delivered"]], [])
    assert shown["state"] == "delivered" and shown["body_dropped_at"] is not None
    assert message_json(rows[ids["new_bounced"]], [])["body_dropped_at"] is None
    assert result is not None


async def test_a_dry_run_says_what_it_would_drop_and_changes_nothing(database: Database) -> None:
    now = datetime.now(UTC)
    async with database.connection() as connection:
        old = await _old_partition(connection, 70)
        await connection.execute(INSERT_AT, "old", old.start + timedelta(hours=1))
        await _messages(connection, now)
        snapshot = """SELECT (SELECT array_agg(relname::text ORDER BY relname) FROM pg_class
                              WHERE relname LIKE 'events_p%' AND relkind = 'r'),
                             (SELECT count(*) FROM events),
                             (SELECT count(*) FROM outbound_messages WHERE body IS NULL)"""
        before = await connection.fetchrow(snapshot)
        report = await run_pass(connection, settings(partitions_ahead=8), now=now,
                                dry_run=True)
        after = await connection.fetchrow(snapshot)
    assert tuple(after) == tuple(before)
    assert [p.name for p in report.dropped] == [old.name]
    assert len(report.created) == 4
    assert report.bodies_dropped == 2 and report.body_bytes == len(b"body-1body-2")


async def test_zero_keeps_events_and_bodies_forever(database: Database) -> None:
    now = datetime.now(UTC)
    async with database.connection() as connection:
        old = await _old_partition(connection, 700)
        await connection.execute(INSERT_AT, "ancient", old.start + timedelta(hours=1))
        await _messages(connection, now)
        report = await run_pass(connection, settings(events=0, message_bodies=0), now=now)
        assert await connection.fetchval("SELECT count(*) FROM outbound_messages "
                                         "WHERE body IS NULL") == 0
    assert report.dropped == [] and report.bodies_dropped == 0


async def test_a_second_process_does_not_race_the_first(database: Database) -> None:
    async with database.connection() as first, database.connection() as second:
        await first.execute("SELECT pg_advisory_lock(x'686572657465'::bigint)")
        try:
            report = await run_pass(second, settings())
        finally:
            await first.execute("SELECT pg_advisory_unlock(x'686572657465'::bigint)")
    assert report.busy and report.created == [] and report.dropped == []


@pytest.mark.parametrize(("text", "expected"), [
    ('events = "1h"', "retention: events must be at least 1d"),
    ('events = "a year"', "retention.events: 'a year' is not a duration"),
    ('message_bodies = "10m"', "retention: message_bodies must be at least 1h"),
    ('check_interval = "1s"', "retention: check_interval must be between 1m and 1d"),
    ("partition_days = 0", "retention: partition_days must be between 1 and 31"),
    ("partitions_ahead = 100", "retention: partitions_ahead must be between 1 and 52"),
    ('keep = "1d"', "retention.keep: unknown key"),
])
def test_bad_settings_give_a_clear_config_error(tmp_path: Path, text: str,
                                                expected: str) -> None:
    config = tmp_path / "herald.toml"
    config.write_text(f"[retention]\n{text}\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(config, environ={})
    assert str(caught.value).startswith(expected)


def herald(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HERALD_DATABASE_URL": database_url}
    return subprocess.run([sys.executable, "-m", "herald.cli", *args], env=env,
                          capture_output=True, text=True, timeout=120)


async def test_the_cli_dry_run_and_run(database: Database, database_url: str,
                                       tmp_path: Path) -> None:
    async with database.connection() as connection:
        old = await _old_partition(connection, 500)
        await connection.execute(INSERT_AT, "old", old.start + timedelta(hours=1))
    dry = herald(database_url, "retention", "run", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "dry run: nothing was changed" in dry.stdout
    assert f"would drop {old.name}" in dry.stdout
    done = herald(database_url, "retention", "run")
    assert done.returncode == 0, done.stderr
    assert f"  drop {old.name}" in done.stdout
    async with database.connection() as connection:
        assert await connection.fetchval("SELECT count(*) FROM events") == 0
    bad = tmp_path / "bad.toml"
    bad.write_text('[retention]\nevents = "2h"\n')
    refused = herald(database_url, "--config", str(bad), "retention", "run")
    assert refused.returncode == 78
    assert refused.stderr.strip() == ("herald: error: retention: events must be at least 1d "
                                      "(or 0 to keep every event)")


async def test_bench_growth_measures_less_growth_with_retention(postgres_admin_url: str) -> None:
    from bench import growth

    args = growth.parse_args(["--messages", "500", "--body-size", "4096"])
    result = await growth.on_server(postgres_admin_url, args)
    assert len(result["retention_pass"]["partitions_dropped"]) == 1
    assert result["retention_pass"]["bodies_dropped"] == 1000
    per = result["bytes_per_million"]
    assert per["events_and_ids"] > 0 and per["message_bodies"] > 0
    assert 0 < result["with_retention_per_million"] < result["without_retention_per_million"]
