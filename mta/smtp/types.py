"""The vocabulary of an outbound SMTP session: settings, results and errors (pure).

Per-phase timeouts (:class:`SmtpTimeouts`, RFC 5321 §4.5.3.2) and :class:`SessionSettings`; the
results of a transaction (:class:`SendResult`, per-recipient :class:`RecipientResult`); and the
errors aiosmtplib's exceptions are translated into: ``SmtpConnectFailure`` (no usable session:
refused, timeout, DNS, TLS; the caller tries the next MX) and ``SmtpSessionFailure`` (the
dialogue failed at a named phase, permanent for 5xx, temporary for 4xx, disconnects and
timeouts), built by :func:`session_failure` and :func:`transport_failure`. Shared by
:mod:`mta.smtp.connect` and :mod:`mta.smtp.session`, which re-exports all of it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

from aiosmtplib.errors import SMTPResponseException

from engine.errors import ConfigError
from mta.errors import MtaError, PermanentFailure, TemporaryFailure
from mta.smtp.reply import SmtpReply
from mta.tls.peer import PeerPolicy

Phase = Literal["connect", "ehlo", "starttls", "mail", "rcpt", "data", "data_final"]
TlsMode = Literal["opportunistic", "required", "none"]
ConnectReason = Literal[
    "refused", "timeout", "dns", "network", "tls_handshake", "tls_required_unavailable",
    "tls_auth", "login",
]

PHASE_COMMAND: dict[str, str] = {
    "connect": "the greeting", "ehlo": "EHLO", "starttls": "STARTTLS", "mail": "MAIL FROM",
    "rcpt": "RCPT TO", "data": "DATA", "data_final": "the end of data", "rset": "RSET",
}


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
    tls_version: str | None = None  # the protocol the session negotiated, e.g. "TLSv1.3"

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


class TlsAuthFailure(SmtpConnectFailure):
    """The peer failed the TLS policy (certificate, TLSA, no STARTTLS where it was due).

    ``result_type`` is the RFC 8460 result type; ``detail`` starts with the policy's label."""

    def __init__(self, host: str, port: int, result_type: str, detail: str) -> None:
        super().__init__(host, port, "tls_auth", detail)
        self.result_type = result_type


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
        super().__init__(f"{host}:{port} {PHASE_COMMAND[phase]}: {reply}")
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


def local_reply(code: int, enhanced: str, text: str) -> SmtpReply:
    return SmtpReply(code, enhanced, text)


def transport_failure(
    host: str, port: int, phase: Phase, exc: BaseException, timeout: float
) -> SmtpTemporaryFailure:
    """A timeout, disconnect or malformed reply, as a temporary failure with a made-up reply."""
    command = PHASE_COMMAND[phase]
    lost = False
    if isinstance(exc, TimeoutError):
        reply = local_reply(421, "4.4.2", f"timed out after {timeout:g}s waiting for {command}")
    elif isinstance(exc, SMTPResponseException):
        reply = local_reply(421, "4.5.0", f"malformed reply to {command}: {exc.message[:200]}")
    else:
        lost = True
        reply = local_reply(421, "4.4.2", f"lost connection during {command}")
    return SmtpTemporaryFailure(host, port, phase, reply, remote=False, connection_lost=lost)


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
class SmtpLogin:
    """A smarthost's user name and password (the password never in a repr or a log)."""

    username: str
    password: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class SessionSettings:
    ehlo_name: str
    tls: TlsMode = "opportunistic"
    tls_verify: bool = False
    timeouts: SmtpTimeouts = field(default_factory=SmtpTimeouts)
    peer: PeerPolicy | None = None  # what the peer must prove (mta.tls.policy); None: tls alone
    implicit_tls: bool = False  # TLS from the first byte (smtps://), no STARTTLS
    login: SmtpLogin | None = None  # AUTH after EHLO, only over TLS (smarthost routes)

    def __post_init__(self) -> None:
        name = self.ehlo_name
        if not name or len(name) > 255 or not name.isascii() or any(
            c.isspace() or not c.isprintable() for c in name
        ):
            raise ConfigError("ehlo_name: must be 1-255 printable ASCII characters, no spaces")
        if self.tls not in ("opportunistic", "required", "none"):
            raise ConfigError("tls: must be one of opportunistic, required, none")
