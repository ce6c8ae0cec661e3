"""GDPR export and erase over HTTP and the CLI, against the real app and Postgres: the export
holds everything, the erase leaves no row naming the person in any table, the erased address
stays suppressed (as a hash), and the audit log names nobody."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from automation.live.webhooks import step_row
from automation.runtime.interpreter import WebhookEffect
from engine.addresses import _parse_address, parse_address
from engine.database import Database
from engine.outbox import store as outbox_store
from herald.cli import main as cli_main
from mta.compose import compose
from mta.queue.enqueue import OutboundMessage, enqueue
from mta.suppression import store as suppressions
from mta.suppression.rules import UNSUBSCRIBE, Suppression
from tests.support.app import RunningApp, running_app
from tests.support.mta import fetch, identity_for, mta_settings
from tests.test_cli import herald

CONTACT = "cust-7f3a9"
EMAIL = "Ann.Privacy@Example.org"
ANONYMOUS = "anon-b81c"


@pytest.fixture
async def app(database_url: str) -> AsyncIterator[RunningApp]:
    async with running_app(database_url, mta_settings()) as running:
        yield running


async def queue(database: Database, to: str, contact_id: str | None = None,
                **metadata: Any) -> tuple[uuid.UUID, str | None]:
    identity = await identity_for(database, mta_settings())
    composed = compose({"from": "Shop <news@shop.test>", "to": to, "subject": "Hi",
                        "text": "Hi Ann.\n"})
    message = OutboundMessage(composed.header_from, parse_address(to), composed.body,
                              contact_id, metadata=dict(metadata))
    async with database.transaction() as connection:
        queued = await enqueue(connection, identity, message)
    return queued.id, queued.suppressed


async def seed(app: RunningApp) -> uuid.UUID:
    """A contact with something in every table that can hold personal data."""
    async with app.client() as client:
        created = await client.post("/v1/contacts", json={
            "contact_id": CONTACT, "email": EMAIL, "attributes": {"first_name": "Ann"},
            "consent": {"state": "opted_in", "source": "signup_form"}})
        assert created.status_code == 201, created.text
        posted = await client.post("/v1/events", json={"events": [
            {"type": "product_viewed", "contact_id": CONTACT, "properties": {"sku": "A-1"}},
            {"type": "order_completed", "contact_id": CONTACT, "email": EMAIL,
             "properties": {"order_id": "o-1", "amount": 12.5}}]})
        assert posted.status_code == 202, posted.text
    message_id, suppressed = await queue(app.database, EMAIL, CONTACT, workflow="welcome")
    assert suppressed is None
    now = datetime.now(UTC)
    async with app.database.transaction() as connection:
        await connection.execute(
            "INSERT INTO identities (anonymous_id, contact_id) VALUES ($1, $2)",
            ANONYMOUS, CONTACT)
        await connection.execute(
            "INSERT INTO events (type, contact_id, properties, occurred_at, source) "
            "VALUES ('page_viewed', $1, '{\"path\": \"/shoes\"}', now(), 'segment')",
            f"anon:{ANONYMOUS}")
        await connection.execute(
            "INSERT INTO delivery_attempts (message_id, attempt, outcome, reply) "
            "VALUES ($1, 1, 'deferred', $2)", message_id, f"452 mailbox of {EMAIL} full")
        await suppressions.add(connection, [Suppression(
            "ann.privacy@example.org", UNSUBSCRIBE, "news", "one_click", message_id)], now)
        await connection.execute(
            "INSERT INTO soft_bounces (email, message_id) VALUES ($1, $2)",
            "ann.privacy@example.org", message_id)
        await connection.execute(
            "INSERT INTO inbound_messages (id, mail_from, rcpt_tos, recipients, size, raw) "
            "VALUES ($1, '', $2, $3, 10, $4)", uuid.uuid4(), ["b-x@bounces.herald.test"],
            [["b-x@bounces.herald.test", "bounce", str(message_id)]],
            f"Final-Recipient: rfc822; {EMAIL}".encode())
        run_id = await connection.fetchval(
            "INSERT INTO workflow_runs (workflow, version, contact_id, reentry_key, entry_key, "
            "state, entered_at, trigger_type, trigger_properties) VALUES ('welcome', 'v1', $1, "
            "'null', 'e1', 'waiting', now(), 'signed_up', $2) RETURNING id",
            CONTACT, {"email": EMAIL})
        await connection.execute(
            "INSERT INTO workflow_log (at, workflow, contact_id, run_id, step, action, detail) "
            "VALUES (now(), 'welcome', $1, $2, 'welcome-1', 'sent', $3)",
            CONTACT, run_id, f"welcome-1 -> {EMAIL}")
        await connection.execute(
            "INSERT INTO automation_quarantine (cursor_txid, cursor_pos, contact_id, type, "
            "error) VALUES (1, 1, $1, 'odd', 'boom')", CONTACT)
        await connection.execute(
            "INSERT INTO workflow_stats_last_click (contact_id, message_id, clicked_at) "
            "VALUES ($1, $2, now())", CONTACT, str(message_id))
        await outbox_store.enqueue(connection, [step_row(WebhookEffect(
            "crm-1", "https://crm.example.net/hook", (), {"contact": CONTACT, "email": EMAIL},
            5.0, 2), CONTACT)])
    return message_id


async def rows_naming(database: Database, *needles: str) -> dict[str, int]:
    """Rows of every table whose text form holds any needle (case-insensitive)."""
    found: dict[str, int] = {}
    tables = [r["tablename"] for r in await fetch(
        database, "SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
                  "AND tablename <> 'schema_migrations'")]
    for table in tables:
        for needle in needles:
            [row] = await fetch(database, f'SELECT count(*) AS n FROM "{table}" AS t '
                                          "WHERE t::text ILIKE '%' || $1 || '%'", needle)
            if row["n"]:
                found[f"{table}:{needle}"] = row["n"]
    return found


async def test_export_holds_everything_about_the_contact(app: RunningApp) -> None:
    message_id = await seed(app)
    async with app.client() as client:
        response = await client.get(f"/v1/contacts/{CONTACT}/export")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    document = orjson.loads(response.content)
    assert document["contact_id"] == CONTACT
    assert document["contact"]["email"] == "Ann.Privacy@example.org"
    assert document["contact"]["attributes"] == {"first_name": "Ann"}
    assert document["consent"]["state"] == "opted_in"
    assert document["consent"]["source"] == "signup_form"
    assert document["identities"][0]["anonymous_id"] == ANONYMOUS
    types = [e["type"] for e in document["events"]]
    assert {"contact_updated", "consent_given", "product_viewed", "order_completed",
            "page_viewed", "suppression_added"} <= set(types)
    positions = [e["position"] for e in document["events"]]
    assert positions == sorted(positions)
    [message] = document["messages"]
    assert message["id"] == str(message_id) and message["metadata"]["workflow"] == "welcome"
    assert "body" not in message
    assert message["delivery_attempts"][0]["outcome"] == "deferred"
    assert [(s["reason"], s["category"]) for s in document["suppressions"]] == [
        ("unsubscribe", "news")]
    [run] = document["workflow_runs"]
    assert run["workflow"] == "welcome" and run["state"] == "waiting"
    assert document["workflow_log"][0]["action"] == "sent"
    [request] = document["webhook_requests"]
    assert request["url"] == "https://crm.example.net/hook" and request["kind"] == "step"
    assert request["body"] == {"contact": CONTACT, "email": EMAIL}
    [audit] = await fetch(app.database, "SELECT * FROM privacy_audit")
    assert audit["action"] == "export" and audit["actor"] == app.admin_key.split("_")[1]


async def test_export_pages_through_many_events(app: RunningApp) -> None:
    async with app.database.transaction() as connection:
        await connection.execute("INSERT INTO contacts (contact_id) VALUES ('many')")
        await connection.execute(
            "INSERT INTO events (type, contact_id, occurred_at) "
            "SELECT 'tick', 'many', now() FROM generate_series(1, 2345)")
    async with app.client() as client:
        response = await client.get("/v1/contacts/many/export")
    events = orjson.loads(response.content)["events"]
    assert len(events) == 2345 and len({e["position"] for e in events}) == 2345


async def test_erase_removes_every_row_naming_the_contact(app: RunningApp) -> None:
    await seed(app)
    before = await rows_naming(app.database, CONTACT, "ann.privacy@example.org")
    assert {key.split(":")[0] for key in before} >= {
        "contacts", "events", "identities", "outbound_messages", "suppressions",
        "soft_bounces", "workflow_runs", "workflow_log", "automation_quarantine",
        "delivery_attempts", "workflow_stats_last_click", "outbox"}
    async with app.client() as client:
        response = await client.delete(f"/v1/contacts/{CONTACT}")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["already_erased"] is False
    assert body["removed"]["events"] >= 6 and body["removed"]["outbound_messages"] == 1
    assert body["removed"]["inbound_messages"] == 1 and body["removed"]["outbox"] == 1
    assert await rows_naming(app.database, CONTACT, "ann.privacy@example.org",
                             f"anon:{ANONYMOUS}") == {}
    for table in ("contacts", "identities", "outbound_messages", "delivery_attempts",
                  "suppressions", "soft_bounces", "inbound_messages", "workflow_log",
                  "automation_quarantine", "outbox"):
        [row] = await fetch(app.database, f"SELECT count(*) AS n FROM {table}")
        assert row["n"] == 0, table
    [run] = await fetch(app.database, "SELECT * FROM workflow_runs")
    assert run["state"] == "exited" and run["exit_reason"] == "contact erased"
    assert run["trigger_properties"] == {} and run["contact_id"].startswith("erased:")
    [erased] = await fetch(app.database, "SELECT count(*) AS n FROM erased_addresses")
    assert erased["n"] == 1


async def test_an_erased_address_stays_suppressed(app: RunningApp) -> None:
    await seed(app)
    async with app.client() as client:
        assert (await client.delete(f"/v1/contacts/{CONTACT}")).status_code == 200
    _, reason = await queue(app.database, "ANN.PRIVACY@example.org")
    assert reason == "erased"
    _, reason = await queue(app.database, EMAIL, "someone-new", transactional=True)
    assert reason == "erased"
    _, other = await queue(app.database, "bo@example.org")
    assert other is None
    async with app.client() as client:
        sent = await client.post("/v1/messages", json={
            "from": "news@shop.test", "to": EMAIL, "subject": "Back?", "text": "Hi"})
    assert sent.status_code == 202, sent.text
    [row] = await fetch(app.database, "SELECT state, last_reply FROM outbound_messages "
                                      "WHERE id = $1", uuid.UUID(sent.json()["id"]))
    assert row["state"] == "suppressed" and "erased" in row["last_reply"]


async def test_audit_rows_hold_no_personal_data_and_erase_is_idempotent(
        app: RunningApp) -> None:
    await seed(app)
    async with app.client() as client:
        assert (await client.get(f"/v1/contacts/{CONTACT}/export")).status_code == 200
        first = await client.delete(f"/v1/contacts/{CONTACT}")
        again = await client.delete(f"/v1/contacts/{CONTACT}")
        gone = await client.get(f"/v1/contacts/{CONTACT}")
    assert first.status_code == again.status_code == 200
    assert again.json()["already_erased"] is True
    assert again.json()["contact_hash"] == first.json()["contact_hash"]
    assert again.json()["erased_at"] == first.json()["erased_at"]
    assert gone.status_code == 404
    audit = await fetch(app.database, "SELECT * FROM privacy_audit ORDER BY id")
    assert [r["action"] for r in audit] == ["export", "erase", "erase"]
    assert {r["contact_hash"] for r in audit} == {first.json()["contact_hash"]}
    text = orjson.dumps([dict(r) for r in audit], default=str).decode().lower()
    for needle in (CONTACT, "ann.privacy", ANONYMOUS, "example.org"):
        assert needle not in text


async def test_unknown_contact_404_and_missing_scope_403(app: RunningApp) -> None:
    reader = await app.new_key("contacts:read", "contacts:write")
    privacy = await app.new_key("privacy")
    async with app.client() as client:
        assert (await client.delete("/v1/contacts/nobody")).status_code == 404
        assert (await client.get("/v1/contacts/nobody/export")).status_code == 404
        await client.post("/v1/contacts", json={"contact_id": "c1", "email": "c1@example.org"})
    async with app.client(reader) as client:
        for response in (await client.delete("/v1/contacts/c1"),
                         await client.get("/v1/contacts/c1/export")):
            assert response.status_code == 403
            assert response.json()["message"] == "this key lacks the 'privacy' scope"
    async with app.client(privacy) as client:
        assert (await client.get("/v1/contacts/c1/export")).status_code == 200
    [row] = await fetch(app.database, "SELECT count(*) AS n FROM contacts")
    assert row["n"] == 1


async def test_consent_through_the_contacts_api(app: RunningApp) -> None:
    async with app.client() as client:
        none = await client.post("/v1/contacts", json={"contact_id": "c2"})
        assert none.json()["contact"]["consent"] is None
        pending = await client.post("/v1/contacts", json={
            "contact_id": "c2", "email": "c2@example.org", "consent": "pending"})
        assert pending.json()["contact"]["consent"]["state"] == "pending"
        given = await client.post("/v1/contacts", json={"contact_id": "c2", "consent": {
            "state": "opted_in", "source": "checkout", "at": "2026-01-02T03:04:05Z"}})
        assert given.status_code == 200, given.text
        read = (await client.get("/v1/contacts/c2")).json()["contact"]["consent"]
        bad = await client.post("/v1/contacts", json={"contact_id": "c2",
                                                      "consent": {"state": "maybe"}})
        odd = await client.post("/v1/contacts", json={"contact_id": "c2",
                                                      "consent": {"state": "pending", "x": 1}})
    # An older record never overwrites a newer one: the 2026-01-02 opt-in is older than the
    # pending request just made, so pending stays.
    assert read["state"] == "pending"
    assert bad.status_code == 422 and "consent.state" in bad.json()["message"]
    assert odd.status_code == 422 and "consent.x: unknown field" in odd.json()["message"]
    events = await fetch(app.database, "SELECT type, properties FROM events "
                                       "WHERE type LIKE 'consent%' ORDER BY position")
    assert [e["type"] for e in events] == ["consent_requested"]
    assert events[0]["properties"] == {"state": "pending", "source": "api"}


async def test_cli_export_and_erase(app: RunningApp, database_url: str) -> None:
    await seed(app)
    exported = herald(database_url, "contacts", "export", CONTACT)
    assert exported.returncode == 0, exported.stderr
    document = orjson.loads(exported.stdout)
    assert document["contact_id"] == CONTACT and len(document["events"]) >= 6
    erased = herald(database_url, "contacts", "erase", CONTACT, "--yes")
    assert erased.returncode == 0, erased.stderr
    assert orjson.loads(erased.stdout)["already_erased"] is False
    missing = herald(database_url, "contacts", "export", CONTACT)
    assert missing.returncode == 2
    assert missing.stderr.strip() == f"herald: error: no contact with contact_id {CONTACT!r}"
    actors = await fetch(app.database, "SELECT actor, action FROM privacy_audit ORDER BY id")
    assert [(r["actor"], r["action"]) for r in actors] == [("cli", "export"), ("cli", "erase")]
    assert await rows_naming(app.database, CONTACT, "ann.privacy@example.org") == {}


def test_cli_erase_needs_yes(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["contacts", "erase", CONTACT]) == 2
    assert capsys.readouterr().err.strip() == (
        f"herald: error: erase cannot be undone: add --yes to erase {CONTACT!r}")


async def test_openapi_documents_the_privacy_endpoints(app: RunningApp) -> None:
    async with app.client() as client:
        paths = (await client.get("/openapi.json")).json()["paths"]
    assert set(paths["/v1/contacts/{contact_id}"]) == {"get", "delete"}
    assert paths["/v1/contacts/{contact_id}"]["delete"]["security"] == [{"bearer": ["privacy"]}]
    assert set(paths["/v1/contacts/{contact_id}/export"]) == {"get"}
    assert set(paths["/v1/consent/confirm/{token}"]) == {"get", "post"}
    consent = paths["/v1/contacts"]["post"]["requestBody"]["content"]["application/json"]
    assert consent["schema"] == {"$ref": "#/components/schemas/Contact"}


async def test_removing_an_erased_address_lifts_its_block(app: RunningApp) -> None:
    await seed(app)
    async with app.client() as client:
        assert (await client.delete(f"/v1/contacts/{CONTACT}")).status_code == 200
        shown = (await client.get(f"/v1/suppressions/{EMAIL}")).json()
        assert shown["suppressed"] is True and shown["erased"] is True
        assert shown["suppressions"] == []
        # One category's removal leaves the erasure's block (it covers all mail).
        one = await client.delete(f"/v1/suppressions/{EMAIL}", params={"category": "news"})
        assert one.status_code == 404
        _, reason = await queue(app.database, EMAIL)
        assert reason == "erased"
        lifted = await client.delete(f"/v1/suppressions/{EMAIL}")
        assert lifted.status_code == 200 and lifted.json()["removed"] == 1
        shown = (await client.get(f"/v1/suppressions/{EMAIL}")).json()
        assert shown["suppressed"] is False and shown["erased"] is False
        again = await client.delete(f"/v1/suppressions/{EMAIL}")
        assert again.status_code == 404
    _, reason = await queue(app.database, EMAIL, "came-back")
    assert reason is None
    [logged] = await fetch(app.database, "SELECT properties FROM events "
                                         "WHERE type = 'suppression_removed'")
    assert logged["properties"]["reason"] == "erased"
    [left] = await fetch(app.database, "SELECT count(*) AS n FROM erased_addresses")
    assert left["n"] == 0


async def test_an_erase_leaves_no_copy_in_the_address_cache(app: RunningApp) -> None:
    await seed(app)
    assert str(parse_address(EMAIL)) == "Ann.Privacy@example.org"  # now remembered
    assert _parse_address.cache_info().currsize > 0
    async with app.client() as client:
        assert (await client.delete(f"/v1/contacts/{CONTACT}")).status_code == 200
    assert _parse_address.cache_info().currsize == 0
