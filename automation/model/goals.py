"""Conversion goals: what counts as a conversion for a workflow's funnel (pure).

A goal is an event type, the property holding its value (revenue) and an attribution window.
``[stats]`` sets the default for every workflow; a workflow's ``goal:`` key replaces it for that
workflow (``goal: false`` turns attribution off for it). The stats follower credits a goal event
to the workflow and step of the contact's last human click within the window, judged by that
workflow's own goal.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import timedelta

MAX_EVENT = 128


@dataclass(frozen=True, slots=True)
class Goal:
    """An event type, the property holding its value, a window."""

    event: str
    value_property: str
    window: timedelta


@dataclass(frozen=True, slots=True)
class NoGoal:
    """A workflow's ``goal: false``: nothing is credited to it."""


NO_GOAL = NoGoal()
# What a workflow says: None (follow [stats]), NO_GOAL, or its own Goal.
GoalChoice = Goal | NoGoal | None


class Goals:
    """The goal of each workflow: its own, or the default."""

    __slots__ = ("default", "events", "own")

    def __init__(self, default: Goal | None,
                 choices: Mapping[str, GoalChoice] | None = None) -> None:
        self.default = default
        self.own: dict[str, Goal | None] = {
            name: (None if isinstance(choice, NoGoal) else choice)
            for name, choice in (choices or {}).items() if choice is not None}
        goals: Iterable[Goal | None] = (default, *self.own.values())
        self.events = frozenset(goal.event for goal in goals if goal is not None)

    def for_workflow(self, workflow: str) -> Goal | None:
        return self.own[workflow] if workflow in self.own else self.default
