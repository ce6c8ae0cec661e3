"""``herald bench suppression``: a small run prints every field and checks each look-up's
answer, so a look-up that named a wrong address would fail the run."""

from __future__ import annotations

import os
import subprocess
import sys

import asyncpg
import orjson

SMALL = ("--erased", "40", "--suppressed", "40", "--addresses", "200", "--rounds", "2")


def bench(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "herald.cli", "bench", "suppression", *args,
                           "--database-url", database_url], env=dict(os.environ),
                          capture_output=True, text=True, timeout=120)


def test_a_small_run_measures_both_phases_and_verifies_every_answer(database_url: str) -> None:
    result = bench(database_url, *SMALL)
    assert result.returncode == 0, result.stderr
    line = orjson.loads(result.stdout.strip().splitlines()[-1])
    assert line["verification"] == {"ok": True, "problems": []}
    for phase in ("none", "with_erased"):
        assert line[phase]["lookup_ms_per_1000"] > 0 and line[phase]["anchor_ms_per_1000"] > 0
    assert line["ratios"]["erased_to_none"] > 0 and line["erased"] == 40


async def test_an_unexpected_entry_fails_the_verification(database_url: str) -> None:
    connection = await asyncpg.connect(database_url)
    try:  # an address the bench treats as unknown is on the list: its answer is wrong
        await connection.execute(
            "INSERT INTO suppressions (email, category, reason, source) "
            "VALUES ('unknown0.0@example.com', '', 'manual', 'test')")
    finally:
        await connection.close()
    result = bench(database_url, *SMALL)
    assert result.returncode == 1
    line = orjson.loads(result.stdout.strip().splitlines()[-1])
    assert not line["verification"]["ok"] and "round 0" in line["verification"]["problems"][0]


def test_bad_arguments_are_one_line() -> None:
    result = subprocess.run([sys.executable, "-m", "herald.cli", "bench", "suppression",
                             "--erased", "0"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip() == ("herald bench suppression: error: argument --erased: "
                                     "0 must be >= 1")
