-- Upgrade a version 7 queue to version 8: TLS-RPT (RFC 8460) results,
-- one row per day, recipient domain, policy, MX host, result and
-- addresses, with its count of TLS sessions.
CREATE TABLE tlsrpt_results (
	day INTEGER NOT NULL,           -- UTC midnight, Unix seconds
	policy_domain TEXT NOT NULL,    -- the recipient domain
	policy_type TEXT NOT NULL
	    CHECK (policy_type IN ('sts', 'tlsa', 'no-policy-found')),
	policy_string TEXT NOT NULL DEFAULT '', -- the policy, lines by LF
	mx_host TEXT NOT NULL DEFAULT '',
	result_type TEXT NOT NULL DEFAULT '',   -- '' for a success
	sending_ip TEXT NOT NULL DEFAULT '',
	receiving_ip TEXT NOT NULL DEFAULT '',
	count INTEGER NOT NULL DEFAULT 0,
	PRIMARY KEY (day, policy_domain, policy_type, policy_string, mx_host,
	    result_type, sending_ip, receiving_ip)
);
