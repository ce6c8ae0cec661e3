-- Publishable (site) keys: the secret that signs contact tokens (HMAC; kept in clear so the
-- server can verify them; NULL for keys made before tokens existed) and the event properties
-- a browser may send with this key (none unless listed).
ALTER TABLE api_keys ADD COLUMN token_secret text;
ALTER TABLE api_keys ADD COLUMN properties text[] NOT NULL DEFAULT '{}';
