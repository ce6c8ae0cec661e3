"""``herald bench e2e``: the whole path on loopback, under an open-loop fixed arrival rate.

Events are POSTed to ``herald run --role http`` at ``--rate`` per second for ``--duration``
seconds, each at its scheduled time whether or not earlier requests have been answered (open
loop: a slow server does not slow the load down, so no coordinated omission). Each event
triggers the bench workflow (``bench/e2e_config``: one transactional send per ``bench_order``
event) in ``herald run --role automation``, which renders the message and enqueues it;
``herald run --role mta`` signs it (RSA-2048 DKIM) and delivers it through ``[mta] route`` to
``bench/fault_sink.py``, which answers ``--tempfail`` of the attempts 451 (retried after
``--retry-initial``) and ``--permfail`` 550 (bounced). One process per role, as the systemd
units run them, on a temporary embedded Postgres (or ``--database-url``).

Latency is measured from each event's INTENDED send time (its slot in the schedule) to the
sink's 250 for its message: the message's Subject carries the event's sequence number and
intended time, and the sink records the time of each answer. Retried messages include their
backoff. Reported: sustained sends/s (250s during the load window over its length), latency
p50/p95/p99, CPU seconds and peak memory of each part (bench/resources.py) and the
database's growth (split by how long ``[retention]`` keeps it: the event log and its ids,
message bodies, the rest kept forever; bench/sizing.py plans the disk from it), WAL bytes and
WAL fsyncs over the run.

Prints a summary on stderr and one JSON line on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
import uvloop
from rich.console import Console
from rich.progress import Progress

from bench.args import OneLineParser, positive, positive_int, share
from bench.databases import database
from bench.e2e_database import (
    SETTLE_TIMEOUT,
    bench_key,
    database_figures,
    enqueue_times,
    queue_states,
    wait_settled,
)
from bench.herald_process import HeraldProcess, free_port, start_all
from bench.loadclient import percentile
from bench.open_loop import LoadOutcome, open_loop
from bench.resources import Part, PartUsage, ResourceSampler
from bench.sink_record import FaultSinkProcess, SinkRecord
from bench.sizing import BODIES, EVENTS, KEPT
from engine.values import parse_duration
from herald.database import migrate
from mta.dkim.keys import write_keypair

CONFIG = Path(__file__).resolve().parent / "e2e_config"
EVENT_TYPE = "bench_order"
ROLES = ("http", "automation", "mta")
POLL_SECONDS = 0.1
STDERR = Console(stderr=True)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = OneLineParser(prog="herald bench e2e", description=__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=positive, default=50.0, help="events per second")
    parser.add_argument("--duration", type=positive, default=30.0, help="seconds of load")
    parser.add_argument("--tempfail", type=share, default=0.05,
                        help="share of delivery attempts the sink answers 451")
    parser.add_argument("--permfail", type=share, default=0.02,
                        help="share of delivery attempts the sink answers 550")
    parser.add_argument("--retry-initial", default="2s",
                        help="[mta] retry_initial for the run (default 2s, so retries happen "
                             "within it; production default 5m)")
    parser.add_argument("--connections", type=positive_int, default=32,
                        help="HTTP connections the load generator may use at once")
    parser.add_argument("--drain-timeout", type=positive, default=120.0,
                        help="after the load, wait this long for the last answers")
    parser.add_argument("--warmup", type=int, default=20,
                        help="events sent and delivered before the measured window (not "
                             "counted: the first messages start the DKIM workers and caches)")
    parser.add_argument("--seed", type=int, default=1, help="the sink's random answers")
    parser.add_argument("--database-url", help="use this Postgres (default: embedded, "
                        "temporary; its CPU and memory are then not measured)")
    parser.add_argument("--log", type=Path, help="write Herald's logs here")
    parser.add_argument("--sink-record", type=Path,
                        help="keep the sink's answers here (JSON lines: seq, code, t)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    if args.tempfail + args.permfail >= 1:
        parser.error("--tempfail + --permfail must be < 1 (some mail must get through)")
    try:
        args.retry_initial_s = parse_duration(args.retry_initial)
    except ValueError as exc:
        parser.error(f"--retry-initial: {exc}")
    if args.warmup < 0:
        parser.error("--warmup must be >= 0")
    if args.rate * args.duration < 1:
        parser.error("--rate x --duration must schedule at least one event")
    return args


def event_body(run: str, seq: int, intended: float) -> bytes:
    return orjson.dumps({"type": EVENT_TYPE, "contact_id": f"{run}-{seq}",
                         "email": f"u{seq}@example.test", "id": f"{run}-{seq}",
                         "properties": {"seq": seq, "intended": f"{intended:.6f}"}})


async def post_events(port: int, token: str, args: argparse.Namespace, run_id: str,
                      progress: Progress | None, total: int, first_seq: int = 0) -> LoadOutcome:
    """``total`` bench events at ``--rate``, open loop (bench/open_loop.py)."""
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    return await open_loop(port, headers, "/v1/events", args.rate, total, args.connections,
                           lambda seq, intended: event_body(run_id, seq, intended), progress,
                           "events posted" if first_seq == 0 else "warm-up events", first_seq)


async def drain(record: SinkRecord, expected: set[int], timeout: float,
                progress: Progress | None, what: str = "messages answered 250/550") -> bool:
    """Wait until every acknowledged event's message has a final answer (250 or 550)."""
    task_id = progress.add_task(what, total=len(expected)) if progress else None
    deadline = time.monotonic() + timeout
    while True:
        record.poll()
        done = len(record.final() & expected)
        if progress is not None and task_id is not None:
            progress.update(task_id, completed=done)
        if done >= len(expected):
            return True
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(POLL_SECONDS)


def herald_env(url: str, http_port: int, sink_port: int, key_path: Path,
               retry_initial: float) -> dict[str, str]:
    return {
        "HERALD_DATABASE_URL": url, "HERALD_ENGINE_LOG_LEVEL": "warning",
        "HERALD_HTTP_LISTEN": f"127.0.0.1:{http_port}",
        "HERALD_HTTP_RATE_LIMIT_PER_SECOND": "0",
        "HERALD_HTTP_PUBLIC_URL": f"http://127.0.0.1:{http_port}",
        "HERALD_MTA_EHLO_NAME": "herald.bench.test",
        "HERALD_MTA_BOUNCE_DOMAIN": "bounces.bench.test",
        "HERALD_MTA_ROUTE": f"127.0.0.1:{sink_port}", "HERALD_MTA_SHAPING_FILE": "",
        "HERALD_MTA_RETRY_INITIAL": f"{retry_initial}s",
        "HERALD_MTA_DKIM": orjson.dumps([{"domain": "bench.test", "selector": "b1",
                                          "key_file": str(key_path)}]).decode(),
        "HERALD_AUTOMATION_WORKFLOWS_DIR": str(CONFIG / "workflows"),
        "HERALD_AUTOMATION_TEMPLATES_DIR": str(CONFIG / "templates"),
        "HERALD_AUTOMATION_FROM_ADDRESS": "Bench <news@bench.test>",
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the bench; the result as the JSON line's dict. The temporary directory (embedded
    Postgres, DKIM key, sink record) is removed afterwards."""
    workdir = Path(tempfile.mkdtemp(prefix="herald-bench-e2e-"))
    try:
        return _run(args, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    run_id = f"e2e-{uuid.uuid4().hex[:8]}"
    sink = FaultSinkProcess(args.sink_record or workdir / "sink.jsonl", args.tempfail,
                            args.permfail, args.seed)
    with database(args.database_url, workdir) as (url, postgres_pid):
        uvloop.run(migrate(url))
        token = uvloop.run(bench_key(url))
        key_path, _record = write_keypair("bench.test", "b1", "rsa", workdir / "dkim")
        sink.start()
        http_port = free_port()
        env = herald_env(url, http_port, sink.port, key_path, args.retry_initial_s)
        processes = {role: HeraldProcess(["run", "--role", role], env, args.log)
                     for role in ROLES}
        try:
            start_all(list(processes.values()))
            parts = [Part(f"herald-{role}", process.process.pid)
                     for role, process in processes.items() if process.process is not None]
            if postgres_pid is not None:
                parts.append(Part("postgres", postgres_pid))
            assert sink.process is not None
            parts += [Part("sink", sink.process.pid),
                      Part("load-generator", os.getpid(), descendants=False)]
            record = SinkRecord(sink.record)
            if args.warmup:
                uvloop.run(_warm_up(http_port, token, args, run_id, record))
            before = uvloop.run(database_figures(url))
            sampler = ResourceSampler(parts)
            sampler.start()
            load, drained = uvloop.run(_drive(http_port, token, args, run_id, record))
            # The sink answers before Herald records the outcome: let the queue settle.
            uvloop.run(wait_settled(url, SETTLE_TIMEOUT))
            usage = sampler.stop()
            after = uvloop.run(database_figures(url))
            states = uvloop.run(queue_states(url))
            enqueued = uvloop.run(enqueue_times(url, run_id))
        finally:
            for process in processes.values():
                if process.process is not None:
                    process.stop()
            sink.stop()
    record.poll()
    return summarise(args, load, record, drained, usage, before, after, states, enqueued,
                     postgres_pid is not None)


WARMUP_FIRST_SEQ = 1_000_000_000  # warm-up events' sequence numbers, apart from the measured


async def _warm_up(port: int, token: str, args: argparse.Namespace, run_id: str,
                   record: SinkRecord) -> None:
    progress = None if args.no_progress else Progress(console=STDERR, transient=True)
    if progress is not None:
        progress.start()
    try:
        load = await post_events(port, token, args, run_id, progress, args.warmup,
                                 WARMUP_FIRST_SEQ)
        if not await drain(record, load.acked, args.drain_timeout, progress,
                           "warm-up messages answered"):
            raise TimeoutError(f"the warm-up messages were not delivered in "
                               f"{args.drain_timeout:.0f}s")
    finally:
        if progress is not None:
            progress.stop()


async def _drive(port: int, token: str, args: argparse.Namespace, run_id: str,
                 record: SinkRecord) -> tuple[LoadOutcome, bool]:
    progress = None if args.no_progress else Progress(console=STDERR, transient=True)
    if progress is not None:
        progress.start()
    try:
        load = await post_events(port, token, args, run_id, progress,
                                 int(args.rate * args.duration))
        drained = await drain(record, load.acked, args.drain_timeout, progress)
    finally:
        if progress is not None:
            progress.stop()
    return load, drained


def latency_ms(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p95": None, "p99": None, "max": None}
    return {"p50": round(percentile(values, 0.50) * 1000, 1),
            "p95": round(percentile(values, 0.95) * 1000, 1),
            "p99": round(percentile(values, 0.99) * 1000, 1),
            "max": round(max(values) * 1000, 1)}


def summarise(args: argparse.Namespace, load: LoadOutcome, record: SinkRecord, drained: bool,
              usage: dict[str, PartUsage], before: dict[str, int], after: dict[str, int],
              states: dict[str, int], enqueued: dict[int, float],
              postgres_measured: bool) -> dict[str, Any]:
    window_end = load.started + args.duration
    accepted = {seq: t for seq, t in record.accepted.items() if seq in load.acked}
    in_window = sum(1 for t in accepted.values() if t <= window_end)
    latencies = [accepted[seq] - load.intended[seq] for seq in accepted]
    first_try = [accepted[seq] - load.intended[seq] for seq in accepted
                 if seq not in record.tempfailed]
    sends = len(accepted)
    last = max(accepted.values(), default=load.started)
    growth = after["bytes"] - before["bytes"]
    # The growth by how long [retention] keeps it (bench/sizing.py DATA_CLASSES): events and
    # their ids, message bodies, and the rest, kept forever.
    events = after["events_bytes"] - before["events_bytes"]
    bodies = after["body_bytes"] - before["body_bytes"]
    by_class = {EVENTS: events, BODIES: bodies, KEPT: growth - events - bodies}
    wal_bytes = after["wal_bytes"] - before["wal_bytes"]
    wal_syncs = after["wal_syncs"] - before["wal_syncs"]
    return {
        "bench": "e2e",
        "offered_events_per_s": args.rate,
        "duration_s": args.duration,
        "tempfail": args.tempfail,
        "permfail": args.permfail,
        "retry_initial_s": args.retry_initial_s,
        "dkim": "rsa-sha256 2048",
        "load_average_1m": round(os.getloadavg()[0], 2),
        "events_scheduled": len(load.intended),
        "events_acknowledged": len(load.acked),
        "http_statuses": {str(k): v for k, v in sorted(load.statuses.items())},
        "http_errors": load.errors,
        "ack_latency_ms": latency_ms(load.ack_latencies),
        "sends": sends,
        "bounced": len(record.bounced & load.acked),
        "deferrals": sum(1 for a in record.answers
                         if a["code"] == 451 and a["seq"] in load.acked),
        "duplicates_at_sink": sum(n for seq, n in record.duplicates.items()
                                  if seq in load.acked),
        "other_messages_at_sink": record.other,
        "unanswered": len(load.acked - record.final()),
        "drained": drained,
        "sends_per_s": round(in_window / args.duration, 1),
        "sends_per_s_overall": round(sends / max(last - load.started, 1e-9), 1),
        "drain_s": round(max(0.0, last - window_end), 2),
        "latency_ms": latency_ms(latencies),
        "latency_first_attempt_ms": latency_ms(first_try),
        # Where the time went: the intended send time -> the workflow's message committed to
        # the queue (HTTP intake + automation), then -> the sink's 250 (MTA, DKIM, retries).
        "to_enqueue_ms": latency_ms([enqueued[seq] - load.intended[seq] for seq in accepted
                                     if seq in enqueued]),
        "enqueue_to_250_ms": latency_ms([accepted[seq] - enqueued[seq] for seq in accepted
                                         if seq in enqueued]),
        "parts": {name: part.as_dict() for name, part in usage.items()},
        "postgres_measured": postgres_measured,
        "database": {"bytes_before": before["bytes"], "bytes_after": after["bytes"],
                     "growth_bytes": growth, "growth_by_class": by_class,
                     "wal_bytes": wal_bytes, "wal_syncs": wal_syncs,
                     "bytes_per_send": round(growth / sends, 1) if sends else None,
                     "wal_bytes_per_send": round(wal_bytes / sends, 1) if sends else None,
                     "wal_syncs_per_send": round(wal_syncs / sends, 3) if sends else None},
        "queue_states": states,
    }


def print_summary(result: dict[str, Any]) -> None:
    from rich.table import Table

    latency = result["latency_ms"]
    STDERR.print(
        f"e2e: {result['events_acknowledged']}/{result['events_scheduled']} events at "
        f"{result['offered_events_per_s']}/s for {result['duration_s']}s -> "
        f"{result['sends']} sent (250), {result['bounced']} bounced (550), "
        f"{result['deferrals']} deferrals (451); sustained {result['sends_per_s']} sends/s; "
        f"event->250 p50 {latency['p50']} ms, p95 {latency['p95']} ms, p99 {latency['p99']} ms"
        + ("" if result["drained"] else f"; {result['unanswered']} NOT answered in time")
        + f" (event->queued p50 {result['to_enqueue_ms']['p50']} ms, queued->250 p50 "
        f"{result['enqueue_to_250_ms']['p50']} ms)")
    table = Table("part", "CPU s", "CPU ms/send", "peak memory MiB", "processes")
    for name, part in result["parts"].items():
        per_send = (f"{part['cpu_s'] * 1000 / result['sends']:.2f}" if result["sends"]
                    else "-")
        table.add_row(name, f"{part['cpu_s']:.2f}", per_send,
                      f"{part['peak_memory_mib']} ({part['memory']})",
                      str(part["peak_processes"]))
    STDERR.print(table)
    db = result["database"]
    split = ", ".join(f"{name} {value / max(result['sends'], 1):,.0f}" for name, value in
                      db["growth_by_class"].items())
    STDERR.print(f"database: +{db['growth_bytes'] / 1e6:.1f} MB ({db['bytes_per_send']} B/send;"
                 f" {split}), WAL {db['wal_bytes_per_send']} B/send, {db['wal_syncs_per_send']} "
                 "WAL fsyncs/send")


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    try:
        result = run(args)
    except (RuntimeError, TimeoutError, OSError) as exc:
        print(f"herald bench e2e: failed: {exc}", file=sys.stderr)
        return 1
    print_summary(result)
    print(orjson.dumps(result).decode())
    return 0 if result["drained"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
