-- Retention of message bodies: a message in a final state keeps its row (state, replies,
-- attempts) but its body is dropped some days after it finished (herald.retention).
ALTER TABLE outbound_messages ALTER COLUMN body DROP NOT NULL;
ALTER TABLE outbound_messages ADD COLUMN body_dropped_at timestamptz;
-- The bodies due to be dropped, oldest first, without scanning what was dropped already.
CREATE INDEX outbound_bodies_kept ON outbound_messages (finished_at)
    WHERE body IS NOT NULL
      AND state IN ('delivered', 'bounced', 'expired', 'suppressed', 'purged');
