-- Consent and privacy (issue 8, item 5). Numbered 0008: 0006 and 0007 are other branches'.
-- A contact's consent to marketing mail: state (pending, opted_in, opted_out; NULL: never
-- recorded), when it was recorded, and where it came from (e.g. signup_form, double_opt_in).
ALTER TABLE contacts
    ADD COLUMN consent_state  text CHECK (consent_state IN ('pending', 'opted_in', 'opted_out')),
    ADD COLUMN consent_at     timestamptz,
    ADD COLUMN consent_source text;

-- The key of the privacy hashes (HMAC-SHA256): one row, made on first use. The pads are the
-- key XOR ipad/opad (RFC 2104), so SQL computes the same HMAC with the built-in sha256()
-- (no extension needed): sha256(outer_pad || sha256(inner_pad || message)).
CREATE TABLE privacy_key (
    id        integer PRIMARY KEY CHECK (id = 1),
    inner_pad bytea NOT NULL,
    outer_pad bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Addresses of erased contacts: only the HMAC of the normalised address (the suppression
-- list's normal form), so an erased address stays suppressed without being kept.
CREATE TABLE erased_addresses (
    hash      bytea PRIMARY KEY,
    erased_at timestamptz NOT NULL DEFAULT now()
);

-- Every export and erase: who (API key id, or 'cli'), what, when, and the HMAC of the contact
-- id; never the contact id or an address.
CREATE TABLE privacy_audit (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at           timestamptz NOT NULL DEFAULT now(),
    action       text NOT NULL CHECK (action IN ('export', 'erase')),
    actor        text NOT NULL,
    contact_hash text NOT NULL,
    detail       jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX privacy_audit_contact ON privacy_audit (contact_hash, id);
