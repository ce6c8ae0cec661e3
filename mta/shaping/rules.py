"""Traffic shaping: per-site limits from rules, rate buckets and adaptive backoff (pure).

A *site* is the set of MX hosts a domain resolves to, so domains hosted by one provider share
one set of limits. Rules match a recipient domain or any MX host of the site (shell-style
globs); the first matching rule wins, and unmatched sites get the ``[mta]`` defaults.
On throttling replies the site backs off (doubling, capped) and lowers its concurrency
(multiplicative decrease); successes raise it again (additive increase), as Postfix does with
its destination concurrency feedback.
"""

from __future__ import annotations

import fnmatch
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.errors import ConfigError
from engine.settings_loader import build_dataclass

MAX_BACKOFF = 1800.0


@dataclass(frozen=True, slots=True)
class ShapingRule:
    name: str
    domains: tuple[str, ...] = ()
    mx: tuple[str, ...] = ()
    max_connections: int | None = None
    max_messages_per_connection: int | None = None
    max_per_second: float | None = None
    max_per_hour: int | None = None

    def __post_init__(self) -> None:
        if not self.domains and not self.mx:
            raise ValueError(f"rule {self.name!r} needs 'domains' or 'mx' patterns")
        for key in ("max_connections", "max_messages_per_connection", "max_per_second",
                    "max_per_hour"):
            value = getattr(self, key)
            if value is not None and value <= 0:
                raise ValueError(f"rule {self.name!r}: {key} must be positive")

    def matches(self, domain: str, mx_hosts: tuple[str, ...]) -> bool:
        if any(fnmatch.fnmatchcase(domain, pattern) for pattern in self.domains):
            return True
        return any(fnmatch.fnmatchcase(host, pattern)
                   for host in mx_hosts for pattern in self.mx)


@dataclass(frozen=True, slots=True)
class SiteLimits:
    rule: str
    max_connections: int
    max_messages_per_connection: int
    max_per_second: float | None
    max_per_hour: int | None


def load_rules(path: Path) -> tuple[ShapingRule, ...]:
    try:
        with path.open("rb") as handle:
            data: dict[str, Any] = tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"mta.shaping_file: {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"mta.shaping_file: {path} is not valid TOML: {exc}") from None
    rules = data.get("rule", [])
    if not isinstance(rules, list):
        raise ConfigError(f"{path}: 'rule' must be an array of tables ([[rule]])")
    return tuple(build_dataclass(ShapingRule, rule, f"{path}: rule[{i}]")
                 for i, rule in enumerate(rules))


def limits_for(rules: tuple[ShapingRule, ...], domain: str, mx_hosts: tuple[str, ...],
               default_connections: int, default_messages: int) -> SiteLimits:
    for rule in rules:
        if rule.matches(domain, mx_hosts):
            return SiteLimits(rule.name, rule.max_connections or default_connections,
                              rule.max_messages_per_connection or default_messages,
                              rule.max_per_second, rule.max_per_hour)
    return SiteLimits("default", default_connections, default_messages, None, None)


class TokenBucket:
    def __init__(self, rate: float, capacity: float, now: float) -> None:
        self.rate = rate
        self.capacity = capacity
        self.tokens = capacity
        self.stamp = now

    def available_in(self, now: float) -> float:
        """Seconds until a token is available (0: now); takes nothing."""
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        return 0.0 if self.tokens >= 1.0 else (1.0 - self.tokens) / self.rate

    def wait_time(self, now: float) -> float:
        """0 if a token is available now (and takes it), else seconds until one is."""
        wait = self.available_in(now)
        if wait == 0.0:
            self.tokens -= 1.0
        return wait


class SiteGovernor:
    """Rate, concurrency and backoff state of one site (pure: the clock is passed in)."""

    def __init__(self, limits: SiteLimits, base_backoff: float, now: float) -> None:
        self.limits = limits
        self.base_backoff = base_backoff
        self.concurrency = float(limits.max_connections)
        self.backoff_until = 0.0
        self.consecutive_throttles = 0
        self._second = (TokenBucket(limits.max_per_second, max(1.0, limits.max_per_second), now)
                        if limits.max_per_second else None)
        self._hour = (TokenBucket(limits.max_per_hour / 3600.0,
                                  max(1.0, limits.max_per_hour / 60.0), now)
                      if limits.max_per_hour else None)

    @property
    def allowed_connections(self) -> int:
        return max(1, int(self.concurrency))

    def wait_time(self, now: float) -> float:
        """Seconds to wait before the next message may start (takes a token when 0)."""
        if now < self.backoff_until:
            return self.backoff_until - now
        buckets = [b for b in (self._second, self._hour) if b is not None]
        wait = max((bucket.available_in(now) for bucket in buckets), default=0.0)
        if wait == 0.0:  # every limit allows it: take a token from each
            for bucket in buckets:
                bucket.tokens -= 1.0
        return wait

    def throttled(self, now: float) -> float:
        """The site said 'slow down': back off and halve concurrency; returns the pause."""
        self.consecutive_throttles += 1
        pause = min(MAX_BACKOFF, self.base_backoff * 2 ** (self.consecutive_throttles - 1))
        self.backoff_until = max(self.backoff_until, now + pause)
        self.concurrency = max(1.0, self.concurrency / 2)
        return pause

    def succeeded(self) -> None:
        self.consecutive_throttles = 0
        if self.concurrency < self.limits.max_connections:
            self.concurrency = min(float(self.limits.max_connections),
                                   self.concurrency + 1.0 / self.concurrency)


def limit_sources(rules: tuple[ShapingRule, ...], domain: str, mx_hosts: tuple[str, ...],
                  default_connections: int, default_messages: int,
                  rules_file: str = "the shaping file") -> dict[str, tuple[object, str]]:
    """Each effective limit of a site with where it comes from (``herald queue explain``);
    the same choice as :func:`limits_for`."""
    for rule in rules:
        if rule.matches(domain, mx_hosts):
            origin = f"rule {rule.name!r} in {rules_file}"
            return {
                "rule": (rule.name, origin),
                "max_connections": (rule.max_connections or default_connections,
                                    origin if rule.max_connections
                                    else "[mta] max_connections_per_site (the rule sets none)"),
                "max_messages_per_connection": (
                    rule.max_messages_per_connection or default_messages,
                    origin if rule.max_messages_per_connection
                    else "[mta] max_messages_per_connection (the rule sets none)"),
                "max_per_second": (rule.max_per_second,
                                   origin if rule.max_per_second else "no limit"),
                "max_per_hour": (rule.max_per_hour, origin if rule.max_per_hour else "no limit"),
            }
    none = f"no rule in {rules_file} matches"
    return {"rule": ("default", none),
            "max_connections": (default_connections, "[mta] max_connections_per_site"),
            "max_messages_per_connection": (default_messages,
                                            "[mta] max_messages_per_connection"),
            "max_per_second": (None, "no limit"), "max_per_hour": (None, "no limit")}
