"""What a batch of facts adds to the funnel counters (pure).

Facts come from two logs: the event log (the MTA's ``email_*`` outcomes, the tracker's
``email_opened`` / ``email_clicked``, the goal events) and the decision log
(``entered`` and ``sent`` rows of ``workflow_log``). Counters are keyed by workflow, step and
the fact's UTC day; ``""`` is the workflow itself (``entered``).

Facts counted at most once per message (unique human opens and clicks, bounces, complaints,
unsubscribes) are returned as *candidates*: the store keeps the ones its dedupe table has not
seen and only then counts them. Machine opens and clicks (``machine: true``) count nowhere.

Attribution is last touch: a goal event of a contact within ``window`` after that contact's
last human click is credited to the clicked message's workflow and step (``converted`` +1,
``revenue`` + the goal value), when it is that workflow's goal (its own, or ``[stats]``'s).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from automation.model.goals import Goal, Goals

WORKFLOW_ROW = ""  # the step key of a workflow's own row (entered)
FIELDS = ("entered", "sent", "delivered", "bounced", "opened", "clicked", "unsubscribed",
          "complained", "converted", "revenue")

OPENED, CLICKED = "email_opened", "email_clicked"
# event type -> (counter, dedupe kind or None: counted every time)
OUTCOMES: dict[str, tuple[str, str | None]] = {
    "email_delivered": ("delivered", None),
    "email_bounced": ("bounced", "b"),
    "email_unsubscribed": ("unsubscribed", "u"),
    "email_complained": ("complained", "x"),
    OPENED: ("opened", "o"),
    CLICKED: ("clicked", "c"),
}

Key = tuple[str, str, date]  # workflow, step, day


@dataclass(frozen=True, slots=True)
class Fact:
    """One event-log row, as much of it as the tally reads."""

    type: str
    contact_id: str
    properties: dict[str, Any]
    occurred_at: datetime


@dataclass(frozen=True, slots=True)
class Decision:
    """One ``entered`` or ``sent`` row of the decision log."""

    workflow: str
    step: str | None
    action: str
    at: datetime


@dataclass(frozen=True, slots=True)
class Click:
    message_id: str
    workflow: str | None
    step: str | None
    clicked_at: datetime


@dataclass(frozen=True, slots=True)
class Candidate:
    """A once-per-message fact: counted only if ``(message_id, kind)`` was never seen."""

    message_id: str
    kind: str
    key: Key
    counter: str


@dataclass
class Tally:
    counts: dict[Key, dict[str, int | Decimal]] = field(
        default_factory=lambda: defaultdict(dict))
    candidates: list[Candidate] = field(default_factory=list)
    last_clicks: dict[str, Click] = field(default_factory=dict)  # changed in this batch

    def add(self, key: Key, counter: str, amount: int | Decimal = 1) -> None:
        row = self.counts[key]
        row[counter] = row.get(counter, 0) + amount


def day_of(moment: datetime) -> date:
    return moment.astimezone(UTC).date()


def goal_value(properties: dict[str, Any], name: str) -> Decimal:
    """The goal's value: a number, or a string holding one; anything else counts 0."""
    value = properties.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return Decimal(0)
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        return Decimal(0)
    return amount if amount.is_finite() else Decimal(0)


def _text(properties: dict[str, Any], name: str) -> str | None:
    value = properties.get(name)
    return value if isinstance(value, str) and value else None


def tally(facts: list[Fact], decisions: list[Decision], goals: Goals,
          known_clicks: dict[str, Click]) -> Tally:
    """Fold one batch (each list in log order). ``known_clicks``: the stored last click of
    every contact in ``facts`` that has one. A goal event is judged by the goal of the
    workflow its contact last clicked in (:class:`automation.model.goals.Goals`)."""
    result = Tally()
    for decision in decisions:
        if decision.action == "entered":
            result.add((decision.workflow, WORKFLOW_ROW, day_of(decision.at)), "entered")
        elif decision.action == "sent" and decision.step:
            result.add((decision.workflow, decision.step, day_of(decision.at)), "sent")
    seen: set[tuple[str, str]] = set()
    clicks = dict(known_clicks)
    for fact in facts:
        properties = fact.properties if isinstance(fact.properties, dict) else {}
        if fact.type in goals.events:
            _convert(result, fact, properties, goals, clicks.get(fact.contact_id))
            continue
        outcome = OUTCOMES.get(fact.type)
        if outcome is None:
            continue
        machine = properties.get("machine") is True
        if fact.type in (OPENED, CLICKED) and machine:
            continue
        message_id = _text(properties, "message_id")
        workflow, step = _text(properties, "workflow"), _text(properties, "step")
        if fact.type == CLICKED and message_id:
            click = Click(message_id, workflow, step, fact.occurred_at)
            previous = clicks.get(fact.contact_id)
            if previous is None or previous.clicked_at <= click.clicked_at:
                clicks[fact.contact_id] = result.last_clicks[fact.contact_id] = click
        if workflow is None or step is None:
            continue  # not a workflow's message (API mail): no funnel to count it in
        counter, kind = outcome
        key = (workflow, step, day_of(fact.occurred_at))
        if kind is None:
            result.add(key, counter)
        elif message_id and (message_id, kind) not in seen:
            seen.add((message_id, kind))
            result.candidates.append(Candidate(message_id, kind, key, counter))
    return result


def _convert(result: Tally, fact: Fact, properties: dict[str, Any], goals: Goals,
             click: Click | None) -> None:
    if click is None or click.workflow is None or click.step is None:
        return
    goal: Goal | None = goals.for_workflow(click.workflow)
    if goal is None or fact.type != goal.event:
        return
    elapsed = fact.occurred_at - click.clicked_at
    if timedelta(0) <= elapsed <= goal.window:
        key = (click.workflow, click.step, day_of(fact.occurred_at))
        result.add(key, "converted")
        result.add(key, "revenue", goal_value(properties, goal.value_property))
