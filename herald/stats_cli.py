"""``herald stats [--workflow W] [--since D] [--json]``: the funnel counters from the shell,
through the same functions as ``GET /v1/workflows/{name}/stats``."""

from __future__ import annotations

import argparse
import io
from datetime import UTC, date, datetime
from typing import Any

import orjson
from rich import box
from rich.console import Console
from rich.table import Table

from automation.stats.query import UnknownWorkflow, all_stats, workflow_stats
from automation.stats.since import HELP, parse_since
from engine.database import connect_one
from engine.errors import HeraldError
from herald.database import database_url, migrate
from herald.roles import load_catalog
from herald.settings import Settings

COLUMNS = (("sent", "SENT"), ("delivered", "DELIV"), ("bounced", "BOUNCE"),
           ("opened", "OPENS"), ("clicked", "CLICKS"), ("unsubscribed", "UNSUB"),
           ("complained", "COMPL"), ("converted", "CONV"), ("revenue", "REVENUE"))


class StatsUsageError(HeraldError):
    """A wrong ``herald stats`` argument, or a workflow that does not exist (exit 2)."""


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "stats", help="funnels, attribution and A/B results per workflow (counters per UTC day)")
    parser.add_argument("--workflow", metavar="W", help="one workflow, step by step")
    parser.add_argument("--since", metavar="D", help="count from this day: " + HELP)
    parser.add_argument("--json", action="store_true", help="print JSON")


def since_from(args: argparse.Namespace, today: date | None = None) -> date | None:
    """Parsed before the database is touched: a bad value is one line, exit 2."""
    if args.since is None:
        return None
    try:
        return parse_since(args.since, today or datetime.now(UTC).date())
    except ValueError as exc:
        raise StatsUsageError(f"--since: {exc}") from None


async def run(settings: Settings, args: argparse.Namespace, since: date | None) -> int:
    catalog = load_catalog(settings)
    async with database_url(settings) as url:
        await migrate(url)
        connection = await connect_one(url)
        try:
            if args.workflow is not None:
                try:
                    report = await workflow_stats(connection, catalog, args.workflow, since,
                                                  settings.stats.ab_metric)
                except UnknownWorkflow as exc:
                    raise StatsUsageError(
                        f"{exc} (loaded: {', '.join(sorted(catalog.current)) or 'none'})"
                    ) from None
                text = render_workflow(report)
            else:
                report = await all_stats(connection, catalog, since)
                text = render_summary(report)
        finally:
            await connection.close()
    print(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode() if args.json else text)
    return 0


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.2f}"
    return f"{value:,}"


def _fixed(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def _render(*tables: Table | str) -> str:
    buffer = io.StringIO()
    console = Console(file=buffer, width=160, color_system=None, highlight=False)
    for table in tables:
        console.print(table)
    return buffer.getvalue().rstrip("\n")


def _heading(report: dict[str, Any]) -> str:
    since = f"since {report['since']}" if report["since"] else "all time"
    counted = report.get("counted_until")
    stamp = counted.isoformat() if isinstance(counted, datetime) else counted or "never"
    return f"{since} (counters per {report['bucket']}; counted until {stamp})"


def render_summary(report: dict[str, Any]) -> str:
    table = Table("WORKFLOW", "ENTERED", *(title for _, title in COLUMNS), "CLICK%", "CONV%",
                  box=box.SIMPLE_HEAD)
    for row in report["workflows"]:
        table.add_row(row["workflow"], _cell(row["entered"]),
                      *(_cell(row[name]) for name, _ in COLUMNS),
                      _percent(row["click_rate"]), _percent(row["conversion_rate"]))
    return _render(_heading(report), table)


def render_workflow(report: dict[str, Any]) -> str:
    totals = report["totals"]
    head = (f"workflow {report['workflow']}: entered {totals['entered']:,}, "
            + _heading(report))
    table = Table("STEP", *(title for _, title in COLUMNS), "CLICK%", "DROP-OFF", "FROM",
                  box=box.SIMPLE_HEAD)
    for step in report["steps"]:
        table.add_row(step["step"] + ("" if step["in_definition"] else " (old)"),
                      *(_cell(step[name]) for name, _ in COLUMNS),
                      _percent(step["click_rate"]), _percent(step["drop_off"]),
                      step["previous"] or "-")
    parts: list[Table | str] = [head, table]
    for split in report["splits"]:
        arms = Table("ARM", "SENT", split["metric"].upper(), "RATE", "Z", "P-VALUE", "NOTE",
                     box=box.SIMPLE_HEAD)
        field = "clicked" if split["metric"] == "clicks" else "converted"
        for arm in split["arms"]:
            note = "control" if "vs" not in arm else (
                "" if arm["reliable"] else "too few for the normal approximation")
            arms.add_row(arm["name"], _cell(arm["sent"]), _cell(arm[field]),
                         _percent(arm["rate"]), _fixed(arm.get("z"), 2),
                         _fixed(arm.get("p_value"), 4),
                         note)
        parts += [f"split {split['step']} ({split['rate']}, two-proportion z-test vs the "
                  "first arm)", arms]
    return _render(*parts)
