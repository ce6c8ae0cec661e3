"""The set-based statements of a group of run transitions (:mod:`automation.stores.postgres`):
each serves every transition of the group at once, its rows numbered by ``WITH ORDINALITY``
(from 1, in the order of the arrays passed)."""

from __future__ import annotations

from engine.privacy.audit import erased_sql

ACTIVE_STATES_SQL = "('running', 'waiting', 'waiting_event')"

RUN_COLUMNS = """id, workflow, version, contact_id, reentry_key, entry_key, state, pc, entered_at,
    trigger_type, trigger_properties, wake_at, waiting_since, sent_steps, exit_reason"""

# Per fire: is a run of its re-entry key active, when was the last entered, was this very fire
# handled before, was the contact erased.
REENTRY = f"""
    SELECT q.n, bool_or(r.state IN {ACTIVE_STATES_SQL}) AS active, max(r.entered_at) AS last,
           bool_or(r.entry_key = q.entry_key) AS same, {erased_sql('q.contact_id')} AS erased
    FROM unnest($1::text[], $2::text[], $3::text[], $4::text[])
         WITH ORDINALITY AS q(workflow, contact_id, reentry_key, entry_key, n)
    LEFT JOIN workflow_runs r ON r.workflow = q.workflow AND r.contact_id = q.contact_id
                             AND r.reentry_key = q.reentry_key
    GROUP BY q.n, q.contact_id
"""

# Ids for the runs a group starts, taken before their first steps run (messages name their
# run), so that each new run is inserted once, in the state its first steps left it in.
NEW_RUN_IDS = """
    SELECT nextval(pg_get_serial_sequence('workflow_runs', 'id'))::bigint AS id
    FROM generate_series(1, $1)
"""

# The group's new runs, in their state after their first steps. A fire whose run another
# transaction inserted meanwhile (two engines) is not inserted: the caller sees fewer ids back.
INSERT_RUNS = """
    INSERT INTO workflow_runs (id, workflow, version, contact_id, reentry_key, entry_key, state,
                               pc, entered_at, trigger_type, trigger_properties, wake_at,
                               waiting_since, sent_steps, exit_reason)
    OVERRIDING SYSTEM VALUE
    SELECT q.id, q.workflow, q.version, q.contact_id, q.reentry_key, q.entry_key, q.state,
           q.pc, q.entered_at, q.trigger_type, q.trigger_properties, q.wake_at,
           q.waiting_since, ARRAY(SELECT jsonb_array_elements_text(q.sent_steps::jsonb)),
           q.exit_reason
    FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                $7::text[], $8::integer[], $9::timestamptz[], $10::text[], $11::jsonb[],
                $12::timestamptz[], $13::timestamptz[], $14::text[], $15::text[])
         AS q(id, workflow, version, contact_id, reentry_key, entry_key, state, pc, entered_at,
              trigger_type, trigger_properties, wake_at, waiting_since, sent_steps,
              exit_reason)
    ON CONFLICT (workflow, contact_id, entry_key) DO NOTHING
    RETURNING id
"""

EXIT_RUNS = f"""
    UPDATE workflow_runs w SET state = 'exited', exit_reason = q.reason, wake_at = NULL,
                               updated_at = now()
    FROM unnest($1::bigint[], $2::text[]) AS q(id, reason)
    WHERE w.id = q.id AND w.state IN {ACTIVE_STATES_SQL}
    RETURNING w.id, w.workflow, w.contact_id
"""

# The contact of each run, with its automated, non-transactional sends since ``since`` (the
# frequency cap's window).
CONTACTS = """
    SELECT q.n, c.email, c.attributes, c.timezone, c.consent_state,
           (SELECT count(*) FROM outbound_messages m
             WHERE m.contact_id = c.contact_id AND m.source = 'automation'
               AND m.created_at > q.since
               AND NOT coalesce((m.metadata->>'transactional')::boolean, false)) AS recent
    FROM unnest($1::text[], $2::timestamptz[]) WITH ORDINALITY AS q(contact_id, since, n)
    JOIN contacts c ON c.contact_id = q.contact_id
"""

# Each run's contact's events since it entered, and its product views, newest first (at most
# 1,000 per run).
RECENT_EVENTS = """
    SELECT q.n, e.type, e.properties, e.occurred_at
    FROM unnest($1::text[], $2::timestamptz[]) WITH ORDINALITY AS q(contact_id, entered_at, n)
    CROSS JOIN LATERAL (
        SELECT type, properties, occurred_at, position FROM events
        WHERE contact_id = q.contact_id
          AND (occurred_at >= q.entered_at OR type = 'product_viewed')
        ORDER BY position DESC LIMIT 1000) e
    ORDER BY q.n, e.position DESC
"""

# Every run of the group that existed before it, written back at once (a run appears once
# per group). sent_steps is a
# JSON text per run: text[] arrays of different lengths cannot be unnested side by side.
SAVE_RUNS = """
    UPDATE workflow_runs w
    SET state = q.state, pc = q.pc, wake_at = q.wake_at, waiting_since = q.waiting_since,
        sent_steps = ARRAY(SELECT jsonb_array_elements_text(q.sent_steps::jsonb)),
        exit_reason = q.exit_reason, updated_at = now()
    FROM unnest($1::bigint[], $2::text[], $3::integer[], $4::timestamptz[],
                $5::timestamptz[], $6::text[], $7::text[])
         AS q(id, state, pc, wake_at, waiting_since, sent_steps, exit_reason)
    WHERE w.id = q.id
"""
