"""The ``herald`` command line. Errors a user can cause end in one line on stderr, with an exit
code systemd can act on (``herald.exit_codes``: usage 2, unavailable 69, bad config 78)."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import importlib.metadata
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import uvloop

from engine.contact_tokens import mint
from engine.database import connect_one
from engine.errors import HeraldError
from engine.keys import (
    DEFAULT_SCOPES,
    SCOPES,
    create_key,
    fetch_token_secret,
    list_keys,
    revoke_key,
    validate_scopes,
)
from engine.log import configure_logging
from engine.values import HostPort, parse_duration
from herald import (
    contacts_cli,
    exit_codes,
    queue_cli,
    retention_cli,
    stats_cli,
    suppressions_cli,
    tls_cli,
    webhooks_cli,
)
from herald.database import database_url, migrate
from herald.roles import ROLE_NAMES
from herald.settings import Settings, config_path_from, load_settings

BENCHES = ("intake", "mta", "dkim", "automation", "inbound", "submission", "stats",
           "tracking", "outbox", "growth", "transition-cpu", "suppression", "intake-cpu",
           "listener-wakeups", "log-shapes")
SIZING_BENCHES = ("e2e", "compare-postfix", "report")  # bench/e2e.py, compare_postfix.py, ...


class UsageError(HeraldError):
    """A command-line argument is wrong."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="herald", description=__doc__)
    parser.add_argument("--version", action="version", version=f"herald {herald_version()}")
    parser.add_argument("--config", help="TOML config file (default: $HERALD_CONFIG, else "
                                         "/etc/herald/herald.toml when it exists)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="run Herald (every role, or those given)")
    run.add_argument("--role", action="append", choices=ROLE_NAMES,
                     help="run only this role (repeatable)")

    commands.add_parser("migrate", help="apply database migrations and exit")
    commands.add_parser("postgres", help="run the embedded Postgres until SIGTERM "
                                         "(the herald-postgres unit)")

    keys = commands.add_parser("keys", help="manage API keys")
    key_commands = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    create = key_commands.add_parser("create", help="create a key; prints it on the last line")
    create.add_argument("--name", required=True)
    create.add_argument("--scope", action="append", metavar="SCOPE",
                        help=f"repeatable; one of {', '.join(SCOPES)} "
                             f"(default: {', '.join(DEFAULT_SCOPES)})")
    create.add_argument("--publishable", action="store_true",
                        help="a site key for the tracking pixel only")
    create.add_argument("--event-type", action="append", default=[],
                        help="event types a publishable key may record (repeatable)")
    create.add_argument("--property", action="append", default=[], metavar="NAME",
                        help="an event property a publishable key's pixel hits may carry "
                             "(repeatable; default: none)")
    create.add_argument("--from-domain", action="append", default=[], metavar="DOMAIN",
                        help="a domain this key may send mail from (repeatable; default: the "
                             "domains of the [[mta.dkim]] keys)")
    key_commands.add_parser("list", help="list keys (never their secrets)")
    token = key_commands.add_parser(
        "contact-token", help="mint a contact token for a publishable key (tests, docs)")
    token.add_argument("--key", required=True, metavar="ID", help="the publishable key's id")
    token.add_argument("--contact", required=True, metavar="CONTACT_ID")
    token.add_argument("--ttl", default="7d", help="valid for this long (default 7d, max 90d)")
    revoke = key_commands.add_parser("revoke", help="revoke a key by its id")
    revoke.add_argument("key_id")

    dkim_parser = commands.add_parser("dkim", help="DKIM keys")
    dkim_commands = dkim_parser.add_subparsers(dest="dkim_command", required=True,
                                               metavar="ACTION")
    keygen = dkim_commands.add_parser("keygen", help="write a signing key, print its DNS record")
    keygen.add_argument("--domain", required=True)
    keygen.add_argument("--selector", required=True)
    keygen.add_argument("--algorithm", choices=("rsa", "ed25519"), default="rsa")
    keygen.add_argument("--out", default="dkim", help="directory for the key (default: ./dkim)")

    init = commands.add_parser(
        "init", help="write a config, DKIM keys and secrets for a domain; print the DNS records")
    init.add_argument("--domain", required=True, help="the domain mail is sent from")
    init.add_argument("--dir", default="/etc/herald", help="where to write (default /etc/herald)")
    init.add_argument("--ip", help="this server's public IP (default: the one it sends from)")
    check = commands.add_parser(
        "check", help="validate the config and the DNS records receivers check")
    check.add_argument("--ip", help="the IP mail leaves from (default: the one the kernel picks)")

    sink = commands.add_parser("sink", help="run a local capture SMTP server (demos, tests)")
    sink.add_argument("--listen", default="127.0.0.1:2525", help="HOST:PORT")
    sink.add_argument("--maildir", help="store each message in this Maildir")
    sink.add_argument("--reply-latency", default="0",
                      help="delay every reply this long, as a network would (e.g. 20ms)")
    sink.add_argument("--no-pipelining", action="store_true",
                      help="do not advertise PIPELINING")

    simulate = commands.add_parser(
        "simulate", help="run workflows on a virtual clock over a JSON-lines events file")
    simulate.add_argument("--workflows", help="workflows directory (default: from config)")
    simulate.add_argument("--templates", help="templates directory (default: from config)")
    simulate.add_argument("--events", required=True, help="JSON-lines file ('-': stdin)")
    simulate.add_argument("--horizon", default="30d",
                          help="run the clock this long past the last event (default 30d)")

    explain = commands.add_parser("explain", help="what each workflow did for a contact, why")
    explain.add_argument("--contact", required=True)
    explain.add_argument("--json", action="store_true", help="print the report as JSON")

    bounce = commands.add_parser("bounce", help="bounce and complaint reports")
    bounce_commands = bounce.add_subparsers(dest="bounce_command", required=True,
                                            metavar="ACTION")
    bounce_parse = bounce_commands.add_parser(
        "parse", help="print what each message reports, one JSON line per file")
    bounce_parse.add_argument("files", nargs="+", metavar="FILE")

    bench = commands.add_parser("bench", help="load tests: " + ", ".join(
        BENCHES + SIZING_BENCHES))
    bench.add_argument("name", choices=BENCHES + SIZING_BENCHES)
    bench.add_argument("args", nargs=argparse.REMAINDER)
    suppressions_cli.add_parser(commands)
    tls_cli.add_parser(commands)
    queue_cli.add_parser(commands)
    stats_cli.add_parser(commands)
    webhooks_cli.add_parser(commands)
    retention_cli.add_parser(commands)
    contacts_cli.add_parser(commands)
    return parser


def herald_version() -> str:
    try:
        return importlib.metadata.version("herald")
    except importlib.metadata.PackageNotFoundError:  # running from a checkout, not installed
        from herald.roles import VERSION

        return VERSION


def _with_settings(args: argparse.Namespace) -> Settings:
    return load_settings(config_path_from(args.config))


def _run_async(coroutine_factory: Callable[[], Coroutine[Any, Any, int]]) -> int:
    return uvloop.run(coroutine_factory())


async def _cmd_migrate(settings: Settings) -> int:
    async with database_url(settings) as url:
        applied = await migrate(url)
    print(f"applied {len(applied)} migration(s)" + (": " + ", ".join(applied) if applied else ""))
    return 0


async def _cmd_keys(settings: Settings, args: argparse.Namespace) -> int:
    async with database_url(settings) as url:
        await migrate(url)
        connection = await connect_one(url)
        try:
            if args.keys_command == "create":
                try:
                    scopes = validate_scopes(args.scope or list(DEFAULT_SCOPES))
                    new = await create_key(connection, args.name, scopes, args.publishable,
                                           tuple(args.event_type), tuple(args.property),
                                           tuple(args.from_domain))
                except ValueError as exc:
                    raise UsageError(str(exc)) from None
                kind = "publishable site key" if args.publishable else "secret key"
                print(f"created {kind} {new.key_id} ({args.name}); store it now, "
                      "it is not shown again:")
                if new.token_secret is not None:
                    print("contact-token secret (keep it on your backend; it signs "
                          f"contact_token values, see engine/contact_tokens.py): "
                          f"{new.token_secret}")
                print(new.token)
            elif args.keys_command == "list":
                for row in await list_keys(connection):
                    state = "revoked" if row["revoked_at"] else "active"
                    what = ("publishable: " + ",".join(row["event_types"]) if row["publishable"]
                            else ",".join(row["scopes"]))
                    if row["publishable"] and row["properties"]:
                        what += " properties: " + ",".join(row["properties"])
                    if row["from_domains"]:
                        what += " from: " + ",".join(row["from_domains"])
                    print(f"{row['key_id']}\t{state}\t{row['name']}\t{what}")
            elif args.keys_command == "contact-token":
                print(await _contact_token(connection, args))
            elif args.keys_command == "revoke":
                if not await revoke_key(connection, args.key_id):
                    raise UsageError(f"no active key with id {args.key_id!r}")
                print(f"revoked {args.key_id}")
        finally:
            await connection.close()
    return 0


MAX_TOKEN_TTL = 90 * 86400.0


async def _contact_token(connection: Any, args: argparse.Namespace) -> str:
    try:
        ttl = parse_duration(args.ttl)
    except ValueError as exc:
        raise UsageError(f"--ttl: {exc}") from None
    if not 0 < ttl <= MAX_TOKEN_TTL:
        raise UsageError("--ttl: between 1s and 90d")
    secret = await fetch_token_secret(connection, args.key)
    if secret is None:
        raise UsageError(f"no active publishable key with id {args.key!r} and a "
                         "contact-token secret")
    try:
        return mint(args.key, secret, args.contact, int(time.time() + ttl))
    except ValueError as exc:
        raise UsageError(f"--contact: {exc}") from None


def _cmd_dkim_keygen(args: argparse.Namespace) -> int:
    from mta.dkim.keys import write_keypair

    path, record = write_keypair(args.domain, args.selector, args.algorithm, Path(args.out))
    print(f"wrote {path}; add to config:")
    print(f'[[mta.dkim]]\ndomain = "{args.domain}"\nselector = "{args.selector}"\n'
          f'key_file = "{path}"\nalgorithm = "{args.algorithm}"')
    print("publish this DNS record:")
    print(record)
    return 0


def _cmd_init(args: argparse.Namespace) -> int:
    from herald.check import sending_ip
    from herald.init_config import initialise, plan, records_text

    ip = _ip_argument(args.ip) or sending_ip()
    setup = plan(args.domain, Path(args.dir), ip)
    records = initialise(setup)
    print(f"wrote {setup.directory}/herald.toml, credentials/ (DKIM keys, secrets), "
          "credentials.conf (the LoadCredential= drop-in) and dns-records.txt")
    print("publish these DNS records, then run `herald check`:\n")
    print(records_text(records), end="")
    return 0


async def _cmd_check(settings: Settings, args: argparse.Namespace) -> int:
    from herald.check import run_check, sending_ip

    findings = await run_check(settings, _ip_argument(args.ip) or sending_ip())
    for finding in findings:
        print(finding.line())
    failed = sum(finding.level == "FAIL" for finding in findings)
    print(f"{failed} problem(s) to fix" if failed else "all good")
    return exit_codes.PROBLEMS_FOUND if failed else exit_codes.OK


def _ip_argument(value: str | None) -> str | None:
    import ipaddress

    if value is None:
        return None
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise UsageError(f"--ip: {value!r} is not an IP address") from None


def _cmd_sink(args: argparse.Namespace) -> int:
    from engine.lifecycle import install_stop_signals, sd_notify
    from mta.sink import CaptureSink

    try:
        listen = HostPort.parse(args.listen)
    except ValueError as exc:
        raise UsageError(f"--listen: {exc}") from None
    try:
        latency = parse_duration(args.reply_latency)
        if not 0 <= latency <= 10:
            raise ValueError("must be between 0 and 10s")
    except ValueError as exc:
        raise UsageError(f"--reply-latency: {exc}") from None
    configure_logging("info")

    async def serve() -> int:
        stop = asyncio.Event()
        install_stop_signals(stop)
        async with CaptureSink(listen.host, listen.port,
                               maildir=Path(args.maildir) if args.maildir else None,
                               pipelining=not args.no_pipelining,
                               reply_latency=latency) as sink:
            print(f"sink listening on {listen.host}:{sink.port}", flush=True)
            sd_notify("READY=1")
            await stop.wait()
            print(f"sink stopping after {sink.received} message(s)", flush=True)
        return 0

    try:
        return uvloop.run(serve())
    except OSError as exc:
        raise UsageError(f"cannot listen on {args.listen}: {exc.strerror}") from None


def _cmd_simulate(settings: Settings, args: argparse.Namespace) -> int:
    from datetime import timedelta

    from automation.loading.catalog import Catalog
    from automation.tools.simulate import Simulator, output_line, parse_lines
    from engine.values import parse_duration
    from herald.settings import resolve_path

    try:
        horizon = timedelta(seconds=parse_duration(args.horizon))
    except ValueError as exc:
        raise UsageError(f"--horizon: {exc}") from None
    workflows = Path(args.workflows) if args.workflows else resolve_path(
        settings, settings.automation.workflows_dir)
    templates = Path(args.templates) if args.templates else resolve_path(
        settings, settings.automation.templates_dir)
    catalog = Catalog.load(workflows, templates)
    try:
        handle = sys.stdin if args.events == "-" else open(args.events, encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"--events: cannot read {args.events}: {exc.strerror}") from None
    with handle:
        lines = parse_lines(handle)
    results = uvloop.run(Simulator(catalog, settings.automation).run(lines, horizon))
    for result in results:
        print(output_line(result))
    return 0


async def _cmd_explain(settings: Settings, args: argparse.Namespace) -> int:
    import orjson

    from automation.tools.explain import explain, render_text
    from herald.roles import load_catalog

    catalog = load_catalog(settings)
    async with database_url(settings) as url:
        await migrate(url)
        connection = await connect_one(url)
        try:
            report = await explain(connection, catalog, args.contact)
        finally:
            await connection.close()
    print(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode() if args.json
          else render_text(report))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "dkim":
            return _cmd_dkim_keygen(args)
        if args.command == "sink":
            return _cmd_sink(args)
        if args.command == "init":
            return _cmd_init(args)
        if args.command == "bounce":
            from mta.bounces.cli import parse_files

            return parse_files(args.files)
        if args.command == "bench":
            # bench sits above herald; compare-postfix is bench/compare_postfix.py
            module = importlib.import_module(f"bench.{args.name.replace('-', '_')}")
            return int(module.main(args.args))
        settings = _with_settings(args)
        configure_logging(settings.engine.log_level)
        if args.command == "simulate":
            return _cmd_simulate(settings, args)
        if args.command == "check":
            return _run_async(lambda: _cmd_check(settings, args))
        if args.command == "explain":
            return _run_async(lambda: _cmd_explain(settings, args))
        if args.command == "run":
            from herald.runtime import serve

            roles = args.role or list(ROLE_NAMES)
            uvloop.run(serve(settings, roles))
            return 0
        if args.command == "migrate":
            return _run_async(lambda: _cmd_migrate(settings))
        if args.command == "postgres":
            from herald.postgres_service import serve_embedded

            return _run_async(lambda: serve_embedded(settings))
        if args.command == "keys":
            return _run_async(lambda: _cmd_keys(settings, args))
        if args.command == "tls":
            return _run_async(lambda: tls_cli.run(settings, args))
        if args.command == "queue":
            selector = queue_cli.selector_from(args)
            return _run_async(lambda: queue_cli.run(settings, args, selector))
        if args.command == "stats":
            since = stats_cli.since_from(args)
            return _run_async(lambda: stats_cli.run(settings, args, since))
        if args.command in ("webhooks", "outbox"):
            new = webhooks_cli.parsed_subscription(args)
            return _run_async(lambda: webhooks_cli.run(settings, args, new))
        if args.command == "retention":
            return _run_async(lambda: retention_cli.run(settings, args))
        if args.command == "contacts":
            contacts_cli.check(args)
            return _run_async(lambda: contacts_cli.run(settings, args))
        if args.command == "suppressions":
            entries = suppressions_cli.entries_from(args)
            return _run_async(lambda: suppressions_cli.run(settings, args, entries))
    except HeraldError as exc:
        print(f"herald: error: {exc}", file=sys.stderr)
        return exit_codes.exit_code(exc)
    except KeyboardInterrupt:
        return 130
    raise AssertionError(f"unhandled command {args.command}")


if __name__ == "__main__":
    sys.exit(main())
