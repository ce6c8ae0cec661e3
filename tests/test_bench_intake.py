"""``herald bench intake``: its bare-stack ceiling answers like the real endpoint, its check of
acknowledged events by id catches what a count would not, and a tiny run prints every field
(rates, ceilings, ratios, where the CPU went, the check)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import httpx
import orjson

from bench.bare_http import build_app
from bench.intake import verify
from bench.intake_accounts import postmaster_pid
from tests.support.app import running_app

EVENT = {"type": "product_viewed", "contact_id": "c1", "id": "e-1",
         "properties": {"sku": "sku-1", "price": 19.9}}
BATCH = {"events": [{"type": "page_viewed", "contact_id": f"c{n}", "id": f"b-{n}"}
                    for n in range(3)]}


async def answers(client: httpx.AsyncClient, body: dict[str, object]) -> tuple[int, str, object]:
    response = await client.post("/v1/events", content=orjson.dumps(body),
                                 headers={"Content-Type": "application/json"})
    return response.status_code, response.headers["content-type"], response.json()


async def test_the_bare_stack_answers_valid_events_like_the_real_endpoint(
        database_url: str) -> None:
    bare_transport = httpx.ASGITransport(app=build_app())
    async with httpx.AsyncClient(transport=bare_transport, base_url="http://bare") as bare, \
            running_app(database_url) as app, app.client() as real:
        for body in (EVENT, BATCH):
            fake = await answers(bare, body)
            assert fake == await answers(real, body)
            assert fake[0] == 202


async def test_verify_counts_missing_duplicated_and_unacknowledged_ids(
        database_url: str) -> None:
    connection = await asyncpg.connect(database_url)
    try:
        now = datetime.now(UTC)
        # Stored: r-single-0, r-single-1, r-single-3 (never acknowledged); a warm-up event
        # and another run's event share no prefix with the measured phase.
        await connection.executemany(
            "INSERT INTO events (event_id, type, contact_id, occurred_at) "
            "VALUES ($1, 't', 'c', $2)",
            [(event_id, now) for event_id in ("r-single-0", "r-single-1", "r-single-3",
                                              "r-warm-single-0", "q-single-2")])
    finally:
        await connection.close()
    acknowledged = {"r-single-0", "r-single-1", "r-single-2"}
    check = await verify(database_url, {"r-single-": acknowledged})
    assert check == {"acknowledged_events": 3, "missing": 1, "duplicated": 0,
                     "stored_unacknowledged": 1, "ok": False}
    assert (await verify(database_url, {"r-single-": {"r-single-0", "r-single-1",
                                                      "r-single-3"}}))["ok"]


async def test_a_tiny_run_prints_rates_ceilings_ratios_and_the_check(database_url: str) -> None:
    env = {**os.environ, "HERALD_DATABASE_URL": database_url}
    result = await asyncio.to_thread(subprocess.run, [
        sys.executable, "-m", "herald.cli", "bench", "intake", "--database-url", database_url,
        "--duration", "0.5", "--warm-up", "0.2", "--concurrency", "4", "--batch-size", "5",
        "--batch-concurrency", "2", "--contacts", "10", "--listeners", "2"],
        env=env, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr
    summary = orjson.loads(result.stdout.strip().splitlines()[-1])
    assert summary["listeners"] == 2  # idle LISTEN connections held through the phases
    bare = summary["ceilings"]["bare_http"]
    assert bare["requests"] > 0 and bare["requests_per_s"] > 0 and bare["p99_ms"] > 0
    single, batch = summary["phases"]
    assert single["phase"] == "single" and single["requests"] > 0
    assert batch["phase"] == "batch5" and batch["events_per_s"] > 0
    assert summary["ratios"]["single_to_bare_http"] == round(
        single["requests_per_s"] / bare["requests_per_s"], 3)
    copy = summary["ceilings"]["copy"]  # raw COPY, in turns with the batch phase
    assert copy["rows_per_s"] > 0 and copy["slices"] == 5
    assert summary["ratios"]["batch_to_copy"] == round(
        batch["events_per_s"] / copy["rows_per_s"], 3)
    floor = summary["ceilings"]["copy_log"]  # raw COPY into tables of the log's shape
    assert floor["rows_per_s"] > 0 and floor["slices"] == 5
    assert summary["ratios"]["batch_to_copy_log"] == round(
        batch["events_per_s"] / floor["rows_per_s"], 3)
    assert summary["copy_log_rows_per_s"] == floor["rows_per_s"]
    for field in ("bare_http_requests_per_s", "single_requests_per_s", "single_p50_ms",
                  "single_p99_ms", "batch_events_per_s", "batch_p99_ms"):
        assert summary[field] > 0, field
    cpu = summary["cpu"]  # each slice's CPU, per request, event or row
    assert set(cpu) == {"bare_http", "single", "batch", "copy", "copy_log"}
    assert cpu["single"]["units"] == single["requests"]
    assert cpu["batch"]["units"] == 5 * batch["requests"] and cpu["copy"]["units"] == copy["rows"]
    assert cpu["copy_log"]["units"] == floor["rows"]
    for name in ("bare_http", "single", "batch"):
        server = cpu[name]["parts"]["server"]
        assert server["cpu_us_per_unit"] > 0 and 0 < server["running"] <= 1.05, name
        assert server["waiting_for_cpu"] >= 0 and 0 < cpu[name]["machine_busy"] <= 1, name
    # The load client is this process; a given database may serve others: not counted.
    for name in ("copy", "copy_log"):
        assert set(cpu[name]["parts"]) == {"client"}, name
        assert cpu[name]["parts"]["client"]["cpu_us_per_unit"] > 0, name
    compared = summary["cpu_single_to_bare_http"]
    assert compared["server_cpu_per_request"] == round(
        cpu["single"]["parts"]["server"]["cpu_us_per_unit"]
        / cpu["bare_http"]["parts"]["server"]["cpu_us_per_unit"], 3)
    assert compared["server_running"]["single"] == cpu["single"]["parts"]["server"]["running"]
    commit = summary["anchors"]["durable_commit"]
    assert commit["commits"] == 200 and 0 < commit["p50_ms"] <= commit["p99_ms"]
    assert commit["bound_requests_per_s"] > 0
    wake = summary["anchors"]["wake"]  # a wake-up always costs some CPU; a round trip, time
    assert wake["wake_cpu_us_per_1ms_sleep"] > 0 and wake["process_round_trip_us"] > 0
    check = summary["verification"]
    assert check["acknowledged_events"] == single["requests"] + 5 * batch["requests"]
    assert check["ok"] and summary["all_acknowledged_stored"]


def test_the_embedded_postmaster_is_read_from_its_pid_file(tmp_path: Path) -> None:
    assert postmaster_pid(tmp_path) is None  # no cluster: Postgres is not counted
    (tmp_path / "postgres").mkdir()
    (tmp_path / "postgres" / "postmaster.pid").write_text(
        "4242\n/tmp/data/postgres\n1796300000\n5432\n")
    assert postmaster_pid(tmp_path) == 4242
    (tmp_path / "postgres" / "postmaster.pid").write_text("")
    assert postmaster_pid(tmp_path) is None
