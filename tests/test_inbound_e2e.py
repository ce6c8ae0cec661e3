"""End to end on loopback: a workflow mails three contacts through the MTA to a capture sink;
the first unsubscribes with the one-click POST, the second's mail comes back as a DSN to its
return path, the third complains through a feedback loop; then every one of them is suppressed,
the events are in the log, the next message to each ends ``suppressed`` and ``herald explain``
says why the workflow skipped them."""

from __future__ import annotations

import email
import email.policy
import re
import uuid
from pathlib import Path
from typing import Any

import aiosmtplib
import httpx

from automation.loading.catalog import Catalog
from automation.tools.explain import explain, render_text
from engine.database import Database
from engine.values import HostPort
from mta.sink import CapturedMessage, CaptureSink
from tests.support.app import running_app
from tests.support.automation import automation_service, post_event, wait_for
from tests.support.inbound import (
    FEEDBACK,
    LINK_KEYS,
    crlf,
    inbound_service,
    port_of,
    wait_all_processed,
)
from tests.support.mta import delivery_service, fetch, mta_settings, wait_for_states

PROMO_WORKFLOW = """
reentry: {policy: always, key: campaign}
trigger: {type: event, event: promo}
steps:
  - id: promo
    send: promo
"""
CONTACTS = {"c1": "ann@example.org", "c2": "bob@example.org", "c3": "cat@example.org"}


def promo_catalog(tmp_path: Path) -> Catalog:
    (tmp_path / "wf").mkdir()
    (tmp_path / "wf" / "promo.yaml").write_text(PROMO_WORKFLOW)
    (tmp_path / "tpl" / "promo").mkdir(parents=True)
    (tmp_path / "tpl" / "promo" / "subject.txt").write_text("This week's offers")
    (tmp_path / "tpl" / "promo" / "body.txt").write_text(
        "Hello! Unsubscribe: {{ unsubscribe_url }}")
    return Catalog.load(tmp_path / "wf", tmp_path / "tpl")


def dsn_for(delivered: CapturedMessage) -> bytes:
    """What the recipient's server sends back: a DSN to the return path, with the headers of
    the message it could not deliver."""
    headers = delivered.data.split(b"\r\n\r\n", 1)[0].decode()
    return crlf(
        "From: MAILER-DAEMON@mx.example.org\n"
        f"To: {delivered.mail_from}\nSubject: Undelivered Mail Returned to Sender\n"
        "MIME-Version: 1.0\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\n\n'
        "--B\nContent-Type: text/plain\n\nThe mailbox does not exist.\n\n"
        "--B\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; mx.example.org\n\n"
        f"Final-Recipient: rfc822; {delivered.rcpt_tos[0]}\nAction: failed\nStatus: 5.1.1\n"
        f"Diagnostic-Code: smtp; 550 5.1.1 <{delivered.rcpt_tos[0]}>: user unknown\n\n"
        f"--B\nContent-Type: text/rfc822-headers\n\n{headers}\n\n--B--\n")


def arf_for(delivered: CapturedMessage) -> bytes:
    """What a mailbox provider's feedback loop sends: an ARF report with the message as its
    user received it (the final server added Return-Path)."""
    original = b"Return-Path: <" + delivered.mail_from.encode() + b">\r\n" + delivered.data
    head = crlf(
        f"From: fbl@isp.example.net\nTo: {FEEDBACK}\nSubject: Abuse report\nMIME-Version: 1.0\n"
        'Content-Type: multipart/report; report-type=feedback-report; boundary="F"\n\n'
        "--F\nContent-Type: text/plain\n\nA user marked this message as spam.\n\n"
        "--F\nContent-Type: message/feedback-report\n\n"
        "Feedback-Type: abuse\nUser-Agent: isp-fbl/2.0\nVersion: 1\n"
        f"Original-Mail-From: <{delivered.mail_from}>\n"
        f"Original-Rcpt-To: <{delivered.rcpt_tos[0]}>\n\n"
        "--F\nContent-Type: message/rfc822\n\n")
    return head + original + b"\r\n--F--\r\n"


def one_click_path(delivered: CapturedMessage) -> str:
    message = email.message_from_bytes(delivered.data, policy=email.policy.compat32)
    header = str(message["List-Unsubscribe"])
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    (url,) = re.findall(r"<(https?://[^>]+)>", header)
    assert "<mailto:unsub-" in header
    return httpx.URL(url).path


async def test_unsubscribe_dsn_and_complaint_end_to_end(
        database: Database, database_url: str, tmp_path: Path) -> None:
    catalog = promo_catalog(tmp_path)
    async with CaptureSink(keep=10) as sink, \
            running_app(database_url, mta_settings(), link_keys=LINK_KEYS) as app, \
            delivery_service(database, mta_settings(route=HostPort("127.0.0.1", sink.port))), \
            inbound_service(database) as inbound, \
            automation_service(database, catalog, public_url=app.base_url):
        for contact, address in CONTACTS.items():
            await post_event(database, contact, "promo", email=address, campaign="week-1")
        await sink.wait_for(3, timeout=30)
        delivered = {m.rcpt_tos[0]: m for m in sink.messages}
        first, second, third = (delivered[a] for a in CONTACTS.values())

        async with httpx.AsyncClient(base_url=app.base_url, timeout=10) as client:
            response = await client.post(one_click_path(first),
                                         data={"List-Unsubscribe": "One-Click"})
        assert response.status_code == 200 and "unsubscribed" in response.text
        async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port_of(inbound)) as smtp:
            await smtp.sendmail("", [second.mail_from], dsn_for(second))
            await smtp.sendmail("", [FEEDBACK], arf_for(third))
        await wait_all_processed(database_url, 2)

        # The next message to each: through the HTTP API, and from the workflow again.
        async with app.client() as client:
            injected = [uuid.UUID((await client.post("/v1/messages", json={
                "from": "Shop <news@shop.test>", "to": address, "subject": "Receipt?",
                "text": "Hello", "contact_id": contact})).json()["id"])
                for contact, address in CONTACTS.items()]
        for contact in CONTACTS:
            await post_event(database, contact, "promo", campaign="week-2")

        async def skipped(connection: Any) -> bool:
            return int(await connection.fetchval(
                "SELECT count(*) FROM workflow_log WHERE detail LIKE 'suppressed:%'")) >= 3

        await wait_for(database_url, skipped)
        states = await wait_for_states(database_url, injected)
        async with database.connection() as connection:
            reports = {c: await explain(connection, catalog, c) for c in CONTACTS}

    assert set(states.values()) == {"suppressed"}
    assert sink.received == 3  # nothing more was sent
    rows = await fetch(database, "SELECT email, reason, category, source, message_id "
                                 "FROM suppressions ORDER BY email")
    sent_ids = {r["recipient"]: r["id"] for r in await fetch(
        database, "SELECT id, recipient FROM outbound_messages WHERE source = 'automation'")}
    assert [(r["email"], r["reason"], r["category"], r["source"]) for r in rows] == [
        ("ann@example.org", "unsubscribe", "", "one_click"),
        ("bob@example.org", "hard_bounce", "", "dsn"),
        ("cat@example.org", "complaint", "", "arf")]
    assert [r["message_id"] for r in rows] == [sent_ids[a] for a in CONTACTS.values()]

    events = {r["type"]: r for r in await fetch(
        database, "SELECT type, contact_id, email, properties FROM events WHERE type IN "
                  "('email_unsubscribed', 'email_bounced', 'email_complained')")}
    for kind, contact in (("email_unsubscribed", "c1"), ("email_bounced", "c2"),
                          ("email_complained", "c3")):
        event = events[kind]
        assert event["contact_id"] == contact
        properties = event["properties"]
        assert properties["message_id"] == str(sent_ids[CONTACTS[contact]])
        assert properties["workflow"] == "promo" and properties["step"] == "promo"
        assert properties["run_id"]
    assert events["email_bounced"]["properties"]["kind"] == "async"
    assert events["email_bounced"]["properties"]["hard"] is True
    assert events["email_complained"]["properties"]["feedback_type"] == "abuse"

    expected = {"c1": "suppressed: unsubscribe", "c2": "suppressed: hard_bounce",
                "c3": "suppressed: complaint"}
    for contact, reason in expected.items():
        text = render_text(reports[contact])
        assert reason in text, text
