"""Machine opens and clicks (``machine: true``: privacy proxies, link scanners) in automation:
ignored by engagement triggers, event conditions, waits and branches unless the workflow says
``include_machine: true``."""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from automation.content.recommend import engagement
from automation.content.templates import TemplateSet
from automation.errors import DefinitionError
from automation.index.trigger_index import IndexEvent, TriggerIndex
from automation.loading.loader import parse_workflow
from automation.model.definitions import Workflow
from automation.runtime import program as p

TEMPLATES = TemplateSet.from_sources({f"hello/{part}": "x" for part in ("subject.txt",
                                                                       "body.txt")})
T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
SENT = {"workflow": "welcome", "step": "welcome-1", "run_id": 7}
HUMAN = {**SENT, "machine": False, "url": "https://shop.test/a", "link": 0}
MACHINE = {**SENT, "machine": True, "machine_reason": "scanner:proofpoint",
           "url": "https://shop.test/a", "link": 0}


def workflow(trigger: str, name: str) -> Workflow:
    text = (f"name: {name}\ntrigger:\n" + textwrap.indent(textwrap.dedent(trigger), "  ")
            + "steps:\n  - id: hello\n    send: hello\n")
    return parse_workflow(text, f"{name}.yaml", TEMPLATES)


def ev(kind: str, hours: float, properties: dict[str, Any]) -> IndexEvent:
    return IndexEvent("c1", kind, properties, T0 + timedelta(hours=hours), None)


def fired(index: TriggerIndex, *events: IndexEvent) -> list[str]:
    fires = []
    for event in events:
        fires += index.fire_due(event.occurred_at)
        fires += index.observe(event)
    fires += index.fire_due(T0 + timedelta(days=9))
    return [fire.workflow for fire in fires]


ENGAGEMENT = "type: email_engagement\naction: {action}\nworkflow: welcome\nstep: welcome-1\n"


@pytest.mark.parametrize(("trigger", "human", "machine"), [
    (ENGAGEMENT.format(action="clicked"), 1, 0),
    (ENGAGEMENT.format(action="clicked") + "include_machine: true\n", 1, 1),
    (ENGAGEMENT.format(action="clicked") + "within: 2d\n", 1, 0),
    ("event: email_clicked\n", 1, 0),
    ("event: email_clicked\ninclude_machine: true\n", 1, 1),
    ("event: [email_clicked, signed_up]\nwhere: {link: 0}\n", 1, 0),
])
def test_triggers_ignore_machine_clicks_unless_asked(trigger: str, human: int,
                                                     machine: int) -> None:
    index = TriggerIndex([workflow(trigger, "on-click")])
    assert len(fired(index, ev("email_delivered", 0, SENT), ev("email_clicked", 1, HUMAN))) \
        == human
    index = TriggerIndex([workflow(trigger, "on-click")])
    assert len(fired(index, ev("email_delivered", 0, SENT), ev("email_clicked", 1, MACHINE))) \
        == machine


@pytest.mark.parametrize(("extra", "machine_open_counts"), [("", False),
                                                            ("include_machine: true\n", True)])
def test_a_proxy_open_does_not_cancel_not_opened_unless_asked(
        extra: str, machine_open_counts: bool) -> None:
    trigger = ENGAGEMENT.format(action="not_opened") + "within: 2d\n" + extra
    index = TriggerIndex([workflow(trigger, "quiet")])
    proxy_open = {**SENT, "machine": True, "machine_reason": "proxy:apple_privacy_proxy"}
    result = fired(index, ev("email_delivered", 0, SENT), ev("email_opened", 0.01, proxy_open))
    assert result == ([] if machine_open_counts else ["quiet"])
    index = TriggerIndex([workflow(trigger, "quiet")])
    assert fired(index, ev("email_delivered", 0, SENT), ev("email_opened", 5, HUMAN)) == []


def test_triggers_differing_only_in_include_machine_do_not_share_state() -> None:
    both = [workflow(ENGAGEMENT.format(action="opened"), "people"),
            workflow(ENGAGEMENT.format(action="opened") + "include_machine: true\n", "all")]
    index = TriggerIndex(both)
    assert fired(index, ev("email_opened", 1, MACHINE)) == ["all"]
    assert sorted(fired(TriggerIndex(both), ev("email_opened", 1, HUMAN))) == ["all", "people"]


def test_wait_for_and_exit_conditions_ignore_machine_clicks() -> None:
    text = """\
        name: w
        exit_when: [{event: email_clicked, where: {step: s2}}]
        trigger: {event: signed_up}
        steps:
          - {id: s1, send: hello}
          - id: click
            wait_for: {event: email_clicked, timeout: 1d, on_event: [{id: s2, send: hello}]}
          - id: any-click
            wait_for: {event: email_clicked, include_machine: true, timeout: 1d}
        """
    flow = parse_workflow(textwrap.dedent(text), "w.yaml", TEMPLATES)
    waits = [step for step in flow.steps if step.id in ("click", "any-click")]
    conditions = [step.condition for step in waits]  # type: ignore[union-attr]
    assert [c.matches("email_clicked", MACHINE) for c in conditions] == [False, True]
    assert [c.matches("email_clicked", HUMAN) for c in conditions] == [True, True]
    [exit_condition] = flow.exit_when
    assert not exit_condition.matches("email_clicked", {**MACHINE, "step": "s2"})
    assert exit_condition.matches("email_clicked", {**HUMAN, "step": "s2"})


def test_branches_count_machine_engagement_only_when_asked() -> None:
    text = """\
        name: b
        trigger: {event: signed_up}
        steps:
          - {id: s1, send: hello}
          - id: pick
            branch:
              cases:
                - when: {clicked: s1}
                  then: [{id: people, send: hello}]
                - when: {clicked: {steps: [s1], include_machine: true}}
                  then: [{id: anyone, send: hello}]
              else: [{id: nobody, send: hello}]
        """
    program = p.compile_program(parse_workflow(textwrap.dedent(text), "b.yaml", TEMPLATES))
    branch = program[program.pc_of("pick")]
    assert isinstance(branch, p.Branch)
    events = [("email_clicked", MACHINE)]
    opened, clicked = engagement(events, "welcome", 7)
    all_opened, all_clicked = engagement(events, "welcome", 7, include_machine=True)
    assert (opened, clicked, all_opened, all_clicked) == (set(), set(), {"welcome-1"},
                                                          {"welcome-1"})
    people, anyone, nobody = (program.pc_of(s) for s in ("people", "anyone", "nobody"))
    assert branch.choose({"clicked": ["s1"], "clicked_with_machine": ["s1"]}) == people
    assert branch.choose({"clicked": [], "clicked_with_machine": ["s1"]}) == anyone
    assert branch.choose({"clicked": [], "clicked_with_machine": []}) == nobody


@pytest.mark.parametrize("when", ["{clicked: {steps: s1, bogus: 1}}",
                                  "{clicked: {include_machine: true}}",
                                  "{clicked: {steps: s1, include_machine: 1}}"])
def test_bad_engagement_references_are_named(when: str) -> None:
    text = f"""\
        name: b
        trigger: {{event: signed_up}}
        steps:
          - {{id: s1, send: hello}}
          - branch: {{cases: [{{when: {when}, then: []}}]}}
        """
    with pytest.raises(DefinitionError, match=r"steps\[1\]\.branch\.cases\[0\]\.when\.clicked"):
        parse_workflow(textwrap.dedent(text), "b.yaml", TEMPLATES)


def test_include_machine_must_be_a_boolean() -> None:
    with pytest.raises(DefinitionError, match="include_machine"):
        workflow("event: email_clicked\ninclude_machine: yes please\n", "x")
