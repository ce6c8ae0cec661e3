"""The funnel counters in Postgres: fold one batch of both logs, exactly once; read them back.

A batch is one transaction: lock the follower's state row (a second follower waits here, then
reads the moved cursors, so no batch is counted twice), read the event log and the decision log
after their cursors (gap-free: ``(txid, id)`` order below ``pg_snapshot_xmin``, as
:mod:`engine.eventlog_reader` explains), tally (:mod:`automation.stats.tally`), keep the
once-per-message facts the dedupe table has not seen, add the counters, store the changed last
clicks and move both cursors. A crash anywhere rolls all of it back.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

import asyncpg

from automation.model.goals import Goals
from automation.stats.tally import (
    FIELDS,
    OUTCOMES,
    Click,
    Decision,
    Fact,
    Tally,
    tally,
)

LOCK_STATE = """
    SELECT events_txid, events_pos, log_txid, log_id FROM workflow_stats_state
    WHERE id = 1 FOR UPDATE
"""

# The next `limit` events after the cursor; only the types the tally reads come back in full,
# plus the batch's last row (whatever its type) so the cursor can move past the others.
READ_EVENTS = """
    WITH batch AS MATERIALIZED (
        SELECT position, txid, type, contact_id, properties, occurred_at
        FROM events
        WHERE (txid, position) > ($1::text::xid8, $2)
          AND txid < pg_snapshot_xmin(pg_current_snapshot())
        ORDER BY txid, position
        LIMIT $3)
    SELECT position, txid::text::bigint AS txid, type, contact_id, occurred_at,
           CASE WHEN type = ANY($4::text[]) THEN properties END AS properties,
           (SELECT count(*) FROM batch) AS scanned
    FROM batch
    WHERE type = ANY($4::text[])
       OR (txid, position) = (SELECT txid, position FROM batch
                              ORDER BY txid DESC, position DESC LIMIT 1)
    ORDER BY txid, position
"""

READ_DECISIONS = """
    SELECT id, txid::text::bigint AS txid, workflow, step, action, at
    FROM workflow_log
    WHERE action IN ('entered', 'sent')
      AND (txid, id) > ($1::text::xid8, $2)
      AND txid < pg_snapshot_xmin(pg_current_snapshot())
    ORDER BY workflow_log.txid, id  -- the column, not the bigint alias: the index's order
    LIMIT $3
"""

LAST_CLICKS = """
    SELECT contact_id, message_id, workflow, step, clicked_at
    FROM workflow_stats_last_click WHERE contact_id = ANY($1::text[])
"""

FIRST_SEEN = """
    INSERT INTO workflow_stats_seen (message_id, kind)
    SELECT r->>0, (r->>1)::"char" FROM jsonb_array_elements($1::jsonb) AS r
    ON CONFLICT DO NOTHING
    RETURNING message_id, kind::text AS kind
"""

_ADDS = ", ".join(f"{name} = workflow_stats.{name} + EXCLUDED.{name}" for name in FIELDS)
ADD_COUNTS = f"""
    INSERT INTO workflow_stats (workflow, step, day, {", ".join(FIELDS)})
    SELECT r->>0, r->>1, (r->>2)::date,
           {", ".join(f"(r->>{i + 3})::bigint" for i in range(len(FIELDS) - 1))},
           (r->>{len(FIELDS) + 2})::numeric
    FROM jsonb_array_elements($1::jsonb) AS r
    ON CONFLICT (workflow, step, day) DO UPDATE SET {_ADDS}
"""

SAVE_CLICKS = """
    INSERT INTO workflow_stats_last_click (contact_id, message_id, workflow, step, clicked_at)
    SELECT r->>0, r->>1, r->>2, r->>3, (r->>4)::timestamptz
    FROM jsonb_array_elements($1::jsonb) AS r
    ON CONFLICT (contact_id) DO UPDATE
    SET message_id = EXCLUDED.message_id, workflow = EXCLUDED.workflow, step = EXCLUDED.step,
        clicked_at = EXCLUDED.clicked_at
    WHERE workflow_stats_last_click.clicked_at <= EXCLUDED.clicked_at
"""

SAVE_STATE = """
    UPDATE workflow_stats_state
    SET events_txid = $1, events_pos = $2, log_txid = $3, log_id = $4, updated_at = now()
    WHERE id = 1
"""


@dataclass(frozen=True, slots=True)
class BatchResult:
    events: int  # event-log rows the cursor moved past (read, counted or not)
    decisions: int  # decision-log rows counted
    full: bool  # a log had more than the batch held: read again at once


async def fold_batch(connection: asyncpg.Connection, goals: Goals,
                     limit: int) -> BatchResult:
    """Count the next batch of both logs in one transaction (see the module docstring)."""
    types = sorted(set(OUTCOMES) | goals.events)
    async with connection.transaction():
        state = await connection.fetchrow(LOCK_STATE)
        events = await connection.fetch(READ_EVENTS, str(state["events_txid"]),
                                        state["events_pos"], limit, types)
        decisions = await connection.fetch(READ_DECISIONS, str(state["log_txid"]),
                                           state["log_id"], limit)
        if not events and not decisions:
            return BatchResult(0, 0, False)
        facts = [Fact(r["type"], r["contact_id"], r["properties"] or {}, r["occurred_at"])
                 for r in events if r["properties"] is not None]
        contacts = sorted({f.contact_id for f in facts
                           if f.type == "email_clicked" or f.type in goals.events})
        known = {r["contact_id"]: Click(r["message_id"], r["workflow"], r["step"],
                                        r["clicked_at"])
                 for r in (await connection.fetch(LAST_CLICKS, contacts) if contacts else [])}
        result = tally(facts, [Decision(r["workflow"], r["step"], r["action"], r["at"])
                               for r in decisions], goals, known)
        await _first_seen(connection, result)
        if result.counts:
            await connection.execute(ADD_COUNTS, _count_rows(result))
        if result.last_clicks:
            await connection.execute(SAVE_CLICKS, [
                [contact, c.message_id, c.workflow, c.step, c.clicked_at.isoformat()]
                for contact, c in result.last_clicks.items()])
        last_event = events[-1] if events else None
        last_decision = decisions[-1] if decisions else None
        await connection.execute(
            SAVE_STATE,
            last_event["txid"] if last_event else state["events_txid"],
            last_event["position"] if last_event else state["events_pos"],
            last_decision["txid"] if last_decision else state["log_txid"],
            last_decision["id"] if last_decision else state["log_id"])
    scanned = events[0]["scanned"] if events else 0
    return BatchResult(scanned, len(decisions), scanned >= limit or len(decisions) >= limit)


async def _first_seen(connection: asyncpg.Connection, result: Tally) -> None:
    if not result.candidates:
        return
    new = {(r["message_id"], r["kind"]) for r in await connection.fetch(
        FIRST_SEEN, [[c.message_id, c.kind] for c in result.candidates])}
    for candidate in result.candidates:
        if (candidate.message_id, candidate.kind) in new:
            result.add(candidate.key, candidate.counter)


def _count_rows(result: Tally) -> list[list[Any]]:
    rows = []
    for (workflow, step, day), counts in result.counts.items():
        numbers = [int(counts.get(name, 0)) for name in FIELDS[:-1]]
        rows.append([workflow, step, day.isoformat(), *numbers,
                     str(counts.get("revenue", Decimal(0)))])
    return rows


async def step_counts(connection: asyncpg.Connection, workflow: str,
                      since: date | None) -> dict[str, dict[str, Any]]:
    """Counters of one workflow summed over days (from ``since``), by step."""
    sums = ", ".join(f"sum({name}) AS {name}" for name in FIELDS)
    rows = await connection.fetch(
        f"SELECT step, {sums} FROM workflow_stats WHERE workflow = $1 "
        "AND ($2::date IS NULL OR day >= $2) GROUP BY step ORDER BY step", workflow, since)
    return {r["step"]: {name: r[name] for name in FIELDS} for r in rows}


async def workflow_counts(connection: asyncpg.Connection,
                          since: date | None) -> dict[str, dict[str, Any]]:
    """Every workflow's counters summed over steps and days (from ``since``)."""
    sums = ", ".join(f"sum({name}) AS {name}" for name in FIELDS)
    rows = await connection.fetch(
        f"SELECT workflow, {sums} FROM workflow_stats "
        "WHERE ($1::date IS NULL OR day >= $1) GROUP BY workflow ORDER BY workflow", since)
    return {r["workflow"]: {name: r[name] for name in FIELDS} for r in rows}


async def pending(connection: asyncpg.Connection) -> bool:
    """Whether either log holds rows after its cursor (committed or not yet readable)."""
    more: bool = await connection.fetchval(
        """SELECT EXISTS (SELECT 1 FROM events
                          WHERE (txid, position) > (s.events_txid::text::xid8, s.events_pos))
               OR EXISTS (SELECT 1 FROM workflow_log
                          WHERE action IN ('entered', 'sent')
                            AND (txid, id) > (s.log_txid::text::xid8, s.log_id))
           FROM workflow_stats_state s WHERE s.id = 1""")
    return more


async def lag(connection: asyncpg.Connection) -> dict[str, Any]:
    """When the counters last moved (``updated_at`` of the follower's state)."""
    row = await connection.fetchrow("SELECT updated_at FROM workflow_stats_state WHERE id = 1")
    return {"updated_at": row["updated_at"] if row else None}
