"""RFC 8058 one-click unsubscribe against the real HTTP app and Postgres, and what it does to
messages queued before and after it."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import httpx
import pytest

from engine.addresses import parse_address
from engine.link_keys import LinkKeys
from mta.compose import compose
from mta.queue import store as queue_store
from mta.queue.enqueue import OutboundMessage, enqueue
from mta.suppression.tokens import unsubscribe_token
from tests.support.app import RunningApp, running_app
from tests.support.mta import fetch, identity_for, mta_settings

KEY_TEXT = "u1:unsubscribe-test-secret-123456"
KEYS = LinkKeys.parse([KEY_TEXT])
ONE_CLICK = {"List-Unsubscribe": "One-Click"}


@pytest.fixture
async def app(database_url: str) -> AsyncIterator[RunningApp]:
    async with running_app(database_url, mta_settings(), link_keys=(KEY_TEXT,),
                           public_url="https://mail.shop.test") as running:
        yield running


async def queue(app: RunningApp, to: str, **metadata: object) -> tuple[uuid.UUID, str | None]:
    identity = await identity_for(app.database, mta_settings())
    composed = compose({"from": "Shop <news@shop.test>", "to": to, "subject": "Hi",
                        "text": "Hi.\n"})
    message = OutboundMessage(composed.header_from, parse_address(to), composed.body,
                              metadata=dict(metadata))
    async with app.database.transaction() as connection:
        queued = await enqueue(connection, identity, message)
    return queued.id, queued.suppressed


def anonymous(app: RunningApp) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=app.base_url, timeout=10.0, follow_redirects=False)


async def suppressions(app: RunningApp) -> list[tuple[str, str, str]]:
    rows = await fetch(app.database, "SELECT email, reason, category FROM suppressions")
    return sorted((r["email"], r["reason"], r["category"]) for r in rows)


async def test_one_click_post_suppresses_at_once_with_200_and_no_redirect(
        app: RunningApp) -> None:
    message_id, _ = await queue(app, "Ann@Example.com", workflow="welcome", step="w1")
    async with anonymous(app) as client:
        response = await client.post(f"/v1/unsubscribe/{unsubscribe_token(KEYS, message_id)}",
                                     data=ONE_CLICK)
    assert response.status_code == 200
    assert "location" not in response.headers and "set-cookie" not in response.headers
    assert "unsubscribed" in response.text
    assert await suppressions(app) == [("ann@example.com", "unsubscribe", "")]
    events = await fetch(app.database, "SELECT type, contact_id, properties FROM events "
                                       "WHERE type = 'email_unsubscribed'")
    assert len(events) == 1
    properties = events[0]["properties"]
    assert properties["message_id"] == str(message_id)
    assert (properties["workflow"], properties["step"], properties["source"]) == (
        "welcome", "w1", "one_click")
    added = await fetch(app.database, "SELECT 1 FROM events WHERE type = 'suppression_added'")
    assert len(added) == 1


async def test_multipart_one_click_as_rfc_8058_allows(app: RunningApp) -> None:
    message_id, _ = await queue(app, "bo@example.com")
    async with anonymous(app) as client:
        response = await client.post(f"/v1/unsubscribe/{unsubscribe_token(KEYS, message_id)}",
                                     files={"List-Unsubscribe": (None, "One-Click")})
    assert response.status_code == 200
    assert await suppressions(app) == [("bo@example.com", "unsubscribe", "")]


async def test_get_shows_a_page_and_changes_nothing(app: RunningApp) -> None:
    message_id, _ = await queue(app, "cy@example.com", category="news")
    async with anonymous(app) as client:
        response = await client.get(f"/v1/unsubscribe/{unsubscribe_token(KEYS, message_id)}")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    page = response.text
    assert 'method="post"' in page and "cy@example.com" in page and "news" in page
    assert 'value="all"' in page
    assert await suppressions(app) == []


async def test_the_category_is_suppressed_unless_all_is_chosen(app: RunningApp) -> None:
    first, _ = await queue(app, "di@example.com", category="news")
    second, _ = await queue(app, "ed@example.com", category="news")
    async with anonymous(app) as client:
        for message_id, form in ((first, ONE_CLICK), (second, {**ONE_CLICK, "scope": "all"})):
            url = f"/v1/unsubscribe/{unsubscribe_token(KEYS, message_id)}"
            assert (await client.post(url, data=form)).status_code == 200
    assert await suppressions(app) == [("di@example.com", "unsubscribe", "news"),
                                       ("ed@example.com", "unsubscribe", "")]
    # di still gets other marketing and transactional mail; news mail is suppressed
    assert (await queue(app, "di@example.com", category="offers"))[1] is None
    assert (await queue(app, "di@example.com", category="news"))[1] == "unsubscribe (news)"
    assert (await queue(app, "ed@example.com", transactional=True))[1] is None
    assert (await queue(app, "ed@example.com"))[1] == "unsubscribe"


async def test_repeating_the_post_changes_nothing_more(app: RunningApp) -> None:
    message_id, _ = await queue(app, "fe@example.com")
    url = f"/v1/unsubscribe/{unsubscribe_token(KEYS, message_id)}"
    async with anonymous(app) as client:
        for _ in range(3):
            assert (await client.post(url, data=ONE_CLICK)).status_code == 200
    assert len(await fetch(app.database, "SELECT 1 FROM events "
                                         "WHERE type = 'email_unsubscribed'")) == 1
    assert len(await suppressions(app)) == 1


@pytest.mark.parametrize("mangle", [
    lambda t: t[:-2] + ("aa" if not t.endswith("aa") else "bb"),  # tampered signature
    lambda t: "zz" + t[2:],                                     # unknown key id
    lambda t: "u1.not-base32!",                                 # malformed
    lambda t: "u1." + "a" * 60,                                 # wrong length
    lambda t: t + "a" * 100,                                    # too long
])
async def test_bad_tokens_get_4xx_and_change_nothing(app: RunningApp, mangle: object) -> None:
    message_id, _ = await queue(app, "gu@example.com")
    token = mangle(unsubscribe_token(KEYS, message_id))  # type: ignore[operator]
    async with anonymous(app) as client:
        post = await client.post(f"/v1/unsubscribe/{token}", data=ONE_CLICK)
        get = await client.get(f"/v1/unsubscribe/{token}")
    assert 400 <= post.status_code < 500 and 400 <= get.status_code < 500
    assert await suppressions(app) == []


async def test_a_token_signed_by_another_installation_is_refused(app: RunningApp) -> None:
    message_id, _ = await queue(app, "ha@example.com")
    foreign = LinkKeys.parse(["u1:another-installation-secret"])
    async with anonymous(app) as client:
        response = await client.post(
            f"/v1/unsubscribe/{unsubscribe_token(foreign, message_id)}", data=ONE_CLICK)
    assert response.status_code == 400
    assert await suppressions(app) == []


async def test_a_valid_token_for_an_unknown_message_is_404(app: RunningApp) -> None:
    async with anonymous(app) as client:
        response = await client.post(
            f"/v1/unsubscribe/{unsubscribe_token(KEYS, uuid.uuid4())}", data=ONE_CLICK)
    assert response.status_code == 404
    assert await suppressions(app) == []


@pytest.mark.parametrize(("body", "content_type", "status"), [
    ("", "application/x-www-form-urlencoded", 400),
    ("List-Unsubscribe=Yes", "application/x-www-form-urlencoded", 400),
    ("List-Unsubscribe=One-Click&scope=everything", "application/x-www-form-urlencoded", 400),
    ('{"List-Unsubscribe": "One-Click"}', "application/json", 415),
    ("List-Unsubscribe=One-Click&x=" + "a" * 9000, "application/x-www-form-urlencoded", 413),
])
async def test_bad_forms_change_nothing(app: RunningApp, body: str, content_type: str,
                                        status: int) -> None:
    message_id, _ = await queue(app, "io@example.com")
    async with anonymous(app) as client:
        response = await client.post(f"/v1/unsubscribe/{unsubscribe_token(KEYS, message_id)}",
                                     content=body, headers={"Content-Type": content_type})
    assert response.status_code == status
    assert await suppressions(app) == []


async def test_a_message_queued_before_the_unsubscribe_is_suppressed_at_claim(
        app: RunningApp) -> None:
    before, suppressed = await queue(app, "jo@example.com")
    transactional, _ = await queue(app, "jo@example.com", transactional=True)
    assert suppressed is None
    async with anonymous(app) as client:
        url = f"/v1/unsubscribe/{unsubscribe_token(KEYS, before)}"
        assert (await client.post(url, data=ONE_CLICK)).status_code == 200
    async with app.database.connection() as connection:
        claimed, blocked = await queue_claim(connection)
    assert {m.id for m in claimed} == {before, transactional}
    assert blocked == {before: "unsubscribe"}


async def queue_claim(connection: object) -> tuple[list[queue_store.ClaimedMessage],
                                                   dict[uuid.UUID, str]]:
    return await queue_store.claim(connection, 100, 60, "test-owner")  # type: ignore[arg-type]


async def test_enqueue_records_a_suppressed_message_and_its_event(app: RunningApp) -> None:
    async with app.client() as client:
        response = await client.post("/v1/suppressions", json={
            "email": "KA@example.com", "reason": "hard_bounce"})
        assert response.status_code == 200
        queued = await client.post("/v1/messages", json={
            "from": "news@shop.test", "to": "ka@EXAMPLE.com", "subject": "x", "text": "x"})
        assert queued.status_code == 202
        state = (await client.get(f"/v1/messages/{queued.json()['id']}")).json()
    assert state["state"] == "suppressed"
    assert "hard_bounce" in state["last_reply"]
    events = await fetch(app.database, "SELECT properties FROM events "
                                       "WHERE type = 'email_suppressed'")
    assert [e["properties"]["message_id"] for e in events] == [queued.json()["id"]]
