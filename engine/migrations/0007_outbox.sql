-- The outbox: every outbound HTTP request (webhook steps, outcome webhooks), written in the
-- transaction that causes it and delivered later by the outbox worker (engine/outbox).
-- Numbered 0007: 0006 is taken by another branch's engine migration.

-- Outcome-webhook subscriptions. The secret (whsec_<base64>) signs each request; it is shown
-- once when created. endpoint: scheme://host:port (per-endpoint concurrency counts by it).
CREATE TABLE webhook_subscriptions (
    id           text PRIMARY KEY,
    url          text NOT NULL,
    endpoint     text NOT NULL,
    event_types  text[] NOT NULL CHECK (cardinality(event_types) > 0),
    secret       text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);

-- One row per request to make. message_id is the webhook-id header: the same on every retry,
-- so receivers can drop repeats (delivery is at least once). state: pending (due at
-- next_attempt_at; a claimed row's next_attempt_at is its lease end, lease_owner the worker),
-- delivered, dead (gave up after max_attempts or refused; POST /v1/outbox/{id}/retry revives).
-- secret NULL: signed with the webhook-step secret.
CREATE TABLE outbox (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    message_id       text NOT NULL UNIQUE,
    kind             text NOT NULL CHECK (kind IN ('step', 'outcome', 'test')),
    subscription_id  text,
    event_type       text,
    url              text NOT NULL,
    endpoint         text NOT NULL,
    headers          jsonb NOT NULL DEFAULT '[]'::jsonb,
    body             bytea NOT NULL,
    secret           text,
    timeout          real,     -- NULL: [webhooks] timeout
    max_attempts     integer CHECK (max_attempts >= 1),  -- NULL: [webhooks] max_attempts
    state            text NOT NULL DEFAULT 'pending'
                     CHECK (state IN ('pending', 'delivered', 'dead')),
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    lease_owner      text,
    last_status      integer,
    last_error       text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX outbox_due ON outbox (next_attempt_at) WHERE state = 'pending';
CREATE INDEX outbox_state ON outbox (state, id);

-- The outcome follower's place in the event log; moved in the transaction that writes the
-- outbox rows of the events it passed (so each event becomes its rows exactly once).
CREATE TABLE outbox_follower (
    id           integer PRIMARY KEY CHECK (id = 1),
    cursor_txid  bigint NOT NULL,
    cursor_pos   bigint NOT NULL,
    updated_at   timestamptz NOT NULL DEFAULT now()
);

-- The webhook-step signing secret when [webhooks] step_secret is not set (generated once).
CREATE TABLE outbox_secrets (
    name    text PRIMARY KEY,
    secret  text NOT NULL
);
