"""``herald init --domain DOMAIN [--dir DIR]``: a commented config for one sending domain, its
DKIM keys (RSA-2048 and Ed25519) and HMAC secrets as systemd credentials, and every DNS record
to publish. Never overwrites a file.

Written to DIR (default /etc/herald):

* ``herald.toml``: identities under DOMAIN (``mail.DOMAIN`` says EHLO, ``bounces.DOMAIN`` takes
  the envelope sender and the bounces); secrets as ``credential:NAME``;
* ``credentials/`` (mode 0700): the two DKIM keys, ``bounce-secret``, ``link-key``;
* ``credentials.conf``: the ``LoadCredential=`` drop-in for ``herald@.service``;
* ``dns-records.txt``: the records, as printed.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from engine.errors import HeraldError
from herald.dns_records import Identity, Record, records_to_publish
from herald.settings import SECTIONS, SHIPPED
from mta.dkim.keys import dns_txt_record, normalize_domain, write_keypair
from mta.errors import DkimError


class InitError(HeraldError):
    """``herald init`` cannot write what it must (a file exists, a directory is not writable)."""


@dataclass(frozen=True, slots=True)
class Plan:
    domain: str
    directory: Path
    ip: str | None
    selectors: tuple[tuple[str, str], ...]  # (selector, algorithm)

    @property
    def ehlo_name(self) -> str:
        return f"mail.{self.domain}"

    @property
    def bounce_domain(self) -> str:
        return f"bounces.{self.domain}"

    def key_name(self, selector: str) -> str:
        return f"{self.domain}.{selector}.pem"


def plan(domain: str, directory: Path, ip: str | None, now: datetime | None = None) -> Plan:
    try:
        name = normalize_domain(domain)
    except DkimError as exc:
        raise InitError(f"--domain: {exc}") from None
    if "." not in name:
        raise InitError(f"--domain: {domain!r} is not a public domain name (e.g. example.com)")
    stamp = (now or datetime.now(UTC)).strftime("%Y%m")
    return Plan(name, directory, ip, ((f"r{stamp}", "rsa"), (f"e{stamp}", "ed25519")))


def initialise(plan: Plan) -> list[Record]:
    """Write everything; InitError before writing anything if a file exists already."""
    directory = plan.directory
    credentials = directory / "credentials"
    files = [directory / "herald.toml", directory / "credentials.conf",
             directory / "dns-records.txt", credentials / "bounce-secret",
             credentials / "link-key",
             *(credentials / plan.key_name(selector) for selector, _ in plan.selectors)]
    existing = [str(path) for path in files if path.exists()]
    if existing:
        raise InitError(f"{existing[0]} already exists; refusing to overwrite (move it away, "
                        "or pick another --dir)")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        credentials.mkdir(mode=0o700, exist_ok=True)
    except OSError as exc:
        raise InitError(f"cannot create {credentials}: {exc.strerror}") from None
    dkim: list[tuple[str, str]] = []
    for selector, algorithm in plan.selectors:
        try:
            path, _zone_line = write_keypair(plan.domain, selector, algorithm, credentials)
        except DkimError as exc:
            raise InitError(str(exc)) from None
        dkim.append((selector, dns_txt_record(path.read_bytes(), algorithm)))
    _write(credentials / "bounce-secret", secrets.token_urlsafe(32) + "\n", 0o600)
    _write(credentials / "link-key", f"k1:{secrets.token_urlsafe(32)}\n", 0o600)
    _write(directory / "herald.toml", config_text(plan), 0o644)  # no secrets in it
    _write(directory / "credentials.conf", dropin_text(plan), 0o644)
    identity = Identity(plan.domain, plan.ehlo_name, plan.bounce_domain, tuple(dkim), plan.ip)
    records = records_to_publish(identity, f"dmarc-reports@{plan.domain}")
    _write(directory / "dns-records.txt", records_text(records), 0o644)
    return records


def _write(path: Path, text: str, mode: int) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        raise InitError(f"{path} already exists; refusing to overwrite") from None
    except OSError as exc:
        raise InitError(f"cannot write {path}: {exc.strerror}") from None
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(text)


def records_text(records: list[Record]) -> str:
    lines = []
    for record in records:
        lines.append(f"; {'(optional) ' if record.optional else ''}{record.why}")
        lines.append(record.zone_line())
    return "\n".join(lines) + "\n"


def dropin_text(plan: Plan) -> str:
    credentials = plan.directory.resolve() / "credentials"
    names = ["bounce-secret", "link-key", *(plan.key_name(s) for s, _ in plan.selectors)]
    lines = "\n".join(f"LoadCredential={name}:{credentials / name}" for name in names)
    return ("# Secrets for every Herald unit, written by `herald init`. Install with:\n"
            "#   install -D -m 0644 credentials.conf "
            "/etc/systemd/system/herald@.service.d/credentials.conf\n"
            "#   systemctl daemon-reload\n"
            f"[Service]\n{lines}\n")


def config_text(plan: Plan) -> str:
    domain, ehlo, bounces = plan.domain, plan.ehlo_name, plan.bounce_domain
    dkim = "\n".join(
        f'[[mta.dkim]]\ndomain = "{domain}"\nselector = "{selector}"\n'
        f'key_file = "credential:{plan.key_name(selector)}"\nalgorithm = "{algorithm}"\n'
        for selector, algorithm in plan.selectors)
    inbound = ""
    if "inbound" in SECTIONS:
        inbound = f'''
[inbound]
# The SMTP server for {bounces} (its MX points here): bounces, complaints, mailto unsubscribes.
listen = "0.0.0.0:25"
feedback_addresses = ["fbl@{bounces}"]   # give this address to feedback-loop programmes
'''
    return f'''# Herald configuration for {domain}, written by `herald init`.
# Every key and its default: {SHIPPED / "herald.toml"}
# Any key can be overridden by HERALD_<SECTION>_<KEY>. Secrets are "credential:NAME": read from
# $CREDENTIALS_DIRECTORY (LoadCredential= in credentials.conf), or from credentials/ next to this
# file when a command is run by hand. Check the set-up with `herald check`.

[engine]
# With no database_url, an embedded Postgres runs in the data directory (/var/lib/herald as a
# service). For a Postgres server of your own:
# database_url = "postgresql://herald@127.0.0.1:5432/herald"
log_level = "info"

[http]
listen = "127.0.0.1:8025"
# The URL recipients reach this server at (unsubscribe links). Put a TLS reverse proxy in front
# of the listen address and change this if it is not {ehlo}.
public_url = "https://{ehlo}"
link_keys = ["credential:link-key"]   # signs links in mail (rotate: add a new key first)

[mta]
ehlo_name = "{ehlo}"          # this server's name: its IP's PTR must say the same
bounce_domain = "{bounces}"   # envelope senders b-<token>@{bounces}; MX -> this server
bounce_secret = "credential:bounce-secret"
# Messages are signed with both keys (receivers use the strongest they support).
{dkim}
[automation]
from_address = "{domain} <news@{domain}>"
# The workflows and templates default to the examples shipped with Herald. To write your own,
# copy them ({SHIPPED / "workflows"}, {SHIPPED / "templates"}) and set:
# workflows_dir = "/etc/herald/workflows"
# templates_dir = "/etc/herald/templates"
link_domains = ["{domain}"]   # links from event data are allowed only to these domains
{inbound}'''
