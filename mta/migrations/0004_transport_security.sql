-- Transport security (mta/tls/): the MTA-STS policy cache, the TLS policy each delivery
-- attempt ran under, and the TLS-RPT session counts and sent reports.

-- RFC 8461 §5.1: a policy is cached by its id until fetched_at + max_age.
CREATE TABLE mta_sts_policies (
    domain      text PRIMARY KEY,          -- the recipient domain (lower-case ASCII)
    policy_id   text NOT NULL,             -- the id from _mta-sts.DOMAIN TXT
    mode        text NOT NULL CHECK (mode IN ('enforce', 'testing', 'none')),
    mx          text[] NOT NULL,
    max_age     integer NOT NULL,
    policy      text NOT NULL,             -- as served
    fetched_at  timestamptz NOT NULL,
    expires_at  timestamptz NOT NULL
);
CREATE INDEX mta_sts_policies_expiry ON mta_sts_policies (expires_at);

-- "mta-sts enforce (id 2024a)", "dane (1 TLSA record)", "opportunistic", ...
ALTER TABLE delivery_attempts ADD COLUMN tls_policy text;

-- RFC 8460: sessions per UTC day, policy and result ('success' or a result type).
CREATE TABLE tls_rpt_counts (
    day            date NOT NULL,
    policy_domain  text NOT NULL,
    policy_type    text NOT NULL,          -- sts, tlsa, no-policy-found
    policy_strings text[] NOT NULL,
    mx             text[] NOT NULL,        -- the policy's mx patterns or the TLSA host
    result         text NOT NULL,
    mx_host        text NOT NULL,          -- '' when unknown
    receiving_ip   text NOT NULL,          -- '' when unknown
    sessions       bigint NOT NULL,
    PRIMARY KEY (day, policy_domain, policy_type, policy_strings, mx, result, mx_host,
                 receiving_ip)
);

-- One report per (day, policy domain): inserted before sending, so one process sends it.
CREATE TABLE tls_rpt_reports (
    day            date NOT NULL,
    policy_domain  text NOT NULL,
    report_id      text NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    destinations   text[] NOT NULL DEFAULT '{}',
    outcome        text NOT NULL DEFAULT '',  -- what each rua got, for the operator
    PRIMARY KEY (day, policy_domain)
);
