"""Per-workflow conversion goals: a workflow's ``goal:`` replaces ``[stats]``'s for its funnel
(``goal: false`` turns attribution off for it); a goal event is judged by the goal of the
workflow the contact last clicked in. The loader's checks, the pure tally, and the follower
over real Postgres."""

from __future__ import annotations

import dataclasses
import textwrap
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from automation.content.templates import TemplateSet
from automation.errors import DefinitionError
from automation.loading.catalog import Catalog
from automation.loading.loader import parse_workflow
from automation.model import definitions as d
from automation.model.goals import NO_GOAL, Goal, Goals
from automation.stats.follower import StatsFollower
from automation.stats.settings import StatsSettings
from automation.stats.tally import Click, Fact, tally
from engine.database import Database
from engine.eventlog import LogEvent, append_events
from herald.roles import AutomationRole
from herald.settings import Settings

TEMPLATES = TemplateSet.from_sources({"a/subject.txt": "x", "a/body.txt": "x"})
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
DEFAULT = Goal("order_completed", "amount", timedelta(days=5))


def workflow(goal: str = "") -> d.Workflow:
    text = textwrap.dedent("""\
        trigger: {event: signed_up}
        steps:
          - {id: one, send: a}
        """) + goal
    return parse_workflow(text, "t.yaml", TEMPLATES, "t")


def test_a_workflow_without_goal_follows_stats() -> None:
    assert workflow().goal is None


def test_a_workflow_names_its_own_goal_with_defaults() -> None:
    own = workflow("goal: {event: trial_started}\n").goal
    assert own == Goal("trial_started", "amount", timedelta(days=5))
    full = workflow("goal: {event: plan_bought, value: price, window: 12h}\n").goal
    assert full == Goal("plan_bought", "price", timedelta(hours=12))
    assert workflow("goal: false\n").goal is NO_GOAL


@pytest.mark.parametrize(("goal", "message"), [
    ("goal: {event: trial_started, window: 0s}\n", "goal.window"),
    ("goal: {event: trial_started, window: 401d}\n", "goal.window: at most 400d"),
    ("goal: {value: amount}\n", "goal: must be false, or a mapping with event"),
    ("goal: true\n", "goal: must be false"),
    ("goal: {event: x, colour: red}\n", "goal.colour: unknown key"),
])
def test_a_bad_goal_is_named(goal: str, message: str) -> None:
    with pytest.raises(DefinitionError, match=message):
        workflow(goal)


def facts(*rows: tuple[str, str, dict[str, Any], timedelta]) -> list[Fact]:
    return [Fact(kind, contact, properties, T0 + at) for kind, contact, properties, at in rows]


def clicked(workflow_name: str, message_id: str) -> dict[str, Any]:
    return {"message_id": message_id, "workflow": workflow_name, "step": "one",
            "machine": False}


def test_a_goal_event_is_judged_by_the_clicked_workflows_goal() -> None:
    goals = Goals(DEFAULT, {"trial": Goal("trial_started", "amount", timedelta(days=1)),
                            "quiet": NO_GOAL, "news": None})
    assert goals.events == {"order_completed", "trial_started"}
    hour = timedelta(hours=1)
    result = tally(facts(
        # trial: its own goal counts, the default's event does not, nor one past its 1d window
        ("email_clicked", "a", clicked("trial", "m1"), hour),
        ("order_completed", "a", {"amount": 40}, 2 * hour),
        ("trial_started", "a", {"amount": 7}, 3 * hour),
        ("trial_started", "a", {"amount": 9}, 30 * hour),
        # quiet: attribution off
        ("email_clicked", "b", clicked("quiet", "m2"), hour),
        ("order_completed", "b", {"amount": 40}, 2 * hour),
        # news: no goal of its own, so [stats]'s
        ("email_clicked", "c", clicked("news", "m3"), hour),
        ("order_completed", "c", {"amount": 12}, 2 * hour),
        ("trial_started", "c", {"amount": 5}, 3 * hour),
    ), [], goals, {})
    day = T0.date()
    converted = {(w, s): n for (w, s, _), row in result.counts.items()
                 if (n := row.get("converted"))}
    assert converted == {("trial", "one"): 1, ("news", "one"): 1}
    assert result.counts[("trial", "one", day)]["revenue"] == 7
    assert result.counts[("news", "one", day)]["revenue"] == 12


def test_a_click_stored_before_the_batch_is_judged_by_its_workflows_goal() -> None:
    goals = Goals(None, {"trial": Goal("trial_started", "amount", timedelta(days=1))})
    known = {"a": Click("m1", "trial", "one", T0)}
    result = tally(facts(("trial_started", "a", {"amount": 3}, timedelta(hours=2))),
                   [], goals, known)
    assert result.counts[("trial", "one", T0.date())]["converted"] == 1


async def test_the_follower_credits_each_workflows_own_goal(database: Database) -> None:
    async with database.transaction() as connection:
        await append_events(connection, [LogEvent(kind, contact, None, properties, T0 + at,
                                                  "test") for kind, contact, properties, at in (
            ("email_clicked", "a", clicked("trial", "m1"), timedelta(0)),
            ("order_completed", "a", {"amount": 40}, timedelta(minutes=1)),
            ("trial_started", "a", {"amount": 7}, timedelta(minutes=2)),
            ("email_clicked", "b", clicked("news", "m2"), timedelta(0)),
            ("order_completed", "b", {"amount": 12}, timedelta(minutes=1)),
        )])
    goals = Goals(StatsSettings().goal,
                  {"trial": Goal("trial_started", "amount", timedelta(days=1))})
    await StatsFollower(database, StatsSettings(), goals).settle(20)
    async with database.connection() as connection:
        rows = await connection.fetch(
            "SELECT workflow, step, converted, revenue FROM workflow_stats "
            "WHERE converted > 0 ORDER BY workflow")
    assert [(r["workflow"], r["step"], r["converted"], float(r["revenue"])) for r in rows] == [
        ("news", "one", 1, 12.0), ("trial", "one", 1, 7.0)]


async def test_the_automation_role_gives_the_follower_each_workflows_goal(
        database: Database) -> None:
    own = workflow("goal: {event: trial_started, window: 1d}\n")
    off = dataclasses.replace(workflow("goal: false\n"), name="quiet")
    settings = Settings(stats=StatsSettings(goal_event="purchase"))
    role = AutomationRole(settings, database, Catalog([own, off], TEMPLATES))
    goals = role.stats.goals
    assert goals.for_workflow("t") == Goal("trial_started", "amount", timedelta(days=1))
    assert goals.for_workflow("quiet") is None
    assert goals.for_workflow("other") == settings.stats.goal
    assert goals.events == {"trial_started", "purchase"}
