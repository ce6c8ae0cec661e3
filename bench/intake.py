"""``herald bench intake``: events/s and latency through the HTTP intake beside its ceilings.

Starts ``herald run --role http`` (on the embedded Postgres in a temporary directory unless
``--database-url`` is given) and, in the same run and with the same load script, measures:

* the ceilings: the bare HTTP stack (:mod:`bench.bare_http`, Starlette + uvicorn on uvloop
  and httptools parsing the JSON and answering 202, no database) under the single-event load,
  and raw COPY into the same Postgres (:mod:`bench.copy_ceiling`) for the batch phase: into
  a bare table (the ceiling) and into tables of the log's shape (``copy_log``, the floor
  under the batch path on this schema);
* Herald with N keep-alive clients posting single events, then M clients posting batches;
  each phase and its ceiling take turns in ``--slices`` slices (the servers up throughout),
  so that the neighbours' changing load, and the database's own background work (autovacuum
  and checkpoints after Herald's inserts), fall on both alike;
* anchors: the latency of one durable commit into the same Postgres, and the bound it puts
  on single events at N clients; what waiting costs on this machine (:mod:`bench.wake_cost`:
  CPU per wake-up, a round trip between processes);
* where the CPU went in each phase and ceiling (``cpu``, :mod:`bench.cpu_account`): the
  server processes', the load client's (this process) and, on the embedded Postgres, the
  database's CPU per request, event or row, the share of the time each ran and waited for a
  CPU, and how busy the machine was. For single events it compares Herald's server with the
  bare stack's (``cpu_single_to_bare_http``): CPU per request, and the share of the time it ran.

Every event carries an id unique to its phase and run; afterwards every acknowledged event of
a measured phase must be in the database exactly once, and no event of a measured phase that
was not acknowledged may be (warm-up events are not counted). It prints a table on stderr and
one JSON line on stdout: the phases, ``ceilings`` and the ``ratios`` to them, and the check.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import uvloop

from bench.herald_process import HeraldProcess, create_key, free_port
from bench.intake_accounts import (
    Processes,
    cpu_report,
    postmaster_pid,
    print_cpu,
    server_comparison,
)
from bench.intake_phases import HOST, batch_and_copy, single_and_bare_http
from bench.listener_wakeups import idle_listeners
from bench.loadclient import percentile
from bench.wake_cost import wake_anchors

WRITERS_PER_SERVER = 2  # engine.intake.writer.EventWriter's writer tasks in each http process


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="herald bench intake", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", help="use this Postgres (default: embedded, temporary)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per phase")
    parser.add_argument("--warm-up", type=float, default=1.0,
                        help="seconds of unmeasured load before each single-event phase")
    parser.add_argument("--slices", type=int, default=5,
                        help="each phase and its ceiling (the bare stack, raw COPY) take turns "
                             "in this many slices each (same neighbours' load for both)")
    parser.add_argument("--concurrency", type=int, default=64,
                        help="clients posting single events")
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--batch-concurrency", type=int, default=8,
                        help="clients posting batches (0: no batch phase)")
    parser.add_argument("--contacts", type=int, default=100_000, help="distinct contact ids")
    parser.add_argument("--servers", type=int, default=1,
                        help="HTTP server processes sharing the port (SO_REUSEPORT)")
    parser.add_argument("--log", type=Path, help="write the server's log here")
    parser.add_argument("--copy-connections", type=int,
                        help="connections for the raw COPY ceiling of the batch phase (default: "
                             f"{WRITERS_PER_SERVER} per server process, as many as Herald's "
                             "intake writers commit on at once)")
    parser.add_argument("--no-single", action="store_true",
                        help="skip the single-event phase and its ceiling (batches only)")
    parser.add_argument("--no-log-floor", action="store_true",
                        help="skip raw COPY into tables of the log's shape (copy_log: the "
                             "event log's indexes and defaults and the id claims' table), "
                             "measured in turns with the batches and the bare COPY")
    parser.add_argument("--listeners", type=int, default=0,
                        help="idle LISTEN connections held in the database during the run, as "
                             "a full deployment's other processes hold about seven (Postgres "
                             "signals each of them on every NOTIFY)")
    args = parser.parse_args(argv)
    if args.listeners < 0:
        parser.error("--listeners must be 0 or more")
    if args.copy_connections is None:
        args.copy_connections = WRITERS_PER_SERVER * args.servers
    return args


# --- the check of what was acknowledged ------------------------------------------------------

async def verify(url: str, expected: dict[str, set[str]]) -> dict[str, Any]:
    """For each id prefix: acknowledged ids missing from the log, stored more than once, and
    stored without having been acknowledged."""
    connection = await asyncpg.connect(url)
    try:
        missing = duplicated = unacknowledged = acknowledged = 0
        for prefix, ids in expected.items():
            rows = await connection.fetch(
                "SELECT event_id, count(*) AS n FROM events WHERE starts_with(event_id, $1) "
                "GROUP BY event_id", prefix)
            stored = {row["event_id"] for row in rows}
            acknowledged += len(ids)
            missing += len(ids - stored)
            unacknowledged += len(stored - ids)
            duplicated += sum(1 for row in rows if row["n"] > 1)
    finally:
        await connection.close()
    return {"acknowledged_events": acknowledged, "missing": missing, "duplicated": duplicated,
            "stored_unacknowledged": unacknowledged,
            "ok": missing == duplicated == unacknowledged == 0}


# --- the durable-commit anchor --------------------------------------------------------------

async def measure_durable_commit(url: str, run: str, concurrency: int,
                                 commits: int = 200) -> dict[str, Any]:
    """One-row autocommitted INSERTs into a regular (WAL-logged) table of the same Postgres:
    the latency of one durable commit. With ``concurrency`` clients each waiting for its own
    acknowledgement, a group commit acknowledges at most ``concurrency`` requests per commit,
    so ``concurrency / p50`` bounds the single-event rate however fast the rest is."""
    table = f"herald_bench_commit_{run.strip('-')}"
    connection = await asyncpg.connect(url)
    latencies = []
    try:
        await connection.execute(f"CREATE TABLE {table} (n int)")
        for n in range(commits):
            started = time.perf_counter()
            await connection.execute(f"INSERT INTO {table} VALUES ($1)", n)
            latencies.append(time.perf_counter() - started)
    finally:
        await connection.execute(f"DROP TABLE IF EXISTS {table}")
        await connection.close()
    p50 = percentile(latencies, 0.50)
    return {"commits": commits, "p50_ms": round(p50 * 1000, 2),
            "p99_ms": round(percentile(latencies, 0.99) * 1000, 2),
            "bound_requests_per_s": round(concurrency / p50, 1)}


# --- the run ---------------------------------------------------------------------------------

async def drive(port: int, key: str, args: argparse.Namespace, run: str, database_url: str,
                processes: Processes
                ) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]], dict[str, set[str]]]:
    """Herald's phases, each in turns with its ceiling; returns the ceilings and the phases with
    the ids each phase got acknowledged."""
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    ceilings: dict[str, dict[str, Any]] = {}
    phases: list[dict[str, Any]] = []
    acknowledged: dict[str, set[str]] = {}
    async with idle_listeners(database_url, args.listeners):
        if not args.no_single:
            ceilings["bare_http"], (summary, single, result) = await single_and_bare_http(
                port, headers, run, args, processes)
            phases.append(summary)
            acknowledged[single.prefix] = single.acknowledged_ids(result)

        if args.batch_concurrency > 0:
            copies, summary, (batch, result) = await batch_and_copy(
                port, headers, run, args, database_url, processes)
            ceilings.update(copies)
            phases.append(summary)
            acknowledged[batch.prefix] = batch.acknowledged_ids(result)
    return ceilings, phases, acknowledged


def ratio(value: float, ceiling: float) -> float | None:
    return round(value / ceiling, 3) if ceiling > 0 else None


def report(args: argparse.Namespace, ceilings: dict[str, dict[str, Any]],
           phases: list[dict[str, Any]], check: dict[str, Any],
           anchors: dict[str, dict[str, Any]] | None = None,
           cpu: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    single = next((p for p in phases if p["phase"] == "single"), None)
    batch = next((p for p in phases if p["phase"].startswith("batch")), None)
    bare, copy = ceilings.get("bare_http"), ceilings.get("copy")
    copy_log = ceilings.get("copy_log")
    ratios: dict[str, float | None] = {}
    if single is not None and bare is not None:
        ratios["single_to_bare_http"] = ratio(single["requests_per_s"], bare["requests_per_s"])
    if batch is not None and copy is not None:
        ratios["batch_to_copy"] = ratio(batch["events_per_s"], copy["rows_per_s"])
    if batch is not None and copy_log is not None:
        ratios["batch_to_copy_log"] = ratio(batch["events_per_s"], copy_log["rows_per_s"])
    summary: dict[str, Any] = {
        "bench": "intake",
        "servers": args.servers,
        "concurrency": args.concurrency,
        "listeners": args.listeners,
        "duration_s": args.duration,
        "ceilings": ceilings,
        "anchors": anchors or {},
        "phases": phases,
        "ratios": ratios,
        "bare_http_requests_per_s": bare["requests_per_s"] if bare else None,
        "single_requests_per_s": single["requests_per_s"] if single else None,
        "single_p50_ms": single["p50_ms"] if single else None,
        "single_p99_ms": single["p99_ms"] if single else None,
    }
    if batch is not None:
        summary.update(batch_events_per_s=batch["events_per_s"], batch_p50_ms=batch["p50_ms"],
                       batch_p99_ms=batch["p99_ms"])
    if copy is not None:
        summary.update(copy_ceiling_rows_per_s=copy["rows_per_s"],
                       batch_share_of_copy=ratios.get("batch_to_copy"))
    if copy_log is not None:
        summary.update(copy_log_rows_per_s=copy_log["rows_per_s"],
                       batch_share_of_copy_log=ratios.get("batch_to_copy_log"))
    if cpu is not None:
        summary["cpu"] = cpu
        summary["cpu_single_to_bare_http"] = server_comparison(cpu)
    summary["verification"] = check
    summary["all_acknowledged_stored"] = check["ok"]
    return summary


def print_table(ceilings: dict[str, dict[str, Any]], phases: list[dict[str, Any]],
                check: dict[str, Any], anchors: dict[str, dict[str, Any]],
                cpu: dict[str, dict[str, Any]]) -> None:
    shown = [*([ceilings["bare_http"]] if "bare_http" in ceilings else []), *phases]
    for phase in shown:
        print(f"{phase['phase']:>10}: {phase['requests_per_s']:>9} req/s "
              f"{phase['events_per_s']:>10} events/s  p50 {phase['p50_ms']} ms  "
              f"p99 {phase['p99_ms']} ms  other={phase['non_202']} errors={phase['errors']}",
              file=sys.stderr)
    if "copy" in ceilings:
        copy = ceilings["copy"]
        print(f"{'copy':>10}: {copy['rows_per_s']:>31.1f} rows/s (raw COPY, commit per 1,000 "
              f"rows, {copy['connections']} connections, in turns with the batches)",
              file=sys.stderr)
    if "copy_log" in ceilings:
        floor = ceilings["copy_log"]
        print(f"{'copy_log':>10}: {floor['rows_per_s']:>31.1f} rows/s (raw COPY of the ids and "
              "the rows into tables of the log's shape, the floor under the batch path)",
              file=sys.stderr)
    summary = report_ratios(ceilings, phases)
    print(f"ratios: {summary}; acknowledged {check['acknowledged_events']}, "
          f"missing {check['missing']}, duplicated {check['duplicated']}, stored unacknowledged "
          f"{check['stored_unacknowledged']}", file=sys.stderr)
    commit = anchors["durable_commit"]
    print(f"one durable commit: p50 {commit['p50_ms']} ms, p99 {commit['p99_ms']} ms; at this "
          f"concurrency single events cannot pass {commit['bound_requests_per_s']} req/s",
          file=sys.stderr)
    wake = anchors["wake"]
    print(f"waiting on this machine: {wake['wake_cpu_us_per_1ms_sleep']} µs of CPU per wake-up "
          f"from a 1 ms sleep, {wake['process_round_trip_us']} µs per round trip to another "
          "process", file=sys.stderr)
    print_cpu(cpu)


def report_ratios(ceilings: dict[str, dict[str, Any]],
                  phases: list[dict[str, Any]]) -> dict[str, float | None]:
    return report(argparse.Namespace(servers=0, concurrency=0, listeners=0, duration=0.0),
                  ceilings, phases, {"ok": True})["ratios"]


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="herald-bench-"))
    env = {"HERALD_DATA_DIR": str(workdir / "data"), "HERALD_ENGINE_LOG_LEVEL": "warning"}
    if args.database_url:
        env["HERALD_DATABASE_URL"] = args.database_url
    port = free_port()
    env["HERALD_HTTP_LISTEN"] = f"{HOST}:{port}"
    env["HERALD_HTTP_RATE_LIMIT_PER_SECOND"] = "0"
    env["HERALD_HTTP_REUSE_PORT"] = "true" if args.servers > 1 else "false"
    run = f"{uuid.uuid4().hex[:8]}-"  # ids unique to this run, even on a reused database
    servers = [HeraldProcess(["run", "--role", "http"], env, args.log)
               for _ in range(args.servers)]
    try:
        for server in servers:
            server.start()
        key = create_key(env, "events:write")
        database_url = args.database_url or _embedded_url(workdir / "data")
        processes = Processes([s.process.pid for s in servers if s.process is not None],
                              None if args.database_url else postmaster_pid(workdir / "data"))
        ceilings, phases, acknowledged = uvloop.run(drive(port, key, args, run, database_url,
                                                          processes))
        check = uvloop.run(verify(database_url, acknowledged))
        anchors = {"durable_commit": uvloop.run(
            measure_durable_commit(database_url, run, args.concurrency)),
            "wake": wake_anchors()}
    finally:
        for server in servers:
            if server.process is not None:
                server.stop()
    cpu = cpu_report(processes.accounts, ceilings, phases, args.batch_size)
    print_table(ceilings, phases, check, anchors, cpu)
    print(orjson.dumps(report(args, ceilings, phases, check, anchors, cpu)).decode())
    return 0 if check["ok"] else 1


def _embedded_url(data_dir: Path) -> str:
    from engine.embedded_postgres import start_embedded

    return start_embedded(data_dir).url


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
