-- sluice queue views: the documented interface for people who query the
-- queue with SQL (sqlite3 -readonly var/queue.db 'select * from queue').
-- sluice drops and re-creates them at every start, so they always match the
-- running version.  Times are shown as 'YYYY-MM-DD HH:MM:SS' in UTC.
-- docs/queries.md has ready-made queries on them.
--
--   queue             one row per recipient (with its message)
--   queue_by_domain   per recipient domain: counts by state, oldest pending
--   messages_summary  one row per message: recipients by state, whether it
--                     is pending or finished, session facts, body present
--   attempts_log      one row per delivery attempt, with the recipient, its
--                     domain, the sender, a readable time and the delay
--                     since the message arrived
--
-- Views of your own: give them other names (sluice drops only these).

DROP VIEW IF EXISTS queue;
DROP VIEW IF EXISTS queue_by_domain;
DROP VIEW IF EXISTS messages_summary;
DROP VIEW IF EXISTS attempts_log;

-- One row per recipient still in the queue or already finished:
-- id, received, age_seconds, sender, recipient, domain, state, attempts,
-- next_attempt, last_reply, size, client_ip, helo, auth_user.
CREATE VIEW queue AS
SELECT m.id AS id,
       datetime(m.received_at, 'unixepoch') AS received,
       CAST(strftime('%s', 'now') AS INTEGER) - m.received_at AS age_seconds,
       m.sender AS sender,
       r.address AS recipient,
       r.domain AS domain,
       r.state AS state,
       r.attempts AS attempts,
       datetime(r.next_attempt_at, 'unixepoch') AS next_attempt,
       r.last_reply AS last_reply,
       m.size AS size,
       m.client_ip AS client_ip,
       m.helo AS helo,
       m.auth_user AS auth_user
FROM messages AS m JOIN recipients AS r ON r.msg_id = m.id;

-- Per recipient domain: how many recipients in each state and the age of
-- the oldest one not yet finished.
CREATE VIEW queue_by_domain AS
SELECT r.domain AS domain,
       count(*) AS recipients,
       sum(r.state = 'queued') AS queued,
       sum(r.state = 'deferred') AS deferred,
       sum(r.state = 'held') AS held,
       sum(r.state = 'delivered') AS delivered,
       sum(r.state = 'bounced') AS bounced,
       CAST(strftime('%s', 'now') AS INTEGER) -
           min(CASE WHEN r.state IN ('queued', 'deferred', 'held')
               THEN m.received_at END) AS oldest_pending_seconds
FROM recipients AS r JOIN messages AS m ON m.id = r.msg_id
GROUP BY r.domain;

-- One row per message:
-- id, received, age_seconds, sender ('' for <>), size, recipients, queued,
-- deferred, held, delivered, bounced, status ('pending' while a recipient
-- is queued, deferred or held, else 'finished'), last_attempt, client_ip,
-- helo, protocol, tls_version, auth_user, has_body (0 once the body was
-- deleted, after every recipient finished).
CREATE VIEW messages_summary AS
SELECT m.id AS id,
       datetime(m.received_at, 'unixepoch') AS received,
       CAST(strftime('%s', 'now') AS INTEGER) - m.received_at AS age_seconds,
       m.sender AS sender,
       m.size AS size,
       count(r.rcpt_no) AS recipients,
       coalesce(sum(r.state = 'queued'), 0) AS queued,
       coalesce(sum(r.state = 'deferred'), 0) AS deferred,
       coalesce(sum(r.state = 'held'), 0) AS held,
       coalesce(sum(r.state = 'delivered'), 0) AS delivered,
       coalesce(sum(r.state = 'bounced'), 0) AS bounced,
       CASE WHEN sum(r.state IN ('queued', 'deferred', 'held')) > 0
           THEN 'pending' ELSE 'finished' END AS status,
       datetime(max(r.last_attempt_at), 'unixepoch') AS last_attempt,
       m.client_ip AS client_ip,
       m.helo AS helo,
       m.protocol AS protocol,
       m.tls_version AS tls_version,
       m.auth_user AS auth_user,
       EXISTS (SELECT 1 FROM body_chunks AS b WHERE b.msg_id = m.id)
           AS has_body
FROM messages AS m LEFT JOIN recipients AS r ON r.msg_id = m.id
GROUP BY m.id;

-- One row per delivery attempt, in the order they were made:
-- attempt_id, id, rcpt_no, at, recipient, domain, sender, mx_host, ip,
-- port, tls (NULL without TLS), status ('sent', 'deferred', 'bounced'),
-- reply, duration_ms, delay_seconds (from arrival to this attempt).
-- A recipient the administrator bounced (sluice queue bounce) has a row
-- with mx_host NULL and that reply.
CREATE VIEW attempts_log AS
SELECT a.id AS attempt_id,
       a.msg_id AS id,
       a.rcpt_no AS rcpt_no,
       datetime(a.at, 'unixepoch') AS at,
       r.address AS recipient,
       r.domain AS domain,
       m.sender AS sender,
       a.mx_host AS mx_host,
       a.ip AS ip,
       a.port AS port,
       a.tls AS tls,
       a.security AS security,
       a.security_why AS security_why,
       a.status AS status,
       a.reply AS reply,
       a.duration_ms AS duration_ms,
       a.at - m.received_at AS delay_seconds
FROM attempts AS a
LEFT JOIN recipients AS r ON r.msg_id = a.msg_id AND r.rcpt_no = a.rcpt_no
LEFT JOIN messages AS m ON m.id = a.msg_id;
