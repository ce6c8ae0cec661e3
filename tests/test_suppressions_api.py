"""The managed suppression list over HTTP and the CLI: add, list with cursors, show, remove,
CSV import and export, bad input, the events each change logs, soft-bounce counting, and the
contact view."""

from __future__ import annotations

import asyncio
import csv
import io
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from mta.suppression import store
from tests.support.app import RunningApp, running_app
from tests.support.mta import fetch, mta_settings
from tests.test_cli import herald


@pytest.fixture
async def app(database_url: str) -> AsyncIterator[RunningApp]:
    async with running_app(database_url, mta_settings()) as running:
        yield running


async def test_add_list_page_show_and_remove(app: RunningApp) -> None:
    async with app.client() as client:
        one = await client.post("/v1/suppressions", json={"email": "Ann@Example.com",
                                                          "detail": "asked by phone"})
        assert one.json() == {"received": 1, "added": 1}
        batch = await client.post("/v1/suppressions", json={"suppressions": [
            {"email": f"user{i}@example.com", "reason": "complaint"} for i in range(5)] + [
            {"email": "ann@example.com"}]})
        assert batch.json() == {"received": 6, "added": 5}
        seen: list[str] = []
        cursor = None
        while True:
            params = {"limit": "2", **({"cursor": cursor} if cursor else {})}
            page = (await client.get("/v1/suppressions", params=params)).json()
            seen += [entry["email"] for entry in page["suppressions"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert seen == ["ann@example.com"] + [f"user{i}@example.com" for i in range(5)]
        complaints = (await client.get("/v1/suppressions", params={"reason": "complaint"})).json()
        assert len(complaints["suppressions"]) == 5
        shown = (await client.get("/v1/suppressions/ANN@example.com")).json()
        assert shown["suppressed"] and shown["suppressions"][0]["reason"] == "manual"
        assert shown["suppressions"][0]["source"] == "api"
        removed = await client.delete("/v1/suppressions/ann@example.com")
        assert removed.json() == {"email": "ann@example.com", "removed": 1}
        again = await client.delete("/v1/suppressions/ann@example.com")
        assert again.status_code == 404 and again.json()["error"] == "not_found"
    kinds = [r["type"] for r in await fetch(
        app.database, "SELECT type FROM events WHERE type LIKE 'suppression_%' "
                      "ORDER BY position")]
    assert kinds == ["suppression_added"] * 6 + ["suppression_removed"]


async def test_csv_import_and_export_round_trip(app: RunningApp) -> None:
    text = ("email,reason,category,detail\n"
            "a@example.com,hard_bounce,,from old ESP\n"
            "b@example.com,unsubscribe,news,\n"
            "c@example.com,,,=HYPERLINK(\"x\")\n")
    async with app.client() as client:
        imported = await client.post("/v1/suppressions", content=text,
                                     headers={"Content-Type": "text/csv"})
        assert imported.json() == {"received": 3, "added": 3}
        exported = await client.get("/v1/suppressions", params={"format": "csv"})
    assert exported.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert [(r["email"], r["reason"], r["category"], r["source"]) for r in rows] == [
        ("a@example.com", "hard_bounce", "", "import"),
        ("b@example.com", "unsubscribe", "news", "import"),
        ("c@example.com", "manual", "", "import")]
    assert rows[2]["detail"].startswith("'=")  # no formula injection in spreadsheets


@pytest.mark.parametrize(("body", "fragment"), [
    ({"email": "not an address"}, "body.email"),
    ({"email": "a@example.com", "reason": "bored"}, "reason must be"),
    ({"email": "a@example.com", "reason": "hard_bounce", "category": "news"},
     "only an unsubscribe"),
    ({"email": "a@example.com", "reason": "unsubscribe", "category": "bad category!"},
     "category must be"),
    ({"email": "a@example.com", "extra": 1}, "body.extra: unknown field"),
    ({"email": "a@example.com", "detail": 5}, "body.detail: must be a string"),
    ({"suppressions": []}, "suppressions: must be a list of 1 to 1000"),
    ({"suppressions": [{"email": "a@example.com"}, {"email": "x"}]}, "suppressions[1].email"),
    ([1, 2], "body: must be an object"),
])
async def test_bad_entries_name_the_field_and_store_nothing(app: RunningApp, body: object,
                                                             fragment: str) -> None:
    async with app.client() as client:
        response = await client.post("/v1/suppressions", json=body)
    assert response.status_code == 422 and fragment in response.json()["message"]
    assert await fetch(app.database, "SELECT 1 FROM suppressions") == []


@pytest.mark.parametrize(("text", "status", "fragment"), [
    ("address\nx@example.com\n", 400, "line 1"),  # malformed: no email column
    ("email,reason\nok@example.com,manual\nbroken,manual\n", 422, "line 3: email"),
    ("email,reason\nok@example.com,nonsense\n", 422, "line 2: reason"),
])
async def test_bad_csv_names_the_line_and_stores_nothing(app: RunningApp, text: str,
                                                         status: int, fragment: str) -> None:
    async with app.client() as client:
        response = await client.post("/v1/suppressions", content=text,
                                     headers={"Content-Type": "text/csv"})
    assert response.status_code == status and fragment in response.json()["message"]
    assert await fetch(app.database, "SELECT 1 FROM suppressions") == []


@pytest.mark.parametrize("params", [{"limit": "0"}, {"limit": "²"}, {"cursor": "abc"},
                                    {"cursor": "99999999999999999999"}, {"reason": "x"}])
async def test_bad_list_parameters(app: RunningApp, params: dict[str, str]) -> None:
    async with app.client() as client:
        response = await client.get("/v1/suppressions", params=params)
    assert response.status_code == 422 and response.json()["error"] == "invalid_parameter"


async def test_scopes_are_enforced(app: RunningApp) -> None:
    key = await app.new_key("events:write", "messages:write")
    async with app.client(key) as client:
        assert (await client.get("/v1/suppressions")).status_code == 403
        assert (await client.post("/v1/suppressions",
                                  json={"email": "a@example.com"})).status_code == 403


async def test_contact_shows_whether_and_why_it_is_suppressed(app: RunningApp) -> None:
    async with app.client() as client:
        await client.post("/v1/contacts", json={"contact_id": "c1", "email": "Li@Example.com"})
        clean = (await client.get("/v1/contacts/c1")).json()["contact"]
        assert clean["suppressed"] is False and clean["unsubscribed"] == []
        await client.post("/v1/suppressions", json={"suppressions": [
            {"email": "li@example.com", "reason": "unsubscribe", "category": "news"},
            {"email": "li@example.com", "reason": "complaint"}]})
        contact = (await client.get("/v1/contacts/c1")).json()["contact"]
    assert contact["suppressed"] is True and contact["unsubscribed"] == ["news"]
    assert {s["reason"] for s in contact["suppressions"]} == {"complaint", "unsubscribe"}


async def test_soft_bounces_suppress_after_the_limit_within_the_window(
        app: RunningApp) -> None:
    now = datetime.now(UTC)
    async with app.database.transaction() as connection:
        first = await store.record_soft_bounces(
            connection, [("mo@example.com", uuid.uuid4())], 2, 86400, now - timedelta(days=3))
        second = await store.record_soft_bounces(
            connection, [("mo@example.com", uuid.uuid4())], 2, 86400, now)
        third = await store.record_soft_bounces(
            connection, [("mo@example.com", uuid.uuid4())], 2, 86400, now)
    assert first == [] and second == []  # the first fell out of the one-day window
    assert [(s.email, s.reason) for s in third] == [("mo@example.com", "soft_bounces")]


async def test_cli_add_list_remove_import_export(database_url: str, tmp_path: object) -> None:
    assert herald(database_url, "suppressions", "add", "Ann@Example.com",
                  "--detail", "by hand").returncode == 0
    listed = herald(database_url, "suppressions", "list")
    assert listed.stdout.startswith("ann@example.com\tmanual\t*\tcli\t")
    path = Path(str(tmp_path)) / "in.csv"
    await asyncio.to_thread(path.write_text, "email,reason\nbo@example.com,complaint\n")
    imported = herald(database_url, "suppressions", "import", str(path))
    assert imported.returncode == 0 and "added 1 of 1" in imported.stdout
    exported = herald(database_url, "suppressions", "export")
    assert [r["email"] for r in csv.DictReader(io.StringIO(exported.stdout))] == [
        "ann@example.com", "bo@example.com"]
    assert herald(database_url, "suppressions", "remove", "ann@example.com").returncode == 0
    missing = herald(database_url, "suppressions", "remove", "ann@example.com")
    assert missing.returncode == 2
    assert missing.stderr.strip() == "herald: error: ann@example.com is not suppressed"
    bad = herald(database_url, "suppressions", "add", "not-an-address")
    assert bad.returncode == 2 and bad.stderr.startswith("herald: error: 'not-an-address'")


@pytest.mark.parametrize(("body", "status"), [("\rÉ", 400), ("email\rann@example.com\r", 200),
                                              ('email\n"unterminated', 400)])
async def test_csv_with_bare_carriage_returns_is_read_or_refused(
        app: RunningApp, body: str, status: int) -> None:
    """Found by the schemathesis job: a bare CR made the csv module raise (a 500)."""
    async with app.client() as client:
        response = await client.post("/v1/suppressions", content=body.encode(),
                                     headers={"Content-Type": "text/csv"})
    assert response.status_code == status, response.text
