"""``herald explain --contact ID``: what each workflow did or did not do for a contact, and why."""

from __future__ import annotations

from typing import Any

import asyncpg

from automation.live import quarantine
from automation.loading.catalog import Catalog
from engine.intake.identities import anonymous_id_of, identities_of, joined_contact
from engine.timestamps import format_rfc3339


def describe_trigger(trigger: Any, accept_browser_events: bool = False) -> str:
    kind = getattr(trigger, "kind", "?")
    condition = getattr(trigger, "condition", None)
    types = sorted(getattr(condition, "types", ()) or getattr(trigger, "types", ()))
    text = f"{kind} trigger on {', '.join(types)}" if types else f"{kind} trigger"
    return text + ("; accepts browser events" if accept_browser_events
                   else "; ignores browser events")


async def explain(connection: asyncpg.Connection, catalog: Catalog,
                  contact_id: str) -> dict[str, Any]:
    runs = await connection.fetch(
        "SELECT id, workflow, version, state, pc, entered_at, trigger_type, exit_reason, "
        "wake_at FROM workflow_runs WHERE contact_id = $1 ORDER BY id", contact_id)
    entries = await connection.fetch(
        "SELECT at, workflow, run_id, step, action, detail FROM workflow_log "
        "WHERE contact_id = $1 ORDER BY id LIMIT 5000", contact_id)
    by_workflow: dict[str, dict[str, Any]] = {}
    for name, workflow in catalog.current.items():
        by_workflow[name] = {"workflow": name, "enabled": workflow.enabled,
                             "trigger": describe_trigger(workflow.trigger,
                                                         workflow.accept_browser_events),
                             "runs": [],
                             "decisions": []}
    for run in runs:
        item = by_workflow.setdefault(run["workflow"], {
            "workflow": run["workflow"], "enabled": False, "trigger": "(no longer loaded)",
            "runs": [], "decisions": []})
        item["runs"].append({
            "run_id": run["id"], "version": run["version"], "state": run["state"],
            "entered_at": format_rfc3339(run["entered_at"]), "trigger": run["trigger_type"],
            "exit_reason": run["exit_reason"],
            "next_wake": format_rfc3339(run["wake_at"]) if run["wake_at"] else None,
            "steps": []})
    runs_by_id = {r["run_id"]: r for item in by_workflow.values() for r in item["runs"]}
    for entry in entries:
        line = {"at": format_rfc3339(entry["at"]), "step": entry["step"],
                "action": entry["action"], "detail": entry["detail"]}
        run = runs_by_id.get(entry["run_id"])
        if run is not None:
            run["steps"].append(line)
        elif entry["workflow"] in by_workflow:
            by_workflow[entry["workflow"]]["decisions"].append(line)
    for item in by_workflow.values():
        if not item["runs"] and not item["decisions"]:
            item["summary"] = ("disabled" if not item["enabled"] else
                               f"never triggered for this contact ({item['trigger']})")
        else:
            states = [r["state"] for r in item["runs"]]
            item["summary"] = (f"{len(states)} run(s): " + ", ".join(states) if states
                               else "triggered but not entered: "
                               + item["decisions"][-1]["detail"])
    set_aside = [{"position": q["cursor_pos"], "event_id": q["event_id"], "type": q["type"],
                  "error": q["error"], "at": format_rfc3339(q["quarantined_at"])}
                 for q in await quarantine.for_contact(connection, contact_id)]
    report: dict[str, Any] = {"contact_id": contact_id,
                              "workflows": list(by_workflow.values()), "quarantined": set_aside}
    report.update(await _identities(connection, contact_id))
    return report


async def _identities(connection: asyncpg.Connection, contact_id: str) -> dict[str, Any]:
    """Anonymous ids joined to this contact (their earlier events were copied here once), or
    for an ``anon:<id>`` contact, the contact it was joined to."""
    anonymous = anonymous_id_of(contact_id)
    if anonymous is not None:
        joined = await joined_contact(connection, anonymous)
        return {} if joined is None else {"joined_to": joined}
    rows = await identities_of(connection, contact_id)
    if not rows:
        return {}
    return {"anonymous_ids": [{"anonymous_id": row["anonymous_id"],
                               "joined_at": format_rfc3339(row["linked_at"])}
                              for row in rows]}


def render_text(report: dict[str, Any]) -> str:
    lines = [f"contact {report['contact_id']}"]
    for item in report["workflows"]:
        lines.append(f"- {item['workflow']}: {item['summary']}")
        for decision in item["decisions"]:
            lines.append(f"    {decision['at']} {decision['action']}: {decision['detail']}")
        for run in item["runs"]:
            reason = f" ({run['exit_reason']})" if run["exit_reason"] else ""
            lines.append(f"    run {run['run_id']} entered {run['entered_at']} on "
                         f"{run['trigger']}: {run['state']}{reason}")
            for step in run["steps"]:
                where = f" [{step['step']}]" if step["step"] else ""
                detail = f": {step['detail']}" if step["detail"] else ""
                lines.append(f"      {step['at']}{where} {step['action']}{detail}")
    if report.get("joined_to"):
        lines.append(f"- an anonymous visitor joined to contact {report['joined_to']}: its "
                     "events count there (copied once), none fire here")
    for joined in report.get("anonymous_ids", ()):
        lines.append(f"- anonymous id {joined['anonymous_id']} joined {joined['joined_at']}: "
                     "its earlier events were copied here once")
    for event in report.get("quarantined", ()):
        lines.append(f"- event {event['position']} ({event['type']}) quarantined {event['at']}: "
                     f"no workflow acted on it: {event['error']}")
    return "\n".join(lines)
