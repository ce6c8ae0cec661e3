-- What Postgres does per queued message, made cheaper (both changes affect only rows written
-- from now on: no rewrite, a brief lock).
--
-- Message bodies are stored uncompressed (out of line, in the TOAST table, as before for
-- bodies over ~2 kB). Compressing each ~4 kB body with pglz was half of Postgres's CPU for a
-- message insert (about 40 us a row: the embedded server's build has no lz4), for a body kept
-- only until it is delivered and its retention is over (0007). Bodies take about 1.8x the
-- space meanwhile.
ALTER TABLE outbound_messages ALTER COLUMN body SET STORAGE EXTERNAL;

-- A tracked message's original URLs by position (links[1] is position 0) are stored in its own
-- row, by the insert that queues it, instead of a row of tracked_links (0006) written after it,
-- whose foreign-key check locked the message row just inserted. NULL: not tracked, or queued
-- before this migration (its links, if any, are in tracked_links, which stays for those).
ALTER TABLE outbound_messages ADD COLUMN tracked_links text[];
