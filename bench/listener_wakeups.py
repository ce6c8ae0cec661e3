"""``herald bench listener-wakeups``: what a NOTIFY in every commit costs Postgres, by the
number of connections LISTENing in the database.

Postgres (15, 16) signals every backend that LISTENs in the database on each NOTIFY, whatever
its channel, and each reads the notification queue. A full Herald deployment keeps about nine
such connections (each role's erasure listener, the automation's, the MTA's, the outbox's),
which is why the intake wakes the log's followers at most once per ``[intake]
notify_interval`` instead of in every commit (:mod:`engine.intake.log_wakeups`).

For each count of idle listeners (on a channel nobody notifies), one connection commits
``--commits`` one-row inserts into a scratch table, each an autocommitted statement, once
with a ``pg_notify`` in the statement (as the intake's commits did) and once without (as they
do now); the figure is the CPU of all the database's backends per commit, read from
``/proc/<pid>/schedstat`` (so Postgres must run on this machine: the embedded one unless
``--database-url``). Rounds alternate the variants; medians are reported, with the NOTIFY's
own cost and the cost per listener (the slope over the counts). Prints a table on stderr and
one JSON line on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
from collections.abc import AsyncIterator
from typing import Any

import asyncpg

from bench.args import OneLineParser, positive_int
from bench.databases import measure_on_migrated

CHANNEL_NOTIFIED = "herald_bench_notified"
CHANNEL_IDLE = "herald_bench_idle"  # the listeners' channel: never notified
TABLE = "herald_bench_listener_wakeups"
PLAIN = f"INSERT INTO {TABLE} VALUES (1)"
NOTIFYING = f"INSERT INTO {TABLE} SELECT 1 FROM pg_notify('{CHANNEL_NOTIFIED}', '')"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = OneLineParser(prog="herald bench listener-wakeups",
                           description=__doc__.split("\n")[0])
    parser.add_argument("--database-url", help="a Postgres on this machine (default: an "
                                               "embedded one in a temporary directory)")
    parser.add_argument("--listeners", default="0,1,4,9",
                        help="counts of idle listeners to measure, comma-separated")
    parser.add_argument("--commits", type=positive_int, default=2000,
                        help="commits per variant and round")
    parser.add_argument("--rounds", type=positive_int, default=3)
    args = parser.parse_args(argv)
    try:
        args.listeners = sorted({int(n) for n in args.listeners.split(",") if n.strip()})
    except ValueError:
        parser.error("--listeners: expected counts like 0,1,4,9")
    if not args.listeners or args.listeners[0] < 0:
        parser.error("--listeners: expected counts of 0 or more")
    return args


@contextlib.asynccontextmanager
async def idle_listeners(url: str, count: int) -> AsyncIterator[None]:
    """``count`` connections LISTENing on a channel nobody notifies, for the block (as a
    deployment's roles hold them; ``herald bench intake --listeners`` uses it too)."""
    connections = [await asyncpg.connect(url) for _ in range(count)]
    try:
        for connection in connections:
            await connection.add_listener(CHANNEL_IDLE, lambda *_: None)
        yield
    finally:
        for connection in connections:
            await connection.close()


async def execute_once(url: str, statement: str) -> None:
    """``statement`` on a connection of its own."""
    connection = await asyncpg.connect(url)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


def backend_cpu_ns(pids: list[int]) -> int:
    """The CPU time the backends have used, in nanoseconds (0 for one that is gone)."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/schedstat") as stats:
                total += int(stats.read().split()[0])
        except FileNotFoundError:
            pass
    return total


async def per_commit_us(url: str, listeners: int, statement: str, commits: int) -> float:
    """Postgres CPU per commit of ``statement`` while ``listeners`` connections LISTEN."""
    async with idle_listeners(url, listeners):
        return await _per_commit_us(url, statement, commits)


async def _per_commit_us(url: str, statement: str, commits: int) -> float:
    writer = await asyncpg.connect(url)
    try:
        pids = [row[0] for row in await writer.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()")]
        if backend_cpu_ns([await writer.fetchval("SELECT pg_backend_pid()")]) == 0:
            raise SystemExit("herald bench listener-wakeups: Postgres must run on this "
                             "machine (its backends' CPU is read from /proc)")
        for _ in range(min(200, commits)):  # warm: plans, buffers, the notification queue
            await writer.execute(statement)
        before = backend_cpu_ns(pids)
        for _ in range(commits):
            await writer.execute(statement)
        # the listeners' reads of the queue run after the last commit's signal
        await asyncio.sleep(0.2)
        return (backend_cpu_ns(pids) - before) / commits / 1000
    finally:
        await writer.execute(f"TRUNCATE {TABLE}")
        await writer.close()


async def run(args: argparse.Namespace, url: str) -> dict[str, Any]:
    await execute_once(url, f"CREATE TABLE IF NOT EXISTS {TABLE} (x int)")
    samples: dict[tuple[int, bool], list[float]] = {}
    try:
        for round_number in range(args.rounds):
            for listeners in args.listeners:
                variants = (True, False) if round_number % 2 == 0 else (False, True)
                for notify in variants:
                    samples.setdefault((listeners, notify), []).append(await per_commit_us(
                        url, listeners, NOTIFYING if notify else PLAIN, args.commits))
    finally:
        await execute_once(url, f"DROP TABLE IF EXISTS {TABLE}")
    rows = [{"listeners": listeners,
             "notify_us_per_commit": round(statistics.median(samples[listeners, True]), 1),
             "plain_us_per_commit": round(statistics.median(samples[listeners, False]), 1),
             "rounds_notify": [round(v, 1) for v in samples[listeners, True]],
             "rounds_plain": [round(v, 1) for v in samples[listeners, False]]}
            for listeners in args.listeners]
    counts = [row["listeners"] for row in rows]
    extra = [row["notify_us_per_commit"] - row["plain_us_per_commit"] for row in rows]
    slope = statistics.linear_regression(counts, extra).slope if len(rows) > 1 else None
    return {"bench": "listener-wakeups", "commits": args.commits, "rounds": args.rounds,
            "by_listeners": rows,
            "notify_us_with_no_listener": round(extra[0], 1) if counts[0] == 0 else None,
            "us_per_listener_per_notify": round(slope, 1) if slope is not None else None}


def print_table(result: dict[str, Any]) -> None:
    print("listeners  Postgres CPU µs per commit: with NOTIFY  without", file=sys.stderr)
    for row in result["by_listeners"]:
        print(f"{row['listeners']:>9}  {row['notify_us_per_commit']:>28}  "
              f"{row['plain_us_per_commit']:>7}", file=sys.stderr)
    print(f"a NOTIFY: {result['notify_us_with_no_listener']} µs with no listener, "
          f"{result['us_per_listener_per_notify']} µs more per listener", file=sys.stderr)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    return measure_on_migrated(args.database_url, lambda url: run(args, url), print_table)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
