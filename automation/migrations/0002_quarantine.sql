-- Events the live follower could not act on: each failed alone on a replay (a deterministic
-- error), so the follower recorded it here and went on past it. `herald explain` shows them.
CREATE TABLE automation_quarantine (
    cursor_txid    bigint NOT NULL,
    cursor_pos     bigint NOT NULL,
    event_id       text,
    contact_id     text NOT NULL,
    type           text NOT NULL,
    error          text NOT NULL,
    quarantined_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (cursor_txid, cursor_pos)
);
CREATE INDEX automation_quarantine_contact ON automation_quarantine (contact_id);
