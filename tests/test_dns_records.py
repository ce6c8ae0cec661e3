"""The pure side of `herald check`: SPF evaluation over a lookup table, DMARC and tag lists."""

from __future__ import annotations

import pytest

from herald.dns_records import dmarc_policy, spf_allows, spf_record, tag_list

ZONE: dict[tuple[str, str], list[str]] = {
    ("a.test", "TXT"): ["v=spf1 include:_spf.a.test -all", "google-site-verification=x"],
    ("_spf.a.test", "TXT"): ["v=spf1 ip4:192.0.2.0/28 ip6:2001:db8::/32 ~all"],
    ("b.test", "TXT"): ["v=spf1 mx a:mail.b.test/30 redirect=a.test"],
    ("b.test", "MX"): ["mx.b.test"],
    ("mx.b.test", "A"): ["198.51.100.7"],
    ("mail.b.test", "A"): ["203.0.113.1"],
    ("two.test", "TXT"): ["v=spf1 -all", "v=spf1 +all"],
    ("macro.test", "TXT"): ["v=spf1 exists:%{i}.x.test -all"],
    ("loop.test", "TXT"): ["v=spf1 include:loop.test -all"],
}


async def lookup(name: str, rdtype: str) -> list[str]:
    return ZONE.get((name, rdtype), [])


@pytest.mark.parametrize(("domain", "ip", "allowed"), [
    ("a.test", "192.0.2.5", True), ("a.test", "192.0.2.99", False),
    ("a.test", "2001:db8::1", True), ("b.test", "198.51.100.7", True),
    ("b.test", "203.0.113.2", True), ("b.test", "203.0.113.9", False),
    ("b.test", "192.0.2.1", True),  # through the redirect
    ("none.test", "192.0.2.1", False), ("two.test", "192.0.2.1", False),
    ("macro.test", "192.0.2.1", None), ("loop.test", "192.0.2.1", None),
])
async def test_spf(domain: str, ip: str, allowed: bool | None) -> None:
    assert (await spf_allows(domain, ip, lookup))[0] is allowed


def test_record_parsing() -> None:
    assert spf_record(["v=spf1 -all"]) == ("v=spf1 -all", None)
    assert spf_record(["v=spf10"])[1] == "no SPF record"
    assert "2 SPF records" in str(spf_record(["v=spf1 a", "v=spf1 mx"])[1])
    assert dmarc_policy(["v=DMARC1; p=reject; rua=mailto:d@x.test"]) == "reject"
    assert dmarc_policy(["v=spf1 -all"]) is None
    assert tag_list("v=DKIM1; k=rsa; p=AB CD")["p"] == "ABCD"
