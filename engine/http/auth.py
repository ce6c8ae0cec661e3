"""Bearer-key authentication with a short in-memory cache, scopes and per-key rate limits, plus
per-(key, client address) limits for publishable keys (the pixel)."""

from __future__ import annotations

import time
from collections.abc import Callable

from starlette.requests import Request

from engine.database import Database
from engine.errors import DatabaseUnavailable
from engine.http.errors import ApiError
from engine.http.ratelimit import RateLimiter, client_key
from engine.keys import ApiKey, KeyFormatError, fetch_key, secret_matches, split_token

CACHE_SECONDS = 30.0  # a revoked key stops working within this time
CACHE_MAX = 10_000


class Authenticator:
    def __init__(self, database: Database, limiter: RateLimiter,
                 clock: Callable[[], float] = time.monotonic,
                 client_limiter: RateLimiter | None = None) -> None:
        self._database = database
        self._limiter = limiter
        self._client_limiter = client_limiter
        self._clock = clock
        self._cache: dict[str, tuple[ApiKey | None, float]] = {}

    async def lookup(self, token: str) -> ApiKey | None:
        """The active key for ``token``, or None when it is unknown, wrong or revoked."""
        try:
            _prefix, key_id, secret = split_token(token)
        except KeyFormatError:
            return None
        now = self._clock()
        cached = self._cache.get(key_id)
        if cached is not None and now - cached[1] < CACHE_SECONDS:
            key = cached[0]
        else:
            async with self._database.connection() as connection:
                key = await fetch_key(connection, key_id)
            if len(self._cache) >= CACHE_MAX:
                self._cache.clear()
            self._cache[key_id] = (key, now)
        if key is None or key.revoked or not secret_matches(key, secret):
            return None
        if key.publishable != (_prefix == "hp"):
            return None
        return key

    async def require(self, request: Request, scope: str) -> ApiKey:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ApiError(401, "unauthorized", "send 'Authorization: Bearer <key>'",
                           {"WWW-Authenticate": "Bearer"})
        return await self.require_token(token.strip(), scope)

    async def require_token(self, token: str, scope: str,
                            challenge: str = "Bearer") -> ApiKey:
        """The active key for ``token`` with ``scope`` (401, 403, 429 or 503 otherwise);
        ``challenge``: the scheme a 401 asks for."""
        try:
            key = await self.lookup(token)
        except DatabaseUnavailable:
            raise ApiError(503, "database_unavailable",
                           "the database is unreachable; retry later",
                           {"Retry-After": "1"}) from None
        if key is None:
            raise ApiError(401, "unauthorized", "the API key is unknown or revoked",
                           {"WWW-Authenticate": challenge})
        if not key.allows(scope):
            raise ApiError(403, "forbidden", f"this key lacks the '{scope}' scope")
        self.check_rate(key.key_id)
        return key

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
