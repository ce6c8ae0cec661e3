"""The pixel attack of issue 12, end to end: real HTTP intake, the live automation engine and the
shipped browse-abandonment workflow and templates on Postgres.

The attacker holds the site's public pixel key and replays product views (three, backdated)
naming a victim by email, with a phishing URL as the product link. Nothing reaches the victim; a
contact the site's backend vouched for (here the attacker's own account) gets the workflow's mail,
but with the shop's own link instead of the attacker's, and explain says why."""

from __future__ import annotations

import email
import email.policy
import re
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from automation.tools.explain import explain, render_text
from engine.contact_tokens import mint
from engine.database import Database
from engine.eventlog_reader import LogCursor
from engine.http.events_routes import GIF
from mta.tracking.tokens import read_tracking_token
from tests.support.app import running_app
from tests.support.automation import (
    TEST_LINK_KEYS,
    automation_service,
    example_catalog,
    wait_for,
)

PHISH = {"sku": "Z1", "name": "Your account is locked", "url": "https://phish.invalid/login",
         "image_url": "https://phish.invalid/logo.png"}


def text_of(raw: bytes) -> str:
    message = email.message_from_bytes(raw, policy=email.policy.default)
    return "\n".join(str(part.get_content()) for part in message.walk()  # type: ignore[attr-defined]
                     if part.get_content_maintype() == "text")


async def test_the_public_pixel_key_cannot_mail_anyone_the_attacker_chooses(
        database: Database, database_url: str) -> None:
    async with running_app(database_url) as app, \
            automation_service(database, link_domains=("shop.example.com",)) as service:
        site = await app.new_site_key(("product_viewed",), ("sku", "name", "url", "image_url"))
        assert site.token_secret is not None
        own_account = mint(site.key_id, site.token_secret, "att-1", int(time.time() + 3600))
        async with app.client() as backend:
            for contact_id, address in (("cust-1", "victim@victim.example"),
                                        ("att-1", "attacker@example.com"),
                                        ("sentinel", "sentinel@example.com")):
                created = await backend.post("/v1/contacts", json={
                    "contact_id": contact_id, "email": address})
                assert created.status_code == 201
        async with httpx.AsyncClient(base_url=app.base_url) as browser:  # no API key
            for who in ({"email": "victim@victim.example"}, {"contact_id": "cust-1"},
                        {"anonymous_id": "visitor-1"}, {"contact_token": own_account}):
                for hours in (30, 29.5, 29):
                    backdated = (datetime.now(UTC) - timedelta(hours=hours)).isoformat()
                    response = await browser.get("/v1/pixel.gif", params={
                        "key": site.token, "type": "product_viewed", "timestamp": backdated,
                        **who, **PHISH})
                    assert response.content == GIF
        async with app.client() as backend:  # a marker: once it is processed, so is all before
            await backend.post("/v1/events", json={"type": "signed_up",
                                                   "contact_id": "sentinel"})
        async with database.connection() as connection:
            marker = await connection.fetchrow(
                "SELECT txid::text::bigint AS txid, position FROM events "
                "WHERE type = 'signed_up'")

        async def marker_processed(connection: Any) -> bool:
            return service.cursor >= LogCursor(marker["txid"], marker["position"])

        await wait_for(database_url, marker_processed)
        async with database.connection() as connection:
            messages = await connection.fetch(
                "SELECT recipient, metadata->>'workflow' AS workflow, body, "
                "tracked_links AS links FROM outbound_messages ORDER BY created_at")
            report = await explain(connection, example_catalog(), "att-1")
            victim = await explain(connection, example_catalog(), "cust-1")
            stored = await connection.fetch(
                "SELECT contact_id, source FROM events WHERE type = 'product_viewed'")
    assert sorted((m["recipient"], m["workflow"]) for m in messages) == [
        ("attacker@example.com", "browse-abandonment"), ("sentinel@example.com", "welcome")]
    bodies = {m["recipient"]: text_of(bytes(m["body"])) for m in messages}
    assert not any("phish.invalid" in body for body in bodies.values())
    # Links are tracked: the URLs behind them are stored with the message, never the phish.
    links = {m["recipient"]: m["links"] or [] for m in messages}
    assert not any("phish.invalid" in link for stored in links.values() for link in stored)
    button = re.search(r'<a href="[^"]+/t/c/([a-z0-9.]+)" style="display:inline-block',
                       bodies["attacker@example.com"])
    assert button is not None
    position = read_tracking_token(TEST_LINK_KEYS, "click", button.group(1)).position
    assert links["attacker@example.com"][position] == "https://shop.example.com"  # the fallback
    assert sorted((r["contact_id"], r["source"]) for r in stored) == [
        *[("anon:visitor-1", "pixel_anonymous")] * 3, *[("att-1", "pixel")] * 3]
    text = render_text(report)
    assert "link_dropped: event.url ('https://phish.invalid/login'): host 'phish.invalid' " \
           "is not in [automation] link_domains" in text
    browse = next(w for w in victim["workflows"] if w["workflow"] == "browse-abandonment")
    assert browse["runs"] == [] and browse["decisions"] == []
    assert browse["summary"] == ("never triggered for this contact (count trigger on "
                                 "product_viewed; accepts browser events)")
