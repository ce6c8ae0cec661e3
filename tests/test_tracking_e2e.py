"""Open and click tracking end to end on loopback: the shipped welcome workflow sends through
the MTA to an aiosmtpd sink, a real HTTP client follows a link of the delivered message, and
the run takes the ``clicked`` branch; a contact whose only click is a link scanner's takes the
other. Bad input: forged and tampered tokens, open-redirect attempts, scanner bursts, HEAD
requests and proxy user agents (recorded, flagged machine)."""

from __future__ import annotations

import email
import email.policy
import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx

from engine.addresses import parse_address
from engine.database import Database
from engine.link_keys import LinkKeys
from mta.compose import compose
from mta.queue.enqueue import OutboundMessage, enqueue
from mta.sink import CaptureSink
from mta.tracking.rewrite import track_html
from mta.tracking.routes import HITS
from mta.tracking.settings import TrackingSettings
from mta.tracking.tokens import tracking_token
from tests.support.app import RunningApp, running_app
from tests.support.automation import TEST_LINK_KEYS, automation_service, post_event, wait_for
from tests.support.mta import delivery_service, fetch, identity_for, mta_settings, wait_for_states

LINK_KEY = "t1:" + "k" * 32  # TEST_LINK_KEYS, as [http] link_keys spells it
BROWSER = ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 "
           "(KHTML, like Gecko) Version/17.0 Safari/605.1.15")
SCANNER = "Mozilla/5.0 (compatible; BingPreview/1.0b)"
CLICK = re.compile(r'href="(http://127\.0\.0\.1:\d+/t/c/[a-z0-9.]+)"')
OPEN = re.compile(r'src="(http://127\.0\.0\.1:\d+/t/o/[a-z0-9.]+)"')


def html_and_text(raw: bytes) -> tuple[str, str]:
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    html_part = parsed.get_body(("html",))  # type: ignore[attr-defined]
    text_part = parsed.get_body(("plain",))  # type: ignore[attr-defined]
    return html_part.get_content(), text_part.get_content()


async def events(database: Database, kind: str) -> list[Any]:
    return await fetch(database, "SELECT * FROM events WHERE type = $1 ORDER BY position", kind)


async def test_welcome_click_takes_the_clicked_branch_and_a_scanner_click_does_not(
        database: Database, database_url: str) -> None:
    async with CaptureSink(keep=20) as sink, \
            running_app(database_url, link_keys=(LINK_KEY,)) as app:
        settings = mta_settings(routes={"example.org": f"127.0.0.1:{sink.port}"})
        async with delivery_service(database, settings), \
                automation_service(database, public_url=app.base_url):
            await post_event(database, "ann", "signed_up", email="ann@example.org")
            await post_event(database, "bob", "signed_up", email="bob@example.org")

            async def queued(connection: Any) -> bool:
                return await connection.fetchval(
                    "SELECT count(*) FROM outbound_messages") == 2

            await wait_for(database_url, queued)
            ids = [row["id"] for row in await fetch(database, "SELECT id FROM outbound_messages")]
            assert set((await wait_for_states(database_url, ids)).values()) == {"delivered"}
            delivered = {message.rcpt_tos[0]: message.data for message in sink.messages}
            html, text = html_and_text(delivered["ann@example.org"])
            assert "/t/" not in text and "https://shop.example.com" in text  # text untouched
            links = CLICK.findall(html)
            assert len(links) >= 2 and OPEN.search(html)
            assert "/v1/unsubscribe/" in html  # the unsubscribe link is not tracked
            # The person reads the message an hour after delivery (a scanner would not wait).
            async with database.connection() as connection:
                await connection.execute(
                    "UPDATE outbound_messages SET finished_at = finished_at - interval '1 hour'")
            async with httpx.AsyncClient(headers={"User-Agent": BROWSER}) as client:
                opened = await client.get(OPEN.findall(html)[0])
                clicked = await client.get(links[1])
            assert opened.status_code == 200 and opened.headers["content-type"] == "image/gif"
            assert "no-store" in opened.headers["cache-control"]
            assert clicked.status_code == 302
            assert clicked.headers["location"] == "https://shop.example.com"
            bob_links = CLICK.findall(html_and_text(delivered["bob@example.org"])[0])
            async with httpx.AsyncClient(headers={"User-Agent": SCANNER}) as scanner:
                assert (await scanner.get(bob_links[0])).status_code == 302

        [ann_click, bob_click] = await events(database, "email_clicked")
        runs = {row["contact_id"]: row for row in await fetch(
            database, "SELECT id, contact_id FROM workflow_runs")}
        ann_message = (await fetch(database, "SELECT id FROM outbound_messages WHERE "
                                             "contact_id = 'ann'"))[0]["id"]
        assert ann_click["contact_id"] == "ann" and ann_click["source"] == "tracking"
        assert ann_click["properties"] == {
            "message_id": str(ann_message), "workflow": "welcome", "step": "welcome-1",
            "run_id": runs["ann"]["id"], "machine": False, "url": "https://shop.example.com",
            "link": 1}
        assert bob_click["contact_id"] == "bob" and bob_click["properties"]["machine"] is True
        assert bob_click["properties"]["machine_reason"] == "scanner:bing_preview"
        [ann_open] = await events(database, "email_opened")
        assert ann_open["contact_id"] == "ann" and ann_open["properties"]["machine"] is False
        assert "url" not in ann_open["properties"] and "link" not in ann_open["properties"]

        # Four days pass while the engine is down; on restart both runs reach the branch.
        async with database.connection() as connection:
            await connection.execute(
                "UPDATE workflow_runs SET entered_at = entered_at - interval '4 days 1 minute', "
                "wake_at = wake_at - interval '4 days 1 minute'")
        async with delivery_service(database, settings), \
                automation_service(database, public_url=app.base_url):
            async def finished(connection: Any) -> bool:
                return await connection.fetchval(
                    "SELECT count(*) FROM workflow_runs WHERE state = 'completed'") == 2

            await wait_for(database_url, finished)
    steps = {row["contact_id"]: {r["step"] for r in await fetch(
        database, "SELECT step FROM workflow_log WHERE run_id = $1", row["id"])}
        for row in runs.values()}
    assert "tag-engaged" in steps["ann"] and "welcome-offer" not in steps["ann"]
    assert "welcome-offer" in steps["bob"] and "tag-engaged" not in steps["bob"]
    tags = {row["contact_id"]: row["attributes"].get("tags") for row in await fetch(
        database, "SELECT contact_id, attributes FROM contacts")}
    assert tags["ann"] == ["engaged"] and tags["bob"] is None
    offers = await fetch(database, "SELECT contact_id FROM outbound_messages "
                                   "WHERE metadata->>'step' = 'welcome-offer'")
    assert [row["contact_id"] for row in offers] == ["bob"]


# --- bad input and machine hits on one tracked message ----------------------------------------

@asynccontextmanager
async def tracked_message(database_url: str, database: Database, delivered_ago: str = "1 hour",
                          tracking: TrackingSettings | None = None
                          ) -> AsyncIterator[tuple[RunningApp, uuid.UUID, list[str], str]]:
    """A delivered message with three tracked links; yields (app, id, click URLs, open URL)."""
    async with running_app(database_url, link_keys=(LINK_KEY,), tracking=tracking) as app:
        message_id = uuid.uuid4()
        tracked = track_html(
            '<p><a href="https://shop.test/one">1</a> <a href="https://shop.test/two">2</a> '
            '<a href="https://shop.test/three?a=1&amp;b=2">3</a></p>', app.base_url,
            TEST_LINK_KEYS, message_id)
        composed = compose({"from": "Shop <news@shop.test>", "to": "cy@example.org",
                            "subject": "Hi", "html": tracked.html})
        identity = await identity_for(database, mta_settings())
        async with database.transaction() as connection:
            await enqueue(connection, identity, OutboundMessage(
                composed.header_from, parse_address("cy@example.org"), composed.body, "cy",
                metadata={"workflow": "promo", "step": "s1", "run_id": 7},
                id=message_id, tracked_links=tracked.links))
            await connection.execute(
                "UPDATE outbound_messages SET state = 'delivered', "
                f"finished_at = now() - interval '{delivered_ago}' WHERE id = $1", message_id)
        clicks = CLICK.findall(tracked.html)
        [pixel] = OPEN.findall(tracked.html)
        yield app, message_id, clicks, pixel


async def test_forged_tampered_and_redirect_attempts_get_4xx_and_record_nothing(
        database: Database, database_url: str) -> None:
    async with tracked_message(database_url, database) as (app, message_id, clicks, pixel):
        base = f"{app.base_url}/t/c/"
        token = clicks[0].rsplit("/", 1)[1]
        tampered = token[:-2] + ("a" if token[-2] != "a" else "b") + token[-1]
        forged = tracking_token(LinkKeys("t1", {"t1": b"x" * 32}), "click", message_id, 0)
        other_key = tracking_token(LinkKeys("zz", {"zz": b"k" * 32}), "click", message_id, 0)
        open_token = pixel.rsplit("/", 1)[1]
        attempts = {
            f"{base}{tampered}": 422,
            f"{base}{forged}": 422,
            f"{base}{other_key}": 422,
            f"{base}{open_token}": 422,  # an open token is no click token
            f"{base}not-a-token": 422,
            f"{base}{token}?url=https://evil.test": 422,
            f"{base}{token}?u=1": 422,
            f"{base}{token}/https://evil.test": 404,
            f"{base}{token}%2Fhttps:%2F%2Fevil.test": 422,
            f"{base}https:%2F%2Fevil.test": 422,
            f"{app.base_url}/t/c//evil.test": 404,
            f"{app.base_url}/t/c/": 404,
            # Well signed, but no such link / no such message: still never a redirect.
            f"{base}{tracking_token(TEST_LINK_KEYS, 'click', message_id, 3)}": 404,
            f"{base}{tracking_token(TEST_LINK_KEYS, 'click', uuid.uuid4(), 0)}": 404,
            f"{app.base_url}/t/o/{token}": 422,  # a click token is no open token
            f"{app.base_url}/t/o/{open_token}?x=1": 422,
        }
        async with httpx.AsyncClient(headers={"User-Agent": BROWSER}) as client:
            for url, status in attempts.items():
                response = await client.get(url)
                assert response.status_code == status, url
                assert "location" not in response.headers, url
                assert response.headers["content-type"] == "application/json", url
                assert response.json()["error"], url
            good = await client.get(clicks[2])
        assert good.status_code == 302
        assert good.headers["location"] == "https://shop.test/three?a=1&b=2"
        assert good.headers["cache-control"].startswith("no-store")
    [click] = await events(database, "email_clicked")  # only the good one
    assert click["properties"]["link"] == 2 and click["properties"]["machine"] is False
    assert await events(database, "email_opened") == []


async def test_scanner_bursts_head_requests_and_proxy_opens_are_flagged_machine(
        database: Database, database_url: str) -> None:
    async with tracked_message(database_url, database) as (_app, _message_id, clicks, pixel):
        async with httpx.AsyncClient(headers={"User-Agent": BROWSER}) as client:
            for url in clicks:  # every link within a second, long after delivery
                assert (await client.get(url)).status_code == 302
            assert (await client.head(clicks[0])).status_code == 302
            for agent in ("Mozilla/5.0", "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko "
                          "Firefox/11.0 (via ggpht.com GoogleImageProxy)", BROWSER):
                assert (await client.get(pixel, headers={"User-Agent": agent})).content[:4] \
                    == b"GIF8"
    reasons = [(e["properties"]["link"], e["properties"].get("machine_reason"))
               for e in await events(database, "email_clicked")]
    # The first click of the burst cannot know that more follow; every later one is flagged.
    assert reasons == [(0, None), (1, "link_burst"), (2, "link_burst"), (0, "head_request")]
    opens = [(e["properties"]["machine"], e["properties"].get("machine_reason"))
             for e in await events(database, "email_opened")]
    assert opens == [(True, "proxy:apple_privacy_proxy"), (True, "proxy:google_image_proxy"),
                     (False, None)]


async def test_clicks_right_after_delivery_are_all_flagged(
        database: Database, database_url: str) -> None:
    async with tracked_message(database_url, database, delivered_ago="1 second") as (
            _app, _message_id, clicks, _pixel):
        async with httpx.AsyncClient(headers={"User-Agent": BROWSER}) as client:
            for url in clicks:
                assert (await client.get(url)).status_code == 302
    flagged = [(e["properties"]["machine"], e["properties"]["machine_reason"])
               for e in await events(database, "email_clicked")]
    assert flagged == [(True, "soon_after_delivery")] * 3


async def test_past_the_client_rate_links_still_work_and_nothing_is_recorded(
        database: Database, database_url: str) -> None:
    limited = TrackingSettings(client_rate_per_second=0.001, client_rate_burst=2)
    before = HITS.labels("click", "rate_limited")._value.get()
    async with tracked_message(database_url, database, tracking=limited) as (
            _app, _message_id, clicks, _pixel):
        async with httpx.AsyncClient(headers={"User-Agent": BROWSER}) as client:
            answers = [await client.get(url) for url in clicks]
    assert [a.status_code for a in answers] == [302, 302, 302]
    assert [a.headers["location"] for a in answers][2] == "https://shop.test/three?a=1&b=2"
    assert len(await events(database, "email_clicked")) == 2
    assert HITS.labels("click", "rate_limited")._value.get() == before + 1


async def test_tracking_can_be_turned_off(database: Database, database_url: str) -> None:
    async with automation_service(database, track=False):
        await post_event(database, "ann", "signed_up", email="ann@example.org")

        async def queued(connection: Any) -> bool:
            return bool(await connection.fetchval("SELECT count(*) FROM outbound_messages"))

        await wait_for(database_url, queued)
    [row] = await fetch(database, "SELECT body FROM outbound_messages")
    html, _ = html_and_text(bytes(row["body"]))
    assert "/t/c/" not in html and "/t/o/" not in html and "https://shop.example.com" in html
    assert [r["tracked_links"] for r in await fetch(
        database, "SELECT tracked_links FROM outbound_messages")] == [None]


async def test_api_messages_with_track_true_are_tracked(database: Database,
                                                        database_url: str) -> None:
    public = "https://mail.shop.test"
    body = {"from": "Shop <news@shop.test>", "to": "dee@example.org", "subject": "Hi",
            "text": "See https://shop.test/sale", "track": True,
            "html": '<p><a href="https://shop.test/sale">Sale</a> '
                    '<a href="mailto:help@shop.test">help</a></p>'}
    async with running_app(database_url, link_keys=(LINK_KEY,), public_url=public) as app:
        async with app.client() as client:
            answer = await client.post("/v1/messages", json=body)
            assert answer.status_code == 202, answer.text
            untracked = await client.post("/v1/messages", json={**body, "track": False})
            refused = [await client.post("/v1/messages", json=bad) for bad in (
                {**body, "track": "yes"},
                {"to": "dee@example.org", "raw": "From: news@shop.test\r\nTo: dee@example.org"
                 "\r\nSubject: x\r\n\r\nHi\r\n", "track": True})]
        message_id = uuid.UUID(answer.json()["id"])
        [row] = await fetch(database, "SELECT body FROM outbound_messages WHERE id = $1",
                            message_id)
        html, text = html_and_text(bytes(row["body"]))
        assert text.strip() == "See https://shop.test/sale"
        [link] = re.findall(r'href="(https://mail\.shop\.test/t/c/[a-z0-9.]+)"', html)
        assert 'href="mailto:help@shop.test"' in html and f'src="{public}/t/o/' in html
        [stored] = await fetch(database, "SELECT tracked_links AS links FROM outbound_messages "
                                         "WHERE tracked_links IS NOT NULL")
        assert stored["links"] == ["https://shop.test/sale"]
        [plain] = await fetch(database, "SELECT body FROM outbound_messages WHERE id = $1",
                              uuid.UUID(untracked.json()["id"]))
        assert "/t/c/" not in html_and_text(bytes(plain["body"]))[0]
        assert [r.status_code for r in refused] == [422, 422]
        assert all("track" in r.json()["message"] for r in refused)
        async with database.connection() as connection:
            await connection.execute(
                "UPDATE outbound_messages SET state = 'delivered', "
                "finished_at = now() - interval '1 hour'")
        async with httpx.AsyncClient(headers={"User-Agent": BROWSER}) as client:
            followed = await client.get(link.replace(public, app.base_url))
        assert followed.status_code == 302
        assert followed.headers["location"] == "https://shop.test/sale"
    [click] = await events(database, "email_clicked")
    assert click["contact_id"] == "dee@example.org"
    assert click["properties"] == {"message_id": str(message_id), "machine": False,
                                   "url": "https://shop.test/sale", "link": 0}


async def test_track_true_without_public_url_is_refused_with_the_reason(
        database_url: str) -> None:
    async with running_app(database_url) as app, app.client() as client:
        answer = await client.post("/v1/messages", json={
            "from": "news@shop.test", "to": "dee@example.org", "subject": "Hi",
            "html": "<p>hi</p>", "track": True})
    assert answer.status_code == 422
    assert "[http] public_url" in answer.json()["message"]
