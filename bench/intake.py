"""``herald bench intake``: events/s and latency through the HTTP intake, every event durable.

Starts ``herald run --role http`` (on the embedded Postgres in a temporary directory unless
``--database-url`` is given), then drives it on loopback with N keep-alive clients posting
single events, then M clients posting batches. It checks that every acknowledged event is in
the database, and prints a table on stderr and one JSON line on stdout.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import tempfile
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import uvloop

from bench.copy_ceiling import copy_rate
from bench.herald_process import HeraldProcess, create_key, free_port
from bench.loadclient import percentile, run_load


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="herald bench intake", description=__doc__)
    parser.add_argument("--database-url", help="use this Postgres (default: embedded, temporary)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per phase")
    parser.add_argument("--concurrency", type=int, default=64,
                        help="clients posting single events")
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--batch-concurrency", type=int, default=8,
                        help="clients posting batches")
    parser.add_argument("--contacts", type=int, default=100_000, help="distinct contact ids")
    parser.add_argument("--servers", type=int, default=1,
                        help="HTTP server processes sharing the port (SO_REUSEPORT)")
    parser.add_argument("--log", type=Path, help="write the server's log here")
    parser.add_argument("--copy-connections", type=int, default=2,
                        help="connections for the raw COPY ceiling of the batch phase")
    parser.add_argument("--no-single", action="store_true",
                        help="skip the single-event phase (batches and their ceiling only)")
    return parser.parse_args(argv)


def summarise(name: str, result: Any, elapsed: float, events_per_request: int) -> dict[str, Any]:
    ok = result.statuses.get(202, 0)
    return {
        "phase": name,
        "requests": ok,
        "requests_per_s": round(ok / elapsed, 1),
        "events_per_s": round(ok * events_per_request / elapsed, 1),
        "p50_ms": round(percentile(result.latencies, 0.50) * 1000, 2),
        "p99_ms": round(percentile(result.latencies, 0.99) * 1000, 2),
        "non_202": {str(k): v for k, v in result.statuses.items() if k != 202},
        "errors": result.errors,
    }


async def drive(port: int, key: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    counter = itertools.count()

    def single(worker: int) -> bytes:
        n = next(counter)
        return orjson.dumps({"type": "product_viewed", "contact_id": f"c{n % args.contacts}",
                             "id": f"s-{n}", "properties": {"sku": f"sku-{n % 500}",
                                                            "price": 19.9}})

    def batch(worker: int) -> bytes:
        events = []
        for _ in range(args.batch_size):
            n = next(counter)
            events.append({"type": "page_viewed", "contact_id": f"c{n % args.contacts}",
                           "id": f"b-{n}", "properties": {"path": f"/p/{n % 1000}"}})
        return orjson.dumps({"events": events})

    # Warm up connections and caches briefly, not measured.
    await run_load("127.0.0.1", port, headers, 8, 1.0, single, "/v1/events")
    phases = []
    if not args.no_single:
        result, elapsed = await run_load("127.0.0.1", port, headers, args.concurrency,
                                         args.duration, single, "/v1/events")
        phases.append(summarise("single", result, elapsed, 1))
    result, elapsed = await run_load("127.0.0.1", port, headers, args.batch_concurrency,
                                     args.duration, batch, "/v1/events")
    phases.append(summarise(f"batch{args.batch_size}", result, elapsed, args.batch_size))
    return phases


async def count_events(url: str) -> int:
    connection = await asyncpg.connect(url)
    try:
        return int(await connection.fetchval("SELECT count(*) FROM events"))
    finally:
        await connection.close()


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="herald-bench-"))
    env = {"HERALD_DATA_DIR": str(workdir / "data"), "HERALD_ENGINE_LOG_LEVEL": "warning"}
    if args.database_url:
        env["HERALD_DATABASE_URL"] = args.database_url
    port = free_port()
    env["HERALD_HTTP_LISTEN"] = f"127.0.0.1:{port}"
    env["HERALD_HTTP_RATE_LIMIT_PER_SECOND"] = "0"
    env["HERALD_HTTP_REUSE_PORT"] = "true" if args.servers > 1 else "false"
    servers = [HeraldProcess(["run", "--role", "http"], env, args.log)
               for _ in range(args.servers)]
    for server in servers:
        server.start()
    try:
        key = create_key(env, "events:write")
        phases = uvloop.run(drive(port, key, args))
        database_url = args.database_url or _embedded_url(workdir / "data")
        stored = uvloop.run(count_events(database_url))
        # The batch phase's ceiling, measured in the same run on the same Postgres.
        copy_per_s = uvloop.run(copy_rate(database_url, args.duration, args.copy_connections,
                                          args.contacts))
    finally:
        for server in servers:
            server.stop()
    acknowledged = sum(p["requests"] * (1 if p["phase"] == "single" else args.batch_size)
                       for p in phases)
    single_phase = phases[0] if phases[0]["phase"] == "single" else None
    batch_phase = phases[-1]
    for phase in phases:
        print(f"{phase['phase']:>10}: {phase['requests_per_s']:>9} req/s "
              f"{phase['events_per_s']:>10} events/s  p50 {phase['p50_ms']} ms  "
              f"p99 {phase['p99_ms']} ms  other={phase['non_202']} errors={phase['errors']}",
              file=sys.stderr)
    print(f"{'copy':>10}: {copy_per_s:>31.1f} rows/s (raw COPY, commit per 1,000 rows, "
          f"{args.copy_connections} connections); batch/copy "
          f"{phases[-1]['events_per_s'] / copy_per_s:.0%}", file=sys.stderr)
    summary = {
        "bench": "intake",
        "servers": args.servers,
        "phases": phases,
        "single_requests_per_s": single_phase["requests_per_s"] if single_phase else None,
        "single_p50_ms": single_phase["p50_ms"] if single_phase else None,
        "single_p99_ms": single_phase["p99_ms"] if single_phase else None,
        "batch_events_per_s": batch_phase["events_per_s"],
        "batch_p50_ms": batch_phase["p50_ms"],
        "batch_p99_ms": batch_phase["p99_ms"],
        "copy_ceiling_rows_per_s": round(copy_per_s, 1),
        "batch_share_of_copy": round(batch_phase["events_per_s"] / copy_per_s, 3),
        "acknowledged_events": acknowledged,
        "stored_events_at_least": stored,
        "all_acknowledged_stored": stored >= acknowledged,
    }
    print(orjson.dumps(summary).decode())
    return 0 if summary["all_acknowledged_stored"] else 1


def _embedded_url(data_dir: Path) -> str:
    from engine.embedded_postgres import start_embedded

    return start_embedded(data_dir).url


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
