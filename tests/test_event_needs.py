"""The run store reads a contact's recent events only for transitions whose next steps can use
them (a branch, a template or webhook body naming ``recommendations``): the read is skipped for
the others, and done, with the same result as before, for those."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from automation.content.link_policy import normalize_domains
from automation.content.templates import TemplateSet
from automation.index.types import Fire
from automation.loading.catalog import Catalog
from automation.loading.loader import parse_workflow
from automation.runtime.guards import parse_quiet_hours
from automation.runtime.interpreter import Policy, RunInputs
from automation.runtime.program import compile_program
from automation.runtime.runs import Run, TimerResume
from automation.settings import AutomationSettings
from automation.stores.event_needs import EventNeeds
from automation.stores.group_sql import RECENT_EVENTS
from automation.stores.postgres import PgStore
from automation.stores.run_inputs import RunInputsReader
from engine.database import Database
from engine.eventlog import LogEvent, append_events
from mta.queue.enqueue import SuppressionsRead
from tests.support.automation import PUBLIC_URL, TEST_LINK_KEYS, example_catalog
from tests.support.mta import identity_for, mta_settings

TEMPLATES = {
    "hello/subject.txt": "Hello",
    "hello/body.txt": "Hello {{ unsubscribe_url }}",
    "recs/subject.txt": "For you",
    "recs/body.txt": "{% include '_partials/list.txt' %} {{ unsubscribe_url }}",
    "_partials/list.txt": "{% for r in recommendations %}[{{ r.sku }}]{% endfor %}",
}

# Sends hello on entry (no events needed), then after a day branches on a product view.
PLAIN = """
reentry: once
trigger: {type: event, event: signed_up}
steps:
  - id: hello
    send: hello
  - wait: 1d
  - id: viewed
    branch:
      cases:
        - when: {occurred: {event: product_viewed}}
          then:
            - id: recs-later
              send: recs
"""

# Its first send names recommendations (through a partial).
RECS = """
reentry: once
trigger: {type: event, event: signed_up}
steps:
  - id: recs-now
    send: recs
"""


def catalog() -> Catalog:
    templates = TemplateSet.from_sources(TEMPLATES)
    return Catalog([parse_workflow(PLAIN, "plain", templates, default_name="plain"),
                    parse_workflow(RECS, "recs", templates, default_name="recs")], templates)


class Recorded:
    """A connection whose recent-events reads are recorded (their contact ids)."""

    def __init__(self, connection: asyncpg.Connection, reads: list[list[str]]) -> None:
        self._connection = connection
        self._reads = reads

    async def fetch(self, query: str, *args: Any) -> list[asyncpg.Record]:
        if query == RECENT_EVENTS:
            self._reads.append(list(args[0]))
        return await self._connection.fetch(query, *args)  # type: ignore[no-any-return]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._connection, name)


class RecordingReader(RunInputsReader):
    """The store's inputs reader, its recent-events reads recorded."""

    reads: list[list[str]]

    async def read(self, connection: asyncpg.Connection,
                   runs: list[tuple[Run, datetime, bool]]
                   ) -> tuple[list[RunInputs], SuppressionsRead]:
        return await super().read(Recorded(connection, self.reads), runs)  # type: ignore[arg-type]


class RecordingStore(PgStore):
    inputs: RecordingReader

    @property
    def reads(self) -> list[list[str]]:
        return self.inputs.reads


async def make_store(database: Database, workflows: Catalog) -> RecordingStore:
    settings = AutomationSettings(from_address="Shop <news@shop.test>",
                                  link_domains=("shop.example.com",))
    policy = Policy(workflows.templates, settings.frequency_cap,
                    parse_quiet_hours(settings.quiet_hours),
                    normalize_domains(settings.link_domains), False)
    identity = await identity_for(database, mta_settings())
    store = RecordingStore(database, workflows, policy, settings, identity, TEST_LINK_KEYS,
                           PUBLIC_URL, track=False)
    store.inputs = RecordingReader(settings, TEST_LINK_KEYS, PUBLIC_URL)
    store.inputs.reads = []
    return store


def fire(workflow: str, contact: str, now: datetime) -> Fire:
    return Fire(workflow, contact, now, "signed_up", {}, now, f"{workflow}:{contact}:1")


def view(contact: str, sku: str, at: datetime) -> LogEvent:
    return LogEvent("product_viewed", contact, None,
                    {"sku": sku, "url": f"https://shop.example.com/{sku}"}, at, "test")


async def bodies(database: Database) -> dict[tuple[str, str], str]:
    async with database.connection() as connection:
        rows = await connection.fetch(
            "SELECT contact_id, metadata->>'step' AS step, body FROM outbound_messages")
    return {(r["contact_id"], r["step"]): bytes(r["body"]).decode() for r in rows}


async def test_the_recent_events_are_read_only_for_runs_that_use_them(
        database: Database) -> None:
    now = datetime.now(UTC)
    async with database.transaction() as connection:
        await connection.executemany(
            "INSERT INTO contacts (contact_id, email) VALUES ($1, $2)",
            [(c, f"{c}@example.com") for c in ("a", "b")])
        await append_events(connection, [
            view(c, sku, now - timedelta(hours=hours)) for c in ("a", "b")
            for sku, hours in (("s1", 3), ("s2", 2))])
    store = await make_store(database, catalog())
    plain, recs = await asyncio.gather(store.start_run(fire("plain", "a", now), now),
                                       store.start_run(fire("recs", "b", now), now))
    assert plain is not None and plain.state == "waiting"
    assert recs is not None and recs.state == "completed"
    # only b's run read them; a's next steps (a send of a template without recommendations,
    # then a wait) cannot use them
    assert sorted(contact for read in store.reads for contact in read) == ["b"]
    sent = await bodies(database)
    assert "[s2][s1]" in sent[("b", "recs-now")]  # the views, newest first, as before
    assert "[s" not in sent[("a", "hello")]

    # a's wait is over: the branch reads the events since entry (one view after it)
    later = now + timedelta(days=1, seconds=1)
    async with database.transaction() as connection:
        await append_events(connection, [view("a", "s3", now + timedelta(hours=1))])
    store.reads.clear()
    advanced = await store.advance(plain.id, TimerResume(), later)
    assert advanced is not None and advanced.state == "completed"
    assert store.reads == [["a"]]
    assert "[s3][s2][s1]" in (await bodies(database))[("a", "recs-later")]
    async with database.connection() as connection:
        branch = await connection.fetchval(
            "SELECT detail FROM workflow_log WHERE contact_id = 'a' AND action = 'branch'")
    assert branch == "-> 3"


def test_which_program_positions_read_the_recent_events() -> None:
    workflows = catalog()
    needs = EventNeeds(workflows.templates)
    plain = compile_program(workflows.current["plain"])
    recs = compile_program(workflows.current["recs"])
    assert not needs.needed(plain, 0, entering=True)  # hello, then a wait of a day
    assert needs.needed(plain, 1, entering=False)  # the wait is over: the branch follows
    assert needs.needed(recs, 0, entering=True)
    assert needs.template_reads("recs") and not needs.template_reads("hello")
    assert needs.template_reads("no-such-template")  # cannot tell: read


def test_the_shipped_workflows_read_them_where_their_steps_need_them() -> None:
    workflows = example_catalog()
    needs = EventNeeds(workflows.templates)

    def program(name: str) -> Any:
        return compile_program(workflows.current[name])

    welcome = program("welcome")
    # welcome-1 names no recommendations and a day's wait follows: the sign-up skips the read
    assert not needs.needed(welcome, 0, entering=True)
    # a resumed run may be late past every wait from entry: the branch may follow
    assert needs.needed(welcome, welcome.pc_of("welcome-2") - 1, entering=False)
    assert needs.template_reads("browse-followup") and needs.template_reads("welcome-3")
    assert needs.needed(program("browse-abandonment"), 0, entering=True)


def test_templates_using_heralds_own_filters_are_analysed_with_them() -> None:
    """A template is analysed in the environment it was compiled in: Herald's filters
    (``money``, ``datetime``) are known there, so the answer is the template's own, and a
    body nothing can analyse counts as reading."""
    templates = TemplateSet.from_sources({
        "price/subject.txt": "Total {{ amount | money('EUR') }}",
        "price/body.txt": "{{ amount | money('EUR') }} {{ unsubscribe_url }}",
        "price-recs/subject.txt": "{{ amount | money('EUR') }}",
        "price-recs/body.txt": "{% for r in recommendations %}{{ r.sku }}{% endfor %}",
    })
    needs = EventNeeds(templates)
    assert needs.template_reads("price") is False
    assert needs.template_reads("price-recs") is True
    assert needs.template_reads("missing") is True


def test_webhook_bodies_are_analysed_like_templates() -> None:
    """A webhook body's strings are templates of the same environment: one using Herald's
    filters and no recommendations skips the read; one naming them, directly or through a
    partial it includes, reads them."""
    templates = TemplateSet.from_sources({
        **TEMPLATES, "_partials/recs.txt": "{{ recommendations | length }}"})

    def webhook(name: str, body: str) -> Any:
        return parse_workflow(
            "trigger: {type: event, event: signed_up}\n"
            f"steps:\n  - id: call\n    webhook:\n      url: https://hooks.example.com/x\n"
            f"      body: {body}\n", name, templates, default_name=name)

    plain = webhook("plain-hook", "{total: \"{{ contact.id }} {{ 12 | money('EUR') }}\"}")
    direct = webhook("direct-hook", "{items: \"{{ recommendations | length }}\"}")
    partial = webhook("partial-hook", "{items: \"{% include '_partials/recs.txt' %}\"}")
    workflows = Catalog([plain, direct, partial], templates)
    needs = EventNeeds(templates)
    assert not needs.needed(compile_program(workflows.current["plain-hook"]), 0, entering=True)
    assert needs.needed(compile_program(workflows.current["direct-hook"]), 0, entering=True)
    assert needs.needed(compile_program(workflows.current["partial-hook"]), 0, entering=True)
