"""A run's decision-log rows and the outcome-webhook rows they imply, in ONE statement.

The rows of ``workflow_log`` whose action is a workflow event (entered, exit, completed:
:data:`engine.outbox.events.WORKFLOW_ACTIONS`) become outbox rows for every subscription that
wants the event, in the run's own transaction, so each is queued exactly once (a rolled-back
transition queues nothing). With no subscription the join is empty and nothing more is written.
"""

from __future__ import annotations

from engine.outbox.events import WORKFLOW_ACTIONS
from engine.outbox.store import CHANNEL

_ACTIONS = ", ".join(f"('{action}', '{event}')" for action, event in WORKFLOW_ACTIONS.items())

INSERT_LOG_AND_EVENTS = f"""
    WITH logged AS (
        INSERT INTO workflow_log (at, workflow, contact_id, run_id, step, action, detail)
        SELECT (r->>0)::timestamptz, r->>1, r->>2, (r->>3)::bigint, r->>4, r->>5, r->>6
        FROM jsonb_array_elements($1::jsonb) WITH ORDINALITY AS x(r, n)
        ORDER BY n
        RETURNING id, at, workflow, contact_id, run_id, step, action, detail),
    queued AS (
        INSERT INTO outbox (message_id, kind, subscription_id, event_type, url, endpoint,
                            body, secret, contact_id)
        SELECT 'msg_wl' || l.id || '_' || s.id, 'outcome', s.id, e.type, s.url, s.endpoint,
               convert_to(jsonb_build_object(
                   'type', e.type,
                   'timestamp', to_char(l.at AT TIME ZONE 'UTC',
                                        'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
                   'data', jsonb_build_object('workflow', l.workflow,
                                              'contact_id', l.contact_id, 'run_id', l.run_id,
                                              'step', l.step, 'detail', l.detail))::text,
                          'UTF8'),
               s.secret, l.contact_id
        FROM logged l
        JOIN (VALUES {_ACTIONS}) AS e(action, type) ON e.action = l.action
        JOIN webhook_subscriptions s ON e.type = ANY(s.event_types)
        ON CONFLICT (message_id) DO NOTHING
        RETURNING 1)
    SELECT pg_notify('{CHANNEL}', '') FROM queued LIMIT 1
"""
