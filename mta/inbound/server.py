"""The inbound SMTP server (aiosmtpd): takes DSNs, feedback reports and mailto unsubscribes for
Herald's own addresses only, and answers 250 only once the message is committed to Postgres.

- RCPT: :class:`mta.inbound.recipients.RecipientPolicy` decides; everything else gets a 550
  (never a relay), more than ``max_recipients`` a 452.
- Size: advertised with SIZE; a larger SIZE parameter gets 552 at MAIL, larger data 552 at the
  end of DATA (aiosmtpd counts it while reading and keeps nothing past the limit).
- Line endings: a message with a bare CR or LF is refused (554), see
  :mod:`mta.smtpd.line_endings`.
- Durability: the row is committed before the reply (sessions finishing together share one
  commit, :mod:`mta.smtpd.committer`); a client that hangs up cannot leave it half done.
  Database down or any failure: 451, the sender retries. Processing starts after the commit,
  from the stored copy.
- Bounds: concurrent sessions (421 beyond), an idle timeout and a whole-session timeout.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

from aiosmtpd.smtp import SMTP, Envelope, Session

from engine.database import Database
from engine.errors import DatabaseUnavailable
from mta.inbound import store
from mta.inbound.recipients import Recipient, RecipientPolicy, Refused
from mta.inbound.settings import InboundSettings
from mta.smtpd.committer import CommitterStopped, GroupCommitter
from mta.smtpd.line_endings import REPLY as BARE_LINE_ENDING
from mta.smtpd.line_endings import first_bare_line_ending
from mta.smtpd.sessions import BoundedSMTP, SessionBounds
from mta.smtpd.sessions import peer_text as _peer

log = logging.getLogger("herald.inbound")

STORED = "250 2.0.0 Ok: queued as {id}"
NOT_STORED = "451 4.3.0 Cannot store the message now; please try again later"
TOO_MANY_RECIPIENTS = "452 4.5.3 Too many recipients"
_STOP_TIMEOUT = 5.0


class _State(SessionBounds):
    """What every session of one server shares."""

    def __init__(self, settings: InboundSettings) -> None:
        super().__init__(settings.max_sessions, settings.session_timeout)
        self.settings = settings
        self.accepted = 0


class InboundHandler:
    """aiosmtpd hooks: recipient policy at RCPT, checks and the durable insert at DATA."""

    def __init__(self, committer: GroupCommitter, policy: RecipientPolicy, state: _State,
                 on_stored: Callable[[], None]) -> None:
        self._committer = committer
        self._policy = policy
        self._state = state
        self._on_stored = on_stored

    async def handle_EHLO(self, server: SMTP, session: Session, envelope: Envelope,
                          hostname: str, responses: list[str]) -> list[str]:
        session.host_name = hostname
        return [line for line in responses if not line[4:].startswith("AUTH")]

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, rcpt_options: list[str]) -> str:
        if len(envelope.rcpt_tos) >= self._state.settings.max_recipients:
            return TOO_MANY_RECIPIENTS
        try:
            self._policy.classify(address)
        except Refused as exc:
            log.info("inbound recipient refused", extra={
                "peer": _peer(session), "recipient": address[:320], "reply": exc.reply})
            return exc.reply
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 Ok"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        data = envelope.original_content or b""
        offset = first_bare_line_ending(data)
        if offset is not None:
            log.warning("inbound message refused: bare CR or LF", extra={
                "peer": _peer(session), "offset": offset, "bytes": len(data)})
            return BARE_LINE_ENDING
        mail_from = envelope.mail_from or ""
        received = store.Received(
            uuid.uuid4(), datetime.now(UTC), _peer(session), session.host_name,
            "" if mail_from == "<>" else mail_from, tuple(envelope.rcpt_tos),
            tuple(self._recipients(envelope.rcpt_tos)), data)
        try:
            await self._committer.store(received)
        except (DatabaseUnavailable, CommitterStopped) as exc:
            log.warning("inbound message not stored",
                        extra={"peer": _peer(session), "error": str(exc)})
            return NOT_STORED
        except Exception:
            log.exception("inbound message not stored", extra={"peer": _peer(session)})
            return NOT_STORED
        self._state.accepted += 1
        self._on_stored()
        log.debug("inbound message stored", extra={
            "id": str(received.id), "peer": received.peer, "bytes": len(data),
            "recipients": [r.kind for r in received.recipients]})
        return STORED.format(id=received.id)

    def _recipients(self, addresses: list[str]) -> list[Recipient]:
        # Every address passed the same (pure, deterministic) check at RCPT.
        return [self._policy.classify(address) for address in addresses]


class InboundServer:
    """Listens on ``settings.listen`` (port 0: an ephemeral port, then ``port`` says which)."""

    def __init__(self, database: Database, settings: InboundSettings, policy: RecipientPolicy,
                 hostname: str, tls_context: ssl.SSLContext | None = None,
                 on_stored: Callable[[], None] = lambda: None) -> None:
        self._database = database
        self._settings = settings
        self._policy = policy
        self._hostname = hostname
        self._tls_context = tls_context
        self._on_stored = on_stored
        self._server: asyncio.Server | None = None
        self._state = _State(settings)
        self._committer: GroupCommitter[store.Received] = GroupCommitter(
            database, store.insert_many, lambda message: len(message.raw), "inbound-committer")
        self.port = settings.listen.port

    @property
    def accepted(self) -> int:
        """Messages answered 250 since start."""
        return self._state.accepted

    async def start(self) -> None:
        state = self._state
        handler = InboundHandler(self._committer, self._policy, state, self._on_stored)
        loop = asyncio.get_running_loop()
        await self._committer.start()

        def factory() -> BoundedSMTP:
            return BoundedSMTP(
                handler, state, hostname=self._hostname, ident="Herald inbound",
                data_size_limit=self._settings.max_message_size, enable_SMTPUTF8=True,
                tls_context=self._tls_context, timeout=self._settings.idle_timeout,
                auth_exclude_mechanism=["LOGIN", "PLAIN"], loop=loop)

        listen = self._settings.listen
        try:
            self._server = await loop.create_server(factory, listen.host, listen.port,
                                                    reuse_address=True)
        except OSError:
            await self._committer.stop()
            raise
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop listening, close open sessions, and commit what they handed over."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        await self._state.close_all(_STOP_TIMEOUT)
        await self._committer.stop()
        await server.wait_closed()
