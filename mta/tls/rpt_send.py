"""Sending TLS-RPT reports (RFC 8460 §3, §5): where to (``_smtp._tls.DOMAIN``), and how.

For each policy domain counted on a finished UTC day without a report yet: look up the
``rua`` (exactly one ``v=TLSRPTv1`` TXT record; ``mailto:`` and ``https:`` URIs), build the
report, and claim the (day, domain) row in ``tls_rpt_reports`` in the same transaction that
queues the mailto reports through Herald's own queue (so several mta processes send it once);
then POST the gzipped report to each ``https:`` URI (``application/tlsrpt+gzip``, no
redirects, bounded time, the same trust as every verified connection). A POST that fails is
recorded in the row's ``outcome`` and not retried.
"""

from __future__ import annotations

import logging
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime

import asyncpg
import httpx

from engine.addresses import AddressError
from engine.database import Database
from engine.outbox.targets import TargetRefused
from engine.outbox.transport import OutboundPolicy, TargetUnresolved
from mta.compose import check_raw
from mta.dns.resolver import DnsTemporaryFailure
from mta.dns.secure import SecureResolver
from mta.errors import InvalidMessage
from mta.queue.enqueue import OutboundMessage, QueueIdentity, enqueue
from mta.tls.rpt_report import (
    MEDIA_TYPE,
    CountRow,
    Reporter,
    build_report,
    gzipped,
    report_id,
    report_mail,
)
from mta.tls.trust import verifying_context

log = logging.getLogger("herald.mta.tlsrpt")

MAX_RUA = 5  # destinations per report
MAX_DOMAINS = 1000  # per run; the rest wait for the next

PENDING = """
    SELECT DISTINCT c.day, c.policy_domain FROM tls_rpt_counts c
    WHERE c.day < $1 AND c.day >= $1 - 7
      AND NOT EXISTS (SELECT 1 FROM tls_rpt_reports r
                      WHERE r.day = c.day AND r.policy_domain = c.policy_domain)
    ORDER BY c.day, c.policy_domain LIMIT $2
"""
ROWS = """
    SELECT policy_type, policy_strings, mx, result, mx_host, receiving_ip, sessions
    FROM tls_rpt_counts WHERE day = $1 AND policy_domain = $2
"""
CLAIM = """
    INSERT INTO tls_rpt_reports (day, policy_domain, report_id, destinations, outcome)
    VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING RETURNING report_id
"""
OUTCOME = "UPDATE tls_rpt_reports SET outcome = $3 WHERE day = $1 AND policy_domain = $2"


@dataclass(frozen=True, slots=True)
class SentReport:
    day: date
    domain: str
    report_id: str
    destinations: tuple[str, ...]
    outcome: str


def parse_rua(records: Sequence[str]) -> tuple[str, ...]:
    """The ``rua`` URIs of the one ``v=TLSRPTv1`` record (RFC 8460 §3); () when there is none."""
    found = [r for r in records if r.replace(" ", "").startswith("v=TLSRPTv1")]
    if len(found) != 1:
        return ()
    for part in found[0].split(";"):
        key, _, value = part.strip().partition("=")
        if key.strip() == "rua":
            uris = [urllib.parse.unquote(u.strip()) for u in value.split(",") if u.strip()]
            return tuple(u for u in uris if u.lower().startswith(("mailto:", "https://")))[
                :MAX_RUA]
    return ()


async def send_reports(database: Database, resolver: SecureResolver, identity: QueueIdentity,
                       reporter: Reporter, sender: str, *, ca_file: str | None = None,
                       today: date | None = None, timeout: float = 30.0,
                       outbound: OutboundPolicy | None = None) -> list[SentReport]:
    """Send every report due (finished days of the last week); returns what was done."""
    today = today or datetime.now(UTC).date()
    async with database.connection() as connection:
        pending = await connection.fetch(PENDING, today, MAX_DOMAINS)
    sent = []
    for row in pending:
        try:
            result = await send_report(database, resolver, identity, reporter, sender,
                                       row["day"], row["policy_domain"], ca_file=ca_file,
                                       timeout=timeout, outbound=outbound)
        except DnsTemporaryFailure as exc:
            log.warning("TLS-RPT: rua lookup failed; will retry",
                        extra={"domain": row["policy_domain"], "error": str(exc)})
            continue
        if result is not None:
            sent.append(result)
    return sent


async def send_report(database: Database, resolver: SecureResolver, identity: QueueIdentity,
                      reporter: Reporter, sender: str, day: date, domain: str, *,
                      ca_file: str | None = None, timeout: float = 30.0,
                      outbound: OutboundPolicy | None = None) -> SentReport | None:
    """One report; None when another process claimed it first."""
    rua = parse_rua((await resolver.txt(f"_smtp._tls.{domain}")).records)
    async with database.connection() as connection:
        rows = [CountRow(r["policy_type"], tuple(r["policy_strings"]), tuple(r["mx"]),
                         r["result"], r["mx_host"], r["receiving_ip"], r["sessions"])
                for r in await connection.fetch(ROWS, day, domain)]
    report = build_report(day, domain, rows, reporter)
    rid = report_id(day, domain, reporter)
    mailto = [u[len("mailto:"):] for u in rua if u.lower().startswith("mailto:")]
    https = [u for u in rua if u.lower().startswith("https://")]
    notes = [] if rua else ["no rua published"]
    async with database.transaction() as connection:
        if await connection.fetchval(CLAIM, day, domain, rid, list(rua), "sending") is None:
            return None
        for address in mailto:
            notes.append(await _queue_mail(connection, identity, report, reporter, sender, day,
                                           domain, address, rid))
    for uri in https:
        notes.append(await _post(uri, gzipped(report), ca_file, timeout, outbound))
    outcome = "; ".join(notes)
    async with database.connection() as connection:
        await connection.execute(OUTCOME, day, domain, outcome)
    log.info("TLS-RPT report sent", extra={"domain": domain, "day": day.isoformat(),
                                           "report_id": rid, "outcome": outcome})
    return SentReport(day, domain, rid, rua, outcome)


async def _queue_mail(connection: asyncpg.Connection, identity: QueueIdentity,
                      report: dict[str, object], reporter: Reporter, sender: str, day: date,
                      domain: str, address: str, rid: str) -> str:
    raw = report_mail(report, day, domain, reporter, sender, [address], datetime.now(UTC))
    try:
        composed = check_raw(raw, address)
    except (InvalidMessage, AddressError) as exc:
        return f"mailto:{address}: not sendable ({exc})"
    queued = await enqueue(connection, identity, OutboundMessage(
        composed.header_from, composed.recipient, composed.body, tags=("tlsrpt",),
        source="tlsrpt", idempotency_key=f"tlsrpt:{rid}:{address.lower()}"[:255]))
    return f"mailto:{address}: queued {queued.id}"


async def _post(uri: str, body: bytes, ca_file: str | None, timeout: float,
                outbound: OutboundPolicy | None = None) -> str:
    """POST one report; with ``outbound`` the address is vetted (``[webhooks] allow``)."""
    verify = verifying_context(ca_file)
    try:
        async with (outbound.client(timeout, verify) if outbound is not None else
                    httpx.AsyncClient(verify=verify, follow_redirects=False, trust_env=False,
                                      timeout=timeout)) as client:
            response = await client.post(uri, content=body,
                                         headers={"Content-Type": MEDIA_TYPE})
    except httpx.HTTPError as exc:
        return f"{uri}: failed ({type(exc).__name__}: {exc})"
    except (TargetRefused, TargetUnresolved) as exc:
        return f"{uri}: refused ({exc})"
    if 200 <= response.status_code < 300:
        return f"{uri}: {response.status_code}"
    return f"{uri}: failed ({response.status_code})"
