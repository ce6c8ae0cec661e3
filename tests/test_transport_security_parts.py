"""The parts of transport security on their own: MTA-STS parsing and matching, the policy
fetch's limits, the cache's id/max_age rules, DANE matching, TLS-RPT's rua, the AD bit."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from engine.database import Database
from engine.errors import ConfigError
from mta.dns.resolver import MxResolver
from mta.dns.secure import SecureResolver, TlsaRecord
from mta.settings import MtaSettings
from mta.tls import dane
from mta.tls.rpt_send import parse_rua
from mta.tls.service import TransportSecurity
from mta.tls.sts import StsPolicies
from mta.tls.sts_fetch import StsFetchError, fetch_policy_text
from mta.tls.sts_policy import StsPolicyInvalid, mx_matches, parse_policy, parse_sts_txt
from tests.support.dns_server import DnsTestServer, zone_text
from tests.support.tls_pki import HttpsServer, PkiCa, self_signed

POLICY = "version: STSv1\nmode: enforce\nmx: mx1.example.test\nmx: *.example.net\nmax_age: 600\n"


def test_sts_txt_needs_exactly_one_valid_record() -> None:
    assert parse_sts_txt(["v=STSv1; id=20240101T00;"]) == "20240101T00"
    assert parse_sts_txt(["v=spf1 -all", "v=STSv1;id=abc"]) == "abc"
    assert parse_sts_txt(["v=STSv1; id=a", "v=STSv1; id=b"]) is None
    assert parse_sts_txt(["v=STSv1; id=not-alnum"]) is None
    assert parse_sts_txt(["v=STSv1"]) is None and parse_sts_txt([]) is None


def test_policy_parsing_and_mx_patterns() -> None:
    policy = parse_policy(POLICY.replace("\n", "\r\n"), "1")
    assert (policy.mode, policy.mx, policy.max_age) == (
        "enforce", ("mx1.example.test", "*.example.net"), 600)
    assert policy.matches("MX1.example.test.") and policy.matches("a.example.net")
    assert not policy.matches("a.b.example.net") and not policy.matches("example.net")
    assert not mx_matches("*.example.net", ".example.net")
    capped = parse_policy("version: STSv1\nmode: enforce\nmx: a.test\nmax_age: 40000000", "1")
    assert capped.max_age == 31_557_600
    for broken, key in [("mode: enforce\nmx: a.test\nmax_age: 1", "version"),
                        ("version: STSv1\nmode: block\nmx: a.test\nmax_age: 1", "mode"),
                        ("version: STSv1\nmode: enforce\nmax_age: 1", "mx"),
                        ("version: STSv1\nmode: enforce\nmx: a.test\nmax_age: -1", "max_age"),
                        ("version: STSv1\nmode: enforce\nmx: a..test\nmax_age: 1", "mx"),
                        ("garbage", "key: value")]:
        with pytest.raises(StsPolicyInvalid, match=key):
            parse_policy(broken, "1")


def test_rua_parsing() -> None:
    assert parse_rua(["v=TLSRPTv1; rua=mailto:a@x.test,https://r.x.test/v1"]) == (
        "mailto:a@x.test", "https://r.x.test/v1")
    assert parse_rua(["v=TLSRPTv1;rua=http://insecure.test/,mailto:b%40x.test"]) == (
        "mailto:b@x.test",)
    assert parse_rua(["v=TLSRPTv1; rua=mailto:a@x", "v=TLSRPTv1; rua=mailto:b@x"]) == ()
    assert parse_rua(["v=spf1"]) == ()


def test_dane_matching(tmp_path: Path) -> None:
    ca = PkiCa()
    leaf = ca.issue("mx.example.test")
    chain = [leaf.der, ca.cert.public_bytes(Encoding.DER)]
    spki = leaf.spki_sha256()
    ee = TlsaRecord(3, 1, 1, spki)
    assert dane.authenticate(chain, [ee], "anything.test") is None  # EE ignores names
    full = TlsaRecord(3, 0, 2, hashlib.sha512(leaf.der).digest())
    assert dane.authenticate(chain, [full], "x") is None
    ta = TlsaRecord(2, 0, 0, ca.cert.public_bytes(Encoding.DER))
    assert dane.authenticate(chain, [ta], "mx.example.test") is None
    problem = dane.authenticate(chain, [ta], "other.test")
    assert problem is not None and "does not verify for other.test" in problem
    assert dane.authenticate([leaf.der], [ta], "mx.example.test") is not None  # TA not sent
    assert "no TLSA record" in (dane.authenticate(chain, [TlsaRecord(3, 1, 1, b"\0" * 32)],
                                                  "x") or "")
    # PKIX usages, unknown selectors/matching types and wrong digest sizes are not usable.
    assert dane.usable([TlsaRecord(1, 1, 1, spki), TlsaRecord(3, 2, 1, spki),
                        TlsaRecord(3, 1, 3, spki), TlsaRecord(3, 1, 1, spki[:5]), ee]) == (ee,)


async def test_the_ad_bit_comes_from_the_resolver() -> None:
    zones = {"signed.test": zone_text('@ MX 10 mx\n_mta-sts TXT "v=STSv1; id=1"\n'
                                      "_25._tcp.mx TLSA 3 1 1 " + "ab" * 32),
             "plain.test": zone_text("@ MX 10 mx\n_25._tcp.mx TLSA 3 1 1 " + "ab" * 32)}
    async with DnsTestServer(zones, authenticated=["signed.test"]) as server:
        resolver = SecureResolver(server.address, timeout=2)
        signed = await resolver.tlsa("_25._tcp.mx.signed.test")
        assert signed.authenticated and signed.records == (TlsaRecord(3, 1, 1, b"\xab" * 32),)
        assert await resolver.mx_authenticated("signed.test")
        assert (await resolver.txt("_mta-sts.signed.test")).records == ("v=STSv1; id=1",)
        plain = await resolver.tlsa("_25._tcp.mx.plain.test")
        assert not plain.authenticated and len(plain.records) == 1
        assert not await resolver.mx_authenticated("plain.test")
        missing = await resolver.tlsa("_25._tcp.nope.signed.test")
        assert missing.records == () and missing.authenticated


async def _loopback(_host: str) -> list[str]:
    return ["127.0.0.1"]


@pytest.mark.parametrize(("route", "error"), [
    ((302, "text/plain", b""), "redirects are not followed"),
    ((200, "text/html", POLICY.encode()), "not text/plain"),
    ((200, "text/plain", b"x" * 70_000), "larger than 65536 bytes"),
    ((404, "text/plain", b""), "answered 404"),
])
async def test_policy_fetch_limits(tmp_path: Path, route: tuple[int, str, bytes],
                                   error: str) -> None:
    ca = PkiCa()
    async with HttpsServer(ca.issue("mta-sts.example.test"),
                           {"/.well-known/mta-sts.txt": route}) as server:
        with pytest.raises(StsFetchError, match=error):
            await fetch_policy_text("example.test", resolve=_loopback, port=server.port,
                                    ca_file=str(ca.write(tmp_path)))


async def test_policy_fetch_trusts_only_the_store_and_ca_file(tmp_path: Path) -> None:
    ca = PkiCa()
    route = {"/.well-known/mta-sts.txt": (200, "text/plain; charset=utf-8", POLICY.encode())}
    async with HttpsServer(ca.issue("mta-sts.example.test"), route) as server:
        text = await fetch_policy_text("example.test", resolve=_loopback, port=server.port,
                                       ca_file=str(ca.write(tmp_path)))
        assert text == POLICY
        with pytest.raises(StsFetchError) as caught:
            await fetch_policy_text("example.test", resolve=_loopback, port=server.port)
        assert caught.value.result_type == "sts-webpki-invalid"
    async with HttpsServer(self_signed("mta-sts.example.test"), route) as server:
        with pytest.raises(StsFetchError, match="does not verify"):
            await fetch_policy_text("example.test", resolve=_loopback, port=server.port,
                                    ca_file=str(ca.write(tmp_path)))


async def test_policy_cache_by_id_and_max_age(database: Database, tmp_path: Path) -> None:
    ca = PkiCa()
    route = {"/.well-known/mta-sts.txt": (200, "text/plain", POLICY.encode())}
    zones = {"example.test": zone_text('_mta-sts TXT "v=STSv1; id=one"')}
    clock = [datetime(2030, 1, 1, tzinfo=UTC)]
    async with HttpsServer(ca.issue("mta-sts.example.test"), route) as server, \
            DnsTestServer(zones) as dns_server:
        def policies() -> StsPolicies:
            return StsPolicies(database, SecureResolver(dns_server.address, timeout=2),
                               _loopback, port=server.port, recheck=0,
                               ca_file=str(ca.write(tmp_path)), now=lambda: clock[0])

        sts = policies()
        assert (await sts.lookup("example.test")).policy is not None
        assert len(server.record.requests) == 1
        clock[0] += timedelta(seconds=200)  # same id, young policy: from the cache
        assert (await policies().lookup("example.test")).policy is not None
        assert len(server.record.requests) == 1
        clock[0] += timedelta(seconds=150)  # past half of max_age 600: refreshed early
        assert await policies().refresh_expiring() == 1
        assert len(server.record.requests) == 2
        server.routes.clear()  # the policy host fails: the cached policy still holds
        clock[0] += timedelta(seconds=400)
        found = await policies().lookup("example.test")
        assert found.policy is not None and found.problem is None
        clock[0] += timedelta(seconds=700)  # expired and unreachable: no policy, reported
        found = await policies().lookup("example.test")
        assert found.policy is None and found.result_type == "sts-policy-fetch-error"


def test_a_bad_ca_file_fails_at_start_with_the_key(tmp_path: Path, database: Database) -> None:
    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate")
    with pytest.raises(ConfigError, match=r"mta\.tls_ca_file"):
        TransportSecurity(database, MtaSettings(tls_ca_file=bad), MxResolver())
