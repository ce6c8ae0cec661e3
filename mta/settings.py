"""The ``[mta]`` section: delivery identity, routing, DKIM keys, limits and retries."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from engine.errors import ConfigError
from engine.settings_loader import duration, size
from engine.values import HostPort
from mta.relays import Relay

TLS_MODES = ("opportunistic", "required", "none")


@dataclass(frozen=True, slots=True)
class DkimKeySettings:
    """One ``[[mta.dkim]]`` table: a signing key for a From domain."""

    domain: str
    selector: str
    key_file: Path
    algorithm: str = "rsa"

    def __post_init__(self) -> None:
        if self.algorithm not in ("rsa", "ed25519"):
            raise ValueError("algorithm must be 'rsa' or 'ed25519'")
        if not self.domain or not self.selector:
            raise ValueError("domain and selector are required")


@dataclass(frozen=True, slots=True)
class MtaSettings:
    ehlo_name: str = "localhost"
    bounce_domain: str = "localhost"
    # Secret for the HMAC in bounce addresses; generated and kept in the database when unset.
    bounce_secret: str | None = None
    # Send everything to this server instead of the recipients' MX (staging, tests, smarthost):
    # "HOST:PORT", "smtp://[USER@]HOST[:587]" (STARTTLS), "smtps://[USER@]HOST[:465]" (implicit
    # TLS), or a table { url = "smtps://USER@HOST", password = "credential:NAME" } for AUTH
    # (mta/relays.py).
    route: Relay | None = None
    # Per-domain overrides, in the same forms: {"example.com" = "127.0.0.1:2525"}.
    routes: dict[str, Relay] = field(default_factory=dict)
    # DNS server to ask instead of the system resolver ("HOST:PORT").
    resolver: HostPort | None = None
    dns_timeout: float = duration("10s")
    # STARTTLS: opportunistic by default; domains listed here require it.
    tls: str = "opportunistic"
    tls_required_domains: tuple[str, ...] = ()
    # Per destination: TLS with a certificate valid for the MX host name, or no STARTTLS at all.
    # These local settings win over MTA-STS and DANE (mta/tls/policy.py).
    tls_verified_domains: tuple[str, ...] = ()
    tls_skip_domains: tuple[str, ...] = ()
    # Certificates verify against the system trust store plus this PEM bundle (private CAs,
    # tests); the same trust applies to MTA-STS policy fetches and TLS-RPT HTTPS posts.
    tls_ca_file: Path | None = None
    # MTA-STS (RFC 8461): the _mta-sts TXT record, then the policy over HTTPS, cached in
    # Postgres by id and max_age. The port is 443 on the Internet; the host is resolved
    # through [mta] resolver like every other name.
    mta_sts: bool = True
    mta_sts_port: int = 443
    mta_sts_timeout: float = duration("10s")
    mta_sts_max_bytes: int = size("64KiB")
    mta_sts_recheck: float = duration("1h")  # look at the TXT record's id again after this
    # DANE (RFC 7672): TLSA records count only when the resolver sets the AD bit, so point
    # [mta] resolver at a DNSSEC-validating resolver you trust (e.g. unbound on 127.0.0.1).
    dane: bool = True
    # TLS-RPT (RFC 8460): count sessions per policy domain, send daily reports to the rua.
    tls_rpt: bool = True
    tls_rpt_organization: str | None = None  # default: ehlo_name
    tls_rpt_contact: str | None = None  # default: postmaster@<bounce_domain>
    tls_rpt_from: str | None = None  # default: tls-reports@<bounce_domain>
    dkim: tuple[DkimKeySettings, ...] = ()
    dkim_workers: int = 2  # signing processes
    # Traffic shaping rules (TOML); relative paths are resolved against the config file.
    shaping_file: Path | None = Path("config/shaping.toml")
    # Default limits for a destination site no shaping rule matches.
    max_connections_per_site: int = 10
    max_messages_per_connection: int = 100
    connection_idle_timeout: float = duration("30s")
    # The in-memory active window (Postfix's active queue) and per-site ready window.
    active_window: int = 5000
    site_window: int = 1000
    claim_batch: int = 500
    lease: float = duration("2m")
    # Retries: first retry after retry_initial, doubling up to retry_max; expiry after expire.
    retry_initial: float = duration("5m")
    retry_max: float = duration("4h")
    expire: float = duration("4d")
    throttle_backoff: float = duration("2m")
    max_message_size: int = size("10MiB")
    # Suppress an address after this many soft bounces (mailbox full, ...) within the window
    # (0: never). Synchronous 5xx soft bounces and asynchronous DSNs both count.
    soft_bounce_limit: int = 5
    soft_bounce_window: float = duration("30d")
    smtp_port: int = 25

    def __post_init__(self) -> None:
        if self.tls not in TLS_MODES:
            raise ValueError(f"tls must be one of {', '.join(TLS_MODES)}")
        # Routes given in code as "HOST:PORT" strings or HostPort values become Relays.
        try:
            if self.route is not None and not isinstance(self.route, Relay):
                object.__setattr__(self, "route", Relay.from_setting(self.route, "route"))
            object.__setattr__(self, "routes", {
                domain: Relay.from_setting(target, f"routes.{domain}")
                for domain, target in self.routes.items()})
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        if self.retry_initial <= 0 or self.retry_max < self.retry_initial:
            raise ValueError("need 0 < retry_initial <= retry_max")
        if self.active_window < self.claim_batch or self.site_window < 1:
            raise ValueError("need active_window >= claim_batch and site_window >= 1")
        if self.soft_bounce_limit < 0 or self.soft_bounce_window <= 0:
            raise ValueError("need soft_bounce_limit >= 0 and soft_bounce_window > 0")
        if self.lease < 5:
            raise ValueError("lease must be at least 5s")
        if not 0 < self.mta_sts_port < 65536:
            raise ValueError("mta_sts_port must be a TCP port")
        if not 0 < self.mta_sts_timeout <= 300 or not 1024 <= self.mta_sts_max_bytes <= 1 << 20:
            raise ValueError("need 0 < mta_sts_timeout <= 300s and 1KiB <= mta_sts_max_bytes "
                             "<= 1MiB")

    def route_for(self, domain: str) -> Relay | None:
        return self.routes.get(domain, self.route)


def retry_delay(settings: MtaSettings, attempt: int) -> float:
    """Seconds before retry number ``attempt`` (1-based): initial, doubling, capped."""
    return float(min(settings.retry_max, settings.retry_initial * (2 ** max(0, attempt - 1))))


