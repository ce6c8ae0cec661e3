"""``herald bench log-shapes``: each shape is what it says (the log's indexes, or all but one of
them), a tiny run reports every shape against the bare one and leaves no table behind, and bad
arguments are refused in one line."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import orjson
import pytest

from bench.copy_ceiling import create_tables, drop_tables, tables_left
from bench.log_shapes import SHAPES, parse_args
from engine.database import connect_one

INDEXES = ("SELECT array_agg(pg_get_indexdef(indexrelid) ORDER BY 1) FROM pg_index "
           "WHERE indrelid = $1::regclass")


async def test_each_shape_has_the_indexes_and_partitioning_it_names(database_url: str) -> None:
    connection = await connect_one(database_url)
    try:
        partitioned = "SELECT relkind = 'p' FROM pg_class WHERE oid = $1::regclass"
        for name, shape in SHAPES.items():
            await create_tables(connection, shape)
            indexes = await connection.fetchval(INDEXES, shape.rows_table) or []
            described = " | ".join(indexes)
            has_ids_key = shape.ids_table is not None
            if has_ids_key:
                assert any("UNIQUE" in d for d in await connection.fetchval(
                    INDEXES, shape.ids_table)), name
            expected = {
                "bare": (False, False, False, False),
                "ids_key": (True, False, False, False),
                "log_without_txid_index": (True, True, False, True),
                "log_unpartitioned": (True, True, True, False),
                "log": (True, True, True, True),
            }[name]
            assert (has_ids_key, "(contact_id, \"position\" DESC)" in described,
                    "(txid, \"position\")" in described,
                    await connection.fetchval(partitioned, shape.rows_table)) == expected, name
            await drop_tables(connection, shape)
    finally:
        await connection.close()


async def test_a_tiny_run_reports_every_shape_against_the_bare_one(database_url: str) -> None:
    result = await asyncio.to_thread(subprocess.run, [
        sys.executable, "-m", "herald.cli", "bench", "log-shapes", "--database-url",
        database_url, "--seconds", "0.2", "--rounds", "2", "--connections", "1",
        "--contacts", "10"], capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr
    summary = orjson.loads(result.stdout.strip().splitlines()[-1])
    shapes = summary["shapes"]
    assert list(shapes) == list(SHAPES)
    assert shapes["bare"]["share_of_bare"] == 1.0
    for name, shape in shapes.items():
        assert shape["rows"] > 0 and shape["rows_per_s"] > 0, name
        assert shape["share_of_bare"] == pytest.approx(
            shape["rows_per_s"] / shapes["bare"]["rows_per_s"], abs=0.001), name
        assert len(shape["rounds_share_of_bare"]) == 2, name
    assert await tables_left(database_url) == 0


def test_bad_arguments_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    for bad in (["--seconds", "0"], ["--rounds", "0"], ["--connections", "x"]):
        with pytest.raises(SystemExit):
            parse_args(bad)
        assert bad[0] in capsys.readouterr().err
