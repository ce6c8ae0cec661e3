"""A workflow's funnel from its counters and its definition (pure).

Send steps are listed in document order. A step's drop-off compares its ``sent`` with the
figure before it on every path: the previous send step at the same or an enclosing level, or
``entered`` for the first (a send inside a branch or split arm compares with what came before
the branch, so an arm's drop-off includes the share routed elsewhere). Rates are per message
sent; unique opens and clicks exclude machine ones.

Each split step reports its variants ("arms") with their summed counters and a two-proportion
z-test of each arm's rate (clicks or conversions per sent) against the first arm.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from typing import Any

from automation.model.definitions import (
    BranchStep,
    SendStep,
    SplitStep,
    Step,
    WaitForStep,
    Workflow,
    walk_steps,
)
from automation.stats.significance import two_proportion_z
from automation.stats.tally import FIELDS, WORKFLOW_ROW

BUCKET = "day (UTC)"
METRIC_FIELD = {"clicks": "clicked", "conversions": "converted"}


def zero() -> dict[str, Any]:
    return {name: (0.0 if name == "revenue" else 0) for name in FIELDS}


def _plain(counts: dict[str, Any] | None) -> dict[str, Any]:
    out = zero()
    for name, value in (counts or {}).items():
        out[name] = float(value) if name == "revenue" else int(value)
    return out


def _ratio(part: float, whole: float) -> float | None:
    return round(part / whole, 4) if whole else None


def _rates(counts: dict[str, Any]) -> dict[str, float | None]:
    sent = counts["sent"]
    return {"delivery_rate": _ratio(counts["delivered"], sent),
            "bounce_rate": _ratio(counts["bounced"], sent),
            "open_rate": _ratio(counts["opened"], sent),
            "click_rate": _ratio(counts["clicked"], sent),
            "conversion_rate": _ratio(counts["converted"], sent)}


def _send_chain(steps: tuple[Step, ...], before: str | None) -> Iterator[tuple[str, str | None]]:
    """(send step id, the send step before it on every path; None: entered)."""
    previous = before
    for step in steps:
        if isinstance(step, SendStep):
            yield step.id, previous
            previous = step.id
        elif isinstance(step, BranchStep):
            for case in step.cases:
                yield from _send_chain(case.steps, previous)
            yield from _send_chain(step.otherwise, previous)
        elif isinstance(step, SplitStep):
            for variant in step.variants:
                yield from _send_chain(variant.steps, previous)
        elif isinstance(step, WaitForStep):
            yield from _send_chain(step.on_event, previous)
            yield from _send_chain(step.on_timeout, previous)


def build(name: str, workflow: Workflow | None, by_step: dict[str, dict[str, Any]],
          since: date | None, metric: str) -> dict[str, Any]:
    counts = {step: _plain(values) for step, values in by_step.items()}
    entered = counts.get(WORKFLOW_ROW, zero())["entered"]
    chain = list(_send_chain(workflow.steps, None)) if workflow else []
    templates = {s.id: s.template for s in workflow.walk() if isinstance(s, SendStep)} \
        if workflow else {}
    listed = [step for step, _ in chain]
    listed += sorted(s for s in counts if s != WORKFLOW_ROW and s not in templates)
    previous = dict(chain)
    steps = []
    for step_id in listed:
        values = counts.get(step_id, zero())
        before = previous.get(step_id)
        base = counts.get(before, zero())["sent"] if before else entered
        known = step_id in templates
        steps.append({
            "step": step_id, "template": templates.get(step_id),
            "in_definition": known, **values, **_rates(values),
            "previous": (before or "entered") if known else None,
            "drop_off": (round(1 - values["sent"] / base, 4) if base else None)
            if known else None})
    totals = zero()
    for values in counts.values():
        for field in FIELDS:
            totals[field] += values[field]
    totals["entered"] = entered
    return {"workflow": name, "version": workflow.version if workflow else None,
            "since": since.isoformat() if since else None, "bucket": BUCKET,
            "totals": {**totals, **_rates(totals)}, "steps": steps,
            "splits": _splits(workflow, counts, metric) if workflow else []}


def _splits(workflow: Workflow, counts: dict[str, dict[str, Any]],
            metric: str) -> list[dict[str, Any]]:
    field = METRIC_FIELD[metric]
    reports = []
    for split in (s for s in workflow.walk() if isinstance(s, SplitStep)):
        arms = []
        for variant in split.variants:
            arm = zero()
            sends = [s.id for s in walk_steps(variant.steps) if isinstance(s, SendStep)]
            for step_id in sends:
                for name in FIELDS:
                    arm[name] += counts.get(step_id, zero())[name]
            arms.append({"name": variant.name, "weight": variant.weight, "steps": sends,
                         **{k: arm[k] for k in FIELDS if k != "entered"},
                         "rate": _ratio(arm[field], arm["sent"])})
        control = arms[0] if arms else None
        for arm in arms[1:]:
            assert control is not None
            test = two_proportion_z(min(control[field], control["sent"]), control["sent"],
                                    min(arm[field], arm["sent"]), arm["sent"])
            arm["vs"] = control["name"]
            arm["z"] = round(test.z, 4) if test.z is not None else None
            arm["p_value"] = float(f"{test.p_value:.6g}") if test.p_value is not None else None
            arm["reliable"] = test.reliable
        reports.append({"step": split.id, "metric": metric,
                        "rate": f"{field} per sent", "holdout_percent": split.holdout_percent,
                        "arms": arms})
    return reports


def summary(by_workflow: dict[str, dict[str, Any]], names: list[str],
            since: date | None) -> dict[str, Any]:
    """One line per workflow (the loaded ones, then any others that have counters)."""
    ordered = names + sorted(w for w in by_workflow if w not in names)
    rows = []
    for name in ordered:
        values = _plain(by_workflow.get(name))
        rows.append({"workflow": name, **values, **_rates(values)})
    return {"since": since.isoformat() if since else None, "bucket": BUCKET,
            "workflows": rows}
