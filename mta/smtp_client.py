"""One outbound SMTP session on top of aiosmtplib: connect, EHLO, STARTTLS, transactions, QUIT.

This is the aiosmtplib boundary: its exceptions never leave this module. They become
``SmtpConnectFailure`` (no usable session: refused, timeout, DNS, TLS; the caller tries the next
MX), ``SmtpSessionFailure`` (the dialogue failed at a named phase, permanent for 5xx, temporary
for 4xx, disconnects and timeouts) or per-recipient ``RecipientResult``s.

Timeouts are per phase (RFC 5321 §4.5.3.2), enforced with ``asyncio.timeout`` around aiosmtplib
calls made with ``timeout=None``: on Python 3.11 aiosmtplib's own timeouts go through
``asyncio.wait_for``, which can swallow a cancellation that races a reply. The body is handed to
the transport in one write, so the RFC's per-block "data block" timeout is folded into
``data_final`` (the wait for the reply to the final "."). A session is reusable after a
reply-level refusal (the dialogue is in sync, and an RSET is sent where a transaction was left
open); any transport error, timeout, malformed reply or 421 breaks it for good.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import socket
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import aiosmtplib
from aiosmtplib.errors import (
    SMTPConnectError,
    SMTPConnectResponseError,
    SMTPException,
    SMTPHeloError,
    SMTPResponseException,
)

from engine.errors import ConfigError
from mta.errors import MtaError, PermanentFailure, TemporaryFailure
from mta.smtp_reply import PreparedMessage, ServerExtensions, SmtpReply, parse_reply

Phase = Literal["connect", "ehlo", "starttls", "mail", "rcpt", "data", "data_final"]
TlsMode = Literal["opportunistic", "required", "none"]
ConnectReason = Literal[
    "refused", "timeout", "dns", "network", "tls_handshake", "tls_required_unavailable"
]

_PHASE_COMMAND: dict[str, str] = {
    "connect": "the greeting", "ehlo": "EHLO", "starttls": "STARTTLS", "mail": "MAIL FROM",
    "rcpt": "RCPT TO", "data": "DATA", "data_final": "the end of data", "rset": "RSET",
}
_MAX_ADDRESSES_TRIED = 4  # per connect: A/AAAA records of one host, bounded
_ACCEPTED_RCPT = (250, 251)


# --- results and errors -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RecipientResult:
    recipient: str
    reply: SmtpReply
    accepted: bool


@dataclass(frozen=True, slots=True)
class SendResult:
    """What the server said: per-recipient RCPT replies and the reply to the final "." (None when
    no recipient was accepted and DATA was not sent)."""

    remote_host: str
    remote_port: int
    recipients: tuple[RecipientResult, ...]
    data_reply: SmtpReply | None
    tls: bool

    @property
    def accepted(self) -> tuple[str, ...]:
        """Recipients the server took responsibility for (empty unless DATA got 250)."""
        if self.data_reply is None or self.data_reply.code != 250:
            return ()
        return tuple(r.recipient for r in self.recipients if r.accepted)


class SmtpConnectFailure(TemporaryFailure):
    """No usable session with this host (refused, timeout, DNS, TLS): try the next MX."""

    def __init__(self, host: str, port: int, reason: ConnectReason, detail: str) -> None:
        super().__init__(f"cannot open an SMTP session to {host}:{port}: {reason}: {detail}")
        self.host = host
        self.port = port
        self.reason: ConnectReason = reason
        self.detail = detail


class SmtpSessionFailure(MtaError):
    """The dialogue failed at ``phase``. ``reply`` is the server's reply, or one Herald made up
    (``remote`` False) for a timeout, a lost connection or a missing extension;
    ``connection_lost`` is True when the server closed the connection without a reply."""

    permanent: ClassVar[bool] = False

    def __init__(
        self,
        host: str,
        port: int,
        phase: Phase,
        reply: SmtpReply,
        *,
        remote: bool = True,
        connection_lost: bool = False,
    ) -> None:
        super().__init__(f"{host}:{port} {_PHASE_COMMAND[phase]}: {reply}")
        self.host = host
        self.port = port
        self.phase: Phase = phase
        self.reply = reply
        self.remote = remote
        self.connection_lost = connection_lost


class SmtpTemporaryFailure(SmtpSessionFailure, TemporaryFailure):
    permanent = False


class SmtpPermanentFailure(SmtpSessionFailure, PermanentFailure):
    permanent = True


def session_failure(
    host: str, port: int, phase: Phase, reply: SmtpReply, *, remote: bool = True
) -> SmtpSessionFailure:
    """5xx is permanent; 4xx, and anything else where a success was due, is temporary."""
    cls = SmtpPermanentFailure if reply.permanent else SmtpTemporaryFailure
    return cls(host, port, phase, reply, remote=remote)


def _local_reply(code: int, enhanced: str, text: str) -> SmtpReply:
    return SmtpReply(code, enhanced, text)


# --- settings ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SmtpTimeouts:
    """Seconds per phase; defaults follow RFC 5321 §4.5.3.2 (rset/quit: Postfix-like, short)."""

    connect: float = 30.0
    greeting: float = 300.0
    ehlo: float = 300.0
    starttls: float = 300.0
    mail: float = 300.0
    rcpt: float = 300.0
    data_init: float = 120.0
    data_final: float = 600.0
    rset: float = 20.0
    quit: float = 20.0

    def __post_init__(self) -> None:
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            if not isinstance(value, int | float) or not 0 < value <= 3600:
                raise ConfigError(f"smtp timeouts.{name}: must be in (0, 3600] seconds")


@dataclass(frozen=True, slots=True)
class SessionSettings:
    ehlo_name: str
    tls: TlsMode = "opportunistic"
    tls_verify: bool = False
    timeouts: SmtpTimeouts = field(default_factory=SmtpTimeouts)

    def __post_init__(self) -> None:
        name = self.ehlo_name
        if not name or len(name) > 255 or not name.isascii() or any(
            c.isspace() or not c.isprintable() for c in name
        ):
            raise ConfigError("ehlo_name: must be 1-255 printable ASCII characters, no spaces")
        if self.tls not in ("opportunistic", "required", "none"):
            raise ConfigError("tls: must be one of opportunistic, required, none")


@functools.lru_cache(maxsize=2)
def client_tls_context(verify: bool) -> ssl.SSLContext:
    """Shared client contexts: MX TLS is unverified by default (opportunistic, like Postfix)."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


# --- connecting -------------------------------------------------------------------------------


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


def _transport_failure(
    host: str, port: int, phase: Phase, exc: BaseException, timeout: float
) -> SmtpTemporaryFailure:
    """A timeout, disconnect or malformed reply, as a temporary failure with a made-up reply."""
    command = _PHASE_COMMAND[phase]
    lost = False
    if isinstance(exc, TimeoutError):
        reply = _local_reply(421, "4.4.2", f"timed out after {timeout:g}s waiting for {command}")
    elif isinstance(exc, SMTPResponseException):
        reply = _local_reply(421, "4.5.0", f"malformed reply to {command}: {exc.message[:200]}")
    else:
        lost = True
        reply = _local_reply(421, "4.4.2", f"lost connection during {command}")
    return SmtpTemporaryFailure(host, port, phase, reply, remote=False, connection_lost=lost)


async def open_session(
    host: str, port: int, settings: SessionSettings, *, starttls: bool = True
) -> SmtpSession:
    """Connect, read the greeting, EHLO (HELO fallback), STARTTLS when offered and allowed.

    ``starttls=False`` skips STARTTLS even when offered (the opportunistic-TLS fallback after a
    failed handshake). Raises ``SmtpConnectFailure`` or ``SmtpSessionFailure``.
    """
    timeouts = settings.timeouts
    try:
        client = aiosmtplib.SMTP(
            hostname=host,
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
        await _read_greeting(client, sock, host, port, timeouts.greeting)
        extensions = await _greet(client, host, port, settings)
        tls = False
        if settings.tls != "none" and starttls and extensions.starttls:
            if await _start_tls(client, host, port, settings):
                tls = True
                extensions = await _greet(client, host, port, settings)
        if settings.tls == "required" and not tls:
            raise SmtpConnectFailure(
                host, port, "tls_required_unavailable", "server does not offer STARTTLS"
            )
    except BaseException:
        client.close()
        raise
    return SmtpSession(client, host, port, timeouts, extensions, tls)


async def _read_greeting(
    client: aiosmtplib.SMTP, sock: socket.socket, host: str, port: int, timeout: float
) -> None:
    try:
        async with asyncio.timeout(timeout):
            await client.connect(sock=sock, timeout=None)
    except SMTPConnectResponseError as exc:
        raise session_failure(host, port, "connect", parse_reply(exc.code, exc.message)) from exc
    except (SMTPException, OSError) as exc:
        cause = exc.__cause__
        if isinstance(cause, OSError) and not isinstance(cause, SMTPException):
            sock.close()  # the transport never took the socket over
        if isinstance(exc, SMTPConnectError) and isinstance(cause, SMTPException):
            exc = cause  # greeting timeout or disconnect, wrapped by aiosmtplib
        raise _transport_failure(host, port, "connect", exc, timeout) from exc


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
        raise _transport_failure(host, port, "ehlo", exc, timeout) from exc
    return ServerExtensions.from_keywords(client.esmtp_extensions)


async def _start_tls(
    client: aiosmtplib.SMTP, host: str, port: int, settings: SessionSettings
) -> bool:
    """STARTTLS. False if the server refused the command (plaintext continues, if allowed)."""
    try:
        async with asyncio.timeout(settings.timeouts.starttls):
            await client.starttls(tls_context=client_tls_context(settings.tls_verify), timeout=None)
    except SMTPResponseException as exc:
        if exc.code < 0:  # malformed reply: the dialogue is out of sync
            timeout = settings.timeouts.starttls
            raise _transport_failure(host, port, "starttls", exc, timeout) from exc
        if exc.code == 421:  # the server is closing the channel
            reply = parse_reply(exc.code, exc.message)
            raise session_failure(host, port, "starttls", reply) from exc
        if settings.tls == "required" or not client.is_connected:
            detail = f"STARTTLS refused: {exc.code} {exc.message}"
            raise SmtpConnectFailure(host, port, "tls_required_unavailable", detail) from exc
        return False
    except (SMTPException, OSError) as exc:
        reason: ConnectReason = (
            "tls_required_unavailable" if settings.tls == "required" else "tls_handshake"
        )
        raise SmtpConnectFailure(host, port, reason, f"TLS handshake failed: {exc}") from exc
    return True


# --- the session ------------------------------------------------------------------------------


class SmtpSession:
    """One open, greeted connection. Not safe for concurrent use: one transaction at a time."""

    def __init__(
        self,
        client: aiosmtplib.SMTP,
        host: str,
        port: int,
        timeouts: SmtpTimeouts,
        extensions: ServerExtensions,
        tls: bool,
    ) -> None:
        self._client = client
        self.host = host
        self.port = port
        self.extensions = extensions
        self.tls = tls
        self._timeouts = timeouts
        self.transactions = 0  # MAIL commands sent on this connection
        self.last_used = 0.0  # set by the pool, on its clock
        self._broken = False
        self._busy = False  # inside a transaction; stays True if cancelled there
        self.reset_done = False  # the last command was a successful RSET

    @property
    def reusable(self) -> bool:
        return not self._broken and not self._busy and self._client.is_connected

    async def deliver(
        self,
        mail_from: str,
        recipients: Sequence[str],
        message: PreparedMessage,
        *,
        smtputf8: bool,
    ) -> SendResult:
        """One transaction. The envelope must have passed ``check_envelope``.

        Returns per-recipient results (no DATA if none was accepted); raises
        ``SmtpSessionFailure`` for a refused MAIL, DATA or final reply, a 421, a timeout or a lost
        connection.
        """
        params = self._mail_parameters(message, smtputf8)
        self._busy = True
        self.reset_done = False
        self.transactions += 1
        reply = await self._exchange(
            "mail", self._timeouts.mail, b"MAIL", b"FROM:<" + mail_from.encode() + b">", *params
        )
        if reply.code != 250:
            raise await self._refused("mail", reply)
        results: list[RecipientResult] = []
        for recipient in recipients:
            reply = await self._exchange(
                "rcpt", self._timeouts.rcpt, b"RCPT", b"TO:<" + recipient.encode() + b">"
            )
            results.append(RecipientResult(recipient, reply, reply.code in _ACCEPTED_RCPT))
        if not any(result.accepted for result in results):
            await self._reset_after_refusal()
            return SendResult(self.host, self.port, tuple(results), None, self.tls)
        reply = await self._exchange("data", self._timeouts.data_init, b"DATA")
        if reply.code != 354:
            raise await self._refused("data", reply)
        final = await self._send_body(message.wire)
        self._busy = False
        if final.code != 250:
            raise session_failure(self.host, self.port, "data_final", final)
        return SendResult(self.host, self.port, tuple(results), final, self.tls)

    def _mail_parameters(self, message: PreparedMessage, smtputf8: bool) -> list[bytes]:
        """MAIL parameters, or a permanent failure when the server lacks a needed extension."""
        ext = self.extensions
        params: list[bytes] = []
        if message.eight_bit:
            if not ext.eightbitmime:
                raise self._local_refusal(554, "5.6.3", "8-bit message, server lacks 8BITMIME")
            params.append(b"BODY=8BITMIME")
        if smtputf8:
            if not ext.smtputf8:
                raise self._local_refusal(
                    553, "5.6.7", "non-ASCII address, server lacks SMTPUTF8"
                )
            params.append(b"SMTPUTF8")
        if ext.size_limit is not None:
            if ext.size_limit and message.size > ext.size_limit:
                raise self._local_refusal(
                    552, "5.3.4", f"message is {message.size} octets, server limit {ext.size_limit}"
                )
            params.append(b"SIZE=%d" % message.size)
        return params

    def _local_refusal(self, code: int, enhanced: str, text: str) -> SmtpSessionFailure:
        reply = _local_reply(code, enhanced, text)
        return session_failure(self.host, self.port, "mail", reply, remote=False)

    async def _refused(self, phase: Phase, reply: SmtpReply) -> SmtpSessionFailure:
        await self._reset_after_refusal()
        return session_failure(self.host, self.port, phase, reply)

    async def _reset_after_refusal(self) -> None:
        """Close the open transaction with RSET; the session stays reusable only if RSET works."""
        if await self.reset():
            self._busy = False

    async def reset(self) -> bool:
        """RSET (also a liveness probe for a reused connection). False marks the session broken."""
        try:
            async with asyncio.timeout(self._timeouts.rset):
                response = await self._client.execute_command(b"RSET", timeout=None)
        except (SMTPException, OSError):
            self._break()
            return False
        if response.code != 250:
            self._break()
            return False
        self.reset_done = True
        return True

    async def _exchange(self, phase: Phase, timeout: float, *command: bytes) -> SmtpReply:
        try:
            async with asyncio.timeout(timeout):
                response = await self._client.execute_command(*command, timeout=None)
        except (SMTPException, OSError) as exc:
            self._break()
            raise _transport_failure(self.host, self.port, phase, exc, timeout) from exc
        reply = parse_reply(response.code, response.message)
        if reply.code == 421:  # the server is closing the channel (aiosmtplib closed it too)
            self._break()
            raise session_failure(self.host, self.port, phase, reply)
        return reply

    async def _send_body(self, wire: bytes) -> SmtpReply:
        """Write the prepared body and wait for the final reply (``data_final`` timeout)."""
        timeout = self._timeouts.data_final
        protocol = self._client.protocol
        try:
            if protocol is None:
                raise aiosmtplib.SMTPServerDisconnected("connection lost")
            protocol.write(wire)
            async with asyncio.timeout(timeout):
                response = await protocol.read_response(timeout=None)
        except (SMTPException, OSError) as exc:
            self._break()
            raise _transport_failure(self.host, self.port, "data_final", exc, timeout) from exc
        reply = parse_reply(response.code, response.message)
        if reply.code == 421:
            self._break()
        return reply

    def _break(self) -> None:
        self._broken = True
        self._client.close()

    async def quit(self) -> None:
        """QUIT politely if the session is healthy, then close. Never raises (but cancellation)."""
        try:
            if self.reusable:
                async with asyncio.timeout(self._timeouts.quit):
                    await self._client.quit(timeout=None)
        except (SMTPException, OSError):
            pass
        finally:
            self.abort()

    def abort(self) -> None:
        """Close the connection now, without QUIT."""
        self._broken = True
        self._client.close()
