"""Outbound HTTP that dials only the address it vetted (no DNS-rebinding gap).

:class:`GuardedTransport` is an httpx transport: for each request it resolves the URL's host once
(``[webhooks] resolver``, else the system resolver), vets every address
(:func:`engine.outbox.targets.vet`: public, or the host allow-listed), then sends the request to
that very address: the URL's host becomes the IP, while the ``Host`` header, TLS SNI and the name
the certificate must match stay the original host name. Connections are not kept alive, so one
connection never carries two host names. Refusals raise :class:`TargetRefused` (not worth
retrying); a name that does not resolve now raises :class:`TargetUnresolved`.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from dataclasses import dataclass

import dns.asyncresolver
import dns.exception
import dns.resolver
import httpx

from engine.errors import HeraldError
from engine.outbox.settings import WebhooksSettings
from engine.outbox.targets import TargetRefused, parse_allow, parse_url, vet
from engine.values import HostPort

__all__ = ["GuardedTransport", "HostResolver", "OutboundPolicy", "TargetRefused",
           "TargetUnresolved", "guarded_client", "vet_url"]


class TargetUnresolved(HeraldError):
    """The target's host name has no answer right now (retry later)."""


class HostResolver:
    """A host's A and AAAA addresses from one DNS server, or the system resolver."""

    def __init__(self, nameserver: HostPort | None = None, timeout: float = 5.0) -> None:
        self.timeout = timeout
        self._dns: dns.asyncresolver.Resolver | None = None
        if nameserver is not None:
            self._dns = dns.asyncresolver.Resolver(configure=False)
            self._dns.nameservers = [nameserver.host]
            self._dns.port = nameserver.port
            self._dns.lifetime = timeout

    async def resolve(self, host: str, port: int) -> list[str]:
        if self._dns is None:
            return await self._system(host, port)
        addresses: list[str] = []
        failures = []
        for rdtype in ("A", "AAAA"):
            try:
                answer = await self._dns.resolve(host, rdtype, search=False)
            except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
                continue
            except dns.exception.DNSException as exc:
                failures.append(f"{rdtype}: {type(exc).__name__}")
                continue
            addresses.extend(rdata.to_text() for rdata in answer)
        if not addresses:
            detail = "; ".join(failures) if failures else "no A or AAAA record"
            raise TargetUnresolved(f"cannot resolve {host}: {detail}")
        return addresses

    async def _system(self, host: str, port: int) -> list[str]:
        try:
            async with asyncio.timeout(self.timeout):
                infos = await asyncio.get_running_loop().getaddrinfo(
                    host, port, type=socket.SOCK_STREAM)
        except TimeoutError:
            raise TargetUnresolved(f"cannot resolve {host}: no answer within "
                                   f"{self.timeout:g}s") from None
        except OSError as exc:
            raise TargetUnresolved(f"cannot resolve {host}: {exc.strerror or exc}") from None
        return list(dict.fromkeys(str(info[4][0]) for info in infos))


async def vet_url(url: str, allow: frozenset[str], resolver: HostResolver) -> str:
    """The address ``url`` would be sent to, or :class:`TargetRefused` /
    :class:`TargetUnresolved`."""
    target = parse_url(url)
    addresses = [target.host] if target.literal else await resolver.resolve(
        target.host, target.port)
    return vet(target, addresses, allow)


class GuardedTransport(httpx.AsyncBaseTransport):
    def __init__(self, allow: frozenset[str], resolver: HostResolver,
                 verify: bool | str | ssl.SSLContext = True) -> None:
        self.allow = allow
        self.resolver = resolver
        self._inner = httpx.AsyncHTTPTransport(
            verify=verify, trust_env=False,
            limits=httpx.Limits(max_keepalive_connections=0))

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        target = parse_url(str(request.url))
        address = await vet_url(str(request.url), self.allow, self.resolver)
        request.url = request.url.copy_with(host=address)  # the Host header keeps the name
        request.extensions = {**request.extensions, "sni_hostname": target.host}
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


def guarded_client(allow: frozenset[str], resolver: HostResolver, timeout: float = 10.0,
                   verify: bool | str | ssl.SSLContext = True) -> httpx.AsyncClient:
    """An httpx client for any outbound call: vetted addresses, no redirects, no proxies."""
    return httpx.AsyncClient(transport=GuardedTransport(allow, resolver, verify),
                             follow_redirects=False, trust_env=False, timeout=timeout)


@dataclass(frozen=True, slots=True)
class OutboundPolicy:
    """``[webhooks] allow`` and resolver, handed to every part of Herald that makes HTTP calls
    (the outbox, MTA-STS policy fetches, TLS-RPT reports)."""

    allow: frozenset[str]
    resolver: HostResolver

    @classmethod
    def from_settings(cls, settings: WebhooksSettings) -> OutboundPolicy:
        return cls(parse_allow(settings.allow), HostResolver(settings.resolver))

    def client(self, timeout: float = 10.0,
               verify: bool | str | ssl.SSLContext = True) -> httpx.AsyncClient:
        return guarded_client(self.allow, self.resolver, timeout, verify)
