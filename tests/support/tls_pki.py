"""A test PKI made with ``cryptography``: a CA, certificates it issues, self-signed ones, and
an HTTPS server on loopback (MTA-STS policies, TLS-RPT posts) that records what it served."""

from __future__ import annotations

import asyncio
import datetime
import functools
import hashlib
import ipaddress
import ssl
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_NOW = datetime.datetime.now(datetime.UTC)


@dataclass(frozen=True)
class Issued:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    chain: tuple[x509.Certificate, ...] = ()  # intermediates / CA sent after the leaf

    @property
    def der(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.DER)

    def spki_sha256(self) -> bytes:
        spki = self.cert.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        return hashlib.sha256(spki).digest()

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        with tempfile.TemporaryDirectory() as tmp:
            cert_file, key_file = Path(tmp, "cert.pem"), Path(tmp, "key.pem")
            cert_file.write_bytes(b"".join(
                c.public_bytes(serialization.Encoding.PEM) for c in (self.cert, *self.chain)))
            key_file.write_bytes(self.key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption()))
            context.load_cert_chain(cert_file, key_file)
        return context


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _builder(subject: str, issuer: x509.Name, key: ec.EllipticCurvePrivateKey
             ) -> x509.CertificateBuilder:
    return (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(issuer)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(_NOW - datetime.timedelta(hours=1))
            .not_valid_after(_NOW + datetime.timedelta(days=2)))


class PkiCa:
    """A CA whose PEM goes to ``[mta] tls_ca_file``; ``issue`` makes server certificates."""

    def __init__(self, name: str = "Herald Test CA") -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        ski = x509.SubjectKeyIdentifier.from_public_key(self.key.public_key())
        self.cert = (_builder(name, _name(name), self.key)
                     .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
                     .add_extension(x509.KeyUsage(False, False, False, False, False, True, True,
                                                  False, False), True)
                     .add_extension(ski, False)
                     .sign(self.key, hashes.SHA256()))

    @property
    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def write(self, directory: Path) -> Path:
        path = directory / "test-ca.pem"
        path.write_bytes(self.pem)
        return path

    def issue(self, *names: str) -> Issued:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (_builder(names[0], self.cert.subject, key)
                .add_extension(x509.SubjectAlternativeName(_alt_names(names)), False)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                    self.key.public_key()), False)
                .sign(self.key, hashes.SHA256()))
        return Issued(cert, key, (self.cert,))


def _alt_names(names: tuple[str, ...]) -> list[x509.GeneralName]:
    alt: list[x509.GeneralName] = []
    for name in names:
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alt.append(x509.DNSName(name))
    return alt


@functools.cache
def self_signed(name: str) -> Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (_builder(name, _name(name), key)
            .add_extension(x509.SubjectAlternativeName(_alt_names((name,))), False)
            .sign(key, hashes.SHA256()))
    return Issued(cert, key)


@dataclass
class HttpsRecord:
    requests: list[tuple[str, str, dict[str, str], bytes]] = field(default_factory=list)
    posted: asyncio.Queue[tuple[str, dict[str, str], bytes]] = field(
        default_factory=asyncio.Queue)


class HttpsServer:
    """HTTPS/1.1 on 127.0.0.1: GET ``path`` answers ``routes[path]`` = (status, type, body);
    POSTs are answered 200 and queued in ``record.posted``. One request per connection."""

    MAX_BODY = 1 << 20

    def __init__(self, issued: Issued, routes: dict[str, tuple[int, str, bytes]] | None = None
                 ) -> None:
        self.issued = issued
        self.routes = routes or {}
        self.record = HttpsRecord()
        self.port = 0
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> HttpsServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0,
                                                  ssl=self.issued.server_context())
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(5):
                request_line = (await reader.readline()).decode("latin-1").strip()
                headers: dict[str, str] = {}
                while (line := (await reader.readline()).decode("latin-1").strip()):
                    key, _, value = line.partition(":")
                    headers[key.strip().lower()] = value.strip()
                length = min(int(headers.get("content-length", "0")), self.MAX_BODY)
                body = await reader.readexactly(length) if length else b""
                method, path, _ = request_line.split(" ", 2)
                self.record.requests.append((method, path, headers, body))
                if method == "POST":
                    self.record.posted.put_nowait((path, headers, body))
                    status, kind, payload = 200, "text/plain", b"ok"
                else:
                    status, kind, payload = self.routes.get(path, (404, "text/plain", b"no"))
                head = (f"HTTP/1.1 {status} X\r\nContent-Type: {kind}\r\n"
                        f"Content-Length: {len(payload)}\r\nConnection: close\r\n")
                if status in (301, 302):
                    head += "Location: https://elsewhere.test/\r\n"
                writer.write(head.encode() + b"\r\n" + payload)
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError, TimeoutError, ValueError):
            pass
        finally:
            writer.close()
