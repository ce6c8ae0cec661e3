-- Workflow runs: durable state and timers. One row per run; (workflow, contact_id, entry_key)
-- is unique, so re-deriving the same trigger fire (after a restart) never starts a second run.
CREATE TABLE workflow_runs (
    id                 bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    workflow           text NOT NULL,
    version            text NOT NULL,
    contact_id         text NOT NULL,
    reentry_key        text NOT NULL,
    entry_key          text NOT NULL,
    state              text NOT NULL CHECK (state IN ('running', 'waiting', 'waiting_event',
                                                      'completed', 'exited')),
    pc                 integer NOT NULL DEFAULT 0,
    entered_at         timestamptz NOT NULL,
    trigger_type       text NOT NULL,
    trigger_properties jsonb NOT NULL DEFAULT '{}'::jsonb,
    wake_at            timestamptz,
    waiting_since      timestamptz,
    sent_steps         text[] NOT NULL DEFAULT '{}',
    exit_reason        text,
    updated_at         timestamptz NOT NULL DEFAULT now(),
    UNIQUE (workflow, contact_id, entry_key)
);
CREATE INDEX workflow_runs_active ON workflow_runs (contact_id)
    WHERE state IN ('running', 'waiting', 'waiting_event');
CREATE INDEX workflow_runs_reentry ON workflow_runs (workflow, contact_id, reentry_key,
                                                    entered_at DESC);

-- What each workflow did or did not do for a contact, and why (herald explain).
CREATE TABLE workflow_log (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at          timestamptz NOT NULL,
    workflow    text NOT NULL,
    contact_id  text NOT NULL,
    run_id      bigint,
    step        text,
    action      text NOT NULL,  -- entered, not_entered, sent, skipped, wait, exit, ...
    detail      text
);
CREATE INDEX workflow_log_contact ON workflow_log (contact_id, id);

-- Every workflow version ever loaded, so runs in flight keep the definition they started with.
CREATE TABLE workflow_versions (
    workflow   text NOT NULL,
    version    text NOT NULL,
    source     text NOT NULL,
    loaded_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workflow, version)
);

-- The trigger index snapshot and the event-log cursor it corresponds to.
CREATE TABLE automation_state (
    id          integer PRIMARY KEY CHECK (id = 1),
    cursor_txid bigint NOT NULL,
    cursor_pos  bigint NOT NULL,
    snapshot    bytea,
    saved_at    timestamptz NOT NULL DEFAULT now()
);
