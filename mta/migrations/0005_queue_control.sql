-- Queue control (`herald queue`, /v1/queue): two new states and what the running MTA knows.
--   held:   kept out of delivery until released (the claim query takes only queued/deferred);
--   purged: removed from the queue by an operator; final, the row and its events are kept.
ALTER TABLE outbound_messages DROP CONSTRAINT outbound_messages_state_check;
ALTER TABLE outbound_messages ADD CONSTRAINT outbound_messages_state_check
    CHECK (state IN ('queued', 'deferred', 'held', 'delivered', 'bounced', 'expired',
                     'suppressed', 'purged'));

-- Depth and oldest age per domain (and so per site), and selecting by domain, without
-- scanning delivered mail.
CREATE INDEX outbound_pending_domain ON outbound_messages (recipient_domain, state, created_at)
    WHERE state IN ('queued', 'deferred', 'held');
-- Rates over the last minutes and the last replies of a site.
CREATE INDEX delivery_attempts_at ON delivery_attempts (at);

-- Which site (MX host set or route) each recipient domain was routed to, as the MTA last saw
-- it. Queued rows store only the domain; this maps them to sites. Written by the mta role.
CREATE TABLE mta_domain_sites (
    domain      text PRIMARY KEY,
    site        text NOT NULL,
    mx_hosts    text[] NOT NULL DEFAULT '{}',
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX mta_domain_sites_site ON mta_domain_sites (site);

-- The in-memory state of each site in each running MTA process (limits, backoff, adaptive
-- concurrency, ready and active messages), written every few seconds; `updated_at` tells how
-- fresh it is. A process that stops deletes its rows; a crashed one's rows go stale.
CREATE TABLE mta_site_state (
    owner        text NOT NULL,          -- the delivery service (host:pid:random)
    site         text NOT NULL,
    state        jsonb NOT NULL,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (owner, site)
);
