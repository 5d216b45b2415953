/*
 * store.h - the one door to stored mail: every module outside sql/ reads
 * and changes the queue through these functions, and none of them knows
 * which database holds it.
 *
 * A `struct store` is one connection to the queue, with a table of
 * operations behind it (sql/store_impl.h) that a backend fills: SQLite
 * today (sql/sqlite.c, sql/sqlite_admin.c).  store_open and friends pick
 * the backend from the queue's path.  The operations are those of the
 * domain: put a message, claim due recipients, record the outcome of an
 * attempt, count, and the queue CLI's reads and changes.
 *
 * Threads: a `struct store` belongs to one thread at a time: the queue's
 * writer thread owns the write connection, and each reader (delivery
 * thread, CLI, health, metrics) opens its own.
 *
 * Failures: functions return RES_OK or RES_TEMP (RES_PERM where said) and
 * fill `why` with an enhanced status code and text suitable for an SMTP
 * reply, from the table of storage errors below (store_error_why);
 * store_last_error says which one, for the reply code.  Connections
 * opened for the queue CLI (store_open_admin) word them for a person
 * instead ("queue database error: ...").
 *
 * Strings in the CLI's records (struct store_msg and friends) are malloc'd
 * and owned by the record; NULL means none.
 */
#ifndef SLUICE_STORE_H
#define SLUICE_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "envelope.h"
#include "util.h"

struct store;

/*
 * Storage errors, and the SMTP reply each one gives a client whose mail
 * could not be stored (RFC 3463):
 *   STORE_E_FULL   452 4.3.1 Insufficient system storage (disk or
 *                  database full: the client should try again later,
 *                  perhaps with fewer recipients or a smaller message)
 *   STORE_E_WRITE  451 4.3.0 Queue write error (detail)
 *   STORE_E_READ   451 4.3.0 queue read error (detail)
 */
enum store_error {
	STORE_E_NONE = 0,
	STORE_E_FULL,
	STORE_E_WRITE,
	STORE_E_READ,
};

/* The reply code for `e` (451 for STORE_E_NONE: no worse than a write
 * error). */
int store_error_code(enum store_error e);

/* The reply text for `e` into why[WHY_MAX]: the enhanced status code,
 * the words, and `detail` in parentheses where the table has it. */
void store_error_why(enum store_error e, const char *detail, char *why);

/* The kind of this connection's last failure (STORE_E_NONE: none yet):
 * read right after a function failed, it says why. */
enum store_error store_last_error(const struct store *s);

/*
 * For a queue shared by several nodes (PostgreSQL): the name this node
 * holds leases and is listed under (node_name), and whether a database
 * that does not make commits durable (fsync or synchronous_commit off) is
 * accepted anyway (allow_unsafe_database).  Call before opening; the
 * SQLite backend has no use for either.
 */
void store_configure(const char *node_name, bool allow_unsafe_database);

/* Is `path` a PostgreSQL queue (a postgresql:// or postgres:// URI)
 * rather than an SQLite file? */
bool store_path_is_database(const char *path);

/* `path` as it may be shown (logs, errors): a password in a PostgreSQL
 * URI replaced by "***". */
void store_path_shown(const char *path, char *out, size_t len);

/* The node name store_configure set ("" before). */
const char *store_node_name(void);

/*
 * Open (creating if needed) the queue at `path`: WAL mode,
 * synchronous=FULL, foreign keys on; creates or upgrades the schema and
 * re-creates the views.  NULL on failure with `why`.
 */
struct store *store_open(const char *path, char *why);

/*
 * A second read-write connection to a queue that store_open has already
 * set up (no schema work): for checkpoints, the queue CLI's changes, and
 * (after store_helper_writer) sendmail storing a message.
 */
struct store *store_open_helper(const char *path, char *why);

/* Open an existing queue read-only (CLI, tests).  NULL with `why`. */
struct store *store_open_readonly(const char *path, char *why);

void store_close(struct store *s);

/*
 * Transactions, on any read-write connection: store_begin takes the write
 * lock (BEGIN IMMEDIATE); a failed store_commit rolls back; store_rollback ends
 * whatever transaction is open (none: nothing to do).
 */
enum res store_begin(struct store *s, char *why);
enum res store_commit(struct store *s, char *why);
void store_rollback(struct store *s);

/*
 * Writing new mail.  A message's body is stored in chunks of at most
 * STORE_CHUNK octets, numbered from 0; readers concatenate them in order.
 * A session streams them in as the client sends (store_put_incoming with
 * the first, so that a crash leaves them reclaimable, then
 * store_put_chunk), and store_put_mail makes the message queued mail.
 */
#define STORE_CHUNK (64 * 1024)

/* Store chunk `seq` of message `id`. */
enum res store_put_chunk(struct store *s, const char *id, int seq,
    const void *data, size_t len, char *why);

/* Record that message `id` is being received (its chunks are partial). */
enum res store_put_incoming(
    struct store *s, const char *id, int64_t started_at, char *why);

/*
 * The one function that writes new mail, for sessions (on the queue's
 * writer thread), DSNs (in the transaction that records the attempts
 * they report) and `sluice sendmail` storing a message while no relay
 * answers.  In the caller's transaction: store the message's remaining
 * octets (the `nparts` parts, concatenated) as chunks `first_seq`
 * onwards (0 .. first_seq - 1 were stored by store_put_chunk as they
 * arrived), env->prepend in front (at the start of chunk 0 when none was
 * stored yet, else as chunk -1, read first), then its envelope and
 * recipients, and clear its `incoming`
 * row: once the transaction commits, the message is queued mail
 * (env->id names it).
 */
struct store_part {
	const void *data;
	size_t len;
};
enum res store_put_mail(struct store *s, const struct envelope *env,
    int first_seq, const struct store_part *parts, int nparts, char *why);

/* Delete the chunks and `incoming` row of a message never accepted. */
enum res store_drop_incoming(struct store *s, const char *id, char *why);

/*
 * Call `fn(arg, id)` for every message in `incoming`; for each one where it
 * returns non-zero, delete its chunks and row.  Returns how many were
 * deleted, or -1 on error.  Runs in its own transaction.
 */
int store_reclaim_incoming(
    struct store *s, int (*fn)(void *, const char *), void *arg, char *why);

/*
 * The WAL.  SQLite appends every commit to queue.db-wal; a checkpoint
 * copies the WAL's pages into queue.db, and only once every page has been
 * copied and no reader still uses the WAL can the next commit start again
 * at the WAL's beginning.  Under a steady stream of commits that moment
 * never comes by itself (a checkpoint that does not hold the writer back
 * always finds newer commits behind it), so the queue forces one when
 * the WAL passes its cap (queue/queue.c).
 */
enum store_ckpt_mode {
	STORE_CKPT_PASSIVE,  /* copy what no reader needs; never waits */
	STORE_CKPT_RESTART,  /* copy everything, then wait (busy_ms) until
	                      * the next commit may start the WAL over */
	STORE_CKPT_TRUNCATE, /* RESTART, and truncate the WAL file to 0 */
};

struct store_ckpt {
	int64_t wal_bytes;    /* the WAL's content when it ran */
	int64_t copied_bytes; /* how much of that is in queue.db now */
	bool complete;        /* PASSIVE: everything copied; RESTART and
	                       * TRUNCATE: the WAL can start over */
};

/*
 * Checkpoint in `mode` on this connection, which must have no
 * transaction open.  RESTART and TRUNCATE take the write lock and wait at
 * most `busy_ms` for it and for readers (a reader inside a transaction
 * that began before the newest commits keeps them from completing); the
 * connection's busy timeout is restored afterwards.  RES_OK when the
 * checkpoint ran, complete or not (see `out`); RES_TEMP with `why` on an
 * error.
 */
enum res store_checkpoint(struct store *s, enum store_ckpt_mode mode,
    int busy_ms, struct store_ckpt *out, char *why);

/*
 * For the writer's connection: keep the WAL file at most `limit` bytes
 * once it starts over (PRAGMA journal_size_limit), turn off SQLite's own
 * checkpoints (the queue runs them), and note the WAL's size after every
 * commit for store_wal_bytes.
 */
enum res store_watch_wal(struct store *s, int64_t limit, char *why);

/*
 * The size of the WAL's content after this connection's last commit
 * (frames and header, in bytes; 0 before the first commit), as noted by
 * store_watch_wal.
 */
int64_t store_wal_bytes(const struct store *s);

/*
 * Wake-ups between the nodes of a shared queue.  A transaction that
 * stored new mail notifies every listening node once, as it commits (one
 * NOTIFY per batch, whatever its size; PostgreSQL takes a global lock for
 * each at commit).  store_listen makes this connection a listener
 * (RES_PERM when the backend has none: SQLite); store_wait_notify waits
 * at most `ms` milliseconds: 1 when notifications came, 0 at the timeout,
 * -1 with `why` when the connection is lost (listen again on a new one).
 */
enum res store_listen(struct store *s, char *why);
int store_wait_notify(struct store *s, int ms, char *why);

/* ---- delivery ---- */

/* A recipient that is due for delivery. */
struct store_due {
	char msg_id[QUEUE_ID_LEN + 1];
	int rcpt_no;
	char domain[SMTP_DOMAIN_MAX + 1];
	char sender[ADDRESS_MAX + 1]; /* the message's; "" for <> */
};

/*
 * Up to `max` recipients in state queued or deferred whose next attempt is
 * due at `now` and that no delivery thread holds (no lease, or an expired
 * one), oldest first.  Returns the count, or -1 with `why`.
 */
int store_list_due(
    struct store *s, int64_t now, struct store_due *out, int max, char *why);

/* When the next recipient becomes due (0 when none is waiting). */
int64_t store_next_due(struct store *s);

/* Lease a recipient to a delivery thread until `until`. */
enum res store_lease(
    struct store *s, const char *msg_id, int rcpt_no, int64_t until, char *why);

/* Drop every lease (at start: no thread of a previous run is alive); on
 * a shared queue, this node's only. */
enum res store_clear_leases(struct store *s, char *why);

/*
 * A shared queue's heartbeat: note this node alive (nodes.heartbeat_at)
 * and extend every lease it holds to `lease` seconds from now, on the
 * database's clock, so that only a node that stopped loses its
 * recipients to the others.  *live: how many nodes (this one included)
 * beat within the last `lease` seconds, among whom the per-destination
 * limits are shared.  Nothing to do for SQLite (*live = 1).
 */
enum res store_heartbeat(struct store *s, int lease, int *live, char *why);

/* What delivery needs to know about a message. */
struct store_msg_info {
	char sender[ADDRESS_MAX + 1];
	enum body_type body_type;
	int smtputf8;
	enum dsn_ret dsn_ret;
	char envid[SMTP_ENVID_MAX + 1];
	int64_t received_at;
	int64_t stored_size;
	int requiretls;      /* RFC 8689: MAIL FROM ... REQUIRETLS */
	int tls_required_no; /* "TLS-Required: No" */
};

struct store_rcpt_info {
	int rcpt_no;
	char address[ADDRESS_MAX + 1];
	char domain[SMTP_DOMAIN_MAX + 1];
	enum rcpt_state state;
	unsigned notify;                /* NOTIFY_* bits, 0 when absent */
	char orcpt[SMTP_ORCPT_MAX + 1]; /* "" when absent */
	int attempts;
	unsigned notified;   /* NOTIFIED_* bits */
	int64_t lease_token; /* the lease this node holds on it (the fence
	                      * store_record_attempt checks), 0: none */
};

/* RES_PERM when the message is gone (deleted while queued). */
enum res store_load_message(
    struct store *s, const char *msg_id, struct store_msg_info *m, char *why);
enum res store_load_rcpt(struct store *s, const char *msg_id, int rcpt_no,
    struct store_rcpt_info *r, char *why);

/*
 * Stream the stored message: fn(arg, data, len) once per chunk, in order;
 * a non-zero return from fn stops and is returned as RES_TEMP.
 */
enum res store_read_body(struct store *s, const char *msg_id,
    int (*fn)(void *, const void *, size_t), void *arg, char *why);

/*
 * Record one delivery attempt of one recipient and its new state
 * ("delivered", "deferred", "bounced"), clearing its lease.  `next_at` is
 * the next attempt time for deferred recipients.
 *
 * The queue CLI may have changed the recipient meanwhile (it works on the
 * same database while deliveries run): a deleted recipient records
 * nothing; a held one stays held unless the attempt was final; one the
 * administrator bounced (not yet reported) becomes delivered only if it
 * was.
 */
struct store_attempt {
	const char *msg_id;
	int rcpt_no;
	int64_t at;
	const char *mx_host; /* NULL when no host was reached */
	const char *ip;
	int port;
	const char *tls;          /* "TLS1.3 TLS_AES_..." or NULL */
	const char *security;     /* none, encrypted, verified, dane; or NULL */
	const char *security_why; /* "DANE-EE 3 1 1", ...; or NULL */
	const char *reply;
	int64_t duration_ms;
	enum rcpt_state state; /* after this attempt: delivered, deferred or
	                        * bounced (attempts.status: sent, ...) */
	int64_t next_at;
	int64_t lease_token; /* store_rcpt_info's: when not 0, the attempt
	                      * is recorded only while that lease is still
	                      * the recipient's (a shared queue's fence) */
};
enum res store_record_attempt(
    struct store *s, const struct store_attempt *a, char *why);

/* ---- the MTA-STS policy cache (sts_policies) ---- */

/* A cached policy as read. */
struct store_sts {
	char id[33];
	char *text; /* the policy file (malloc'd: free it) */
	int64_t fetched_at, expires_at;
};

/* 1 with *out when `domain` (lower case) has a cached policy, 0 when
 * not, -1 with `why`. */
int store_sts_get(
    struct store *s, const char *domain, struct store_sts *out, char *why);

/* A policy to cache (text set: replaces the domain's row), or a failed
 * refresh to note (text NULL: last_error of an existing row). */
struct store_sts_row {
	const char *domain, *id, *mode, *mx, *text, *error;
	int64_t max_age, fetched_at;
};
enum res store_sts_put(
    struct store *s, const struct store_sts_row *r, char *why);

/* Domains (up to `max`) whose enforce or testing policy is within a
 * quarter of its max_age (at most 6 hours) of expiring at `now`, soonest
 * first: into domains[][256]; the count, or -1 with `why`. */
int store_sts_due(
    struct store *s, int64_t now, char (*domains)[256], int max, char *why);

/* ---- TLS-RPT results (tlsrpt_results) ---- */

/* One TLS session's result ("" for a field not known; result_type ""
 * for a success). */
struct store_tlsrpt {
	int64_t day; /* UTC midnight */
	const char *domain, *policy_type, *policy_string, *mx_host;
	const char *result_type, *sending_ip, *receiving_ip;
};

/* sent_at 0: 1 when the reports of `day` were sent, 0 when not; else
 * note them sent at `sent_at` (1).  -1 with `why`. */
int store_tlsrpt_sent(struct store *s, int64_t day, int64_t sent_at, char *why);

/* Count one session (in the caller's transaction). */
enum res store_tlsrpt_add(
    struct store *s, const struct store_tlsrpt *t, char *why);

/* fn(arg, row, count) for each result of `day`, ordered by domain and
 * policy (a non-zero return stops); the number of rows, or -1. */
int store_tlsrpt_day(struct store *s, int64_t day,
    int (*fn)(void *, const struct store_tlsrpt *, int64_t), void *arg,
    char *why);

/* A bounced recipient not yet reported to the sender. */
struct store_bounced {
	int rcpt_no;
	char address[ADDRESS_MAX + 1];
	char orcpt[SMTP_ORCPT_MAX + 1];
	unsigned notify; /* NOTIFY_* bits */
	char last_reply[SMTP_REPLY_MAX];
	char mx_host[SMTP_DOMAIN_MAX + 1];
	int64_t last_attempt_at;
};

/*
 * When no recipient of the message is queued or deferred any more, the
 * bounced ones not yet reported (notified = 0): *out (malloc'd, free it)
 * and the count; 0 when some are still pending or none is left to report;
 * -1 on error.
 */
int store_unreported_bounces(
    struct store *s, const char *msg_id, struct store_bounced **out, char *why);

/*
 * Up to `max` messages with bounced recipients not yet reported and none
 * pending: normally none, as delivery reports in the same transaction;
 * these are the ones `sluice queue bounce` returned.  Count or -1.
 */
int store_list_unreported(
    struct store *s, char (*ids)[QUEUE_ID_LEN + 1], int max, char *why);

/* Mark one recipient's delay as reported (delay_warning_time). */
enum res store_mark_delay_reported(
    struct store *s, const char *msg_id, int rcpt_no, char *why);

/* Mark the message's bounced recipients as reported. */
enum res store_mark_reported(struct store *s, const char *msg_id, char *why);

/*
 * When every recipient of the message is delivered or bounced, delete its
 * body (the rows stay, as history).  Returns RES_OK either way.
 */
enum res store_release_finished(struct store *s, const char *msg_id, char *why);

/* Recipients by state, and the oldest message with one still pending. */
struct store_counts {
	int64_t queued, deferred, held, delivered, bounced;
	int64_t oldest_pending; /* received_at (Unix seconds), 0: none */
};

enum res store_queue_counts(struct store *s, struct store_counts *c, char *why);

/*
 * Take and give back the write lock (BEGIN IMMEDIATE; ROLLBACK): RES_OK
 * when this connection could write now (sluice health).
 */
enum res store_probe_write(struct store *s, char *why);

/*
 * Delete finished messages (every recipient delivered or bounced) whose
 * last activity is before `before` (Unix seconds), with their recipients,
 * attempts and any body left, at most STORE_PRUNE_MAX of them (call again
 * while it returns that many).  Runs in the caller's transaction.
 * Returns how many messages went, or -1 with `why`.
 */
#define STORE_PRUNE_MAX 1000
int store_prune_finished(struct store *s, int64_t before, char *why);

/*
 * Make a store_open_helper connection able to store mail (store_put_chunk,
 * store_put_mail in a store_begin ... store_commit): synchronous=FULL,
 * foreign keys on, the writer's statements prepared, after checking that
 * the queue has the schema this sluice writes (it never creates or
 * upgrades one: that is store_open's work, at the server's start).  For
 * `sluice sendmail` storing a message while no relay answers.  RES_TEMP
 * with `why` on failure.
 */
enum res store_helper_writer(struct store *s, char *why);

/*
 * Wait at most `ms` milliseconds for a lock another connection holds
 * (the default is 10 s): for callers with a deadline (sluice health).
 */
void store_set_busy_timeout(struct store *s, int ms);

/*
 * Make due at `now` the deferred recipients last attempted at or after
 * `since` whose domain `match(arg, domain)` accepts: for a destination
 * that was suspended since `since` and is back, whose mail should go at
 * once rather than at each recipient's next retry.  Runs in the caller's
 * transaction.  Returns how many recipients, or -1 with `why`.
 */
int store_resume_deferred(struct store *s, int64_t since, int64_t now,
    bool (*match)(void *arg, const char *domain), void *arg, char *why);

/*
 * The recipient of `domain` still to deliver (queued or deferred, not
 * leased at `now`) that is due soonest, due or not: the one to probe a
 * suspended destination with.  1 with *out, 0 when there is none, -1
 * with `why`.
 */
int store_first_pending(struct store *s, int64_t now, const char *domain,
    struct store_due *out, char *why);

/* ---- the queue CLI (sluice queue ...) ---- */

/* The reply recorded for a recipient the administrator bounced. */
#define STORE_BOUNCE_REPLY "5.0.0 Returned to sender by the queue administrator"

/*
 * Open the queue at `path` for the CLI: read-only, or read-write (on an
 * existing queue: the server creates it).  NULL with `why` when the file
 * does not exist ("no queue at PATH"), cannot be opened, or its schema is
 * not the one this sluice knows (not created yet, older or newer).
 */
struct store *store_open_admin(const char *path, bool write, char *why);

/* A read snapshot: every read between the two sees the same queue. */
enum res store_read_begin(struct store *s, char *why);
void store_read_end(struct store *s);

struct store_rcpt {
	int rcpt_no;
	char *address;
	char *domain;
	enum rcpt_state state;
	int attempts;
	int64_t next_attempt_at;
	int64_t last_attempt_at; /* 0: never attempted */
	char *last_reply;
	unsigned notify; /* NOTIFY_* bits, 0 when absent */
	char *orcpt;
	unsigned notified; /* NOTIFIED_* bits */
	bool in_flight;    /* a delivery thread holds its lease now */
};

struct store_msg {
	char id[QUEUE_ID_LEN + 1];
	int64_t received_at;
	char *sender; /* "" for <> */
	int64_t size, stored_size;
	enum body_type body_type;
	bool smtputf8;
	enum dsn_ret dsn_ret;
	char *dsn_envid;
	char *client_ip;
	int client_port; /* 0: unknown */
	char *helo, *protocol, *tls_version, *tls_cipher, *auth_user;
	struct store_rcpt *rcpts; /* in RCPT order */
	int nrcpts;
};

/* Free what the record holds (not the record itself); NULL is a no-op. */
void store_msg_clear(struct store_msg *m);

/* Which messages store_list returns. */
struct store_filter {
	const enum rcpt_state *state; /* NULL: any of queued, deferred, held */
	const char *domain;      /* NULL: any (compared case-insensitively) */
	int64_t received_before; /* 0: any age */
};

/*
 * Call fn(arg, m) for each message that has a recipient matching the
 * filter's state and domain (the same recipient), received before
 * `received_before`, oldest first; `m` (every recipient of the message)
 * is valid during the call only.  A recipient is in_flight when its
 * lease runs beyond `now`.  A non-zero return from fn stops.  Returns
 * how many messages were passed, or -1 with `why`.
 */
int store_list(struct store *s, const struct store_filter *f, int64_t now,
    int (*fn)(void *, const struct store_msg *), void *arg, char *why);

/*
 * Load one message with its recipients into *m (clear it with
 * store_msg_clear), in_flight judged at `now`.  RES_PERM when there is
 * no such message.
 */
enum res store_load(struct store *s, const char *id, int64_t now,
    struct store_msg *m, char *why);

/* 1 when message `id` is in the queue, 0 when not, -1 with `why`. */
int store_exists(struct store *s, const char *id, char *why);

struct store_attempt_row {
	int64_t at;
	int rcpt_no;
	const char *address; /* NULL when the recipient is gone */
	const char *mx_host, *ip, *tls, *status, *reply;
	const char *security, *security_why; /* NULL: not recorded */
	int port;
	int64_t duration_ms; /* -1: unknown */
};

/* fn(arg, a) for each attempt of the message, in order; count or -1. */
int store_attempts(struct store *s, const char *id,
    int (*fn)(void *, const struct store_attempt_row *), void *arg, char *why);

/*
 * Stream the stored message: fn(arg, data, len) per chunk in order; a
 * non-zero return stops (not an error).  Returns the number of chunks
 * passed (0: the body is gone), or -1 with `why`.
 */
int store_body(struct store *s, const char *id,
    int (*fn)(void *, const void *, size_t), void *arg, char *why);

/* ---- changes ---- */

enum store_op {
	STORE_RETRY,   /* queued/deferred: due now */
	STORE_HOLD,    /* queued/deferred -> held */
	STORE_RELEASE, /* held -> deferred (attempted) or queued, due now */
	STORE_DELETE,  /* the message and everything of it */
	STORE_BOUNCE,  /* pending -> bounced, reported by the server */
};

/* One message of a change: `id` in, the rest out. */
struct store_change {
	const char *id;
	bool found;
	int rcpts;   /* recipients the message has */
	int changed; /* recipients changed (STORE_DELETE: all it had) */
	int notice;  /* STORE_BOUNCE: bounced recipients the notice covers
	                (0 for the null sender or NOTIFY without FAILURE) */
	char sender[ADDRESS_MAX + 1]; /* STORE_BOUNCE: the envelope sender */
};

/*
 * Apply `op` at time `now` to the `n` messages of `v` in one transaction.
 * RES_PERM (nothing changed) when some ID is not in the queue: their
 * `found` is false.  RES_TEMP with `why` on a database error.
 */
enum res store_change(struct store *s, enum store_op op, struct store_change *v,
    int n, int64_t now, char *why);

/*
 * Make every queued or deferred recipient (at `domain` only, unless
 * NULL) due at `now`, in one transaction.  Returns how many, or -1.
 */
int64_t store_retry_all(
    struct store *s, const char *domain, int64_t now, char *why);

/*
 * Delete finished messages whose last activity is before `before`, in
 * one transaction (store_prune_finished).  Returns how many, or -1.
 */
int store_purge(struct store *s, int64_t before, char *why);

/* ---- the nodes of a shared queue ---- */

struct store_node {
	const char *name, *version;
	int64_t started_at, heartbeat_at; /* the database's clock */
	int64_t heartbeat_age;            /* seconds since the heartbeat */
	int64_t leases;                   /* recipients it holds now */
};

/*
 * fn(arg, node) for each node of a shared queue, by name (a non-zero
 * return stops); the count, or -1 with `why` (an SQLite queue has no
 * nodes: -1 saying so).
 */
int store_nodes(struct store *s, int (*fn)(void *, const struct store_node *),
    void *arg, char *why);

/* ---- moving a queue ---- */

/*
 * Copy the SQLite queue at `from` into the PostgreSQL queue at `to`
 * (its schema made if need be; it must hold no message), in one
 * transaction on each: messages, recipients, bodies, attempts, TLS-RPT
 * results and MTA-STS policies; not leases or partly received mail.  The
 * number of tables copied, with the rows of each in counts[] and its
 * name in names[] (up to `max`), or -1 with `why` (nothing copied).
 */
int store_migrate(const char *from, const char *to, int64_t counts[],
    const char *names[], int max, char *why);

/* ---- statistics ---- */

struct store_stats {
	struct store_counts counts;
	int64_t messages;         /* every message in the database */
	int64_t pending_messages; /* with a recipient queued/deferred/held */
	int64_t pending_size;     /* their total size (as received) */
	char oldest_id[QUEUE_ID_LEN + 1]; /* "" when nothing is pending */
};

struct store_domain {
	char *domain;
	int64_t recipients, queued, deferred, held, delivered, bounced;
	int64_t oldest_pending_seconds; /* -1: nothing pending */
};

/*
 * The counts, and the queue_by_domain view in *doms (most pending first;
 * free with store_domains_free).  RES_TEMP with `why` on error.
 */
enum res store_get_stats(struct store *s, struct store_stats *st,
    struct store_domain **doms, int *ndoms, char *why);
void store_domains_free(struct store_domain *doms, int n);

#endif
