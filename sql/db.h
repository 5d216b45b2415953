/*
 * db.h - the door to SQLite.  No module outside sql/ calls sqlite3_*
 * (sql/admin.c holds the queue CLI's own SQL, on db_handle()).
 *
 * A `struct db` is one connection and its prepared statements.  It belongs
 * to one thread at a time (connections are opened without SQLite's mutex):
 * the queue's writer thread owns the write connection, and each reader
 * (delivery thread, CLI) opens its own.
 *
 * Functions that can fail return RES_OK or RES_TEMP and fill `why` with an
 * enhanced status code and text suitable for an SMTP reply:
 * "4.3.1 Insufficient system storage" when the disk or the database is
 * full, "4.3.0 Queue write error (...)" for anything else.  (The queue
 * CLI's connections word them for a person instead: sql/db_int.h.)
 */
#ifndef SLUICE_DB_H
#define SLUICE_DB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "envelope.h"
#include "util.h"

#define DB_SCHEMA_VERSION 4

struct db;

/*
 * Open (creating if needed) the queue at `path`: WAL mode,
 * synchronous=FULL, foreign keys on; creates or upgrades the schema and
 * re-creates the views.  NULL on failure with `why`.
 */
struct db *db_open(const char *path, char *why);

/*
 * A second read-write connection to a queue that db_open has already
 * set up (no schema work): for checkpoints, the queue CLI's changes, and
 * (after db_helper_writer) sendmail storing a message.
 */
struct db *db_open_helper(const char *path, char *why);

/* Open an existing queue read-only (CLI, tests).  NULL with `why`. */
struct db *db_open_readonly(const char *path, char *why);

void db_close(struct db *db);

/*
 * Transactions, on any read-write connection: db_begin takes the write
 * lock (BEGIN IMMEDIATE); a failed db_commit rolls back; db_rollback ends
 * whatever transaction is open (none: nothing to do).
 */
enum res db_begin(struct db *db, char *why);
enum res db_commit(struct db *db, char *why);
void db_rollback(struct db *db);

/* Store chunk `seq` of message `id`. */
enum res db_put_chunk(struct db *db, const char *id, int seq, const void *data,
    size_t len, char *why);

/* Record that message `id` is being received (its chunks are partial). */
enum res db_put_incoming(
    struct db *db, const char *id, int64_t started_at, char *why);

/*
 * Insert the message row and its recipients and clear its `incoming` row:
 * after the transaction commits the message is queued mail.
 */
enum res db_put_message(struct db *db, const struct envelope *env, char *why);

/* Delete the chunks and `incoming` row of a message never accepted. */
enum res db_drop_incoming(struct db *db, const char *id, char *why);

/*
 * Call `fn(arg, id)` for every message in `incoming`; for each one where it
 * returns non-zero, delete its chunks and row.  Returns how many were
 * deleted, or -1 on error.  Runs in its own transaction.
 */
int db_reclaim_incoming(
    struct db *db, int (*fn)(void *, const char *), void *arg, char *why);

/*
 * The WAL.  SQLite appends every commit to queue.db-wal; a checkpoint
 * copies the WAL's pages into queue.db, and only once every page has been
 * copied and no reader still uses the WAL can the next commit start again
 * at the WAL's beginning.  Under a steady stream of commits that moment
 * never comes by itself (a checkpoint that does not hold the writer back
 * always finds newer commits behind it), so the queue forces one when
 * the WAL passes its cap (queue/queue.c).
 */
enum db_ckpt_mode {
	DB_CKPT_PASSIVE,  /* copy what no reader needs; never waits */
	DB_CKPT_RESTART,  /* copy everything, then wait (busy_ms) until
	                   * the next commit may start the WAL over */
	DB_CKPT_TRUNCATE, /* RESTART, and truncate the WAL file to 0 */
};

struct db_ckpt {
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
enum res db_checkpoint(struct db *db, enum db_ckpt_mode mode, int busy_ms,
    struct db_ckpt *out, char *why);

/*
 * For the writer's connection: keep the WAL file at most `limit` bytes
 * once it starts over (PRAGMA journal_size_limit), turn off SQLite's own
 * checkpoints (the queue runs them), and note the WAL's size after every
 * commit for db_wal_bytes.
 */
enum res db_watch_wal(struct db *db, int64_t limit, char *why);

/*
 * The size of the WAL's content after this connection's last commit
 * (frames and header, in bytes; 0 before the first commit), as noted by
 * db_watch_wal.
 */
int64_t db_wal_bytes(const struct db *db);

/* ---- delivery ---- */

/* A recipient that is due for delivery. */
struct db_due {
	char msg_id[QUEUE_ID_LEN + 1];
	int rcpt_no;
	char domain[256];
};

/*
 * Up to `max` recipients in state queued or deferred whose next attempt is
 * due at `now` and that no delivery thread holds (no lease, or an expired
 * one), oldest first.  Returns the count, or -1 with `why`.
 */
int db_list_due(
    struct db *db, int64_t now, struct db_due *out, int max, char *why);

/* When the next recipient becomes due (0 when none is waiting). */
int64_t db_next_due(struct db *db);

/* Lease a recipient to a delivery thread until `until`. */
enum res db_lease(
    struct db *db, const char *msg_id, int rcpt_no, int64_t until, char *why);

/* Drop every lease (at start: no thread of a previous run is alive). */
enum res db_clear_leases(struct db *db, char *why);

/* What delivery needs to know about a message. */
struct db_msg_info {
	char sender[1100];
	char body_type[16];
	int smtputf8;
	char dsn_ret[8]; /* "FULL", "HDRS" or "" */
	char envid[128];
	int64_t received_at;
	int64_t stored_size;
};

struct db_rcpt_info {
	int rcpt_no;
	char address[1100];
	char domain[256];
	char state[16];
	char notify[64]; /* "" when absent */
	char orcpt[520]; /* "" when absent */
	int attempts;
	int notified; /* 1: failure reported, 2: delay reported */
};

/* RES_PERM when the message is gone (deleted while queued). */
enum res db_load_message(
    struct db *db, const char *msg_id, struct db_msg_info *m, char *why);
enum res db_load_rcpt(struct db *db, const char *msg_id, int rcpt_no,
    struct db_rcpt_info *r, char *why);

/*
 * Stream the stored message: fn(arg, data, len) once per chunk, in order;
 * a non-zero return from fn stops and is returned as RES_TEMP.
 */
enum res db_read_body(struct db *db, const char *msg_id,
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
struct db_attempt {
	const char *msg_id;
	int rcpt_no;
	int64_t at;
	const char *mx_host; /* NULL when no host was reached */
	const char *ip;
	int port;
	const char *tls;    /* "TLS1.3 TLS_AES_..." or NULL */
	const char *status; /* "sent", "deferred", "bounced" */
	const char *reply;
	int64_t duration_ms;
	const char *state; /* recipients.state after this attempt */
	int64_t next_at;
};
enum res db_record_attempt(
    struct db *db, const struct db_attempt *a, char *why);

/* A bounced recipient not yet reported to the sender. */
struct db_bounced {
	int rcpt_no;
	char address[1100];
	char orcpt[520];
	char notify[64];
	char last_reply[512];
	char mx_host[256];
	int64_t last_attempt_at;
};

/*
 * When no recipient of the message is queued or deferred any more, the
 * bounced ones not yet reported (notified = 0): *out (malloc'd, free it)
 * and the count; 0 when some are still pending or none is left to report;
 * -1 on error.
 */
int db_unreported_bounces(
    struct db *db, const char *msg_id, struct db_bounced **out, char *why);

/*
 * Up to `max` messages with bounced recipients not yet reported and none
 * pending: normally none, as delivery reports in the same transaction;
 * these are the ones `sluice queue bounce` returned.  Count or -1.
 */
int db_list_unreported(
    struct db *db, char (*ids)[QUEUE_ID_LEN + 1], int max, char *why);

/* Mark one recipient's delay as reported (delay_warning_time). */
enum res db_mark_delay_reported(
    struct db *db, const char *msg_id, int rcpt_no, char *why);

/* Mark the message's bounced recipients as reported. */
enum res db_mark_reported(struct db *db, const char *msg_id, char *why);

/*
 * When every recipient of the message is delivered or bounced, delete its
 * body (the rows stay, as history).  Returns RES_OK either way.
 */
enum res db_release_finished(struct db *db, const char *msg_id, char *why);

/*
 * The SQLite connection itself, for the modules that own their SQL (the
 * queue CLI in sql/admin.c).  Never shared between threads.
 */
struct sqlite3 *db_handle(struct db *db);

/* Recipients by state, and the oldest message with one still pending. */
struct db_counts {
	int64_t queued, deferred, held, delivered, bounced;
	int64_t oldest_pending; /* received_at (Unix seconds), 0: none */
};

enum res db_queue_counts(struct db *db, struct db_counts *c, char *why);

/*
 * Take and give back the write lock (BEGIN IMMEDIATE; ROLLBACK): RES_OK
 * when this connection could write now (sluice health).
 */
enum res db_probe_write(struct db *db, char *why);

/*
 * Delete finished messages (every recipient delivered or bounced) whose
 * last activity is before `before` (Unix seconds), with their recipients,
 * attempts and any body left, at most DB_PRUNE_MAX of them (call again
 * while it returns that many).  Runs in the caller's transaction.
 * Returns how many messages went, or -1 with `why`.
 */
#define DB_PRUNE_MAX 1000
int db_prune_finished(struct db *db, int64_t before, char *why);

/*
 * Make a db_open_helper connection able to store mail (db_put_chunk,
 * db_put_message in a db_begin ... db_commit): synchronous=FULL,
 * foreign keys on, the writer's statements prepared, after checking that
 * the queue has the schema this sluice writes (it never creates or
 * upgrades one: that is db_open's work, at the server's start).  For
 * `sluice sendmail` storing a message while no relay answers.  RES_TEMP
 * with `why` on failure.
 */
enum res db_helper_writer(struct db *db, char *why);

/*
 * Wait at most `ms` milliseconds for a lock another connection holds
 * (the default is 10 s): for callers with a deadline (sluice health).
 */
void db_set_busy_timeout(struct db *db, int ms);

/*
 * Make due at `now` the deferred recipients last attempted at or after
 * `since` whose domain `match(arg, domain)` accepts: for a destination
 * that was suspended since `since` and is back, whose mail should go at
 * once rather than at each recipient's next retry.  Runs in the caller's
 * transaction.  Returns how many recipients, or -1 with `why`.
 */
int db_resume_deferred(struct db *db, int64_t since, int64_t now,
    bool (*match)(void *arg, const char *domain), void *arg, char *why);

/*
 * The recipient of `domain` still to deliver (queued or deferred, not
 * leased at `now`) that is due soonest, due or not: the one to probe a
 * suspended destination with.  1 with *out, 0 when there is none, -1
 * with `why`.
 */
int db_first_pending(struct db *db, int64_t now, const char *domain,
    struct db_due *out, char *why);

#endif
