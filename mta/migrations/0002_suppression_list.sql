-- The managed suppression list: one row per (address, category). category '' covers all mail;
-- a named category only an unsubscribe from that kind of mail. Addresses are normalised by
-- mta.suppression.addresses (NFC + lower-case local part, IDNA ASCII lower-case domain).
ALTER TABLE suppressions DROP CONSTRAINT suppressions_pkey;
ALTER TABLE suppressions
    ADD COLUMN id bigserial,
    ADD COLUMN category text NOT NULL DEFAULT '',
    ADD COLUMN source text NOT NULL DEFAULT 'smtp',
    ADD COLUMN message_id uuid;
ALTER TABLE suppressions ADD PRIMARY KEY (email, category);
ALTER TABLE suppressions ADD CONSTRAINT suppressions_reason
    CHECK (reason IN ('hard_bounce', 'complaint', 'unsubscribe', 'soft_bounces', 'manual'));
CREATE UNIQUE INDEX suppressions_id ON suppressions (id);

-- Soft bounces per address, for "N soft bounces within M days" suppression.
CREATE TABLE soft_bounces (
    email       text NOT NULL,
    at          timestamptz NOT NULL DEFAULT now(),
    message_id  uuid
);
CREATE INDEX soft_bounces_email ON soft_bounces (email, at);
