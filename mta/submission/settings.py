"""The ``[submission]`` section: where the SMTP submission server listens, its certificate,
who may authenticate without TLS, and its limits."""

from __future__ import annotations

import functools
import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

from engine.settings_loader import duration, size
from engine.values import HostPort


@dataclass(frozen=True, slots=True)
class SubmissionSettings:
    # STARTTLS submission (RFC 6409), e.g. "0.0.0.0:587". The default stays on loopback and
    # off the privileged port; set listen = "" to turn it off.
    listen: HostPort | None = field(default_factory=lambda: HostPort("127.0.0.1", 2587))
    # Implicit TLS submission (RFC 8314), e.g. "0.0.0.0:465"; needs tls_cert and tls_key.
    listen_tls: HostPort | None = None
    # The name in the banner and the EHLO reply (default: [mta] ehlo_name).
    hostname: str | None = None
    # PEM files (relative to the config file's folder); STARTTLS is offered when both are set.
    tls_cert: Path | None = None
    tls_key: Path | None = None
    # Client addresses that may authenticate without TLS (local applications). Everyone else
    # must STARTTLS (or use listen_tls) before AUTH is even offered.
    allow_plain_auth_from: tuple[str, ...] = ("127.0.0.1", "::1")
    # Client networks that send without AUTH, as the API key with the given id, like Postfix's
    # mynetworks: for local programs that cannot authenticate (smtp-source, cron mail). The
    # key's scope, sender domains and rate apply as if it had logged in. Empty by default.
    trusted_clients: dict[str, str] = field(default_factory=dict)
    # Advertised with SIZE and enforced (552); at most [mta] max_message_size.
    max_message_size: int = size("10MiB")
    max_recipients: int = 100  # per transaction (452 beyond)
    max_sessions: int = 200  # concurrent SMTP sessions (421 beyond)
    max_auth_failures: int = 3  # per session; then 421 and the connection is closed
    idle_timeout: float = duration("60s")  # between commands, and for a whole DATA phase
    session_timeout: float = duration("10m")  # a session is closed after this long
    # Recipients per second per API key (a token bucket), up to burst at once; beyond, RCPT
    # answers 452 4.7.1 and the client tries those recipients again later. 0 turns it off.
    rate_limit_per_second: float = 100.0
    rate_limit_burst: int = 1000
    # Several `herald run --role submission` processes may share the ports (SO_REUSEPORT; the
    # kernel spreads connections). Each process keeps its own rate buckets.
    reuse_port: bool = False

    def __post_init__(self) -> None:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key must be set together")
        if self.listen_tls is not None and self.tls_cert is None:
            raise ValueError("listen_tls needs tls_cert and tls_key")
        if self.max_message_size < 1024:
            raise ValueError("max_message_size must be at least 1KiB")
        if not 1 <= self.max_recipients <= 1000:
            raise ValueError("max_recipients must be between 1 and 1000")
        if self.max_sessions < 1 or self.max_auth_failures < 1:
            raise ValueError("max_sessions and max_auth_failures must be at least 1")
        if self.idle_timeout <= 0 or self.session_timeout < self.idle_timeout:
            raise ValueError("need 0 < idle_timeout <= session_timeout")
        if self.rate_limit_per_second < 0 or self.rate_limit_burst < 0:
            raise ValueError("rate limits must not be negative")
        for text in self.allow_plain_auth_from:
            try:
                ipaddress.ip_network(text, strict=False)
            except ValueError:
                raise ValueError(f"allow_plain_auth_from: {text!r} is not an IP address or "
                                 "network") from None
        for text, key_id in self.trusted_clients.items():
            try:
                ipaddress.ip_network(text, strict=False)
            except ValueError:
                raise ValueError(f"trusted_clients: {text!r} is not an IP address or "
                                 "network") from None
            if not key_id.strip() or "_" in key_id:
                raise ValueError(f"trusted_clients.{text}: the value is a key id (the middle "
                                 "part of hk_ID_SECRET), not the key")
        if self.hostname is not None and not self.hostname.strip():
            raise ValueError("hostname must not be empty")

    def plain_auth_allowed(self, peer: str | None) -> bool:
        """May a client at ``peer`` (an IP address) authenticate without TLS?"""
        address = _address(peer)
        return address is not None and any(
            address in _network(text) for text in self.allow_plain_auth_from)

    def trusted_key_id(self, peer: str | None) -> str | None:
        """The key id a client at ``peer`` sends as without AUTH, if any."""
        address = _address(peer)
        if address is None:
            return None
        return next((key_id for text, key_id in self.trusted_clients.items()
                     if address in _network(text)), None)


@functools.lru_cache(maxsize=256)
def _network(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """Parsed once: every new session asks both questions above."""
    return ipaddress.ip_network(text, strict=False)


def _address(peer: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    if not peer:
        return None
    try:
        address = ipaddress.ip_address(peer)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address
