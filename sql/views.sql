-- sluice queue views: the documented interface for people who query the
-- queue with SQL (sqlite3 -readonly var/queue.db 'select * from queue').
-- sluice drops and re-creates them at every start, so they always match the
-- running version.  Times are shown as 'YYYY-MM-DD HH:MM:SS' in UTC.

DROP VIEW IF EXISTS queue;
DROP VIEW IF EXISTS queue_by_domain;

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
