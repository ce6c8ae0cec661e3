"""The ``[stats]`` section: the conversion goal, its attribution window, the follower."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from automation.model.goals import Goal
from engine.settings_loader import duration

AB_METRICS = ("clicks", "conversions")


@dataclass(frozen=True, slots=True)
class StatsSettings:
    # A goal event of a contact within attribution_window after their last human click is
    # credited to the clicked message's workflow and step (last touch); goal_value names the
    # property holding its value (revenue). An empty goal_event turns attribution off.
    goal_event: str = "order_completed"
    goal_value: str = "amount"
    attribution_window: float = duration("5d")
    # A/B splits: each arm against the first on this rate per message sent.
    ab_metric: str = "clicks"
    # The follower (in the automation role): rows per batch; how often it looks when idle.
    read_batch: int = 10_000
    poll_interval: float = duration("1s")

    def __post_init__(self) -> None:
        if self.ab_metric not in AB_METRICS:
            raise ValueError(f"ab_metric must be one of {', '.join(AB_METRICS)}")
        if not 1 <= self.read_batch <= 100_000:
            raise ValueError("read_batch must be between 1 and 100000")
        if not 0 < self.attribution_window <= 400 * 86400:
            raise ValueError("attribution_window must be more than 0 and at most 400d")
        if not 0.05 <= self.poll_interval <= 60:
            raise ValueError("poll_interval must be between 50ms and 60s")
        if len(self.goal_event) > 128:
            raise ValueError("goal_event: at most 128 characters")

    @property
    def goal(self) -> Goal | None:
        if not self.goal_event:
            return None
        return Goal(self.goal_event, self.goal_value, timedelta(seconds=self.attribution_window))
