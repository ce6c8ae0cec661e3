"""What the Postgres run store works with: the transitions it is asked for (start, advance,
exit) and how they are grouped, a run's decision-log rows while its group is written, and the
buffer that writes decision-log rows (and the outcome webhooks they imply) in one statement."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg

from automation.index.trigger_index import Fire
from automation.runtime.runs import Resume, Run
from automation.stores.workflow_events import INSERT_LOG_AND_EVENTS
from mta.queue.enqueue import Enqueued, OutboundMessage


@dataclass(frozen=True, slots=True)
class StartRun:
    fire: Fire
    now: datetime


@dataclass(frozen=True, slots=True)
class AdvanceRun:
    run_id: int
    resume: Resume
    now: datetime


@dataclass(frozen=True, slots=True)
class ExitRun:
    run_id: int
    reason: str
    now: datetime


Transition = StartRun | AdvanceRun | ExitRun


def transition_key(item: Transition) -> tuple[str, str | int]:
    """Transitions with equal keys never share a group (the core already keeps each
    contact's transitions one after another: each waits for the previous one's commit)."""
    if isinstance(item, StartRun):
        return ("contact", item.fire.contact_id)
    return ("run", item.run_id)


@dataclass(slots=True)
class PendingSend:
    """A send step's message, queued with the group's; its log row once that is done."""

    step_id: str
    template: str
    message: OutboundMessage
    result: Enqueued | None = None


@dataclass(slots=True)
class RunOutcome:
    """One run's decision-log rows in order; sends wait for the group's enqueue."""

    run: Run
    now: datetime
    rows: list[tuple[Any, ...] | PendingSend] = field(default_factory=list)

    def add(self, step: str | None, action: str, detail: str) -> None:
        self.rows.append(log_row(self.now, self.run.workflow, self.run.contact_id, self.run.id,
                                 step, action, detail))

    def sent_row(self, send: PendingSend) -> tuple[Any, ...]:
        queued = send.result
        assert queued is not None
        if queued.suppressed:
            action, detail = "skipped", f"suppressed: {queued.suppressed} (message {queued.id})"
        else:
            action, detail = "sent", f"{send.template} -> message {queued.id}"
        return log_row(self.now, self.run.workflow, self.run.contact_id, self.run.id,
                       send.step_id, action, detail)


def log_row(at: datetime, workflow: str, contact_id: str, run_id: int | None,
            step: str | None, action: str, detail: str) -> tuple[Any, ...]:
    """One row of the JSON array :data:`INSERT_LOG_AND_EVENTS` reads; ``at`` as orjson writes a
    datetime (RFC 3339, the text ``isoformat()`` gives, without a Python call per row)."""
    return (at, workflow, contact_id, run_id, step, action, detail[:1000])


class LogBuffer:
    """Decision-log rows gathered during one transaction and written with one statement."""

    def __init__(self) -> None:
        self.rows: list[tuple[Any, ...]] = []

    def add(self, at: datetime, workflow: str, contact_id: str, run_id: int | None,
            step: str | None, action: str, detail: str) -> None:
        self.rows.append(log_row(at, workflow, contact_id, run_id, step, action, detail))

    async def flush(self, connection: asyncpg.Connection) -> None:
        if self.rows:
            # also queues the outcome webhooks of workflow events (entered, exit, completed)
            await connection.execute(INSERT_LOG_AND_EVENTS, self.rows)
            self.rows = []
