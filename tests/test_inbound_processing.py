"""Processing stored inbound mail on real Postgres through the real server: DSNs (hard, soft,
delayed), ARF complaints, auto-replies, mailto unsubscribes, bad reports, retries and
reprocessing without duplicates."""

from __future__ import annotations

import uuid
from typing import Any

import aiosmtplib

from engine.database import Database
from mta.queue.enqueue import QueueIdentity
from mta.queue.return_paths import bounce_address
from mta.suppression.rules import COMPLAINT, HARD_BOUNCE, from_event
from mta.suppression.tokens import MAILTO_PREFIX, unsubscribe_token
from tests.support.automation import TEST_LINK_KEYS
from tests.support.inbound import (
    FEEDBACK,
    arf,
    auto_reply,
    dsn,
    inbound_service,
    port_of,
    wait_all_processed,
    wait_inbound,
)
from tests.support.mta import fetch, identity_for, mta_settings, queue_message

METADATA = {"workflow": "welcome", "step": "welcome-1", "run_id": 7, "template": "welcome"}


async def queued(database: Database, to: str = "ann@example.org", **extra: Any
                 ) -> tuple[uuid.UUID, str]:
    """An outbound message (as a workflow would queue it) and its return path."""
    identity = await identity_for(database, mta_settings())
    extra.setdefault("metadata", METADATA)
    message_id = await queue_message(database, identity, to, contact_id="contact-ann", **extra)
    return message_id, bounce_address(identity.bounce_secret, message_id,
                                      identity.bounce_domain)


async def send(port: int, recipient: str, data: bytes) -> None:
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port) as client:
        errors, _ = await client.sendmail("", [recipient], data)
    assert errors == {}


async def events(database: Database, kind: str) -> list[Any]:
    return await fetch(database, "SELECT event_id, contact_id, email, properties, source "
                                 "FROM events WHERE type = $1 ORDER BY position", kind)


async def suppressions(database: Database) -> list[tuple[str, str, str, str]]:
    rows = await fetch(database, "SELECT email, reason, category, source FROM suppressions "
                                 "ORDER BY id")
    return [(r["email"], r["reason"], r["category"], r["source"]) for r in rows]


async def inbound_rows(database: Database) -> list[Any]:
    return await fetch(database, "SELECT id, state, kind, result, attempts, last_error "
                                 "FROM inbound_messages ORDER BY received_at")


async def test_hard_bounce_suppresses_and_logs_an_async_email_bounced(
        database: Database, database_url: str) -> None:
    message_id, return_path = await queued(database)
    async with inbound_service(database) as service:
        await send(port_of(service), return_path,
                   dsn(return_path, "ann@example.org", "5.1.1", "550 5.1.1 user unknown"))
        await wait_all_processed(database_url, 1)
    (row,) = await inbound_rows(database)
    assert (row["state"], row["kind"], row["attempts"]) == ("processed", "bounce", 1)
    assert row["result"][0]["outcome"] == "hard_bounce"
    assert row["result"][0]["message_id"] == str(message_id)
    assert await suppressions(database) == [("ann@example.org", HARD_BOUNCE, "", "dsn")]
    (event,) = await events(database, "email_bounced")
    assert event["event_id"] == f"inbound:{row['id']}:0:email_bounced"
    assert (event["contact_id"], event["email"], event["source"]) == (
        "contact-ann", "ann@example.org", "mta")
    properties = event["properties"]
    assert {k: properties[k] for k in ("message_id", "recipient", "kind", "hard", "status",
                                       "reply_code", "reason", "source", "workflow", "step",
                                       "run_id")} == {
        "message_id": str(message_id), "recipient": "ann@example.org", "kind": "async",
        "hard": True, "status": "5.1.1", "reply_code": 550, "reason": "mailbox_unknown",
        "source": "dsn", "workflow": "welcome", "step": "welcome-1", "run_id": 7}
    implied = from_event("email_bounced", event["email"], properties)
    assert implied is not None and implied.reason == HARD_BOUNCE
    assert implied.message_id == message_id
    assert len(await events(database, "suppression_added")) == 1


async def test_soft_bounces_are_counted_not_suppressed_until_the_limit(
        database: Database, database_url: str) -> None:
    first, first_path = await queued(database)
    second, second_path = await queued(database)
    delayed, delayed_path = await queued(database)
    full = "552 5.2.2 Mailbox full"
    async with inbound_service(database, mta=mta_settings(soft_bounce_limit=2)) as service:
        port = port_of(service)
        await send(port, first_path, dsn(first_path, "ann@example.org", "5.2.2", full))
        await wait_all_processed(database_url, 1)
        assert await suppressions(database) == []
        await send(port, delayed_path, dsn(delayed_path, "ann@example.org", "4.4.1",
                                           "450 4.4.1 timed out", action="delayed"))
        await wait_all_processed(database_url, 2)
        assert await suppressions(database) == []
        await send(port, second_path, dsn(second_path, "ann@example.org", "5.2.2", full))
        await wait_all_processed(database_url, 3)
    assert [r["result"][0]["outcome"] for r in await inbound_rows(database)] == [
        "soft_bounce", "delayed", "soft_bounce"]
    bounced = await events(database, "email_bounced")
    assert [(e["properties"]["hard"], e["properties"]["reason"]) for e in bounced] == [
        (False, "mailbox_full")] * 2
    assert all(from_event("email_bounced", e["email"], e["properties"]) is None
               for e in bounced)
    (deferred,) = await events(database, "email_deferred")
    assert deferred["properties"]["message_id"] == str(delayed)
    counted = await fetch(database, "SELECT message_id FROM soft_bounces ORDER BY at")
    assert [r["message_id"] for r in counted] == [first, second]
    assert await suppressions(database) == [("ann@example.org", "soft_bounces", "",
                                              "soft_bounces")]


async def test_arf_report_to_a_feedback_address_is_a_complaint(
        database: Database, database_url: str) -> None:
    message_id, return_path = await queued(database)
    async with inbound_service(database) as service:
        await send(port_of(service), FEEDBACK, arf(return_path, "ann@example.org"))
        await wait_all_processed(database_url, 1)
    (row,) = await inbound_rows(database)
    assert row["kind"] == "complaint" and row["result"][0]["outcome"] == "complaint"
    assert await suppressions(database) == [("ann@example.org", COMPLAINT, "", "arf")]
    (event,) = await events(database, "email_complained")
    assert event["contact_id"] == "contact-ann"
    properties = event["properties"]
    assert (properties["message_id"], properties["feedback_type"], properties["workflow"],
            properties["step"]) == (str(message_id), "abuse", "welcome", "welcome-1")
    implied = from_event("email_complained", event["email"], properties)
    assert implied is not None and implied.reason == COMPLAINT


async def test_complaint_without_a_signed_return_path_changes_nothing(
        database: Database, database_url: str) -> None:
    await queued(database)
    forged = bounce_address(b"someone else's secret", uuid.uuid4(), "bounces.herald.test")
    async with inbound_service(database) as service:
        port = port_of(service)
        await send(port, FEEDBACK, arf(forged, "ann@example.org"))
        await send(port, FEEDBACK, arf("news@shop.test", "ann@example.org"))
        await wait_all_processed(database_url, 2)
    rows = await inbound_rows(database)
    assert [r["result"][0]["outcome"] for r in rows] == ["unmatched", "unmatched"]
    assert rows[0]["result"][0]["original_recipient"] == "ann@example.org"
    assert await suppressions(database) == []
    assert await events(database, "email_complained") == []


async def test_auto_reply_is_logged_and_never_suppresses(
        database: Database, database_url: str) -> None:
    message_id, return_path = await queued(database)
    async with inbound_service(database) as service:
        await send(port_of(service), return_path, auto_reply(return_path, "ann@example.org"))
        await wait_all_processed(database_url, 1)
    (event,) = await events(database, "email_auto_replied")
    assert event["properties"]["message_id"] == str(message_id)
    assert event["properties"]["workflow"] == "welcome"
    assert await suppressions(database) == []
    assert await events(database, "email_bounced") == []


async def test_mailto_unsubscribe_suppresses_the_message_category(
        database: Database, database_url: str) -> None:
    message_id, _ = await queued(database, metadata={**METADATA, "category": "news"})
    address = (f"{MAILTO_PREFIX}{unsubscribe_token(TEST_LINK_KEYS, message_id)}"
               "@bounces.herald.test")
    async with inbound_service(database) as service:
        await send(port_of(service), address,
                   b"Subject: unsubscribe\r\nFrom: ann@example.org\r\n\r\nunsubscribe\r\n")
        await wait_all_processed(database_url, 1)
    (row,) = await inbound_rows(database)
    assert row["kind"] == "unsubscribe" and row["result"][0]["outcome"] == "unsubscribed"
    assert await suppressions(database) == [("ann@example.org", "unsubscribe", "news",
                                              "mailto")]
    (event,) = await events(database, "email_unsubscribed")
    assert event["properties"]["source"] == "mailto"
    assert event["properties"]["unsubscribe_category"] == "news"
    assert event["properties"]["workflow"] == "welcome"


async def test_truncated_and_malformed_reports_are_kept_and_suppress_nothing(
        database: Database, database_url: str) -> None:
    _, return_path = await queued(database)
    report = dsn(return_path, "ann@example.org", "5.1.1", "550 5.1.1 user unknown")
    complaint = arf(return_path, "ann@example.org")
    unknown = [  # (recipient, body): nothing in them can be read as a report
        (return_path, report[:report.index(b"Your message")]),
        (FEEDBACK, complaint[:complaint.index(b"--F\r\nContent-Type: message/feedback")]),
        (return_path, b"Subject: \xff\xfe\r\nContent-Type: multipart/report; boundary=\r\n"
                      b"\r\n--\r\n"),
        (return_path, b"\r\n" * 3)]
    partial = [  # cut inside the report: no status, no original message
        (return_path, report[:report.index(b"Status: 5.1.1")]),
        (FEEDBACK, complaint[:complaint.index(b"User-Agent")])]
    async with inbound_service(database) as service:
        for recipient, body in unknown + partial:
            await send(port_of(service), recipient, body)
        await wait_all_processed(database_url, len(unknown) + len(partial))
    rows = await inbound_rows(database)
    assert [r["state"] for r in rows] == ["processed"] * len(rows)
    assert [r["kind"] for r in rows[:len(unknown)]] == ["unknown"] * len(unknown)
    assert [r["result"][0]["outcome"] for r in rows[len(unknown):]] == [
        "soft_bounce", "unmatched"]  # a bounce without a status is not a hard one
    assert await suppressions(database) == []
    assert await events(database, "email_complained") == []


async def test_failed_processing_is_retried_then_succeeds(
        database: Database, database_url: str) -> None:
    _, return_path = await queued(database)
    async with database.connection() as connection:
        await connection.execute("""
            CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS
            $$ BEGIN RAISE EXCEPTION 'suppression list unavailable (test)'; END $$;
            CREATE TRIGGER refuse BEFORE INSERT ON suppressions
            FOR EACH ROW EXECUTE FUNCTION refuse();""")
    async with inbound_service(database) as service:
        await send(port_of(service), return_path,
                   dsn(return_path, "ann@example.org", "5.1.1", "550 5.1.1 user unknown"))

        async def failed_once(connection: Any) -> bool:
            return bool(await connection.fetchval(
                "SELECT attempts >= 1 FROM inbound_messages"))

        await wait_inbound(database_url, failed_once)
        (row,) = await inbound_rows(database)
        assert row["state"] == "pending" and "suppression list unavailable" in row["last_error"]
        assert await events(database, "email_bounced") == []  # rolled back with the rest
        async with database.connection() as connection:
            await connection.execute("DROP TRIGGER refuse ON suppressions")
        await wait_all_processed(database_url, 1)
    (row,) = await inbound_rows(database)
    assert row["state"] == "processed" and row["attempts"] >= 2 and row["last_error"] is None
    assert await suppressions(database) == [("ann@example.org", HARD_BOUNCE, "", "dsn")]
    assert len(await events(database, "email_bounced")) == 1


async def test_gives_up_after_max_attempts_with_the_error_visible(
        database: Database, database_url: str) -> None:
    _, return_path = await queued(database)
    async with database.connection() as connection:
        await connection.execute("ALTER TABLE events RENAME TO events_away")
    try:
        async with inbound_service(database, max_attempts=2) as service:
            await send(port_of(service), return_path,
                       dsn(return_path, "ann@example.org", "5.1.1", "550 user unknown"))
            await wait_all_processed(database_url, 1)
    finally:
        async with database.connection() as connection:
            await connection.execute("ALTER TABLE events_away RENAME TO events")
    (row,) = await inbound_rows(database)
    assert (row["state"], row["attempts"]) == ("failed", 2)
    assert "events" in row["last_error"]


async def test_processing_again_changes_nothing_more(
        database: Database, database_url: str) -> None:
    _, return_path = await queued(database)
    async with inbound_service(database) as service:
        await send(port_of(service), return_path,
                   dsn(return_path, "ann@example.org", "5.2.2", "552 5.2.2 Mailbox full"))
        await send(port_of(service), FEEDBACK, arf(return_path, "ann@example.org"))
        await wait_all_processed(database_url, 2)
        before = await fetch(database, "SELECT type, count(*) AS n FROM events GROUP BY type "
                                       "ORDER BY type")
        async with database.connection() as connection:
            await connection.execute("UPDATE inbound_messages SET state = 'pending', "
                                     "next_attempt_at = now()")
        assert service.processor is not None
        service.processor.wake()

        async def again(connection: Any) -> bool:
            return bool(await connection.fetchval(
                "SELECT bool_and(state = 'processed' AND attempts = 2) FROM inbound_messages"))

        await wait_inbound(database_url, again)
    after = await fetch(database, "SELECT type, count(*) AS n FROM events GROUP BY type "
                                  "ORDER BY type")
    assert [tuple(r) for r in after] == [tuple(r) for r in before]


async def test_a_message_for_a_forgotten_outbound_message_is_unmatched(
        database: Database, database_url: str) -> None:
    identity: QueueIdentity = await identity_for(database, mta_settings())
    gone = bounce_address(identity.bounce_secret, uuid.uuid4(), identity.bounce_domain)
    async with inbound_service(database) as service:
        await send(port_of(service), gone,
                   dsn(gone, "ann@example.org", "5.1.1", "550 5.1.1 user unknown"))
        await wait_all_processed(database_url, 1)
    (row,) = await inbound_rows(database)
    assert row["result"][0]["outcome"] == "unmatched"
    assert await suppressions(database) == []
