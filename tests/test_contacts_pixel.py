"""Contacts API and the website tracking pixel over real HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from engine.http.events_routes import GIF
from tests.support.app import RunningApp, running_app


@pytest.fixture
async def app(database_url: str) -> AsyncIterator[RunningApp]:
    async with running_app(database_url) as running:
        yield running


async def test_contact_upsert_merges_and_logs_changes(app: RunningApp) -> None:
    async with app.client() as client:
        created = await client.post("/v1/contacts", json={
            "contact_id": "c1", "email": "ann@example.com", "timezone": "Europe/Paris",
            "attributes": {"first_name": "Ann", "plan": "free"}})
        updated = await client.post("/v1/contacts", json={
            "contact_id": "c1", "attributes": {"plan": "pro", "first_name": None}})
        unchanged = await client.post("/v1/contacts", json={"contact_id": "c1"})
        fetched = await client.get("/v1/contacts/c1")
    assert created.status_code == 201 and created.json()["created"] is True
    assert updated.status_code == 200
    contact = fetched.json()["contact"]
    assert contact["attributes"] == {"plan": "pro"}
    assert contact["email"] == "ann@example.com"
    assert contact["timezone"] == "Europe/Paris"
    assert unchanged.status_code == 200
    async with app.database.connection() as connection:
        rows = await connection.fetch("SELECT properties FROM events WHERE type = "
                                      "'contact_updated' ORDER BY position")
    assert len(rows) == 2  # the no-op upsert logs nothing
    assert rows[1]["properties"]["changed"] == ["first_name", "plan"]
    assert rows[1]["properties"]["previous"] == {"first_name": "Ann", "plan": "free"}


@pytest.mark.parametrize(("body", "field"), [
    ({"email": "a@example.com"}, "contact_id"),
    ({"contact_id": "c", "email": "bad"}, "email"),
    ({"contact_id": "c", "timezone": "Mars/Olympus"}, "timezone"),
    ({"contact_id": "c", "attributes": [1]}, "attributes"),
    ({"contact_id": "c", "shoe_size": 9}, "shoe_size"),
])
async def test_contact_validation_names_field(app: RunningApp, body: dict, field: str) -> None:
    async with app.client() as client:
        response = await client.post("/v1/contacts", json=body)
    assert response.status_code == 422
    assert response.json()["error"] == "invalid_contact"
    assert response.json()["message"].startswith(f"{field}:")
    async with app.database.connection() as connection:
        assert await connection.fetchval("SELECT count(*) FROM contacts") == 0


async def test_unknown_contact_is_404(app: RunningApp) -> None:
    async with app.client() as client:
        response = await client.get("/v1/contacts/nobody")
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"


async def test_contact_events_newest_first_paginated(app: RunningApp) -> None:
    async with app.client() as client:
        await client.post("/v1/events", json={"events": [
            {"type": f"e{i}", "contact_id": "c7"} for i in range(5)]})
        await client.post("/v1/events", json={"type": "other", "contact_id": "c8"})
        first = (await client.get("/v1/contacts/c7/events", params={"limit": 2})).json()
        second = (await client.get("/v1/contacts/c7/events",
                                   params={"limit": 2, "cursor": first["next_cursor"]})).json()
        third = (await client.get("/v1/contacts/c7/events",
                                  params={"limit": 2, "cursor": second["next_cursor"]})).json()
        bad = await client.get("/v1/contacts/c7/events", params={"limit": 0})
    assert [e["type"] for e in first["events"]] == ["e4", "e3"]
    assert [e["type"] for e in second["events"]] == ["e2", "e1"]
    assert [e["type"] for e in third["events"]] == ["e0"]
    assert third["next_cursor"] is None
    assert bad.status_code == 422


async def test_contacts_read_scope_cannot_write(app: RunningApp) -> None:
    reader = await app.new_key("contacts:read")
    async with app.client(reader) as client:
        write = await client.post("/v1/contacts", json={"contact_id": "c"})
        read = await client.get("/v1/contacts/c")
    assert write.status_code == 403
    assert read.status_code == 404


async def test_pixel_records_allowed_events_and_always_answers_gif(app: RunningApp) -> None:
    site = await app.new_key(publishable=True, event_types=("page_viewed",),
                             properties=("path",))
    async with app.client() as client:
        good = await client.get("/v1/pixel.gif", params={
            "key": site, "type": "page_viewed", "anonymous_id": "v1", "path": "/shoes"})
        wrong_type = await client.get("/v1/pixel.gif", params={
            "key": site, "type": "order_completed", "anonymous_id": "v1"})
        secret_key = await client.get("/v1/pixel.gif", params={
            "key": app.admin_key, "type": "page_viewed", "anonymous_id": "v1"})
        no_contact = await client.get("/v1/pixel.gif", params={"key": site,
                                                               "type": "page_viewed"})
        garbage = await client.get("/v1/pixel.gif?key=%ff%fe&type=%01&timestamp=nope")
        metrics = await client.get("/metrics")
    for response in (good, wrong_type, secret_key, no_contact, garbage):
        assert response.status_code == 200
        assert response.content == GIF
        assert response.headers["content-type"] == "image/gif"
    async with app.database.connection() as connection:
        rows = await connection.fetch("SELECT type, contact_id, properties, source FROM events")
    assert [(r["type"], r["contact_id"], r["properties"], r["source"]) for r in rows] == [
        ("page_viewed", "anon:v1", {"path": "/shoes"}, "pixel_anonymous")]
    assert 'herald_pixel_rejected_total{reason="event_type_not_allowed"} 1.0' in metrics.text
    assert 'herald_pixel_rejected_total{reason="bad_key"}' in metrics.text


async def test_publishable_key_cannot_use_the_api(app: RunningApp) -> None:
    site = await app.new_key(publishable=True, event_types=("page_viewed",))
    async with app.client(site) as client:
        response = await client.post("/v1/events", json={"type": "page_viewed",
                                                          "contact_id": "c"})
    assert response.status_code == 403
