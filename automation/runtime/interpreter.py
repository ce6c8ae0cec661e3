"""Run a workflow's program from a run's program counter to its next pause (pure).

The store gathers :class:`RunInputs` (the contact, guard facts, engagement of this run), calls
:func:`interpret`, then applies the returned :class:`Effects` and the run's new fields in ONE
transaction, so a step transition and the message it sends commit together.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from automation.content.link_policy import DroppedLink
from automation.content.templates import RenderedMessage, TemplateSet, message_context
from automation.errors import RenderError
from automation.model.definitions import Workflow
from automation.model.durations import LocalWindow
from automation.runtime import program as p
from automation.runtime.guards import GuardInputs, check_send
from automation.runtime.runs import EventResume, Resume, Run, TimerResume

MAX_INSTRUCTIONS = 10_000  # programs have no backward jumps; this only guards against bugs
MAX_DROPPED_REPORTS = 10  # "link_dropped" log entries per send


@dataclass(slots=True)
class RunInputs:
    email: str | None
    attributes: dict[str, Any]
    timezone: str | None
    suppressions: tuple[tuple[str, str], ...]
    recent_sends: int
    opened: set[str] = field(default_factory=set)
    clicked: set[str] = field(default_factory=set)
    events_since_entry: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    recommendations: list[dict[str, Any]] = field(default_factory=list)
    # The unsubscribe URL of the message a send step would create (its id depends on the step).
    unsubscribe_url: Callable[[str], str] = field(default=lambda _step: "")
    # Like opened/clicked, counting machine opens and clicks too (``include_machine: true``);
    # None: the same as opened/clicked (no machine events were seen).
    opened_with_machine: set[str] | None = None
    clicked_with_machine: set[str] | None = None
    consent: str | None = None  # the contact's consent state (engine.privacy.consent)
    consent_confirm_url: str = ""  # the contact's signed double opt-in link


@dataclass(frozen=True, slots=True)
class Policy:
    """``link_domains``: the hosts (and their subdomains) that links from event data may point
    at in messages, normalised (:func:`automation.content.link_policy.normalize_domains`);
    empty: none."""

    templates: TemplateSet
    frequency_cap: int
    allowed_window: LocalWindow | None
    link_domains: tuple[str, ...] = ()
    require_consent: bool = False  # [privacy] require_consent: sends without their own say


@dataclass(frozen=True, slots=True)
class SendEffect:
    step_id: str
    template: str
    message: RenderedMessage
    transactional: bool


@dataclass(frozen=True, slots=True)
class WebhookEffect:
    step_id: str
    url: str
    headers: tuple[tuple[str, str], ...]
    body: Any
    timeout: float
    retries: int


@dataclass(slots=True)
class Effects:
    sends: list[SendEffect] = field(default_factory=list)
    skips: list[tuple[str, str]] = field(default_factory=list)  # (step id, reason)
    attributes: dict[str, Any] | None = None  # the contact's new attributes, when changed
    webhooks: list[WebhookEffect] = field(default_factory=list)
    # (step, action, detail) in execution order; "send" and "skipped" entries line up, in
    # order, with ``sends`` and ``skips``.
    log: list[tuple[str, str, str]] = field(default_factory=list)


def interpret(run: Run, program: p.Program, workflow: Workflow, inputs: RunInputs,
              resume: Resume, now: datetime, policy: Policy) -> Effects:
    """Advance ``run`` (mutated in place) and return what must happen with it."""
    effects = Effects()
    instruction = program[run.pc]
    if isinstance(instruction, p.WaitFor) and run.state == "waiting_event":
        if isinstance(resume, EventResume):
            effects.log.append((instruction.step.id, "event", resume.type))
            run.pc += 1
        elif isinstance(resume, TimerResume):
            effects.log.append((instruction.step.id, "timeout", ""))
            run.pc = instruction.on_timeout
        else:
            return effects  # still waiting
        run.wake_at = run.waiting_since = None
    elif isinstance(instruction, p.Wait) and run.state == "waiting":
        if run.wake_at is not None and run.wake_at > now:
            return effects
        run.pc += 1
        run.wake_at = None
    elif run.state == "waiting" and isinstance(instruction, p.Send):
        if run.wake_at is not None and run.wake_at > now:
            return effects  # quiet hours not over yet
        run.wake_at = None
    run.state = "running"
    for _ in range(MAX_INSTRUCTIONS):
        if _execute(program[run.pc], run, workflow, inputs, now, policy, effects):
            return effects
    raise RuntimeError(f"workflow {workflow.name} run {run.id}: too many instructions")


def _execute(instruction: p.Instruction, run: Run, workflow: Workflow, inputs: RunInputs,
             now: datetime, policy: Policy, effects: Effects) -> bool:
    """Execute one instruction; True when the run pauses or ends."""
    if isinstance(instruction, p.Send):
        return _send(instruction, run, workflow, inputs, now, policy, effects)
    if isinstance(instruction, p.Wait):
        due = instruction.step.due_at(now, run.entered_at, inputs.timezone)
        if due <= now:
            run.pc += 1
            return False
        run.state, run.wake_at = "waiting", due
        effects.log.append((instruction.step.id, "wait", due.isoformat()))
        return True
    if isinstance(instruction, p.WaitFor):
        run.state = "waiting_event"
        run.waiting_since = now
        run.wake_at = now + timedelta(seconds=instruction.step.timeout_seconds)
        effects.log.append((instruction.step.id, "wait_for", run.wake_at.isoformat()))
        return True
    if isinstance(instruction, p.Branch):
        context = {"attributes": inputs.attributes, "event": run.trigger_properties,
                   "opened": sorted(inputs.opened), "clicked": sorted(inputs.clicked),
                   "opened_with_machine": sorted(inputs.opened if inputs.opened_with_machine
                                                 is None else inputs.opened_with_machine),
                   "clicked_with_machine": sorted(inputs.clicked if inputs.clicked_with_machine
                                                  is None else inputs.clicked_with_machine),
                   "events": inputs.events_since_entry}
        target = instruction.choose(context)
        effects.log.append((instruction.step.id, "branch", f"-> {target}"))
        run.pc = target
        return False
    if isinstance(instruction, p.Split):
        target = instruction.choose(workflow.name, run.contact_id)
        effects.log.append((instruction.step.id, "split", f"-> {target}"))
        run.pc = target
        return False
    if isinstance(instruction, p.UpdateContact):
        inputs.attributes = instruction.step.apply(inputs.attributes)
        effects.attributes = inputs.attributes
        effects.log.append((instruction.step.id, "update_contact", ""))
        run.pc += 1
        return False
    if isinstance(instruction, p.CallWebhook):
        step = instruction.step
        context = _message_context(run, workflow, inputs, step.id)
        body = step.body.render(context) if step.body is not None else {
            "workflow": workflow.name, "step": step.id, "run_id": run.id,
            "contact_id": run.contact_id, "email": inputs.email,
            "attributes": inputs.attributes, "event": run.trigger_properties}
        effects.webhooks.append(WebhookEffect(step.id, step.url, step.headers, body,
                                              step.timeout_seconds, step.retries))
        run.pc += 1
        return False
    if isinstance(instruction, p.Jump):
        run.pc = instruction.target
        return False
    if isinstance(instruction, p.Exit):
        run.state, run.exit_reason = "exited", instruction.step.reason
        effects.log.append((instruction.step.id, "exit", instruction.step.reason))
        return True
    run.state = "completed"  # End
    effects.log.append(("(end)", "completed", ""))
    return True


def _send(instruction: p.Send, run: Run, workflow: Workflow, inputs: RunInputs,
          now: datetime, policy: Policy, effects: Effects) -> bool:
    step = instruction.step
    transactional = workflow.transactional if step.transactional is None else step.transactional
    requires_consent = next(flag for flag in (step.requires_consent, workflow.requires_consent,
                                              policy.require_consent) if flag is not None)
    verdict = check_send(
        GuardInputs(inputs.email, inputs.attributes, inputs.timezone, inputs.suppressions,
                    inputs.recent_sends, inputs.consent),
        already_sent=step.id in run.sent_steps, transactional=transactional,
        frequency_cap=policy.frequency_cap, allowed_window=policy.allowed_window, now=now,
        requires_consent=requires_consent)
    if verdict.wait_until is not None:
        run.state, run.wake_at = "waiting", verdict.wait_until
        effects.log.append((step.id, "quiet_hours", verdict.wait_until.isoformat()))
        return True
    run.pc += 1
    if not verdict.send:
        assert verdict.skip_reason is not None
        effects.skips.append((step.id, verdict.skip_reason))
        effects.log.append((step.id, "skipped", verdict.skip_reason))
        return False
    dropped: list[DroppedLink] = []
    context = _message_context(run, workflow, inputs, step.id, policy.link_domains, dropped)
    for report in dropped[:MAX_DROPPED_REPORTS]:
        effects.log.append((step.id, "link_dropped", report.describe()))
    if len(dropped) > MAX_DROPPED_REPORTS:
        effects.log.append((step.id, "link_dropped",
                            f"... and {len(dropped) - MAX_DROPPED_REPORTS} more"))
    try:
        message = policy.templates.render(step.template, context)
    except RenderError as exc:
        effects.skips.append((step.id, f"render error: {exc.reason}"))
        effects.log.append((step.id, "skipped", f"render error: {exc.reason}"))
        return False
    effects.sends.append(SendEffect(step.id, step.template, message, transactional))
    effects.log.append((step.id, "send", step.template))
    run.sent_steps.append(step.id)
    if not transactional:
        inputs.recent_sends += 1
    return False


def _message_context(run: Run, workflow: Workflow, inputs: RunInputs, step_id: str,
                     link_domains: tuple[str, ...] | None = None,
                     dropped: list[DroppedLink] | None = None) -> dict[str, Any]:
    """Messages pass ``link_domains`` (links from event data are screened); webhook bodies,
    which go to the sender's own endpoint, get the data as it is."""
    return message_context(
        contact_id=run.contact_id, email=inputs.email, attributes=inputs.attributes,
        event_type=run.trigger_type, event=run.trigger_properties,
        unsubscribe_url=inputs.unsubscribe_url(step_id), recommendations=inputs.recommendations,
        timezone=inputs.timezone, workflow=workflow.name, step=step_id,
        link_domains=link_domains, dropped=dropped,
        consent_confirm_url=inputs.consent_confirm_url)
