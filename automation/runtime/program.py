"""Compile a workflow's nested steps into a flat program with jump targets (pure).

A run's durable state is then just ``(workflow name, version, pc)`` plus what a wait needs (its
deadline, or the wait_for's deadline); ``Program.instructions[pc]`` says what to do next.

Instruction set (``pc`` is the index; unless stated, execution continues at ``pc + 1``):

=================  ===============================================================================
``Send``           render and enqueue ``step.template`` (guards apply)
``Wait``           suspend until ``step.due_at(...)``
``WaitFor``        suspend until an event matching ``step.condition`` (continue at ``pc + 1``,
                   the ``on_event`` steps) or the timeout (continue at ``on_timeout``)
``Branch``         jump to ``targets[i]`` for the first case whose condition holds, else
                   ``otherwise`` (:meth:`Branch.choose`)
``Split``          jump to ``targets[i]`` for the contact's variant, or ``holdout``
                   (:meth:`Split.choose`)
``UpdateContact``  apply ``step`` to the contact's attributes
``CallWebhook``    POST the webhook
``Jump``           continue at ``target`` (closes a branch arm, variant or on_event list)
``Exit``           the run ends with ``reason`` (an ``exit`` step)
``End``            the run ends, completed (always the last instruction)
=================  ===============================================================================

Layout: a branch is ``Branch``, then each case's steps followed by a ``Jump`` to the end, then the
``else`` steps (falling through). An empty arm targets the end directly; an arm ending in
``Exit`` needs no ``Jump``. ``Split`` is laid out the same way (the last variant falls through;
the holdout targets the end). ``WaitFor`` is followed by its ``on_event`` steps and a ``Jump``,
then its ``on_timeout`` steps. Jumps to jumps are threaded to their final target.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from automation.model import definitions as d


@dataclass(frozen=True, slots=True)
class Send:
    step: d.SendStep


@dataclass(frozen=True, slots=True)
class Wait:
    step: d.WaitStep


@dataclass(frozen=True, slots=True)
class WaitFor:
    step: d.WaitForStep
    on_timeout: int


@dataclass(frozen=True, slots=True)
class Branch:
    step: d.BranchStep
    targets: tuple[int, ...]
    otherwise: int

    def choose(self, context: Mapping[str, Any]) -> int:
        """The next pc for this branch context (see :class:`definitions.BranchStep`)."""
        for case, target in zip(self.step.cases, self.targets, strict=True):
            if case.condition(context):
                return target
        return self.otherwise


@dataclass(frozen=True, slots=True)
class Split:
    step: d.SplitStep
    targets: tuple[int, ...]
    holdout: int

    def choose(self, workflow: str, contact_id: str) -> int:
        index = self.step.assign(workflow, contact_id)
        return self.holdout if index is None else self.targets[index]


@dataclass(frozen=True, slots=True)
class UpdateContact:
    step: d.UpdateContactStep


@dataclass(frozen=True, slots=True)
class CallWebhook:
    step: d.WebhookStep


@dataclass(frozen=True, slots=True)
class Jump:
    target: int
    step_id: str  # the branch, split or wait_for whose arm this closes


@dataclass(frozen=True, slots=True)
class Exit:
    step: d.ExitStep


@dataclass(frozen=True, slots=True)
class End:
    step_id: str = "(end)"


Instruction = (Send | Wait | WaitFor | Branch | Split | UpdateContact | CallWebhook | Jump | Exit
               | End)


def step_id_of(instruction: Instruction) -> str:
    """The id of the step an instruction belongs to (``(end)`` for :class:`End`)."""
    if isinstance(instruction, Jump | End):
        return instruction.step_id
    return instruction.step.id


@dataclass(frozen=True, slots=True)
class Program:
    workflow: str
    version: str
    instructions: tuple[Instruction, ...]

    def __len__(self) -> int:
        return len(self.instructions)

    def __getitem__(self, pc: int) -> Instruction:
        return self.instructions[pc]

    def pc_of(self, step_id: str) -> int:
        """Where a step starts (its first instruction)."""
        for pc, instruction in enumerate(self.instructions):
            if not isinstance(instruction, Jump) and step_id_of(instruction) == step_id:
                return pc
        raise KeyError(step_id)

    def listing(self) -> list[str]:
        """One readable line per instruction, e.g. ``3 branch steps[3] -> 4, else 6``."""
        return [f"{pc} {_describe(instruction)}" for pc, instruction in
                enumerate(self.instructions)]


def compile_program(workflow: d.Workflow) -> Program:
    out: list[Any] = []
    _emit(workflow.steps, out)
    out.append(End())
    return Program(workflow.name, workflow.version, tuple(_thread(out)))


_Pending = list[int]  # indexes in ``out`` of Jumps (or pcs) still waiting for the end pc


def _emit(steps: tuple[d.Step, ...], out: list[Any]) -> None:
    for step in steps:
        if isinstance(step, d.SendStep):
            out.append(Send(step))
        elif isinstance(step, d.WaitStep):
            out.append(Wait(step))
        elif isinstance(step, d.UpdateContactStep):
            out.append(UpdateContact(step))
        elif isinstance(step, d.WebhookStep):
            out.append(CallWebhook(step))
        elif isinstance(step, d.ExitStep):
            out.append(Exit(step))
        elif isinstance(step, d.WaitForStep):
            at = len(out)
            out.append(None)
            jumps = _arm(step.on_event, step.id, out, closed=True)
            on_timeout = len(out)
            _emit(step.on_timeout, out)
            _close(jumps, out)
            out[at] = WaitFor(step, on_timeout)
        elif isinstance(step, d.BranchStep):
            at = len(out)
            out.append(None)
            targets, jumps = _arms([case.steps for case in step.cases], step.id, out)
            otherwise = len(out) if step.otherwise else -1
            _emit(step.otherwise, out)
            end = len(out)
            _close(jumps, out)
            out[at] = Branch(step, tuple(end if t < 0 else t for t in targets),
                             end if otherwise < 0 else otherwise)
        else:
            at = len(out)
            out.append(None)
            arms = [variant.steps for variant in step.variants]
            targets, jumps = _arms(arms[:-1], step.id, out)
            last = len(out) if arms[-1] else -1
            _emit(arms[-1], out)
            end = len(out)
            _close(jumps, out)
            out[at] = Split(step, tuple(end if t < 0 else t for t in (*targets, last)), end)


def _arms(arms: list[tuple[d.Step, ...]], step_id: str, out: list[Any]
          ) -> tuple[list[int], _Pending]:
    """Lay out arms that must jump to the end; an empty arm's target is -1 (the end)."""
    targets: list[int] = []
    jumps: _Pending = []
    for arm in arms:
        targets.append(len(out) if arm else -1)
        jumps += _arm(arm, step_id, out, closed=False)
    return targets, jumps


def _arm(arm: tuple[d.Step, ...], step_id: str, out: list[Any], closed: bool) -> _Pending:
    """Emit an arm; unless it ends in Exit, append a Jump (placeholder) to the end. ``closed``
    arms get their Jump even when empty (the on_event list sits between WaitFor and on_timeout)."""
    if not arm and not closed:
        return []
    _emit(arm, out)
    if arm and isinstance(arm[-1], d.ExitStep):  # the arm's own last step, not a nested one
        return []
    out.append(Jump(-1, step_id))
    return [len(out) - 1]


def _close(jumps: _Pending, out: list[Any]) -> None:
    end = len(out)
    for index in jumps:
        out[index] = replace(out[index], target=end)


def _final(target: int, out: list[Any]) -> int:
    seen = 0
    while isinstance(out[target], Jump) and seen < len(out):
        target = out[target].target
        seen += 1
    return target


def _thread(out: list[Any]) -> list[Instruction]:
    """Point every jump target past chains of Jumps."""
    threaded: list[Instruction] = []
    for instruction in out:
        if isinstance(instruction, Jump):
            instruction = replace(instruction, target=_final(instruction.target, out))
        elif isinstance(instruction, WaitFor):
            instruction = replace(instruction, on_timeout=_final(instruction.on_timeout, out))
        elif isinstance(instruction, Branch):
            instruction = replace(instruction,
                                  targets=tuple(_final(t, out) for t in instruction.targets),
                                  otherwise=_final(instruction.otherwise, out))
        elif isinstance(instruction, Split):
            instruction = replace(instruction,
                                  targets=tuple(_final(t, out) for t in instruction.targets),
                                  holdout=_final(instruction.holdout, out))
        threaded.append(instruction)
    return threaded


def _describe(instruction: Instruction) -> str:
    if isinstance(instruction, Send):
        return f"send {instruction.step.id} template={instruction.step.template}"
    if isinstance(instruction, Wait):
        step = instruction.step
        text = f"wait {step.id} {'entry+' if step.from_entry else ''}{step.delay_seconds:g}s"
        return text + (" window" if step.window else "")
    if isinstance(instruction, WaitFor):
        return f"wait_for {instruction.step.id} timeout -> {instruction.on_timeout}"
    if isinstance(instruction, Branch):
        targets = ", ".join(map(str, instruction.targets))
        return f"branch {instruction.step.id} -> {targets}, else {instruction.otherwise}"
    if isinstance(instruction, Split):
        targets = ", ".join(map(str, instruction.targets))
        return f"split {instruction.step.id} -> {targets}, holdout {instruction.holdout}"
    if isinstance(instruction, UpdateContact):
        return f"update_contact {instruction.step.id}"
    if isinstance(instruction, CallWebhook):
        return f"webhook {instruction.step.id}"
    if isinstance(instruction, Jump):
        return f"jump -> {instruction.target}"
    if isinstance(instruction, Exit):
        return f"exit {instruction.step.id}"
    return "end"
