"""Bearer-key authentication with a short in-memory cache, scopes and per-key rate limits, plus
per-(key, client address) limits for publishable keys (the pixel).

Keys are cached for :data:`CACHE_SECONDS` (LRU, bounded); a token that verified against its
cached key is remembered for as long as that entry stays (so a repeated token costs two
dictionary look-ups, not a parse and a SHA-256: the hot path of the intake); unknown key ids for
:data:`NEGATIVE_CACHE_SECONDS` in a cache of their own, so a flood of made-up ids neither
queries the database for each repeat nor evicts real keys. Database look-ups for ids not in
either cache are rate-limited per client address before they happen.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable

from starlette.requests import Request

from engine.database import Database
from engine.errors import DatabaseUnavailable
from engine.http.errors import ApiError
from engine.http.ratelimit import RateLimiter, client_key
from engine.keys import ApiKey, KeyFormatError, fetch_key, secret_matches, split_token

CACHE_SECONDS = 30.0  # a revoked key stops working within this time
CACHE_MAX = 10_000
NEGATIVE_CACHE_SECONDS = 5.0  # a key created after a miss on its id works within this time
NEGATIVE_CACHE_MAX = 10_000
# Database look-ups of uncached key ids, per client address.
LOOKUP_RATE_PER_SECOND = 20.0
LOOKUP_BURST = 100


class KeyLookupsLimited(Exception):
    """Too many look-ups of uncached key ids from one client address; retry after ``wait``."""

    def __init__(self, wait: float) -> None:
        super().__init__("too many unknown keys from this address")
        self.wait = wait


class KeyCache:
    """Least-recently-used entries, each valid for ``ttl`` seconds, at most ``max_entries``."""

    def __init__(self, max_entries: int, ttl: float) -> None:
        self.max_entries = max_entries
        self.ttl = ttl
        self._entries: OrderedDict[str, tuple[ApiKey | None, float]] = OrderedDict()

    def get(self, key_id: str, now: float) -> tuple[bool, ApiKey | None]:
        """(found, key)."""
        found, key, _ = self.entry(key_id, now)
        return found, key

    def entry(self, key_id: str, now: float) -> tuple[bool, ApiKey | None, float]:
        """(found, key, when it was cached)."""
        entry = self._entries.get(key_id)
        if entry is None:
            return False, None, now
        if now - entry[1] >= self.ttl:
            del self._entries[key_id]
            return False, None, now
        self._entries.move_to_end(key_id)
        return True, entry[0], entry[1]

    def holds(self, key_id: str, cached_at: float, now: float) -> bool:
        """Whether the entry cached at ``cached_at`` is still there (and now most recent)."""
        entry = self._entries.get(key_id)
        if entry is None or entry[1] != cached_at or now - cached_at >= self.ttl:
            return False
        self._entries.move_to_end(key_id)
        return True

    def put(self, key_id: str, key: ApiKey | None, now: float) -> None:
        self._entries[key_id] = (key, now)
        self._entries.move_to_end(key_id)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)


class Authenticator:
    def __init__(self, database: Database, limiter: RateLimiter,
                 clock: Callable[[], float] = time.monotonic,
                 client_limiter: RateLimiter | None = None,
                 lookup_limiter: RateLimiter | None = None) -> None:
        self._database = database
        self._limiter = limiter
        self._client_limiter = client_limiter
        self._lookup_limiter = lookup_limiter or RateLimiter(LOOKUP_RATE_PER_SECOND,
                                                             LOOKUP_BURST)
        self._clock = clock
        self.known = KeyCache(CACHE_MAX, CACHE_SECONDS)
        self.unknown = KeyCache(NEGATIVE_CACHE_MAX, NEGATIVE_CACHE_SECONDS)
        # token -> (its active key, when that key was cached): a token verified once
        self._verified: dict[str, tuple[ApiKey, float]] = {}
        # Look-ups in flight by key id: concurrent requests with an uncached key share one
        # database read (and one token of the client's look-up budget), so a burst of
        # requests right after start-up or a cache expiry is neither 429'd nor a stampede.
        self._fetching: dict[str, asyncio.Future[ApiKey | None]] = {}

    async def lookup(self, token: str, client: str | None = None) -> ApiKey | None:
        """The active key for ``token``, or None when it is unknown, wrong or revoked.

        Raises :class:`KeyLookupsLimited` when ``client`` (an address) has looked up too many
        uncached ids."""
        now = self._clock()
        verified = self._verified.get(token)
        if verified is not None:
            if self.known.holds(verified[0].key_id, verified[1], now):
                return verified[0]
            del self._verified[token]
        try:
            _prefix, key_id, secret = split_token(token)
        except KeyFormatError:
            return None
        found, key, cached_at = self.known.entry(key_id, now)
        if not found:
            found, key = self.unknown.get(key_id, now)
        if not found:
            key = await self._fetch_once(key_id, client, now)
        if key is None or key.revoked or not secret_matches(key, secret):
            return None
        if key.publishable != (_prefix == "hp"):
            return None
        if len(self._verified) >= CACHE_MAX:
            self._verified.pop(next(iter(self._verified)))  # the oldest
        self._verified[token] = (key, cached_at)
        return key

    async def _fetch_once(self, key_id: str, client: str | None, now: float) -> ApiKey | None:
        """The stored key ``key_id`` (None: unknown), read once for all concurrent callers."""
        pending = self._fetching.get(key_id)
        if pending is not None:
            return await asyncio.shield(pending)
        wait = self._lookup_limiter.acquire(client_key(client), now)
        if wait > 0:
            raise KeyLookupsLimited(wait)
        future: asyncio.Future[ApiKey | None] = asyncio.get_running_loop().create_future()
        self._fetching[key_id] = future
        try:
            async with self._database.connection() as connection:
                key = await fetch_key(connection, key_id)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: no "never retrieved" warning without waiters
            raise
        else:
            (self.known if key is not None else self.unknown).put(key_id, key, now)
            future.set_result(key)
            return key
        finally:
            del self._fetching[key_id]

    async def require(self, request: Request, scope: str) -> ApiKey:
        return await self.require_header(request.headers.get("authorization", ""), scope,
                                         request.client.host if request.client else None)

    async def require_header(self, header: str, scope: str, client: str | None) -> ApiKey:
        """The active key named by an ``Authorization: Bearer <key>`` header's value."""
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ApiError(401, "unauthorized", "send 'Authorization: Bearer <key>'",
                           {"WWW-Authenticate": "Bearer"})
        return await self.require_token(token.strip(), scope, client=client)

    async def require_token(self, token: str, scope: str, challenge: str = "Bearer",
                            client: str | None = None) -> ApiKey:
        """The active key for ``token`` with ``scope`` (401, 403, 429 or 503 otherwise);
        ``challenge``: the scheme a 401 asks for; ``client``: the caller's address, whose
        look-ups of uncached key ids are rate-limited."""
        try:
            key = await self.lookup(token, client)
        except KeyLookupsLimited as exc:
            raise ApiError(429, "rate_limited", "too many unknown API keys from this address; "
                           "slow down", {"Retry-After": RateLimiter.retry_after_header(
                               exc.wait)}) from None
        except DatabaseUnavailable:
            raise ApiError(503, "database_unavailable",
                           "the database is unreachable; retry later",
                           {"Retry-After": "1"}) from None
        if key is None:
            raise ApiError(401, "unauthorized", "the API key is unknown or revoked",
                           {"WWW-Authenticate": challenge})
        self._authorize(key, scope)
        return key

    def verified_key(self, header: str, scope: str) -> ApiKey | None:
        """:meth:`require_header` answered from memory alone, for a caller that cannot wait
        (:mod:`engine.http.events_routes`' direct route): the key, its scope and rate
        checked (raising :class:`ApiError` as :meth:`require_token` does), or None when the
        header's token is not one verified recently; the caller then takes the full path."""
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer":
            return None
        verified = self._verified.get(token.strip())
        if verified is None or not self.known.holds(verified[0].key_id, verified[1],
                                                    self._clock()):
            return None
        self._authorize(verified[0], scope)
        return verified[0]

    def _authorize(self, key: ApiKey, scope: str) -> None:
        if not key.allows(scope):
            raise ApiError(403, "forbidden", f"this key lacks the '{scope}' scope")
        self.check_rate(key.key_id)

    def check_rate(self, key_id: str, cost: float = 1.0) -> None:
        wait = self._limiter.acquire(key_id, self._clock(), cost)
        if wait > 0:
            raise ApiError(429, "rate_limited", "too many requests for this key; slow down",
                           {"Retry-After": RateLimiter.retry_after_header(wait)})

    def client_allowed(self, key_id: str, client: str | None) -> bool:
        """Take a token from the bucket of this key and client address (the TCP peer: behind
        a reverse proxy every visitor shares the proxy's bucket)."""
        if self._client_limiter is None:
            return True
        return self._client_limiter.acquire(f"{key_id} {client_key(client)}",
                                            self._clock()) == 0
