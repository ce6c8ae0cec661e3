"""``herald bench intake-cpu``: every stack answers every request, the ``full`` stack stores
each of them durably, and the JSON line carries each stack's CPU, its share of the bare
stack's, the group sizes and the anchors."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from typing import Any

import asyncpg
import orjson
import pytest

from bench.intake_cpu import parse_args


async def events_stored(database_url: str, prefix: str) -> list[str]:
    connection = await asyncpg.connect(database_url)
    try:
        return [row[0] for row in await connection.fetch(
            "SELECT event_id FROM events WHERE starts_with(event_id, $1)", prefix)]
    finally:
        await connection.close()


async def run_bench(database_url: str, *args: str) -> dict[str, Any]:
    """``herald bench intake-cpu`` on the test database; its JSON line."""
    env = {**os.environ, "HERALD_DATABASE_URL": database_url}
    result = await asyncio.to_thread(subprocess.run, [
        sys.executable, "-m", "herald.cli", "bench", "intake-cpu", "--database-url",
        database_url, *args], env=env, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr
    summary: dict[str, Any] = orjson.loads(result.stdout.strip().splitlines()[-1])
    return summary


async def test_a_tiny_run_measures_every_stack_and_stores_the_full_stacks_events(
        database_url: str) -> None:
    summary = await run_bench(database_url, "--connections", "4", "--requests", "200",
                              "--rounds", "2", "--warm-up", "20")
    stacks = summary["stacks"]
    assert summary["direct"] is True  # served as herald run serves them
    assert list(stacks) == ["bare", "http", "handoff", "full"]
    for figures in stacks.values():
        assert figures["cpu_us_per_request"] > 0 and figures["requests_per_s"] > 0
        assert len(figures["rounds_cpu_us"]) == 2
    assert stacks["bare"]["share_of_bare"] == 1.0
    assert stacks["full"]["share_of_bare"] == round(
        stacks["full"]["cpu_us_per_request"] / stacks["bare"]["cpu_us_per_request"], 3)
    groups = summary["full_groups"]
    assert groups["groups"] > 0 and 1 <= groups["median_events"] <= 4
    assert groups["write_cpu_us_per_group"] > 0
    anchors = summary["anchors"]
    assert anchors["wake_cpu_us_per_1ms_sleep"] > 0 and anchors["process_round_trip_us"] > 0
    # Only the full stack writes: its warm-up and both rounds, each request one event, once.
    stored = await events_stored(database_url, summary["run"])
    assert len(stored) == len(set(stored)) == 20 + 2 * 200
    assert all("-full-" in event_id for event_id in stored)


def test_unknown_stacks_and_negative_waits_are_refused(
        capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse_args(["--stacks", "bare,nginx"])
    assert "unknown nginx" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_args(["--commit-ms", "-1"])
    assert "--commit-ms must be 0 or more" in capsys.readouterr().err
    assert parse_args(["--stacks", "full, bare"]).stacks == ["full", "bare"]
    assert parse_args(["--no-direct"]).no_direct and not parse_args([]).no_direct


async def test_rounds_past_the_per_address_connection_cap_hang_up_their_clients(
        database_url: str) -> None:
    # 100 connections a round, warm-up and 3 rounds: 400 connections from one address over
    # the run, past the guard's cap of 256 open at once. Each round's clients hang up at its
    # end, as real ones do, so no request is refused with "too many connections".
    summary = await run_bench(database_url, "--stacks", "http", "--connections", "100",
                              "--requests", "200", "--rounds", "3", "--warm-up", "100")
    assert len(summary["stacks"]["http"]["rounds_cpu_us"]) == 3
