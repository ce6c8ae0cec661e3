"""The loopback DNS server answers like a real authoritative server, checked through dnspython's
own client code (dns.asyncquery for the wire, dns.asyncresolver for the stub resolver)."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator

import dns.asyncquery
import dns.asyncresolver
import dns.exception
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.resolver
import pytest

from tests.support.dns_server import DnsTestServer, answer_query, parse_zones, zone_text

BIG_TXT = "\n".join(f'big TXT "{"x" * 60} {i}"' for i in range(20))

ZONES = {
    "example.test": zone_text(
        """
        @        MX 10 mx1
        @        MX 20 mx2.other.test.
        mx1      A 192.0.2.1
        mx1      AAAA 2001:db8::1
        www 600  A 192.0.2.80
        alias    CNAME www
        away     CNAME host.nowhere.invalid.
        dangling CNAME gone
        loop1    CNAME loop2
        loop2    CNAME loop1
        a.b.deep A 192.0.2.9
        big      TXT "placeholder"
        """.replace('big      TXT "placeholder"', BIG_TXT.replace("\n", "\n        ")),
        ttl=300,
        minimum=60,
    ),
    "sub.example.test": zone_text("@ A 192.0.2.50", ttl=100, soa_ttl=30, minimum=90),
}


@pytest.fixture
async def server() -> AsyncIterator[DnsTestServer]:
    servfail, drop = {"broken.example.test"}, {"slow.example.test"}
    async with DnsTestServer(ZONES, servfail=servfail, drop=drop) as s:
        yield s


async def udp(server: DnsTestServer, name: str, rdtype: str, **kw: object) -> dns.message.Message:
    query = dns.message.make_query(name, rdtype, **kw)  # type: ignore[arg-type]
    return await dns.asyncquery.udp(query, server.address[0], timeout=2, port=server.port)


async def tcp(server: DnsTestServer, name: str, rdtype: str) -> dns.message.Message:
    query = dns.message.make_query(name, rdtype)
    return await dns.asyncquery.tcp(query, server.address[0], timeout=2, port=server.port)


def resolver_for(server: DnsTestServer, lifetime: float = 2.0) -> dns.asyncresolver.Resolver:
    resolver = dns.asyncresolver.Resolver(configure=False)
    resolver.port = server.port
    resolver.nameservers = [server.address[0]]
    resolver.lifetime = lifetime
    resolver.timeout = lifetime
    return resolver


def soa_ttl_in_authority(response: dns.message.Message) -> int:
    [soa] = response.authority
    assert soa.rdtype == dns.rdatatype.SOA
    return soa.ttl


async def test_start_binds_udp_and_tcp_on_one_port(server: DnsTestServer) -> None:
    assert server.address == ("127.0.0.1", server.port)
    assert server.port > 0
    assert (await udp(server, "www.example.test", "A")).rcode() == dns.rcode.NOERROR
    assert (await tcp(server, "www.example.test", "A")).rcode() == dns.rcode.NOERROR


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_positive_answer_is_authoritative_with_zone_ttl(
    server: DnsTestServer, transport: str
) -> None:
    ask = udp if transport == "udp" else tcp
    response = await ask(server, "www.example.test", "A")
    assert response.rcode() == dns.rcode.NOERROR
    assert response.flags & dns.flags.AA and response.flags & dns.flags.QR
    assert not response.flags & dns.flags.RA  # authoritative only, no recursion
    [rrset] = response.answer
    assert rrset.ttl == 600
    assert [r.address for r in rrset] == ["192.0.2.80"]
    assert server.query_count("www.example.test", "A", transport) == 1


async def test_mx_answer(server: DnsTestServer) -> None:
    response = await udp(server, "example.test", "MX")
    [rrset] = response.answer
    assert rrset.ttl == 300
    exchanges = sorted((r.preference, r.exchange.to_text()) for r in rrset)
    assert exchanges == [(10, "mx1.example.test."), (20, "mx2.other.test.")]


async def test_names_are_case_insensitive(server: DnsTestServer) -> None:
    response = await udp(server, "WwW.ExAmPle.TEST", "A")
    assert response.rcode() == dns.rcode.NOERROR
    assert len(response.answer) == 1
    assert server.query_count("www.example.test.") == 1


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_nxdomain_has_soa_with_negative_ttl(server: DnsTestServer, transport: str) -> None:
    ask = udp if transport == "udp" else tcp
    response = await ask(server, "missing.example.test", "A")
    assert response.rcode() == dns.rcode.NXDOMAIN
    assert response.flags & dns.flags.AA
    assert response.answer == []
    assert soa_ttl_in_authority(response) == 60  # min(SOA TTL 300, MINIMUM 60), RFC 2308


async def test_nodata_is_noerror_with_soa(server: DnsTestServer) -> None:
    response = await udp(server, "www.example.test", "MX")
    assert response.rcode() == dns.rcode.NOERROR
    assert response.flags & dns.flags.AA
    assert response.answer == []
    assert soa_ttl_in_authority(response) == 60


async def test_empty_non_terminal_is_nodata_not_nxdomain(server: DnsTestServer) -> None:
    response = await udp(server, "b.deep.example.test", "A")
    assert response.rcode() == dns.rcode.NOERROR
    assert response.answer == []


async def test_longest_matching_zone_answers(server: DnsTestServer) -> None:
    response = await udp(server, "sub.example.test", "A")
    assert [r.address for r in response.answer[0]] == ["192.0.2.50"]
    negative = await udp(server, "nope.sub.example.test", "A")
    assert negative.rcode() == dns.rcode.NXDOMAIN
    assert soa_ttl_in_authority(negative) == 30  # the sub zone's SOA: min(30, 90)
    assert negative.authority[0].name.to_text() == "sub.example.test."


async def test_names_outside_every_zone_are_refused(server: DnsTestServer) -> None:
    response = await udp(server, "example.org", "A")
    assert response.rcode() == dns.rcode.REFUSED
    assert not response.flags & dns.flags.AA


async def test_cname_is_followed_inside_the_zones(server: DnsTestServer) -> None:
    response = await udp(server, "alias.example.test", "A")
    assert [rrset.rdtype for rrset in response.answer] == [dns.rdatatype.CNAME, dns.rdatatype.A]
    away = await udp(server, "away.example.test", "A")
    assert [rrset.rdtype for rrset in away.answer] == [dns.rdatatype.CNAME]
    dangling = await udp(server, "dangling.example.test", "A")
    assert dangling.rcode() == dns.rcode.NXDOMAIN  # RFC 6604: the last link's rcode
    assert len(dangling.answer) == 1
    loop = await udp(server, "loop1.example.test", "A")
    assert loop.rcode() == dns.rcode.SERVFAIL


async def test_servfail_and_runtime_change(server: DnsTestServer) -> None:
    response = await udp(server, "broken.example.test", "A")
    assert response.rcode() == dns.rcode.SERVFAIL
    assert response.answer == [] and response.authority == []
    server.servfail.clear()
    assert (await udp(server, "broken.example.test", "A")).rcode() == dns.rcode.NXDOMAIN
    server.servfail.add("WWW.example.test.")
    assert (await udp(server, "www.example.test", "A")).rcode() == dns.rcode.SERVFAIL


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_dropped_names_time_out(server: DnsTestServer, transport: str) -> None:
    query = dns.message.make_query("slow.example.test", "A")
    send = dns.asyncquery.udp if transport == "udp" else dns.asyncquery.tcp
    started = time.monotonic()
    with pytest.raises(dns.exception.Timeout):
        await send(query, "127.0.0.1", timeout=0.3, port=server.port)
    assert time.monotonic() - started < 2
    assert server.query_count("slow.example.test", transport=transport) == 1


async def test_large_answers_are_truncated_over_plain_udp(server: DnsTestServer) -> None:
    plain = await udp(server, "big.example.test", "TXT")
    assert plain.flags & dns.flags.TC
    assert plain.answer == []
    edns = await udp(server, "big.example.test", "TXT", use_edns=0, payload=4096)
    assert not edns.flags & dns.flags.TC
    assert len(edns.answer[0]) == 20
    full = await tcp(server, "big.example.test", "TXT")
    assert len(full.answer[0]) == 20


async def test_stub_resolver_retries_truncated_answers_over_tcp(server: DnsTestServer) -> None:
    answer = await resolver_for(server).resolve("big.example.test", "TXT")
    assert answer.rrset is not None and len(answer.rrset) == 20
    assert server.query_count("big.example.test", "TXT", "udp") == 1
    assert server.query_count("big.example.test", "TXT", "tcp") == 1


async def test_stub_resolver_sees_a_real_authoritative_server(server: DnsTestServer) -> None:
    resolver = resolver_for(server)
    mx = await resolver.resolve("example.test", "MX")
    assert mx.rrset is not None and mx.rrset.ttl == 300
    chased = await resolver.resolve("alias.example.test", "A")
    assert chased.canonical_name.to_text() == "www.example.test."
    assert [r.address for r in chased] == ["192.0.2.80"]
    with pytest.raises(dns.resolver.NXDOMAIN):
        await resolver.resolve("missing.example.test", "A")
    nodata = await resolver.resolve("www.example.test", "MX", raise_on_no_answer=False)
    assert nodata.rrset is None
    assert nodata.chaining_result.minimum_ttl == 60  # negative caching TTL from the SOA
    with pytest.raises(dns.resolver.NoNameservers, match="SERVFAIL"):
        await resolver.resolve("broken.example.test", "A")
    with pytest.raises(dns.resolver.NoNameservers, match="REFUSED"):
        await resolver.resolve("example.org", "A")
    with pytest.raises(dns.resolver.LifetimeTimeout):
        await resolver_for(server, lifetime=0.3).resolve("slow.example.test", "A")


async def test_garbage_gets_formerr_and_the_server_keeps_serving(server: DnsTestServer) -> None:
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        await loop.sock_connect(sock, server.address)
        await loop.sock_sendall(sock, b"\x12\x34" + b"\xff" * 14)
        async with asyncio.timeout(2):
            reply = await loop.sock_recv(sock, 512)
    assert reply[:2] == b"\x12\x34"
    assert reply[3] & 0x0F == dns.rcode.FORMERR
    assert (await udp(server, "www.example.test", "A")).rcode() == dns.rcode.NOERROR


async def test_wait_for_query_returns_once_the_query_arrived(server: DnsTestServer) -> None:
    query = dns.message.make_query("slow.example.test", "MX")
    pending = asyncio.create_task(
        dns.asyncquery.udp(query, "127.0.0.1", timeout=0.5, port=server.port)
    )
    await server.wait_for_query("slow.example.test", "MX")
    assert server.query_count("slow.example.test", "MX") == 1
    with pytest.raises(dns.exception.Timeout):
        await pending


async def test_stop_closes_both_listeners() -> None:
    server = DnsTestServer(ZONES)
    await server.start()
    port = server.port
    # an open TCP connection must not keep stop() waiting
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    await server.stop()
    await server.stop()  # idempotent
    assert await reader.read() == b""
    writer.close()
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", port)


def test_answer_query_is_pure_and_rejects_odd_queries() -> None:
    zones = parse_zones(ZONES)
    query = dns.message.make_query("www.example.test", "A")
    assert answer_query(zones, query).answer == answer_query(zones, query).answer
    chaos = dns.message.make_query("www.example.test", "A", rdclass="CH")
    assert answer_query(zones, chaos).rcode() == dns.rcode.REFUSED
    notify = dns.message.make_query("example.test", "SOA")
    notify.set_opcode(dns.opcode.NOTIFY)
    assert answer_query(zones, notify).rcode() == dns.rcode.NOTIMP


def test_broken_zone_text_names_the_zone() -> None:
    with pytest.raises(ValueError, match=r"broken\.test"):
        DnsTestServer({"broken.test": "@ A 192.0.2.1\n"})  # no SOA/NS at the apex
