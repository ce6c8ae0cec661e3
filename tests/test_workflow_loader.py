"""Workflow files: strict YAML, the published schema, semantic checks, versions, the examples."""

from __future__ import annotations

import json
import textwrap
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from automation.content.templates import TemplateSet
from automation.errors import DefinitionError
from automation.loading.loader import (
    load_workflows,
    parse_workflow,
    parse_yaml,
    schema_problems,
    workflow_schema,
)
from automation.model import definitions as d
from automation.model.durations import next_in_window, parse_window, zone

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ["abandoned-cart", "browse-abandonment", "double-opt-in", "loyalty-milestone",
            "post-purchase", "welcome", "win-back"]


@pytest.fixture(scope="module")
def shipped_templates() -> TemplateSet:
    return TemplateSet.load(ROOT / "config" / "templates")


@pytest.fixture(scope="module")
def examples(shipped_templates: TemplateSet) -> dict[str, d.Workflow]:
    workflows = load_workflows(ROOT / "config" / "workflows", shipped_templates)
    return {workflow.name: workflow for workflow in workflows}


TEMPLATES = TemplateSet.from_sources({
    f"{name}/{part}": "x" for name in ("hello", "bye") for part in ("subject.txt", "body.txt")})


def parse(text: str, source: str = "config/workflows/test.yaml") -> d.Workflow:
    return parse_workflow(textwrap.dedent(text), source, TEMPLATES, default_name="test")


def problems(text: str) -> list[str]:
    with pytest.raises(DefinitionError) as caught:
        parse(text)
    return list(caught.value.problems)


# --- the shipped examples -------------------------------------------------------------------


def test_all_examples_load_highest_priority_first(shipped_templates: TemplateSet) -> None:
    workflows = load_workflows(ROOT / "config" / "workflows", shipped_templates)
    assert sorted(w.name for w in workflows) == EXAMPLES
    assert [w.priority for w in workflows] == sorted((w.priority for w in workflows), reverse=True)
    validator = jsonschema.Draft202012Validator(workflow_schema())
    for path in (ROOT / "config" / "workflows").glob("*.yaml"):
        validator.validate(yaml.safe_load(path.read_text()))  # editors' view: plain YAML


def test_welcome(examples: dict[str, d.Workflow]) -> None:
    welcome = examples["welcome"]
    assert isinstance(welcome.trigger, d.EventTrigger)
    assert welcome.trigger.condition.types == {"signed_up"}
    assert welcome.reentry.policy == "once"
    waits = [s for s in welcome.steps if isinstance(s, d.WaitStep)]
    assert [(w.delay_seconds / 86400, w.from_entry) for w in waits] == [
        (1, True), (3, True), (4, True)]
    branch = welcome.step("clicked-any")
    assert isinstance(branch, d.BranchStep)
    clicked = {"clicked": ["welcome-2"], "opened": []}
    assert branch.cases[0].condition(clicked)
    assert not branch.cases[0].condition({"clicked": [], "opened": ["welcome-1"]})
    assert welcome.step("tag-engaged") == d.UpdateContactStep("tag-engaged", add_tags=("engaged",))
    assert welcome.templates() == {"welcome-1", "welcome-2", "welcome-3", "welcome-offer"}


def test_abandoned_cart(examples: dict[str, d.Workflow]) -> None:
    cart = examples["abandoned-cart"]
    trigger = cart.trigger
    assert isinstance(trigger, d.AbsenceTrigger)
    assert trigger.condition.types == {"cart_updated"} and trigger.within_seconds == 1800
    assert trigger.key_of({"cart_id": "k1"}) == ("s", "k1")
    assert trigger.key_of({}) is None  # cannot correlate: ignored
    assert trigger.missing.matches("order_completed", {"cart_id": "k1"}, {"cart_id": "k1"})
    assert not trigger.missing.matches("order_completed", {"cart_id": "k2"}, {"cart_id": "k1"})
    assert cart.exits_on("order_completed", {"cart_id": "k1"}, {"cart_id": "k1"})
    assert not cart.exits_on("order_completed", {"cart_id": "k2"}, {"cart_id": "k1"})
    assert cart.reentry == d.Reentry("always", None, cart.reentry.key)
    assert cart.reentry.key_of({"cart_id": "k1"}) == ("s", "k1")
    wait = cart.steps[1]
    assert isinstance(wait, d.WaitStep) and wait.delay_seconds == 86400 and not wait.from_entry


def test_browse_abandonment(examples: dict[str, d.Workflow]) -> None:
    browse = examples["browse-abandonment"]
    trigger = browse.trigger
    assert isinstance(trigger, d.CountTrigger)
    assert (trigger.at_least, trigger.within_seconds) == (3, 86400)
    assert trigger.group_key({"sku": "S1"}) == ("s", "S1")
    assert trigger.group_key({}) is None
    assert trigger.condition.matches("product_viewed", {"sku": "S1"})
    assert not trigger.condition.matches("product_viewed", {"name": "no sku"})
    assert trigger.unless is not None
    viewed = {"sku": "S1"}
    assert trigger.unless.matches("cart_updated", {"items": [{"sku": "S0"}, {"sku": "S1"}]},
                                  viewed)
    assert not trigger.unless.matches("cart_updated", {"items": [{"sku": "S2"}]}, viewed)
    assert browse.reentry.policy == "once_per" and browse.reentry.period_seconds == 7 * 86400
    assert browse.reentry.key_of({"sku": "S1"}) == ("s", "S1")


def test_post_purchase_win_back_loyalty(examples: dict[str, d.Workflow]) -> None:
    post = examples["post-purchase"]
    assert post.steps[0] == d.SendStep("order-thanks", "order-thanks", True)
    assert post.reentry.key_of({"order_id": 17}) == ("n", 17)

    win_back = examples["win-back"]
    activity = {"page_viewed", "email_opened", "email_clicked", "order_completed"}
    assert isinstance(win_back.trigger, d.InactivityTrigger)
    assert win_back.trigger.types == activity
    assert win_back.trigger.period_seconds == 60 * 86400
    assert all(win_back.exits_on(kind, {}, {}) for kind in activity)
    mark = win_back.step("mark-inactive")
    assert isinstance(mark, d.UpdateContactStep)
    assert mark.apply({"status": "active", "x": 1}) == {"status": "inactive", "x": 1}
    assert isinstance(win_back.steps[-1], d.ExitStep)

    loyalty = examples["loyalty-milestone"]
    trigger = loyalty.trigger
    assert isinstance(trigger, d.MilestoneTrigger) and trigger.threshold == 500
    assert trigger.increment({"amount": 120.5}) == 120.5
    assert trigger.increment({"amount": "120"}) == 0  # not a number: adds nothing
    assert trigger.crossed(450, 500) and not trigger.crossed(500, 600)
    assert loyalty.reentry.policy == "once"


# --- every trigger type ---------------------------------------------------------------------


def trigger_of(body: str) -> d.Trigger:
    return parse("trigger:\n" + textwrap.indent(textwrap.dedent(body), "  ")
                 + "steps:\n  - send: hello\n").trigger


def test_trigger_types() -> None:
    event = trigger_of("event: signed_up\nwhere: {plan: pro}\n")  # type defaults to event
    assert isinstance(event, d.EventTrigger)
    assert event.condition.matches("signed_up", {"plan": "pro"})
    assert not event.condition.matches("signed_up", {"plan": "free"})

    engaged = trigger_of("type: email_engagement\naction: clicked\nworkflow: welcome\n"
                         "step: welcome-1\nlink: 'https://shop.example.com/sale/*'\n")
    assert isinstance(engaged, d.EngagementTrigger) and engaged.event_type == "email_clicked"
    props = {"workflow": "welcome", "step": "welcome-1", "url": "https://shop.example.com/sale/x"}
    assert engaged.matches("email_clicked", props)
    assert not engaged.matches("email_clicked", {**props, "url": "https://shop.example.com/"})
    assert not engaged.matches("email_opened", props)

    change = trigger_of("type: attribute_change\nattribute: plan\nfrom: {exists: false}\n"
                        "to: {in: [pro, team]}\n")
    assert isinstance(change, d.AttributeChangeTrigger)
    update = {"changed": ["plan"], "previous": {"plan": None}, "attributes": {"plan": "pro"}}
    assert change.matches(update)
    assert not change.matches({**update, "previous": {"plan": "free"}})
    assert not change.matches({**update, "changed": ["email"]})

    segment = trigger_of("""\
        type: segment_entry
        segment:
          name: big-spenders
          aggregates:
            spend_90d: {event: order_completed, measure: sum, property: amount, within: 90d}
            orders: {event: order_completed, measure: count}
            quiet_days: {event: page_viewed, measure: days_since}
          condition:
            all:
              - aggregates.spend_90d: {gte: 1000}
              - attributes.country: FR
        """)
    assert isinstance(segment, d.SegmentEntryTrigger)
    big = segment.segment
    assert [a.name for a in big.aggregates] == ["spend_90d", "orders", "quiet_days"]
    assert big.aggregates[0].contribution({"amount": 250}) == 250
    assert big.aggregates[1].contribution({"amount": 250}) == 1
    assert big.time_dependent
    assert big.contains({"country": "FR"}, {"spend_90d": 1200, "orders": 3})
    assert not big.contains({"country": "FR"}, {"spend_90d": 900})

    birthday = trigger_of("type: date\nattribute: birthday\noffset_days: -3\nat: '10:30'\n")
    assert birthday == d.DateTrigger("birthday", True, -3, time(10, 30))
    assert isinstance(birthday, d.DateTrigger)
    after = datetime(2026, 5, 1, tzinfo=UTC)
    assert birthday.next_fire("1990-05-10", "Europe/Paris", after) == datetime(
        2026, 5, 7, 8, 30, tzinfo=UTC)  # 10:30 CEST, three days before
    assert birthday.next_fire("1990-04-01", None, after) == datetime(
        2027, 3, 29, 10, 30, tzinfo=UTC)
    assert birthday.next_fire("not a date", None, after) is None
    once = trigger_of("type: date\nattribute: trial_ends\nanniversary: false\noffset_days: -1\n")
    assert isinstance(once, d.DateTrigger)
    assert once.next_fire("2026-06-10T00:00:00Z", None, after) == datetime(
        2026, 6, 9, 9, tzinfo=UTC)
    assert once.next_fire("2026-04-10", None, after) is None
    leap = d.DateTrigger("birthday", True, 0, time(9))
    assert leap.next_fire(date(2000, 2, 29), None, after) == datetime(2027, 2, 28, 9, tzinfo=UTC)

    count = trigger_of("type: milestone\nevent: order_completed\nreaches: 5\n")
    assert isinstance(count, d.MilestoneTrigger) and count.sum_of is None
    assert count.increment({"amount": 99}) == 1


def test_reentry_policies() -> None:
    now = datetime(2026, 1, 10, tzinfo=UTC)
    once, always = d.Reentry("once"), d.Reentry("always")
    weekly = d.Reentry("once_per", 7 * 86400.0)
    assert once.allows(active=False, last_started_at=None, now=now)
    assert not once.allows(active=False, last_started_at=now - timedelta(days=400), now=now)
    assert always.allows(active=False, last_started_at=now, now=now)
    assert not always.allows(active=True, last_started_at=None, now=now)
    assert not weekly.allows(active=False, last_started_at=now - timedelta(days=6), now=now)
    assert weekly.allows(active=False, last_started_at=now - timedelta(days=7), now=now)
    assert d.scalar_key(1) == d.scalar_key(1.0) != d.scalar_key("1") != d.scalar_key(True)
    assert d.scalar_key([1]) is None


def test_wait_step_forms_and_windows() -> None:
    workflow = parse("""\
        trigger: {event: signed_up}
        steps:
          - wait: 90m
          - wait: {after_entry: 3d}
          - id: office-hours
            wait: {duration: 1d, until_time: "09:00-17:00", days: [mon, tue, wed, thu, fri]}
          - wait: {until_time: "22:00-06:00"}
        """)
    plain, entry, office, night = workflow.steps
    assert isinstance(plain, d.WaitStep) and plain.delay_seconds == 5400
    assert isinstance(entry, d.WaitStep) and entry.from_entry
    assert plain.id == "steps[0]" and office.id == "office-hours"
    entered = datetime(2026, 3, 6, 8, tzinfo=UTC)  # a Friday
    now = entered + timedelta(days=1)
    assert entry.due_at(now, entered, None) == entered + timedelta(days=3)
    assert entry.due_at(entered + timedelta(days=5), entered, None) == entered + timedelta(days=5)
    assert isinstance(office, d.WaitStep)
    # Friday 08:00 UTC + 1 day = Saturday -> Monday 09:00 New York (EDT since 8 March, UTC-4)
    assert office.due_at(entered, entered, "America/New_York") == datetime(
        2026, 3, 9, 13, tzinfo=UTC)
    assert isinstance(night, d.WaitStep) and night.window is not None
    assert night.due_at(datetime(2026, 3, 6, 23, tzinfo=UTC), entered, None) == datetime(
        2026, 3, 6, 23, tzinfo=UTC)  # inside a window that wraps past midnight
    assert night.due_at(datetime(2026, 3, 7, 3, tzinfo=UTC), entered, None) == datetime(
        2026, 3, 7, 3, tzinfo=UTC)
    assert night.due_at(datetime(2026, 3, 7, 12, tzinfo=UTC), entered, None) == datetime(
        2026, 3, 7, 22, tzinfo=UTC)


def test_window_across_daylight_saving() -> None:
    window = parse_window("09:00-10:00", None, "w")
    paris = zone("Europe/Paris")
    # 29 March 2026: clocks go forward; 09:00 local is 07:00 UTC (it was 08:00 UTC the day before)
    assert next_in_window(datetime(2026, 3, 28, 12, tzinfo=UTC), window, paris) == datetime(
        2026, 3, 29, 7, tzinfo=UTC)
    assert zone("Not/AZone") is UTC and zone(None) is UTC


# --- versions -------------------------------------------------------------------------------

BASE = """\
name: demo
trigger: {event: signed_up, where: {plan: pro}}
reentry: once
steps:
  - send: hello
  - wait: 1d
  - send: bye
"""


def test_version_is_stable_across_formatting_and_key_order() -> None:
    reordered = """\
# a comment
steps:
  -   send:   hello
  - wait: "1d"
  - {send: bye}
reentry: once
trigger:
  where:
    plan: pro
  event: signed_up
name: demo
"""
    assert parse(BASE).version == parse(reordered).version
    assert len(parse(BASE).version) == 16


@pytest.mark.parametrize("change", [
    ("wait: 1d", "wait: 2d"),
    ("plan: pro", "plan: team"),
    ("reentry: once", "reentry: always"),
    ("send: bye", "send: hello"),
])
def test_version_changes_with_content(change: tuple[str, str]) -> None:
    assert parse(BASE).version != parse(BASE.replace(*change)).version


def test_name_defaults_to_the_file_name() -> None:
    assert parse("trigger: {event: a}\nsteps: [{send: hello}]\n").name == "test"
    with pytest.raises(DefinitionError, match="file name 'Bad Name' is not a valid name"):
        parse_workflow("trigger: {event: a}\nsteps: [{send: hello}]\n", "x.yaml", TEMPLATES,
                       default_name="Bad Name")


# --- errors ---------------------------------------------------------------------------------


def test_bad_duration_names_file_and_key() -> None:
    found = problems("""\
        trigger: {event: signed_up}
        steps:
          - send: hello
          - send: bye
          - wait: {duration: 1 dai}
        """)
    assert found == ["config/workflows/test.yaml: steps[2].wait.duration: '1 dai' is not a "
                     "duration (e.g. 30m, 4h, 1d)"]


@pytest.mark.parametrize(("text", "expected"), [
    ("trigger: {event: a}\nsteps: [{send: hello, wiat: 1d}]\n",
     "steps[0].wiat: unknown key (allowed: branch, exit, id, send, split, update_contact, "
     "wait, wait_for, webhook)"),
    ("trigger: {event: a}\nsteps: [{id: x}]\n",
     "steps[0]: a step needs exactly one action: send, wait, wait_for, branch, split, "
     "update_contact, webhook, exit"),
    ("trigger: {event: a}\nsteps: [{send: hello, wait: 1d}]\n",
     "steps[0]: a step needs exactly one action"),
    ("steps: [{send: hello}]\n", "(document): missing required key 'trigger'"),
    ("trigger: {type: absence, event: a, within: 30m}\nsteps: [{send: hello}]\n",
     "trigger: missing required key 'missing'"),
    ("trigger: {type: sometimes, event: a}\nsteps: [{send: hello}]\n", "trigger.type: 'sometimes'"
     " is not one of"),
    ("trigger: {event: a}\nsteps: [{send: nope}]\n", "steps[0].send: no template named 'nope'"),
    ("trigger: {event: a, where: {amount: {gtx: 5}}}\nsteps: [{send: hello}]\n",
     "trigger.where.amount.gtx: unknown operator 'gtx'"),
    ("trigger: {event: a}\nreentry: sometimes\nsteps: [{send: hello}]\n",
     "reentry: 'sometimes': reentry is once, always,"),
    ("trigger: {event: a}\nreentry: {once_per: 7 dayz}\nsteps: [{send: hello}]\n",
     "reentry.once_per: '7 dayz' is not a duration"),
    ("trigger: {type: count, event: a, at_least: 0, within: 1h}\nsteps: [{send: hello}]\n",
     "trigger.at_least: 0 is less than the minimum of 1"),
    ("trigger: {event: a}\nsteps:\n  - {id: one, send: hello}\n  - {id: one, send: bye}\n",
     "steps[1].id: duplicate step id 'one'"),
    ("trigger: {event: a}\nsteps: [{wait: {until_time: '9-17'}}]\n",
     "steps[0].wait.until_time: '9' is not a time of day like '09:00'"),
    ("trigger: {event: a}\nsteps: [{wait: {duration: 1d, after_entry: 2d}}]\n",
     "steps[0].wait: {'duration': '1d', 'after_entry': '2d'}: wait takes duration OR "
     "after_entry (not both)"),
    ("trigger: {event: a}\nsteps: [{wait: {duration: 1d, days: [mon]}}]\n",
     "and days only with until_time"),
    ("trigger: {event: a}\nsteps: [{webhook: {url: 'ftp://x'}}]\n",
     "steps[0].webhook.url: 'ftp://x' is not an http(s) URL"),
    ("trigger: {event: a}\nsteps: [{webhook: {url: 'https://x.example', headers: "
     "{X-A: \"a\\r\\nBcc: b\"}}}]\n",
     "steps[0].webhook.headers.X-A: header X-A contains a line break"),
    ("trigger: {event: a}\nsteps: [{webhook: {url: 'https://x.example', body: "
     "{a: '{{ x'}}}]\n", "steps[0].webhook.body.a: line 1:"),
    ("trigger: {event: a}\nexit_when: [{event: b, correlate: 'items.*.sku'}]\n"
     "steps: [{send: hello}]\n", "exit_when[0].correlate: 'items.*.sku': '*' is not allowed"),
    ("trigger: {type: segment_entry, segment: {name: s, condition: {aggregates.nope: 1}}}\n"
     "steps: [{send: hello}]\n", "trigger.segment.condition: 'aggregates.nope' is neither"),
    ("trigger: {type: email_engagement, action: not_opened, workflow: w, step: s}\n"
     "steps: [{send: hello}]\n", "trigger: missing required key 'within'"),
    ("trigger: {event: a}\nsteps:\n  - branch: {cases: [{when: {clicked: later}, then: []}]}\n"
     "  - {id: later, send: hello}\n", "steps[0].branch.cases[0].when.clicked: 'later' comes "
     "after this branch"),
    ("trigger: {event: a}\nsteps:\n  - {id: w, wait: 1d}\n"
     "  - branch: {cases: [{when: {opened: [w]}, then: []}]}\n",
     "steps[1].branch.cases[0].when.opened: 'w' is not a send step of this workflow"),
    ("trigger: {event: a}\nsteps: [{split: {variants: [{name: a, steps: []}, "
     "{name: a, steps: []}]}}]\n", "steps[0].split.variants: variant names must be unique"),
    ("trigger: {event: a}\npriority: high\nsteps: [{send: hello}]\n",
     "priority: 'high' is not of type 'integer'"),
])
def test_errors_name_the_key(text: str, expected: str) -> None:
    found = problems(text)
    assert any(expected in problem for problem in found), found
    assert all(problem.startswith("config/workflows/test.yaml:") for problem in found)


def test_every_problem_is_collected() -> None:
    found = problems("""\
        trigger: {event: a, where: {amount: {gtx: 5}}}
        steps:
          - send: nope
          - wait: {after_entry: 1d}
          - branch:
              cases:
                - when: {plan: pro}
                  then: [{send: missing-too}]
        """)
    assert len(found) == 3, found
    assert "trigger.where.amount.gtx" in found[0]
    assert "steps[0].send: no template named 'nope'" in found[1]
    assert "steps[2].branch.cases[0].then[0].send: no template named 'missing-too'" in found[2]
    # The shape is checked first (every schema problem), the meaning only once the shape is right.
    schema_found = problems("trigger: {event: a, bogus: 1}\nsteps: [{wait: 1 dai}, {send: 5}]\n")
    assert schema_found == [
        "config/workflows/test.yaml: steps[0].wait: '1 dai' is not a duration (e.g. 30m, 4h, 1d)",
        "config/workflows/test.yaml: steps[1].send: 5: send is a template name or "
        "{template: NAME, transactional: BOOL}",
        "config/workflows/test.yaml: trigger.bogus: unknown key "
        "(allowed: accept_browser_events, event, include_machine, type, where)"]


@pytest.mark.parametrize(("text", "expected"), [
    ("trigger: {event: a}\nsteps: [{send: hello}\n", "test.yaml:3:1: expected ',' or ']'"),
    ("trigger: {event: a}\ntrigger: {event: b}\nsteps: [{send: hello}]\n",
     "test.yaml:2:1: duplicate key 'trigger'"),
    ("base: &b {event: a}\ntrigger: *b\nsteps: [{send: hello}]\n",
     "test.yaml:2:10: aliases (*name) are not allowed"),
    ("trigger: {event: a}\nsteps: [{send: hello}]\n1: x\n", "(document): key 1 must be a string"),
])
def test_yaml_errors_name_file_and_line(text: str, expected: str) -> None:
    found = problems(text)
    assert len(found) == 1 and expected in found[0], found


def test_strict_yaml_scalars() -> None:
    document = parse_yaml("a: on\nb: no\nc: 2026-01-01\nd: true\ne: False\n", "x.yaml")
    assert document == {"a": "on", "b": "no", "c": "2026-01-01", "d": True, "e": False}


def test_workflow_yaml_follows_yaml_1_2() -> None:
    # YAML 1.1 reads 17:00 as the base-60 integer 1020 and 010 as octal 8; 1.2 does neither.
    document = parse_yaml("at: 17:00\nlong: 1:02:03\nzero: 010\noctal: 0o10\nyes: yes\n",
                          "x.yaml")
    assert document == {"at": "17:00", "long": "1:02:03", "zero": 10, "octal": 8, "yes": "yes"}
    with pytest.raises(DefinitionError, match=r"x.yaml:2:1: workflow files are YAML 1.2"):
        parse_yaml("%YAML 1.1\n---\nat: 17:00\n", "x.yaml")


def test_a_clock_time_without_quotes_is_a_clock_time() -> None:
    birthday = trigger_of("type: date\nattribute: birthday\nat: 17:00\n")
    assert birthday.at == time(17, 0)


def test_directory_collects_problems_across_files(tmp_path: Path) -> None:
    (tmp_path / "one.yaml").write_text("trigger: {event: a}\nsteps: [{wait: 1 dai}]\n")
    (tmp_path / "two.yml").write_text("name: one\ntrigger: {event: a}\nsteps: [{send: hello}]\n")
    (tmp_path / "three.yaml").write_text(
        "trigger: {type: email_engagement, action: opened, workflow: ghost, step: s}\n"
        "steps: [{send: hello}]\n")
    (tmp_path / "notes.txt").write_text("ignored")
    with pytest.raises(DefinitionError) as caught:
        load_workflows(tmp_path, TEMPLATES)
    found = caught.value.problems
    assert any(f"{tmp_path / 'one.yaml'}: steps[0].wait: '1 dai' is not a duration" in p
               for p in found), found
    assert any("three.yaml: trigger.workflow: no workflow named 'ghost'" in p for p in found)
    with pytest.raises(DefinitionError, match="workflows directory not found"):
        load_workflows(tmp_path / "nope", TEMPLATES)


def test_duplicate_names_and_engagement_references(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("name: same\ntrigger: {event: a}\nsteps: "
                                     "[{id: first, send: hello}]\n")
    (tmp_path / "b.yaml").write_text("name: same\ntrigger: {event: a}\nsteps: [{send: hello}]\n")
    (tmp_path / "c.yaml").write_text(
        "trigger: {type: email_engagement, action: opened, workflow: same, step: nope}\n"
        "steps: [{send: hello}]\n")
    with pytest.raises(DefinitionError) as caught:
        load_workflows(tmp_path, TEMPLATES)
    found = caught.value.problems
    assert any("b.yaml: name: 'same' is also the name of" in p for p in found), found
    assert any("c.yaml: trigger.step: 'same' has no send step 'nope'" in p for p in found)


# --- the schema itself ----------------------------------------------------------------------


def test_schema_is_draft_2020_12_and_shipped() -> None:
    schema = workflow_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)
    text = (ROOT / "automation" / "loading" / "workflow_schema.json").read_text()
    assert json.loads(text) == schema


@pytest.mark.parametrize(("document", "valid"), [
    ({"trigger": {"event": "a"}, "steps": [{"send": "t"}]}, True),
    ({"trigger": {"type": "inactivity", "events": ["a", "b"], "for": "60d"},
      "steps": [{"wait": "7d"}, {"exit": True}]}, True),
    ({"trigger": {"type": "absence", "event": "a", "missing": {"event": "b", "correlate": {
        "property": "items.*.id", "trigger": "id"}}, "within": 60}, "steps": [{"send": "t"}]},
     True),
    ({"trigger": {"event": "a"}, "steps": [{"split": {"holdout": 10, "variants": [
        {"name": "a", "weight": 2, "steps": [{"send": "t"}]}, {"name": "b", "steps": []}]}}]},
     True),
    ({"trigger": {"event": "a"}, "steps": []}, False),
    ({"trigger": {"event": "a"}, "steps": [{"send": "t"}], "extra": 1}, False),
    ({"trigger": {"type": "inactivity", "events": "a"}, "steps": [{"send": "t"}]}, False),
    ({"trigger": {"event": "a"}, "steps": [{"wait": {"days": ["mon"]}}]}, False),
    ({"trigger": {"event": "a"}, "steps": [{"split": {"holdout": 100, "variants": [
        {"name": "a", "steps": []}]}}]}, False),
    ({"trigger": {"type": "date", "attribute": "b", "at": "25:00"}, "steps": [{"send": "t"}]},
     False),
])
def test_schema_valid_and_invalid(document: dict[str, Any], valid: bool) -> None:
    assert (schema_problems(document) == []) is valid
