-- Funnel and attribution counters (automation/stats), kept incrementally by the stats follower.
-- One row per workflow, step and UTC day ('' is the workflow itself: entered). Unique opens and
-- clicks are counted once per message (workflow_stats_seen), in the day of the first one.
CREATE TABLE workflow_stats (
    workflow     text NOT NULL,
    step         text NOT NULL,
    day          date NOT NULL,
    entered      bigint NOT NULL DEFAULT 0,
    sent         bigint NOT NULL DEFAULT 0,
    delivered    bigint NOT NULL DEFAULT 0,
    bounced      bigint NOT NULL DEFAULT 0,
    opened       bigint NOT NULL DEFAULT 0,
    clicked      bigint NOT NULL DEFAULT 0,
    unsubscribed bigint NOT NULL DEFAULT 0,
    complained   bigint NOT NULL DEFAULT 0,
    converted    bigint NOT NULL DEFAULT 0,
    revenue      numeric NOT NULL DEFAULT 0,
    PRIMARY KEY (workflow, step, day)
);

-- Per-message facts counted at most once: 'o' opened, 'c' clicked, 'b' bounced, 'u'
-- unsubscribed, 'x' complained (human opens and clicks only).
CREATE TABLE workflow_stats_seen (
    message_id text NOT NULL,
    kind       "char" NOT NULL,
    PRIMARY KEY (message_id, kind)
);

-- Each contact's last human click (last-touch attribution of goal events).
CREATE TABLE workflow_stats_last_click (
    contact_id text PRIMARY KEY,
    message_id text NOT NULL,
    workflow   text,
    step       text,
    clicked_at timestamptz NOT NULL
);

-- The follower's cursors: the event log and the decision log (workflow_log), both read
-- gap-free by (txid, id) below pg_snapshot_xmin, and moved in the same transaction as the
-- counters, so every fact counts exactly once across restarts. The row is locked per batch,
-- so two followers never count one batch twice.
CREATE TABLE workflow_stats_state (
    id           integer PRIMARY KEY CHECK (id = 1),
    events_txid  bigint NOT NULL DEFAULT 0,
    events_pos   bigint NOT NULL DEFAULT 0,
    log_txid     bigint NOT NULL DEFAULT 0,
    log_id       bigint NOT NULL DEFAULT 0,
    updated_at   timestamptz NOT NULL DEFAULT now()
);
INSERT INTO workflow_stats_state (id) VALUES (1);

-- Entries and sends are facts of the decision log (written in the run's own transaction).
-- Rows written from now on carry their transaction id; earlier rows are counted here, once.
ALTER TABLE workflow_log ADD COLUMN txid xid8;
ALTER TABLE workflow_log ALTER COLUMN txid SET DEFAULT pg_current_xact_id();
CREATE INDEX workflow_log_stats ON workflow_log (txid, id) WHERE action IN ('entered', 'sent');
INSERT INTO workflow_stats (workflow, step, day, entered, sent)
SELECT workflow, CASE WHEN action = 'entered' THEN '' ELSE coalesce(step, '') END,
       (at AT TIME ZONE 'UTC')::date,
       count(*) FILTER (WHERE action = 'entered'), count(*) FILTER (WHERE action = 'sent')
FROM workflow_log WHERE action IN ('entered', 'sent')
GROUP BY 1, 2, 3;
