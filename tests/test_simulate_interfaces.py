"""``herald simulate`` on the command line and ``POST /v1/workflows/{name}/simulate``, and the
explain endpoint, over real HTTP against stored history."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest

from tests.support.app import RunningApp, running_app

REPO = Path(__file__).resolve().parent.parent


def write_events(path: Path) -> None:
    lines = [
        {"kind": "contact", "contact_id": "42", "email": "ann@example.com",
         "attributes": {"first_name": "Ann"}},
        {"type": "signed_up", "contact_id": "42", "timestamp": "2026-03-02T09:00:00Z"},
        {"type": "order_completed", "contact_id": "42", "timestamp": "2026-03-02T10:00:00Z",
         "properties": {"order_id": "A1", "amount": 42}},
    ]
    path.write_bytes(b"\n".join(orjson.dumps(line) for line in lines) + b"\n")


def simulate_cli(events: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "herald.cli", "simulate", "--workflows",
         str(REPO / "config" / "workflows"), "--templates", str(REPO / "config" / "templates"),
         "--events", str(events), *extra], capture_output=True, text=True, timeout=120)


def test_cli_prints_one_json_line_per_send_and_is_deterministic(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    write_events(events)
    first = simulate_cli(events, "--horizon", "5d")
    second = simulate_cli(events, "--horizon", "5d")
    assert first.returncode == 0, first.stderr
    assert first.stdout == second.stdout
    lines = [orjson.loads(line) for line in first.stdout.splitlines()]
    assert lines[0] == {"at": "2026-03-02T09:00:00.000Z", "workflow": "welcome",
                        "step": "welcome-1", "contact_id": "42", "template": "welcome-1"}
    assert ("post-purchase", "review-request", "2026-03-05T10:00:00.000Z") in [
        (line["workflow"], line["step"], line["at"]) for line in lines]
    assert all(set(line) == {"at", "workflow", "step", "contact_id", "template"}
               for line in lines)


def test_cli_bad_line_is_one_clear_error(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    events.write_text('{"type": "signed_up", "contact_id": "1"}\n')
    result = simulate_cli(events)
    assert result.returncode == 2
    assert result.stderr.strip() == "herald: error: line 1.timestamp: is required"


@pytest.fixture
async def app(database_url: str) -> AsyncIterator[RunningApp]:
    async with running_app(database_url) as running:
        yield running


async def test_http_simulate_over_stored_history_and_explain(app: RunningApp) -> None:
    async with app.client() as client:
        await client.post("/v1/contacts", json={"contact_id": "42", "email": "ann@example.com"})
        await client.post("/v1/events", json={"events": [
            {"type": "cart_updated", "contact_id": "42", "timestamp": "2026-03-02T09:00:00Z",
             "properties": {"cart_id": "A", "items": []}}]})
        simulated = await client.post("/v1/workflows/abandoned-cart/simulate",
                                      json={"horizon": "3d"})
        unknown = await client.post("/v1/workflows/nope/simulate", json={})
        bad = await client.post("/v1/workflows/abandoned-cart/simulate",
                                json={"horizon": "forever"})
        listed = await client.get("/v1/workflows")
        explained = await client.get("/v1/contacts/42/explain")
    assert simulated.status_code == 200, simulated.text
    assert [(r["step"], r["at"]) for r in simulated.json()["results"]] == [
        ("cart-reminder-1", "2026-03-02T09:30:00.000Z"),
        ("cart-reminder-2", "2026-03-03T09:30:00.000Z")]
    assert unknown.status_code == 404 and bad.status_code == 422
    assert {w["name"] for w in listed.json()["workflows"]} >= {"welcome", "win-back"}
    report = explained.json()
    assert report["contact_id"] == "42"
    assert all(w["summary"].startswith("never triggered") for w in report["workflows"])
