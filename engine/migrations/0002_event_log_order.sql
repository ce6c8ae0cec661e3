-- Followers read the log in (txid, position) order and only below the oldest transaction still
-- running (pg_snapshot_xmin), so an event can never appear behind a follower's cursor: every
-- transaction with a smaller txid has finished, and new ones get larger txids.
ALTER TABLE events ADD COLUMN txid xid8 NOT NULL DEFAULT pg_current_xact_id();
CREATE INDEX events_txid_position ON events (txid, position);
