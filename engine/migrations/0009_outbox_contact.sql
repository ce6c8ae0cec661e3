-- The contact an outbox row is about (webhook steps: the run's contact; outcome webhooks: the
-- event's), so erasing a contact (engine/privacy) also removes the requests that name it.
-- NULL: a test request, or a row queued before this migration (the README says so).
ALTER TABLE outbox ADD COLUMN contact_id text;
CREATE INDEX outbox_contact ON outbox (contact_id) WHERE contact_id IS NOT NULL;
