"""``herald bench compare-postfix``: the same load through Postfix and through Herald, to the
same smtp-sink, in one run.

For each ``--sessions`` value (e.g. ``5,20``: concurrent ``smtp-source`` sessions), each of
these relays ``--messages`` messages of ``--size`` bytes from ``smtp-source`` to one
``smtp-sink``, timed from the start of ``smtp-source`` until nothing waits in its queue:

- ``herald``: Herald's submission role and mta role (one process each, as the systemd units run
  them), DKIM-signed with RSA-2048, every message committed before its 250
  (bench/submission.py);
- ``postfix``: a throw-away Postfix instance, unsigned (bench/postfix.py);
- ``postfix+opendkim``: the same with an OpenDKIM milter signing with RSA-2048
  (bench/opendkim.py); skipped with a note when ``opendkim`` is not installed.

Herald delivers over ``--delivery-connections`` (20, Postfix's
``default_destination_concurrency_limit``). ``--repeat N`` runs the whole set N times, one
after the other (the machine's noise drifts), and reports each row's median. ``--dump`` keeps
every message at the sink, counts them per row and checks the signed rows' messages carry a
DKIM-Signature (and the unsigned row's do not).

Prints a table and the ratios on stderr and one JSON line on stdout.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from bench import opendkim, postfix
from bench.args import OneLineParser, int_list, positive, positive_int
from bench.mta import Sink
from bench.submission import herald_stack, relay
from mta.dkim.keys import write_keypair

STDERR = Console(stderr=True)
HERALD, POSTFIX, OPENDKIM = "herald", "postfix", "postfix+opendkim"
SIGNED = "rsa-sha256 2048"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = OneLineParser(prog="herald bench compare-postfix", description=__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=positive_int, default=5000)
    parser.add_argument("--size", type=positive_int, default=3072,
                        help="message size (smtp-source -l)")
    parser.add_argument("--sessions", type=int_list, default=[20],
                        help="concurrent smtp-source sessions, e.g. 5,20 (one set per value)")
    parser.add_argument("--delivery-connections", type=positive_int, default=20,
                        help="Herald's connections to the sink (Postfix's default "
                             "destination concurrency is 20)")
    parser.add_argument("--repeat", type=positive_int, default=1,
                        help="run the whole set this many times; report medians")
    parser.add_argument("--dump", action="store_true",
                        help="keep the messages at the sink: count them, check signatures")
    parser.add_argument("--database-url", help="Herald's Postgres (default: embedded, "
                                               "temporary)")
    parser.add_argument("--timeout", type=positive, default=600.0,
                        help="give up on one row after this many seconds")
    parser.add_argument("--log", type=Path, help="write Herald's logs here")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser.parse_args(argv)


class RowCounter:
    """What the sink received during one row (with ``--dump``)."""

    def __init__(self, sink: Sink) -> None:
        self.sink = sink
        self.before = sink.dumped() if sink.dump_dir is not None else (0, 0)

    def fields(self) -> dict[str, int]:
        if self.sink.dump_dir is None:
            return {}
        files, signed = self.sink.dumped()
        return {"sink_received": files - self.before[0], "sink_signed": signed - self.before[1]}


def run(args: argparse.Namespace) -> dict[str, Any]:
    if not postfix.installed():
        raise postfix.PostfixError(f"herald bench compare-postfix needs Postfix and its "
                                   f"smtp-source ({postfix.POSTFIX}, {postfix.SMTP_SOURCE})")
    workdir = Path(tempfile.mkdtemp(prefix="herald-bench-compare-"))
    try:
        return _run(args, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)  # embedded Postgres, keys, sink dumps


def _run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    sink = Sink("smtp-sink", dump_dir=workdir / "sink" if args.dump else None)
    notes = []
    with_opendkim = opendkim.installed()
    if not with_opendkim:
        notes.append(f"{OPENDKIM} skipped: OpenDKIM is not installed ({opendkim.OPENDKIM}; "
                     "Debian: apt-get install opendkim)")
    kinds = [HERALD, POSTFIX] + ([OPENDKIM] if with_opendkim else [])
    total = args.repeat * len(args.sessions) * len(kinds)
    runs: list[dict[str, Any]] = []
    progress = None if args.no_progress else Progress(console=STDERR, transient=True)
    task = progress.add_task("compare-postfix", total=total) if progress else None

    def step(kind: str, sessions: int, measure: Callable[[], dict[str, Any]]) -> None:
        if progress is not None and task is not None:
            progress.update(task, description=f"{kind}, {sessions} sessions")
        counter = RowCounter(sink)
        row = {"mta": kind, "sessions": sessions, **measure()}
        row.update(counter.fields())
        runs.append(row)
        if progress is not None and task is not None:
            progress.advance(task)

    if progress is not None:
        progress.start()
    sink.start()
    try:
        for repeat in range(args.repeat):
            _herald_rows(args, workdir / f"herald-{repeat}", sink, step)
            for sessions in args.sessions:
                step(POSTFIX, sessions, partial(_postfix_row, args, sink, sessions, None))
            if with_opendkim:
                _opendkim_rows(args, workdir / f"opendkim-{repeat}", sink, step)
    finally:
        sink.stop()
        if progress is not None:
            progress.stop()
    rows = median_rows(runs)
    return {"bench": "compare-postfix", "sink": sink.kind, "messages": args.messages,
            "message_bytes": args.size, "delivery_connections": args.delivery_connections,
            "repeat": args.repeat, "rows": rows, "ratios": ratios(rows), "runs": runs,
            "notes": notes}


def _herald_rows(args: argparse.Namespace, workdir: Path, sink: Sink,
                 step: Callable[[str, int, Callable[[], dict[str, Any]]], None]) -> None:
    workdir.mkdir(parents=True)
    with herald_stack(workdir, sink.port, args.delivery_connections, 1, True,
                      args.database_url, args.log) as stack:
        for sessions in args.sessions:
            def measure(sessions: int = sessions) -> dict[str, Any]:
                result = relay(stack, args.messages, args.size, sessions, args.timeout)
                return {"dkim": SIGNED, "seconds": round(result.seconds, 3),
                        "messages_per_s": round(args.messages / result.seconds, 1),
                        "accepted_per_s": round(args.messages / result.accepted_seconds, 1),
                        "delivered": result.delivered}
            step(HERALD, sessions, measure)


def _postfix_row(args: argparse.Namespace, sink: Sink, sessions: int,
                 milter_port: int | None) -> dict[str, Any]:
    extra = opendkim.postfix_settings(milter_port) if milter_port is not None else None
    result = postfix.measure(sink.port, args.messages, args.size, sessions, args.timeout,
                             extra)
    return {"dkim": None if milter_port is None else f"{SIGNED} (OpenDKIM milter)",
            "seconds": round(result.seconds, 3),
            "messages_per_s": round(result.messages_per_s, 1), "delivered": result.delivered}


def _opendkim_rows(args: argparse.Namespace, workdir: Path, sink: Sink,
                   step: Callable[[str, int, Callable[[], dict[str, Any]]], None]) -> None:
    workdir.mkdir(parents=True)
    key_path, _record = write_keypair("bench.test", "b1", "rsa", workdir)
    with opendkim.running_milter("bench.test", "b1", key_path, workdir) as port:
        for sessions in args.sessions:
            step(OPENDKIM, sessions, partial(_postfix_row, args, sink, sessions, port))


def median_rows(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (MTA, sessions): the median rate of its runs, and each run's rate."""
    rows = []
    keys = list(dict.fromkeys((run["mta"], run["sessions"]) for run in runs))
    for kind, sessions in keys:
        same = [run for run in runs if (run["mta"], run["sessions"]) == (kind, sessions)]
        row = {**same[0], "messages_per_s": round(statistics.median(
            run["messages_per_s"] for run in same), 1),
            "runs_messages_per_s": [run["messages_per_s"] for run in same]}
        for counted in ("delivered", "sink_received", "sink_signed"):
            if counted in row:
                row[counted] = sum(run[counted] for run in same)
        row.pop("seconds", None)
        row.pop("accepted_per_s", None)
        rows.append(row)
    return rows


def ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rate = {(row["mta"], row["sessions"]): row["messages_per_s"] for row in rows}
    out = []
    for sessions in dict.fromkeys(row["sessions"] for row in rows):
        herald = rate.get((HERALD, sessions))
        plain = rate.get((POSTFIX, sessions))
        signed = rate.get((OPENDKIM, sessions))
        out.append({"sessions": sessions,
                    "herald_to_postfix": _ratio(herald, plain),
                    "herald_to_postfix_opendkim": _ratio(herald, signed),
                    "postfix_opendkim_to_postfix": _ratio(signed, plain)})
    return out


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a is not None and b else None


def print_summary(result: dict[str, Any]) -> None:
    table = Table("MTA", "DKIM", "sessions", "msg/s (median)", "runs", "delivered",
                  title=f"{result['messages']} messages of {result['message_bytes']} B each, "
                        f"smtp-source -> MTA -> {result['sink']}")
    for row in result["rows"]:
        table.add_row(row["mta"], "RSA-2048" if row["dkim"] else "unsigned", str(row["sessions"]),
                      str(row["messages_per_s"]),
                      ", ".join(str(r) for r in row["runs_messages_per_s"]),
                      str(row["delivered"]))
    STDERR.print(table)
    for ratio in result["ratios"]:
        STDERR.print(f"{ratio['sessions']} sessions: Herald/Postfix {ratio['herald_to_postfix']}"
                     f", Herald/Postfix+OpenDKIM {ratio['herald_to_postfix_opendkim']}, "
                     f"Postfix+OpenDKIM/Postfix {ratio['postfix_opendkim_to_postfix']}")
    for note in result["notes"]:
        STDERR.print(f"note: {note}")


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    try:
        result = run(args)
    except (postfix.PostfixError, opendkim.MilterError, RuntimeError, TimeoutError,
            OSError) as exc:
        print(f"herald bench compare-postfix: failed: {exc}", file=sys.stderr)
        return 1
    print_summary(result)
    print(orjson.dumps(result).decode())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
