"""``herald bench automation``: how fast the automation core evaluates, reacts and keeps time.

1. Evaluation (in this process, one core): N events over M contacts through the real core and
   trigger index with 100 workflows (the six shipped examples, replicated under other names),
   with a store that records fires but starts no runs: events/s and the index's memory. Its
   ceiling, in the same run over the very same events: the trigger index alone
   (:meth:`TriggerIndex.observe` and :meth:`TriggerIndex.fire_due`, no core, no store);
   ``core_share_of_index`` is the ratio. Events are generated in chunks outside the timed
   loops, so neither figure includes making them; both are timed in CPU seconds of this process
   (events/s per core, whatever else the machine runs). After each chunk the long-lived index is
   moved out of the cyclic collector's sight (``gc.freeze()``), as the live follower does after
   loading and after each snapshot: without it the collector re-walks millions of young index
   objects, which a follower that restored its index at start never has.
2. Reaction (live): ``herald run --role automation`` on a temporary embedded Postgres; events are
   committed at a steady rate and each must cause an email: event committed -> message enqueued
   p50/p99 for an immediate trigger (welcome-1 on signed_up).
3. Timers (live): a workflow that waits 3 s then sends; how late after its deadline each fires.
4. Throughput (live): ``--burst`` sign-ups committed at once, each one run transition (enter,
   send, wait): transitions/s; its anchor in the same run is single-row INSERTs committed one at
   a time into the same Postgres (``transitions_share_of_single_commits`` > 1 means group
   commit takes the engine past what one commit per transition could do).

Prints a table on stderr and one JSON line on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import random
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from itertools import islice
from pathlib import Path
from typing import Any

import orjson
import psutil
import uvloop

from automation.content.templates import TemplateSet
from automation.index.trigger_index import Fire, IndexEvent, TriggerIndex
from automation.loading.catalog import Catalog
from automation.loading.loader import load_workflows
from automation.runtime.core import AutomationCore
from automation.runtime.runs import Resume, Run
from bench.herald_process import HeraldProcess
from engine import gc_policy
from engine.database import connect_one
from engine.eventlog import LogEvent, append_events

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "config" / "workflows"
TEMPLATES = REPO / "config" / "templates"
TYPES = ("page_viewed", "product_viewed", "cart_updated", "order_completed", "signed_up",
         "email_opened", "search", "login")
EVENT_CHUNK = 50_000


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="herald bench automation", description=__doc__)
    parser.add_argument("--contacts", type=int, default=1_000_000)
    parser.add_argument("--events", type=int, default=2_000_000)
    parser.add_argument("--workflows", type=int, default=100)
    parser.add_argument("--rate", type=float, default=200.0, help="live phase: events/s")
    parser.add_argument("--seconds", type=float, default=10.0, help="live phase length")
    parser.add_argument("--burst", type=int, default=4000,
                        help="live phase: sign-ups committed at once, for transitions/s")
    parser.add_argument("--skip-live", action="store_true")
    return parser.parse_args(argv)


def replicated_workflows(directory: Path, count: int) -> Path:
    """Copy the examples under new names until there are ``count`` workflow files."""
    sources = sorted(directory.glob("*.yaml"))
    out = Path(tempfile.mkdtemp(prefix="herald-bench-wf-"))
    for i in range(count):
        source = sources[i % len(sources)]
        (out / f"{source.stem}-{i:03d}.yaml").write_text(source.read_text())
    return out


class CountingStore:
    """Records fires; starts no runs (the evaluation phase measures the evaluator alone)."""

    def __init__(self) -> None:
        self.fires = 0

    async def start_run(self, fire: Fire, now: datetime) -> Run | None:
        self.fires += 1
        return None

    async def advance(self, run_id: int, resume: Resume, now: datetime) -> Run | None:
        return None

    async def exit_run(self, run_id: int, reason: str, now: datetime) -> None:
        return None

    async def active_runs(self) -> list[Run]:
        return []


def synthetic_events(contacts: int, count: int, seed: int = 7) -> Iterator[IndexEvent]:
    """Generated lazily, so the measured memory is the core's, not the input's."""
    rng = random.Random(seed)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    step = timedelta(days=90) / max(1, count)
    for i in range(count):
        kind = rng.choices(TYPES, weights=(30, 25, 10, 4, 2, 9, 10, 10))[0]
        properties: dict[str, Any] = {}
        if kind in ("product_viewed",):
            properties = {"sku": f"sku-{rng.randrange(500)}", "price": 20}
        elif kind == "cart_updated":
            sku = f"sku-{rng.randrange(500)}"
            properties = {"cart_id": f"cart-{rng.randrange(contacts)}",
                          "items": [{"sku": sku, "price": 20, "quantity": 1}]}
        elif kind == "order_completed":
            properties = {"cart_id": f"cart-{rng.randrange(contacts)}",
                          "amount": rng.randrange(10, 300)}
        elif kind == "page_viewed":
            properties = {"path": "/"}
        yield IndexEvent(f"c{rng.randrange(contacts)}", kind, properties, start + step * i,
                         i + 1)


def event_chunks(contacts: int, count: int, chunk: int = EVENT_CHUNK
                 ) -> Iterator[list[IndexEvent]]:
    events = synthetic_events(contacts, count)
    while batch := list(islice(events, chunk)):
        yield batch


def rss_now() -> int:
    """Current resident set size (bytes), from /proc (peak RSS where there is none)."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * resource.getpagesize()
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


async def core_pass(catalog: Catalog, args: argparse.Namespace) -> tuple[float, int, Any]:
    """The whole core (index, routing, entering runs) over the events: (seconds, fires, core)."""
    store = CountingStore()
    core = AutomationCore(catalog, TriggerIndex(catalog.ordered()), store)
    elapsed = 0.0
    for chunk in event_chunks(args.contacts, args.events):
        started = time.process_time()
        for event in chunk:
            await core.on_event(event, event.occurred_at)
        await core.on_time(chunk[-1].occurred_at)  # the clock moves on, as the runtime's does
        elapsed += time.process_time() - started
        gc.freeze()  # as the live follower does with the index it keeps
    return elapsed, store.fires, core


def index_pass(catalog: Catalog, args: argparse.Namespace) -> tuple[float, int]:
    """The ceiling: the trigger index alone over the same events: (seconds, fires)."""
    index = TriggerIndex(catalog.ordered())
    elapsed = 0.0
    fires = 0
    observe = index.observe
    for chunk in event_chunks(args.contacts, args.events):
        started = time.process_time()
        for event in chunk:
            fires += len(observe(event))
        fires += len(index.fire_due(chunk[-1].occurred_at))
        elapsed += time.process_time() - started
        gc.freeze()
    return elapsed, fires


async def evaluation_phase(args: argparse.Namespace) -> dict[str, Any]:
    gc_policy.tune()  # as the live role does
    templates = TemplateSet.load(TEMPLATES)
    directory = replicated_workflows(EXAMPLES, args.workflows)
    catalog = Catalog(load_workflows(directory, templates), templates)
    shutil.rmtree(directory, ignore_errors=True)
    gc.collect()
    rss_before = rss_now()
    core_seconds, fires, core = await core_pass(catalog, args)
    rss_after = rss_now()
    stats = core.index.stats()
    del core
    gc.collect()
    index_seconds, index_fires = index_pass(catalog, args)
    core_rate = args.events / core_seconds
    index_rate = args.events / index_seconds
    return {"workflows": len(catalog.current), "events": args.events,
            "contacts": args.contacts, "events_per_s": round(core_rate),
            "index_alone_events_per_s": round(index_rate),
            "core_share_of_index": round(core_rate / index_rate, 3),
            "fires": fires, "index_alone_fires": index_fires, "index_stats": stats,
            "max_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            "rss_growth_bytes": rss_after - rss_before}


PROBE_WORKFLOW = """
description: bench timer probe
reentry: always
trigger: {type: event, event: probe}
steps:
  - wait: 3s
  - id: probe
    send: probe
"""


def probe_directories(root: Path) -> tuple[Path, Path]:
    workflows = root / "workflows"
    templates = root / "templates"
    shutil.copytree(EXAMPLES, workflows)
    shutil.copytree(TEMPLATES, templates)
    (workflows / "timer-probe.yaml").write_text(PROBE_WORKFLOW)
    (templates / "probe").mkdir()
    (templates / "probe" / "subject.txt").write_text("probe")
    (templates / "probe" / "body.txt").write_text("probe {{ unsubscribe_url }}")
    return workflows, templates


class CpuMeter:
    """CPU seconds (user + system) of the engine process and of the Postgres server (the
    postmaster and every backend), between :meth:`start` and :meth:`stop`: where the burst's
    CPU goes, per transition."""

    def __init__(self, engine_pid: int | None, pgdata: Path | None) -> None:
        self.engine_pid = engine_pid
        self.postmaster_pid: int | None = None
        if pgdata is not None and (pgdata / "postmaster.pid").exists():
            self.postmaster_pid = int((pgdata / "postmaster.pid").read_text().split()[0])
        self._start: dict[str, dict[int, float]] = {}

    def _read(self) -> dict[str, dict[int, float]]:
        parts: dict[str, dict[int, float]] = {"engine": {}, "postgres": {}}
        for part, pid in (("engine", self.engine_pid), ("postgres", self.postmaster_pid)):
            if pid is None:
                continue
            try:
                root = psutil.Process(pid)
                processes = [root, *root.children(recursive=True)] if part == "postgres" \
                    else [root]
            except psutil.Error:
                continue
            for process in processes:
                try:
                    times = process.cpu_times()
                except psutil.Error:
                    continue
                parts[part][process.pid] = times.user + times.system
        return parts

    def start(self) -> None:
        self._start = self._read()

    def stop(self) -> dict[str, float]:
        """CPU seconds per part since :meth:`start` (processes started since count whole)."""
        end = self._read()
        return {part: sum(seconds - self._start.get(part, {}).get(pid, 0.0)
                          for pid, seconds in pids.items())
                for part, pids in end.items()}


async def live_phase(url: str, rate: float, seconds: float, burst: int,
                     meter: CpuMeter | None = None) -> dict[str, Any]:
    connection = await connect_one(url)
    try:
        started = time.monotonic()
        sent = 0
        while time.monotonic() - started < seconds:
            due = int((time.monotonic() - started) * rate) - sent
            batch = []
            for _ in range(max(0, due)):
                kind = "signed_up" if sent % 2 == 0 else "probe"
                batch.append(LogEvent(kind, f"live-{sent}", f"live{sent}@example.test", {},
                                      datetime.now(UTC), "bench"))
                sent += 1
            if batch:
                await post(connection, batch)
            await asyncio.sleep(0.01)
        expected = sent
        # The burst below must not queue behind a backlog of this phase: wait (bounded) until
        # every reaction is queued; what is still missing then is reported as the backlog.
        deadline = time.monotonic() + 120
        done = 0
        while time.monotonic() < deadline:
            done = await connection.fetchval(
                "SELECT count(*) FROM outbound_messages WHERE contact_id LIKE 'live-%'")
            if done >= expected:
                break
            await asyncio.sleep(0.2)
        reaction = await connection.fetch(
            """SELECT extract(epoch FROM m.created_at - e.received_at) * 1000 AS ms
               FROM outbound_messages m JOIN events e
                 ON e.contact_id = m.contact_id AND e.type = 'signed_up'
               WHERE m.metadata->>'step' = 'welcome-1' AND m.contact_id LIKE 'live-%'
               ORDER BY 1""")
        lateness = await connection.fetch(
            """SELECT extract(epoch FROM l.at - (r.entered_at + interval '3 seconds')) * 1000
                      AS ms
               FROM workflow_log l JOIN workflow_runs r ON r.id = l.run_id
               WHERE r.workflow = 'timer-probe' AND l.action = 'sent' ORDER BY 1""")
        burst_result = await burst_phase(connection, burst, meter) if burst else None
        anchor = await commit_anchor(connection)
    finally:
        await connection.close()

    def pct(rows: list[Any], p: float) -> float | None:
        values = [float(r["ms"]) for r in rows]
        return round(values[min(len(values) - 1, int(p * (len(values) - 1)))], 1) \
            if values else None

    return {"events": expected, "rate": rate, "backlog_at_burst": max(0, expected - done),
            "reaction_count": len(reaction), "reaction_p50_ms": pct(reaction, 0.5),
            "reaction_p99_ms": pct(reaction, 0.99),
            "timers": len(lateness), "timer_late_p50_ms": pct(lateness, 0.5),
            "timer_late_p99_ms": pct(lateness, 0.99),
            "timer_late_max_ms": pct(lateness, 1.0), "burst": burst_result,
            "single_commit_inserts_per_s": anchor,
            "transitions_share_of_single_commits":
                None if burst_result is None or not burst_result["transitions_per_s"]
                else round(burst_result["transitions_per_s"] / anchor, 2)}


async def post(connection: Any, batch: list[LogEvent]) -> None:
    async with connection.transaction():
        await connection.executemany(
            "INSERT INTO contacts (contact_id, email) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            [(event.contact_id, event.email) for event in batch])
        await append_events(connection, batch)


async def burst_phase(connection: Any, count: int, meter: CpuMeter | None = None
                      ) -> dict[str, Any]:
    """``count`` sign-ups committed at once: each is one run transition (enter, send
    welcome-1, wait); transitions/s from the commit of the events to the last message, and
    the CPU the engine and Postgres spent meanwhile, per transition (this bench's own polling
    included in Postgres's: one count a tenth of a second)."""
    now = datetime.now(UTC)
    if meter is not None:
        meter.start()
    posted = time.monotonic()
    await post(connection, [LogEvent("signed_up", f"burst-{i}", f"burst{i}@example.test", {},
                                     now, "bench") for i in range(count)])
    deadline = time.monotonic() + 120
    done = 0
    while time.monotonic() < deadline:
        done = await connection.fetchval(
            "SELECT count(*) FROM outbound_messages WHERE contact_id LIKE 'burst-%'")
        if done >= count:
            break
        await asyncio.sleep(0.1)
    observed = time.monotonic() - posted
    cpu = meter.stop() if meter is not None else {}
    span = await connection.fetchval(
        """SELECT extract(epoch FROM (SELECT max(created_at) FROM outbound_messages
                                      WHERE contact_id LIKE 'burst-%')
                                   - (SELECT min(received_at) FROM events
                                      WHERE contact_id LIKE 'burst-%'))""")
    # created_at defaults to now(), the start of the transaction: one value per commit.
    transactions = await connection.fetchval(
        "SELECT count(DISTINCT created_at) FROM outbound_messages "
        "WHERE contact_id LIKE 'burst-%'")
    return {"transitions": done, "seconds": round(float(span or 0), 3),
            "transitions_per_s": round(done / float(span)) if span else None,
            # from the post's start to this process seeing the last message (polled every
            # 0.1 s): a lower bound that includes the last group's own time, which the
            # created_at span above (a transaction's start) leaves out
            "transitions_per_s_observed": round(done / observed) if observed else None,
            "transitions_per_commit": round(done / transactions, 1) if transactions else None,
            **{f"{part}_cpu_ms_per_transition": round(1000 * seconds / done, 3)
               for part, seconds in cpu.items() if done}}


async def commit_anchor(connection: Any, seconds: float = 2.0) -> int:
    """Single-row INSERTs, one commit each, into the same Postgres: what one commit per
    transition would allow at best (group commit is how the engine gets past it)."""
    # A real table (a temporary one is not WAL-logged): each commit flushes the WAL.
    await connection.execute("CREATE TABLE IF NOT EXISTS bench_commit_anchor (n int)")
    started = time.monotonic()
    count = 0
    while time.monotonic() - started < seconds:
        await connection.execute("INSERT INTO bench_commit_anchor VALUES ($1)", count)
        count += 1
    await connection.execute("DROP TABLE bench_commit_anchor")
    return round(count / (time.monotonic() - started))


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    evaluation = uvloop.run(evaluation_phase(args))
    print(f"evaluation: {evaluation['events_per_s']} events/s over {evaluation['contacts']} "
          f"contacts, {evaluation['workflows']} workflows; the index alone "
          f"{evaluation['index_alone_events_per_s']} events/s (core at "
          f"{evaluation['core_share_of_index']:.0%} of it); max RSS "
          f"{evaluation['max_rss_bytes'] / 2**20:.0f} MiB", file=sys.stderr)
    live: dict[str, Any] | None = None
    if not args.skip_live:
        root = Path(tempfile.mkdtemp(prefix="herald-bench-auto-"))
        workflows, templates = probe_directories(root)
        from engine.embedded_postgres import start_embedded

        embedded = start_embedded(root / "data")
        env = {"HERALD_DATABASE_URL": embedded.url, "HERALD_ENGINE_LOG_LEVEL": "warning",
               "HERALD_AUTOMATION_WORKFLOWS_DIR": str(workflows),
               "HERALD_AUTOMATION_TEMPLATES_DIR": str(templates),
               "HERALD_AUTOMATION_FROM_ADDRESS": "Bench <news@bench.test>",
               "HERALD_AUTOMATION_FREQUENCY_CAP": "1000",
               "HERALD_HTTP_PUBLIC_URL": "https://mail.bench.test"}  # sends need it
        engine = HeraldProcess(["run", "--role", "automation"], env)
        try:
            engine.start()
            assert engine.process is not None
            meter = CpuMeter(engine.process.pid, embedded.data_dir)
            live = uvloop.run(live_phase(embedded.url, args.rate, args.seconds, args.burst,
                                         meter))
        finally:
            if engine.process is not None:
                engine.stop()
            embedded.stop()
        print(f"live: event->enqueue p50 {live['reaction_p50_ms']} ms, p99 "
              f"{live['reaction_p99_ms']} ms; timers late p50 {live['timer_late_p50_ms']} ms, "
              f"p99 {live['timer_late_p99_ms']} ms", file=sys.stderr)
        if live["burst"]:
            print(f"live: burst of {live['burst']['transitions']} sign-ups at "
                  f"{live['burst']['transitions_per_s']} transitions/s; single-row commits "
                  f"{live['single_commit_inserts_per_s']}/s; CPU per transition: engine "
                  f"{live['burst'].get('engine_cpu_ms_per_transition')} ms, Postgres "
                  f"{live['burst'].get('postgres_cpu_ms_per_transition')} ms", file=sys.stderr)
    print(orjson.dumps({"bench": "automation", "evaluation": evaluation, "live": live}).decode())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
