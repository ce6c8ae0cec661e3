"""A workflow run's state, as stored in Postgres (or in memory when simulating)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

ACTIVE_STATES = frozenset({"running", "waiting", "waiting_event"})
FINAL_STATES = frozenset({"completed", "exited"})


@dataclass(slots=True)
class Run:
    id: int
    workflow: str
    version: str
    contact_id: str
    reentry_key: str
    entry_key: str
    state: str
    pc: int
    entered_at: datetime
    trigger_type: str
    trigger_properties: dict[str, Any]
    wake_at: datetime | None = None
    waiting_since: datetime | None = None
    sent_steps: list[str] = field(default_factory=list)
    exit_reason: str | None = None

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES


@dataclass(frozen=True, slots=True)
class EventResume:
    """Resume a run waiting for an event (wait_for) with the event that matched."""

    type: str
    properties: dict[str, Any]


@dataclass(frozen=True, slots=True)
class TimerResume:
    """Resume a run whose wake-up time has come (a wait, a wait_for timeout, quiet hours)."""


Resume = EventResume | TimerResume | None
