"""The engine's settings sections: ``[engine]``, ``[http]``, ``[intake]``, ``[log]`` and
``[metrics]``."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from engine.database import DatabaseTimeouts
from engine.link_keys import LinkKeys
from engine.paths import default_data_dir
from engine.settings_loader import duration, size
from engine.values import HostPort

LOG_LEVELS = ("debug", "info", "warning", "error")


@dataclass(frozen=True, slots=True)
class EngineSettings:
    # Default: $STATE_DIRECTORY, /var/lib/herald as a service, else ./herald-data (engine.paths).
    data_dir: Path = field(default_factory=default_data_dir)
    database_url: str | None = None
    log_level: str = "info"
    pool_min_size: int = 2
    pool_max_size: int = 20
    shutdown_timeout: float = duration("8s")
    # Bounds on every wait for Postgres; past one the caller gets 503 + Retry-After (HTTP) or
    # retries (background work). A statement past its bound is cancelled on the server.
    database_connect_timeout: float = duration("10s")
    database_acquire_timeout: float = duration("5s")    # waiting for a pooled connection
    database_statement_timeout: float = duration("10s")  # any one statement (incl. COMMIT)
    database_request_timeout: float = duration("10s")   # an HTTP request's wait for its commit

    def __post_init__(self) -> None:
        for name in ("database_connect_timeout", "database_acquire_timeout",
                     "database_statement_timeout", "database_request_timeout"):
            if not 0 < getattr(self, name) <= 3600:
                raise ValueError(f"{name} must be more than 0s and at most 1h")
        if self.log_level not in LOG_LEVELS:
            raise ValueError(f"log_level must be one of {', '.join(LOG_LEVELS)}")
        if self.database_url is not None and not self.database_url.startswith(
            ("postgres://", "postgresql://")
        ):
            raise ValueError("database_url must start with postgresql://")
        if not 1 <= self.pool_min_size <= self.pool_max_size:
            raise ValueError("need 1 <= pool_min_size <= pool_max_size")

    @property
    def database_timeouts(self) -> DatabaseTimeouts:
        return DatabaseTimeouts(self.database_connect_timeout, self.database_acquire_timeout,
                                self.database_statement_timeout, self.database_request_timeout)


@dataclass(frozen=True, slots=True)
class HttpSettings:
    listen: HostPort = field(default_factory=lambda: HostPort("127.0.0.1", 8025))
    max_body: int = size("1MiB")
    max_batch_events: int = 1000
    # Per-key token bucket: sustained requests per second and burst size. 0 disables.
    rate_limit_per_second: float = 2000.0
    rate_limit_burst: int = 4000
    # Publishable keys (the pixel) also get a bucket per client address (the TCP peer; behind
    # a reverse proxy that is the proxy). 0 disables.
    pixel_client_rate_per_second: float = 5.0
    pixel_client_rate_burst: int = 50
    # The one base URL of every link Herald puts in mail (unsubscribe, tracking), as
    # recipients reach this server, e.g. "https://mail.shop.example". Unset: automation sends
    # are skipped (a message must carry a working unsubscribe link).
    public_url: str | None = None
    # Keys that sign those links, "KID:SECRET" (KID: 1-8 of a-z 0-9; SECRET: 16+ characters).
    # The first signs, all verify, so a key can be rotated. Empty: one key is generated and
    # kept in the database.
    link_keys: tuple[str, ...] = ()
    page_size: int = 100
    # Let several processes listen on the same address (SO_REUSEPORT): run one `herald run
    # --role http` per core and the kernel spreads connections across them.
    reuse_port: bool = False
    # Slow clients (slowloris): a request's headers must arrive within header_timeout of its
    # first byte and within max_header_size; its body within body_timeout of the headers
    # (else 408/431 and the connection is closed). An idle keep-alive connection is closed
    # after keep_alive_timeout. One client address holds at most max_connections_per_client
    # connections (0: no cap; behind a reverse proxy every client has the proxy's address).
    header_timeout: float = duration("10s")
    body_timeout: float = duration("30s")
    keep_alive_timeout: float = duration("30s")
    max_header_size: int = size("64KiB")
    max_connections_per_client: int = 256
    # One JSON line per request on the herald.http.access logger: method, route template (never
    # the raw path or query, which can carry tokens), status, duration, client address.
    access_log: bool = False
    # Answer POST /v1/events from the HTTP protocol, with no ASGI task per request, when its
    # key is cached (engine.http.direct_routes): the same answers for ~11 µs less CPU each.
    # false: every request goes through the app.
    direct_intake: bool = True

    def __post_init__(self) -> None:
        for name in ("header_timeout", "body_timeout", "keep_alive_timeout"):
            if not 0 < getattr(self, name) <= 3600:
                raise ValueError(f"{name} must be more than 0s and at most 1h")
        if not 1024 <= self.max_header_size <= 1024 * 1024:
            raise ValueError("max_header_size must be between 1KiB and 1MiB")
        if self.max_connections_per_client < 0:
            raise ValueError("max_connections_per_client cannot be negative (0: no cap)")
        if self.max_body < 1024:
            raise ValueError("max_body must be at least 1KiB")
        if not 1 <= self.max_batch_events <= 100_000:
            raise ValueError("max_batch_events must be between 1 and 100000")
        if self.rate_limit_per_second < 0 or self.rate_limit_burst < 0:
            raise ValueError("rate limits cannot be negative")
        if self.pixel_client_rate_per_second < 0 or self.pixel_client_rate_burst < 0:
            raise ValueError("pixel_client_rate_per_second and pixel_client_rate_burst cannot "
                             "be negative")
        if self.link_keys:
            LinkKeys.parse(self.link_keys)
        if self.public_url is not None:
            parts = urlsplit(self.public_url)
            if parts.scheme not in ("http", "https") or not parts.hostname or parts.query \
                    or parts.fragment:
                raise ValueError("public_url must be an http(s) URL such as "
                                 "https://mail.example.com, with no query or fragment")


@dataclass(frozen=True, slots=True)
class IntakeSettings:
    # Group commit: events from concurrent requests share one transaction.
    commit_max_events: int = 5000
    commit_max_wait: float = duration("0s")
    # Bound on events waiting for the writer; past it requests get 503 instead of piling up.
    queue_max_events: int = 50_000
    # At most one wake-up (NOTIFY) of the log's followers per interval, sent after the commits
    # it covers (engine.intake.log_wakeups); 0: one after every commit.
    notify_interval: float = duration("10ms")

    def __post_init__(self) -> None:
        if self.commit_max_events < 1 or self.queue_max_events < self.commit_max_events:
            raise ValueError("need 1 <= commit_max_events <= queue_max_events")


@dataclass(frozen=True, slots=True)
class LogSettings:
    """``[log]``: where the delivery log goes (one JSON line per delivery attempt)."""

    delivery: bool = True
    # A file (reopened when logrotate moves it); unset: standard output, apart from the other
    # logs on standard error.
    delivery_file: Path | None = None


ROLE_LISTEN_KEYS = ("http_listen", "mta_listen", "automation_listen", "inbound_listen",
                    "submission_listen", "outbox_listen")


@dataclass(frozen=True, slots=True)
class MetricsSettings:
    """``[metrics]``: where a process serves Prometheus' ``/metrics`` (off when unset).

    One address per process. ``listen`` applies to any process; ``<role>_listen`` to a process
    running that one role (``herald run --role mta``, the herald@mta unit), so one config serves
    every unit. A process running several roles uses ``listen``, else its first role's key.
    The http role also answers ``/metrics`` on ``[http] listen``."""

    listen: HostPort | None = None
    http_listen: HostPort | None = None
    mta_listen: HostPort | None = None
    automation_listen: HostPort | None = None
    inbound_listen: HostPort | None = None
    submission_listen: HostPort | None = None
    outbox_listen: HostPort | None = None

    def for_roles(self, roles: list[str]) -> HostPort | None:
        by_role: dict[str, HostPort | None] = {
            key.removesuffix("_listen"): getattr(self, key) for key in ROLE_LISTEN_KEYS}
        if len(roles) == 1 and by_role.get(roles[0]) is not None:
            return by_role[roles[0]]
        if self.listen is not None:
            return self.listen
        return next((by_role[role] for role in roles if by_role.get(role) is not None), None)
