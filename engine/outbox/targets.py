"""Which outbound HTTP targets may be called, pure: URL shape, the allow list, public addresses.

A host name resolves to addresses (see :mod:`engine.outbox.transport`); every one of them must be
public (not private, loopback, link-local, CGNAT, multicast, unspecified or reserved) unless the
host is in ``[webhooks] allow`` as ``host`` or ``host:port``. The address checked is the address
dialled, so a name cannot resolve to a public address for the check and a private one later.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit

from engine.errors import HeraldError

MAX_URL = 2048
CGNAT = ipaddress.ip_network("100.64.0.0/10")


class TargetRefused(HeraldError):
    """An outbound HTTP target that may not be called (shape, allow list, address)."""


@dataclass(frozen=True, slots=True)
class Target:
    scheme: str
    host: str  # lower-case; an IP literal without brackets
    port: int

    @property
    def endpoint(self) -> str:
        """What per-endpoint limits count by."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"

    @property
    def literal(self) -> bool:
        try:
            ipaddress.ip_address(self.host)
        except ValueError:
            return False
        return True


def parse_url(url: object) -> Target:
    """An ``http(s)://host[:port]/...`` URL without credentials, or :class:`TargetRefused`."""
    if not isinstance(url, str) or not url:
        raise TargetRefused("the URL must be a non-empty string")
    if len(url) > MAX_URL:
        raise TargetRefused(f"the URL is longer than {MAX_URL} characters")
    if any(ord(c) <= 0x20 or ord(c) == 0x7F for c in url):
        raise TargetRefused("the URL must not contain spaces or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise TargetRefused(f"the URL does not parse: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise TargetRefused("only http:// and https:// URLs can be called")
    if not parts.hostname:
        raise TargetRefused("the URL has no host")
    if parts.username is not None or parts.password is not None:
        raise TargetRefused("the URL must not carry a user name or password")
    if parts.fragment:
        raise TargetRefused("the URL must not have a #fragment")
    return Target(parts.scheme, parts.hostname.lower().rstrip("."),
                  port or (443 if parts.scheme == "https" else 80))


def parse_allow(entries: tuple[str, ...]) -> frozenset[str]:
    """``host`` or ``host:port`` entries (``[v6]:port`` for IPv6 literals), lower-cased."""
    allowed = set()
    for entry in entries:
        text = entry.strip().lower()
        host, port, has_port = text, "", False
        if text.startswith("["):
            host, _, rest = text[1:].partition("]")
            if rest and not rest.startswith(":"):
                raise ValueError(f"allow: {entry!r} is not 'host' or 'host:port'")
            port, has_port = rest[1:], bool(rest)
        elif text.count(":") == 1:
            host, port = text.split(":")
            has_port = True
        host = host.rstrip(".")
        if not host or any(c.isspace() or c in "/@?#[]" for c in host):
            raise ValueError(f"allow: {entry!r} is not 'host' or 'host:port'")
        if has_port and not (port.isascii() and port.isdigit() and 0 < int(port) < 65536):
            raise ValueError(f"allow: {entry!r} has a bad port")
        allowed.add(f"{host}:{int(port)}" if has_port else host)
    return frozenset(allowed)


def allowed(target: Target, allow: frozenset[str]) -> bool:
    return target.host in allow or f"{target.host}:{target.port}" in allow


def public(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if isinstance(ip, ipaddress.IPv4Address) and ip in CGNAT:
        return False
    return ip.is_global and not ip.is_multicast and not ip.is_unspecified


def vet(target: Target, addresses: list[str], allow: frozenset[str]) -> str:
    """The address to dial: the first one, when every address is public or the target is
    allowed; else :class:`TargetRefused` naming the address."""
    if not addresses:
        raise TargetRefused(f"{target.host} has no address")
    if not allowed(target, allow):
        for address in addresses:
            if not public(address):
                raise TargetRefused(
                    f"{target.host} resolves to non-public address {address} (list "
                    f"'{target.host}' or '{target.host}:{target.port}' in [webhooks] allow to "
                    "permit it)")
    return addresses[0]
