"""Prometheus metrics shared by the engine's roles (one registry per process)."""

from __future__ import annotations

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
)

REGISTRY = CollectorRegistry(auto_describe=True)
# Every process: CPU, memory, open files, start time (process_*), Python (python_info, GC).
for _collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
    REGISTRY.register(_collector)
BUILD_INFO = Info("herald_build", "Herald's version, the Python running it and the roles this "
                  "process runs (set at start-up)", registry=REGISTRY)

HTTP_REQUESTS = Counter(
    "herald_http_requests", "HTTP requests answered", ["route", "status"], registry=REGISTRY
)
HTTP_LATENCY = Histogram(
    "herald_http_request_seconds", "HTTP request latency", ["route"], registry=REGISTRY,
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
HTTP_DIRECT_REQUESTS = Counter(
    "herald_http_direct_requests", "Requests for a route answered from the HTTP protocol "
    "(engine.http.direct_routes): served so, or declined and served by the app",
    ["outcome"], registry=REGISTRY,
)
HTTP_CONNECTIONS_CLOSED = Counter(
    "herald_http_connections_closed", "Client connections closed by the slow-client guard",
    ["reason"], registry=REGISTRY,
)
EVENTS_STORED = Counter(
    "herald_events_stored", "Events committed to the event log", ["source"], registry=REGISTRY
)
EVENT_DUPLICATES = Counter(
    "herald_event_duplicates", "Events skipped because their id was seen before",
    registry=REGISTRY,
)
INTAKE_BATCH_EVENTS = Histogram(
    "herald_intake_batch_events", "Events per group commit", registry=REGISTRY,
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000),
)
INTAKE_CLAIM_FALLBACKS = Counter(
    "herald_intake_claim_fallbacks", "Plain batches written again with per-id claims because "
    "an id was already stored", registry=REGISTRY,
)
INTAKE_QUEUE_EVENTS = Gauge(
    "herald_intake_queue_events", "Events waiting for the intake writer", registry=REGISTRY
)
PIXEL_REJECTED = Counter(
    "herald_pixel_rejected", "Tracking pixel hits not recorded, by reason", ["reason"],
    registry=REGISTRY,
)
PIXEL_PROPERTIES_DROPPED = Counter(
    "herald_pixel_properties_dropped", "Pixel hit properties dropped because the key does not "
    "allow them", registry=REGISTRY,
)
SEGMENT_MESSAGES_REJECTED = Counter(
    "herald_segment_messages_rejected", "Segment-dialect messages set aside (the rest of their "
    "batch was stored)", registry=REGISTRY,
)
