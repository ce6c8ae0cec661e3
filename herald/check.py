"""``herald check``: is this server set up to deliver? The config loads, and DNS says what
receivers will check: SPF for the From and bounce domains, each DKIM key's published half, DMARC,
the bounce domain's MX, and the sending IP's PTR matching the EHLO name (and back). With a
configured database URL, a note on its collation (``C`` is faster; optional).

Every finding is one line: ``ok`` or ``FAIL`` (with how to fix it) or ``warn``. Exit 0 when all
is well, 1 when something needs fixing, 69 when DNS cannot be reached (78, bad config, is the
CLI's). Lookups go through ``[mta] resolver`` when set.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import dns.asyncresolver
import dns.exception
import dns.resolver
import dns.reversename

from automation.errors import DefinitionError
from engine.database import connect_one
from engine.database_creation import FAST_COLLATIONS, database_collation
from engine.db_errors import database_errors
from engine.errors import DatabaseError
from engine.mailboxes import parse_mailbox
from herald.dns_records import dmarc_policy, spf_allows, spf_record, tag_list
from herald.exit_codes import ServiceUnavailable
from herald.identity import identity_problems, is_local_name
from herald.roles import load_catalog
from herald.settings import Settings, resolve_path
from mta.dkim.keys import load_private_key, normalize_domain, public_key_record
from mta.errors import DkimError

Level = Literal["ok", "warn", "FAIL"]


@dataclass(frozen=True, slots=True)
class Finding:
    level: Level
    what: str
    detail: str

    def line(self) -> str:
        return f"{self.level:<4} {self.what}: {self.detail}"


Add = Callable[[Finding], None]


class Dns:
    """TXT/A/AAAA/MX/PTR answers as strings; no answer is []; no server answering raises
    ServiceUnavailable."""

    def __init__(self, settings: Settings) -> None:
        mta = settings.mta
        if mta.resolver is not None:
            self.resolver = dns.asyncresolver.Resolver(configure=False)
            self.resolver.nameservers = [mta.resolver.host]
            self.resolver.port = mta.resolver.port
            self.where = f"the DNS server at {mta.resolver.host}:{mta.resolver.port}"
        else:
            self.resolver = dns.asyncresolver.Resolver()
            self.where = "the system's DNS servers (/etc/resolv.conf)"
        self.resolver.lifetime = min(mta.dns_timeout, 10.0)
        self.failed: list[str] = []

    async def __call__(self, name: str, rdtype: str) -> list[str]:
        try:
            answer = await self.resolver.resolve(name, rdtype, search=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return []
        except dns.resolver.NoNameservers:  # SERVFAIL/REFUSED from every server
            self.failed.append(f"{name} {rdtype}")
            return []
        except (dns.exception.Timeout, dns.resolver.LifetimeTimeout):
            raise ServiceUnavailable(f"DNS unreachable: no answer from {self.where} "
                                     f"for {name} {rdtype}") from None
        except dns.exception.DNSException as exc:
            self.failed.append(f"{name} {rdtype} ({exc})")
            return []
        if rdtype == "TXT":
            return [b"".join(r.strings).decode("utf-8", "replace") for r in answer]
        if rdtype == "MX":
            return [r.exchange.to_text(omit_final_dot=True).lower()
                    for r in sorted(answer, key=lambda r: r.preference)]
        if rdtype == "PTR":
            return [r.target.to_text(omit_final_dot=True).lower() for r in answer]
        return [r.to_text() for r in answer]


def sending_ip() -> str | None:
    """The address the kernel would send from (a UDP connect sends no packet)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(("192.0.2.1", 25))
            return str(probe.getsockname()[0])
    except OSError:
        return None


async def run_check(settings: Settings, ip: str | None) -> list[Finding]:
    findings: list[Finding] = []
    add = findings.append
    add(Finding("ok", "config", str(settings.config_path or "built-in defaults")))
    for problem in identity_problems(settings, ["mta", "automation"], route_exempts=False):
        add(Finding("FAIL", "identity", problem))
    if settings.mta.route is not None or settings.mta.routes:
        add(Finding("warn", "routing", "[mta] route/routes is set: mail goes there, not to the "
                                       "recipients' MX (fine for testing only)"))
    try:
        load_catalog(settings)
        add(Finding("ok", "workflows", str(resolve_path(settings,
                                                        settings.automation.workflows_dir))))
    except DefinitionError as exc:
        add(Finding("FAIL", "workflows", str(exc).splitlines()[0]))
    keys = _dkim_keys(settings, add)
    await _check_database_collation(settings, add)

    from_domain = _from_domain(settings)
    ehlo = settings.mta.ehlo_name.lower().rstrip(".")
    bounce = settings.mta.bounce_domain.lower().rstrip(".")
    if ip is None:
        add(Finding("warn", "sending IP", "cannot tell this server's address; pass --ip"))
    lookup = Dns(settings)
    domains = [d for d in dict.fromkeys([from_domain, bounce, *(k[0] for k in keys)])
               if d and not is_local_name(d)]
    if ip is not None:
        for domain in domains:
            await _check_spf(domain, ip, ehlo, lookup, add)
    for domain, selector, record in keys:
        await _check_dkim(domain, selector, record, lookup, add)
    if from_domain and not is_local_name(from_domain):
        await _check_dmarc(from_domain, keys, bounce, lookup, add)
    if not is_local_name(bounce):
        await _check_mx(bounce, ehlo, ip, lookup, add)
    if ip is not None and not is_local_name(ehlo):
        await _check_ptr(ip, ehlo, lookup, add)
    for failed in lookup.failed:
        add(Finding("FAIL", "DNS", f"{failed}: the server answered SERVFAIL/REFUSED; is the "
                                   "zone served and its DNSSEC valid?"))
    return findings


async def _check_database_collation(settings: Settings, add: Add) -> None:
    """A configured database's collation: "C" lets Postgres compare text keys by bytes (the
    embedded cluster is made so). Anything else is a note, never a failure."""
    url = settings.engine.database_url
    if url is None:
        return
    try:
        connection = await connect_one(url, timeout=settings.engine.database_connect_timeout)
        try:
            with database_errors():
                collation = await database_collation(connection)
        finally:
            await connection.close()
    except DatabaseError as exc:
        add(Finding("warn", "database", f"cannot read its collation: {exc}"))
        return
    if collation in FAST_COLLATIONS:
        add(Finding("ok", "database collation", collation))
    else:
        add(Finding("warn", "database collation",
                    f"{collation}: optional, but text keys compare faster in a database "
                    "created with TEMPLATE template0 LC_COLLATE 'C' (see README)"))


def _from_domain(settings: Settings) -> str | None:
    try:
        return parse_mailbox(settings.automation.from_address)[1].ascii_domain.lower()
    except ValueError:
        return None


def _dkim_keys(settings: Settings, add: Add) -> list[tuple[str, str, str]]:
    """(domain, selector, the TXT value the private key implies) for each loadable key."""
    keys = []
    if not settings.mta.dkim:
        add(Finding("FAIL", "DKIM", "no [[mta.dkim]] keys: mail goes out unsigned and fails "
                                    "DMARC; `herald dkim keygen` or `herald init` makes them"))
    for key in settings.mta.dkim:
        path = resolve_path(settings, key.key_file)
        try:
            private = load_private_key(path, key.algorithm)
        except DkimError as exc:
            add(Finding("FAIL", f"DKIM {key.selector}._domainkey.{key.domain}", str(exc)))
            continue
        record = public_key_record(private, "rsa" if key.algorithm == "rsa" else "ed25519")
        keys.append((normalize_domain(key.domain), key.selector.lower(), record))
    return keys


async def _check_spf(domain: str, ip: str, ehlo: str, lookup: Dns, add: Add) -> None:
    allowed, why = await spf_allows(domain, ip, lookup)
    what = f"SPF {domain}"
    if allowed:
        add(Finding("ok", what, f"allows {ip} ({why})"))
    elif allowed is None:
        add(Finding("warn", what, f"cannot tell whether it allows {ip}: {why}"))
    else:
        record, _problem = spf_record(await lookup(domain, "TXT"))
        fix = (f"add a:{ehlo} (or ip4:{ip}) before the 'all' term of {record!r}" if record
               else f'publish {domain}. IN TXT "v=spf1 a:{ehlo} ~all"')
        add(Finding("FAIL", what, f"does not allow {ip} ({why}); {fix}"))


async def _check_dkim(domain: str, selector: str, expected: str, lookup: Dns,
                      add: Add) -> None:
    name = f"{selector}._domainkey.{domain}"
    texts = await lookup(name, "TXT")
    published = [tag_list(text) for text in texts if "p=" in text]
    want = tag_list(expected)["p"]
    if not published:
        add(Finding("FAIL", f"DKIM {name}", f'not published; publish {name}. IN TXT "{expected}"'
                                           " (herald init printed it)"))
    elif any(tags.get("p") == want for tags in published):
        add(Finding("ok", f"DKIM {name}", "the published key matches the private key"))
    else:
        add(Finding("FAIL", f"DKIM {name}", "the published key is not this private key's "
                                           "public half: signatures will fail; publish "
                                           f'"{expected}"'))


async def _check_dmarc(domain: str, keys: list[tuple[str, str, str]], bounce: str,
                       lookup: Dns, add: Add) -> None:
    policy = dmarc_policy(await lookup(f"_dmarc.{domain}", "TXT"))
    if policy is None:
        add(Finding("FAIL", f"DMARC {domain}", f'no record; publish _dmarc.{domain}. IN TXT '
                                              f'"v=DMARC1; p=none; rua=mailto:dmarc@{domain}"'))
    else:
        add(Finding("ok", f"DMARC {domain}", f"p={policy or '(missing)'}"))
    aligned = any(d == domain or domain.endswith("." + d) or d.endswith("." + domain)
                  for d, _s, _r in keys)
    if not aligned and not (bounce == domain or bounce.endswith("." + domain)):
        add(Finding("FAIL", f"DMARC {domain}", "neither a DKIM key nor the bounce domain is "
                                              f"aligned with {domain}: add a [[mta.dkim]] key "
                                              f"for {domain}"))


async def _check_mx(bounce: str, ehlo: str, ip: str | None, lookup: Dns,
                    add: Add) -> None:
    hosts = await lookup(bounce, "MX")
    if not hosts or hosts == [""]:
        add(Finding("FAIL", f"MX {bounce}", "no MX: bounces and complaints cannot come back; "
                                           f"publish {bounce}. IN MX 10 {ehlo}."))
        return
    if ip is None:
        add(Finding("ok", f"MX {bounce}", ", ".join(hosts)))
        return
    rdtype = "AAAA" if ":" in ip else "A"
    for host in hosts:
        if ip in await lookup(host, rdtype):
            add(Finding("ok", f"MX {bounce}", f"{host} is this server ({ip})"))
            return
    add(Finding("warn", f"MX {bounce}", f"{', '.join(hosts)}: none resolves to {ip}; fine if "
                                        "another host relays bounces here, else point it at "
                                        "this server"))


async def _check_ptr(ip: str, ehlo: str, lookup: Dns, add: Add) -> None:
    names = await lookup(dns.reversename.from_address(ip).to_text(), "PTR")
    what = f"PTR {ip}"
    if not names:
        add(Finding("FAIL", what, f"no reverse DNS; ask whoever runs the IP to set {ip} -> "
                                  f"{ehlo} (many receivers refuse mail without it)"))
        return
    if ehlo not in names:
        add(Finding("FAIL", what, f"names {', '.join(names)}, not the EHLO name {ehlo}; set "
                                  f"[mta] ehlo_name = \"{names[0]}\" or change the PTR"))
        return
    rdtype = "AAAA" if ipaddress.ip_address(ip).version == 6 else "A"
    if ip not in await lookup(ehlo, rdtype):
        add(Finding("FAIL", what, f"{ehlo} does not resolve back to {ip}; publish "
                                  f"{ehlo}. IN {rdtype} {ip}"))
        return
    add(Finding("ok", what, f"{ehlo}, and back"))
