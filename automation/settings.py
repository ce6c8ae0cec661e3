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
    concurrency: int = 8
    snapshot_interval: float = duration("5m")
    # Webhook steps may only call public addresses unless listed here ("host" or "host:port").
    webhook_allow: tuple[str, ...] = ()
    recommendations: int = 4
    # Links from event data (event.url, product images...) appear in messages only if their host
    # is one of these domains or a subdomain; others fall back to the template's default.
    link_domains: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        normalize_domains(self.link_domains)  # a bad entry fails at start, naming the key
        if self.frequency_cap < 1:
            raise ValueError("frequency_cap must be at least 1")
        if not 1 <= self.concurrency <= 64:
            raise ValueError("concurrency must be between 1 and 64")
        if not 1 <= self.read_batch <= 100_000:
            raise ValueError("read_batch must be between 1 and 100000")
