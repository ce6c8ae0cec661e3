"""The shipped double opt-in workflow end to end on loopback: the HTTP app, the live automation
service and delivery to an aiosmtpd capture sink. The confirmation mail carries a signed link;
POSTing it with a real HTTP client records opted_in and the run sends the mail that needs
consent. A contact who never confirms gets only the confirmation; tampered links change
nothing. And a send that needs consent is skipped for a pending contact, as explain shows."""

from __future__ import annotations

import email
import email.policy
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from automation.index.types import Fire
from automation.loading.catalog import Catalog
from automation.tools.explain import explain, render_text
from engine.database import Database
from mta.sink import CaptureSink
from tests.support.app import RunningApp, running_app
from tests.support.automation import REPO, automation_service, post_event, wait_for
from tests.support.mta import delivery_service, fetch, mta_settings

LINK_KEY = "t1:" + "k" * 32  # the key tests.support.automation signs with


@pytest.fixture
async def sink() -> AsyncIterator[CaptureSink]:
    async with CaptureSink(keep=20) as running:
        yield running


@pytest.fixture
async def app(database_url: str, sink: CaptureSink) -> AsyncIterator[RunningApp]:
    async with running_app(database_url, mta_settings(), link_keys=(LINK_KEY,),
                           public_url="http://127.0.0.1:1") as running:
        yield running


def delivered(template: str, count: int) -> Any:
    async def check(connection: Any) -> bool:
        return bool(await connection.fetchval(
            "SELECT count(*) FROM outbound_messages WHERE state = 'delivered' "
            "AND metadata->>'template' = $1", template) == count)
    return check


def text_of(data: bytes) -> str:
    message = email.message_from_bytes(data, policy=email.policy.default)
    part = message.get_body(("plain",))
    assert part is not None
    return str(part.get_content())


async def test_confirming_the_link_opts_in_and_the_workflow_proceeds(
        app: RunningApp, sink: CaptureSink, database: Database, database_url: str) -> None:
    public_url = app.base_url
    settings = mta_settings(routes={"example.org": f"127.0.0.1:{sink.port}"})
    async with automation_service(database, public_url=public_url), \
            delivery_service(database, settings):
        async with app.client() as client:
            for contact, address in (("ann", "ann@example.org"), ("bo", "bo@example.org")):
                response = await client.post("/v1/contacts", json={
                    "contact_id": contact, "email": address, "consent": "pending",
                    "attributes": {"first_name": contact.title()}})
                assert response.status_code == 201, response.text
        await wait_for(database_url, delivered("confirm-subscription", 2))
        by_recipient = {m.rcpt_tos[0]: m for m in sink.messages}
        text = text_of(by_recipient["ann@example.org"].data)
        match = re.search(re.escape(public_url) + r"/v1/consent/confirm/(\S+)", text)
        assert match is not None, text
        link = match.group(0)
        async with httpx.AsyncClient(timeout=10.0, follow_redirects=False) as browser:
            shown = await browser.get(link)
            assert shown.status_code == 200 and '<form method="post">' in shown.text
            assert "ann@example.org" in shown.text
            [ann] = await fetch(database, "SELECT consent_state FROM contacts "
                                          "WHERE contact_id = 'ann'")
            assert ann["consent_state"] == "pending"  # showing the page changes nothing
            tampered = link[:-2] + ("A" if link[-2] != "A" else "B") + link[-1]
            refused = await browser.post(tampered)
            assert refused.status_code == 400 and "Nothing was changed" in refused.text
            confirmed = await browser.post(link)
            assert confirmed.status_code == 200 and "confirmed" in confirmed.text
            again = await browser.post(link)
            assert again.status_code == 200
        await wait_for(database_url, delivered("subscription-confirmed", 1))
        async with app.client() as client:
            consent = (await client.get("/v1/contacts/ann")).json()["contact"]["consent"]
        runs = {r["contact_id"]: r["state"] for r in await fetch(
            database, "SELECT contact_id, state FROM workflow_runs "
                      "WHERE workflow = 'double-opt-in'")}
    assert consent["state"] == "opted_in" and consent["source"] == "double_opt_in"
    assert runs == {"ann": "completed", "bo": "waiting_event"}
    received = sorted((m.rcpt_tos[0], email.message_from_bytes(m.data)["Subject"])
                      for m in sink.messages)
    assert received == [("ann@example.org", "Please confirm your subscription"),
                        ("ann@example.org", "You're subscribed, Ann!"),
                        ("bo@example.org", "Please confirm your subscription")]
    given = await fetch(database, "SELECT contact_id FROM events WHERE type = 'consent_given'")
    assert [r["contact_id"] for r in given] == ["ann"]  # once: the repeated POST logs nothing


@pytest.mark.parametrize("token", [
    "t1.AAAAAGkAAAFhbm4.AAAAAAAAAAAAAAAAAAAAAA",  # a forged MAC
    "zz.AAAAAGkAAAFhbm4.AAAAAAAAAAAAAAAAAAAAAA",  # an unknown key
    "t1.not base64.x", "t1", "t1.AAAA=.AAAA"])
async def test_bad_confirm_tokens_get_400_and_change_nothing(app: RunningApp,
                                                             token: str) -> None:
    async with app.client() as client:
        await client.post("/v1/contacts", json={"contact_id": "ann", "consent": "pending"})
    async with httpx.AsyncClient(base_url=app.base_url, timeout=10.0) as browser:
        for response in (await browser.get(f"/v1/consent/confirm/{token}"),
                         await browser.post(f"/v1/consent/confirm/{token}")):
            assert response.status_code == 400
            assert "not valid" in response.text
    [row] = await fetch(app.database, "SELECT consent_state FROM contacts")
    assert row["consent_state"] == "pending"


GATED = """
trigger: {type: event, event: signed_up}
requires_consent: true
steps:
  - id: news
    send: welcome-1
  - id: receipt
    send: {template: order-thanks, transactional: true}
"""
# No say in the workflow: [privacy] require_consent decides; a step may still opt out.
DEFAULTED = """
trigger: {type: event, event: signed_up}
steps:
  - id: news
    send: welcome-1
  - id: notice
    send: {template: welcome-2, requires_consent: false}
"""


@pytest.mark.parametrize(("source", "require_consent", "expected"), [
    (GATED, False, {("pend", "receipt"), ("yes", "news"), ("yes", "receipt")}),
    (DEFAULTED, True, {("pend", "notice"), ("yes", "news"), ("yes", "notice")}),
    (DEFAULTED, False, {("pend", "news"), ("pend", "notice"), ("yes", "news"),
                        ("yes", "notice")})])
async def test_a_send_that_needs_consent_is_skipped_for_a_pending_contact(
        database: Database, database_url: str, tmp_path: Path, source: str,
        require_consent: bool, expected: set[tuple[str, str]]) -> None:
    workflows = tmp_path / "workflows"
    workflows.mkdir()
    (workflows / "gated.yaml").write_text(source)
    catalog = Catalog.load(workflows, REPO / "config" / "templates")
    async with automation_service(database, catalog, require_consent=require_consent):
        async with database.transaction() as connection:
            for contact, state in (("pend", "pending"), ("yes", "opted_in")):
                await connection.execute(
                    "INSERT INTO contacts (contact_id, email, consent_state, consent_at, "
                    "consent_source) VALUES ($1, $2, $3, now(), 'test')",
                    contact, f"{contact}@example.org", state)
        await post_event(database, "pend", "signed_up")
        await post_event(database, "yes", "signed_up")

        async def decided(connection: Any) -> bool:
            return bool(await connection.fetchval(
                "SELECT count(*) FROM workflow_runs WHERE state = 'completed'") == 2)

        await wait_for(database_url, decided)
        async with database.connection() as connection:
            report = await explain(connection, catalog, "pend")
    sent = {(r["contact_id"], r["metadata"]["step"]) for r in await fetch(
        database, "SELECT contact_id, metadata FROM outbound_messages")}
    assert sent == expected
    assert ("skipped: no consent (pending)" in render_text(report)) == (
        len(expected) < 4)


async def test_a_fire_from_before_an_erase_leaves_no_trace(
        app: RunningApp, database: Database) -> None:
    """A timer or snapshot from before the erase may still fire for the contact id: no run, no
    log row. A contact who comes back (a new event after the erase) is a new contact."""
    async with app.client() as client:
        await client.post("/v1/contacts", json={"contact_id": "zed", "email": "z@example.org"})
        assert (await client.delete("/v1/contacts/zed")).status_code == 200
    now = datetime.now(UTC)
    fire = Fire("welcome", "zed", now, "signed_up", {}, now, "stale-1")
    async with automation_service(database) as service:
        assert await service.store.start_run(fire, now) is None
        await post_event(database, "zed", "came_back", email="z@example.org")
        back = await service.store.start_run(
            Fire("welcome", "zed", now, "signed_up", {}, now, "new-1"), datetime.now(UTC))
    assert back is not None
    runs = await fetch(database, "SELECT entry_key FROM workflow_runs WHERE contact_id = 'zed'")
    assert [r["entry_key"] for r in runs] == ["new-1"]


async def test_consent_events_posted_by_the_sender_set_the_state(
        app: RunningApp, database: Database, database_url: str) -> None:
    """consent_* events posted to /v1/events are applied by the live follower (the newest time
    wins); a withdrawal also ends a waiting double opt-in run (exit_when)."""
    async with automation_service(database, public_url=app.base_url):
        async with app.client() as client:
            await client.post("/v1/contacts", json={
                "contact_id": "cy", "email": "cy@example.org", "consent": "pending"})

            async def waiting(connection: Any) -> bool:
                return bool(await connection.fetchval(
                    "SELECT count(*) FROM workflow_runs WHERE state = 'waiting_event'"))

            await wait_for(database_url, waiting)
            posted = await client.post("/v1/events", json={"events": [
                {"type": "consent_withdrawn", "contact_id": "dee",
                 "timestamp": "2026-01-01T00:00:00Z", "properties": {"source": "form"}},
                {"type": "consent_given", "contact_id": "dee",
                 "timestamp": "2020-01-01T00:00:00Z", "properties": {"source": "old-import"}},
                {"type": "consent_withdrawn", "contact_id": "cy",
                 "properties": {"source": "preference-center"}}]})
            assert posted.status_code == 202, posted.text

            async def applied(connection: Any) -> bool:
                return bool(await connection.fetchval(
                    "SELECT count(*) FROM workflow_runs WHERE state = 'exited'")) and bool(
                    await connection.fetchval("SELECT count(*) FROM contacts "
                                              "WHERE contact_id = 'dee'"))

            await wait_for(database_url, applied)
            cy = (await client.get("/v1/contacts/cy")).json()["contact"]["consent"]
            dee = (await client.get("/v1/contacts/dee")).json()["contact"]["consent"]
    assert (cy["state"], cy["source"]) == ("opted_out", "preference-center")
    assert (dee["state"], dee["source"]) == ("opted_out", "form")  # the newest, not the last
    [run] = await fetch(database, "SELECT exit_reason FROM workflow_runs")
    assert run["exit_reason"] == "exit_when: consent_withdrawn"


async def test_an_erase_drops_the_contact_from_the_live_trigger_index(
        app: RunningApp, database: Database, database_url: str) -> None:
    async with automation_service(database) as service:
        assert service.core is not None
        await post_event(database, "cart-1", "cart_updated", email="c@example.org",
                         cart_id="k1", items=[])

        async def timer_armed(connection: Any) -> bool:
            return service.core is not None and service.core.timers_pending() == 1

        await wait_for(database_url, timer_armed)
        async with app.client() as client:
            assert (await client.delete("/v1/contacts/cart-1")).status_code == 200
        seen = service.processed
        await post_event(database, "someone-else", "nothing_watches_this")

        async def next_step_done(connection: Any) -> bool:
            return service.processed > seen

        await wait_for(database_url, next_step_done)
        assert service.core.timers_pending() == 0
        assert service.core.next_due() is None
