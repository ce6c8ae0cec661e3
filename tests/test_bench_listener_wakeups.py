"""``herald bench listener-wakeups``: a tiny run measures each listener count with and without
a NOTIFY per commit, and leaves no scratch table behind."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import asyncpg
import orjson
import pytest

from bench.listener_wakeups import TABLE, parse_args


async def test_a_tiny_run_reports_each_count_and_cleans_up(database_url: str) -> None:
    result = await asyncio.to_thread(subprocess.run, [
        sys.executable, "-m", "herald.cli", "bench", "listener-wakeups", "--database-url",
        database_url, "--listeners", "0,2", "--commits", "100", "--rounds", "2"],
        capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr
    summary = orjson.loads(result.stdout.strip().splitlines()[-1])
    assert [row["listeners"] for row in summary["by_listeners"]] == [0, 2]
    for row in summary["by_listeners"]:
        assert row["notify_us_per_commit"] > 0 and row["plain_us_per_commit"] > 0
        assert len(row["rounds_notify"]) == len(row["rounds_plain"]) == 2
    first = summary["by_listeners"][0]
    assert summary["notify_us_with_no_listener"] == pytest.approx(
        first["notify_us_per_commit"] - first["plain_us_per_commit"])
    assert summary["us_per_listener_per_notify"] is not None
    connection = await asyncpg.connect(database_url)
    try:
        assert await connection.fetchval("SELECT to_regclass($1)", TABLE) is None
    finally:
        await connection.close()


def test_bad_listener_counts_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    for bad in ("a,b", "-1", ""):
        with pytest.raises(SystemExit):
            parse_args(["--listeners", bad])
        assert "--listeners" in capsys.readouterr().err
    assert parse_args(["--listeners", "4, 0,4"]).listeners == [0, 4]
