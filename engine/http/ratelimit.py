"""Token buckets by key (an API key id, or a key id and client address) (pure: the clock is
passed in)."""

from __future__ import annotations

import ipaddress
import math
from collections import OrderedDict

IPV6_CLIENT_PREFIX = 64  # one IPv6 client usually holds a whole /64


def client_key(address: str | None) -> str:
    """A client address as a bucket key: IPv4 as is, IPv6 by its /64 (an IPv4-mapped address as
    the IPv4 address), anything unparsable as itself."""
    if not address:
        return "unknown"
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(parsed, ipaddress.IPv6Address):
        if parsed.ipv4_mapped is not None:
            return str(parsed.ipv4_mapped)
        return str(ipaddress.IPv6Network((parsed, IPV6_CLIENT_PREFIX), strict=False))
    return str(parsed)


class RateLimiter:
    """``rate`` tokens per second, up to ``burst``; one token per request."""

    def __init__(self, rate: float, burst: int, max_keys: int = 100_000) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.max_keys = max_keys
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    @property
    def enabled(self) -> bool:
        return self.rate > 0 and self.burst > 0

    def acquire(self, key: str, now: float, cost: float = 1.0) -> float:
        """Take ``cost`` tokens; returns 0 when allowed, else seconds until it would be."""
        if not self.enabled:
            return 0.0
        tokens, stamp = self._buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - stamp) * self.rate)
        if tokens >= cost:
            self._buckets[key] = (tokens - cost, now)
            self._buckets.move_to_end(key)
            if len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
            return 0.0
        self._buckets[key] = (tokens, now)
        return (cost - tokens) / self.rate

    @staticmethod
    def retry_after_header(wait: float) -> str:
        return str(max(1, math.ceil(wait)))
