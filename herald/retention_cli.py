"""``herald retention run [--dry-run] [--json]``: one retention pass now, saying what it
dropped (or, with ``--dry-run``, what it would drop, changing nothing)."""

from __future__ import annotations

import argparse
from datetime import datetime
from typing import Any

import orjson

from herald.database import database_url, migrate
from herald.exit_codes import ServiceUnavailable
from herald.retention import RetentionReport, RetentionSettings, run_once
from herald.settings import Settings


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser("retention", help="drop old events and message bodies "
                                                   "([retention] in the config)")
    actions = parser.add_subparsers(dest="retention_command", metavar="ACTION", required=True)
    run = actions.add_parser("run", help="one retention pass now (the mta role runs one every "
                                         "check_interval)")
    run.add_argument("--dry-run", action="store_true",
                     help="say what would be created and dropped; change nothing")
    run.add_argument("--json", action="store_true")


async def run(settings: Settings, args: argparse.Namespace) -> int:
    async with database_url(settings) as url:
        await migrate(url)
        report = await run_once(url, settings.retention, dry_run=args.dry_run)
    if report.busy:
        raise ServiceUnavailable("another process is running retention now; try again later")
    print(orjson.dumps(report_json(report), option=orjson.OPT_INDENT_2).decode() if args.json
          else render(report, settings.retention))
    return 0


def _day(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat(timespec="seconds")


def report_json(report: RetentionReport) -> dict[str, Any]:
    return {
        "dry_run": report.dry_run,
        "partitions_created": report.created,
        "rows_moved_from_default": report.moved_rows,
        "events_before": _day(report.events_before),
        "partitions_dropped": [{"name": p.name, "from": _day(p.start), "to": _day(p.end),
                                "bytes": p.bytes} for p in report.dropped],
        "partitions_kept_unread": report.kept_unread,
        "partitions_postponed": report.postponed,
        "event_ids_trimmed": report.event_ids_trimmed,
        "bodies_before": _day(report.bodies_before),
        "bodies_dropped": report.bodies_dropped,
        "body_bytes": report.body_bytes,
    }


def _mib(count: int) -> str:
    return f"{count / 1048576:.1f} MiB"


def render(report: RetentionReport, settings: RetentionSettings) -> str:
    would = "would " if report.dry_run else ""
    lines = ["dry run: nothing was changed"] if report.dry_run else []
    if report.created:
        lines.append(f"{would}create partitions: {', '.join(report.created)}"
                     + (f" ({would}move {report.moved_rows} rows out of events_default)"
                        if report.moved_rows else ""))
    if report.events_before is None:
        lines.append("events: kept forever ([retention] events = 0)")
    else:
        lines.append(f"events: received before {_day(report.events_before)} are dropped "
                     f"(partitions of {settings.partition_days} days; whole partitions only)")
        for part in report.dropped:
            lines.append(f"  {would}drop {part.name} [{_day(part.start)} .. {_day(part.end)})"
                         f" {_mib(part.bytes)}")
        if not report.dropped:
            lines.append("  no partition is old enough")
        for name in report.kept_unread:
            lines.append(f"  kept {name}: the automation core has not read all of it yet")
        for name in report.postponed:
            lines.append(f"  postponed {name}: its table was locked; retried next time")
    if report.bodies_before is None:
        lines.append("message bodies: kept forever ([retention] message_bodies = 0)")
    else:
        size = f" ({_mib(report.body_bytes)})" if report.body_bytes is not None else ""
        lines.append(f"message bodies: {would}drop {report.bodies_dropped}{size} of messages "
                     f"finished before {_day(report.bodies_before)}")
    return "\n".join(lines)
