-- The outbound queue: one row per (message, recipient). A row is "due" when its state is
-- queued or deferred and next_attempt_at has passed. Claiming a row moves next_attempt_at to
-- the end of the claimer's lease, so a crashed worker's rows become due again by themselves.
CREATE TABLE outbound_messages (
    id               uuid PRIMARY KEY,
    created_at       timestamptz NOT NULL DEFAULT now(),
    state            text NOT NULL DEFAULT 'queued'
                     CHECK (state IN ('queued', 'deferred', 'delivered', 'bounced', 'expired',
                                      'suppressed')),
    header_from      text NOT NULL,          -- the From address (DKIM signing domain)
    envelope_from    text NOT NULL,          -- per-message bounce address (VERP)
    recipient        text NOT NULL,
    recipient_domain text NOT NULL,
    contact_id       text NOT NULL,
    tags             text[] NOT NULL DEFAULT '{}',
    metadata         jsonb NOT NULL DEFAULT '{}'::jsonb,  -- e.g. workflow, step, run
    source           text NOT NULL DEFAULT 'api',
    idempotency_key  text UNIQUE,             -- exactly-once enqueue from workflows
    body             bytea NOT NULL,          -- RFC 5322 message, unsigned (signed per attempt)
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    expires_at       timestamptz NOT NULL,
    lease_owner      text,
    last_code        integer,
    last_reply       text,
    finished_at      timestamptz
);
CREATE INDEX outbound_due ON outbound_messages (next_attempt_at)
    WHERE state IN ('queued', 'deferred');
CREATE INDEX outbound_contact ON outbound_messages (contact_id, created_at DESC);

CREATE TABLE delivery_attempts (
    message_id   uuid NOT NULL REFERENCES outbound_messages (id) ON DELETE CASCADE,
    attempt      integer NOT NULL,
    at           timestamptz NOT NULL DEFAULT now(),
    outcome      text NOT NULL,   -- delivered, deferred, bounced, expired, suppressed
    remote_host  text,
    code         integer,
    enhanced     text,
    reply        text,
    category     text,            -- bounce classification
    PRIMARY KEY (message_id, attempt)
);

-- Addresses that must never be mailed (hard bounces, complaints, unsubscribes, manual).
CREATE TABLE suppressions (
    email       text PRIMARY KEY,  -- lower-cased
    reason      text NOT NULL,
    detail      text,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Secrets generated once and shared by every process on this database.
CREATE TABLE mta_secrets (
    name   text PRIMARY KEY,
    value  bytea NOT NULL
);
