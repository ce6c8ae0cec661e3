"""MX resolution: pure ordering logic, then the real resolver against the loopback DNS server."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mta.dns.resolver import (
    AddressRecords,
    DnsPermanentFailure,
    DnsTemporaryFailure,
    MxResolver,
    MxRoute,
    combine_addresses,
    is_null_mx,
    order_mx,
    site_key,
)
from mta.errors import PermanentFailure, TemporaryFailure
from tests.support.dns_server import DnsTestServer, zone_text

# -- pure logic ---------------------------------------------------------------------------------


def test_order_mx_sorts_by_preference_and_normalises() -> None:
    records = [(30, "C.example."), (10, "a.example"), (20, "b.example.")]
    assert order_mx(records, random.Random(0)) == ("a.example", "b.example", "c.example")


def test_order_mx_drops_duplicates_and_root_exchanges() -> None:
    records = [(10, "a.example"), (20, "A.example."), (5, "."), (20, "b.example")]
    assert order_mx(records, random.Random(0)) == ("a.example", "b.example")


def test_order_mx_shuffles_equal_preferences_deterministically_per_seed() -> None:
    records = [(10, "a"), (10, "b"), (10, "c"), (20, "z")]
    orders = {order_mx(records, random.Random(seed)) for seed in range(30)}
    assert len(orders) > 1
    assert all(order[-1] == "z" for order in orders)
    backwards = list(reversed(records))
    assert order_mx(records, random.Random(7)) == order_mx(backwards, random.Random(7))


mx_records = st.lists(
    st.tuples(st.integers(0, 65535), st.sampled_from(["a.test", "B.test.", "c.test", "."])),
    max_size=8,
)


@given(mx_records, st.integers())
def test_order_mx_properties(records: list[tuple[int, str]], seed: int) -> None:
    hosts = order_mx(records, random.Random(seed))
    real = {name.rstrip(".").lower() for _, name in records if name != "."}
    assert sorted(hosts) == sorted(real)  # every host once, nothing else
    best: dict[str, int] = {}
    for preference, name in records:
        host = name.rstrip(".").lower()
        best[host] = min(preference, best.get(host, preference))
    assert [best[h] for h in hosts] == sorted(best[h] for h in hosts)


def test_null_mx_detection() -> None:
    assert is_null_mx([(0, ".")])
    assert is_null_mx([(10, ".")])
    assert not is_null_mx([(0, "."), (10, "mx.example")])
    assert not is_null_mx([(0, "mx.example")])
    assert not is_null_mx([])


def test_site_key_is_the_sorted_lower_case_set() -> None:
    assert site_key(["MX2.p.test.", "mx1.p.test", "mx2.p.test"]) == "mx1.p.test,mx2.p.test"
    assert site_key(["b", "a"]) == site_key(["a", "b"])


def test_combine_addresses() -> None:
    a = AddressRecords(("192.0.2.1",), 50)
    aaaa = AddressRecords(("2001:db8::1",), 70)
    empty = AddressRecords((), 60)
    temporary = DnsTemporaryFailure("h", "servfail")
    permanent = DnsPermanentFailure("h", "nxdomain")
    assert combine_addresses("h", [a, aaaa]) == (["192.0.2.1", "2001:db8::1"], 50)
    assert combine_addresses("h", [empty, aaaa]) == (["2001:db8::1"], 70)
    assert combine_addresses("h", [a, temporary]) == (["192.0.2.1"], None)  # usable, not cached
    assert combine_addresses("h", [temporary, empty]) == (temporary, None)
    assert combine_addresses("h", [a, permanent]) == (permanent, None)
    failure, ttl = combine_addresses("h", [empty, empty])
    assert isinstance(failure, DnsPermanentFailure) and failure.reason == "no_address"
    assert ttl is None  # permanent failures get the negative TTL, not a record TTL


def test_failures_belong_to_the_mta_error_tree_and_read_well() -> None:
    permanent = DnsPermanentFailure("example.test", "null_mx")
    assert isinstance(permanent, PermanentFailure)
    assert "example.test" in str(permanent) and "null MX" in str(permanent)
    assert isinstance(DnsTemporaryFailure("example.test", "timeout"), TemporaryFailure)


# -- against the loopback DNS server ------------------------------------------------------------

ZONES = {
    "pref.test": zone_text(
        """
        @   MX 20 mx2
        @   MX 10 MX1
        @   MX 30 mx3.provider.test.
        mx1 A 192.0.2.1
        """,
        ttl=120,
    ),
    "equal.test": zone_text("@ MX 10 a.equal.test.\n@ MX 10 b.equal.test.\n@ MX 20 c.equal.test."),
    "aonly.test": zone_text("@ A 192.0.2.10"),
    "aaaaonly.test": zone_text("@ AAAA 2001:db8::10"),
    "nothing.test": zone_text("www A 192.0.2.11"),
    "nullmx.test": zone_text("@ MX 0 ."),
    "short.test": zone_text("@ 5 MX 10 mx.short.test."),
    "long.test": zone_text("@ 100000 MX 10 mx.long.test."),
    "hosted-a.test": zone_text("@ MX 10 mx1.provider.test.\n@ MX 20 mx2.provider.test."),
    "hosted-b.test": zone_text("@ MX 5 MX2.provider.test.\n@ MX 5 mx1.provider.test."),
    "xn--bcher-kva.test": zone_text("@ MX 10 mx.bücher.test."),
    "provider.test": zone_text(
        """
        mx1   A 192.0.2.21
        mx1   A 192.0.2.22
        mx1   AAAA 2001:db8::21
        mx2 60 AAAA 2001:db8::22
        """,
        ttl=300,
    ),
    "broken.test": zone_text("@ MX 10 mx.provider.test."),
    "slow.test": zone_text("@ MX 10 mx.provider.test."),
}


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def server() -> AsyncIterator[DnsTestServer]:
    async with DnsTestServer(ZONES, servfail={"broken.test"}, drop={"slow.test"}) as s:
        yield s


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def resolver(server: DnsTestServer, clock: FakeClock) -> AsyncIterator[MxResolver]:
    r = MxResolver(server.address, timeout=2.0, rng=random.Random(1), clock=clock)
    yield r
    await r.aclose()


async def test_mx_hosts_ordered_by_preference(resolver: MxResolver) -> None:
    route = await resolver.route("pref.test")
    assert route == MxRoute(
        domain="pref.test",
        hosts=("mx1.pref.test", "mx2.pref.test", "mx3.provider.test"),
        implicit=False,
        site="mx1.pref.test,mx2.pref.test,mx3.provider.test",
    )


async def test_equal_preferences_are_shuffled_per_seed(server: DnsTestServer) -> None:
    orders = set()
    for seed in range(16):
        route = await MxResolver(server.address, timeout=2.0, rng=random.Random(seed)).route(
            "equal.test"
        )
        orders.add(route.hosts)
    assert orders == {
        ("a.equal.test", "b.equal.test", "c.equal.test"),
        ("b.equal.test", "a.equal.test", "c.equal.test"),
    }


async def test_equal_preferences_are_reshuffled_on_each_cache_fill(
    resolver: MxResolver, server: DnsTestServer, clock: FakeClock
) -> None:
    orders = set()
    for fill in range(16):
        orders.add((await resolver.route("equal.test")).hosts[:2])
        clock.now += 301  # past the 300 s TTL: the next call refills the cache
        assert server.query_count("equal.test", "MX") == fill + 1
    assert orders == {("a.equal.test", "b.equal.test"), ("b.equal.test", "a.equal.test")}


@pytest.mark.parametrize("domain", ["aonly.test", "aaaaonly.test"])
async def test_implicit_mx_from_an_address_record(resolver: MxResolver, domain: str) -> None:
    route = await resolver.route(domain)
    assert route == MxRoute(domain=domain, hosts=(domain,), implicit=True, site=domain)


@pytest.mark.parametrize(
    ("domain", "reason"),
    [("nullmx.test", "null_mx"), ("missing.pref.test", "nxdomain"), ("nothing.test", "no_address")],
)
async def test_permanent_failures(resolver: MxResolver, domain: str, reason: str) -> None:
    with pytest.raises(DnsPermanentFailure) as caught:
        await resolver.route(domain)
    assert caught.value.reason == reason
    assert caught.value.name == domain


async def test_invalid_names_fail_permanently_without_a_query(
    resolver: MxResolver, server: DnsTestServer
) -> None:
    for bad in ["", ".", "a" * 64 + ".test", "a..test"]:
        with pytest.raises(DnsPermanentFailure) as caught:
            await resolver.route(bad)
        assert caught.value.reason == "invalid_name"
    assert sum(server.query_count(name) for name in ["a..test", "a" * 64 + ".test"]) == 0


async def test_servfail_is_temporary_and_not_cached(
    resolver: MxResolver, server: DnsTestServer
) -> None:
    with pytest.raises(DnsTemporaryFailure) as caught:
        await resolver.route("broken.test")
    assert caught.value.reason == "servfail"
    server.servfail.clear()
    route = await resolver.route("broken.test")
    assert route.hosts == ("mx.provider.test",)
    assert server.query_count("broken.test", "MX") == 2


async def test_timeout_is_temporary_and_bounded(server: DnsTestServer) -> None:
    resolver = MxResolver(server.address, timeout=0.3)
    started = time.monotonic()
    with pytest.raises(DnsTemporaryFailure) as caught:
        await resolver.route("slow.test")
    assert caught.value.reason == "timeout"
    assert time.monotonic() - started < 2.0
    server.drop.clear()  # not cached: the next lookup asks again and succeeds
    assert (await resolver.route("slow.test")).hosts == ("mx.provider.test",)


async def test_refused_is_temporary(resolver: MxResolver) -> None:
    with pytest.raises(DnsTemporaryFailure) as caught:
        await resolver.route("outside-every-zone.example")
    assert caught.value.reason == "no_nameservers"


async def test_unreachable_nameserver_is_temporary() -> None:
    async with DnsTestServer(ZONES) as gone:
        address = gone.address
    resolver = MxResolver(address, timeout=0.5)
    with pytest.raises(DnsTemporaryFailure) as caught:
        await resolver.route("pref.test")
    assert caught.value.reason in {"no_nameservers", "timeout"}


async def test_route_is_cached_for_its_ttl(
    resolver: MxResolver, server: DnsTestServer, clock: FakeClock
) -> None:
    first = await resolver.route("pref.test")
    clock.now += 119
    assert await resolver.route("pref.test") is first
    assert server.query_count("pref.test", "MX") == 1
    clock.now += 2  # past the 120 s TTL
    await resolver.route("pref.test")
    assert server.query_count("pref.test", "MX") == 2


async def test_ttls_are_clamped(
    resolver: MxResolver, server: DnsTestServer, clock: FakeClock
) -> None:
    await resolver.route("short.test")  # TTL 5 -> min_ttl 30
    await resolver.route("long.test")  # TTL 100000 -> max_ttl 3600
    clock.now += 29
    await resolver.route("short.test")
    assert server.query_count("short.test", "MX") == 1
    clock.now += 2
    await resolver.route("short.test")
    assert server.query_count("short.test", "MX") == 2
    clock.now += 3600 - 31 - 1
    await resolver.route("long.test")
    assert server.query_count("long.test", "MX") == 1
    clock.now += 2
    await resolver.route("long.test")
    assert server.query_count("long.test", "MX") == 2


async def test_permanent_failures_are_cached_for_the_negative_ttl(
    resolver: MxResolver, server: DnsTestServer, clock: FakeClock
) -> None:
    for _ in range(3):
        with pytest.raises(DnsPermanentFailure):
            await resolver.route("missing.pref.test")
    assert server.query_count("missing.pref.test", "MX") == 1
    clock.now += 301  # negative_ttl 300
    with pytest.raises(DnsPermanentFailure):
        await resolver.route("missing.pref.test")
    assert server.query_count("missing.pref.test", "MX") == 2


async def test_cached_failures_are_raised_as_fresh_exceptions(resolver: MxResolver) -> None:
    raised = []
    for _ in range(2):
        with pytest.raises(DnsPermanentFailure) as caught:
            await resolver.route("nullmx.test")
        raised.append(caught.value)
    assert raised[0] is not raised[1]
    assert raised[0].reason == raised[1].reason == "null_mx"


async def test_concurrent_lookups_share_one_query(
    resolver: MxResolver, server: DnsTestServer
) -> None:
    routes = await asyncio.gather(*(resolver.route("pref.test") for _ in range(5)))
    assert all(route == routes[0] for route in routes)
    assert server.query_count("pref.test", "MX") == 1
    addresses = await asyncio.gather(*(resolver.addresses("mx1.provider.test") for _ in range(3)))
    assert addresses[0] == addresses[2]
    assert server.query_count("mx1.provider.test", "A") == 1


async def test_a_cancelled_caller_does_not_cancel_the_shared_lookup(
    server: DnsTestServer,
) -> None:
    server.drop.add("pref.test")
    resolver = MxResolver(server.address, timeout=0.5)
    first = asyncio.create_task(resolver.route("pref.test"))
    second = asyncio.create_task(resolver.route("pref.test"))
    await server.wait_for_query("pref.test", "MX")
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    with pytest.raises(DnsTemporaryFailure) as caught:
        await second
    assert caught.value.reason == "timeout"
    assert server.query_count("pref.test", "MX") == 1


async def test_aclose_cancels_lookups_in_flight(server: DnsTestServer) -> None:
    resolver = MxResolver(server.address, timeout=5.0)
    pending = asyncio.create_task(resolver.route("slow.test"))
    await server.wait_for_query("slow.test", "MX")
    started = time.monotonic()
    await resolver.aclose()
    with pytest.raises(asyncio.CancelledError):
        await pending
    assert time.monotonic() - started < 1.0  # did not wait for the 5 s timeout


def test_bad_settings_are_rejected() -> None:
    with pytest.raises(ValueError, match="min_ttl"):
        MxResolver(("127.0.0.1", 53), min_ttl=10, max_ttl=5)


async def test_unicode_domains_are_idna_encoded(
    resolver: MxResolver, server: DnsTestServer
) -> None:
    route = await resolver.route("bücher.test")
    assert route.domain == "xn--bcher-kva.test"
    assert route.hosts == ("mx.xn--bcher-kva.test",)
    assert await resolver.route("BÜCHER.test.") is route  # same cache entry
    assert server.query_count("xn--bcher-kva.test", "MX") == 1


async def test_cache_is_lru_bounded(server: DnsTestServer, clock: FakeClock) -> None:
    resolver = MxResolver(server.address, timeout=2.0, cache_size=2, clock=clock)
    await resolver.route("pref.test")
    await resolver.route("equal.test")
    await resolver.route("pref.test")  # a hit: pref.test is now the most recently used
    await resolver.route("hosted-a.test")  # third entry: evicts equal.test, the least recent
    await resolver.route("pref.test")
    await resolver.route("hosted-a.test")
    assert server.query_count("pref.test", "MX") == 1
    assert server.query_count("hosted-a.test", "MX") == 1
    await resolver.route("equal.test")
    assert server.query_count("equal.test", "MX") == 2


async def test_domains_on_one_mx_set_share_a_site(resolver: MxResolver) -> None:
    a = await resolver.route("hosted-a.test")
    b = await resolver.route("hosted-b.test")
    other = await resolver.route("pref.test")
    assert a.site == b.site == "mx1.provider.test,mx2.provider.test"
    assert other.site != a.site


async def test_addresses_a_then_aaaa_cached_by_ttl(
    resolver: MxResolver, server: DnsTestServer, clock: FakeClock
) -> None:
    addresses = await resolver.addresses("MX1.provider.test.")
    assert addresses[:2] in (["192.0.2.21", "192.0.2.22"], ["192.0.2.22", "192.0.2.21"])
    assert addresses[2:] == ["2001:db8::21"]
    assert await resolver.addresses("mx2.provider.test") == ["2001:db8::22"]
    clock.now += 59  # mx2's shortest non-empty TTL is 60 s
    await resolver.addresses("mx2.provider.test")
    assert server.query_count("mx2.provider.test", "AAAA") == 1
    clock.now += 2
    await resolver.addresses("mx2.provider.test")
    assert server.query_count("mx2.provider.test", "AAAA") == 2


async def test_address_failures(resolver: MxResolver, server: DnsTestServer) -> None:
    with pytest.raises(DnsPermanentFailure) as nx:
        await resolver.addresses("gone.provider.test")
    assert nx.value.reason == "nxdomain"
    with pytest.raises(DnsPermanentFailure) as none:
        await resolver.addresses("pref.test")  # has MX but no A/AAAA
    assert none.value.reason == "no_address"
    server.servfail.add("mx1.provider.test")
    with pytest.raises(DnsTemporaryFailure) as servfail:
        await resolver.addresses("mx1.provider.test")
    assert servfail.value.reason == "servfail"


async def test_addresses_returns_a_copy(resolver: MxResolver) -> None:
    first = await resolver.addresses("mx2.provider.test")
    first.append("mutated")
    assert await resolver.addresses("mx2.provider.test") == ["2001:db8::22"]
