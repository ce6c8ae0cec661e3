"""The outbox's Prometheus metrics (in the process registry)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

from engine.metrics import REGISTRY

OUTBOX_DEPTH = Gauge(
    "herald_outbox_depth", "Outbox rows by state (pending includes those in flight), read by "
    "the outbox role every few seconds", ["state"], registry=REGISTRY)
OUTBOX_ATTEMPTS = Counter(
    "herald_outbox_attempts", "Outbound HTTP attempts by outcome (delivered, retry, dead, "
    "refused, lease_lost)", ["outcome"], registry=REGISTRY)
OUTBOX_FOLLOWER_ROWS = Counter(
    "herald_outbox_follower_rows", "Outbox rows the outcome follower wrote for logged events",
    registry=REGISTRY)
