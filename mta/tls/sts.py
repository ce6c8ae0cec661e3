"""MTA-STS policies for recipient domains (RFC 8461 §5): discovery, the Postgres cache, refresh.

``lookup(domain)`` answers the policy that applies now:

1. the ``_mta-sts.DOMAIN`` TXT record names a policy id (or the domain has none);
2. a cached policy (``mta_sts_policies``) that has not expired and has that id is used as is;
   past half its ``max_age`` it is fetched again (refresh before expiry, §5.1);
3. otherwise the policy is fetched (:mod:`mta.tls.sts_fetch`), parsed and cached;
4. a failed fetch or TXT lookup falls back to the cached policy while it is valid (§5.1: a
   missing record or an unreachable policy host must not downgrade a cached policy); with
   nothing cached the domain has no policy, and the failure is reported (``problem``).

Results are kept in memory for ``mta_sts_recheck`` (bounded), so the hot path costs no query;
concurrent lookups of one domain share one flight. ``refresh_expiring`` re-fetches cached
policies past half their life, for domains Herald has not mailed lately.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from engine.database import Database
from engine.errors import DatabaseError
from engine.outbox.transport import OutboundPolicy
from mta.dns.resolver import DnsTemporaryFailure
from mta.dns.secure import SecureResolver
from mta.tls.sts_fetch import StsFetchError, fetch_policy_text
from mta.tls.sts_policy import StsPolicy, StsPolicyInvalid, parse_policy, parse_sts_txt

log = logging.getLogger("herald.mta.sts")

MEMORY_SIZE = 50_000
REFRESH_BATCH = 100

LOAD = """
    SELECT policy_id, policy, expires_at, fetched_at FROM mta_sts_policies WHERE domain = $1
"""
SAVE = """
    INSERT INTO mta_sts_policies
        (domain, policy_id, mode, mx, max_age, policy, fetched_at, expires_at)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
    ON CONFLICT (domain) DO UPDATE SET policy_id = excluded.policy_id, mode = excluded.mode,
        mx = excluded.mx, max_age = excluded.max_age, policy = excluded.policy,
        fetched_at = excluded.fetched_at, expires_at = excluded.expires_at
"""
# Cached policies past half their life, oldest first: refreshed in the background.
EXPIRING = """
    SELECT domain FROM mta_sts_policies
    WHERE expires_at > $1 AND fetched_at + make_interval(secs => max_age / 2) <= $1
    ORDER BY expires_at LIMIT $2
"""


@dataclass(frozen=True, slots=True)
class StsLookup:
    policy: StsPolicy | None  # None: no policy applies (mode none counts as none)
    problem: str | None = None  # a published policy Herald could not get: why
    result_type: str | None = None  # its RFC 8460 result type


@dataclass(frozen=True, slots=True)
class _Cached:
    policy: StsPolicy
    fetched_at: datetime
    expires_at: datetime


class StsPolicies:
    def __init__(self, database: Database, resolver: SecureResolver,
                 resolve: Callable[[str], Awaitable[list[str]]], *, port: int = 443,
                 timeout: float = 10.0, max_bytes: int = 65536, recheck: float = 3600.0,
                 ca_file: str | None = None, outbound: OutboundPolicy | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._database = database
        self._resolver = resolver
        self._resolve = resolve
        self._port = port
        self._timeout = timeout
        self._max_bytes = max_bytes
        self._recheck = recheck
        self._ca_file = ca_file
        self._outbound = outbound
        self._clock = clock
        self._now = now
        self._memory: OrderedDict[str, tuple[float, StsLookup]] = OrderedDict()
        self._flights: dict[str, asyncio.Task[StsLookup]] = {}

    async def lookup(self, domain: str) -> StsLookup:
        domain = domain.lower().rstrip(".")
        remembered = self._memory.get(domain)
        if remembered is not None and remembered[0] > self._clock():
            return remembered[1]
        task = self._flights.get(domain)
        if task is None:
            task = asyncio.create_task(self._discover(domain))
            self._flights[domain] = task
            task.add_done_callback(lambda done: self._flights.pop(domain, None))
        result = await asyncio.shield(task)
        return result

    def forget(self) -> None:
        """Drop what is remembered in memory (the next lookup asks DNS again)."""
        self._memory.clear()

    async def refresh_expiring(self) -> int:
        """Re-fetch cached policies past half their max_age; returns how many were tried."""
        async with self._database.connection() as connection:
            rows = await connection.fetch(EXPIRING, self._now(), REFRESH_BATCH)
        for row in rows:
            self._memory.pop(row["domain"], None)
            await self.lookup(row["domain"])
        return len(rows)

    async def _discover(self, domain: str) -> StsLookup:
        result = await self._decide(domain)
        self._memory[domain] = (self._clock() + self._recheck, result)
        self._memory.move_to_end(domain)
        while len(self._memory) > MEMORY_SIZE:
            self._memory.popitem(last=False)
        return result

    async def _decide(self, domain: str) -> StsLookup:
        cached = await self._load(domain)
        try:
            answer = await self._resolver.txt(f"_mta-sts.{domain}")
        except DnsTemporaryFailure as exc:
            log.info("MTA-STS TXT lookup failed; using the cached policy if any",
                     extra={"domain": domain, "error": str(exc)})
            return self._usable(cached)
        policy_id = parse_sts_txt(answer.records)
        if policy_id is None:
            return self._usable(cached)  # no announcement: a valid cached policy still holds
        now = self._now()
        if cached is not None and cached.policy.policy_id == policy_id and (
                now < cached.fetched_at + timedelta(seconds=cached.policy.max_age / 2)):
            return self._usable(cached)
        try:
            text = await fetch_policy_text(domain, resolve=self._resolve, port=self._port,
                                           timeout=self._timeout, max_bytes=self._max_bytes,
                                           ca_file=self._ca_file, outbound=self._outbound)
            policy = parse_policy(text, policy_id)
        except (StsFetchError, StsPolicyInvalid) as exc:
            kind = exc.result_type if isinstance(exc, StsFetchError) else "sts-policy-invalid"
            log.warning("MTA-STS policy unavailable", extra={"domain": domain, "error": str(exc)})
            found = self._usable(cached)
            if found.policy is not None:
                return found
            return StsLookup(None, str(exc), kind)
        await self._save(domain, policy, now)
        log.info("MTA-STS policy fetched", extra={"domain": domain, "id": policy_id,
                                                  "mode": policy.mode, "max_age": policy.max_age})
        return StsLookup(policy if policy.mode != "none" else None)

    def _usable(self, cached: _Cached | None) -> StsLookup:
        if cached is None or cached.expires_at <= self._now() or cached.policy.mode == "none":
            return StsLookup(None)
        return StsLookup(cached.policy)

    async def _load(self, domain: str) -> _Cached | None:
        try:
            async with self._database.connection() as connection:
                row = await connection.fetchrow(LOAD, domain)
        except DatabaseError as exc:
            log.warning("MTA-STS cache unavailable", extra={"error": str(exc)})
            return None
        if row is None:
            return None
        try:
            policy = parse_policy(row["policy"], row["policy_id"])
        except StsPolicyInvalid:
            return None
        return _Cached(policy, row["fetched_at"], row["expires_at"])

    async def _save(self, domain: str, policy: StsPolicy, now: datetime) -> None:
        try:
            async with self._database.connection() as connection:
                await connection.execute(
                    SAVE, domain, policy.policy_id, policy.mode, list(policy.mx),
                    policy.max_age, policy.text, now, now + timedelta(seconds=policy.max_age))
        except DatabaseError as exc:
            log.warning("cannot cache the MTA-STS policy", extra={"domain": domain,
                                                                  "error": str(exc)})
