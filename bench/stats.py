"""``herald bench stats``: the stats call with millions of events in the log.

1. Fills the event log with ``--events`` rows in SQL (``generate_series``, a chunk per
   transaction): half behavioural noise, half mail outcomes of ``--workflows`` workflows
   (deliveries, human and machine opens and clicks, bounces, unsubscribes, complaints) and goal
   events, spread over ``--days`` days; plus the decision log's ``entered``/``sent`` rows.
2. Anchor: reading the same log with :func:`engine.eventlog_reader.read_after` alone (no
   counting), over the first ``--anchor-events`` rows.
3. Lets the stats follower catch up through its own code path (``StatsFollower.settle``) and
   reports the rate (log rows/s).
4. Starts ``herald run --role http`` and times ``--calls`` sequential keep-alive calls of
   ``GET /v1/workflows/{name}/stats`` (and with ``?since=`` half-way through the days)
   against the same number of ``GET /v1/workflows`` (answered from memory: the HTTP floor)
   in the same run. The goal: under 100 ms.

Uses the embedded Postgres in a temporary directory unless ``--database-url`` is given (a
server others use may hold transactions open, which holds the follower back).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import uvloop

from automation.stats.follower import StatsFollower
from automation.stats.settings import StatsSettings
from bench.databases import migrated_database
from bench.herald_process import HeraldProcess, create_key, free_port
from engine.database import Database, connect_one
from engine.eventlog_reader import LogCursor, read_after

TARGET_MS = 100.0
START = datetime(2026, 1, 1, tzinfo=UTC)

# i -> one event. Every 20 consecutive i are one message m = i / 20 (its outcomes and
# engagement, a goal event of its contact) and noise.
FILL_EVENTS = """
    INSERT INTO events (type, contact_id, properties, occurred_at, source)
    SELECT t.type, 'c' || (i / 20 % $3),
           CASE WHEN t.type LIKE 'email_%' THEN jsonb_build_object(
                    'message_id', 'm' || (i / 20), 'workflow', 'wf' || (i / 20 % $4),
                    'step', 's' || (i / 20 / $4 % $5), 'run_id', i / 20,
                    'machine', i % 20 IN (10, 13))
                WHEN t.type = 'order_completed' THEN jsonb_build_object('amount', i % 100)
                ELSE jsonb_build_object('url', '/p/' || (i % 1000)) END,
           $6::timestamptz + make_interval(secs => i * $7::float8),
           'bench'
    FROM generate_series($1::bigint, $2::bigint) AS i,
         LATERAL (SELECT CASE
             WHEN i % 20 = 8 THEN 'email_delivered'
             WHEN i % 20 IN (9, 10, 11) THEN 'email_opened'
             WHEN i % 20 IN (12, 13) THEN 'email_clicked'
             WHEN i % 20 = 14 THEN 'order_completed'
             WHEN i % 20 = 15 AND i / 20 % 2 = 0 THEN 'email_bounced'
             WHEN i % 20 = 16 AND i / 20 % 10 = 0 THEN 'email_unsubscribed'
             WHEN i % 20 = 17 AND i / 20 % 50 = 0 THEN 'email_complained'
             WHEN i % 20 >= 18 THEN 'product_viewed'
             ELSE 'page_viewed' END AS type) AS t
"""

FILL_DECISIONS = """
    INSERT INTO workflow_log (at, workflow, contact_id, run_id, step, action, detail)
    SELECT $5::timestamptz + make_interval(secs => m * 20 * $6::float8),
           'wf' || (m % $3), 'c' || (m % $7), m,
           CASE WHEN a = 'sent' THEN 's' || (m / $3 % $4) END, a, ''
    FROM generate_series($1::bigint, $2::bigint) AS m,
         LATERAL unnest(CASE WHEN m / $3 % $4 = 0 THEN ARRAY['entered', 'sent']
                        ELSE ARRAY['sent'] END) AS a
"""


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="herald bench stats", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", help="use this Postgres (default: embedded, temporary)")
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--workflows", type=int, default=10)
    parser.add_argument("--steps", type=int, default=4, help="send steps per workflow")
    parser.add_argument("--contacts", type=int, default=200_000)
    parser.add_argument("--days", type=int, default=180, help="the log spans this many days")
    parser.add_argument("--chunk", type=int, default=500_000, help="rows per fill transaction")
    parser.add_argument("--read-batch", type=int, default=StatsSettings().read_batch)
    parser.add_argument("--anchor-events", type=int, default=1_000_000)
    parser.add_argument("--calls", type=int, default=500, help="timed calls per endpoint")
    parser.add_argument("--log", type=Path, help="write the server's log here")
    parser.add_argument("--no-fill", action="store_true",
                        help="with --database-url: keep the log as it is (an earlier fill) and "
                             "count it again from the start (the counters are reset)")
    args = parser.parse_args(argv)
    if args.no_fill and not args.database_url:
        parser.error("--no-fill needs --database-url")
    return args


# The partitioned log's size is its partitions' (the parent itself holds nothing).
EVENTS_SIZE = ("SELECT pg_size_pretty(coalesce(sum(pg_total_relation_size(relid)), 0)) "
               "FROM pg_partition_tree('events') WHERE isleaf")

async def reset_counters(url: str, args: argparse.Namespace) -> dict[str, Any]:
    connection = await asyncpg.connect(url)
    try:
        await connection.execute(
            "TRUNCATE workflow_stats, workflow_stats_seen, workflow_stats_last_click; "
            "UPDATE workflow_stats_state SET events_txid = 0, events_pos = 0, log_txid = 0, "
            "log_id = 0")
        events = await connection.fetchval("SELECT count(*) FROM events")
        decisions = await connection.fetchval(
            "SELECT count(*) FROM workflow_log WHERE action IN ('entered', 'sent')")
        size = await connection.fetchval(EVENTS_SIZE)
    finally:
        await connection.close()
    return {"events": events, "decisions": decisions, "fill_events_per_s": None,
            "events_table": size}


async def fill(url: str, args: argparse.Namespace) -> dict[str, Any]:
    connection = await asyncpg.connect(url)
    try:
        spacing = args.days * 86400.0 / max(args.events, 1)
        started = time.perf_counter()
        for first in range(0, args.events, args.chunk):
            last = min(first + args.chunk, args.events) - 1
            await connection.execute(FILL_EVENTS, first, last, args.contacts, args.workflows,
                                     args.steps, START, spacing)
            print(f"  filled {last + 1:,} events", file=sys.stderr, flush=True)
        events_seconds = time.perf_counter() - started
        messages = args.events // 20
        await connection.execute(FILL_DECISIONS, 0, max(messages - 1, 0), args.workflows,
                                 args.steps, START, spacing, args.contacts)
        await connection.execute("ANALYZE events")
        await connection.execute("ANALYZE workflow_log")
        decisions = await connection.fetchval(
            "SELECT count(*) FROM workflow_log WHERE action IN ('entered', 'sent')")
        size = await connection.fetchval(EVENTS_SIZE)
    finally:
        await connection.close()
    return {"events": args.events, "decisions": decisions,
            "fill_events_per_s": round(args.events / events_seconds), "events_table": size}


async def anchor_read(url: str, rows: int, batch: int) -> float:
    """Rows/s reading the log with the automation follower's reader and nothing else."""
    connection = await connect_one(url)  # with the jsonb codec the follower uses
    try:
        cursor, read = LogCursor(), 0
        started = time.perf_counter()
        while read < rows:
            events = await read_after(connection, cursor, batch)
            if not events:
                break
            read += len(events)
            cursor = events[-1].cursor
        return read / (time.perf_counter() - started)
    finally:
        await connection.close()


async def catch_up(url: str, batch: int) -> tuple[int, float]:
    database = await Database.connect(url, min_size=1, max_size=2)
    try:
        follower = StatsFollower(database, StatsSettings(read_batch=batch))
        started = time.perf_counter()
        moved = await follower.settle(timeout=6 * 3600)
        return moved, time.perf_counter() - started
    finally:
        await database.close()


async def time_calls(port: int, key: str, paths: dict[str, str],
                     calls: int) -> dict[str, dict[str, Any]]:
    results: dict[str, dict[str, Any]] = {}
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30.0,
                                 headers={"Authorization": f"Bearer {key}"}) as client:
        for name, path in paths.items():
            for _ in range(20):  # warm up: connections, caches, the key's lookup
                (await client.get(path)).raise_for_status()
            latencies = []
            for _ in range(calls):
                started = time.perf_counter()
                response = await client.get(path)
                latencies.append((time.perf_counter() - started) * 1000)
                response.raise_for_status()
            latencies.sort()
            results[name] = {"path": path, "calls": calls,
                             "median_ms": round(statistics.median(latencies), 2),
                             "p99_ms": round(latencies[int(0.99 * (len(latencies) - 1))], 2),
                             "max_ms": round(latencies[-1], 2)}
    return results


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="herald-bench-stats-"))
    try:
        with migrated_database(args.database_url or None, workdir) as url:
            summary = _measure(url, workdir, args)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return _report(summary)


def _measure(url: str, workdir: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Fill (or reset), catch up, and time the stats calls on a running http role."""
    if args.no_fill:
        filled = uvloop.run(reset_counters(url, args))
    else:
        print(f"filling {args.events:,} events ...", file=sys.stderr, flush=True)
        filled = uvloop.run(fill(url, args))
    anchor = uvloop.run(anchor_read(url, min(args.anchor_events, filled["events"]),
                                    args.read_batch))
    print(f"anchor: read_after alone {anchor:,.0f} rows/s; counting ...", file=sys.stderr,
          flush=True)
    moved, seconds = uvloop.run(catch_up(url, args.read_batch))
    env = {"HERALD_DATA_DIR": str(workdir / "run"), "HERALD_DATABASE_URL": url,
           "HERALD_ENGINE_LOG_LEVEL": "warning", "HERALD_HTTP_RATE_LIMIT_PER_SECOND": "0"}
    port = free_port()
    env["HERALD_HTTP_LISTEN"] = f"127.0.0.1:{port}"
    server = HeraldProcess(["run", "--role", "http"], env, args.log)
    server.start()
    try:
        key = create_key(env, "workflows:read")
        half = (START + timedelta(days=args.days // 2)).date()  # half the days counted
        calls = uvloop.run(time_calls(port, key, {
            "stats": "/v1/workflows/wf0/stats",
            "stats_since": f"/v1/workflows/wf0/stats?since={half.isoformat()}",
            "anchor_list_workflows": "/v1/workflows"}, args.calls))
    finally:
        server.stop()
    return {
        "bench": "stats", **filled,
        "catch_up_rows": moved, "catch_up_seconds": round(seconds, 1),
        "catch_up_rows_per_s": round(moved / seconds) if seconds else None,
        "anchor_read_rows_per_s": round(anchor),
        "calls": calls, "target_ms": TARGET_MS,
        "under_target": calls["stats"]["p99_ms"] < TARGET_MS
        and calls["stats_since"]["p99_ms"] < TARGET_MS,
    }


def _report(summary: dict[str, Any]) -> int:
    calls, moved, seconds = summary["calls"], summary["catch_up_rows"], summary["catch_up_seconds"]
    anchor = summary["anchor_read_rows_per_s"]
    for name, figures in calls.items():
        print(f"{name:>22}: median {figures['median_ms']} ms  p99 {figures['p99_ms']} ms  "
              f"max {figures['max_ms']} ms", file=sys.stderr)
    print(f"catch-up: {moved:,} rows in {seconds:.1f} s = {summary['catch_up_rows_per_s']:,} "
          f"rows/s (anchor: read alone {anchor:,.0f} rows/s)", file=sys.stderr)
    print(orjson.dumps(summary).decode())
    return 0 if summary["under_target"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
