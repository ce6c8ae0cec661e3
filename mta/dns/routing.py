"""Where a recipient domain's mail goes: the configured route override or its MX hosts."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from mta.dns.resolver import MxResolver
from mta.relays import Relay
from mta.settings import MtaSettings


@dataclass(frozen=True, slots=True)
class Destination:
    site: str  # shaping and scheduling key: the MX host set, or the route override
    hosts: tuple[str, ...]  # in the order to try
    port: int
    tls_required: bool
    relay: Relay | None = None  # a route override: its TLS and AUTH (mta/relays.py)


def is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class Router:
    def __init__(self, settings: MtaSettings, resolver: MxResolver) -> None:
        self._settings = settings
        self._resolver = resolver
        self._tls_required = frozenset(d.lower() for d in settings.tls_required_domains)

    async def destination(self, domain: str) -> Destination:
        """Raises the resolver's DnsPermanentFailure / DnsTemporaryFailure."""
        tls_required = self._settings.tls == "required" or domain in self._tls_required
        override = self._settings.route_for(domain)
        if override is not None:
            return Destination(f"route:{override}", (override.host,), override.port,
                               tls_required, override)
        route = await self._resolver.route(domain)
        return Destination(route.site, route.hosts, self._settings.smtp_port, tls_required)

    async def addresses(self, host: str) -> list[str]:
        if is_ip(host):
            return [host]
        return await self._resolver.addresses(host)
