"""What the queue looks like per destination site, and why a site is slow or paused.

Queued rows store the recipient domain; ``mta_domain_sites`` (written by the mta role, see
:mod:`mta.delivery.site_state`) maps domains to sites. A domain no running MTA has routed yet is
shown as its own entry with ``site`` null. Live state (backoff, adaptive concurrency) comes
from ``mta_site_state`` with its age: older than ``STALE_AFTER`` it is marked stale.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg

from engine.timestamps import format_rfc3339
from mta.delivery.site_state import HEARTBEAT, STALE_AFTER
from mta.queue.control import PENDING, QueueSelectionError
from mta.shaping.rules import ShapingRule, limit_sources

RATE_WINDOW = 300  # seconds of delivery_attempts behind the rates
MAX_SITES = 1000
LAST_REPLIES = 10

# Depth, oldest message and next retry per site (per domain where no MTA routed it yet).
DEPTH = """
    SELECT s.site, CASE WHEN s.site IS NULL THEN m.recipient_domain END AS unrouted,
           count(*) FILTER (WHERE m.state = 'queued') AS queued,
           count(*) FILTER (WHERE m.state = 'deferred') AS deferred,
           count(*) FILTER (WHERE m.state = 'held') AS held,
           min(m.created_at) AS oldest,
           min(m.next_attempt_at) FILTER (WHERE m.state IN ('queued', 'deferred')) AS next_attempt,
           count(DISTINCT m.recipient_domain) AS domains
    FROM outbound_messages AS m
    LEFT JOIN mta_domain_sites AS s ON s.domain = m.recipient_domain
    WHERE m.state = ANY($1::text[])
    GROUP BY 1, 2
    ORDER BY count(*) DESC
    LIMIT $2
"""

RATES = """
    SELECT s.site, CASE WHEN s.site IS NULL THEN m.recipient_domain END AS unrouted,
           a.outcome, count(*) AS n
    FROM delivery_attempts AS a
    JOIN outbound_messages AS m ON m.id = a.message_id
    LEFT JOIN mta_domain_sites AS s ON s.domain = m.recipient_domain
    WHERE a.at > now() - make_interval(secs => $1)
    GROUP BY 1, 2, 3
"""


@dataclass(frozen=True, slots=True)
class SiteDepth:
    site: str | None
    domain: str | None  # set when no MTA has routed the domain (site is None)
    queued: int
    deferred: int
    held: int
    oldest: datetime
    next_attempt: datetime | None

    @property
    def key(self) -> str:
        return self.site or f"unrouted:{self.domain}"


async def depths(connection: asyncpg.Connection, limit: int = MAX_SITES) -> list[SiteDepth]:
    rows = await connection.fetch(DEPTH, list(PENDING), limit)
    return [SiteDepth(r["site"], r["unrouted"], r["queued"], r["deferred"], r["held"],
                      r["oldest"], r["next_attempt"]) for r in rows]


async def summary(connection: asyncpg.Connection, limit: int = MAX_SITES) -> dict[str, Any]:
    """Depth, oldest age, next retry and attempts per minute (last 5 minutes) per site."""
    now = datetime.now(UTC)
    sites = await depths(connection, limit)
    rates: dict[str, dict[str, float]] = {}
    for row in await connection.fetch(RATES, float(RATE_WINDOW)):
        key = row["site"] or f"unrouted:{row['unrouted']}"
        rates.setdefault(key, {})[row["outcome"]] = round(row["n"] * 60 / RATE_WINDOW, 2)
    entries = []
    for site in sites:
        entries.append({
            "site": site.site, "domain": site.domain,
            "queued": site.queued, "deferred": site.deferred, "held": site.held,
            "oldest_age_s": round((now - site.oldest).total_seconds(), 1),
            "next_attempt_at": format_rfc3339(site.next_attempt) if site.next_attempt else None,
            "per_minute": rates.pop(site.key, {}),
        })
    for key, rate in sorted(rates.items()):  # sites with recent attempts and nothing queued
        routed = not key.startswith("unrouted:")
        entries.append({"site": key if routed else None,
                        "domain": None if routed else key.removeprefix("unrouted:"),
                        "queued": 0, "deferred": 0, "held": 0, "oldest_age_s": None,
                        "next_attempt_at": None, "per_minute": rate})
    totals = {state: sum(site.__getattribute__(state) for site in sites)
              for state in ("queued", "deferred", "held")}
    return {"at": format_rfc3339(now), "totals": totals, "rate_window_s": RATE_WINDOW,
            "sites": entries, "mta": await mta_processes(connection, now)}


async def mta_processes(connection: asyncpg.Connection, now: datetime) -> list[dict[str, Any]]:
    rows = await connection.fetch(
        "SELECT owner, updated_at FROM mta_site_state WHERE site = $1 ORDER BY owner", HEARTBEAT)
    return [{"owner": r["owner"], "updated_at": format_rfc3339(r["updated_at"]),
             "age_s": round((now - r["updated_at"]).total_seconds(), 1),
             "stale": (now - r["updated_at"]).total_seconds() > STALE_AFTER} for r in rows]


@dataclass(frozen=True, slots=True)
class LimitDefaults:
    max_connections: int
    max_messages_per_connection: int
    rules_file: str


async def explain(connection: asyncpg.Connection, *, site: str | None, domain: str | None,
                  rules: tuple[ShapingRule, ...], defaults: LimitDefaults) -> dict[str, Any]:
    """Why a site (or a domain's site) is slow or paused: its queue, effective limits and their
    source, the live state each running MTA reports (with its age), recent replies, next retry,
    and the reasons in plain words."""
    if (site is None) == (domain is None):
        raise QueueSelectionError("explain needs exactly one of --site or --domain")
    now = datetime.now(UTC)
    if domain is not None:
        row = await connection.fetchrow(
            "SELECT site, mx_hosts, updated_at FROM mta_domain_sites WHERE domain = $1", domain)
        if row is None:
            known = await connection.fetchval(
                "SELECT EXISTS (SELECT 1 FROM outbound_messages WHERE recipient_domain = $1 "
                "AND state = ANY($2::text[]))", domain, list(PENDING))
            if not known:
                raise QueueSelectionError(
                    f"unknown domain {domain!r}: no mail for it in the queue and no MTA has "
                    "routed it", unknown=True)
            domains, mx_hosts, routed_at = [domain], [], None
        else:
            site = row["site"]
            mx_hosts, routed_at = list(row["mx_hosts"]), row["updated_at"]
            domains = await _site_domains(connection, site)
    else:
        rows = await connection.fetch(
            "SELECT domain, mx_hosts, updated_at FROM mta_domain_sites WHERE site = $1 "
            "ORDER BY domain LIMIT 1000", site)
        if not rows:
            raise QueueSelectionError(f"unknown site {site!r}: no running MTA has routed mail "
                                      "to it (`herald queue` lists sites)", unknown=True)
        domains = [r["domain"] for r in rows]
        mx_hosts = list(rows[0]["mx_hosts"])
        routed_at = max(r["updated_at"] for r in rows)
    queue = await connection.fetchrow(
        "SELECT count(*) FILTER (WHERE state = 'queued') AS queued, "
        "count(*) FILTER (WHERE state = 'deferred') AS deferred, "
        "count(*) FILTER (WHERE state = 'held') AS held, min(created_at) AS oldest, "
        "min(next_attempt_at) FILTER (WHERE state IN ('queued', 'deferred')) AS next_attempt "
        "FROM outbound_messages WHERE recipient_domain = ANY($1::text[]) "
        "AND state = ANY($2::text[])", domains, list(PENDING))
    replies = await connection.fetch(
        "SELECT a.at, a.outcome, a.code, a.enhanced, a.reply, a.remote_host, "
        "m.recipient_domain FROM delivery_attempts AS a "
        "JOIN outbound_messages AS m ON m.id = a.message_id "
        "WHERE m.recipient_domain = ANY($1::text[]) AND a.at > now() - interval '1 day' "
        "ORDER BY a.at DESC LIMIT $2", domains, LAST_REPLIES)
    live = await _live(connection, site, now) if site is not None else []
    sources = limit_sources(rules, domains[0], tuple(mx_hosts), defaults.max_connections,
                            defaults.max_messages_per_connection, defaults.rules_file)
    report: dict[str, Any] = {
        "at": format_rfc3339(now), "site": site, "domains": domains, "mx_hosts": mx_hosts,
        "routed_at": format_rfc3339(routed_at) if routed_at else None,
        "queue": {
            "queued": queue["queued"], "deferred": queue["deferred"], "held": queue["held"],
            "oldest_age_s": (round((now - queue["oldest"]).total_seconds(), 1)
                             if queue["oldest"] else None),
            "next_attempt_at": (format_rfc3339(queue["next_attempt"])
                                if queue["next_attempt"] else None)},
        "limits": {key: {"value": value, "from": origin}
                   for key, (value, origin) in sources.items()},
        "live": live,
        "mta": await mta_processes(connection, now),
        "last_replies": [{
            "at": format_rfc3339(r["at"]), "outcome": r["outcome"], "code": r["code"],
            "enhanced": r["enhanced"], "reply": r["reply"], "remote_host": r["remote_host"],
            "domain": r["recipient_domain"]} for r in replies],
    }
    report["reasons"] = reasons(report, now)
    return report


async def _site_domains(connection: asyncpg.Connection, site: str) -> list[str]:
    rows = await connection.fetch(
        "SELECT domain FROM mta_domain_sites WHERE site = $1 ORDER BY domain LIMIT 1000", site)
    return [r["domain"] for r in rows]


async def _live(connection: asyncpg.Connection, site: str, now: datetime) -> list[dict[str, Any]]:
    rows = await connection.fetch(
        "SELECT owner, state, updated_at FROM mta_site_state WHERE site = $1 ORDER BY owner",
        site)
    return [{"owner": r["owner"], "updated_at": format_rfc3339(r["updated_at"]),
             "age_s": round((now - r["updated_at"]).total_seconds(), 1),
             "stale": (now - r["updated_at"]).total_seconds() > STALE_AFTER, **r["state"]}
            for r in rows]


def reasons(report: dict[str, Any], now: datetime) -> list[str]:
    """The explain report's findings in plain words, most important first (pure)."""
    out: list[str] = []
    queue = report["queue"]
    if report["site"] is None:
        out.append("no running MTA has routed this domain yet: its site and MX hosts are "
                   "unknown, so only domain rules are considered for its limits")
    if queue["held"]:
        out.append(f"{queue['held']} message(s) held by an operator: `herald queue release` "
                   "sends them")
    fresh = [state for state in report["live"] if not state["stale"]]
    for state in report["live"]:
        age = f"as of {state['age_s']:g}s ago, {state['owner']}"
        if state["stale"]:
            out.append(f"state from {state['owner']} is stale ({state['age_s']:g}s old): "
                       "that process may have stopped")
            continue
        if state["backoff_remaining_s"]:
            out.append(f"paused: backed off for {state['backoff_remaining_s']:g}s more after "
                       f"{state['consecutive_throttles']} throttling repl(ies) ({age})")
        if state["allowed_connections"] < state["limits"]["max_connections"]:
            out.append(f"concurrency lowered to {state['allowed_connections']} of "
                       f"{state['limits']['max_connections']} connections after throttling; "
                       f"it recovers with each success ({age})")
        if state["ready"] >= state["window"]:
            out.append(f"ready queue full ({state['ready']} of {state['window']}): new mail "
                       f"for this site goes back to the queue for a few seconds ({age})")
    limits = report["limits"]
    for key in ("max_per_second", "max_per_hour"):
        if limits[key]["value"] is not None:
            out.append(f"rate limited to {limits[key]['value']:g} {key.removeprefix('max_')} "
                       f"({limits[key]['from']})")
    if report["site"] is not None and not fresh and not any(
            not m["stale"] for m in report["mta"]):
        out.append("no running MTA reports state: is the mta role running?")
    deferrals = [r for r in report["last_replies"] if r["outcome"] != "delivered"]
    if deferrals:
        last = deferrals[0]
        out.append(f"last failure ({last['outcome']}, {last['at']}): "
                   f"{last['code'] or ''} {last['reply'] or ''}".rstrip())
    if queue["next_attempt_at"]:
        out.append(f"next attempt due at {queue['next_attempt_at']}")
    if not out:
        out.append("nothing is slowing this site down")
    return out
