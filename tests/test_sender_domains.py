"""Issue 12 item 10: keys send only from their domains; raw MIME cannot hide recipients, name
someone else in To, or carry a receiver's verdicts."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from mta.settings import DkimKeySettings, MtaSettings
from tests.support.app import RunningApp, running_app


@pytest.fixture
async def app(database_url: str) -> AsyncIterator[RunningApp]:
    async with running_app(database_url) as running:
        yield running


def message(sender: str = "news@shop.test", **extra: Any) -> dict[str, Any]:
    return {"from": sender, "to": "ann@example.org", "subject": "s", "text": "t", **extra}


def raw(head: str, to: str = "ann@example.org") -> dict[str, Any]:
    return {"raw": head + "\n\nbody\n", "to": to}


async def stored_bodies(app: RunningApp) -> list[bytes]:
    async with app.database.connection() as connection:
        return [bytes(r["body"]) for r in await connection.fetch(
            "SELECT body FROM outbound_messages ORDER BY created_at")]


async def test_a_key_sends_only_from_its_domains(app: RunningApp) -> None:
    shop = await app.new_key("messages:write", from_domains=("shop.test",))
    bare = await app.new_key("messages:write")
    async with app.client(shop) as client:
        own = await client.post("/v1/messages", json=message())
        paypal = await client.post("/v1/messages", json=message("service@paypal.com"))
        raw_paypal = await client.post("/v1/messages", json=raw(
            "From: service@paypal.com\nTo: ann@example.org"))
        sender = await client.post("/v1/messages", json=raw(
            "From: news@shop.test\nSender: service@paypal.com\nTo: ann@example.org"))
    async with app.client(bare) as client:
        nothing = await client.post("/v1/messages", json=message())
    assert own.status_code == 202, own.text
    assert paypal.status_code == 403
    assert paypal.json() == {"error": "sender_not_allowed", "message":
                             "from: this key may not send from paypal.com (it may send from "
                             "shop.test)"}
    assert raw_paypal.status_code == 403 and raw_paypal.json()["message"].startswith("from:")
    assert sender.status_code == 403 and sender.json()["message"].startswith("raw.Sender:")
    assert nothing.status_code == 403
    assert "herald keys create --from-domain shop.test" in nothing.json()["message"]
    assert len(await stored_bodies(app)) == 1


async def test_a_key_without_domains_sends_from_the_dkim_domains(database_url: str) -> None:
    dkim = DkimKeySettings(domain="Shop.Test", selector="s1", key_file=Path("unused.pem"))
    async with running_app(database_url, MtaSettings(dkim=(dkim,))) as app:
        bare = await app.new_key("messages:write")
        async with app.client(bare) as client:
            own = await client.post("/v1/messages", json=message())
            other = await client.post("/v1/messages", json=message("a@other.test"))
    assert own.status_code == 202, own.text
    assert other.status_code == 403


async def test_raw_bcc_is_removed_and_to_must_name_the_recipient(app: RunningApp) -> None:
    async with app.client() as client:
        hidden = await client.post("/v1/messages", json=raw(
            "From: news@shop.test\nTo: Ann <ANN@example.org>\nBcc: boss@example.org,\n"
            " other@example.org\nSubject: hi\nbcc: third@example.org"))
        no_to = await client.post("/v1/messages", json=raw("From: news@shop.test\nSubject: x"))
        elsewhere = await client.post("/v1/messages", json=raw(
            "From: news@shop.test\nTo: ceo@victim.example"))
    assert hidden.status_code == 202, hidden.text
    assert no_to.status_code == 202, no_to.text
    assert elsewhere.status_code == 422
    assert elsewhere.json()["message"] == ("raw.To: To or Cc must name the recipient given in "
                                           "'to' (ann@example.org)")
    first, second = await stored_bodies(app)
    assert b"boss@" not in first and b"other@" not in first and b"third@" not in first
    assert b"\r\nSubject: hi\r\n" in first and b"\r\n\r\nbody\r\n" in first
    assert b"To: ann@example.org\r\n" in second


@pytest.mark.parametrize("header", ["Authentication-Results: mx.example.org; dkim=pass",
                                    "ARC-Seal: i=1; a=rsa-sha256; cv=none",
                                    "arc-authentication-results: i=1; spf=pass",
                                    "Received-SPF: pass", "DKIM-Signature: v=1; d=shop.test",
                                    "Return-Path: <x@shop.test>"])
async def test_receiver_headers_are_refused_by_name(app: RunningApp, header: str) -> None:
    name = header.partition(":")[0]
    async with app.client() as client:
        in_raw = await client.post("/v1/messages", json=raw(
            f"From: news@shop.test\nTo: ann@example.org\n{header}"))
        in_headers = await client.post("/v1/messages", json=message(
            headers={name: header.partition(": ")[2]}))
    assert in_raw.status_code == 422
    assert in_raw.json()["message"].startswith(f"raw.{name}: ")
    assert in_headers.status_code == 422
    assert in_headers.json()["message"].startswith(f"headers.{name}: ")
