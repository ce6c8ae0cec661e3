"""The ``[automation]`` section."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from automation.content.link_policy import normalize_domains
from engine.settings_loader import duration


@dataclass(frozen=True, slots=True)
class AutomationSettings:
    workflows_dir: Path = Path("config/workflows")
    templates_dir: Path = Path("config/templates")
    # Sender of automation mail (a workflow's sends all use it).
    from_address: str = "Herald <noreply@localhost>"
    # Per-contact cap on automation (non-transactional) sends across all workflows.
    frequency_cap: int = 10
    frequency_window: float = duration("24h")
    # Quiet hours in the contact's timezone, e.g. "21:00-08:00" (empty: off). Sends wait.
    quiet_hours: str = ""
    # The follower: events per read, and how often the trigger index is snapshotted.
    read_batch: int = 5000
    # Contacts whose run transitions may be in flight at once (each contact stays in order).
    concurrency: int = 512
    # Group commit: transitions of different contacts are handled in groups, one transaction
    # and a few set-based statements per group, at most commit_batch per group, on at most
    # commit_connections at once. concurrency = 2 x commit_batch keeps a second group forming
    # while one is written (docs/PERFORMANCE.md, "Live transitions"). The group size cap
    # starts at commit_batch_min and doubles while a backlog outlasts a group (up to
    # commit_batch), halving when the queue is short: a short backlog goes in several smaller
    # groups at once, a lasting one (a burst) in groups of commit_batch.
    commit_connections: int = 4
    commit_batch: int = 256
    commit_batch_min: int = 64
    snapshot_interval: float = duration("5m")
    # Replaced by [webhooks] allow (which governs every outbound HTTP call): setting it is an
    # error that says so.
    webhook_allow: tuple[str, ...] | None = None
    recommendations: int = 4
    # Links from event data (event.url, product images...) appear in messages only if their host
    # is one of these domains or a subdomain; others fall back to the template's default.
    link_domains: tuple[str, ...] = ()
    # POST /v1/workflows/{name}/simulate runs in worker processes (never on the serving loop):
    # this many at once, this many more waiting (then 503), over at most this much history
    # (then 422 asking for contact_ids or since).
    simulation_workers: int = 1
    simulation_queue: int = 2
    simulation_max_events: int = 100_000
    simulation_max_contacts: int = 10_000

    def __post_init__(self) -> None:
        if self.webhook_allow is not None:
            raise ValueError("webhook_allow is replaced by [webhooks] allow (\"host\" or "
                             "\"host:port\" entries, for every outbound HTTP call): move the "
                             "entries there")
        if not 1 <= self.simulation_workers <= 4:
            raise ValueError("simulation_workers must be between 1 and 4")
        if not 0 <= self.simulation_queue <= 100:
            raise ValueError("simulation_queue must be between 0 and 100")
        if not 1 <= self.simulation_max_events <= 1_000_000:
            raise ValueError("simulation_max_events must be between 1 and 1000000")
        if not 1 <= self.simulation_max_contacts <= 100_000:
            raise ValueError("simulation_max_contacts must be between 1 and 100000")
        normalize_domains(self.link_domains)  # a bad entry fails at start, naming the key
        if self.frequency_cap < 1:
            raise ValueError("frequency_cap must be at least 1")
        if not 1 <= self.concurrency <= 1024:
            raise ValueError("concurrency must be between 1 and 1024")
        if not 1 <= self.commit_connections <= 16:
            raise ValueError("commit_connections must be between 1 and 16")
        if not 1 <= self.commit_batch <= 1000:
            raise ValueError("commit_batch must be between 1 and 1000")
        if not 1 <= self.commit_batch_min <= 1000:
            raise ValueError("commit_batch_min must be between 1 and 1000")
        if not 1 <= self.read_batch <= 100_000:
            raise ValueError("read_batch must be between 1 and 100000")
