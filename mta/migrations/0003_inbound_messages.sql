-- Mail received by the inbound SMTP server (DSNs, feedback reports, mailto unsubscribes).
-- A row is committed before the server answers 250 to DATA; processing (parse, suppress, log
-- events) happens afterwards from this stored copy. A row is "due" while its state is
-- 'pending' and next_attempt_at has passed; claiming it moves next_attempt_at to the end of
-- the claimer's lease, so a crashed processor's rows become due again by themselves.
CREATE TABLE inbound_messages (
    id               uuid PRIMARY KEY,
    received_at      timestamptz NOT NULL DEFAULT now(),
    peer             text,                    -- client address "host:port"
    helo             text,                    -- the name the client gave in EHLO/HELO
    mail_from        text NOT NULL,           -- '' for the null reverse path of a DSN
    rcpt_tos         text[] NOT NULL,         -- accepted recipients, as the client gave them
    recipients       jsonb NOT NULL,          -- each one's [address, kind, message id]
    size             integer NOT NULL,
    raw              bytea NOT NULL,          -- the message as received (dot-unstuffed, CRLF)
    state            text NOT NULL DEFAULT 'pending'
                     CHECK (state IN ('pending', 'processed', 'failed')),
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    kind             text,                    -- bounce, complaint, auto_reply, unknown, ...
    result           jsonb,                   -- what processing did, per recipient
    last_error       text,
    processed_at     timestamptz
);
CREATE INDEX inbound_due ON inbound_messages (next_attempt_at) WHERE state = 'pending';
CREATE INDEX inbound_received ON inbound_messages (received_at);
