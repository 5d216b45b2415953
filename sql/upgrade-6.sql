-- Upgrade a version 5 queue to version 6: the MTA-STS policy cache
-- (RFC 8461 section 5), one row per recipient domain with a policy.
CREATE TABLE sts_policies (
	domain TEXT PRIMARY KEY,   -- lower case
	id TEXT NOT NULL,          -- the _mta-sts TXT id it was fetched under
	mode TEXT NOT NULL CHECK (mode IN ('enforce', 'testing', 'none')),
	mx TEXT NOT NULL,          -- the mx patterns, one per line
	max_age INTEGER NOT NULL,  -- seconds
	fetched_at INTEGER NOT NULL,
	expires_at INTEGER NOT NULL, -- fetched_at + max_age
	policy_text TEXT NOT NULL, -- the file as fetched
	last_error TEXT            -- the last failed refresh, or NULL
);
