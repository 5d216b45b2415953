-- sluice queue schema for PostgreSQL, version 2.
--
-- The same tables as the SQLite queue (sql/schema.sql, whose comments
-- say what each column holds), with PostgreSQL's types: times are Unix
-- seconds in BIGINT, bodies BYTEA.  What only a shared queue needs is
-- added: which node holds a recipient's lease and with which token (the
-- fence), which node is receiving an `incoming` message, and the nodes
-- themselves with their heartbeats.  sluice creates this schema in an
-- empty database and records its version in sluice_schema; later versions
-- upgrade it in place at start, as with SQLite.

CREATE TABLE sluice_schema (
	version INTEGER NOT NULL
);

CREATE TABLE messages (
	id TEXT PRIMARY KEY,
	received_at BIGINT NOT NULL,
	sender TEXT NOT NULL,
	size BIGINT NOT NULL,
	stored_size BIGINT NOT NULL,
	body_type TEXT NOT NULL DEFAULT '7BIT'
	    CHECK (body_type IN ('7BIT', '8BITMIME', 'BINARYMIME')),
	smtputf8 INTEGER NOT NULL DEFAULT 0,
	dsn_ret TEXT CHECK (dsn_ret IN ('FULL', 'HDRS')),
	dsn_envid TEXT,
	client_ip TEXT NOT NULL,
	client_port INTEGER,
	helo TEXT,
	protocol TEXT NOT NULL,
	tls_version TEXT,
	tls_cipher TEXT,
	auth_user TEXT,
	requiretls INTEGER NOT NULL DEFAULT 0,
	tls_required_no INTEGER NOT NULL DEFAULT 0,
	node TEXT			-- the node that accepted it
);

CREATE TABLE recipients (
	msg_id TEXT NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
	rcpt_no INTEGER NOT NULL,
	address TEXT NOT NULL,
	domain TEXT NOT NULL,
	state TEXT NOT NULL DEFAULT 'queued'
	    CHECK (state IN ('queued', 'deferred', 'delivered', 'bounced',
	    'held')),
	attempts INTEGER NOT NULL DEFAULT 0,
	next_attempt_at BIGINT NOT NULL,
	last_attempt_at BIGINT,
	last_reply TEXT,
	notify TEXT,
	orcpt TEXT,
	lease_until BIGINT,		-- a delivery thread works on it until
	lease_owner TEXT,		-- of the node named so
	lease_token BIGINT,		-- fence: an attempt is recorded only
					-- by the lease that is still current
	notified INTEGER NOT NULL DEFAULT 0,
	PRIMARY KEY (msg_id, rcpt_no)
);

CREATE SEQUENCE lease_tokens;

CREATE INDEX recipients_due ON recipients (state, next_attempt_at);
-- Claiming walks this one in order and stops at its LIMIT.
CREATE INDEX recipients_pending_due ON recipients (next_attempt_at)
    WHERE state IN ('queued', 'deferred');
CREATE INDEX recipients_domain ON recipients (domain, state);
CREATE INDEX recipients_unreported ON recipients (msg_id)
    WHERE state = 'bounced' AND (notified & 1) = 0;
CREATE INDEX recipients_leased ON recipients (lease_owner, lease_until)
    WHERE lease_until IS NOT NULL;

CREATE TABLE body_chunks (
	msg_id TEXT NOT NULL,
	seq INTEGER NOT NULL,
	data BYTEA NOT NULL,
	PRIMARY KEY (msg_id, seq)
);

CREATE TABLE incoming (
	msg_id TEXT PRIMARY KEY,
	started_at BIGINT NOT NULL,
	node TEXT NOT NULL		-- reclaimed only by the node receiving
);

CREATE TABLE attempts (
	id BIGSERIAL PRIMARY KEY,
	msg_id TEXT NOT NULL,
	rcpt_no INTEGER NOT NULL,
	at BIGINT NOT NULL,
	mx_host TEXT,
	ip TEXT,
	port INTEGER,
	tls TEXT,
	status TEXT NOT NULL CHECK (status IN ('sent', 'deferred', 'bounced')),
	reply TEXT,
	duration_ms BIGINT,
	security TEXT,
	security_why TEXT,
	node TEXT			-- the node that made it
);

CREATE INDEX attempts_msg ON attempts (msg_id, rcpt_no);

CREATE TABLE tlsrpt_results (
	day BIGINT NOT NULL,
	policy_domain TEXT NOT NULL,
	policy_type TEXT NOT NULL
	    CHECK (policy_type IN ('sts', 'tlsa', 'no-policy-found')),
	policy_string TEXT NOT NULL DEFAULT '',
	mx_host TEXT NOT NULL DEFAULT '',
	result_type TEXT NOT NULL DEFAULT '',
	sending_ip TEXT NOT NULL DEFAULT '',
	receiving_ip TEXT NOT NULL DEFAULT '',
	count BIGINT NOT NULL DEFAULT 0,
	PRIMARY KEY (day, policy_domain, policy_type, policy_string, mx_host,
	    result_type, sending_ip, receiving_ip)
);

CREATE TABLE tlsrpt_sent (
	day BIGINT PRIMARY KEY,
	sent_at BIGINT NOT NULL
);

CREATE TABLE sts_policies (
	domain TEXT PRIMARY KEY,
	id TEXT NOT NULL,
	mode TEXT NOT NULL CHECK (mode IN ('enforce', 'testing', 'none')),
	mx TEXT NOT NULL,
	max_age BIGINT NOT NULL,
	fetched_at BIGINT NOT NULL,
	expires_at BIGINT NOT NULL,
	policy_text TEXT NOT NULL,
	last_error TEXT
);

-- The nodes that share this queue (sluice queue nodes).
CREATE TABLE nodes (
	name TEXT PRIMARY KEY,		-- node_name
	started_at BIGINT NOT NULL,
	heartbeat_at BIGINT NOT NULL,	-- the database's clock
	version TEXT
);

-- Version 2 (sql/pg-upgrade-2.sql): autovacuum for the tables that churn.
ALTER TABLE recipients SET (autovacuum_vacuum_scale_factor = 0.02,
    autovacuum_analyze_scale_factor = 0.05);
ALTER TABLE body_chunks SET (autovacuum_vacuum_scale_factor = 0.02);
ALTER TABLE attempts SET (autovacuum_vacuum_scale_factor = 0.05);

INSERT INTO sluice_schema (version) VALUES (2);
