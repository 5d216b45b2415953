-- sluice queue views for PostgreSQL: the same names, columns and meaning
-- as sql/views.sql (the SQLite queue's), so that docs/queries.md works on
-- both.  Times are shown as 'YYYY-MM-DD HH:MM:SS' in UTC.  sluice drops
-- and re-creates them at every start.

DROP VIEW IF EXISTS queue;
DROP VIEW IF EXISTS queue_by_domain;
DROP VIEW IF EXISTS messages_summary;
DROP VIEW IF EXISTS attempts_log;

CREATE OR REPLACE FUNCTION sluice_time(t BIGINT) RETURNS TEXT
    LANGUAGE sql IMMUTABLE
    AS $$ SELECT to_char(to_timestamp(t) AT TIME ZONE 'UTC',
                         'YYYY-MM-DD HH24:MI:SS') $$;

CREATE VIEW queue AS
SELECT m.id AS id,
       sluice_time(m.received_at) AS received,
       floor(extract(epoch FROM now()))::bigint - m.received_at AS age_seconds,
       m.sender AS sender,
       r.address AS recipient,
       r.domain AS domain,
       r.state AS state,
       r.attempts AS attempts,
       sluice_time(r.next_attempt_at) AS next_attempt,
       r.last_reply AS last_reply,
       m.size AS size,
       m.client_ip AS client_ip,
       m.helo AS helo,
       m.auth_user AS auth_user
FROM messages AS m JOIN recipients AS r ON r.msg_id = m.id;

CREATE VIEW queue_by_domain AS
SELECT r.domain AS domain,
       count(*) AS recipients,
       count(*) FILTER (WHERE r.state = 'queued') AS queued,
       count(*) FILTER (WHERE r.state = 'deferred') AS deferred,
       count(*) FILTER (WHERE r.state = 'held') AS held,
       count(*) FILTER (WHERE r.state = 'delivered') AS delivered,
       count(*) FILTER (WHERE r.state = 'bounced') AS bounced,
       floor(extract(epoch FROM now()))::bigint -
           min(CASE WHEN r.state IN ('queued', 'deferred', 'held')
               THEN m.received_at END) AS oldest_pending_seconds
FROM recipients AS r JOIN messages AS m ON m.id = r.msg_id
GROUP BY r.domain;

CREATE VIEW messages_summary AS
SELECT m.id AS id,
       sluice_time(m.received_at) AS received,
       floor(extract(epoch FROM now()))::bigint - m.received_at AS age_seconds,
       m.sender AS sender,
       m.size AS size,
       count(r.rcpt_no) AS recipients,
       count(*) FILTER (WHERE r.state = 'queued') AS queued,
       count(*) FILTER (WHERE r.state = 'deferred') AS deferred,
       count(*) FILTER (WHERE r.state = 'held') AS held,
       count(*) FILTER (WHERE r.state = 'delivered') AS delivered,
       count(*) FILTER (WHERE r.state = 'bounced') AS bounced,
       CASE WHEN count(*) FILTER (WHERE r.state IN ('queued', 'deferred',
           'held')) > 0 THEN 'pending' ELSE 'finished' END AS status,
       sluice_time(max(r.last_attempt_at)) AS last_attempt,
       m.client_ip AS client_ip,
       m.helo AS helo,
       m.protocol AS protocol,
       m.tls_version AS tls_version,
       m.auth_user AS auth_user,
       EXISTS (SELECT 1 FROM body_chunks AS b WHERE b.msg_id = m.id)::int
           AS has_body
FROM messages AS m LEFT JOIN recipients AS r ON r.msg_id = m.id
GROUP BY m.id;

CREATE VIEW attempts_log AS
SELECT a.id AS attempt_id,
       a.msg_id AS id,
       a.rcpt_no AS rcpt_no,
       sluice_time(a.at) AS at,
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
       a.at - m.received_at AS delay_seconds,
       a.node AS node
FROM attempts AS a
LEFT JOIN recipients AS r ON r.msg_id = a.msg_id AND r.rcpt_no = a.rcpt_no
LEFT JOIN messages AS m ON m.id = a.msg_id;
