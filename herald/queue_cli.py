"""``herald queue [summary] | explain | hold | release | retry | purge``: the outbound queue from
the shell, through the same functions as ``/v1/queue`` (every change is logged as an event)."""

from __future__ import annotations

import argparse
import getpass
from typing import Any

import orjson

from engine.database import connect_one
from herald.database import database_url, migrate
from herald.roles import limit_defaults, shaping_rules
from herald.settings import Settings
from mta.queue import control, overview
from mta.queue.control import ACTIONS, Selector

ACTION_HELP = {
    "hold": "keep the selected messages from delivery until released",
    "release": "let held messages be delivered again (on their schedule)",
    "retry": "make the selected messages due now (held ones are released; those in flight "
             "keep their attempt)",
    "purge": "remove the selected messages from the queue for good (state purged; a "
             "selector is required)",
}


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser("queue", help="see and steer the outbound queue")
    actions = parser.add_subparsers(dest="queue_command", metavar="ACTION")
    summary = actions.add_parser("summary", help="depth, oldest age, next retry and rates per "
                                                 "destination site (the default)")
    summary.add_argument("--json", action="store_true")
    parser.add_argument("--json", action="store_true", help="print JSON (summary)")
    explain = actions.add_parser("explain", help="why a site is slow or paused")
    target = explain.add_mutually_exclusive_group(required=True)
    target.add_argument("--site", help="a site key as `herald queue` lists it")
    target.add_argument("--domain", help="a recipient domain (its site is explained)")
    explain.add_argument("--json", action="store_true")
    for name, text in ACTION_HELP.items():
        action = actions.add_parser(name, help=text)
        action.add_argument("--site")
        action.add_argument("--domain")
        action.add_argument("--workflow")
        action.add_argument("--contact", metavar="CONTACT_ID")
        action.add_argument("--message", metavar="ID")
        if name != "purge":
            action.add_argument("--all", action="store_true",
                                help="every message in the queue (no selector)")


def selector_from(args: argparse.Namespace) -> Selector:
    """Parsed before the database is touched: a malformed selector is one line, exit 2."""
    return Selector.parse(site=getattr(args, "site", None), domain=getattr(args, "domain", None),
                          workflow=getattr(args, "workflow", None),
                          contact=getattr(args, "contact", None),
                          message=getattr(args, "message", None))


async def run(settings: Settings, args: argparse.Namespace, selector: Selector) -> int:
    command = args.queue_command or "summary"
    async with database_url(settings) as url:
        await migrate(url)
        connection = await connect_one(url)
        try:
            if command == "summary":
                report = await overview.summary(connection)
                print(_json(report) if args.json else render_summary(report))
            elif command == "explain":
                report = await overview.explain(
                    connection, site=selector.site, domain=selector.domain,
                    rules=shaping_rules(settings), defaults=limit_defaults(settings))
                print(_json(report) if args.json else render_explain(report))
            elif command in ACTIONS:
                result = await control.apply(connection, command, selector, _actor(),
                                             max_rows=10**9, everything=args.all
                                             if command != "purge" else False)
                print(render_result(result))
        finally:
            await connection.close()
    return 0


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


def _json(report: dict[str, Any]) -> str:
    return orjson.dumps(report, option=orjson.OPT_INDENT_2).decode()


def render_result(result: control.ActionResult) -> str:
    done = ACTIONS[result.action].done
    line = f"{done} {result.affected} message(s)"
    if result.in_flight:
        line += f"; {result.in_flight} in flight left to finish their attempt"
    return line


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"


def render_summary(report: dict[str, Any]) -> str:
    totals = report["totals"]
    lines = [f"queued {totals['queued']}, deferred {totals['deferred']}, held {totals['held']}"
             f" (rates: attempts per minute over the last {report['rate_window_s'] // 60} min)"]
    header = f"{'SITE':<40} {'QUEUED':>7} {'DEFER':>7} {'HELD':>6} {'OLDEST':>7}  " \
             f"{'NEXT ATTEMPT':<20} RATES"
    lines.append(header)
    for site in report["sites"]:
        name = site["site"] or f"{site['domain']} (not routed yet)"
        rates = " ".join(f"{k}={v:g}" for k, v in sorted(site["per_minute"].items())) or "-"
        lines.append(f"{name[:40]:<40} {site['queued']:>7} {site['deferred']:>7} "
                     f"{site['held']:>6} {_age(site['oldest_age_s']):>7}  "
                     f"{(site['next_attempt_at'] or '-')[:19]:<20} {rates}")
    if not report["sites"]:
        lines.append("(the queue is empty)")
    if not report["mta"]:
        lines.append("no mta role has reported in: sites of never-routed domains are unknown")
    for mta in report["mta"]:
        state = "STALE" if mta["stale"] else "live"
        lines.append(f"mta {mta['owner']}: {state}, reported {mta['age_s']:g}s ago")
    return "\n".join(lines)


def render_explain(report: dict[str, Any]) -> str:
    queue = report["queue"]
    domains = report["domains"]
    lines = [f"site: {report['site'] or '(not routed yet)'}",
             f"domains: {', '.join(domains[:10])}"
             + (f" and {len(domains) - 10} more" if len(domains) > 10 else ""),
             f"mx hosts: {', '.join(report['mx_hosts']) or '-'}",
             f"queue: {queue['queued']} queued, {queue['deferred']} deferred, {queue['held']} "
             f"held; oldest {_age(queue['oldest_age_s'])}; next attempt "
             f"{queue['next_attempt_at'] or '-'}",
             "limits:"]
    for key, limit in report["limits"].items():
        value = "none" if limit["value"] is None else limit["value"]
        lines.append(f"  {key} = {value}  ({limit['from']})")
    lines.append("live state:" if report["live"] else
                 "live state: none reported (idle in every running MTA, or none is running)")
    for state in report["live"]:
        lines.append(f"  {state['owner']} ({'STALE, ' if state['stale'] else ''}"
                     f"{state['age_s']:g}s ago): connections {state['allowed_connections']}/"
                     f"{state['limits']['max_connections']}, backoff "
                     f"{state['backoff_remaining_s']:g}s, throttles in a row "
                     f"{state['consecutive_throttles']}, ready {state['ready']}, "
                     f"active {state['active']}")
    lines.append("last replies:" if report["last_replies"] else "last replies: none today")
    for reply in report["last_replies"]:
        lines.append(f"  {reply['at'][:19]} {reply['outcome']:<9} {reply['domain']} "
                     f"{reply['remote_host'] or '-'}: {reply['code'] or ''} "
                     f"{(reply['reply'] or '')[:120]}")
    lines.append("why:")
    lines.extend(f"  - {reason}" for reason in report["reasons"])
    return "\n".join(lines)
