"""The automation core's Prometheus metrics (in the engine's registry)."""

from prometheus_client import Counter

from engine.metrics import REGISTRY

QUARANTINED = Counter(
    "herald_automation_quarantined_events",
    "Events the follower set aside after they failed alone on a replay", registry=REGISTRY)
