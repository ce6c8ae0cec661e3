-- The domains a secret key may send mail from (header From, and the envelope in SMTP
-- submission), as lower-case A-labels. Empty: the domains of the configured DKIM keys.
ALTER TABLE api_keys ADD COLUMN from_domains text[] NOT NULL DEFAULT '{}';
