-- Anonymous ids joined to contacts (the Segment dialect's identify and alias). Events that
-- name only an anonymous id are stored under the linked contact; before a link they are kept
-- under the contact 'anon:<id>', and at the link those are copied to the contact once each
-- (event id 'merged:<position>'). copied_through: the last 'anon:<id>' position copied.
-- Numbered 0005: 0004 is taken by another branch's engine migration.
CREATE TABLE identities (
    anonymous_id   text PRIMARY KEY,
    contact_id     text NOT NULL,
    linked_at      timestamptz NOT NULL DEFAULT now(),
    copied_through bigint NOT NULL DEFAULT 0
);
CREATE INDEX identities_contact ON identities (contact_id);
