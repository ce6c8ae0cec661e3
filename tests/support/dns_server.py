"""A real authoritative DNS server on loopback for tests, built from zone text.

``DnsTestServer`` answers UDP and TCP queries on 127.0.0.1 (one ephemeral port for both) the way
an authoritative-only server such as BIND or NSD does:

* a name inside a zone with records of the asked type: NOERROR, AA, the rrset with its zone TTL;
* a name inside a zone without the asked type, or an empty non-terminal: NOERROR/NODATA, AA, the
  zone's SOA in the authority section (TTL = min(SOA TTL, SOA MINIMUM), RFC 2308);
* a name inside a zone that does not exist: NXDOMAIN, AA, SOA in authority;
* a name outside every zone: REFUSED (no AA), as an authoritative-only server does;
* CNAMEs are followed inside the served zones (at most 8 links); the rcode is the last link's;
* names in ``servfail`` get SERVFAIL; names in ``drop`` are never answered (clients time out);
* over UDP an answer larger than the client's EDNS payload (512 bytes without EDNS) is truncated
  with TC set, so clients retry over TCP.

Not modelled: delegations below a zone apex (no referrals), wildcards, zone transfers, DNSSEC
signatures. For DANE it stands in for a validating resolver: answers (positive or negative) from
a zone listed in ``authenticated`` carry the AD bit when the query set AD or DO (RFC 6840 §5.7).

``servfail`` and ``drop`` are plain public sets: change them while the server runs. Every query is
counted (``query_count``) and ``wait_for_query`` lets a test wait for one without sleeping.
"""

from __future__ import annotations

import asyncio
import textwrap
from collections import Counter
from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import cast

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import dns.zone

HOST = "127.0.0.1"
MAX_CNAME_CHAIN = 8
UDP_PLAIN_LIMIT = 512
MAX_BIND_ATTEMPTS = 20
WAIT_LIMIT = 5.0  # seconds wait_for_query waits at most
Transport = str  # "udp" or "tcp"


def zone_text(
    records: str, *, ttl: int = 300, soa_ttl: int | None = None, minimum: int = 60
) -> str:
    """Zone text with a default $TTL, an SOA (negative TTL ``minimum``) and an NS at the apex.

    ``records`` are zone-file lines relative to the origin, e.g. ``"@ MX 10 mx1"``.
    """
    soa_ttl = ttl if soa_ttl is None else soa_ttl
    soa = f"@ {soa_ttl} IN SOA ns1 hostmaster 1 3600 600 86400 {minimum}"
    return f"$TTL {ttl}\n{soa}\n@ IN NS ns1\n{textwrap.dedent(records).strip()}\n"


def _normalise(name: str | dns.name.Name) -> str:
    text = name.to_text(omit_final_dot=True) if isinstance(name, dns.name.Name) else name
    return text.rstrip(".").lower()


def parse_zones(zones: Mapping[str, str]) -> list[dns.zone.Zone]:
    """Parse origin -> zone text; a broken zone raises ValueError naming its origin."""
    parsed = []
    for origin, text in zones.items():
        try:
            parsed.append(dns.zone.from_text(text, origin=origin, relativize=False))
        except dns.exception.DNSException as exc:
            raise ValueError(f"zone {origin!r} does not parse: {exc}") from exc
    return parsed


def _find_zone(zones: Iterable[dns.zone.Zone], qname: dns.name.Name) -> dns.zone.Zone | None:
    """The zone with the longest origin that contains ``qname``."""
    containing = [z for z in zones if z.origin is not None and qname.is_subdomain(z.origin)]
    return max(containing, key=lambda z: len(z.origin or ()), default=None)


def _negative_soa(zone: dns.zone.Zone) -> dns.rrset.RRset:
    assert zone.origin is not None
    soa = zone.find_rdataset(zone.origin, dns.rdatatype.SOA)
    ttl = min(soa.ttl, soa[0].minimum)
    return dns.rrset.from_rdata_list(zone.origin, ttl, list(soa))


def answer_query(zones: Iterable[dns.zone.Zone], query: dns.message.Message) -> dns.message.Message:
    """The authoritative response to ``query`` from ``zones`` (pure: no I/O, no server state)."""
    response = dns.message.make_response(query)
    if query.opcode() != dns.opcode.QUERY:
        response.set_rcode(dns.rcode.NOTIMP)
        return response
    if len(query.question) != 1:
        response.set_rcode(dns.rcode.FORMERR)
        return response
    question = query.question[0]
    qname, rdtype = question.name, question.rdtype
    zones = list(zones)
    first_zone = _find_zone(zones, qname)
    if first_zone is None or question.rdclass != dns.rdataclass.IN:
        response.set_rcode(dns.rcode.REFUSED)
        return response
    response.flags |= dns.flags.AA
    name = qname
    zone: dns.zone.Zone | None = first_zone
    for _ in range(MAX_CNAME_CHAIN + 1):
        if zone is None:  # a CNAME led out of our zones: the client follows it
            return response
        node = zone.get_node(name)
        if node is None or len(node.rdatasets) == 0:
            if not any(other.is_subdomain(name) and other != name for other in zone.nodes):
                response.set_rcode(dns.rcode.NXDOMAIN)
            response.authority = [_negative_soa(zone)]
            return response
        rdataset = node.get_rdataset(dns.rdataclass.IN, rdtype)
        if rdataset is not None:
            response.answer.append(dns.rrset.from_rdata_list(name, rdataset.ttl, list(rdataset)))
            return response
        cname = node.get_rdataset(dns.rdataclass.IN, dns.rdatatype.CNAME)
        if cname is None:
            response.authority = [_negative_soa(zone)]
            return response
        response.answer.append(dns.rrset.from_rdata_list(name, cname.ttl, list(cname)))
        name = cname[0].target
        zone = _find_zone(zones, name)
    response.set_rcode(dns.rcode.SERVFAIL)  # CNAME chain too long (or a loop)
    response.answer = []
    return response


def _formerr(wire: bytes) -> bytes | None:
    """A FORMERR reply to an unparseable query, if its header is readable (else silence)."""
    if len(wire) < 12:
        return None
    flags = dns.flags.QR | dns.rcode.FORMERR
    return wire[:2] + flags.to_bytes(2, "big") + bytes(8)


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, server: DnsTestServer) -> None:
        self._server = server
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        reply = self._server.handle_wire(data, "udp")
        if reply is not None and self.transport is not None:
            self.transport.sendto(reply, addr)


class DnsTestServer:
    """An authoritative DNS server on 127.0.0.1 (UDP and TCP, same ephemeral port)."""

    def __init__(
        self,
        zones: Mapping[str, str],
        servfail: Iterable[str] = (),
        drop: Iterable[str] = (),
        authenticated: Iterable[str] = (),
    ) -> None:
        self.zones = parse_zones(zones)
        self.authenticated: set[str] = {_normalise(z) for z in authenticated}
        self.servfail: set[str] = set(servfail)
        self.drop: set[str] = set(drop)
        self.port = 0
        self._counts: Counter[tuple[str, str, Transport]] = Counter()
        self._query_seen = asyncio.Event()
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def address(self) -> tuple[str, int]:
        """(host, port), the shape ``MxResolver(nameserver=...)`` takes."""
        return (HOST, self.port)

    # -- answering -----------------------------------------------------------------------------

    def handle_wire(self, wire: bytes, transport: Transport) -> bytes | None:
        """Answer one query in wire format; None means stay silent."""
        try:
            query = dns.message.from_wire(wire)
        except dns.exception.DNSException:
            return _formerr(wire)
        if query.flags & dns.flags.QR:
            return None  # a response sent to us: never answer those
        if query.question:
            question = query.question[0]
            name = _normalise(question.name)
            self._count(name, dns.rdatatype.to_text(question.rdtype), transport)
            if name in {_normalise(n) for n in self.drop}:
                return None
            if name in {_normalise(n) for n in self.servfail}:
                response = dns.message.make_response(query)
                response.set_rcode(dns.rcode.SERVFAIL)
                return response.to_wire()
        response = answer_query(self.zones, query)
        if query.question and self._vouches(query):
            response.flags |= dns.flags.AD
        if transport == "tcp":
            return response.to_wire(max_size=65535)
        limit = query.payload if query.edns >= 0 else UDP_PLAIN_LIMIT
        return response.to_wire(max_size=limit, prefer_truncation=True)

    def _vouches(self, query: dns.message.Message) -> bool:
        """AD for answers from an ``authenticated`` zone, to a client that asked (AD or DO)."""
        if not (query.flags & dns.flags.AD or query.ednsflags & dns.flags.DO):
            return False
        zone = _find_zone(self.zones, query.question[0].name)
        return zone is not None and _normalise(cast(dns.name.Name, zone.origin)) in (
            self.authenticated)

    def _count(self, name: str, rdtype: str, transport: Transport) -> None:
        self._counts[(name, rdtype, transport)] += 1
        self._query_seen.set()
        self._query_seen = asyncio.Event()

    def query_count(
        self, name: str, rdtype: str | None = None, transport: Transport | None = None
    ) -> int:
        """How many queries for ``name`` (optionally of one type / over one transport) arrived."""
        wanted = _normalise(name)
        return sum(
            n
            for (qname, qtype, qtransport), n in self._counts.items()
            if qname == wanted
            and (rdtype is None or qtype == rdtype.upper())
            and (transport is None or qtransport == transport)
        )

    async def wait_for_query(self, name: str, rdtype: str | None = None, count: int = 1) -> None:
        """Return once ``count`` queries for ``name`` arrived; TimeoutError after WAIT_LIMIT s."""
        async with asyncio.timeout(WAIT_LIMIT):
            while self.query_count(name, rdtype) < count:
                await self._query_seen.wait()

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind UDP and TCP on one ephemeral port; returns once both are listening."""
        loop = asyncio.get_running_loop()
        self._query_seen = asyncio.Event()
        for _ in range(MAX_BIND_ATTEMPTS):
            transport, _protocol = await loop.create_datagram_endpoint(
                lambda: _UdpProtocol(self), local_addr=(HOST, 0)
            )
            port = transport.get_extra_info("sockname")[1]
            try:
                self._tcp = await asyncio.start_server(self._serve_tcp, HOST, port)
            except OSError:
                transport.close()  # TCP port taken by someone else: try another port
                continue
            self._udp = transport
            self.port = port
            return
        raise OSError(f"no free UDP+TCP port pair on {HOST} after {MAX_BIND_ATTEMPTS} tries")

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        self._writers.add(writer)
        try:
            while True:
                length = int.from_bytes(await reader.readexactly(2), "big")
                reply = self.handle_wire(await reader.readexactly(length), "tcp")
                if reply is not None:
                    writer.write(len(reply).to_bytes(2, "big") + reply)
                    await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self._writers.discard(writer)
            self._connections.discard(task)
            writer.close()

    async def stop(self) -> None:
        """Stop listening and close open TCP connections. Safe to call twice."""
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        if self._tcp is not None:
            self._tcp.close()
            for writer in list(self._writers):
                writer.close()
            await self._tcp.wait_closed()
            self._tcp = None
        pending = list(self._connections)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    async def __aenter__(self) -> DnsTestServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await asyncio.shield(self.stop())
