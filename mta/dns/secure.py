"""The DNS lookups transport security needs: TXT, TLSA and "is this MX answer DNSSEC-secure".

Herald does not validate DNSSEC itself: it asks the configured resolver (``[mta] resolver``, or
the system's) with the AD and DO bits set and trusts the AD bit in the answer (RFC 6840 §5.7), as
Postfix does. So DANE is only as good as the path to that resolver: run a validating resolver on
loopback. Answers are cached by TTL (clamped) in a bounded cache; NXDOMAIN and NODATA are empty
answers; other failures raise :class:`~mta.dns.resolver.DnsTemporaryFailure` and are not cached.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import dns.asyncresolver
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rdatatype
import dns.resolver

from engine.errors import ConfigError
from mta.dns.resolver import (
    DnsPermanentFailure,
    DnsTemporaryFailure,
    clamp_ttl,
    to_dns_name,
    translate,
)

T = TypeVar("T")
MAX_RECORDS = 64  # per answer: a TXT or TLSA RRset is a handful of records


@dataclass(frozen=True, slots=True)
class TlsaRecord:
    """One TLSA record (RFC 6698): usage, selector, matching type and association data."""

    usage: int
    selector: int
    matching: int
    data: bytes

    def __str__(self) -> str:
        return f"{self.usage} {self.selector} {self.matching} {self.data.hex()}"


@dataclass(frozen=True, slots=True)
class SecureAnswer(Generic[T]):
    """Records (empty for NXDOMAIN or NODATA) and whether the resolver set the AD bit."""

    records: tuple[T, ...]
    authenticated: bool


class SecureResolver:
    """TXT and TLSA lookups that report the AD bit; ``nameserver`` as for ``MxResolver``."""

    def __init__(self, nameserver: tuple[str, int] | None = None, timeout: float = 5.0,
                 cache_size: int = 20_000, min_ttl: float = 30, max_ttl: float = 3600,
                 clock: Callable[[], float] = time.monotonic) -> None:
        try:
            resolver = (dns.asyncresolver.Resolver() if nameserver is None
                        else dns.asyncresolver.Resolver(configure=False))
        except (dns.exception.DNSException, OSError) as exc:
            raise ConfigError(f"mta.resolver: cannot use the system resolver: {exc}") from None
        if nameserver is not None:
            resolver.nameservers = [nameserver[0]]
            resolver.port = nameserver[1]
        resolver.cache = None
        resolver.lifetime = timeout
        resolver.timeout = min(resolver.timeout, timeout)
        resolver.flags = dns.flags.RD | dns.flags.AD
        resolver.use_edns(0, dns.flags.DO, 1232)
        self._resolver = resolver
        self._size = cache_size
        self._min_ttl = min_ttl
        self._max_ttl = max_ttl
        self._clock = clock
        self._cache: OrderedDict[tuple[str, int], tuple[float, SecureAnswer[Any]]] = (
            OrderedDict())

    async def txt(self, name: str) -> SecureAnswer[str]:
        """Each TXT record's strings joined (RFC 7208 style); raises DnsTemporaryFailure."""
        answer = await self._lookup(name, dns.rdatatype.TXT)
        records = tuple(b"".join(r.strings).decode("utf-8", "replace")
                        for r in answer.records)
        return SecureAnswer(records, answer.authenticated)

    async def tlsa(self, name: str) -> SecureAnswer[TlsaRecord]:
        answer = await self._lookup(name, dns.rdatatype.TLSA)
        records = tuple(TlsaRecord(int(r.usage), int(r.selector), int(r.mtype), bytes(r.cert))
                        for r in answer.records)
        return SecureAnswer(records, answer.authenticated)

    async def mx_authenticated(self, domain: str) -> bool:
        """Whether the domain's MX answer (or its denial) came with the AD bit."""
        return (await self._lookup(domain, dns.rdatatype.MX)).authenticated

    async def _lookup(self, name: str, rdtype: dns.rdatatype.RdataType) -> SecureAnswer[Any]:
        qname, text = to_dns_name(name)
        key = (text, int(rdtype))
        now = self._clock()
        cached = self._cache.get(key)
        if cached is not None and cached[0] > now:
            self._cache.move_to_end(key)
            return cached[1]
        try:
            answer = await self._resolver.resolve(qname, rdtype, raise_on_no_answer=False)
        except dns.resolver.NXDOMAIN as exc:
            responses = exc.kwargs.get("responses") or {}
            result: SecureAnswer[Any] = SecureAnswer((), _ad(responses.get(qname)))
            ttl = self._min_ttl
        except dns.exception.DNSException as exc:
            failure = translate(text, exc)
            if isinstance(failure, DnsPermanentFailure):
                return SecureAnswer((), False)
            raise failure from None
        except OSError as exc:
            raise DnsTemporaryFailure(text, "no_nameservers", str(exc)) from None
        else:
            records = tuple(list(answer.rrset or ())[:MAX_RECORDS])
            result = SecureAnswer(records, _ad(answer.response))
            ttl = float(answer.chaining_result.minimum_ttl) if records else self._min_ttl
        self._cache[key] = (now + clamp_ttl(ttl, self._min_ttl, self._max_ttl), result)
        self._cache.move_to_end(key)
        while len(self._cache) > self._size:
            self._cache.popitem(last=False)
        return result


def _ad(response: dns.message.Message | None) -> bool:
    return response is not None and bool(response.flags & dns.flags.AD)
