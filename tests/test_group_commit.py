"""Group commit of run transitions: shared transactions, one savepoint per transition."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from automation.stores.group_commit import GroupCommit
from engine.database import Database
from engine.errors import DatabaseError


async def make_table(database: Database) -> None:
    async with database.connection() as connection:
        await connection.execute("CREATE TABLE gc_probe (name text PRIMARY KEY, txid bigint)")


def insert(name: str) -> Any:
    async def transition(connection: Any) -> int:
        txid: int = await connection.fetchval(
            "INSERT INTO gc_probe VALUES ($1, txid_current()) RETURNING txid", name)
        return txid
    return transition


async def rows(database: Database) -> dict[str, int]:
    async with database.connection() as connection:
        return {r["name"]: r["txid"] for r in await connection.fetch("SELECT * FROM gc_probe")}


async def test_concurrent_transitions_share_commits_and_are_durable_on_return(
        database: Database) -> None:
    await make_table(database)
    commits = GroupCommit(database, connections=2, max_batch=10)
    visible: list[bool] = []

    async def one(name: str) -> int:
        txid = await commits.run(insert(name))
        visible.append(name in await rows(database))  # committed once run() returned
        return txid

    txids = await asyncio.gather(*(one(f"t{i}") for i in range(40)))
    stored = await rows(database)
    assert stored == {f"t{i}": txid for i, txid in enumerate(txids)}
    assert visible == [True] * 40
    assert commits.committed == 40
    assert commits.commits == len(set(txids)) < 40  # fewer transactions than transitions
    assert max(list(txids).count(t) for t in set(txids)) <= 10  # max_batch bounds a group


async def test_a_failing_transition_rolls_back_alone(database: Database) -> None:
    await make_table(database)
    commits = GroupCommit(database, connections=1, max_batch=50)

    async def half_then_fail(connection: Any) -> None:
        await connection.execute("INSERT INTO gc_probe VALUES ('partial', 0)")
        await connection.execute("INSERT INTO gc_probe VALUES ('ok-0', 0)")  # duplicate key

    results = await asyncio.gather(
        commits.run(insert("ok-0")), commits.run(half_then_fail), commits.run(insert("ok-1")),
        return_exceptions=True)
    assert isinstance(results[1], DatabaseError)
    stored = await rows(database)
    assert set(stored) == {"ok-0", "ok-1"}  # nothing of the failed one, both others
    assert stored["ok-0"] == stored["ok-1"] == results[0] == results[2]  # one transaction
    assert commits.committed == 2


async def test_an_error_in_python_code_rolls_back_its_writes_only(database: Database) -> None:
    await make_table(database)
    commits = GroupCommit(database, connections=1, max_batch=50)

    async def write_then_raise(connection: Any) -> None:
        await connection.execute("INSERT INTO gc_probe VALUES ('ghost', 0)")
        raise RuntimeError("a bug in a step")

    results = await asyncio.gather(commits.run(insert("a")), commits.run(write_then_raise),
                                   commits.run(insert("b")), return_exceptions=True)
    assert isinstance(results[1], RuntimeError)
    assert set(await rows(database)) == {"a", "b"}


async def test_each_transition_of_one_caller_sees_the_previous_committed(
        database: Database) -> None:
    await make_table(database)
    commits = GroupCommit(database, connections=1, max_batch=50)
    first = await commits.run(insert("first"))
    second = await commits.run(insert("second"))
    assert first != second  # a lone transition commits at once, waiting for nobody
    assert set(await rows(database)) == {"first", "second"}


def test_bounds_are_checked() -> None:
    with pytest.raises(ValueError):
        GroupCommit(None, connections=0)  # type: ignore[arg-type]
