"""``herald bench report``: a sizing report, in Markdown with PNG charts, from measured figures.

``herald bench report --daily-sends 1000000 --peak-factor 5 --out DIR`` runs ``herald bench
e2e`` (``--repeat`` times) and ``herald bench compare-postfix`` on this machine, saves their
JSON lines in ``DIR/results.jsonl``, and writes ``DIR/report.md`` with charts (throughput
against concurrency, latency percentiles, CPU per send and memory per part) and a
recommendation of cores, memory, disk and IOPS for that volume (bench/sizing.py: the per-send
figures of the median e2e run x the planned peak, with documented headroom).

``--from-results FILE...`` reads saved JSON lines (e.g. a previous ``results.jsonl``, or
``herald bench e2e ... > e2e.jsonl``) instead of running anything.

The disk follows ``[retention]``: the database's growth per send, split by e2e into the event
log (kept ``--events-days``), message bodies (``--bodies-days``) and what no retention drops
(message rows, attempts, the decision log: counted over ``--horizon-days``, default 365). The
two retention periods default to ``[retention]``'s defaults (400 and 30 days), or to the
``[retention]`` of ``--config FILE``; 0 keeps forever, as in the config. Saved results from
before e2e recorded the split are sized with one figure, every byte kept ``--retention-days``
(default 30), and the report says so.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from bench.args import OneLineParser, fail, int_list, number_in, positive, positive_int
from bench.sizing import (
    DEFAULT_HORIZON_DAYS,
    DEFAULT_RETENTION_DAYS,
    PRODUCTION_PARTS,
    Headroom,
    Load,
    Measured,
    Recommendation,
    RunRate,
    capacity_warnings,
    measured_from_e2e,
    median_measured,
    recommend,
)

PROG = "herald bench report"
MIB = 2**20


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = OneLineParser(prog=PROG, description=__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--daily-sends", type=positive, required=True,
                        help="messages to send per day")
    parser.add_argument("--peak-factor", type=number_in(1.0), default=5.0,
                        help="busiest hour's rate over the day's average (>= 1)")
    parser.add_argument("--events-days", type=number_in(0.0), default=None,
                        help="days the event log is kept (default: [retention] events of "
                             "--config, else 400; 0 = forever)")
    parser.add_argument("--bodies-days", type=number_in(0.0), default=None,
                        help="days message bodies are kept after their final state (default:"
                             " [retention] message_bodies of --config, else 30; 0 = forever)")
    parser.add_argument("--horizon-days", type=positive, default=DEFAULT_HORIZON_DAYS,
                        help="days of sends the disk must hold of what is kept forever "
                             "(message rows, attempts) and of anything kept longer")
    parser.add_argument("--config", type=Path,
                        help="a Herald config whose [retention] gives the events and bodies "
                             "days")
    parser.add_argument("--retention-days", type=positive, default=None,
                        help="only for saved results without the per-class split: days every "
                             f"database byte is kept (default {DEFAULT_RETENTION_DAYS:g})")
    parser.add_argument("--out", type=Path, required=True, help="directory for the report")
    parser.add_argument("--from-results", nargs="+", type=Path, metavar="FILE",
                        help="read saved bench JSON lines instead of running the benches")
    parser.add_argument("--rate", type=positive, default=50.0, help="e2e: events/s")
    parser.add_argument("--duration", type=positive, default=30.0, help="e2e: seconds")
    parser.add_argument("--repeat", type=positive_int, default=1,
                        help="runs of each bench (the report takes medians; 3 advised)")
    parser.add_argument("--sessions", type=int_list, default=[5, 20],
                        help="compare-postfix: smtp-source sessions, e.g. 5,20")
    parser.add_argument("--messages", type=positive_int, default=2000,
                        help="compare-postfix: messages per row")
    parser.add_argument("--no-compare", action="store_true",
                        help="skip compare-postfix (no throughput chart)")
    args = parser.parse_args(argv)
    for path in args.from_results or []:
        if not path.is_file():
            parser.error(f"--from-results: no such file: {path}")
    return args


def read_results(paths: list[Path]) -> list[dict[str, Any]]:
    """Every JSON object with a ``bench`` key, one per line, from ``paths``."""
    results = []
    for path in paths:
        try:
            lines = path.read_bytes().splitlines()
        except OSError as exc:
            fail(PROG, f"--from-results: cannot read {path}: {exc.strerror}")
        for number, line in enumerate(lines, 1):
            if not line.strip().startswith(b"{"):
                continue  # summaries and notes around the JSON line
            try:
                value = orjson.loads(line)
            except orjson.JSONDecodeError:
                fail(PROG, f"--from-results: {path}:{number}: not a JSON line")
            if isinstance(value, dict) and "bench" in value:
                results.append(value)
    return results


def run_benches(args: argparse.Namespace) -> list[dict[str, Any]]:
    from bench import compare_postfix, e2e

    results = []
    for _ in range(args.repeat):
        e2e_args = e2e.parse_args(["--rate", str(args.rate), "--duration", str(args.duration)])
        result = e2e.run(e2e_args)
        e2e.print_summary(result)
        results.append(result)
    if not args.no_compare:
        compare_args = compare_postfix.parse_args([
            "--messages", str(args.messages), "--repeat", str(args.repeat),
            "--sessions", ",".join(str(s) for s in args.sessions)])
        result = compare_postfix.run(compare_args)
        compare_postfix.print_summary(result)
        results.append(result)
    return results


def machine() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return {"cpus": os.cpu_count(), "cpu_model": model, "memory_gib": round(memory / 2**30, 1),
            "system": platform.platform()}


def retention_days(config: Path | None) -> tuple[float, float]:
    """[retention] events and message_bodies in days: the defaults, or those of ``config``.
    Raises engine.errors.ConfigError."""
    from herald.retention import DAY, RetentionSettings
    from herald.settings import load_settings

    settings = RetentionSettings() if config is None else load_settings(config, {}).retention
    return settings.events / DAY, settings.message_bodies / DAY


def write_report(results: list[dict[str, Any]], load: Load, out: Path,
                 headroom: Headroom | None = None, retention_days_given: bool = False
                 ) -> tuple[Path, Recommendation, list[str]]:
    """Charts and ``report.md`` in ``out``; returns the Markdown's path, the plan and its
    warnings. Raises ValueError when the results cannot size anything."""
    from bench import charts

    e2e_runs = [r for r in results if r.get("bench") == "e2e"]
    if not e2e_runs:
        raise ValueError("no herald bench e2e result: the report sizes from one "
                         "(herald bench e2e ... > e2e.jsonl, then --from-results e2e.jsonl)")
    measured = median_measured([measured_from_e2e(r) for r in e2e_runs])
    plan = recommend(load, measured, headroom)
    if retention_days_given and plan.disk_by_class:
        plan.notes.append("--retention-days is only for results without the per-class split;"
                          " these have it, so the disk follows the events, bodies and horizon"
                          " days instead")
    warnings = capacity_warnings(plan.peak_sends_per_s, [
        RunRate(r["offered_events_per_s"], r["sends_per_s"], r.get("permfail", 0.0))
        for r in e2e_runs])
    compare = [r for r in results if r.get("bench") == "compare-postfix"]
    rows = [row for r in compare for row in r["rows"]]
    out.mkdir(parents=True, exist_ok=True)
    images = {}
    if rows:
        charts.throughput_vs_concurrency(rows, out / "throughput.png")
        images["throughput"] = "throughput.png"
    charts.latency_percentiles(e2e_runs, out / "latency.png")
    charts.per_part({k: v * 1000 for k, v in measured.cpu_s_per_send.items()},
                    "CPU ms per send", "CPU per send, each part (median run)", out / "cpu.png")
    charts.per_part({k: v / MIB for k, v in measured.memory_bytes.items()},
                    "peak memory, MiB", "Peak memory, each part (median run)",
                    out / "memory.png")
    images.update(latency="latency.png", cpu="cpu.png", memory="memory.png")
    path = out / "report.md"
    path.write_text(render_markdown(plan, measured, e2e_runs, compare, images, machine(),
                                    datetime.now(UTC), warnings))
    return path, plan, warnings


def render_markdown(plan: Recommendation, measured: Measured, e2e_runs: list[dict[str, Any]],
                    compare: list[dict[str, Any]], images: dict[str, str],
                    host: dict[str, Any], now: datetime, warnings: list[str]) -> str:
    """The report's text (pure)."""
    load = plan.load
    if plan.disk_by_class:
        kept = (f"events kept {days(load.events_days)}, message bodies "
                f"{days(load.bodies_days)}, the rest (message rows, attempts) forever: disk "
                f"planned for {load.horizon_days:g} days")
        disk_from = ("sum over event log, bodies and the rest of (database bytes per send x "
                     f"sends x days kept, at most {load.horizon_days:g}) x "
                     f"{plan.headroom.disk_factor:g}")
    else:
        kept = f"every database byte kept {load.retention_days:g} days (see the note)"
        disk_from = (f"database bytes per send x sends x {load.retention_days:g} days x "
                     f"{plan.headroom.disk_factor:g}")
    lines = [
        "# Herald sizing report", "",
        f"Generated {now:%Y-%m-%d %H:%M} UTC on {host['cpus']} CPUs ({host['cpu_model'] or '?'}"
        f"), {host['memory_gib']} GiB, {host['system']}.", "",
        f"Plan: **{load.daily_sends:,.0f} sends a day**, peak factor {load.peak_factor:g}, "
        f"{kept} -> **{plan.peak_sends_per_s:.1f} sends/s at peak**.", "",
        "## Recommendation", "",
        *[f"> **Warning:** {warning}.\n" for warning in warnings],
        *[f"> **Note:** {note}.\n" for note in plan.notes],
        "| resource | recommended | from |", "|---|---|---|",
        f"| cores | **{plan.cores}** | {plan.busy_cores_at_peak:.2f} busy at peak / "
        f"{plan.headroom.cpu_target_utilisation:.0%} target |",
        f"| memory | **{plan.memory_gib} GiB** | peak of the parts x "
        f"{plan.headroom.memory_factor:g} |",
        f"| disk | **{plan.disk_gib} GiB** | {disk_from} |",
        f"| write IOPS | **{plan.iops}** | WAL fsyncs + written pages per send x peak / "
        f"{plan.headroom.iops_target_utilisation:.0%} target |",
        f"| write bandwidth | {plan.write_bytes_per_s / MIB:.2f} MiB/s | WAL bytes x 2 "
        "(WAL, then data files) x peak |", "",
        "How each figure was computed (bench/sizing.py; headroom factors documented there):",
        "",
        *[f"- {line}" for line in plan.lines], "",
        "Cores per part at peak (with headroom): " + ", ".join(
            f"{name} {value:.2f}" for name, value in plan.cores_per_part.items()) + ".", "",
        "The load generator and the sink are not counted: in production they are the "
        "applications posting events and the receiving mail servers.", "",
        "## Measured: the whole path (herald bench e2e)", "",
        "Events POSTed at a fixed rate (open loop), a workflow sends one email per event, "
        "DKIM-signed and delivered to a sink that answers a share of 451 and 550. Latency runs "
        "from each event's intended send time to the sink's 250.", "",
        "| run | events/s offered | sends/s sustained | p50 ms | p95 ms | p99 ms | "
        "event->queued p50 ms | queued->250 p50 ms | bounced | deferrals | load avg |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for index, run in enumerate(e2e_runs, 1):
        latency = run["latency_ms"]
        lines.append(f"| {index} | {run['offered_events_per_s']:g} | {run['sends_per_s']} | "
                     f"{latency['p50']} | {latency['p95']} | {latency['p99']} | "
                     f"{run.get('to_enqueue_ms', {}).get('p50', '?')} | "
                     f"{run.get('enqueue_to_250_ms', {}).get('p50', '?')} | {run['bounced']} | "
                     f"{run['deferrals']} | "
                     f"{run.get('load_average_1m', '?')} |")
    lines += ["", f"Per-send figures used ({measured.source}):", "",
              "| part | CPU ms per send | peak memory MiB |", "|---|---|---|"]
    for name, cpu in measured.cpu_s_per_send.items():
        lines.append(f"| {name} | {cpu * 1000:.2f} | "
                     f"{measured.memory_bytes[name] / MIB:.0f} |")
    split = measured.db_bytes_per_send_by_class
    lines += ["", f"Database: {measured.db_bytes_per_send:,.0f} bytes per send ("
              + ("no per-class split in these results" if split is None else ", ".join(
                  f"{value:,.0f} {name}" for name, value in split.items()))
              + f"), WAL {measured.wal_bytes_per_send:,.0f} bytes and "
              f"{measured.wal_syncs_per_send:.3f} fsyncs per send.", "",
              f"![latency]({images['latency']})", "", f"![CPU per send]({images['cpu']})", "",
              f"![memory]({images['memory']})", ""]
    lines += ["## Measured: Herald against Postfix (herald bench compare-postfix)", ""]
    if not compare:
        lines += ["Not run (no compare-postfix result): no throughput chart.", ""]
    for result in compare:
        lines += [f"{result['messages']} messages of {result['message_bytes']} B, smtp-source "
                  f"-> MTA -> {result['sink']}; medians of {result['repeat']} run(s).", "",
                  "| MTA | DKIM | sessions | msg/s |", "|---|---|---|---|"]
        lines += [f"| {row['mta']} | {row['dkim'] or 'unsigned'} | {row['sessions']} | "
                  f"{row['messages_per_s']} |" for row in result["rows"]]
        lines += ["", "| sessions | Herald/Postfix | Herald/Postfix+OpenDKIM |", "|---|---|---|"]
        lines += [f"| {r['sessions']} | {r['herald_to_postfix']} | "
                  f"{r['herald_to_postfix_opendkim'] if r['herald_to_postfix_opendkim'] else '-'}"
                  " |" for r in result["ratios"]]
        lines += [f"- note: {note}" for note in result["notes"]] + [""]
    if "throughput" in images:
        lines += [f"![throughput against concurrency]({images['throughput']})", ""]
    lines += ["## Caveats", "",
              "- Figures are from the machine above, shared and noisy: compare ratios measured "
              "in the same run, and prefer medians of three runs (`--repeat 3`).",
              "- Memory is measured at bench scale; the headroom factor stands for caches and "
              "queues growing with volume and retention.",
              "- Database bytes per send come from a short run: tables grow by whole pages, so "
              "the split (event log, bodies, the rest) is coarse; the bodies are the bench "
              "template's. `herald bench growth --body-size N` measures each table's growth "
              "per million messages of your size, with and without retention.",
              "- Parts counted: " + ", ".join(
                  p for p in PRODUCTION_PARTS if p in measured.cpu_s_per_send) + ".", ""]
    return "\n".join(lines)


def days(value: float) -> str:
    return f"{value:g} days" if value else "forever"


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    from engine.errors import ConfigError

    try:
        events_days, bodies_days = retention_days(args.config)
    except ConfigError as exc:
        fail(PROG, f"--config: {exc}")
    try:
        load = Load(args.daily_sends, args.peak_factor,
                    args.retention_days or DEFAULT_RETENTION_DAYS,
                    events_days if args.events_days is None else args.events_days,
                    bodies_days if args.bodies_days is None else args.bodies_days,
                    args.horizon_days)
    except ValueError as exc:
        fail(PROG, str(exc))
    try:
        import matplotlib  # noqa: F401  (a dependency; checked here to say how to get it)
    except ImportError:
        fail(PROG, "the charts need matplotlib: pip install matplotlib")
    if args.from_results:
        results = read_results(args.from_results)
    else:
        from bench import opendkim, postfix

        try:
            results = run_benches(args)
        except (postfix.PostfixError, opendkim.MilterError, RuntimeError, TimeoutError,
                OSError) as exc:
            print(f"{PROG}: failed: {exc}", file=sys.stderr)
            return 1
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "results.jsonl").write_bytes(
            b"".join(orjson.dumps(result) + b"\n" for result in results))
    try:
        path, plan, warnings = write_report(results, load, args.out,
                                            retention_days_given=args.retention_days is not None)
    except ValueError as exc:
        fail(PROG, f"cannot size from these results: {exc}")
    except KeyError as exc:
        fail(PROG, f"cannot size from these results: a result lacks the field {exc}")
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    for note in plan.notes:
        print(f"note: {note}", file=sys.stderr)
    print(f"wrote {path} and its charts", file=sys.stderr)
    print(orjson.dumps({"bench": "report", "report": str(path),
                        "recommendation": plan.as_dict(), "warnings": warnings}).decode())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
