-- The event log: append-only, ordered by position. Every behavioural event from senders and
-- every delivery/engagement outcome lands here, and the automation core follows it in order.
CREATE TABLE events (
    position    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id    text,                       -- the sender's idempotency key, when given
    type        text NOT NULL,
    contact_id  text NOT NULL,
    email       text,
    properties  jsonb NOT NULL DEFAULT '{}'::jsonb,
    occurred_at timestamptz NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    source      text NOT NULL DEFAULT 'api'  -- api, pixel, mta, automation, ...
);
CREATE UNIQUE INDEX events_event_id_key ON events (event_id) WHERE event_id IS NOT NULL;
CREATE INDEX events_contact_position ON events (contact_id, position DESC);

CREATE TABLE contacts (
    contact_id  text PRIMARY KEY,
    email       text,
    attributes  jsonb NOT NULL DEFAULT '{}'::jsonb,
    timezone    text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX contacts_email ON contacts (lower(email));

-- API keys: only a SHA-256 of the secret part is stored. Publishable (site) keys may only
-- record the listed event types through the tracking pixel.
CREATE TABLE api_keys (
    key_id       text PRIMARY KEY,
    name         text NOT NULL,
    secret_hash  bytea NOT NULL,
    scopes       text[] NOT NULL,
    publishable  boolean NOT NULL DEFAULT false,
    event_types  text[] NOT NULL DEFAULT '{}',
    created_at   timestamptz NOT NULL DEFAULT now(),
    revoked_at   timestamptz
);
