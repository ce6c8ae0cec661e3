"""The MTA's Prometheus metrics (in the engine's registry)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from engine.metrics import REGISTRY

SUBMISSIONS = Counter("herald_submission_messages", "SMTP submission: messages queued "
                      "(one per recipient), and transactions refused by reply code",
                      ["outcome"], registry=REGISTRY)
SUBMISSION_AUTH_FAILURES = Counter("herald_submission_auth_failures",
                                   "SMTP submission: failed AUTH attempts", registry=REGISTRY)
OUTCOMES = Counter("herald_mta_outcomes", "Delivery outcomes by bounce category ('none' for "
                   "delivered and released)", ["outcome", "category"], registry=REGISTRY)
ACTIVE = Gauge("herald_mta_active_messages", "Messages in the in-memory active window",
               registry=REGISTRY)
QUEUE_TO_DELIVERY = Histogram(
    "herald_mta_queue_to_delivery_seconds", "From enqueue to delivered", registry=REGISTRY,
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 7200, 86400),
)
THROTTLES = Counter("herald_mta_site_throttles", "Throttling replies that backed a site off",
                    ["rule"], registry=REGISTRY)
CLAIM_BATCH = Histogram("herald_mta_claim_batch", "Messages per claim", registry=REGISTRY,
                        buckets=(1, 5, 10, 50, 100, 250, 500, 1000))
LOST_LEASES = Counter(
    "herald_mta_lost_leases", "Outcomes not recorded because another worker held the lease",
    ["outcome"], registry=REGISTRY)
DKIM_SIGN_SECONDS = Histogram(
    "herald_mta_dkim_sign_batch_seconds", "Signing one claimed batch in the DKIM worker "
    "processes", registry=REGISTRY,
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
DKIM_SIGNATURES = Counter("herald_mta_dkim_signatures", "Messages signed (or failed)",
                          ["result"], registry=REGISTRY)
DNS_LOOKUP_SECONDS = Histogram(
    "herald_mta_dns_lookup_seconds", "DNS lookups sent to the resolver (cache misses)",
    ["type", "result"], registry=REGISTRY,
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
SITE_STATE_WRITES = Counter("herald_mta_site_state_writes", "Site state published for "
                            "`herald queue`, by result", ["result"], registry=REGISTRY)

MAX_SITE_SERIES = 50  # per-site queue series: the deepest sites; the rest add up in "other"


@dataclass(frozen=True, slots=True)
class SiteQueue:
    site: str
    queued: int
    deferred: int
    held: int
    oldest_age: float


class QueueCollector(Collector):
    """Queue depth and oldest-message age per site, from the latest reading (the mta role reads
    the queue every few seconds; a scrape never touches the database)."""

    def __init__(self) -> None:
        self.sites: tuple[SiteQueue, ...] = ()
        self.read_at = 0.0  # unix time of the reading; 0: none yet

    def update(self, sites: list[SiteQueue], read_at: float) -> None:
        deepest = sorted(sites, key=lambda s: s.queued + s.deferred + s.held, reverse=True)
        kept, rest = deepest[:MAX_SITE_SERIES], deepest[MAX_SITE_SERIES:]
        if rest:
            kept.append(SiteQueue("other", sum(s.queued for s in rest),
                                  sum(s.deferred for s in rest), sum(s.held for s in rest),
                                  max(s.oldest_age for s in rest)))
        self.sites = tuple(kept)  # one assignment: a scrape sees one reading or the next
        self.read_at = read_at

    def collect(self) -> Iterator[GaugeMetricFamily]:
        if not self.read_at:
            return
        sites = self.sites
        depth = GaugeMetricFamily("herald_mta_queue_depth", "Messages waiting, per site and "
                                  "state", labels=["site", "state"])
        oldest = GaugeMetricFamily("herald_mta_queue_oldest_age_seconds", "Age of the oldest "
                                   "waiting message per site", labels=["site"])
        for site in sites:
            for state in ("queued", "deferred", "held"):
                depth.add_metric([site.site, state], getattr(site, state))
            oldest.add_metric([site.site], site.oldest_age)
        yield depth
        yield oldest
        yield GaugeMetricFamily("herald_mta_queue_read_timestamp_seconds",
                                "When the queue depth was last read", value=self.read_at)


QUEUE = QueueCollector()
REGISTRY.register(QUEUE)
