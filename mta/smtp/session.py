"""One outbound SMTP session on top of aiosmtplib: transactions, RSET and QUIT.

:func:`open_session` opens a greeted (and, where possible, STARTTLS-protected) connection via
:mod:`mta.smtp.connect` and wraps it in an :class:`SmtpSession`, which runs one transaction at a
time: MAIL, RCPT per recipient, DATA and the body, with per-recipient ``RecipientResult``s or an
``SmtpSessionFailure`` at a named phase (types in :mod:`mta.smtp.types`, re-exported here, so
callers import everything from this module). With :mod:`mta.smtp.connect` this is the aiosmtplib
boundary: its exceptions never leave these modules. Timeouts are per phase (RFC 5321
§4.5.3.2), enforced with ``asyncio.timeout`` around aiosmtplib calls made with ``timeout=None``:
on Python 3.11 aiosmtplib's own timeouts go through ``asyncio.wait_for``, which can swallow a
cancellation that races a reply. The body is handed to the transport in one write, so the RFC's
per-block "data block" timeout is folded into ``data_final`` (the wait for the reply to the final
"."). A session is reusable after a reply-level refusal (the dialogue is in sync, and an RSET is
sent where a transaction was left open); any transport error, timeout, malformed reply or 421
breaks it for good.

Where the server advertises PIPELINING (RFC 2920), MAIL, every RCPT and DATA go out in one write
and their replies are read afterwards, one by one, each judged as if it had come alone
(:mod:`mta.smtp.pipelining` reads them); without it each command waits for its reply.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import aiosmtplib
from aiosmtplib.errors import SMTPException

from mta.smtp.connect import client_tls_context as client_tls_context
from mta.smtp.connect import connect_client
from mta.smtp.pipelining import ReplyReader, pipelined
from mta.smtp.reply import PreparedMessage, ServerExtensions, SmtpReply, parse_reply
from mta.smtp.types import ConnectReason as ConnectReason
from mta.smtp.types import Phase as Phase
from mta.smtp.types import RecipientResult as RecipientResult
from mta.smtp.types import SendResult as SendResult
from mta.smtp.types import SessionSettings as SessionSettings
from mta.smtp.types import SmtpConnectFailure as SmtpConnectFailure
from mta.smtp.types import SmtpPermanentFailure as SmtpPermanentFailure
from mta.smtp.types import SmtpSessionFailure as SmtpSessionFailure
from mta.smtp.types import SmtpTemporaryFailure as SmtpTemporaryFailure
from mta.smtp.types import SmtpTimeouts as SmtpTimeouts
from mta.smtp.types import TlsMode as TlsMode
from mta.smtp.types import local_reply, transport_failure
from mta.smtp.types import session_failure as session_failure

_ACCEPTED_RCPT = (250, 251)


async def open_session(
    host: str, port: int, settings: SessionSettings, *, starttls: bool = True
) -> SmtpSession:
    """Connect, read the greeting, EHLO (HELO fallback), STARTTLS when offered and allowed.

    ``starttls=False`` skips STARTTLS even when offered (the opportunistic-TLS fallback after a
    failed handshake). Raises ``SmtpConnectFailure`` or ``SmtpSessionFailure``.
    """
    greeted = await connect_client(host, port, settings, starttls=starttls)
    return SmtpSession(greeted.client, host, port, settings.timeouts, greeted.extensions,
                       greeted.tls)


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
        self.tls_version = _tls_version(client) if tls else None  # e.g. "TLSv1.3"
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
        if self.extensions.pipelining:
            return await self._deliver_pipelined(mail_from, recipients, message, params)
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
            return SendResult(self.host, self.port, tuple(results), None, self.tls,
                          self.tls_version)
        reply = await self._exchange("data", self._timeouts.data_init, b"DATA")
        if reply.code != 354:
            raise await self._refused("data", reply)
        final = await self._send_body(message.wire)
        self._busy = False
        if final.code != 250:
            raise session_failure(self.host, self.port, "data_final", final)
        return SendResult(self.host, self.port, tuple(results), final, self.tls,
                          self.tls_version)

    async def _deliver_pipelined(
        self,
        mail_from: str,
        recipients: Sequence[str],
        message: PreparedMessage,
        params: list[bytes],
    ) -> SendResult:
        """MAIL, RCPT... and DATA in one write (RFC 2920), then their replies in order; the
        body follows only a 354 with a recipient accepted. Outcomes as in ``deliver``."""
        group = [b" ".join((b"MAIL", b"FROM:<" + mail_from.encode() + b">", *params))]
        group += [b"RCPT TO:<" + recipient.encode() + b">" for recipient in recipients]
        group.append(b"DATA")
        results: list[RecipientResult] = []
        final: SmtpReply | None = None
        phase: Phase = "mail"  # where a failure to write belongs
        try:
            async with pipelined(self._client.protocol) as reader:
                reader.write(b"".join(command + b"\r\n" for command in group))
                mail = await self._next_reply(reader, "mail", self._timeouts.mail)
                for recipient in recipients:
                    reply = await self._next_reply(reader, "rcpt", self._timeouts.rcpt)
                    results.append(RecipientResult(recipient, reply, reply.code in _ACCEPTED_RCPT))
                data = await self._next_reply(reader, "data", self._timeouts.data_init)
                accepted = mail.code == 250 and any(result.accepted for result in results)
                if data.code == 354:
                    # Without an accepted recipient a 354 is still answered, with an empty
                    # message, before the transaction is reset (RFC 2920 §3.1).
                    phase = "data_final"
                    reader.write(message.wire if accepted else b".\r\n")
                    final = await self._next_reply(reader, "data_final",
                                                   self._timeouts.data_final)
        except (SMTPException, OSError) as exc:  # writing failed: the connection is gone
            self._break()
            raise transport_failure(self.host, self.port, phase, exc, 0.0) from exc
        if mail.code != 250:
            raise await self._refused("mail", mail)
        if not accepted:
            await self._reset_after_refusal()
            return SendResult(self.host, self.port, tuple(results), None, self.tls,
                          self.tls_version)
        if data.code != 354:
            raise await self._refused("data", data)
        assert final is not None
        self._busy = False
        if final.code != 250:
            raise session_failure(self.host, self.port, "data_final", final)
        return SendResult(self.host, self.port, tuple(results), final, self.tls,
                          self.tls_version)

    async def _next_reply(self, reader: ReplyReader, phase: Phase, timeout: float) -> SmtpReply:
        """The next reply of a pipelined group, judged as ``_exchange`` judges one."""
        try:
            async with asyncio.timeout(timeout):
                reply = await reader.next_reply()
        except (SMTPException, OSError) as exc:
            self._break()
            raise transport_failure(self.host, self.port, phase, exc, timeout) from exc
        if reply.code == 421:  # the server is closing the channel
            self._break()
            raise session_failure(self.host, self.port, phase, reply)
        return reply

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
                    553, "5.6.7", "non-ASCII address or header, server lacks SMTPUTF8"
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
        reply = local_reply(code, enhanced, text)
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
            raise transport_failure(self.host, self.port, phase, exc, timeout) from exc
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
            raise transport_failure(self.host, self.port, "data_final", exc, timeout) from exc
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


def _tls_version(client: aiosmtplib.SMTP) -> str | None:
    transport = client.transport
    ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
    version = ssl_object.version() if ssl_object is not None else None
    return str(version) if version else None
