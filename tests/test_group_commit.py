"""Group commit of run transitions: a group of transitions shares one transaction and is
handled at once; a failing group is retried member by member."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest

from automation.stores.group_commit import GroupCommit
from engine.database import Database
from engine.errors import DatabaseError


async def make_table(database: Database) -> None:
    async with database.connection() as connection:
        await connection.execute("CREATE TABLE gc_probe (name text PRIMARY KEY, txid bigint)")


async def insert_all(connection: Any, names: Sequence[str]) -> list[int]:
    """One statement for the whole group; 'bad*' names break the statement, 'bug*' names
    raise in Python after the rows were written."""
    for name in names:
        if name.startswith("bad"):
            await connection.execute("SELECT 1 / 0")
    rows = await connection.fetch(
        "INSERT INTO gc_probe SELECT n, txid_current() FROM unnest($1::text[]) AS n "
        "RETURNING name, txid", list(names))
    if any(name.startswith("bug") for name in names):
        raise RuntimeError("a bug in a step")
    txids = {row["name"]: row["txid"] for row in rows}
    return [txids[name] for name in names]


async def rows(database: Database) -> dict[str, int]:
    async with database.connection() as connection:
        return {r["name"]: r["txid"] for r in await connection.fetch("SELECT * FROM gc_probe")}


async def test_concurrent_transitions_share_commits_and_are_durable_on_return(
        database: Database) -> None:
    await make_table(database)
    commits: GroupCommit[str, int] = GroupCommit(database, insert_all, connections=2,
                                                 max_batch=10)
    visible: list[bool] = []

    async def one(name: str) -> int:
        txid = await commits.run(name)
        visible.append(name in await rows(database))  # committed once run() returned
        return txid

    txids = await asyncio.gather(*(one(f"t{i}") for i in range(40)))
    stored = await rows(database)
    assert stored == {f"t{i}": txid for i, txid in enumerate(txids)}
    assert visible == [True] * 40
    assert commits.committed == 40
    assert commits.commits == len(set(txids)) < 40  # fewer transactions than transitions
    assert max(list(txids).count(t) for t in set(txids)) <= 10  # max_batch bounds a group


@pytest.mark.parametrize("bad", ["bad-sql", "bug-python"])
async def test_a_failing_transition_fails_alone_and_the_others_commit(
        database: Database, bad: str) -> None:
    await make_table(database)
    commits: GroupCommit[str, int] = GroupCommit(database, insert_all, connections=1,
                                                 max_batch=50)
    results = await asyncio.gather(commits.run("ok-0"), commits.run(bad), commits.run("ok-1"),
                                   return_exceptions=True)
    expected = DatabaseError if bad == "bad-sql" else RuntimeError
    assert isinstance(results[1], expected)
    stored = await rows(database)
    assert set(stored) == {"ok-0", "ok-1"}  # nothing of the failed one, both others
    assert stored["ok-0"] == results[0] and stored["ok-1"] == results[2]
    assert commits.retried == 1  # the group was rolled back and its members tried alone
    assert commits.committed == 2


async def test_items_with_one_key_never_share_a_group_and_keep_their_order(
        database: Database) -> None:
    await make_table(database)
    commits: GroupCommit[str, int] = GroupCommit(
        database, insert_all, key=lambda name: name.split("-")[0], connections=1,
        max_batch=50)
    names = ["a-1", "b-1", "a-2", "c-1", "a-3", "b-2"]
    txids = dict(zip(names, await asyncio.gather(*(commits.run(n) for n in names)),
                     strict=True))
    for key in "ab":
        mine = [txids[n] for n in names if n.startswith(key)]
        assert mine == sorted(mine) and len(set(mine)) == len(mine)  # in order, apart
    assert len(set(txids.values())) < len(names)  # different keys still share


async def test_each_transition_of_one_caller_sees_the_previous_committed(
        database: Database) -> None:
    await make_table(database)
    commits: GroupCommit[str, int] = GroupCommit(database, insert_all, connections=1,
                                                 max_batch=50)
    first = await commits.run("first")
    second = await commits.run("second")
    assert first != second  # a lone transition commits at once, waiting for nobody
    assert set(await rows(database)) == {"first", "second"}


async def test_a_backlog_grows_the_groups_from_min_batch_and_they_shrink_once_drained(
        database: Database) -> None:
    await make_table(database)
    commits: GroupCommit[str, int] = GroupCommit(database, insert_all, connections=2,
                                                 max_batch=20, min_batch=4)
    txids = await asyncio.gather(*(commits.run(f"t{i}") for i in range(60)))
    assert set(await rows(database)) == {f"t{i}" for i in range(60)}
    first_seen = list(dict.fromkeys(txids))  # groups in the order their members were queued
    sizes = [txids.count(t) for t in first_seen]
    # 60 waiting: the groups double from min_batch while transitions stay behind them, up to
    # max_batch (not one group of all that waits)
    assert sizes == [4, 8, 16, 20, 12]
    assert commits.cap == 4  # drained, no group in flight: back to min_batch
    more = await asyncio.gather(*(commits.run(f"u{i}") for i in range(10)))
    assert [more.count(t) for t in dict.fromkeys(more)] == [4, 6]


async def test_without_min_batch_a_free_connection_takes_all_that_waits(
        database: Database) -> None:
    await make_table(database)
    whole: GroupCommit[str, int] = GroupCommit(database, insert_all, connections=4,
                                               max_batch=100)
    txids = await asyncio.gather(*(whole.run(f"b{i}") for i in range(40)))
    assert len(set(txids)) == 1


async def test_a_caller_cancelled_while_its_group_runs_leaves_the_group_whole(
        database: Database) -> None:
    await make_table(database)
    entered, release = asyncio.Event(), asyncio.Event()

    async def held(connection: Any, names: Sequence[str]) -> list[int]:
        entered.set()
        await release.wait()
        return await insert_all(connection, names)

    commits: GroupCommit[str, int] = GroupCommit(database, held, connections=1, max_batch=10)
    tasks = [asyncio.create_task(commits.run(name)) for name in ("a", "b", "c")]
    await entered.wait()  # the three are in one group, its transaction open
    tasks[1].cancel()
    release.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(results[1], asyncio.CancelledError)
    # the cancelled caller's transition was handled with its group all the same
    assert await rows(database) == {"a": results[0], "b": results[0], "c": results[2]}
    assert commits.committed == 3 and commits.commits == 1


def test_bounds_are_checked() -> None:
    with pytest.raises(ValueError):
        GroupCommit(None, insert_all, connections=0)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        GroupCommit(None, insert_all, max_batch=8, min_batch=9)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        GroupCommit(None, insert_all, max_batch=8, min_batch=0)  # type: ignore[arg-type]
