"""The MTA's Prometheus metrics (in the engine's registry)."""

from prometheus_client import Counter, Gauge, Histogram

from engine.metrics import REGISTRY

OUTCOMES = Counter("herald_mta_outcomes", "Delivery outcomes", ["outcome"], registry=REGISTRY)
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
