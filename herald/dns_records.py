"""The DNS records a sending domain needs, and reading them back (pure).

``herald init`` prints :func:`records_to_publish`; ``herald check`` looks the same names up and
judges the answers with the parsers here: SPF terms, a DMARC policy, a DKIM key record's public
key. No I/O: the SPF evaluation asks its caller for the DNS answers it needs.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from engine.values import ASCII_DIGITS
from mta.dkim.keys import txt_strings

SPF_LOOKUP_LIMIT = 10  # RFC 7208 4.6.4: at most 10 mechanisms that query DNS


@dataclass(frozen=True, slots=True)
class Record:
    name: str  # fully qualified, no trailing dot
    type: str  # TXT, MX, A, PTR
    value: str
    why: str
    optional: bool = False

    def zone_line(self) -> str:
        value = self.value
        if self.type == "TXT":
            value = " ".join(f'"{part}"' for part in txt_strings(self.value))
        return f"{self.name}. IN {self.type} {value}"


@dataclass(frozen=True, slots=True)
class Identity:
    """What a sending set-up is made of: the From domain, the server's name and the bounce
    (envelope sender) domain, the DKIM keys (selector, TXT value) and the server's address."""

    domain: str
    ehlo_name: str
    bounce_domain: str
    dkim: tuple[tuple[str, str], ...]
    ip: str | None


def records_to_publish(identity: Identity, report_address: str) -> list[Record]:
    domain, host, bounces = identity.domain, identity.ehlo_name, identity.bounce_domain
    ip = identity.ip or "<this server's public IP>"
    kind = "AAAA" if identity.ip and ":" in identity.ip else "A"
    records = [
        Record(host, kind, ip, "the server's name, as it says in EHLO"),
        Record(_reverse_name(identity.ip), "PTR", f"{host}.",
               "reverse DNS: set it at whoever runs the IP (your hosting provider), not in your "
               "zone; receivers check it matches EHLO"),
    ]
    for selector, value in identity.dkim:
        records.append(Record(f"{selector}._domainkey.{domain}", "TXT", value,
                              "DKIM public key; every message is signed with each key"))
    records += [
        Record(domain, "TXT", f"v=spf1 a:{host} ~all",
               "SPF for the From domain; if it has one already, add a:" + host
               + " to it (one SPF record per name)"),
        Record(bounces, "TXT", f"v=spf1 a:{host} -all",
               "SPF for the envelope sender (what receivers check SPF against)"),
        Record(bounces, "MX", f"10 {host}.",
               "bounces and feedback reports come back to this server's inbound role"),
        Record(f"_dmarc.{domain}", "TXT",
               f"v=DMARC1; p=none; rua=mailto:{report_address}",
               "DMARC: start with p=none, read the reports, then move to p=quarantine"),
        Record(f"_mta-sts.{bounces}", "TXT", "v=STSv1; id=1",
               "MTA-STS for mail to the bounce domain; also serve the policy at "
               f"https://mta-sts.{bounces}/.well-known/mta-sts.txt", optional=True),
        Record(f"_smtp._tls.{domain}", "TXT", f"v=TLSRPTv1; rua=mailto:{report_address}",
               "TLS-RPT: daily reports of TLS failures delivering to your domain", optional=True),
    ]
    return records


def _reverse_name(ip: str | None) -> str:
    if ip is None:
        return "<reverse name of the IP>"
    return ipaddress.ip_address(ip).reverse_pointer


def spf_record(texts: list[str]) -> tuple[str | None, str | None]:
    """The one ``v=spf1`` record among a name's TXT strings, or (None, why not)."""
    found = [text for text in texts if text.lower() == "v=spf1" or
             text.lower().startswith("v=spf1 ")]
    if not found:
        return None, "no SPF record"
    if len(found) > 1:
        return None, f"{len(found)} SPF records (receivers treat that as an error: merge them)"
    return found[0], None


Lookup = Callable[[str, str], Awaitable[list[str]]]


async def spf_allows(domain: str, ip: str, lookup: Lookup) -> tuple[bool | None, str]:
    """Whether ``domain``'s SPF record authorises ``ip`` (True/False), or None when it cannot be
    told (macros, ``exists``, ``ptr``, over 10 lookups), with a short explanation. ``lookup``
    answers (name, type) with strings: TXT texts, A/AAAA addresses, MX host names."""
    budget = [SPF_LOOKUP_LIMIT]
    return await _evaluate(domain, ipaddress.ip_address(ip), lookup, budget)


async def _evaluate(domain: str, ip: ipaddress.IPv4Address | ipaddress.IPv6Address,
                    lookup: Lookup, budget: list[int]) -> tuple[bool | None, str]:
    record, problem = spf_record(await lookup(domain, "TXT"))
    if record is None:
        return False, f"{domain}: {problem}"
    redirect = None
    for term in record.split()[1:]:
        qualifier = term[0] if term[0] in "+-~?" else "+"
        body = term[1:] if term[0] in "+-~?" else term
        name, _, arg = body.partition(":")
        name = name.lower()
        if "%" in arg or name in ("exists", "ptr"):
            return None, f"{domain}: '{term}' is beyond what herald check evaluates"
        if name.startswith("redirect="):
            redirect = body.split("=", 1)[1]
            continue
        if "=" in name:
            continue  # exp= and unknown modifiers
        if name in ("a", "mx", "include"):
            budget[0] -= 1
            if budget[0] < 0:
                return None, f"{domain}: more than {SPF_LOOKUP_LIMIT} DNS lookups (permerror)"
        matched = await _matches(name, arg, domain, ip, lookup, budget)
        if matched is None:
            return None, f"{domain}: cannot evaluate '{term}'"
        if matched:
            return qualifier == "+", f"{domain}: '{term}' " + (
                "allows it" if qualifier == "+" else "does not allow it")
    if redirect is not None:
        budget[0] -= 1
        return await _evaluate(redirect, ip, lookup, budget)
    return False, f"{domain}: no term matches"


async def _matches(name: str, arg: str, domain: str,
                   ip: ipaddress.IPv4Address | ipaddress.IPv6Address, lookup: Lookup,
                   budget: list[int]) -> bool | None:
    if name == "all":
        return True
    if name in ("ip4", "ip6"):
        try:
            network = ipaddress.ip_network(arg, strict=False)
        except ValueError:
            return None
        return network.version == ip.version and ip in network
    target, _, cidr = (arg or domain).partition("/")
    if name == "include":
        allowed, _why = await _evaluate(target, ip, lookup, budget)
        return allowed
    if name not in ("a", "mx"):
        return None
    hosts = [target] if name == "a" else await lookup(target, "MX")
    rdtype = "A" if ip.version == 4 else "AAAA"
    for host in hosts:
        for address in await lookup(host, rdtype):
            network = ipaddress.ip_network(
                f"{address}/{cidr}" if ASCII_DIGITS.match(cidr) else address, strict=False)
            if ip in network:
                return True
    return False


def dmarc_policy(texts: list[str]) -> str | None:
    """The ``p=`` of a ``v=DMARC1`` record, or None without one."""
    for text in texts:
        tags = tag_list(text)
        if tags.get("v") == "DMARC1":
            return tags.get("p", "")
    return None


def tag_list(text: str) -> dict[str, str]:
    """``k=v; k=v`` (DKIM, DMARC): keys as given, values without inner whitespace."""
    tags: dict[str, str] = {}
    for part in text.split(";"):
        key, sep, value = part.partition("=")
        if sep:
            tags[key.strip()] = "".join(value.split())
    return tags
