-- sluice queue schema, version 3.
--
-- This file creates a new queue.  sluice runs it when the database has
-- PRAGMA user_version = 0 (a new file); later versions add upgrade steps
-- (sql/upgrade-N.sql) that sluice applies in place at start.  The views that
-- users query are in sql/views.sql and are re-created at every start.
--
-- Times are Unix seconds (UTC); use datetime(x, 'unixepoch') to read them.
-- Every row that belongs to a message carries its queue ID, the same ID
-- that appears in the logs and in the Received header.  The words in the
-- CHECK lists (body types, RET, recipient states) are spelled by the one
-- table in common/vocab.c, which the code reads and writes them through.

-- One row per accepted message: the envelope sender and the facts of the
-- session that handed it over.
CREATE TABLE messages (
	id TEXT PRIMARY KEY,		-- queue ID
	received_at INTEGER NOT NULL,	-- when the 250 was sent
	sender TEXT NOT NULL,		-- envelope sender, '' for <>
	size INTEGER NOT NULL,		-- octets as received
	stored_size INTEGER NOT NULL,	-- octets stored (Received included)
	body_type TEXT NOT NULL DEFAULT '7BIT'
	    CHECK (body_type IN ('7BIT', '8BITMIME', 'BINARYMIME')),
	smtputf8 INTEGER NOT NULL DEFAULT 0,
	dsn_ret TEXT CHECK (dsn_ret IN ('FULL', 'HDRS')),
	dsn_envid TEXT,			-- RFC 3461 ENVID, xtext as received
	client_ip TEXT NOT NULL,
	client_port INTEGER,
	helo TEXT,
	protocol TEXT NOT NULL,		-- ESMTP, ESMTPS, ESMTPA, ESMTPSA, SMTP
	tls_version TEXT,
	tls_cipher TEXT,
	auth_user TEXT,
	requiretls INTEGER NOT NULL DEFAULT 0,	  -- MAIL FROM REQUIRETLS
	tls_required_no INTEGER NOT NULL DEFAULT 0 -- "TLS-Required: No"
);

-- One row per recipient of a message, with its own delivery state.
CREATE TABLE recipients (
	msg_id TEXT NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
	rcpt_no INTEGER NOT NULL,	-- 0, 1, ... in RCPT order
	address TEXT NOT NULL,
	domain TEXT NOT NULL,		-- lower case
	state TEXT NOT NULL DEFAULT 'queued'
	    CHECK (state IN ('queued', 'deferred', 'delivered', 'bounced',
	    'held')),
	attempts INTEGER NOT NULL DEFAULT 0,
	next_attempt_at INTEGER NOT NULL,
	last_attempt_at INTEGER,
	last_reply TEXT,
	notify TEXT,			-- RFC 3461 NOTIFY, e.g. 'SUCCESS,FAILURE'
	orcpt TEXT,			-- RFC 3461 ORCPT, 'rfc822;xtext'
	lease_until INTEGER,		-- a delivery thread works on it until
	notified INTEGER NOT NULL DEFAULT 0, -- bits: 1 failure, 2 delay reported
	PRIMARY KEY (msg_id, rcpt_no)
) WITHOUT ROWID;

CREATE INDEX recipients_due ON recipients (state, next_attempt_at);
CREATE INDEX recipients_domain ON recipients (domain, state);
-- Bounced recipients not yet reported to the sender (see upgrade-3.sql).
CREATE INDEX recipients_unreported ON recipients (msg_id)
    WHERE state = 'bounced' AND (notified & 1) = 0;
-- Recipients a delivery thread holds (see upgrade-4.sql).
CREATE INDEX recipients_leased ON recipients (lease_until)
    WHERE lease_until IS NOT NULL;

-- The message itself, in chunks of up to 64 KiB: the exact octets to send
-- on (the Received header, then the message as received after
-- dot-unstuffing).  Concatenate by seq to get it back.
-- The message in order of seq; seq -1 holds fields put in front of it
-- once its data had ended (DKIM signatures) when chunk 0 was already
-- stored by then (a message over one chunk).
CREATE TABLE body_chunks (
	msg_id TEXT NOT NULL,
	seq INTEGER NOT NULL,
	data BLOB NOT NULL,
	PRIMARY KEY (msg_id, seq)
);

-- Messages still being received.  Their chunks are already in
-- body_chunks; a row here without a live session (after a crash or kill -9)
-- is reclaimed with its chunks at the next start and periodically.
CREATE TABLE incoming (
	msg_id TEXT PRIMARY KEY,
	started_at INTEGER NOT NULL
);

-- One row per delivery attempt of a recipient (filled by delivery).
CREATE TABLE attempts (
	id INTEGER PRIMARY KEY,
	msg_id TEXT NOT NULL,
	rcpt_no INTEGER NOT NULL,
	at INTEGER NOT NULL,
	mx_host TEXT,
	ip TEXT,
	port INTEGER,
	tls TEXT,
	status TEXT NOT NULL CHECK (status IN ('sent', 'deferred', 'bounced')),
	reply TEXT,
	duration_ms INTEGER,
	security TEXT,    -- none, encrypted, verified (PKIX), dane, sts
	security_why TEXT -- the TLSA record used, or why a weaker level
);

CREATE INDEX attempts_msg ON attempts (msg_id, rcpt_no);

-- TLS-RPT (RFC 8460) results, one row per day, recipient domain, policy,
-- MX host, result and addresses, with its count of TLS sessions.
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

-- The days whose TLS-RPT reports the daily run has sent.
CREATE TABLE tlsrpt_sent (
	day INTEGER PRIMARY KEY,  -- UTC midnight, Unix seconds
	sent_at INTEGER NOT NULL
);

-- The MTA-STS policy cache (RFC 8461 section 5), one row per recipient
-- domain with a policy (filled by delivery).
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
