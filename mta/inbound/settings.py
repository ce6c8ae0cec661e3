"""The ``[inbound]`` section: where the inbound SMTP server listens, what it accepts, its limits
and how processing retries."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from engine.addresses import AddressError
from engine.settings_loader import duration, size
from engine.values import HostPort
from mta.suppression.addresses import normalise


@dataclass(frozen=True, slots=True)
class InboundSettings:
    # Where DSNs, feedback reports and mailto unsubscribes arrive: port 25 of the host the
    # bounce domain's MX points at, e.g. "0.0.0.0:25". The default stays on loopback and off
    # 2525 (where `herald sink` listens in the README's example).
    listen: HostPort = field(default_factory=lambda: HostPort("127.0.0.1", 2526))
    # The name in the banner and the EHLO reply (default: [mta] ehlo_name).
    hostname: str | None = None
    # STARTTLS, offered when both are set (PEM files; relative to the config file's folder).
    tls_cert: Path | None = None
    tls_key: Path | None = None
    # Advertised with SIZE and enforced (552), with or without a SIZE parameter.
    max_message_size: int = size("5MiB")
    max_recipients: int = 20  # per message (452 beyond)
    max_sessions: int = 200  # concurrent SMTP sessions (421 beyond)
    idle_timeout: float = duration("60s")  # between commands, and for a whole DATA phase
    session_timeout: float = duration("10m")  # a session is closed after this long
    # Addresses whose mail is feedback-loop / abuse reports (ARF), e.g. "fbl@bounce.example".
    feedback_addresses: tuple[str, ...] = ()
    # Processing of stored messages: a batch per claim, retried with doubling back-off from
    # retry_initial up to retry_max, given up ('failed') after max_attempts.
    process_batch: int = 100
    lease: float = duration("2m")
    retry_initial: float = duration("30s")
    retry_max: float = duration("1h")
    max_attempts: int = 12
    poll_interval: float = duration("5s")  # look for retries and other processes' rows

    def __post_init__(self) -> None:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key must be set together")
        if self.max_message_size < 1024:
            raise ValueError("max_message_size must be at least 1KiB")
        if not 1 <= self.max_recipients <= 1000:
            raise ValueError("max_recipients must be between 1 and 1000")
        if self.max_sessions < 1:
            raise ValueError("max_sessions must be at least 1")
        if self.idle_timeout <= 0 or self.session_timeout < self.idle_timeout:
            raise ValueError("need 0 < idle_timeout <= session_timeout")
        for address in self.feedback_addresses:
            try:
                normalise(address)
            except AddressError as exc:
                raise ValueError(f"feedback_addresses: {address!r}: {exc}") from None
        if not 1 <= self.process_batch <= 10_000:
            raise ValueError("process_batch must be between 1 and 10000")
        if self.retry_initial <= 0 or self.retry_max < self.retry_initial:
            raise ValueError("need 0 < retry_initial <= retry_max")
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.lease < 5 or self.poll_interval <= 0:
            raise ValueError("need lease >= 5s and poll_interval > 0")
        if self.hostname is not None and not self.hostname.strip():
            raise ValueError("hostname must not be empty")

    @property
    def feedback(self) -> frozenset[str]:
        """The feedback addresses, normalised."""
        return frozenset(normalise(address) for address in self.feedback_addresses)


def retry_delay(settings: InboundSettings, attempt: int) -> float:
    """Seconds before processing attempt ``attempt + 1`` after ``attempt`` failures."""
    return float(min(settings.retry_max, settings.retry_initial * (2 ** max(0, attempt - 1))))
