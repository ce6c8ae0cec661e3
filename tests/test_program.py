"""Compiling nested steps into a flat program: the examples, every layout rule, and a property
test that running the program visits exactly the steps a direct walk of the tree visits."""

from __future__ import annotations

import hashlib
import itertools
import textwrap
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from automation.content.templates import TemplateSet
from automation.loading.loader import load_workflows, parse_workflow
from automation.model import definitions as d
from automation.model.filters import MATCH_ALL, compile_filter
from automation.runtime import program as p

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES = TemplateSet.from_sources({
    f"{name}/{part}": "x" for name in ("a", "b", "c", "d") for part in ("subject.txt", "body.txt")})


@pytest.fixture(scope="module")
def examples() -> dict[str, d.Workflow]:
    templates = TemplateSet.load(ROOT / "config" / "templates")
    return {w.name: w for w in load_workflows(ROOT / "config" / "workflows", templates)}


def compiled(text: str) -> p.Program:
    return p.compile_program(parse_workflow(textwrap.dedent(text), "t.yaml", TEMPLATES, "t"))


def run(program: p.Program, choose: Any) -> tuple[list[str], str]:
    """Execute ``program``; ``choose(step_id, options)`` picks an arm at each decision (the last
    option is else / holdout / timeout). Returns the step ids executed and how the run ended."""
    visited: list[str] = []
    pc = 0
    for _ in range(10 * len(program)):
        instruction = program[pc]
        if isinstance(instruction, p.End):
            return visited, "completed"
        if isinstance(instruction, p.Jump):
            assert instruction.target > pc, "jumps only go forward"
            pc = instruction.target
            continue
        visited.append(p.step_id_of(instruction))
        if isinstance(instruction, p.Exit):
            return visited, "exit"
        if isinstance(instruction, p.Branch):
            options = [*instruction.targets, instruction.otherwise]
            pc = options[choose(instruction.step.id, len(options))]
        elif isinstance(instruction, p.Split):
            options = [*instruction.targets, instruction.holdout]
            pc = options[choose(instruction.step.id, len(options))]
        elif isinstance(instruction, p.WaitFor):
            pc = [pc + 1, instruction.on_timeout][choose(instruction.step.id, 2)]
        else:
            pc += 1
    raise AssertionError("the program loops")


# --- the examples ---------------------------------------------------------------------------

EXPECTED = {
    "welcome": [
        "0 send welcome-1 template=welcome-1",
        "1 wait steps[1] entry+86400s",
        "2 send welcome-2 template=welcome-2",
        "3 wait steps[3] entry+259200s",
        "4 send welcome-3 template=welcome-3",
        "5 wait steps[5] entry+345600s",
        "6 branch clicked-any -> 7, else 9",
        "7 update_contact tag-engaged",
        "8 jump -> 10",
        "9 send welcome-offer template=welcome-offer",
        "10 end",
    ],
    "abandoned-cart": [
        "0 send cart-reminder-1 template=cart-reminder-1",
        "1 wait steps[1] 86400s",
        "2 send cart-reminder-2 template=cart-reminder-2",
        "3 end",
    ],
    "browse-abandonment": ["0 send browse-followup template=browse-followup", "1 end"],
    "post-purchase": [
        "0 send order-thanks template=order-thanks",
        "1 wait steps[1] 259200s",
        "2 send review-request template=review-request",
        "3 end",
    ],
    "win-back": [
        "0 send winback-1 template=winback-1",
        "1 wait steps[1] 604800s",
        "2 send winback-2 template=winback-2",
        "3 wait steps[3] 604800s",
        "4 update_contact mark-inactive",
        "5 exit done",
        "6 end",
    ],
    "loyalty-milestone": ["0 send loyalty-welcome template=loyalty-welcome", "1 end"],
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_examples_compile(examples: dict[str, d.Workflow], name: str) -> None:
    program = p.compile_program(examples[name])
    assert program.listing() == EXPECTED[name]
    assert (program.workflow, program.version) == (name, examples[name].version)


def test_welcome_paths(examples: dict[str, d.Workflow]) -> None:
    program = p.compile_program(examples["welcome"])
    prefix = ["welcome-1", "steps[1]", "welcome-2", "steps[3]", "welcome-3", "steps[5]",
              "clicked-any"]
    assert run(program, lambda step, n: 0) == ([*prefix, "tag-engaged"], "completed")
    assert run(program, lambda step, n: n - 1) == ([*prefix, "welcome-offer"], "completed")
    branch = program[program.pc_of("clicked-any")]
    assert isinstance(branch, p.Branch)
    assert branch.choose({"clicked": ["welcome-3"], "opened": []}) == 7
    assert branch.choose({"clicked": [], "opened": ["welcome-1", "welcome-2"]}) == 9
    assert branch.choose({}) == 9


def test_win_back_ends_with_its_exit(examples: dict[str, d.Workflow]) -> None:
    program = p.compile_program(examples["win-back"])
    assert run(program, lambda step, n: 0) == (
        ["winback-1", "steps[1]", "winback-2", "steps[3]", "mark-inactive", "done"], "exit")
    exit_step = program[5]
    assert isinstance(exit_step, p.Exit) and exit_step.step.reason == "marked inactive after " \
        "win-back"


# --- layout rules ---------------------------------------------------------------------------


def test_branch_with_several_cases_and_engagement_conditions() -> None:
    program = compiled("""\
        trigger: {event: e}
        steps:
          - {id: s1, send: a}
          - id: pick
            branch:
              cases:
                - when: {clicked: s1}
                  then: [{id: c1, send: b}]
                - when: {attributes.plan: pro, occurred: {event: order_completed}}
                  then: [{id: c2, send: c}, {id: c2-wait, wait: 1h}]
              else: [{id: e1, send: d}]
          - {id: after, wait: 1d}
        """)
    assert program.listing() == [
        "0 send s1 template=a",
        "1 branch pick -> 2, 4, else 7",
        "2 send c1 template=b",
        "3 jump -> 8",
        "4 send c2 template=c",
        "5 wait c2-wait 3600s",
        "6 jump -> 8",
        "7 send e1 template=d",
        "8 wait after 86400s",
        "9 end",
    ]
    branch = program[1]
    assert isinstance(branch, p.Branch)
    assert branch.choose({"clicked": {"s1"}}) == 2
    pro = {"attributes": {"plan": "pro"}, "events": [("order_completed", {})], "event": {}}
    assert branch.choose(pro) == 4
    assert branch.choose({**pro, "events": [("page_viewed", {})]}) == 7
    assert branch.step.event_types == {"order_completed"}


def test_empty_arms_and_exit_arms_need_no_jump() -> None:
    program = compiled("""\
        trigger: {event: e}
        steps:
          - id: pick
            branch:
              cases:
                - when: {attributes.vip: true}
                  then: []
                - when: {attributes.spam: true}
                  then: [{id: bye, exit: spam}]
          - {id: last, send: a}
        """)
    assert program.listing() == [
        "0 branch pick -> 2, 1, else 2",
        "1 exit bye",
        "2 send last template=a",
        "3 end",
    ]


def test_nested_branches_thread_jumps_to_the_final_target() -> None:
    program = compiled("""\
        trigger: {event: e}
        steps:
          - id: outer
            branch:
              cases:
                - when: {attributes.a: 1}
                  then:
                    - {id: x, send: a}
                    - id: inner
                      branch:
                        cases: [{when: {attributes.b: 1}, then: [{id: y, send: b}]}]
                        else: [{id: z, send: c}]
              else: [{id: w, send: d}]
          - {id: end-send, send: a}
        """)
    assert program.listing() == [
        "0 branch outer -> 1, else 7",
        "1 send x template=a",
        "2 branch inner -> 3, else 5",
        "3 send y template=b",
        "4 jump -> 8",       # threaded past the inner end (6: jump -> 8)
        "5 send z template=c",
        "6 jump -> 8",
        "7 send w template=d",
        "8 send end-send template=a",
        "9 end",
    ]


def test_wait_for_layout() -> None:
    program = compiled("""\
        trigger: {event: cart_updated}
        steps:
          - id: await-order
            wait_for:
              event: order_completed
              correlate: cart_id
              timeout: 2h
              on_event: [{id: thanks, send: a}]
              on_timeout: [{id: nudge, send: b}, {id: give-up, exit: true}]
          - {id: tail, send: c}
        """)
    assert program.listing() == [
        "0 wait_for await-order timeout -> 3",
        "1 send thanks template=a",
        "2 jump -> 5",
        "3 send nudge template=b",
        "4 exit give-up",
        "5 send tail template=c",
        "6 end",
    ]
    wait_for = program[0]
    assert isinstance(wait_for, p.WaitFor) and wait_for.step.timeout_seconds == 7200
    assert wait_for.step.condition.matches("order_completed", {"cart_id": 1}, {"cart_id": 1})
    assert run(program, lambda step, n: 0) == (["await-order", "thanks", "tail"], "completed")
    assert run(program, lambda step, n: 1) == (["await-order", "nudge", "give-up"], "exit")
    empty = compiled("trigger: {event: e}\nsteps: [{wait_for: {event: x, timeout: 1h}}]\n")
    assert empty.listing() == ["0 wait_for steps[0] timeout -> 2", "1 jump -> 2", "2 end"]


def test_arm_ending_in_a_nested_exit_still_jumps() -> None:
    # The on_event list ends with a split whose variant exits; its holdout falls out of the split,
    # so on_event still needs its Jump past on_timeout (found by the property test below).
    program = compiled("""\
        trigger: {event: e}
        steps:
          - id: w
            wait_for:
              event: x
              timeout: 1h
              on_event:
                - id: s
                  split: {holdout: 50, variants: [{name: a, steps: [{id: out, exit: true}]}]}
              on_timeout: [{id: late, send: a}]
        """)
    assert program.listing() == [
        "0 wait_for w timeout -> 4",
        "1 split s -> 2, holdout 5",  # threaded through the jump at 3
        "2 exit out",
        "3 jump -> 5",
        "4 send late template=a",
        "5 end",
    ]


def test_split_layout_and_assignment() -> None:
    program = compiled("""\
        trigger: {event: e}
        steps:
          - id: ab
            split:
              holdout: 10
              variants:
                - {name: short, weight: 3, steps: [{id: v1, send: a}]}
                - {name: none, steps: []}
                - {name: long, steps: [{id: v3, send: b}, {id: v3-wait, wait: 1d}]}
          - {id: tail, send: c}
        """)
    assert program.listing() == [
        "0 split ab -> 1, 5, 3, holdout 5",  # the empty variant goes straight to the end
        "1 send v1 template=a",
        "2 jump -> 5",
        "3 send v3 template=b",               # the last variant falls through
        "4 wait v3-wait 86400s",
        "5 send tail template=c",
        "6 end",
    ]
    split = program[0]
    assert isinstance(split, p.Split)
    # deterministic per contact, independent of call order; weights and holdout respected
    contacts = [f"contact-{i}" for i in range(20000)]
    first = [split.step.assign("t", c) for c in contacts]
    assert first == [split.step.assign("t", c) for c in contacts]
    shares = Counter(first)
    assert abs(shares[None] / 20000 - 0.10) < 0.01
    assert abs(shares[0] / 20000 - 0.90 * 3 / 5) < 0.015
    assert abs(shares[2] / 20000 - 0.90 * 1 / 5) < 0.015
    assert split.choose("t", "contact-1") == [*split.targets, split.holdout][
        3 if first[1] is None else first[1]]
    other = [split.step.assign("other-workflow", c) for c in contacts[:200]]
    assert other != first[:200]  # the workflow name is part of the hash


def test_pc_of_and_step_ids(examples: dict[str, d.Workflow]) -> None:
    program = p.compile_program(examples["welcome"])
    assert program.pc_of("welcome-offer") == 9
    assert p.step_id_of(program[len(program) - 1]) == "(end)"
    with pytest.raises(KeyError):
        program.pc_of("nope")


# --- property: the program behaves like the tree ---------------------------------------------

shapes = st.recursive(
    st.sampled_from(["send", "wait", "exit"]),
    lambda inner: st.one_of(
        st.tuples(st.just("branch"), st.lists(st.lists(inner, max_size=3), min_size=1,
                                              max_size=3), st.lists(inner, max_size=3)),
        st.tuples(st.just("split"), st.lists(st.lists(inner, max_size=3), min_size=1,
                                             max_size=3)),
        st.tuples(st.just("wait_for"), st.lists(inner, max_size=3), st.lists(inner, max_size=3)),
    ),
    max_leaves=12,
)


def build(shape_list: list[Any], counter: itertools.count[int]) -> tuple[d.Step, ...]:
    steps: list[d.Step] = []
    for shape in shape_list:
        step_id = f"s{next(counter)}"
        if shape == "send":
            steps.append(d.SendStep(step_id, "a"))
        elif shape == "wait":
            steps.append(d.WaitStep(step_id, 60.0))
        elif shape == "exit":
            steps.append(d.ExitStep(step_id))
        elif shape[0] == "branch":
            cases = tuple(d.BranchCase(MATCH_ALL, build(arm, counter)) for arm in shape[1])
            steps.append(d.BranchStep(step_id, cases, build(shape[2], counter)))
        elif shape[0] == "split":
            variants = tuple(d.SplitVariant(f"v{i}", 1, build(arm, counter))
                             for i, arm in enumerate(shape[1]))
            steps.append(d.SplitStep(step_id, variants))
        else:
            condition = d.EventCondition(frozenset({"x"}), compile_filter({}))
            steps.append(d.WaitForStep(step_id, condition, 60.0, build(shape[1], counter),
                                       build(shape[2], counter)))
    return tuple(steps)


class _Exited(Exception):
    pass


def walk_tree(steps: tuple[d.Step, ...], choose: Any, visited: list[str]) -> None:
    for step in steps:
        visited.append(step.id)
        if isinstance(step, d.ExitStep):
            raise _Exited
        if isinstance(step, d.BranchStep):
            arms = [case.steps for case in step.cases] + [step.otherwise]
            walk_tree(arms[choose(step.id, len(arms))], choose, visited)
        elif isinstance(step, d.SplitStep):
            arms = [variant.steps for variant in step.variants] + [()]
            walk_tree(arms[choose(step.id, len(arms))], choose, visited)
        elif isinstance(step, d.WaitForStep):
            walk_tree([step.on_event, step.on_timeout][choose(step.id, 2)], choose, visited)


@settings(max_examples=300)
@given(st.lists(shapes, min_size=1, max_size=5), st.integers(0, 2**32))
def test_program_matches_tree_walk(shape_list: list[Any], seed: int) -> None:
    steps = build(shape_list, itertools.count())
    workflow = d.Workflow("w", "v", "w.yaml", d.EventTrigger(
        d.EventCondition(frozenset({"e"}), MATCH_ALL)), steps)
    program = p.compile_program(workflow)

    def choose(step_id: str, options: int) -> int:
        digest = hashlib.sha256(f"{seed}:{step_id}".encode()).digest()
        return digest[0] % options

    expected: list[str] = []
    try:
        walk_tree(steps, choose, expected)
        ending = "completed"
    except _Exited:
        ending = "exit"
    assert run(program, choose) == (expected, ending)
    # every target is in range, every step has exactly one non-jump instruction, End is last
    assert isinstance(program[len(program) - 1], p.End)
    for instruction in program.instructions:
        targets: list[int] = []
        if isinstance(instruction, p.Jump):
            targets = [instruction.target]
        elif isinstance(instruction, p.Branch | p.Split):
            targets = [*instruction.targets,
                       instruction.otherwise if isinstance(instruction, p.Branch)
                       else instruction.holdout]
        elif isinstance(instruction, p.WaitFor):
            targets = [instruction.on_timeout]
        assert all(0 <= t < len(program) for t in targets)
        assert not any(isinstance(program[t], p.Jump) for t in targets)  # threaded
    ids = [p.step_id_of(i) for i in program.instructions if not isinstance(i, p.Jump | p.End)]
    assert sorted(ids) == sorted(s.id for s in d.walk_steps(steps))
