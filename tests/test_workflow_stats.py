"""Funnel counters, attribution and A/B results (issue 8, item 4): a scripted sequence of facts
counted exactly once (across a crash, a restart and a second follower), the significance
figures, the API and ``herald stats``."""

from __future__ import annotations

import asyncio
import math
import os
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import pytest

from automation.loading.catalog import Catalog
from automation.loading.loader import parse_workflow
from automation.model.goals import Goals
from automation.stats.follower import StatsFollower
from automation.stats.query import workflow_stats
from automation.stats.settings import StatsSettings
from automation.stats.significance import two_proportion_z
from automation.stats.since import parse_since
from automation.stats.store import fold_batch
from automation.stores.transitions import LogBuffer
from engine.database import Database
from engine.eventlog import LogEvent, append_events
from tests.support.app import running_app
from tests.support.automation import example_catalog

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


async def decide(database: Database, at: datetime, workflow: str, contact: str, run_id: int,
                 step: str | None, action: str) -> None:
    """A decision-log row, written as the run store writes it."""
    async with database.transaction() as connection:
        logs = LogBuffer()
        logs.add(at, workflow, contact, run_id, step, action, "")
        await logs.flush(connection)


async def event(database: Database, at: datetime, event_type: str, contact: str,
                **properties: Any) -> None:
    async with database.transaction() as connection:
        await append_events(connection, [LogEvent(event_type, contact, None, properties, at,
                                                   "test")])


def message(message_id: str, step: str, run_id: int, workflow: str = "welcome"
            ) -> dict[str, Any]:
    return {"message_id": message_id, "workflow": workflow, "step": step, "run_id": run_id}


async def script(database: Database) -> None:
    """The scripted sequence; the expected counters are in EXPECTED."""
    day = timedelta(days=1)
    # c1: welcome-1 delivered, opened by a proxy, by a person, again; clicked; buys within
    # the window (credited), buys again after it (not); then welcome-2 clicked and a purchase
    # credited to welcome-2 (last touch across two messages).
    await decide(database, T0, "welcome", "c1", 1, None, "entered")
    await decide(database, T0, "welcome", "c1", 1, "welcome-1", "sent")
    m1 = message("m1", "welcome-1", 1)
    await event(database, T0, "email_delivered", "c1", **m1)
    await event(database, T0 + timedelta(seconds=2), "email_opened", "c1", **m1,
                machine=True, machine_reason="proxy")
    await event(database, T0 + timedelta(hours=1), "email_opened", "c1", **m1, machine=False)
    await event(database, T0 + timedelta(hours=2), "email_opened", "c1", **m1, machine=False)
    await event(database, T0 + timedelta(hours=3), "email_clicked", "c1", **m1,
                machine=False, url="https://shop.test/a", link=0)
    await event(database, T0 + timedelta(hours=4), "email_clicked", "c1", **m1,
                machine=False, url="https://shop.test/a", link=0)
    await event(database, T0 + day, "order_completed", "c1", amount=30)
    await event(database, T0 + 6 * day, "order_completed", "c1", amount=99)  # past 5d
    await decide(database, T0 + 7 * day, "welcome", "c1", 1, "welcome-2", "sent")
    m2 = message("m2", "welcome-2", 1)
    await event(database, T0 + 7 * day, "email_delivered", "c1", **m2)
    await event(database, T0 + 8 * day, "email_clicked", "c1", **m2, machine=False,
                url="https://shop.test/b", link=1)
    await event(database, T0 + 9 * day, "order_completed", "c1", amount="20.50")
    # c2: welcome-1 bounces (reported twice: SMTP, then a DSN).
    await decide(database, T0, "welcome", "c2", 2, None, "entered")
    await decide(database, T0, "welcome", "c2", 2, "welcome-1", "sent")
    m3 = message("m3", "welcome-1", 2)
    await event(database, T0, "email_bounced", "c2", **m3, hard=True)
    await event(database, T0 + day, "email_bounced", "c2", **m3, hard=True, kind="async")
    # c3: delivered, a scanner clicks (not a touch), the person unsubscribes and complains;
    # a purchase after the scanner's click is credited to nobody.
    await decide(database, T0, "welcome", "c3", 3, None, "entered")
    await decide(database, T0, "welcome", "c3", 3, "welcome-1", "sent")
    m4 = message("m4", "welcome-1", 3)
    await event(database, T0, "email_delivered", "c3", **m4)
    await event(database, T0 + timedelta(seconds=1), "email_clicked", "c3", **m4,
                machine=True, machine_reason="scanner", url="https://shop.test/a", link=0)
    await event(database, T0 + timedelta(hours=1), "order_completed", "c3", amount=5)
    await event(database, T0 + timedelta(hours=2), "email_unsubscribed", "c3", **m4)
    await event(database, T0 + timedelta(hours=3), "email_complained", "c3", **m4)
    # noise the counters ignore: other events, API mail without a workflow.
    await event(database, T0, "page_viewed", "c1", url="/")
    await event(database, T0, "email_delivered", "c9", message_id="api-1")


ZERO = {"entered": 0, "sent": 0, "delivered": 0, "bounced": 0, "opened": 0, "clicked": 0,
        "unsubscribed": 0, "complained": 0, "converted": 0, "revenue": 0.0}
EXPECTED = {
    "welcome-1": {**ZERO, "sent": 3, "delivered": 2, "bounced": 1, "opened": 1, "clicked": 1,
                  "unsubscribed": 1, "complained": 1, "converted": 1, "revenue": 30.0},
    "welcome-2": {**ZERO, "sent": 1, "delivered": 1, "clicked": 1, "converted": 1,
                  "revenue": 20.5},
}
COUNTER_NAMES = tuple(ZERO)


async def stats(database: Database, since: date | None = None) -> dict[str, Any]:
    async with database.connection() as connection:
        return await workflow_stats(connection, example_catalog(), "welcome", since, "clicks")


def by_step(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["step"]: {k: s[k] for k in COUNTER_NAMES} for s in report["steps"]
            if any(s[k] for k in COUNTER_NAMES)}


async def test_scripted_sequence_counts_each_fact_once(database: Database) -> None:
    await script(database)
    follower = StatsFollower(database, StatsSettings())
    assert await follower.settle(20) > 0
    report = await stats(database)
    assert by_step(report) == EXPECTED
    assert report["totals"]["entered"] == 3
    assert report["totals"]["revenue"] == 50.5
    steps = {s["step"]: s for s in report["steps"]}
    assert steps["welcome-1"]["previous"] == "entered"
    assert steps["welcome-1"]["drop_off"] == 0.0
    assert steps["welcome-2"]["previous"] == "welcome-1"
    assert steps["welcome-2"]["drop_off"] == pytest.approx(1 - 1 / 3, abs=1e-4)
    assert steps["welcome-3"]["sent"] == 0 and steps["welcome-3"]["drop_off"] == 1.0
    assert steps["welcome-1"]["click_rate"] == pytest.approx(1 / 3, abs=1e-4)
    # Nothing new: a second pass counts nothing again.
    assert await follower.catch_up() == 0
    assert by_step(await stats(database)) == EXPECTED
    # --since: days before it drop out (welcome-2's facts are 7 to 9 days later).
    later = await stats(database, (T0 + timedelta(days=7)).date())
    assert by_step(later)["welcome-2"] == EXPECTED["welcome-2"]
    assert "welcome-1" not in by_step(later) and later["totals"]["entered"] == 0


async def test_exactly_once_across_a_crash_a_restart_and_two_followers(
        database: Database) -> None:
    await script(database)
    small = StatsSettings(read_batch=3)
    # A batch whose transaction never commits (a crash before COMMIT) counts nothing.
    async with database.connection() as connection, asyncio.timeout(20):
        while True:  # until the batch reads something (older transactions may be open)
            transaction = connection.transaction()
            await transaction.start()
            result = await fold_batch(connection, Goals(small.goal), small.read_batch)
            await transaction.rollback()
            if result.events + result.decisions:
                break
            await asyncio.sleep(0.05)
    assert by_step(await stats(database)) == {}
    # A follower that stops part way, then a new one (a restart) and a rival run at once.
    first = StatsFollower(database, small)
    await first.catch_up(max_batches=2)
    partial = await stats(database)
    assert by_step(partial) != EXPECTED
    second, rival = StatsFollower(database, small), StatsFollower(database, small)
    await asyncio.gather(second.settle(20), rival.settle(20))
    assert by_step(await stats(database)) == EXPECTED
    # More facts after the restart are counted on top, once.
    await event(database, T0 + timedelta(days=10), "email_delivered", "c1",
                **message("m2b", "welcome-2", 1))
    await StatsFollower(database, small).settle(20)
    assert by_step(await stats(database))["welcome-2"]["delivered"] == 2


async def test_live_runs_count_entered_and_sent_from_the_decision_log(
        database: Database) -> None:
    from tests.support.automation import automation_service, post_event, wait_for

    async with automation_service(database):
        await post_event(database, "live-1", "signed_up", email="live-1@shop.test")

        async def sent(connection: Any) -> bool:
            return bool(await connection.fetchval(
                "SELECT count(*) FROM workflow_log WHERE action = 'sent'"))

        await wait_for(database.url, sent)
    await StatsFollower(database, StatsSettings()).settle(20)
    report = await stats(database)
    assert report["totals"]["entered"] == 1
    assert {s["step"]: s["sent"] for s in report["steps"]}["welcome-1"] == 1


SPLIT_WORKFLOW = """\
name: subject-test
trigger: {event: signed_up}
steps:
  - id: ab
    split:
      variants:
        - {name: control, steps: [{id: plain, send: welcome-1}]}
        - {name: emoji, steps: [{id: fancy, send: welcome-2}]}
"""


def split_catalog() -> Catalog:
    templates = example_catalog().templates
    return Catalog([parse_workflow(SPLIT_WORKFLOW, "test", templates)], templates)


async def test_ab_arms_report_a_two_proportion_z_test(database: Database) -> None:
    async with database.transaction() as connection:
        await connection.execute(
            "INSERT INTO workflow_stats (workflow, step, day, sent, clicked, converted) VALUES "
            "('subject-test', 'plain', '2026-03-02', 1000, 200, 10), "
            "('subject-test', 'fancy', '2026-03-02', 1000, 250, 3)")
    async with database.connection() as connection:
        report = await workflow_stats(connection, split_catalog(), "subject-test", None,
                                      "clicks")
        by_conversions = await workflow_stats(connection, split_catalog(), "subject-test",
                                              None, "conversions")
    [split] = report["splits"]
    control, emoji = split["arms"]
    assert (control["name"], control["sent"], control["clicked"]) == ("control", 1000, 200)
    assert "z" not in control
    assert emoji["vs"] == "control" and emoji["rate"] == 0.25
    assert emoji["z"] == pytest.approx(2.6774, abs=1e-4)
    assert emoji["p_value"] == pytest.approx(0.007419, abs=1e-6)
    assert emoji["reliable"] is True
    [arm] = by_conversions["splits"][0]["arms"][1:]
    assert arm["reliable"] is False  # 3 conversions: too few for the normal approximation


def test_two_proportion_z_known_values() -> None:
    # R: prop.test(c(200, 250), c(1000, 1000), correct = FALSE) -> X-squared = 7.1685,
    # p-value = 0.007419; z = sqrt(X-squared).
    test = two_proportion_z(200, 1000, 250, 1000)
    assert test.z == pytest.approx(math.sqrt(7.1685), abs=1e-4)
    assert test.p_value == pytest.approx(0.007419, abs=1e-6)
    # By hand: p = 0.1, se = sqrt(0.1 * 0.9 * (1/50 + 1/50)) = 0.06; z = -0.04 / 0.06.
    small = two_proportion_z(6, 50, 4, 50)
    assert small.z == pytest.approx(-2 / 3)
    assert small.p_value == pytest.approx(math.erfc((2 / 3) / math.sqrt(2)))
    assert small.p_value == pytest.approx(0.504985, abs=1e-6)
    assert small.reliable is False  # 4 successes in one arm
    assert two_proportion_z(0, 10, 0, 10).z is None  # no variation: undefined
    assert two_proportion_z(0, 0, 3, 10).p_value is None  # an empty arm: undefined
    with pytest.raises(ValueError):
        two_proportion_z(11, 10, 0, 10)


def test_since_forms() -> None:
    today = date(2026, 3, 10)
    assert parse_since("2026-03-01", today) == date(2026, 3, 1)
    assert parse_since("2026-03-01T23:30:00-02:00", today) == date(2026, 3, 2)
    assert parse_since("7d", today) == date(2026, 3, 3)
    for bad in ("yesterday", "2026-13-01", "٢٠٢٦-03-01", "", "-3d", "2026-03-01T10:00"):
        with pytest.raises(ValueError, match="is not a date"):
            parse_since(bad, today)


async def test_api_stats_unknown_workflow_and_bad_input(database_url: str) -> None:
    async with running_app(database_url) as app:
        await script(app.database)
        await StatsFollower(app.database, StatsSettings()).settle(20)
        async with app.client() as client:
            response = await client.get("/v1/workflows/welcome/stats")
            assert response.status_code == 200, response.text
            body = response.json()
            assert by_step(body) == EXPECTED
            assert body["bucket"] == "day (UTC)" and body["since"] is None
            since = await client.get("/v1/workflows/welcome/stats",
                                     params={"since": "2026-03-10"})
            assert since.status_code == 200
            assert by_step(since.json()) == {"welcome-2": {**ZERO, "clicked": 1,
                                                           "converted": 1, "revenue": 20.5}}
            missing = await client.get("/v1/workflows/nope/stats")
            assert missing.status_code == 404
            assert missing.json()["message"] == "no workflow named 'nope'"
            bad = await client.get("/v1/workflows/welcome/stats", params={"since": "soon"})
            assert bad.status_code == 422 and bad.json()["message"].startswith("since: ")
            unknown = await client.get("/v1/workflows/welcome/stats", params={"x": "1"})
            assert unknown.status_code == 422 and "unknown query parameter" in unknown.text
            document = (await client.get("/openapi.json")).json()
        read_only = await app.new_key("events:write")
        async with httpx.AsyncClient(base_url=app.base_url, headers={
                "Authorization": f"Bearer {read_only}"}) as client:
            assert (await client.get("/v1/workflows/welcome/stats")).status_code == 403
    operation = document["paths"]["/v1/workflows/{name}/stats"]["get"]
    assert operation["operationId"] == "workflowStats"
    assert {"200", "404", "422"} <= set(operation["responses"])


def herald(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HERALD_DATABASE_URL": database_url}
    return subprocess.run([sys.executable, "-m", "herald.cli", *args], env=env,
                          capture_output=True, text=True, timeout=60)


async def test_cli_tables_json_and_errors(database: Database, database_url: str) -> None:
    await script(database)
    await StatsFollower(database, StatsSettings()).settle(20)
    table = await asyncio.to_thread(herald, database_url, "stats", "--workflow", "welcome")
    assert table.returncode == 0, table.stderr
    assert "workflow welcome: entered 3" in table.stdout
    row = next(line for line in table.stdout.splitlines() if line.strip().startswith(
        "welcome-2"))
    assert row.split()[:4] == ["welcome-2", "1", "1", "0"]
    assert "20.50" in row and "66.7%" in row
    as_json = await asyncio.to_thread(herald, database_url, "stats", "--workflow", "welcome",
                                      "--json")
    import orjson

    assert by_step(orjson.loads(as_json.stdout)) == EXPECTED
    summary = await asyncio.to_thread(herald, database_url, "stats", "--since", "2026-03-09")
    assert summary.returncode == 0, summary.stderr
    welcome = next(line for line in summary.stdout.splitlines()
                   if line.strip().startswith("welcome "))
    assert welcome.split()[1:4] == ["0", "1", "1"]  # entered, sent, delivered since the 9th
    missing = await asyncio.to_thread(herald, database_url, "stats", "--workflow", "nope")
    assert missing.returncode == 2
    assert missing.stderr.startswith("herald: error: no workflow named 'nope' (loaded: ")
    assert missing.stderr.count("\n") == 1
    bad = await asyncio.to_thread(herald, database_url, "stats", "--since", "soon")
    assert bad.returncode == 2 and bad.stderr.startswith("herald: error: --since: 'soon'")


async def test_follower_task_counts_while_running_and_stops(database: Database) -> None:
    follower = StatsFollower(database, StatsSettings(poll_interval=0.05))
    follower.start()
    try:
        await script(database)
        async with asyncio.timeout(20):
            while True:
                follower.idle.clear()
                await follower.idle.wait()  # a pass of the task that found nothing new
                if by_step(await stats(database)) == EXPECTED:
                    break
    finally:
        await follower.stop()
    assert follower.counted > 0
    await event(database, T0, "email_delivered", "c1", **message("m5", "welcome-1", 1))
    assert by_step(await stats(database))["welcome-1"]["delivered"] == 2  # stopped: no count


async def test_migration_counts_earlier_decisions_once(database: Database,
                                                       database_url: str) -> None:
    """An install upgraded to automation migration 0003: decisions logged before it are
    counted by the migration, later ones by the follower, none twice."""
    from herald.database import migrate

    async with database.transaction() as connection:  # back to before 0003
        await connection.execute(
            "DROP TABLE workflow_stats, workflow_stats_seen, workflow_stats_last_click, "
            "workflow_stats_state; ALTER TABLE workflow_log DROP COLUMN txid; "
            "DELETE FROM schema_migrations WHERE component = 'automation' AND version = 3")
    await decide(database, T0, "welcome", "old", 7, None, "entered")
    await decide(database, T0, "welcome", "old", 7, "welcome-1", "sent")
    await decide(database, T0, "welcome", "old", 7, "welcome-1", "wait")  # not counted
    assert await migrate(database_url) == ["automation/0003_workflow_stats"]
    await decide(database, T0, "welcome", "new", 8, None, "entered")
    await StatsFollower(database, StatsSettings()).settle(20)
    report = await stats(database)
    assert report["totals"]["entered"] == 2
    assert by_step(report) == {"welcome-1": {**ZERO, "sent": 1}}
