"""MX resolution: where to deliver mail for a domain (RFC 5321 section 5.1, RFC 7505 null MX).

``MxResolver.route(domain)`` answers the ordered list of hosts to try, and
``MxResolver.addresses(host)`` their IP addresses, both cached by DNS TTL in bounded LRU caches,
with concurrent lookups of one name sharing a single query. Every dnspython exception is translated
here into ``DnsPermanentFailure`` (bounce) or ``DnsTemporaryFailure`` (defer).

The decisions (ordering, null MX, the site key, combining A/AAAA answers) are pure functions below;
``MxResolver`` is the thin I/O shell around them.

Domains are converted to ASCII with dnspython's default IDNA codec (IDNA 2008 when a recent
``idna`` package is installed, else IDNA 2003; both agree on ordinary names such as "bücher").
``MxRoute.domain`` and the hosts are lower-case ASCII without a trailing dot.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import OrderedDict
from collections.abc import Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

import dns.asyncresolver
import dns.exception
import dns.name
import dns.rdatatype
import dns.resolver

from engine.errors import ConfigError
from mta.errors import PermanentFailure, TemporaryFailure
from mta.metrics import DNS_LOOKUP_SECONDS

PermanentReason = Literal["nxdomain", "null_mx", "no_address", "invalid_name"]
TemporaryReason = Literal["servfail", "timeout", "no_nameservers"]

_EXPLAIN: dict[str, str] = {
    "nxdomain": "the domain does not exist",
    "null_mx": "the domain publishes a null MX: it accepts no mail",
    "no_address": "the domain has no MX and no A/AAAA records",
    "invalid_name": "not a valid domain name",
    "servfail": "the DNS server failed (SERVFAIL)",
    "timeout": "the DNS lookup timed out",
    "no_nameservers": "no DNS server gave a usable answer",
}


class DnsPermanentFailure(PermanentFailure):
    """The name cannot be delivered to, and asking again will not change that."""

    def __init__(self, name: str, reason: PermanentReason, detail: str = "") -> None:
        self.name = name
        self.reason: PermanentReason = reason
        self.detail = detail
        suffix = f" ({detail})" if detail else ""
        super().__init__(f"DNS lookup for {name} failed permanently: {_EXPLAIN[reason]}{suffix}")

    def fresh(self) -> DnsPermanentFailure:
        """An equal, never-raised copy (cached failures are re-raised as copies)."""
        return DnsPermanentFailure(self.name, self.reason, self.detail)


class DnsTemporaryFailure(TemporaryFailure):
    """DNS could not answer right now; defer and try again later."""

    def __init__(self, name: str, reason: TemporaryReason, detail: str = "") -> None:
        self.name = name
        self.reason: TemporaryReason = reason
        self.detail = detail
        suffix = f" ({detail})" if detail else ""
        super().__init__(f"DNS lookup for {name} failed temporarily: {_EXPLAIN[reason]}{suffix}")

    def fresh(self) -> DnsTemporaryFailure:
        return DnsTemporaryFailure(self.name, self.reason, self.detail)


DnsFailure = DnsPermanentFailure | DnsTemporaryFailure


@dataclass(frozen=True, slots=True)
class MxRoute:
    """Where mail for ``domain`` goes.

    ``hosts`` are in the order to try them: MX preference ascending, equal preferences shuffled.
    ``implicit`` is True when the domain has no MX and its own A/AAAA is used (hosts == (domain,)).
    ``site`` is the sorted, de-duplicated, lower-case set of exchange names joined by ",": domains
    hosted on the same MX set share it (and so share connection and rate limits).
    """

    domain: str
    hosts: tuple[str, ...]
    implicit: bool
    site: str


# -- pure logic ---------------------------------------------------------------------------------


def normalise_host(name: str) -> str:
    """Lower-case, no trailing dot; the root stays "."."""
    return name if name == "." else name.rstrip(".").lower()


def is_null_mx(records: Sequence[tuple[int, str]]) -> bool:
    """RFC 7505: exactly one MX record, whose exchange is the root ".".

    RFC 7505 gives it preference 0; any preference is treated alike, since "." is never a host.
    """
    return len(records) == 1 and normalise_host(records[0][1]) == "."


def order_mx(records: Iterable[tuple[int, str]], rng: random.Random) -> tuple[str, ...]:
    """Hosts to try: preference ascending, shuffled among equal preferences, duplicates dropped.

    A "." exchange mixed with real ones (a broken null MX) is skipped: it names no host.
    """
    groups: dict[int, list[str]] = {}
    for preference, exchange in records:
        host = normalise_host(exchange)
        if host != ".":
            groups.setdefault(preference, []).append(host)
    ordered: list[str] = []
    for preference in sorted(groups):
        group = sorted(set(groups[preference]))  # sort first: the shuffle depends only on rng
        rng.shuffle(group)
        ordered.extend(h for h in group if h not in ordered)
    return tuple(ordered)


def site_key(hosts: Iterable[str]) -> str:
    """The sorted, de-duplicated, lower-case host names joined by ","."""
    return ",".join(sorted({normalise_host(h) for h in hosts}))


def clamp_ttl(ttl: float, low: float, high: float) -> float:
    return max(low, min(high, ttl))


@dataclass(frozen=True, slots=True)
class MxRecords:
    """A successful MX answer: (preference, exchange) pairs (empty for NODATA) and its TTL."""

    records: tuple[tuple[int, str], ...]
    ttl: float


@dataclass(frozen=True, slots=True)
class AddressRecords:
    """A successful A or AAAA answer: the addresses (empty for NODATA) and its TTL."""

    addresses: tuple[str, ...]
    ttl: float


def combine_addresses(
    host: str, answers: Sequence[AddressRecords | DnsFailure]
) -> tuple[list[str] | DnsFailure, float | None]:
    """Merge the A and AAAA answers (in that order) into addresses or one failure.

    Returns (result, ttl); ttl None means "do not cache". NXDOMAIN on either is permanent; when one
    type failed temporarily the other type's addresses are still used, uncached.
    """
    found = [a for a in answers if isinstance(a, AddressRecords) and a.addresses]
    addresses = [address for a in found for address in a.addresses]
    ttls = [a.ttl for a in found]
    permanent = [a for a in answers if isinstance(a, DnsPermanentFailure)]
    temporary = [a for a in answers if isinstance(a, DnsTemporaryFailure)]
    if permanent:
        return permanent[0], None
    if addresses:
        return addresses, (min(ttls) if not temporary else None)
    if temporary:
        return temporary[0], None
    return DnsPermanentFailure(host, "no_address"), None


def to_dns_name(domain: str) -> tuple[dns.name.Name, str]:
    """IDNA-encode ``domain`` into an absolute name and its lower-case ASCII text."""
    text = domain.strip()
    if not text or text == ".":
        raise DnsPermanentFailure(repr(domain), "invalid_name")
    try:
        name = dns.name.from_text(text)
    except (dns.exception.DNSException, UnicodeError) as exc:
        raise DnsPermanentFailure(repr(domain), "invalid_name", str(exc)) from None
    return name, name.to_text(omit_final_dot=True).lower()


def translate(name: str, exc: dns.exception.DNSException) -> DnsFailure:
    """A dnspython exception as one of ours."""
    if isinstance(exc, dns.resolver.NXDOMAIN | dns.resolver.YXDOMAIN):
        return DnsPermanentFailure(name, "nxdomain")
    if isinstance(exc, dns.exception.Timeout):
        return DnsTemporaryFailure(name, "timeout")
    if isinstance(exc, dns.resolver.NoNameservers):
        answers = [str(err[3]) for err in exc.kwargs.get("errors", [])]
        if "SERVFAIL" in answers:
            return DnsTemporaryFailure(name, "servfail")
        return DnsTemporaryFailure(name, "no_nameservers", "; ".join(answers[:3]))
    return DnsTemporaryFailure(name, "no_nameservers", f"{type(exc).__name__}: {exc}")


# -- bounded TTL cache --------------------------------------------------------------------------

V = TypeVar("V")


class _TtlLru(Generic[V]):
    """Entries expire at a deadline; past ``size`` entries the least recently used goes."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._entries: OrderedDict[str, tuple[float, V]] = OrderedDict()

    def get(self, key: str, now: float) -> V | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[0] <= now:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return entry[1]

    def put(self, key: str, value: V, expires: float) -> None:
        self._entries[key] = (expires, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self._size:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)


# -- the I/O shell ------------------------------------------------------------------------------

T = TypeVar("T")


class MxResolver:
    """Async MX and address lookups with TTL caches and in-flight de-duplication.

    ``nameserver`` ("127.0.0.1", 5353) sends every query to that server; None uses the system
    configuration (/etc/resolv.conf). ``timeout`` bounds each lookup. Successful answers are cached
    for their TTL clamped to [min_ttl, max_ttl]; permanent failures for ``negative_ttl``; temporary
    failures are never cached. Each cache holds at most ``cache_size`` names.
    """

    def __init__(
        self,
        nameserver: tuple[str, int] | None = None,
        timeout: float = 5.0,
        cache_size: int = 100_000,
        min_ttl: float = 30,
        max_ttl: float = 3600,
        negative_ttl: float = 300,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if timeout <= 0 or cache_size < 1 or not 0 <= min_ttl <= max_ttl or negative_ttl < 0:
            raise ValueError(
                "need timeout > 0, cache_size >= 1, 0 <= min_ttl <= max_ttl, negative_ttl >= 0"
            )
        self._resolver = _make_resolver(nameserver, timeout)
        self._min_ttl = min_ttl
        self._max_ttl = max_ttl
        self._negative_ttl = negative_ttl
        self._rng = rng if rng is not None else random.Random()
        self._clock = clock
        self._routes: _TtlLru[MxRoute | DnsPermanentFailure] = _TtlLru(cache_size)
        self._addresses: _TtlLru[list[str] | DnsPermanentFailure] = _TtlLru(cache_size)
        self._route_flights: dict[str, asyncio.Task[MxRoute | DnsFailure]] = {}
        self._address_flights: dict[str, asyncio.Task[list[str] | DnsFailure]] = {}

    async def route(self, domain: str) -> MxRoute:
        """The hosts to try for ``domain``; raises DnsPermanentFailure / DnsTemporaryFailure."""
        name, key = to_dns_name(domain)
        cached = self._routes.get(key, self._clock())
        if cached is None:
            result = await _shared(self._route_flights, key, lambda: self._fill_route(name, key))
        else:
            result = cached
        if isinstance(result, MxRoute):
            return result
        raise result.fresh()

    async def addresses(self, host: str) -> list[str]:
        """IPv4 then IPv6 addresses of ``host``; raises like ``route``."""
        name, key = to_dns_name(host)
        result = await self._get_addresses(name, key)
        if isinstance(result, list):
            return list(result)
        raise result.fresh()

    async def aclose(self) -> None:
        """Cancel lookups still in flight (their callers see CancelledError)."""
        tasks = [*self._route_flights.values(), *self._address_flights.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _get_addresses(self, name: dns.name.Name, key: str) -> list[str] | DnsFailure:
        cached = self._addresses.get(key, self._clock())
        if cached is not None:
            return cached
        return await _shared(self._address_flights, key, lambda: self._fill_addresses(name, key))

    async def _fill_route(self, name: dns.name.Name, key: str) -> MxRoute | DnsFailure:
        mx = await self._query_mx(name, key)
        if isinstance(mx, DnsTemporaryFailure):
            return mx
        if isinstance(mx, DnsPermanentFailure):
            return self._remember_failure(self._routes, key, mx)
        records = mx.records
        if records:
            hosts = order_mx(records, self._rng)
            if is_null_mx(records) or not hosts:
                return self._remember_failure(
                    self._routes, key, DnsPermanentFailure(key, "null_mx")
                )
            route = MxRoute(key, hosts, implicit=False, site=site_key(hosts))
        else:  # NODATA: RFC 5321 5.1 implicit MX, if the domain itself has an address
            addresses = await self._get_addresses(name, key)
            if isinstance(addresses, DnsTemporaryFailure):
                return addresses
            if isinstance(addresses, DnsPermanentFailure):
                failure = DnsPermanentFailure(key, "no_address")
                return self._remember_failure(self._routes, key, failure)
            route = MxRoute(key, (key,), implicit=True, site=key)
        ttl = clamp_ttl(mx.ttl, self._min_ttl, self._max_ttl)
        self._routes.put(key, route, self._clock() + ttl)
        return route

    async def _fill_addresses(self, name: dns.name.Name, key: str) -> list[str] | DnsFailure:
        answers = await asyncio.gather(
            self._query_addresses(name, key, dns.rdatatype.A),
            self._query_addresses(name, key, dns.rdatatype.AAAA),
        )
        result, ttl = combine_addresses(key, answers)
        if isinstance(result, DnsPermanentFailure):
            return self._remember_failure(self._addresses, key, result)
        if isinstance(result, list) and ttl is not None:
            ttl = clamp_ttl(ttl, self._min_ttl, self._max_ttl)
            self._addresses.put(key, result, self._clock() + ttl)
        return result

    def _remember_failure(
        self, cache: _TtlLru[T | DnsPermanentFailure], key: str, failure: DnsPermanentFailure
    ) -> DnsPermanentFailure:
        if self._negative_ttl > 0:
            cache.put(key, failure, self._clock() + self._negative_ttl)
        return failure

    async def _query_mx(self, name: dns.name.Name, key: str) -> MxRecords | DnsFailure:
        answer = await self._resolve(name, key, dns.rdatatype.MX)
        if not isinstance(answer, dns.resolver.Answer):
            return answer
        records = tuple(
            (int(r.preference), r.exchange.to_text(omit_final_dot=True)) for r in answer.rrset or ()
        )
        return MxRecords(records, float(answer.chaining_result.minimum_ttl))

    async def _query_addresses(
        self, name: dns.name.Name, key: str, rdtype: dns.rdatatype.RdataType
    ) -> AddressRecords | DnsFailure:
        answer = await self._resolve(name, key, rdtype)
        if not isinstance(answer, dns.resolver.Answer):
            return answer
        addresses = tuple(str(r.address) for r in answer.rrset or ())
        return AddressRecords(addresses, float(answer.chaining_result.minimum_ttl))

    async def _resolve(
        self, name: dns.name.Name, key: str, rdtype: dns.rdatatype.RdataType
    ) -> dns.resolver.Answer | DnsFailure:
        """One lookup through dnspython, its exceptions translated; NODATA is an empty answer.
        Timed in ``herald_mta_dns_lookup_seconds`` by record type and result."""
        started = time.perf_counter()
        result: dns.resolver.Answer | DnsFailure
        try:
            result = await self._resolver.resolve(name, rdtype, raise_on_no_answer=False)
        except dns.exception.DNSException as exc:
            result = translate(key, exc)
        except OSError as exc:  # defensive: socket errors normally arrive as NoNameservers
            result = DnsTemporaryFailure(key, "no_nameservers", str(exc))
        outcome = (result.reason if isinstance(result, DnsPermanentFailure | DnsTemporaryFailure)
                   else "ok")
        DNS_LOOKUP_SECONDS.labels(dns.rdatatype.to_text(rdtype), outcome).observe(
            time.perf_counter() - started)
        return result


async def _shared(
    flights: dict[str, asyncio.Task[T]], key: str, start: Callable[[], Coroutine[Any, Any, T]]
) -> T:
    """Await the lookup for ``key``, joining one already in flight instead of starting another.

    The lookup runs as a task the resolver owns, so a cancelled caller neither cancels it for the
    others nor leaves the cache unfilled.
    """
    task = flights.get(key)
    if task is None:
        task = asyncio.create_task(start())
        flights[key] = task

        def forget(done: asyncio.Task[T]) -> None:
            if flights.get(key) is done:
                del flights[key]
            if not done.cancelled():
                done.exception()  # mark retrieved even if every caller went away

        task.add_done_callback(forget)
    return await asyncio.shield(task)


def _make_resolver(
    nameserver: tuple[str, int] | None, timeout: float
) -> dns.asyncresolver.Resolver:
    try:
        if nameserver is None:
            resolver = dns.asyncresolver.Resolver()
        else:
            resolver = dns.asyncresolver.Resolver(configure=False)
            resolver.port = nameserver[1]
            resolver.nameservers = [nameserver[0]]
    except (dns.exception.DNSException, ValueError, OSError) as exc:
        where = "system resolver configuration" if nameserver is None else repr(nameserver)
        raise ConfigError(f"mta.resolver: cannot use {where}: {exc}") from None
    resolver.cache = None  # we cache ourselves, by our own bounds
    resolver.lifetime = timeout
    resolver.timeout = min(resolver.timeout, timeout)
    return resolver
