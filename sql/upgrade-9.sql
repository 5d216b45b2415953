-- Upgrade a version 8 queue to version 9: the days whose TLS-RPT reports
-- the daily run has sent (so that a restart does not send them again).
CREATE TABLE tlsrpt_sent (
	day INTEGER PRIMARY KEY,  -- UTC midnight, Unix seconds
	sent_at INTEGER NOT NULL
);
