"""What a running delivery service publishes about its sites, for ``herald queue`` and the
``/v1/queue`` endpoints, which run in other processes.

Every ``INTERVAL`` seconds the service writes (1) the recipient domains it routed since the last
write, with their site, to ``mta_domain_sites`` (queued rows store only the domain), and (2) the
in-memory state of its busy sites (adaptive concurrency, backoff, ready and active messages,
effective limits) to ``mta_site_state``, plus a heartbeat row (site ``''``) saying the process
is alive. Readers show ``updated_at``, so stale state is never passed off as live. Idle sites
(nothing waiting, no backoff, full concurrency) are not written; the heartbeat tells readers
such a site is simply idle. On stop the service deletes its rows.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from mta.shaping.sites import Site

INTERVAL = 5.0
STALE_AFTER = 3 * INTERVAL  # readers call state older than this stale
MAX_KNOWN_DOMAINS = 100_000  # domains whose site this process remembers having written
MAX_SITES_WRITTEN = 1000  # busiest first
HEARTBEAT = ""

UPSERT_DOMAINS = """
    INSERT INTO mta_domain_sites (domain, site, mx_hosts, updated_at)
    SELECT r->>0, r->>1, ARRAY(SELECT jsonb_array_elements_text(r->2)), now()
    FROM jsonb_array_elements($1::jsonb) AS r
    ON CONFLICT (domain) DO UPDATE
        SET site = excluded.site, mx_hosts = excluded.mx_hosts, updated_at = now()
"""

UPSERT_STATE = """
    INSERT INTO mta_site_state (owner, site, state, updated_at)
    SELECT $1, r->>0, r->1, now() FROM jsonb_array_elements($2::jsonb) AS r
    ON CONFLICT (owner, site) DO UPDATE SET state = excluded.state, updated_at = now()
"""

DELETE_OTHERS = """
    DELETE FROM mta_site_state WHERE owner = $1 AND NOT (site = ANY($2::text[]))
"""


def busy(site: Site, now: float) -> bool:
    governor = site.governor
    return bool(site.ready or site.active or governor.backoff_until > now
                or governor.consecutive_throttles
                or governor.concurrency < governor.limits.max_connections)


def site_state(site: Site, now: float, wall: datetime) -> dict[str, Any]:
    """A site's in-memory state as JSON (pure: the clocks are passed in)."""
    governor = site.governor
    limits = governor.limits
    remaining = max(0.0, governor.backoff_until - now)
    return {
        "rule": limits.rule,
        "limits": {"max_connections": limits.max_connections,
                   "max_messages_per_connection": limits.max_messages_per_connection,
                   "max_per_second": limits.max_per_second, "max_per_hour": limits.max_per_hour},
        "concurrency": round(governor.concurrency, 2),
        "allowed_connections": governor.allowed_connections,
        "consecutive_throttles": governor.consecutive_throttles,
        "backoff_remaining_s": round(remaining, 1),
        "backoff_until": (wall + timedelta(seconds=remaining)).isoformat() if remaining else None,
        "ready": len(site.ready),
        "active": site.active,
        "window": site.window,
    }


class SiteStatePublisher:
    """Collects routed domains between writes; writes them and the busy sites' state."""

    def __init__(self, owner: str) -> None:
        self.owner = owner
        self._written: dict[str, str] = {}  # domain -> site as last written
        self._changed: dict[str, tuple[str, tuple[str, ...]]] = {}

    def routed(self, domain: str, site: str, hosts: tuple[str, ...]) -> None:
        if self._written.get(domain) != site:
            self._changed[domain] = (site, hosts)

    async def publish(self, connection: asyncpg.Connection, sites: Iterable[Site]) -> None:
        now, wall = time.monotonic(), datetime.now(UTC)
        changed, self._changed = self._changed, {}
        states = sorted((s for s in sites if busy(s, now)),
                        key=lambda s: len(s.ready) + s.active, reverse=True)
        rows = [[s.key, site_state(s, now, wall)] for s in states[:MAX_SITES_WRITTEN]]
        rows.append([HEARTBEAT, {"sites": len(states), "pid_started": _STARTED}])
        try:
            async with connection.transaction():
                if changed:
                    await connection.execute(UPSERT_DOMAINS, [
                        [domain, site, list(hosts)] for domain, (site, hosts) in changed.items()])
                await connection.execute(UPSERT_STATE, self.owner, rows)
                await connection.execute(DELETE_OTHERS, self.owner, [row[0] for row in rows])
        except BaseException:
            for domain, value in changed.items():  # write them next time
                self._changed.setdefault(domain, value)
            raise
        if len(self._written) + len(changed) > MAX_KNOWN_DOMAINS:
            self._written.clear()  # bounded: at worst some domains are written again
        self._written.update((domain, site) for domain, (site, _) in changed.items())

    async def withdraw(self, connection: asyncpg.Connection) -> None:
        await connection.execute("DELETE FROM mta_site_state WHERE owner = $1", self.owner)


_STARTED = datetime.now(UTC).isoformat()
