"""The automation's share of GDPR export and erase (:mod:`engine.privacy.parts`): the
contact's workflow runs and decision log, and quarantined events naming it.

Erase keeps the runs as anonymous counts (funnels stay right): the contact id becomes
``erased:<hash prefix>``, the trigger event's properties and keys are cleared and an active
run is exited ("contact erased"); the decision log, quarantine rows and the contact's last
click (workflow_stats_last_click, for attribution) are deleted.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg

from engine.privacy.hashing import HashKey
from engine.privacy.parts import Page, Section, Subject
from engine.timestamps import format_rfc3339

LOG_PAGE = 1000


def _time(value: Any) -> str | None:
    return format_rfc3339(value) if value is not None else None


async def _runs(connection: asyncpg.Connection, subject: Subject, cursor: Any) -> Page:
    rows = await connection.fetch(
        """SELECT id, workflow, version, contact_id, state, entered_at, trigger_type,
                  trigger_properties, wake_at, sent_steps, exit_reason, updated_at
           FROM workflow_runs WHERE contact_id = ANY($1::text[]) ORDER BY id""",
        list(subject.ids))
    return [{"id": r["id"], "workflow": r["workflow"], "version": r["version"],
             "contact_id": r["contact_id"], "state": r["state"],
             "entered_at": _time(r["entered_at"]), "trigger_type": r["trigger_type"],
             "trigger_properties": r["trigger_properties"], "wake_at": _time(r["wake_at"]),
             "sent_steps": list(r["sent_steps"]), "exit_reason": r["exit_reason"],
             "updated_at": _time(r["updated_at"])} for r in rows], None


async def _log(connection: asyncpg.Connection, subject: Subject, cursor: Any) -> Page:
    rows = await connection.fetch(
        """SELECT id, at, workflow, run_id, step, action, detail FROM workflow_log
           WHERE contact_id = ANY($1::text[]) AND id > $2 ORDER BY id LIMIT $3""",
        list(subject.ids), cursor or 0, LOG_PAGE)
    items = [{"at": _time(r["at"]), "workflow": r["workflow"], "run_id": r["run_id"],
              "step": r["step"], "action": r["action"], "detail": r["detail"]} for r in rows]
    return items, rows[-1]["id"] if len(rows) == LOG_PAGE else None


class AutomationRecords:
    name = "automation"

    def sections(self) -> Sequence[Section]:
        return (Section("workflow_runs", _runs), Section("workflow_log", _log))

    async def erase(self, connection: asyncpg.Connection, subject: Subject,
                    key: HashKey) -> dict[str, int]:
        ids = list(subject.ids)
        runs = await connection.execute(
            """UPDATE workflow_runs
               SET contact_id = 'erased:' || left($2, 16), trigger_properties = '{}'::jsonb,
                   reentry_key = '', entry_key = 'erased:' || id::text,
                   state = CASE WHEN state IN ('running', 'waiting', 'waiting_event')
                                THEN 'exited' ELSE state END,
                   exit_reason = CASE WHEN state IN ('running', 'waiting', 'waiting_event')
                                      THEN 'contact erased' ELSE exit_reason END,
                   wake_at = NULL, waiting_since = NULL, updated_at = now()
               WHERE contact_id = ANY($1::text[])""", ids, subject.contact_hash)
        log = await connection.execute(
            "DELETE FROM workflow_log WHERE contact_id = ANY($1::text[])", ids)
        quarantine = await connection.execute(
            "DELETE FROM automation_quarantine WHERE contact_id = ANY($1::text[])", ids)
        clicks = await connection.execute(
            "DELETE FROM workflow_stats_last_click WHERE contact_id = ANY($1::text[])", ids)
        return {"workflow_runs": _count(runs), "workflow_log": _count(log),
                "automation_quarantine": _count(quarantine),
                "workflow_stats_last_click": _count(clicks)}


def _count(status: str) -> int:
    return int(status.rsplit(" ", 1)[-1])
