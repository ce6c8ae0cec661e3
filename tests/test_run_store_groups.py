"""The Postgres run store handles concurrent transitions of different contacts in groups (one
transaction, set-based statements); a transition that fails takes none of the others down."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from automation.content.link_policy import normalize_domains
from automation.index.types import Fire
from automation.runtime.guards import parse_quiet_hours
from automation.runtime.interpreter import Effects, Policy, RunInputs
from automation.runtime.runs import Run
from automation.settings import AutomationSettings
from automation.stores.postgres import PgStore
from automation.stores.transitions import RunOutcome
from engine.database import Database
from tests.support.automation import PUBLIC_URL, TEST_LINK_KEYS, example_catalog
from tests.support.mta import identity_for, mta_settings


class BuggyStore(PgStore):
    """Applying the effects of the contact ``bug`` raises (after the group's reads)."""

    async def _apply(self, connection: Any, run: Run, inputs: RunInputs, effects: Effects,
                     now: datetime) -> RunOutcome:
        if run.contact_id == "bug":
            raise RuntimeError("a bug in a step")
        return await super()._apply(connection, run, inputs, effects, now)


async def make_store(database: Database, store_type: type[PgStore] = PgStore) -> PgStore:
    catalog = example_catalog()
    settings = AutomationSettings(from_address="Shop <news@shop.test>")
    policy = Policy(catalog.templates, settings.frequency_cap,
                    parse_quiet_hours(settings.quiet_hours),
                    normalize_domains(settings.link_domains), False)
    identity = await identity_for(database, mta_settings())
    return store_type(database, catalog, policy, settings, identity, TEST_LINK_KEYS,
                      PUBLIC_URL)


def fire(contact: str, now: datetime) -> Fire:
    return Fire("welcome", contact, now, "signed_up", {}, now, f"welcome:{contact}:1")


async def add_contacts(database: Database, contacts: list[str]) -> None:
    async with database.transaction() as connection:
        await connection.executemany(
            "INSERT INTO contacts (contact_id, email) VALUES ($1, $2)",
            [(c, f"{c}@example.com") for c in contacts])


async def state(database: Database) -> tuple[dict[str, Any], dict[str, Any], list[Any]]:
    async with database.connection() as connection:
        runs = {r["contact_id"]: r for r in await connection.fetch(
            "SELECT contact_id, state, pc, sent_steps, wake_at, xmin::text AS tx "
            "FROM workflow_runs")}
        messages = {r["contact_id"]: r for r in await connection.fetch(
            "SELECT contact_id, metadata->>'step' AS step, xmin::text AS tx "
            "FROM outbound_messages")}
        logs = await connection.fetch(
            "SELECT contact_id, action FROM workflow_log ORDER BY id")
    return runs, messages, logs


async def test_concurrent_starts_share_transactions_with_their_messages(
        database: Database) -> None:
    contacts = [f"c{i}" for i in range(40)]
    await add_contacts(database, contacts)
    store = await make_store(database)
    now = datetime.now(UTC)
    runs = await asyncio.gather(*(store.start_run(fire(c, now), now) for c in contacts))
    assert all(run is not None and run.state == "waiting" for run in runs)
    stored, messages, logs = await state(database)
    assert set(stored) == set(messages) == set(contacts)
    for contact in contacts:  # the run and its message committed in one transaction
        assert stored[contact]["tx"] == messages[contact]["tx"]
        assert messages[contact]["step"] == "welcome-1"
        # each run written back (one statement for the group) with its own pause
        run = stored[contact]
        assert (run["state"], run["pc"], list(run["sent_steps"])) == (
            "waiting", 1, ["welcome-1"])
        assert run["wake_at"] is not None and run["wake_at"] > now
        assert [r["action"] for r in logs if r["contact_id"] == contact][:2] == [
            "entered", "sent"]
    assert store.commits.commits < len(contacts)  # grouped
    # The same fires again (a replay): recognised by their entry keys, nothing new.
    again = await asyncio.gather(*(store.start_run(fire(c, now), now) for c in contacts))
    assert again == [None] * len(contacts)
    assert len((await state(database))[1]) == len(contacts)


async def test_a_failing_transition_leaves_no_trace_and_the_others_commit(
        database: Database) -> None:
    contacts = ["a", "bug", "b", "c"]
    await add_contacts(database, contacts)
    store = await make_store(database, BuggyStore)
    now = datetime.now(UTC)
    results = await asyncio.gather(*(store.start_run(fire(c, now), now) for c in contacts),
                                   return_exceptions=True)
    assert isinstance(results[1], RuntimeError)
    assert all(isinstance(r, Run) for n, r in enumerate(results) if n != 1)
    stored, messages, logs = await state(database)
    assert set(stored) == set(messages) == {"a", "b", "c"}
    assert "bug" not in {r["contact_id"] for r in logs}
    assert store.commits.retried == 1  # one group, rolled back, then each alone


class RacingStore(PgStore):
    """Another transaction starts the run of contact ``raced``'s fire (and commits) after
    this group's re-entry read, before this group inserts its new runs."""

    raced = False

    async def _begin_all(self, connection: Any, starts: Any, logs: Any) -> Any:
        runs = await super()._begin_all(connection, starts, logs)
        if not self.raced and any(s.fire.contact_id == "raced" for s in starts):
            self.raced = True
            async with self.database.connection() as other:
                await other.execute(
                    "INSERT INTO workflow_runs (workflow, version, contact_id, reentry_key, "
                    "entry_key, state, entered_at, trigger_type) SELECT 'welcome', "
                    "version, 'raced', reentry_key, entry_key, 'completed', entered_at, "
                    "'signed_up' FROM unnest($1::text[], $2::text[], $3::text[], "
                    "$4::timestamptz[]) AS q(version, reentry_key, entry_key, entered_at)",
                    [r.version for r in runs if r and r.contact_id == "raced"],
                    [r.reentry_key for r in runs if r and r.contact_id == "raced"],
                    [r.entry_key for r in runs if r and r.contact_id == "raced"],
                    [r.entered_at for r in runs if r and r.contact_id == "raced"])
        return runs


async def test_a_run_started_meanwhile_by_another_transaction_is_not_started_twice(
        database: Database) -> None:
    contacts = ["a", "raced", "b"]
    await add_contacts(database, contacts)
    store = await make_store(database, RacingStore)
    now = datetime.now(UTC)
    results = await asyncio.gather(*(store.start_run(fire(c, now), now) for c in contacts))
    assert results[1] is None  # alone again, it finds the other transaction's run
    assert isinstance(results[0], Run) and isinstance(results[2], Run)
    stored, messages, logs = await state(database)
    assert set(stored) == set(contacts) and stored["raced"]["state"] == "completed"
    assert set(messages) == {"a", "b"}  # nothing of the raced attempt is left
    assert "raced" not in {r["contact_id"] for r in logs}
    assert store.commits.retried == 1
