"""The live automation role on Postgres: durable runs, restarts, leader election, exactly-once."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from automation.index.types import Fire
from automation.loading.catalog import Catalog
from automation.runtime.runs import Run
from automation.stores.postgres import PgStore
from automation.tools.explain import explain, render_text
from engine.database import Database
from engine.eventlog_reader import head
from engine.metrics import REGISTRY
from tests.support.automation import automation_service, example_catalog, post_event, wait_for


async def sends(connection: Any) -> list[tuple[str, str]]:
    rows = await connection.fetch(
        "SELECT contact_id, metadata->>'step' AS step FROM outbound_messages ORDER BY created_at")
    return [(r["contact_id"], r["step"]) for r in rows]


async def test_event_trigger_sends_with_the_step_in_one_transaction(
        database: Database, database_url: str) -> None:
    async with automation_service(database):
        await post_event(database, "c1", "signed_up", email="ann@example.com")

        async def sent(connection: Any) -> bool:
            return ("c1", "welcome-1") in await sends(connection)

        await wait_for(database_url, sent)
    async with database.connection() as connection:
        run = await connection.fetchrow("SELECT * FROM workflow_runs WHERE workflow = 'welcome'")
        message = await connection.fetchrow("SELECT * FROM outbound_messages")
        log = await connection.fetch("SELECT action FROM workflow_log WHERE run_id = $1",
                                     run["id"])
    assert run["state"] == "waiting" and run["pc"] == 1 and run["sent_steps"] == ["welcome-1"]
    assert message["idempotency_key"] == f"run:{run['id']}:welcome-1"
    assert message["source"] == "automation" and message["recipient"] == "ann@example.com"
    assert message["metadata"]["workflow"] == "welcome"
    assert b"List-Unsubscribe-Post: List-Unsubscribe=One-Click" in bytes(message["body"])
    assert [r["action"] for r in log][:2] == ["entered", "sent"]


async def test_restart_mid_wait_resumes_and_fires_due_timers(
        database: Database, database_url: str) -> None:
    async with automation_service(database):
        await post_event(database, "c1", "signed_up", email="ann@example.com")

        async def first(connection: Any) -> bool:
            return len(await sends(connection)) == 1

        await wait_for(database_url, first)
    # While the engine is down, a day passes: the wait for welcome-2 is now due.
    async with database.connection() as connection:
        await connection.execute(
            "UPDATE workflow_runs SET entered_at = entered_at - interval '1 day 1 minute', "
            "wake_at = wake_at - interval '1 day 1 minute'")
    async with automation_service(database):
        async def second(connection: Any) -> bool:
            return ("c1", "welcome-2") in await sends(connection)

        await wait_for(database_url, second)
    async with database.connection() as connection:
        assert await sends(connection) == [("c1", "welcome-1"), ("c1", "welcome-2")]
        run = await connection.fetchrow("SELECT state, pc FROM workflow_runs")
    assert run["state"] == "waiting" and run["pc"] == 3


async def test_two_engines_one_database_never_double_send(
        database: Database, database_url: str) -> None:
    second_db = await Database.connect(database_url, min_size=1, max_size=4)
    try:
        async with automation_service(database) as one, \
                automation_service(second_db, lead=False) as two:
            for i in range(30):
                await post_event(database, f"c{i}", "signed_up", email=f"u{i}@example.com")

            async def all_sent(connection: Any) -> bool:
                return len(await sends(connection)) >= 30

            await wait_for(database_url, all_sent)
            assert sorted([one.leader, two.leader]) == [False, True]
            leader, standby = (one, two) if one.leader else (two, one)
        async with automation_service(second_db) as survivor:
            await post_event(database, "late", "signed_up", email="late@example.com")

            async def late_sent(connection: Any) -> bool:
                return ("late", "welcome-1") in await sends(connection)

            await wait_for(database_url, late_sent)
            assert survivor.leader
    finally:
        await second_db.close()
    async with database.connection() as connection:
        all_sends = await sends(connection)
    assert len(all_sends) == len(set(all_sends)) == 31
    assert leader is not standby


async def test_explain_says_what_happened_and_why(
        database: Database, database_url: str) -> None:
    async with automation_service(database):
        await post_event(database, "c9", "page_viewed", email="c9@example.com", path="/")
        await post_event(database, "c9", "signed_up")
        await post_event(database, "c9", "signed_up")  # once ever: not entered again

        async def logged(connection: Any) -> bool:
            return bool(await connection.fetchval(
                "SELECT count(*) FROM workflow_log WHERE action = 'not_entered'"))

        await wait_for(database_url, logged)
        async with database.connection() as connection:
            report = await explain(connection, example_catalog(), "c9")
    welcome = next(w for w in report["workflows"] if w["workflow"] == "welcome")
    assert welcome["runs"][0]["state"] == "waiting"
    assert welcome["decisions"][0]["action"] == "not_entered"
    assert welcome["decisions"][0]["detail"] == "a run is already active"
    cart = next(w for w in report["workflows"] if w["workflow"] == "abandoned-cart")
    assert cart["summary"].startswith("never triggered")
    text = render_text(report)
    assert "welcome" in text and "sent" in text


WAITING_WORKFLOW = """
reentry: {policy: always, key: job}
trigger: {type: event, event: started}
exit_when: [{event: stopped, correlate: job}]
steps:
  - wait: 1h
  - id: reminder
    send: reminder
"""


def waiting_catalog(tmp_path: Path) -> Catalog:
    (tmp_path / "wf").mkdir()
    (tmp_path / "wf" / "jobs.yaml").write_text(WAITING_WORKFLOW)
    (tmp_path / "tpl" / "reminder").mkdir(parents=True)
    (tmp_path / "tpl" / "reminder" / "subject.txt").write_text("Reminder")
    (tmp_path / "tpl" / "reminder" / "body.txt").write_text("Hi {{ unsubscribe_url }}")
    return Catalog.load(tmp_path / "wf", tmp_path / "tpl")


async def test_exit_condition_ends_only_the_correlated_run(
        database: Database, database_url: str, tmp_path: Path) -> None:
    async with automation_service(database, waiting_catalog(tmp_path)):
        await post_event(database, "c1", "started", email="c1@example.com", job="a")
        await post_event(database, "c1", "started", job="b")
        await post_event(database, "c1", "stopped", job="a")

        async def exited(connection: Any) -> bool:
            return bool(await connection.fetchval(
                "SELECT count(*) FROM workflow_runs WHERE state = 'exited'"))

        await wait_for(database_url, exited)
    async with database.connection() as connection:
        runs = await connection.fetch(
            "SELECT trigger_properties->>'job' AS job, state, exit_reason FROM workflow_runs "
            "ORDER BY id")
    assert [(r["job"], r["state"]) for r in runs] == [("a", "exited"), ("b", "waiting")]
    assert runs[0]["exit_reason"] == "exit_when: stopped"


async def test_runs_in_flight_keep_their_workflow_version(
        database: Database, database_url: str, tmp_path: Path) -> None:
    catalog_v1 = waiting_catalog(tmp_path)
    async with automation_service(database, catalog_v1):
        await post_event(database, "c1", "started", email="c1@example.com", job="a")

        async def waiting(connection: Any) -> bool:
            return bool(await connection.fetchval(
                "SELECT count(*) FROM workflow_runs WHERE state = 'waiting'"))

        await wait_for(database_url, waiting)
    # The file changes while the run waits: version 2 sends another template, sooner.
    (tmp_path / "wf" / "jobs.yaml").write_text(
        WAITING_WORKFLOW.replace("send: reminder", "send: reminder-v2"))
    (tmp_path / "tpl" / "reminder-v2").mkdir()
    (tmp_path / "tpl" / "reminder-v2" / "subject.txt").write_text("Reminder v2")
    (tmp_path / "tpl" / "reminder-v2" / "body.txt").write_text("v2 {{ unsubscribe_url }}")
    catalog_v2 = Catalog.load(tmp_path / "wf", tmp_path / "tpl")
    assert catalog_v2.current["jobs"].version != catalog_v1.current["jobs"].version
    async with database.connection() as connection:
        await connection.execute("UPDATE workflow_runs SET wake_at = now() - interval '1s'")
    async with automation_service(database, catalog_v2):
        await post_event(database, "c2", "started", email="c2@example.com", job="b")

        async def both(connection: Any) -> bool:
            return len(await connection.fetch(
                "SELECT 1 FROM workflow_log WHERE action IN ('sent', 'wait')")) >= 3

        await wait_for(database_url, both)
    async with database.connection() as connection:
        runs = await connection.fetch("SELECT contact_id, version, state FROM workflow_runs "
                                      "ORDER BY id")
        sent = await connection.fetch("SELECT detail FROM workflow_log WHERE action = 'sent'")
    assert [(r["contact_id"], r["version"]) for r in runs] == [
        ("c1", catalog_v1.current["jobs"].version), ("c2", catalog_v2.current["jobs"].version)]
    assert [s["detail"].split(" ")[0] for s in sent] == ["reminder"]  # v1's template


class PoisonedStore(PgStore):
    """A store with a deterministic bug: starting a run for the contact ``poison`` fails."""

    async def start_run(self, fire: Fire, now: datetime) -> Run | None:
        if fire.contact_id == "poison":
            raise RuntimeError("a deterministic bug")
        return await super().start_run(fire, now)


def quarantined() -> float:
    return REGISTRY.get_sample_value("herald_automation_quarantined_events_total") or 0.0


async def test_an_event_that_always_fails_is_quarantined_and_the_log_moves_on(
        database: Database, database_url: str) -> None:
    before = quarantined()
    async with automation_service(database, store_type=PoisonedStore) as service:
        await post_event(database, "c1", "signed_up", email="c1@example.com")
        await post_event(database, "poison", "signed_up", email="p@example.com")
        await post_event(database, "c2", "signed_up", email="c2@example.com")

        async def moved_on(connection: Any) -> bool:
            return {("c1", "welcome-1"), ("c2", "welcome-1")} <= set(await sends(connection))

        await wait_for(database_url, moved_on)
        # Later events flow as usual: the follower is past the poisoned one for good.
        await post_event(database, "c3", "signed_up", email="c3@example.com")

        async def later(connection: Any) -> bool:
            return (("c3", "welcome-1") in await sends(connection)
                    and service.cursor == await head(connection))

        await wait_for(database_url, later)
    async with database.connection() as connection:
        rows = await connection.fetch(
            "SELECT contact_id, type, error FROM automation_quarantine")
        report = await explain(connection, example_catalog(), "poison")
        assert ("poison", "welcome-1") not in await sends(connection)
    assert [(r["contact_id"], r["type"]) for r in rows] == [("poison", "signed_up")]
    assert "RuntimeError: a deterministic bug" in rows[0]["error"]
    assert quarantined() == before + 1
    [entry] = report["quarantined"]
    assert entry["type"] == "signed_up" and "a deterministic bug" in entry["error"]
    assert "quarantined" in render_text(report)
    async with automation_service(database, store_type=PoisonedStore):
        # A restart replays from the snapshot without tripping over the same event again.
        await post_event(database, "c4", "signed_up", email="c4@example.com")

        async def after_restart(connection: Any) -> bool:
            return ("c4", "welcome-1") in await sends(connection)

        await wait_for(database_url, after_restart)
    assert quarantined() == before + 1
