"""``bench.copy_ceiling``: the log-shaped ceiling's tables carry what the log's own tables carry
(so that its rate is the floor under Herald's batch path on this schema), each of its commits
writes the ids and the rows in one transaction, and a run leaves no table behind."""

from __future__ import annotations

import itertools

import asyncpg
import pytest

from bench.copy_ceiling import (
    BARE,
    LOG,
    CopyTarget,
    copy_commit,
    copy_rows,
    create_tables,
    event_rows,
    tables_left,
)
from engine.database import connect_one


async def _indexes(connection: asyncpg.Connection, table: str) -> list[str]:
    """The table's index definitions with the index and table names left out."""
    rows = await connection.fetch(
        "SELECT regexp_replace(pg_get_indexdef(indexrelid), 'INDEX \\S+ ON (ONLY )?\\S+', "
        "'INDEX ON <table>') AS definition FROM pg_index WHERE indrelid = $1::regclass", table)
    return sorted(row["definition"] for row in rows)


async def _columns(connection: asyncpg.Connection, table: str) -> list[tuple[object, ...]]:
    rows = await connection.fetch(
        "SELECT column_name, data_type, is_nullable, column_default, is_identity, collation_name "
        "FROM information_schema.columns WHERE table_name = $1 ORDER BY ordinal_position",
        table)
    return [tuple(row) for row in rows]


async def _partition_key(connection: asyncpg.Connection, table: str) -> str | None:
    value: str | None = await connection.fetchval(
        "SELECT pg_get_partkeydef($1::regclass)", table)
    return value


async def test_the_log_shaped_tables_carry_the_logs_indexes_defaults_and_partitioning(
        database_url: str) -> None:
    connection = await connect_one(database_url)
    try:
        await create_tables(connection, LOG)
        assert LOG.ids_table is not None
        for ours, theirs in ((LOG.rows_table, "events"), (LOG.ids_table, "event_ids")):
            assert await _columns(connection, ours) == await _columns(connection, theirs)
            assert await _partition_key(connection, ours) == await _partition_key(
                connection, theirs)
        # the log's indexes are defined on the partitioned parent; both B-trees must be there
        log_indexes = await _indexes(connection, LOG.rows_table)
        assert log_indexes == await _indexes(connection, "events")
        assert len(log_indexes) == 2
        ids_indexes = await _indexes(connection, LOG.ids_table)
        assert ids_indexes == await _indexes(connection, "event_ids")
        assert any("UNIQUE" in definition for definition in ids_indexes)
        # the bare ceiling has none
        await create_tables(connection, BARE)
        assert await _indexes(connection, BARE.rows_table) == []
    finally:
        await connection.close()


async def test_a_log_shaped_commit_writes_ids_and_rows_together_or_neither(
        database_url: str) -> None:
    connection = await connect_one(database_url)
    try:
        await create_tables(connection, LOG)
        counter = itertools.count()
        first = event_rows(counter, contacts=10)
        await copy_commit(connection, first, LOG)
        counts = ("SELECT (SELECT count(*) FROM bench_copy_log), "
                  "(SELECT count(*) FROM bench_copy_log_ids), "
                  "(SELECT count(DISTINCT txid) FROM bench_copy_log), "
                  "(SELECT count(DISTINCT position) FROM bench_copy_log)")
        assert tuple(await connection.fetchrow(counts)) == (len(first), len(first), 1,
                                                           len(first))
        # an id already claimed: the ids' key refuses it, and the commit's rows go with it
        repeated = event_rows(counter, contacts=10)
        repeated[-1] = first[0]
        with pytest.raises(asyncpg.UniqueViolationError):
            await copy_commit(connection, repeated, LOG)
        assert tuple(await connection.fetchrow(counts)) == (len(first), len(first), 1,
                                                           len(first))
        # the ids go in first; a row the log refuses takes its commit's ids back with it
        refused = event_rows(counter, contacts=10)
        refused[-1] = (refused[-1][0], None, *refused[-1][2:])  # no type
        with pytest.raises(asyncpg.NotNullViolationError):
            await copy_commit(connection, refused, LOG)
        assert tuple(await connection.fetchrow(counts)) == (len(first), len(first), 1,
                                                           len(first))
    finally:
        await connection.close()


@pytest.mark.parametrize("target", [BARE, LOG], ids=["bare", "log"])
async def test_a_run_copies_rows_and_leaves_no_table(database_url: str,
                                                     target: CopyTarget) -> None:
    ended: list[bool] = []
    rows, seconds = await copy_rows(database_url, 0.2, connections=2, contacts=10,
                                    committed=lambda: ended.append(True), target=target)
    assert rows > 0 and rows % 1000 == 0 and seconds > 0 and ended == [True]
    assert await tables_left(database_url) == 0
