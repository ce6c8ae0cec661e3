"""The SMTP submission server (aiosmtpd): authenticated clients only, their own sender domains
only, one queued message per recipient, 250 only once every copy is committed.

- Authentication: AUTH PLAIN and LOGIN with a Herald API key having ``messages:write`` as the
  password (any user name, e.g. ``apikey``). AUTH is offered only over TLS (STARTTLS on the
  ``listen`` port, or the ``listen_tls`` port) except to ``allow_plain_auth_from`` addresses.
  Before AUTH, MAIL, RCPT and DATA get 530 (never a relay). ``max_auth_failures`` wrong keys
  in a session: 421 and the connection is closed. Clients in `trusted_clients` networks send
  without AUTH as the key named there (like Postfix's mynetworks).
- Senders: MAIL FROM, and the From and Sender headers, must be in the key's sender domains
  (:class:`mta.senders.SenderPolicy`, as for ``POST /v1/messages``): 550 5.7.1 otherwise.
- Extensions: SIZE (552 at MAIL for a larger SIZE, at the end of DATA for larger data),
  8BITMIME, SMTPUTF8 (non-ASCII addresses need it: 553 5.6.7), PIPELINING.
- Line endings: a bare CR or LF refuses the message (554), see :mod:`mta.smtpd.line_endings`.
- Rate: recipients per key per second (a token bucket); beyond, RCPT answers 452 4.7.1.
- Durability: every copy is enqueued (:func:`mta.queue.enqueue.enqueue_durably`, which applies
  the suppression list and wakes delivery) in one transaction shared by the sessions finishing
  together (:mod:`mta.smtpd.committer`); 250 follows the commit, 451 any failure.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from engine.database import Database
from engine.errors import DatabaseUnavailable
from engine.http.ratelimit import RateLimiter
from engine.keys import ApiKey
from mta.metrics import SUBMISSION_AUTH_FAILURES, SUBMISSIONS
from mta.queue.enqueue import OutboundMessage, QueueIdentity, enqueue_durably
from mta.senders import SenderPolicy
from mta.smtpd.committer import CommitterStopped, GroupCommitter
from mta.smtpd.line_endings import REPLY as BARE_LINE_ENDING
from mta.smtpd.line_endings import first_bare_line_ending
from mta.smtpd.sessions import BoundedSMTP, SessionBounds, peer_text
from mta.submission.copies import (
    Refused,
    Transaction,
    build_copies,
    envelope_address,
    received_header,
    sender_refusal,
)
from mta.submission.settings import SubmissionSettings

log = logging.getLogger("herald.submission")

SCOPE = "messages:write"
STORED = "250 2.0.0 Ok: queued as {id}"
STORED_MANY = "250 2.0.0 Ok: {count} messages queued, first {id}"
NOT_STORED = "451 4.3.0 Cannot queue the message now; please try again later"
TOO_MANY_RECIPIENTS = "452 4.5.3 Too many recipients"
RATE_LIMITED = "452 4.7.1 Sending rate of this key exceeded; try this recipient again later"
BAD_CREDENTIALS = "535 5.7.8 Authentication credentials invalid (the password is an API key)"
NO_SCOPE = f"535 5.7.8 This API key lacks the '{SCOPE}' scope"
AUTH_UNAVAILABLE = "454 4.7.0 Temporary authentication failure; please try again later"
TOO_MANY_FAILURES = "421 4.7.0 Too many failed authentications, closing"
NULL_SENDER = "550 5.7.1 Submission needs a sender address (not MAIL FROM:<>)"
_STOP_TIMEOUT = 5.0

# token, client address -> the key, or None for a wrong one; raises DatabaseUnavailable and
# anything meaning "try later".
KeyLookup = Callable[[str, str | None], Awaitable[ApiKey | None]]
# key id -> the key (trusted_clients), or None when unknown or revoked.
KeyById = Callable[[str], Awaitable[ApiKey | None]]


@dataclass(frozen=True, slots=True)
class Submitted:
    """One transaction's copies, committed together."""

    messages: tuple[OutboundMessage, ...]

    @property
    def size(self) -> int:
        return sum(len(message.body) for message in self.messages)


class _State(SessionBounds):
    def __init__(self, settings: SubmissionSettings) -> None:
        super().__init__(settings.max_sessions, settings.session_timeout)
        self.settings = settings
        self.accepted = 0
        self.rate = RateLimiter(settings.rate_limit_per_second, settings.rate_limit_burst)


def _key(session: Session) -> ApiKey:
    key = session.auth_data
    assert isinstance(key, ApiKey)  # aiosmtpd answers 530 before MAIL, RCPT, DATA otherwise
    return key


def _smtputf8(envelope: Envelope) -> bool:
    return "SMTPUTF8" in (option.upper() for option in envelope.mail_options)


def _defer(server: SMTP, session: Session, envelope: Envelope, mechanism: str,
           data: Any) -> AuthResult:
    """aiosmtpd's authenticator is synchronous; the key is checked after it, asynchronously
    (:meth:`SubmissionSMTP._verify`)."""
    return AuthResult(success=True, handled=False, auth_data=data)


class SubmissionHandler:
    """aiosmtpd hooks: sender at MAIL, recipients and rate at RCPT, copies and commit at DATA."""

    def __init__(self, committer: GroupCommitter[Submitted], senders: SenderPolicy,
                 state: _State, hostname: str) -> None:
        self._committer = committer
        self._senders = senders
        self._state = state
        self._hostname = hostname

    async def handle_EHLO(self, server: SMTP, session: Session, envelope: Envelope,
                          hostname: str, responses: list[str]) -> list[str]:
        session.host_name = hostname
        return [*responses[:-1], "250-PIPELINING", responses[-1]]

    async def handle_MAIL(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, mail_options: list[str]) -> str:
        key = _key(session)
        if address in ("", "<>"):
            return NULL_SENDER
        smtputf8 = "SMTPUTF8" in (option.upper() for option in mail_options)
        try:
            sender = envelope_address(address, smtputf8)
            refused = sender_refusal(self._senders, key.from_domains, "MAIL FROM", sender)
            if refused:
                raise refused
        except Refused as exc:
            self._refused(session, exc.reply)
            return exc.reply
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 Ok"

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, rcpt_options: list[str]) -> str:
        state = self._state
        if len(envelope.rcpt_tos) >= state.settings.max_recipients:
            return TOO_MANY_RECIPIENTS
        try:
            envelope_address(address, _smtputf8(envelope))
        except Refused as exc:
            return exc.reply
        if state.rate.acquire(_key(session).key_id, time.monotonic()) > 0:
            return RATE_LIMITED
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 Ok"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        data = envelope.original_content or b""
        offset = first_bare_line_ending(data)
        if offset is not None:
            self._refused(session, BARE_LINE_ENDING, offset=offset)
            return BARE_LINE_ENDING
        key = _key(session)
        smtputf8 = _smtputf8(envelope)
        first = uuid.uuid4()
        try:
            recipients = tuple(envelope_address(a, smtputf8) for a in envelope.rcpt_tos)
            copies = build_copies(
                Transaction(key.from_domains, recipients, data,
                            received_header(self._hostname, session.host_name, str(first))),
                self._senders, self._state.settings.max_message_size)
        except Refused as exc:
            self._refused(session, exc.reply)
            return exc.reply
        messages = tuple(_with_id(m, first if i == 0 else uuid.uuid4())
                         for i, m in enumerate(copies))
        try:
            await self._committer.store(Submitted(messages))
        except (DatabaseUnavailable, CommitterStopped) as exc:
            log.warning("submitted message not queued",
                        extra={"peer": peer_text(session), "error": str(exc)})
            SUBMISSIONS.labels("refused_451").inc()
            return NOT_STORED
        except Exception:
            log.exception("submitted message not queued", extra={"peer": peer_text(session)})
            SUBMISSIONS.labels("refused_451").inc()
            return NOT_STORED
        self._state.accepted += len(messages)
        SUBMISSIONS.labels("queued").inc(len(messages))
        log.debug("submitted message queued", extra={
            "id": str(first), "key": key.key_id, "recipients": len(messages),
            "bytes": len(data)})
        if len(messages) == 1:
            return STORED.format(id=first)
        return STORED_MANY.format(count=len(messages), id=first)

    def _refused(self, session: Session, reply: str, **extra: Any) -> None:
        SUBMISSIONS.labels(f"refused_{reply[:3]}").inc()
        key = session.auth_data
        log.info("submission refused", extra={
            "peer": peer_text(session), "key": key.key_id if isinstance(key, ApiKey) else None,
            "reply": reply[:200], **extra})


def _with_id(message: OutboundMessage, message_id: uuid.UUID) -> OutboundMessage:
    return OutboundMessage(message.header_from, message.recipient, message.body,
                           source=message.source, sender=message.sender, id=message_id)


class _Session(Session):
    """aiosmtpd's session without its deprecation warning for ``login_data``, which
    ``smtp_AUTH`` sets on every successful login."""

    @property
    def login_data(self) -> Any:
        return self._login_data

    @login_data.setter
    def login_data(self, value: Any) -> None:
        self._login_data = value


class SubmissionSMTP(BoundedSMTP):
    """A session: AUTH needs TLS unless the peer may authenticate in plain text, and the key is
    looked up asynchronously."""

    def __init__(self, handler: SubmissionHandler, state: _State, lookup: KeyLookup,
                 by_id: KeyById, implicit_tls: bool, **kwargs: Any) -> None:
        super().__init__(handler, state, authenticator=_defer, auth_required=True,
                         auth_require_tls=True, **kwargs)
        self._state = state
        self._lookup = lookup
        self._by_id = by_id
        self._implicit_tls = implicit_tls
        self._failures = 0
        self._trusted: ApiKey | None = None  # a trusted_clients network's key

    def _create_session(self) -> Session:
        return _Session(self.loop)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self._original_transport is None:  # the connection itself, not STARTTLS over it
            peer = transport.get_extra_info("peername")
            host = peer[0] if isinstance(peer, tuple) and peer else None
            self._auth_require_tls = not (
                self._implicit_tls or self._state.settings.plain_auth_allowed(host))
        super().connection_made(transport)
        if self._trusted is not None and self.session is not None:  # a new session after TLS
            self.session.authenticated = True
            self.session.auth_data = self._trusted  # type: ignore[assignment]

    async def _handle_client(self) -> None:
        assert self.session is not None
        peer = self.session.peer
        key_id = self._state.settings.trusted_key_id(
            peer[0] if isinstance(peer, tuple) and peer else None)
        if key_id is not None:
            try:
                key = await self._by_id(key_id)
            except Exception as exc:
                log.warning("submission: trusted client's key unavailable",
                            extra={"key": key_id, "error": str(exc)})
                key = None
            if key is not None and key.allows(SCOPE):
                self._trusted = key
                self.session.authenticated = True
                self.session.auth_data = key  # type: ignore[assignment]
        await super()._handle_client()

    async def auth_PLAIN(self, _: Any, args: list[str]) -> AuthResult:
        return await self._verify(await super().auth_PLAIN(_, args))

    async def auth_LOGIN(self, _: Any, args: list[str]) -> AuthResult:
        return await self._verify(await super().auth_LOGIN(_, args))

    async def _verify(self, result: AuthResult) -> AuthResult:
        if not result.success:
            return result  # a malformed exchange, already answered
        credentials = result.auth_data
        assert isinstance(credentials, LoginPassword)
        assert self.session is not None
        peer = self.session.peer
        host = peer[0] if isinstance(peer, tuple) and peer else None
        try:
            key = await self._lookup(credentials.password.decode("utf-8", "replace").strip(),
                                     host)
        except Exception as exc:  # database down, too many unknown keys from this address
            log.warning("submission authentication unavailable",
                        extra={"peer": peer_text(self.session), "error": str(exc)})
            return AuthResult(success=False, handled=False, message=AUTH_UNAVAILABLE)
        if key is not None and key.allows(SCOPE):
            return AuthResult(success=True, handled=False, auth_data=key)
        self._failures += 1
        SUBMISSION_AUTH_FAILURES.inc()
        log.info("submission authentication failed", extra={
            "peer": peer_text(self.session), "key": key.key_id if key else None})
        if self._failures >= self._state.settings.max_auth_failures:
            await self.push(TOO_MANY_FAILURES)
            if self.transport is not None:
                self.transport.close()
            return AuthResult(success=False, handled=True)
        return AuthResult(success=False, handled=False,
                          message=NO_SCOPE if key is not None else BAD_CREDENTIALS)


class SubmissionServer:
    """Listens on ``settings.listen`` (STARTTLS when a certificate is configured) and
    ``settings.listen_tls`` (implicit TLS); port 0 picks an ephemeral port (``ports`` says
    which)."""

    def __init__(self, database: Database, settings: SubmissionSettings,
                 identity: QueueIdentity, senders: SenderPolicy, lookup: KeyLookup,
                 by_id: KeyById, hostname: str,
                 tls_context: ssl.SSLContext | None = None) -> None:
        self._settings = settings
        self._by_id = by_id
        self._identity = identity
        self._senders = senders
        self._lookup = lookup
        self._hostname = hostname
        self._tls_context = tls_context
        self._servers: list[asyncio.Server] = []
        self._state = _State(settings)
        self._committer: GroupCommitter[Submitted] = GroupCommitter(
            database, self._write, lambda submitted: submitted.size, "submission-committer",
            transaction=False)
        self.ports: dict[str, int] = {}

    @property
    def accepted(self) -> int:
        """Messages (copies) answered 250 since start."""
        return self._state.accepted

    async def _write(self, connection: Any, batch: list[Submitted]) -> None:
        await enqueue_durably(connection, self._identity,
                              [message for submitted in batch for message in submitted.messages])

    async def start(self) -> None:
        handler = SubmissionHandler(self._committer, self._senders, self._state,
                                    self._hostname)
        loop = asyncio.get_running_loop()
        await self._committer.start()

        def factory(implicit_tls: bool) -> Callable[[], SubmissionSMTP]:
            return lambda: SubmissionSMTP(
                handler, self._state, self._lookup, self._by_id, implicit_tls,
                hostname=self._hostname,
                ident="Herald submission", data_size_limit=self._settings.max_message_size,
                enable_SMTPUTF8=True, timeout=self._settings.idle_timeout, loop=loop,
                tls_context=None if implicit_tls else self._tls_context)

        listeners = [("listen", self._settings.listen, False),
                     ("listen_tls", self._settings.listen_tls, True)]
        try:
            for name, address, implicit in listeners:
                if address is None:
                    continue
                server = await loop.create_server(
                    factory(implicit), address.host, address.port, reuse_address=True,
                    reuse_port=self._settings.reuse_port or None,
                    ssl=self._tls_context if implicit else None)
                self._servers.append(server)
                self.ports[name] = server.sockets[0].getsockname()[1]
        except OSError:
            await self.stop()
            raise

    async def stop(self) -> None:
        """Stop listening, close open sessions, and commit what they handed over."""
        servers, self._servers = self._servers, []
        for server in servers:
            server.close()
        await self._state.close_all(_STOP_TIMEOUT)
        await self._committer.stop()
        for server in servers:
            await server.wait_closed()
