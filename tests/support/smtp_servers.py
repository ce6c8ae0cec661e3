"""SMTP servers for tests, on 127.0.0.1 only.

- ``ScriptedSmtpServer``: an aiosmtpd server in the test's own event loop whose reply at each
  phase is scripted (4xx/5xx, a dropped connection, a reply held until an ``asyncio.Event`` the
  test controls, 421 throttling after N messages, STARTTLS with a self-signed certificate or a
  broken handshake, 8BITMIME/SMTPUTF8 advertised or not) and which records what it saw.
- ``SmtpSinkProcess``: Postfix's ``smtp-sink`` on an ephemeral port (skip with
  ``requires_smtp_sink`` when the binary is absent).

Phases are named by verb: "CONNECT" (the greeting), "EHLO", "MAIL", "RCPT", "DATA" (the reply to
the DATA command) and "." (the reply after the message body).
"""

from __future__ import annotations

import asyncio
import datetime
import functools
import ipaddress
import os
import pwd
import shutil
import socket
import ssl
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, cast

import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session

from mta.smtp.reply import SmtpReply, parse_reply

SMTP_SINK = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"
SWAKS = shutil.which("swaks") or "/usr/bin/swaks"
requires_smtp_sink = pytest.mark.skipif(
    not os.access(SMTP_SINK, os.X_OK), reason=f"Postfix smtp-sink not installed ({SMTP_SINK})"
)
requires_swaks = pytest.mark.skipif(
    not os.access(SWAKS, os.X_OK), reason=f"swaks not installed ({SWAKS})"
)
_STARTUP_TIMEOUT = 5.0


@dataclass
class Script:
    """How the scripted server answers. ``None`` means the normal (successful) reply."""

    greeting: str | None = None  # e.g. "554 5.7.1 go away": sent instead of 220, then close
    ehlo: str | None = None  # e.g. "421 4.3.2 busy" instead of the extension list
    helo: str | None = None
    mail: str | None = None
    rcpt: dict[str, str] = field(default_factory=dict)  # recipient -> reply
    data: str | None = None  # reply to the DATA command instead of 354
    final: str | None = None  # reply after the body instead of 250
    drop: frozenset[str] = frozenset()  # phases where the server closes without replying
    drop_nth: dict[str, int] = field(default_factory=dict)  # verb -> drop on its n-th use (1-based)
    holds: dict[str, asyncio.Event] = field(default_factory=dict)  # phase -> wait before reply
    throttle_after: int | None = None  # MAIL gets 421 once this many messages were accepted
    starttls: bool = False  # offer STARTTLS with a self-signed certificate
    tls_context: ssl.SSLContext | None = None  # offer STARTTLS with this certificate instead
    break_tls: bool = False  # answer 220 to STARTTLS, then send garbage instead of a handshake
    eightbitmime: bool = True
    smtputf8: bool = True
    pipelining: bool = False  # advertise PIPELINING (aiosmtpd reads pipelined commands in order)


@dataclass(frozen=True)
class ReceivedMessage:
    mail_from: str
    rcpt_tos: tuple[str, ...]
    data: bytes  # as received, dot-unstuffed, CRLF line endings
    mail_options: tuple[str, ...]
    tls: bool


@dataclass
class ServerRecord:
    connections: int = 0
    active: int = 0
    max_active: int = 0
    ehlos: int = 0
    tls_handshakes: int = 0
    commands: list[str] = field(default_factory=list)
    phases: dict[str, int] = field(default_factory=dict)  # replies due per phase, drops included
    messages: list[ReceivedMessage] = field(default_factory=list)
    received: bytearray = field(default_factory=bytearray)  # every byte from the client
    received_before: dict[str, bytes] = field(default_factory=dict)  # phase -> at 1st reply
    _changed: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    def touch(self) -> None:
        """Wake everyone in ``wait_until`` to re-check their condition."""
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_until(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        """Wait (bounded) until ``predicate()`` holds; re-checked on every recorded change."""
        async with asyncio.timeout(timeout):
            while True:
                changed = self._changed
                if predicate():
                    return
                await changed.wait()


@functools.cache
def self_signed_pem() -> tuple[bytes, bytes]:
    """A throwaway certificate and key for "localhost" / 127.0.0.1 (EC P-256, one day)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def server_tls_context() -> ssl.SSLContext:
    cert_pem, key_pem = self_signed_pem()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with tempfile.TemporaryDirectory() as tmp:
        cert_file, key_file = Path(tmp, "cert.pem"), Path(tmp, "key.pem")
        cert_file.write_bytes(cert_pem)
        key_file.write_bytes(key_pem)
        context.load_cert_chain(cert_file, key_file)
    return context


class _ScriptedHandler:
    def __init__(self, script: Script, record: ServerRecord) -> None:
        self.script = script
        self.record = record

    async def handle_EHLO(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        self.record.ehlos += 1
        session.host_name = hostname
        if self.script.ehlo is not None:
            return [self.script.ehlo]
        dropped = set()
        if not self.script.eightbitmime:
            dropped.add("8BITMIME")
        if not self.script.smtputf8:
            dropped.add("SMTPUTF8")
        kept = [r for r in responses if r[4:].split(" ")[0].upper() not in dropped]
        if self.script.pipelining:
            kept.insert(-1, "250-PIPELINING")
        return kept

    async def handle_HELO(
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str
    ) -> str:
        session.host_name = hostname
        return self.script.helo or f"250 {server.hostname}"

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        limit = self.script.throttle_after
        if limit is not None and len(self.record.messages) >= limit:
            return "421 4.7.0 Throttled: too many messages, try later"
        if self.script.mail is not None:
            return self.script.mail
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 2.1.0 Ok"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        scripted = self.script.rcpt.get(address)
        if scripted is not None:
            return scripted
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 Ok"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        assert isinstance(server, _ScriptedSMTP)
        await server.before_reply(".")
        if self.script.final is not None:
            return self.script.final
        self.record.messages.append(
            ReceivedMessage(
                mail_from=envelope.mail_from or "",
                rcpt_tos=tuple(envelope.rcpt_tos),
                data=bytes(envelope.original_content or b""),
                mail_options=tuple(envelope.mail_options),
                tls=session.ssl is not None,
            )
        )
        self.record.touch()
        return "250 2.0.0 Ok: queued"

    def handle_STARTTLS(self, server: SMTP, session: Session, envelope: Envelope) -> bool:
        self.record.tls_handshakes += 1
        return True


class _ScriptedSMTP(SMTP):
    def __init__(
        self, handler: _ScriptedHandler, sessions: set[_ScriptedSMTP], **kwargs: Any
    ) -> None:
        super().__init__(handler, **kwargs)
        self._script = handler.script
        self._record = handler.record
        self._sessions = sessions
        self._close_after_reply = False
        self._counted = False
        self._smtp_methods = {
            verb: self._scripted(verb, method) for verb, method in self._smtp_methods.items()
        }

    def _scripted(
        self, verb: str, method: Callable[[str | None], Awaitable[None]]
    ) -> Callable[[str | None], Awaitable[None]]:
        async def run(arg: str | None) -> None:
            record = self._record
            record.commands.append(verb)
            record.touch()
            if verb == "STARTTLS" and self._script.break_tls:
                await self.push("220 2.0.0 Ready to start TLS")
                assert self.transport is not None
                cast(asyncio.Transport, self.transport).write(b"not a TLS handshake\r\n" * 4)
                await self.drop()
            await self.before_reply(verb)
            if verb == "DATA" and self._script.data is not None:
                assert self.envelope is not None
                if self.envelope.rcpt_tos:
                    await self.push(self._script.data)
                    self._finish_reply()
                    return
            await method(arg)
            self._finish_reply()

        return run

    async def before_reply(self, phase: str) -> None:
        """Apply the script's drop or hold for ``phase``."""
        seen = self._record.phases[phase] = self._record.phases.get(phase, 0) + 1
        self._record.received_before.setdefault(phase, bytes(self._record.received))
        if phase in self._script.drop or seen == self._script.drop_nth.get(phase):
            await self.drop()
        hold = self._script.holds.get(phase)
        if hold is not None:
            await hold.wait()

    async def drop(self) -> None:
        """Close the connection without a reply; connection_lost then cancels this task."""
        if self.transport is not None:
            cast(asyncio.Transport, self.transport).abort()
        await asyncio.get_running_loop().create_future()

    async def push(self, status: Any) -> None:
        await super().push(status)
        text = status.decode() if isinstance(status, bytes) else str(status)
        if text.startswith("421"):
            self._close_after_reply = True

    def _finish_reply(self) -> None:
        if self._close_after_reply and self.transport is not None:
            self.transport.close()

    async def _handle_client(self) -> None:
        record = self._record
        record.connections += 1
        record.active += 1
        record.max_active = max(record.max_active, record.active)
        self._counted = True
        self._sessions.add(self)
        record.touch()
        try:
            await self.before_reply("CONNECT")
            if self._script.greeting is not None:
                await self.push(self._script.greeting)
                if self.transport is not None:
                    self.transport.close()
                return
            await super()._handle_client()
        finally:
            self._gone()

    def _gone(self) -> None:
        if self._counted:
            self._counted = False
            self._record.active -= 1
            self._sessions.discard(self)
            self._record.touch()

    def data_received(self, data: bytes) -> None:
        self._record.received.extend(data)
        self._record.touch()
        super().data_received(data)

    def eof_received(self) -> bool | None:
        self._gone()
        return super().eof_received()

    def connection_lost(self, error: Exception | None) -> None:
        self._gone()
        super().connection_lost(error)


class ScriptedSmtpServer:
    """``async with ScriptedSmtpServer(Script(...)) as server:`` listens on 127.0.0.1:``port``
    once entered; ``server.record`` holds what it saw."""

    def __init__(self, script: Script | None = None) -> None:
        self.script = script or Script()
        self.record = ServerRecord()
        self.host = "127.0.0.1"
        self.port = 0
        self._server: asyncio.Server | None = None
        self._sessions: set[_ScriptedSMTP] = set()

    async def __aenter__(self) -> ScriptedSmtpServer:
        loop = asyncio.get_running_loop()
        handler = _ScriptedHandler(self.script, self.record)
        tls_context = self.script.tls_context or (
            server_tls_context() if self.script.starttls else None)

        def factory() -> _ScriptedSMTP:
            return _ScriptedSMTP(
                handler,
                self._sessions,
                hostname="scripted.test",
                ident="scripted test server",
                enable_SMTPUTF8=True,
                tls_context=tls_context,
                timeout=30,
                loop=loop,
            )

        self._server = await loop.create_server(factory, self.host, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._server is not None
        self._server.close()
        tasks = []
        for session in list(self._sessions):
            if session.transport is not None:
                cast(asyncio.Transport, session.transport).abort()
            if session._handler_coroutine is not None:
                tasks.append(session._handler_coroutine)
        if tasks:
            await asyncio.wait(tasks, timeout=2.0)
        await self._server.wait_closed()


# --- Postfix smtp-sink ------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def read_greeting(host: str, port: int, timeout: float = 1.0) -> SmtpReply:
    """Connect, read the greeting, QUIT (a readiness probe)."""
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_connection(host, port)
        try:
            line = await reader.readline()
            writer.write(b"QUIT\r\n")
            await writer.drain()
            await reader.readline()
        finally:
            writer.close()
    return parse_reply(int(line[:3]), line[4:].decode("ascii", "replace").strip())


class SmtpSinkProcess:
    """``async with SmtpSinkProcess("-r", "RCPT") as sink:`` runs Postfix's smtp-sink on
    127.0.0.1:``sink.port`` (options as in smtp-sink(1): -f/-r/-q/-Q inject faults) and stops it
    on exit."""

    def __init__(self, *options: str, backlog: int = 1000) -> None:
        self.options = options
        self.backlog = backlog
        self.host = "127.0.0.1"
        self.port = 0
        self._process: asyncio.subprocess.Process | None = None

    async def __aenter__(self) -> SmtpSinkProcess:
        user = ["-u", pwd.getpwuid(os.getuid()).pw_name] if os.getuid() == 0 else []
        for _ in range(3):  # the free port may be taken between probe and bind: retry
            self.port = _free_port()
            self._process = await asyncio.create_subprocess_exec(
                SMTP_SINK,
                *user,
                *self.options,
                f"{self.host}:{self.port}",
                str(self.backlog),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
            )
            if await self._wait_ready():
                return self
            await self._stop()
        raise RuntimeError("smtp-sink did not start")

    async def _wait_ready(self) -> bool:
        assert self._process is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _STARTUP_TIMEOUT
        while loop.time() < deadline:
            if self._process.returncode is not None:
                return False
            try:
                await read_greeting(self.host, self.port)
                return True
            except (OSError, TimeoutError):
                await asyncio.sleep(0.01)  # polling a child process: no event to wait on
        return False

    async def _stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.returncode is not None:
            return
        process.terminate()
        try:
            async with asyncio.timeout(5.0):
                await process.wait()
        except TimeoutError:
            process.kill()
            await process.wait()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await asyncio.shield(self._stop())
