-- Message bodies are stored uncompressed (out of line, in the TOAST table, as before for
-- bodies over ~2 kB). Compressing each ~4 kB body with pglz was half of Postgres's CPU for a
-- message insert (about 40 us a row: the embedded server's build has no lz4), for a body kept
-- only until it is delivered and its retention is over (0007). Bodies take about 1.8x the
-- space meanwhile. Only rows written from now on are affected: no rewrite, a brief lock.
ALTER TABLE outbound_messages ALTER COLUMN body SET STORAGE EXTERNAL;
