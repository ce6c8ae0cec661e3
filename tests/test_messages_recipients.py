"""POST /v1/messages with recipients, substitutions, attachments and Idempotency-Key, over
real HTTP; answers per recipient; the published schemas describe every answer."""

from __future__ import annotations

import base64
import email
import email.policy
from collections.abc import AsyncIterator
from typing import Any

import jsonschema
import pytest

from tests.support.app import RunningApp, running_app


@pytest.fixture
async def app(database_url: str) -> AsyncIterator[RunningApp]:
    async with running_app(database_url) as running:
        yield running


COMPOSED = {"from": "Shop <news@shop.test>", "subject": "Hi {{ first_name|title }}",
            "text": "Hello {{ first_name }}{% if vip %}, our VIP{% endif %}.\n",
            "html": "<p>Hello {{ first_name }}</p>"}


async def bodies(app: RunningApp) -> dict[str, email.message.EmailMessage]:
    async with app.database.connection() as connection:
        rows = await connection.fetch("SELECT recipient, body, contact_id, metadata, "
                                      "idempotency_key FROM outbound_messages")
    return {row["recipient"]: email.message_from_bytes(bytes(row["body"]),
                                                       policy=email.policy.default)
            for row in rows}


def schema_of(document: dict[str, Any], path: str, method: str, status: str) -> Any:
    content = document["paths"][path][method]["responses"][status]["content"]
    return content["application/json"]["schema"]


async def test_one_message_per_recipient_with_its_substitutions(app: RunningApp) -> None:
    async with app.client() as client:
        added = await client.post("/v1/suppressions", json={"email": "gone@example.org"})
        assert added.status_code < 300, added.text
        response = await client.post("/v1/messages", json={**COMPOSED, "metadata": {"a": 1},
            "recipients": [
                {"to": "Ann <ann@example.org>", "contact_id": "c-ann", "metadata": {"b": 2},
                 "substitutions": {"first_name": "ann", "vip": True}},
                {"to": "Bob <bob@example.org>", "substitutions": {"first_name": "<bob>"}},
                {"to": "not an address", "substitutions": {"first_name": "x"}},
                {"to": "eve@example.org", "substitutions": {}},
                {"to": "gone@example.org", "substitutions": {"first_name": "g"}},
            ]})
        document = (await client.get("/openapi.json")).json()
    assert response.status_code == 202, response.text
    answer = response.json()
    jsonschema.validate(answer, schema_of(document, "/v1/messages", "post", "202"))
    results = answer["recipients"]
    assert answer["accepted"] == 2, results
    assert [(r["to"], r["accepted"], r.get("error")) for r in results] == [
        ("Ann <ann@example.org>", True, None), ("Bob <bob@example.org>", True, None),
        ("not an address", False, "invalid_recipient"),
        ("eve@example.org", False, "substitution_failed"),
        ("gone@example.org", False, "suppressed")]
    assert "'first_name' is undefined" in results[3]["message"]
    assert results[4]["id"] and "suppression list" in results[4]["message"]
    stored = await bodies(app)
    ann, bob = stored["ann@example.org"], stored["bob@example.org"]
    assert ann["Subject"] == "Hi Ann" and bob["Subject"] == "Hi <Bob>"
    assert ann.get_body(("plain",)).get_content() == "Hello ann, our VIP.\r\n"
    assert bob.get_body(("html",)).get_content().strip() == "<p>Hello &lt;bob&gt;</p>"
    async with app.database.connection() as connection:
        row = await connection.fetchrow("SELECT contact_id, metadata FROM outbound_messages "
                                        "WHERE recipient = 'ann@example.org'")
    assert row["contact_id"] == "c-ann" and row["metadata"] == {"a": 1, "b": 2}


async def test_idempotency_key_header_per_recipient(app: RunningApp) -> None:
    body = {**COMPOSED, "recipients": [{"to": f"r{i}@example.org",
                                        "substitutions": {"first_name": "r"}}
                                       for i in range(3)]}
    async with app.client() as client:
        first = await client.post("/v1/messages", json=body,
                                  headers={"Idempotency-Key": "campaign-7"})
        again = await client.post("/v1/messages", json=body,
                                  headers={"Idempotency-Key": "campaign-7"})
        clash = await client.post("/v1/messages", json={**body, "idempotency_key": "other"},
                                  headers={"Idempotency-Key": "campaign-7"})
        single = await client.post("/v1/messages", json={
            "from": "news@shop.test", "to": "solo@example.org", "subject": "s", "text": "t"},
            headers={"Idempotency-Key": "solo-1"})
    assert [r["duplicate"] for r in first.json()["recipients"]] == [False] * 3
    assert [r["duplicate"] for r in again.json()["recipients"]] == [True] * 3
    assert [r["id"] for r in again.json()["recipients"]] == \
        [r["id"] for r in first.json()["recipients"]]
    assert clash.status_code == 422 and clash.json()["message"].startswith("Idempotency-Key")
    assert single.status_code == 202 and set(single.json()) == {"id", "duplicate"}
    async with app.database.connection() as connection:
        keys = await connection.fetch("SELECT idempotency_key FROM outbound_messages "
                                      "ORDER BY 1")
    assert [k["idempotency_key"] for k in keys] == [
        "campaign-7:0", "campaign-7:1", "campaign-7:2", "solo-1"]


async def test_attachments(app: RunningApp) -> None:
    pdf = b"%PDF-1.4 fake\x00\xff" * 100
    async with app.client() as client:
        response = await client.post("/v1/messages", json={
            "from": "news@shop.test", "to": "ann@example.org", "subject": "Your invoice",
            "text": "Attached.", "attachments": [
                {"filename": "Rechnung März.pdf", "content_type": "application/pdf",
                 "content": base64.b64encode(pdf).decode()}]})
    assert response.status_code == 202, response.text
    message = (await bodies(app))["ann@example.org"]
    assert message.get_content_type() == "multipart/mixed"
    [attachment] = list(message.iter_attachments())
    assert attachment.get_filename() == "Rechnung März.pdf"
    assert attachment.get_content_type() == "application/pdf"
    assert attachment.get_content() == pdf


BAD: list[tuple[str, dict[str, Any], str]] = [
    ("loop", {**COMPOSED, "to": "a@example.org", "text": "{% for x in y %}{% endfor %}"},
     "text: only"),
    ("bad filter", {**COMPOSED, "to": "a@example.org", "text": "{{ x|center(99999999) }}"},
     "text: unknown or disallowed filter 'center'"),
    ("to and recipients", {**COMPOSED, "to": "a@example.org",
                           "recipients": [{"to": "b@example.org"}]}, "to:"),
    ("no recipients", {**COMPOSED, "recipients": []}, "recipients:"),
    ("raw substitutions", {"raw": "From: news@shop.test\r\n\r\nx\r\n",
                           "recipients": [{"to": "b@example.org",
                                           "substitutions": {"a": 1}}]}, "recipients:"),
    ("bad base64", {**COMPOSED, "to": "a@example.org", "attachments": [
        {"filename": "a.txt", "content_type": "text/plain", "content": "%%%"}]},
     "attachments[0].content"),
    ("multipart attachment", {**COMPOSED, "to": "a@example.org", "attachments": [
        {"filename": "a", "content_type": "multipart/mixed", "content": ""}]},
     "attachments[0].content_type"),
    ("attachment path", {**COMPOSED, "to": "a@example.org", "attachments": [
        {"filename": "../etc/passwd", "content_type": "text/plain", "content": ""}]},
     "attachments[0].filename"),
    ("recipient field", {**COMPOSED, "recipients": [{"to": "b@example.org", "cc": "x"}]},
     "recipients[0].cc"),
    ("contact with recipients", {**COMPOSED, "contact_id": "c",
                                 "recipients": [{"to": "b@example.org"}]}, "contact_id"),
]


@pytest.mark.parametrize(("label", "body", "prefix"), BAD, ids=[b[0] for b in BAD])
async def test_bad_requests_get_422_naming_the_field(app: RunningApp, label: str,
                                                     body: dict[str, Any], prefix: str) -> None:
    async with app.client() as client:
        response = await client.post("/v1/messages", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["message"].startswith(prefix), response.json()


async def test_raw_mime_for_several_recipients(app: RunningApp) -> None:
    raw = ("From: news@shop.test\r\nTo: ann@example.org, bob@example.org\r\nSubject: raw\r\n"
           "\r\nbody\r\n")
    async with app.client() as client:
        response = await client.post("/v1/messages", json={"raw": raw, "recipients": [
            {"to": "ann@example.org"}, {"to": "bob@example.org"}, {"to": "eve@example.org"}]})
    assert response.status_code == 202, response.text
    assert [(r["accepted"], r.get("error")) for r in response.json()["recipients"]] == [
        (True, None), (True, None), (False, "invalid_recipient")]


async def test_the_document_publishes_the_validators_schema(app: RunningApp) -> None:
    from mta.message_schema import MESSAGE_SCHEMA, REQUEST_SCHEMA
    async with app.client() as client:
        document = (await client.get("/openapi.json")).json()
        queued = await client.post("/v1/messages", json={
            "from": "news@shop.test", "to": "ann@example.org", "subject": "s", "text": "t"})
        message = await client.get(f"/v1/messages/{queued.json()['id']}")
    post = document["paths"]["/v1/messages"]["post"]
    assert post["requestBody"]["content"]["application/json"]["schema"] == REQUEST_SCHEMA
    assert schema_of(document, "/v1/messages/{id}", "get", "200") == MESSAGE_SCHEMA
    jsonschema.validate(queued.json(), schema_of(document, "/v1/messages", "post", "202"))
    jsonschema.validate(message.json(), MESSAGE_SCHEMA)
