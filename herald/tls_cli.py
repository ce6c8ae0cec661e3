"""``herald tls policy DOMAIN`` (the TLS policy each MX host gets now, and why) and
``herald tls report`` (send the TLS-RPT reports of finished days now, as the mta role does
hourly)."""

from __future__ import annotations

import argparse
from datetime import date

import orjson

from engine.database import Database
from herald.database import database_url, migrate
from herald.roles import mta_settings, queue_identity, transport_security
from herald.settings import Settings
from mta.dns.resolver import DnsPermanentFailure, DnsTemporaryFailure, MxResolver
from mta.dns.routing import Router
from mta.tls.policy import HostRefused
from mta.tls.rpt_send import send_reports
from mta.tls.service import TransportSecurity, reporter_for


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    tls = commands.add_parser("tls", help="transport security: MTA-STS, DANE, TLS-RPT")
    actions = tls.add_subparsers(dest="tls_command", required=True, metavar="ACTION")
    policy = actions.add_parser("policy", help="the TLS policy each MX host of DOMAIN gets")
    policy.add_argument("domain")
    report = actions.add_parser("report", help="send the TLS-RPT reports due now")
    report.add_argument("--today", type=date.fromisoformat, default=None,
                        help="report the days before this one (default: today, UTC)")


async def run(settings: Settings, args: argparse.Namespace) -> int:
    mta = mta_settings(settings)
    async with database_url(settings) as url:
        await migrate(url)
        database = await Database.connect(url, min_size=1, max_size=2)
        resolver = MxResolver(
            nameserver=(mta.resolver.host, mta.resolver.port) if mta.resolver else None,
            timeout=mta.dns_timeout)
        try:
            security = transport_security(settings, database, resolver)
            if args.tls_command == "policy":
                return await _policy(Router(mta, resolver), security, args.domain)
            reporter, sender = reporter_for(mta)
            identity = await queue_identity(settings, database)
            for sent in await send_reports(database, security.secure, identity, reporter,
                                           sender, ca_file=security.ca_file, today=args.today,
                                           outbound=security.outbound):
                print(orjson.dumps({"day": sent.day.isoformat(), "domain": sent.domain,
                                    "report_id": sent.report_id,
                                    "outcome": sent.outcome}).decode())
            return 0
        finally:
            await resolver.aclose()
            await database.close()


async def _policy(router: Router, security: TransportSecurity, domain: str) -> int:
    try:
        destination = await router.destination(domain)
    except (DnsPermanentFailure, DnsTemporaryFailure) as exc:
        print(f"{domain}: {exc}")
        return 1
    scope = await security.policies.domain(domain, routed=destination.site.startswith("route:"))
    if scope.sts.problem:
        print(f"{domain}: MTA-STS: {scope.sts.problem}")
    for host in destination.hosts:
        decided = await security.policies.host(scope, host)
        if isinstance(decided, HostRefused):
            print(f"{host}: refused: {decided.reason}")
        else:
            print(f"{host}: {decided.label}")
    return 0
