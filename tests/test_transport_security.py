"""MTA-STS, DANE and TLS-RPT end to end on loopback: a zone on the test DNS server (MX, TXT,
TLSA, with and without the AD bit), an HTTPS policy server with a test CA, and aiosmtpd servers
with good, wrong-host and self-signed certificates (or no STARTTLS at all)."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from pathlib import Path
from typing import Any

import orjson
import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from engine.database import Database
from engine.values import HostPort
from mta.tls.rpt_send import send_reports
from mta.tls.service import TransportSecurity, reporter_for
from tests.support.dns_server import DnsTestServer, zone_text
from tests.support.mta import (
    delivery_service,
    fetch,
    identity_for,
    mta_settings,
    queue_message,
    wait_for_states,
)
from tests.support.smtp_servers import Script, ScriptedSmtpServer
from tests.support.tls_pki import HttpsServer, Issued, PkiCa, self_signed

DOMAIN = "example.test"
MX = f"mx.{DOMAIN}"
ENFORCE = f"version: STSv1\r\nmode: enforce\r\nmx: {MX}\r\nmax_age: 86400\r\n"
TESTING = f"version: STSv1\r\nmode: testing\r\nmx: *.{DOMAIN}\r\nmax_age: 86400\r\n"


@pytest.fixture(scope="module")
def ca() -> PkiCa:
    return PkiCa()


@dataclass
class Scene:
    smtp: ScriptedSmtpServer
    https: HttpsServer
    dns: DnsTestServer
    settings: Any
    security: list[TransportSecurity]


@asynccontextmanager
async def scene(tmp_path: Path, ca: PkiCa, *, cert: Issued | None, policy: str | None,
                tlsa: str | None = None, authenticated: bool = False,
                rua: str | None = None, starttls: bool = True) -> AsyncIterator[Scene]:
    """A domain whose MX is an aiosmtpd server presenting ``cert``; ``policy`` is served as
    its MTA-STS policy (announced by TXT), ``tlsa`` published at _25._tcp.MX."""
    context = cert.server_context() if cert is not None and starttls else None
    async with ScriptedSmtpServer(Script(tls_context=context)) as smtp, \
            HttpsServer(ca.issue(f"mta-sts.{DOMAIN}"), {} if policy is None else {
                "/.well-known/mta-sts.txt": (200, "text/plain", policy.encode())}) as https:
        records = [f"@ MX 10 {MX}.", f"{MX}. A 127.0.0.1", "mta-sts A 127.0.0.1"]
        if policy is not None:
            records.append('_mta-sts TXT "v=STSv1; id=1"')
        if tlsa is not None:
            records.append(f"_25._tcp.{MX}. TLSA {tlsa}")
        if rua is not None:
            records.append(f'_smtp._tls TXT "v=TLSRPTv1; rua={rua}"')
        zones = {DOMAIN: zone_text("\n".join(records))}
        async with DnsTestServer(zones, authenticated=[DOMAIN] if authenticated else []) as dns:
            settings = mta_settings(resolver=HostPort("127.0.0.1", dns.port),
                                    smtp_port=smtp.port, mta_sts_port=https.port,
                                    tls_ca_file=ca.write(tmp_path))
            yield Scene(smtp, https, dns, settings, [])


async def deliver_one(database: Database, database_url: str, s: Scene,
                      state: str) -> dict[str, Any]:
    identity = await identity_for(database, s.settings)
    message_id = await queue_message(database, identity, f"ann@{DOMAIN}")
    async with delivery_service(database, s.settings, security=s.security):
        states = await wait_for_states(database_url, [message_id], (state,))
    assert states == {message_id: state}
    [attempt] = await fetch(database, "SELECT * FROM delivery_attempts WHERE message_id = $1",
                            message_id)
    return dict(attempt)


async def counts(database: Database) -> dict[tuple[str, str], int]:
    rows = await fetch(database, "SELECT policy_type, result, sessions FROM tls_rpt_counts")
    return {(r["policy_type"], r["result"]): r["sessions"] for r in rows}


def spki_sha256(issued: Issued) -> str:
    return issued.spki_sha256().hex()


# --- MTA-STS ---------------------------------------------------------------------------------


async def test_enforce_delivers_over_verified_tls_and_caches_the_policy(
        database: Database, database_url: str, tmp_path: Path, ca: PkiCa) -> None:
    async with scene(tmp_path, ca, cert=ca.issue(MX), policy=ENFORCE) as s:
        attempt = await deliver_one(database, database_url, s, "delivered")
        [received] = s.smtp.record.messages
    assert received.tls
    assert attempt["tls_policy"] == "mta-sts enforce (id 1)"
    [cached] = await fetch(database, "SELECT * FROM mta_sts_policies")
    assert (cached["domain"], cached["policy_id"], cached["mode"], cached["mx"]) == (
        DOMAIN, "1", "enforce", [MX])
    assert cached["expires_at"] - cached["fetched_at"] == timedelta(seconds=86400)
    [(method, path, headers, _)] = s.https.record.requests
    assert (method, path, headers["host"].split(":")[0]) == (
        "GET", "/.well-known/mta-sts.txt", f"mta-sts.{DOMAIN}")
    assert await counts(database) == {("sts", "success"): 1}


async def test_enforce_wrong_host_certificate_defers_and_sends_nothing(
        database: Database, database_url: str, tmp_path: Path, ca: PkiCa) -> None:
    async with scene(tmp_path, ca, cert=ca.issue("other.test"), policy=ENFORCE) as s:
        attempt = await deliver_one(database, database_url, s, "deferred")
        assert "MAIL" not in s.smtp.record.commands and not s.smtp.record.messages
    assert attempt["category"] == "tls_policy"
    assert attempt["reply"].startswith(
        f"mta-sts enforce (id 1): certificate for {MX} does not match")
    assert attempt["tls_policy"] == "mta-sts enforce (id 1)"
    assert await counts(database) == {("sts", "certificate-host-mismatch"): 1}
    [message] = await fetch(database, "SELECT state, last_reply FROM outbound_messages")
    assert "does not match" in message["last_reply"]


async def test_enforce_self_signed_certificate_defers(
        database: Database, database_url: str, tmp_path: Path, ca: PkiCa) -> None:
    async with scene(tmp_path, ca, cert=self_signed(MX), policy=ENFORCE) as s:
        attempt = await deliver_one(database, database_url, s, "deferred")
        assert not s.smtp.record.messages
    assert f"certificate for {MX} is not trusted" in attempt["reply"]
    assert await counts(database) == {("sts", "certificate-not-trusted"): 1}


async def test_enforce_never_falls_back_to_plaintext(
        database: Database, database_url: str, tmp_path: Path, ca: PkiCa) -> None:
    async with scene(tmp_path, ca, cert=None, policy=ENFORCE, starttls=False) as s:
        attempt = await deliver_one(database, database_url, s, "deferred")
        record = s.smtp.record
        assert record.connections >= 1 and record.ehlos >= 1
        assert not {"MAIL", "RCPT", "DATA"} & set(record.commands) and not record.messages
    assert attempt["reply"].startswith(
        "mta-sts enforce (id 1): server does not offer STARTTLS")
    assert await counts(database) == {("sts", "starttls-not-supported"): 1}


async def test_enforce_skips_hosts_the_policy_does_not_list(
        database: Database, database_url: str, tmp_path: Path, ca: PkiCa) -> None:
    policy = ENFORCE.replace(f"mx: {MX}", "mx: *.elsewhere.test")
    async with scene(tmp_path, ca, cert=ca.issue(MX), policy=policy) as s:
        attempt = await deliver_one(database, database_url, s, "deferred")
        assert s.smtp.record.connections == 0
    assert attempt["reply"] == (f"mta-sts enforce (id 1): {MX} is not an mx of the policy "
                                "(*.elsewhere.test)")


async def test_testing_mode_delivers_and_reports_by_https_and_mail(
        database: Database, database_url: str, tmp_path: Path, ca: PkiCa) -> None:
    async with ScriptedSmtpServer() as unused, HttpsServer(ca.issue("127.0.0.1")) as collector:
        del unused
        rua = f"https://127.0.0.1:{collector.port}/tlsrpt,mailto:reports@{DOMAIN}"
        async with scene(tmp_path, ca, cert=ca.issue("other.test"), policy=TESTING,
                         rua=rua) as s:
            attempt = await deliver_one(database, database_url, s, "delivered")
            assert s.smtp.record.messages[0].tls  # delivered as before: TLS, unverified
            assert attempt["tls_policy"].startswith("mta-sts testing (id 1)")
            [security] = s.security
            tomorrow = datetime.now(UTC).date() + timedelta(days=1)
            reporter, sender = reporter_for(s.settings)
            sent = await send_reports(database, security.secure,
                                      await identity_for(database, s.settings), reporter,
                                      sender, ca_file=security.ca_file, today=tomorrow)
            path, headers, body = collector.record.posted.get_nowait()
    assert await counts(database) == {("sts", "certificate-host-mismatch"): 1}
    [report] = sent
    assert report.domain == DOMAIN and "200" in report.outcome and "queued" in report.outcome
    assert path == "/tlsrpt" and headers["content-type"] == "application/tlsrpt+gzip"
    document = orjson.loads(gzip.decompress(body))
    today = datetime.now(UTC).date().isoformat()
    assert document["report-id"] == f"{today}_{DOMAIN}@herald.test"
    assert document["date-range"] == {"start-datetime": f"{today}T00:00:00Z",
                                      "end-datetime": f"{today}T23:59:59Z"}
    assert document["contact-info"] == "postmaster@bounces.herald.test"
    [entry] = document["policies"]
    assert entry["policy"] == {"policy-type": "sts", "policy-domain": DOMAIN,
                               "policy-string": TESTING.strip().split("\r\n"),
                               "mx-host": [f"*.{DOMAIN}"]}
    assert entry["summary"] == {"total-successful-session-count": 0,
                                "total-failure-session-count": 1}
    assert entry["failure-details"] == [{
        "result-type": "certificate-host-mismatch", "failed-session-count": 1,
        "receiving-mx-hostname": MX, "receiving-ip": "127.0.0.1"}]
    # The mailto report went into Herald's own queue, gzipped JSON in a multipart/report.
    [queued] = await fetch(database, "SELECT * FROM outbound_messages WHERE source = 'tlsrpt'")
    assert queued["recipient"] == f"reports@{DOMAIN}"
    mail = message_from_bytes(bytes(queued["body"]))
    assert mail.get_content_type() == "multipart/report"
    assert mail.get_param("report-type") == "tlsrpt"
    assert mail["TLS-Report-Domain"] == DOMAIN
    [attachment] = [p for p in mail.walk() if p.get_content_type() == "application/tlsrpt+gzip"]
    assert orjson.loads(gzip.decompress(attachment.get_payload(decode=True))) == document
    # A second run sends nothing: the (day, domain) report row is claimed once.
    assert await send_reports(database, security.secure, await identity_for(
        database, s.settings), reporter, sender, today=tomorrow) == []


# --- DANE ------------------------------------------------------------------------------------


async def test_dane_ee_match_delivers_and_wins_over_mta_sts(
        database: Database, database_url: str, tmp_path: Path, ca: PkiCa) -> None:
    cert = self_signed(MX)  # MTA-STS alone would refuse it: DANE decides
    async with scene(tmp_path, ca, cert=cert, policy=ENFORCE, authenticated=True,
                     tlsa=f"3 1 1 {spki_sha256(cert)}") as s:
        attempt = await deliver_one(database, database_url, s, "delivered")
        assert s.smtp.record.messages[0].tls
    assert attempt["tls_policy"] == "dane (1 usable TLSA record)"
    assert await counts(database) == {("tlsa", "success"): 1}


async def test_dane_ta_match_verifies_the_chain_and_name(
        database: Database, database_url: str, tmp_path: Path, ca: PkiCa) -> None:
    digest = hashlib.sha256(ca.cert.public_bytes(Encoding.DER)).hexdigest()
    async with scene(tmp_path, ca, cert=ca.issue(MX), policy=None, authenticated=True,
                     tlsa=f"2 0 1 {digest}") as s:
        attempt = await deliver_one(database, database_url, s, "delivered")
    assert attempt["tls_policy"] == "dane (1 usable TLSA record)"


async def test_dane_mismatch_defers(
        database: Database, database_url: str, tmp_path: Path, ca: PkiCa) -> None:
    async with scene(tmp_path, ca, cert=self_signed(MX), policy=None, authenticated=True,
                     tlsa=f"3 1 1 {'00' * 32}") as s:
        attempt = await deliver_one(database, database_url, s, "deferred")
        assert not s.smtp.record.messages and "MAIL" not in s.smtp.record.commands
    assert attempt["category"] == "tls_policy"
    assert attempt["reply"].startswith(
        f"dane (1 usable TLSA record): no TLSA record for {MX} matches")
    assert await counts(database) == {("tlsa", "tlsa-invalid"): 1}


async def test_without_the_ad_bit_tlsa_records_are_ignored(
        database: Database, database_url: str, tmp_path: Path, ca: PkiCa) -> None:
    async with scene(tmp_path, ca, cert=self_signed(MX), policy=None, authenticated=False,
                     tlsa=f"3 1 1 {'00' * 32}") as s:
        attempt = await deliver_one(database, database_url, s, "delivered")
        assert s.smtp.record.messages[0].tls
    assert attempt["tls_policy"] == "opportunistic"
    assert await counts(database) == {}


# --- local per-destination settings ----------------------------------------------------------


async def test_local_skip_wins_and_verified_domains_check_the_certificate(
        database: Database, database_url: str, tmp_path: Path, ca: PkiCa) -> None:
    async with scene(tmp_path, ca, cert=ca.issue("other.test"), policy=None) as s:
        s.settings = dataclasses.replace(s.settings, tls_verified_domains=(DOMAIN,))
        attempt = await deliver_one(database, database_url, s, "deferred")
        assert attempt["reply"].startswith(
            f"local: verified tls for {DOMAIN}: certificate for {MX} does not match")
    async with scene(tmp_path, ca, cert=ca.issue(MX), policy=ENFORCE) as s:
        s.settings = dataclasses.replace(s.settings, tls_skip_domains=(DOMAIN,))
        identity = await identity_for(database, s.settings)
        message_id = await queue_message(database, identity, f"bob@{DOMAIN}")
        async with delivery_service(database, s.settings):
            await wait_for_states(database_url, [message_id], ("delivered",))
        assert not s.smtp.record.messages[0].tls


