"""The automation core's Prometheus metrics (in the engine's registry)."""

from prometheus_client import Counter, Gauge

from engine.metrics import REGISTRY

QUARANTINED = Counter(
    "herald_automation_quarantined_events",
    "Events the follower set aside after they failed alone on a replay", registry=REGISTRY)
LEADER = Gauge("herald_automation_leader", "1 while this process drives workflows (holds the "
               "leader lock), 0 on standby", registry=REGISTRY)
LAG = Gauge("herald_automation_lag_seconds", "Seconds since the follower last reached the end "
            "of the event log (about 0 while it keeps up; grows while it falls behind or "
            "stalls; 0 on standby)", registry=REGISTRY)
EVENTS_PROCESSED = Counter("herald_automation_events_processed", "Log events the follower "
                           "acted on", registry=REGISTRY)
TIMERS_PENDING = Gauge("herald_automation_timers_pending", "Trigger timers and run wake-ups "
                       "waiting in the leader's memory", registry=REGISTRY)
TIMERS_DUE = Gauge("herald_automation_timers_due", "Timers and wake-ups that were due at the "
                   "latest tick (handled in it)", registry=REGISTRY)
TIMERS_FIRED = Counter("herald_automation_timers_fired", "Timers and wake-ups handled",
                       registry=REGISTRY)
TIMER_LATENESS = Gauge("herald_automation_timer_lateness_seconds", "How late the earliest due "
                       "timer was when the latest tick handled it", registry=REGISTRY)
