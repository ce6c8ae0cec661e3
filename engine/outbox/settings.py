"""The ``[webhooks]`` section: every outbound HTTP call (webhook steps, outcome webhooks)."""

from __future__ import annotations

from dataclasses import dataclass

from engine.outbox.targets import parse_allow
from engine.settings_loader import duration
from engine.values import HostPort


@dataclass(frozen=True, slots=True)
class WebhooksSettings:
    # Private, loopback, link-local, CGNAT, multicast and unspecified addresses are refused
    # unless their name (or IP literal) is listed here: "host" or "host:port".
    allow: tuple[str, ...] = ()
    # A DNS server (HOST:PORT) for webhook host names; unset: the system resolver.
    resolver: HostPort | None = None
    # Attempts before a row is dead-lettered (a webhook step's `retries` sets its own).
    max_attempts: int = 8
    # Full-jitter exponential backoff: attempt n waits uniform(0, min(cap, base * 2^(n-1))).
    backoff_base: float = duration("10s")
    backoff_cap: float = duration("1h")
    # Requests in flight per process, and per endpoint (scheme://host:port) per process.
    concurrency: int = 32
    endpoint_concurrency: int = 4
    # A claimed row is leased this long (longer than any request); a crashed worker's rows are
    # claimed again after it.
    lease: float = duration("2m")
    # Each outcome-webhook request's bound (webhook steps carry their own `timeout`).
    timeout: float = duration("10s")
    # Delivered rows are deleted after this long; dead ones stay until retried or removed.
    keep_delivered: float = duration("7d")
    # How often the worker looks for due rows without being woken.
    poll_interval: float = duration("1s")
    # Signing secret of webhook-step requests ("whsec_<base64>"); unset: one is generated and
    # kept in the database (`herald webhooks step-secret` prints it).
    step_secret: str | None = None

    def __post_init__(self) -> None:
        parse_allow(self.allow)  # a bad entry fails at start, naming the key
        if not 1 <= self.max_attempts <= 100:
            raise ValueError("max_attempts must be between 1 and 100")
        if not 1 <= self.concurrency <= 1000:
            raise ValueError("concurrency must be between 1 and 1000")
        if not 1 <= self.endpoint_concurrency <= self.concurrency:
            raise ValueError("endpoint_concurrency must be between 1 and concurrency")
        if not 0 < self.backoff_base <= self.backoff_cap:
            raise ValueError("need 0 < backoff_base <= backoff_cap")
        if not 0 < self.timeout <= 60:
            raise ValueError("timeout must be more than 0s and at most 60s")
        if self.lease < 2 * self.timeout:
            raise ValueError("lease must be at least twice timeout (a request never outlives "
                             "its lease: webhook-step timeouts are cut to half the lease)")
        if self.poll_interval <= 0:
            raise ValueError("poll_interval must be more than 0s")
        if self.step_secret is not None:
            from engine.outbox.signing import parse_secret

            parse_secret(self.step_secret)
