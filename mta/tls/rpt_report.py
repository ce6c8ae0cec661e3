"""TLS-RPT aggregate reports (RFC 8460 §4): the JSON document, its gzip, its mail (pure).

One report per policy domain and UTC day, from the rows of ``tls_rpt_counts``: one ``policies``
entry per (policy type, policy strings, mx), with the summary counts and one failure-details
entry per (result type, MX host, receiving address). ``report_mail`` wraps the gzipped report
as RFC 8460 §5.3 asks: ``multipart/report; report-type="tlsrpt"`` with the
``TLS-Report-Domain`` and ``TLS-Report-Submitter`` headers and an ``application/tlsrpt+gzip``
attachment named ``submitter!domain!begin!end!id.json.gz``.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from email import policy as email_policy
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from typing import Any

import orjson

MEDIA_TYPE = "application/tlsrpt+gzip"


@dataclass(frozen=True, slots=True)
class CountRow:
    policy_type: str
    policy_strings: tuple[str, ...]
    mx: tuple[str, ...]
    result: str
    mx_host: str
    receiving_ip: str
    sessions: int


@dataclass(frozen=True, slots=True)
class Reporter:
    organization: str
    contact: str
    submitter: str  # the domain the reports come from (RFC 8460 §5.3)


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def day_range(day: date) -> tuple[datetime, datetime]:
    start = datetime.combine(day, time(0), UTC)
    return start, start + timedelta(days=1) - timedelta(seconds=1)


def report_id(day: date, domain: str, reporter: Reporter) -> str:
    return f"{day.isoformat()}_{domain}@{reporter.submitter}"


def build_report(day: date, domain: str, rows: Iterable[CountRow],
                 reporter: Reporter) -> dict[str, Any]:
    start, end = day_range(day)
    policies: dict[tuple[str, tuple[str, ...], tuple[str, ...]], list[CountRow]] = {}
    for row in rows:
        policies.setdefault((row.policy_type, row.policy_strings, row.mx), []).append(row)
    entries = []
    for (kind, strings, mx), group in sorted(policies.items()):
        policy: dict[str, Any] = {"policy-type": kind, "policy-domain": domain}
        if strings:
            policy["policy-string"] = list(strings)
        if mx:
            policy["mx-host"] = list(mx)
        ok = sum(r.sessions for r in group if r.result == "success")
        failures = [r for r in group if r.result != "success"]
        entry: dict[str, Any] = {"policy": policy, "summary": {
            "total-successful-session-count": ok,
            "total-failure-session-count": sum(r.sessions for r in failures)}}
        if failures:
            entry["failure-details"] = [_failure(r) for r in sorted(
                failures, key=lambda r: (r.result, r.mx_host, r.receiving_ip))]
        entries.append(entry)
    return {"organization-name": reporter.organization,
            "date-range": {"start-datetime": rfc3339(start), "end-datetime": rfc3339(end)},
            "contact-info": reporter.contact,
            "report-id": report_id(day, domain, reporter),
            "policies": entries}


def _failure(row: CountRow) -> dict[str, Any]:
    detail: dict[str, Any] = {"result-type": row.result, "failed-session-count": row.sessions}
    if row.mx_host:
        detail["receiving-mx-hostname"] = row.mx_host
    if row.receiving_ip:
        detail["receiving-ip"] = row.receiving_ip
    return detail


def gzipped(report: Mapping[str, Any]) -> bytes:
    return gzip.compress(orjson.dumps(report), mtime=0)


def file_name(day: date, domain: str, reporter: Reporter, unique: str) -> str:
    start, end = day_range(day)
    return (f"{reporter.submitter}!{domain}!{int(start.timestamp())}!"
            f"{int(end.timestamp())}!{unique}.json.gz")


def report_mail(report: Mapping[str, Any], day: date, domain: str, reporter: Reporter,
                sender: str, recipients: Sequence[str], now: datetime) -> bytes:
    message = EmailMessage()
    rid = str(report["report-id"])
    message["From"] = sender
    message["To"] = ", ".join(recipients)
    message["Subject"] = (f"Report Domain: {domain} Submitter: {reporter.submitter} "
                          f"Report-ID: <{rid}>")
    message["Date"] = format_datetime(now)
    message["Message-ID"] = make_msgid(domain=reporter.submitter)
    message["TLS-Report-Domain"] = domain
    message["TLS-Report-Submitter"] = reporter.submitter
    message.set_content(f"This is an aggregate TLS report from {reporter.organization} "
                        f"for {domain} on {day.isoformat()} (RFC 8460).\n")
    message.add_attachment(gzipped(report), maintype="application", subtype="tlsrpt+gzip",
                           filename=file_name(day, domain, reporter, "1"))
    message.replace_header("Content-Type", 'multipart/report; report-type="tlsrpt"; '
                           f'boundary="{message.get_boundary()}"')
    return message.as_bytes(policy=email_policy.SMTP)
