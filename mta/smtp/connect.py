"""Opening an outbound SMTP connection: TCP, greeting, EHLO/HELO and STARTTLS (aiosmtplib).

:func:`connect_client` connects a TCP socket (trying a few of the host's addresses in order,
within the ``connect`` timeout), reads the greeting, sends EHLO (HELO after a 5xx to EHLO), and
negotiates STARTTLS when the server offers it and the settings allow (``required`` fails without
it; ``opportunistic`` continues in plaintext after a refused command). Each phase runs under its
own ``asyncio.timeout``, and aiosmtplib's exceptions become ``SmtpConnectFailure`` or
``SmtpSessionFailure`` (:mod:`mta.smtp.types`). :func:`client_tls_context` holds the shared TLS
client contexts. :func:`mta.smtp.session.open_session` wraps the result in a session.

``settings.implicit_tls`` makes the TLS handshake first (smtps://, RFC 8314) and skips
STARTTLS; ``settings.login`` logs in after EHLO, over TLS only (smarthost routes).

A session's :class:`~mta.tls.peer.PeerPolicy` (``settings.peer``) decides what the peer must
prove: a certificate valid for the MX host name (MTA-STS, ``tls_verified_domains``: verified by
OpenSSL during the handshake, SNI = the MX name) or a chain matching its TLSA records (DANE:
checked right after the handshake, before EHLO). A peer that fails raises ``TlsAuthFailure``
with the RFC 8460 result type, and nothing is sent on that connection.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import socket
import ssl
from dataclasses import dataclass
from typing import Any

import aiosmtplib
from aiosmtplib.errors import (
    SMTPConnectError,
    SMTPConnectResponseError,
    SMTPException,
    SMTPHeloError,
    SMTPResponseException,
)

from mta.smtp.reply import ServerExtensions, parse_reply
from mta.smtp.types import (
    ConnectReason,
    SessionSettings,
    SmtpConnectFailure,
    TlsAuthFailure,
    session_failure,
    transport_failure,
)
from mta.tls import dane, trust

_MAX_ADDRESSES_TRIED = 4  # per connect: A/AAAA records of one host, bounded
_ENCODING_DER = 2  # _ssl.ENCODING_DER, for the private chain API


@dataclass(frozen=True, slots=True)
class GreetedClient:
    """A connected, greeted aiosmtplib client, the server's extensions and whether TLS is on."""

    client: aiosmtplib.SMTP
    extensions: ServerExtensions
    tls: bool


@functools.lru_cache(maxsize=2)
def client_tls_context(verify: bool) -> ssl.SSLContext:
    """Shared client contexts: MX TLS is unverified by default (opportunistic, like Postfix)."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _tls_context(settings: SessionSettings) -> ssl.SSLContext:
    peer = settings.peer
    if peer is not None and peer.verify_name:
        return trust.verifying_context(peer.ca_file)
    if peer is not None and peer.mode == "dane":
        return trust.dane_context()
    return client_tls_context(settings.tls_verify)


def _peer_chain(client: aiosmtplib.SMTP) -> list[bytes]:
    """The certificates the server sent, leaf first (DER)."""
    ssl_object = client.get_transport_info("ssl_object")
    if ssl_object is None:
        return []
    inner = getattr(ssl_object, "_sslobj", None)  # the full chain: private before Python 3.13
    chain = getattr(inner, "get_unverified_chain", None)
    if chain is not None:
        return [cert.public_bytes(_ENCODING_DER) for cert in chain() or []]
    leaf = ssl_object.getpeercert(binary_form=True)
    return [leaf] if leaf else []


def _check_peer(client: aiosmtplib.SMTP, host: str, port: int, settings: SessionSettings) -> None:
    """DANE: the chain must match a usable TLSA record (none usable: encryption suffices)."""
    peer = settings.peer
    if peer is None or peer.mode != "dane" or not peer.tlsa:
        return
    problem = dane.authenticate(_peer_chain(client), peer.tlsa, peer.server_name or host)
    if problem is not None:
        raise TlsAuthFailure(host, port, "tlsa-invalid", f"{peer.label}: {problem}")


def _no_starttls(host: str, port: int, settings: SessionSettings, detail: str) -> Exception:
    peer = settings.peer
    if peer is not None and peer.mode not in ("required", "opportunistic", "none"):
        return TlsAuthFailure(host, port, "starttls-not-supported", f"{peer.label}: {detail}")
    return SmtpConnectFailure(host, port, "tls_required_unavailable", detail)


async def _connect_socket(host: str, port: int, timeout: float) -> socket.socket:
    """Resolve and connect a TCP socket within ``timeout`` (trying a few addresses in order)."""
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(timeout):
            infos = await _resolve(loop, host, port)
            last_error: OSError = OSError(f"no address for {host}")
            for family, kind, proto, _, address in infos[:_MAX_ADDRESSES_TRIED]:
                sock = socket.socket(family, kind, proto)
                try:
                    sock.setblocking(False)
                    # Small commands must not wait for the previous reply's ACK (Nagle).
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    await loop.sock_connect(sock, address)
                except OSError as exc:
                    sock.close()
                    last_error = exc
                    continue
                except BaseException:
                    sock.close()
                    raise
                return sock
            raise last_error
    except TimeoutError as exc:
        raise SmtpConnectFailure(host, port, "timeout", f"no connection in {timeout:g}s") from exc
    except socket.gaierror as exc:
        raise SmtpConnectFailure(host, port, "dns", str(exc)) from exc
    except ConnectionRefusedError as exc:
        raise SmtpConnectFailure(host, port, "refused", str(exc)) from exc
    except OSError as exc:
        raise SmtpConnectFailure(host, port, "network", str(exc)) from exc


async def _resolve(
    loop: asyncio.AbstractEventLoop, host: str, port: int
) -> list[tuple[Any, Any, int, str, Any]]:
    try:
        literal = ipaddress.ip_address(host)
    except ValueError:
        return await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    family = socket.AF_INET6 if literal.version == 6 else socket.AF_INET
    return [(family, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (host, port))]


async def connect_client(
    host: str, port: int, settings: SessionSettings, *, starttls: bool = True
) -> GreetedClient:
    """Connect, read the greeting, EHLO (HELO fallback), STARTTLS when offered and allowed.

    ``starttls=False`` skips STARTTLS even when offered (the opportunistic-TLS fallback after a
    failed handshake). Raises ``SmtpConnectFailure`` or ``SmtpSessionFailure``; closes the client
    on any failure.
    """
    timeouts = settings.timeouts
    peer = settings.peer
    try:
        client = aiosmtplib.SMTP(
            # With implicit TLS the handshake's SNI and name check use this name.
            hostname=(peer.server_name if settings.implicit_tls and peer is not None
                      and peer.server_name else host),
            local_hostname=settings.ehlo_name,
            timeout=None,  # every call passes timeout=None and runs under asyncio.timeout
            start_tls=False,
            validate_certs=settings.tls_verify,
            tls_context=client_tls_context(settings.tls_verify),
        )
    except ValueError as exc:  # a host name with control characters
        raise SmtpConnectFailure(host, port, "dns", f"invalid host name: {exc}") from exc
    sock = await _connect_socket(host, port, timeouts.connect)
    try:
        await _read_greeting(client, sock, host, port, timeouts.greeting,
                             _tls_context(settings) if settings.implicit_tls else None)
        extensions = await _greet(client, host, port, settings)
        tls = settings.implicit_tls
        if settings.implicit_tls:
            _check_peer(client, host, port, settings)
        elif settings.tls != "none" and starttls and extensions.starttls:
            if await _start_tls(client, host, port, settings):
                tls = True
                _check_peer(client, host, port, settings)
                extensions = await _greet(client, host, port, settings)
        if settings.tls == "required" and not tls:
            raise _no_starttls(host, port, settings, "server does not offer STARTTLS")
        if settings.login is not None:
            await _login(client, host, port, settings, tls)
    except BaseException:
        client.close()
        raise
    return GreetedClient(client, extensions, tls)


async def _read_greeting(
    client: aiosmtplib.SMTP, sock: socket.socket, host: str, port: int, timeout: float,
    implicit_tls: ssl.SSLContext | None = None,
) -> None:
    """Connect aiosmtplib over ``sock`` (after a TLS handshake with ``implicit_tls``) and read
    the greeting."""
    try:
        async with asyncio.timeout(timeout):
            if implicit_tls is not None:
                await client.connect(sock=sock, timeout=None, use_tls=True,
                                     tls_context=implicit_tls)
            else:
                await client.connect(sock=sock, timeout=None)
    except ssl.SSLCertVerificationError as exc:
        sock.close()
        result_type, problem = trust.describe_verify_error(exc, client.hostname or host)
        raise TlsAuthFailure(host, port, result_type, f"implicit TLS: {problem}") from exc
    except ssl.SSLError as exc:
        sock.close()
        raise SmtpConnectFailure(host, port, "tls_handshake",
                                 f"TLS handshake failed: {exc}") from exc
    except SMTPConnectResponseError as exc:
        raise session_failure(host, port, "connect", parse_reply(exc.code, exc.message)) from exc
    except (SMTPException, OSError) as exc:
        verify_error = _verify_error(exc) if implicit_tls is not None else None
        if verify_error is not None:  # aiosmtplib wraps the implicit TLS handshake's failure
            sock.close()
            result_type, problem = trust.describe_verify_error(verify_error,
                                                               client.hostname or host)
            raise TlsAuthFailure(host, port, result_type, f"implicit TLS: {problem}") from exc
        cause = exc.__cause__
        if isinstance(cause, OSError) and not isinstance(cause, SMTPException):
            sock.close()  # the transport never took the socket over
        if isinstance(exc, SMTPConnectError) and isinstance(cause, SMTPException):
            exc = cause  # greeting timeout or disconnect, wrapped by aiosmtplib
        raise transport_failure(host, port, "connect", exc, timeout) from exc


def _verify_error(exc: BaseException) -> ssl.SSLCertVerificationError | None:
    seen = 0
    current: BaseException | None = exc
    while current is not None and seen < 5:
        if isinstance(current, ssl.SSLCertVerificationError):
            return current
        current = current.__cause__ or current.__context__
        seen += 1
    return None


async def _greet(
    client: aiosmtplib.SMTP, host: str, port: int, settings: SessionSettings
) -> ServerExtensions:
    """EHLO; on a 5xx to EHLO, HELO (RFC 5321 §3.2) and assume no extensions."""
    timeout = settings.timeouts.ehlo
    try:
        try:
            async with asyncio.timeout(timeout):
                await client.ehlo(hostname=settings.ehlo_name, timeout=None)
        except SMTPHeloError as exc:
            reply = parse_reply(exc.code, exc.message)
            if not reply.permanent or not client.is_connected:
                raise session_failure(host, port, "ehlo", reply) from exc
            try:
                async with asyncio.timeout(timeout):
                    await client.helo(hostname=settings.ehlo_name, timeout=None)
            except SMTPHeloError as helo_exc:
                helo_reply = parse_reply(helo_exc.code, helo_exc.message)
                raise session_failure(host, port, "ehlo", helo_reply) from helo_exc
            return ServerExtensions()
    except (SMTPException, OSError) as exc:
        raise transport_failure(host, port, "ehlo", exc, timeout) from exc
    return ServerExtensions.from_keywords(client.esmtp_extensions)


async def _start_tls(
    client: aiosmtplib.SMTP, host: str, port: int, settings: SessionSettings
) -> bool:
    """STARTTLS. False if the server refused the command (plaintext continues, if allowed)."""
    peer = settings.peer
    server_name = peer.server_name if peer is not None else None
    try:
        async with asyncio.timeout(settings.timeouts.starttls):
            await client.starttls(server_hostname=server_name, tls_context=_tls_context(settings),
                                  timeout=None)
    except ssl.SSLCertVerificationError as exc:
        label = peer.label if peer is not None else "verified TLS"
        result_type, problem = trust.describe_verify_error(exc, server_name or host)
        raise TlsAuthFailure(host, port, result_type, f"{label}: {problem}") from exc
    except SMTPResponseException as exc:
        if exc.code < 0:  # malformed reply: the dialogue is out of sync
            timeout = settings.timeouts.starttls
            raise transport_failure(host, port, "starttls", exc, timeout) from exc
        if exc.code == 421:  # the server is closing the channel
            reply = parse_reply(exc.code, exc.message)
            raise session_failure(host, port, "starttls", reply) from exc
        if settings.tls == "required" or not client.is_connected:
            detail = f"STARTTLS refused: {exc.code} {exc.message}"
            raise _no_starttls(host, port, settings, detail) from exc
        return False
    except (SMTPException, OSError) as exc:
        reason: ConnectReason = (
            "tls_required_unavailable" if settings.tls == "required" else "tls_handshake"
        )
        raise SmtpConnectFailure(host, port, reason, f"TLS handshake failed: {exc}") from exc
    return True


async def _login(client: aiosmtplib.SMTP, host: str, port: int, settings: SessionSettings,
                 tls: bool) -> None:
    """AUTH with the route's credentials; a refusal is a connect failure (the message waits
    and is retried: a wrong smarthost password must not bounce the mail)."""
    login = settings.login
    assert login is not None
    if not tls:  # never reached with a verified route; a last guard for the password
        raise SmtpConnectFailure(host, port, "login", "refusing to send credentials without TLS")
    try:
        async with asyncio.timeout(settings.timeouts.ehlo):
            await client.login(login.username, login.password, timeout=None)
    except SMTPResponseException as exc:
        raise SmtpConnectFailure(host, port, "login",
                                 f"AUTH refused: {exc.code} {exc.message}") from exc
    except (SMTPException, OSError) as exc:
        raise transport_failure(host, port, "ehlo", exc, settings.timeouts.ehlo) from exc
