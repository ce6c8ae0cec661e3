-- The event log partitioned by insert time (declarative RANGE partitions on received_at), so
-- retention drops whole partitions (DETACH + DROP) instead of deleting rows; new rows always
-- land in the newest partition. Converts a populated table: every row keeps its position,
-- txid and received_at, and the identity continues after the old sequence's last value.
--
-- A unique index on a partitioned table must include the partition key, so the idempotency of
-- event ids moves to `event_ids`: an event with an id is stored only if its id is claimed
-- there in the same statement (engine.eventlog), and retention trims ids with their events.
--
-- Partitions are 7 days wide, starting on Mondays (UTC), named events_pYYYYMMDD; the retention
-- task (engine.partitions) creates them ahead of time. `events_default` catches anything no
-- partition covers (the task moves such rows into their partition when it creates it).

ALTER TABLE events RENAME TO events_unpartitioned;
ALTER SEQUENCE events_position_seq RENAME TO events_unpartitioned_position_seq;
ALTER TABLE events_unpartitioned DROP CONSTRAINT events_pkey;
DROP INDEX events_event_id_key;
DROP INDEX events_contact_position;
DROP INDEX events_txid_position;

CREATE TABLE events (
    position    bigint GENERATED ALWAYS AS IDENTITY,
    event_id    text,                       -- the sender's idempotency key (see event_ids)
    type        text NOT NULL,
    contact_id  text NOT NULL,
    email       text,
    properties  jsonb NOT NULL DEFAULT '{}'::jsonb,
    occurred_at timestamptz NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    source      text NOT NULL DEFAULT 'api',
    txid        xid8 NOT NULL DEFAULT pg_current_xact_id()
) PARTITION BY RANGE (received_at);
-- No primary key: positions come from the identity (GENERATED ALWAYS, so never given by a
-- writer), nothing looks an event up by position alone, and a unique index would have to
-- include received_at and cost every insert one more B-tree.
CREATE TABLE events_default PARTITION OF events DEFAULT;

-- One row per stored event id, written in the same statement as the event.
CREATE TABLE event_ids (
    event_id    text PRIMARY KEY,
    received_at timestamptz NOT NULL DEFAULT now()
);
-- Ids are inserted in time order: a BRIN index finds the old ones to trim at almost no cost.
CREATE INDEX event_ids_received_at ON event_ids USING brin (received_at);

DO $$
DECLARE
    anchor CONSTANT date := date '1970-01-05';  -- a Monday
    width CONSTANT integer := 7;
    start_day date;
BEGIN
    FOR start_day IN
        SELECT DISTINCT anchor + ((received_at AT TIME ZONE 'UTC')::date - anchor)
                                 / width * width
        FROM events_unpartitioned
        UNION
        SELECT anchor + (((now() AT TIME ZONE 'UTC')::date - anchor) / width + k) * width
        FROM generate_series(0, 4) AS k
    LOOP
        EXECUTE format('CREATE TABLE %I PARTITION OF events FOR VALUES FROM (%L) TO (%L)',
                       'events_p' || to_char(start_day, 'YYYYMMDD'),
                       start_day::text || ' 00:00:00+00',
                       (start_day + width)::text || ' 00:00:00+00');
    END LOOP;
END $$;

INSERT INTO events (position, event_id, type, contact_id, email, properties, occurred_at,
                    received_at, source, txid)
OVERRIDING SYSTEM VALUE
SELECT position, event_id, type, contact_id, email, properties, occurred_at, received_at,
       source, txid
FROM events_unpartitioned ORDER BY position;

INSERT INTO event_ids (event_id, received_at)
SELECT event_id, received_at FROM events_unpartitioned WHERE event_id IS NOT NULL;

DO $$
DECLARE
    last bigint;
BEGIN
    SELECT CASE WHEN is_called THEN last_value ELSE last_value - 1 END INTO last
    FROM events_unpartitioned_position_seq;
    last := GREATEST(last, (SELECT coalesce(max(position), 0) FROM events_unpartitioned));
    IF last > 0 THEN
        PERFORM setval(pg_get_serial_sequence('events', 'position'), last, true);
    END IF;
END $$;

DROP TABLE events_unpartitioned;
-- Built after the rows are in (faster than maintaining them row by row); partitions created
-- later get them too.
CREATE INDEX events_contact_position ON events (contact_id, position DESC);
-- Followers read in (txid, position) order below pg_snapshot_xmin (engine.eventlog_reader).
CREATE INDEX events_txid_position ON events (txid, position);
ANALYZE events;
