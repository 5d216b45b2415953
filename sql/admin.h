/*
 * admin.h - the queue CLI's SQL (sluice queue ...): reading messages,
 * recipients and attempts for list/show/export/stats, and the
 * administrator's changes (retry, hold, release, delete, bounce, purge).
 *
 * The CLI runs beside the server on the same database: it opens its own
 * connection (read-only for reading commands), and every change is one
 * transaction (BEGIN IMMEDIATE ... COMMIT) that the connection's busy
 * timeout lets wait for the server's writer.  Reads that must agree with
 * each other run inside admin_read_begin/admin_read_end (one snapshot).
 *
 * Threads: a `struct db` belongs to one thread; the CLI is single-threaded.
 * Strings in the records below are malloc'd and owned by the record
 * (freed by admin_msg_free and friends); NULL means SQL NULL.
 */
#ifndef SLUICE_ADMIN_H
#define SLUICE_ADMIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "db.h"
#include "envelope.h"
#include "util.h"

/* The reply recorded for a recipient the administrator bounced. */
#define ADMIN_BOUNCE_REPLY "5.0.0 Returned to sender by the queue administrator"

/*
 * Open the queue at `path` for the CLI: read-only, or read-write (on an
 * existing queue: the server creates it).  NULL with `why` when the file
 * does not exist ("no queue at PATH"), cannot be opened, or its schema is
 * not the one this sluice knows (not created yet, older or newer).
 */
struct db *admin_open(const char *path, bool write, char *why);

/* A read snapshot: every read between the two sees the same queue. */
enum res admin_read_begin(struct db *db, char *why);
void admin_read_end(struct db *db);

/* True when `s` is a well-formed queue ID (QUEUE_ID_LEN characters of
 * the ID alphabet, upper case). */
bool admin_id_valid(const char *s);

struct admin_rcpt {
	int rcpt_no;
	char *address;
	char *domain;
	char state[16];
	int attempts;
	int64_t next_attempt_at;
	int64_t last_attempt_at; /* 0: never attempted */
	char *last_reply;
	char *notify;
	char *orcpt;
	int notified;   /* bits: 1 failure, 2 delay reported */
	bool in_flight; /* a delivery thread holds its lease now */
};

struct admin_msg {
	char id[QUEUE_ID_LEN + 1];
	int64_t received_at;
	char *sender; /* "" for <> */
	int64_t size, stored_size;
	char *body_type;
	bool smtputf8;
	char *dsn_ret, *dsn_envid;
	char *client_ip;
	int client_port; /* 0: unknown */
	char *helo, *protocol, *tls_version, *tls_cipher, *auth_user;
	struct admin_rcpt *rcpts; /* in RCPT order */
	int nrcpts;
};

/* Free what the record holds (not the record itself); NULL is a no-op. */
void admin_msg_clear(struct admin_msg *m);

/* Which messages admin_list returns. */
struct admin_filter {
	const char *state;       /* NULL: any of queued, deferred, held */
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
int admin_list(struct db *db, const struct admin_filter *f, int64_t now,
    int (*fn)(void *, const struct admin_msg *), void *arg, char *why);

/*
 * Load one message with its recipients into *m (clear it with
 * admin_msg_clear), in_flight judged at `now`.  RES_PERM when there is
 * no such message.
 */
enum res admin_load(
    struct db *db, const char *id, int64_t now, struct admin_msg *m, char *why);

/* 1 when message `id` is in the queue, 0 when not, -1 with `why`. */
int admin_exists(struct db *db, const char *id, char *why);

struct admin_attempt {
	int64_t at;
	int rcpt_no;
	const char *address; /* NULL when the recipient is gone */
	const char *mx_host, *ip, *tls, *status, *reply;
	int port;
	int64_t duration_ms; /* -1: unknown */
};

/* fn(arg, a) for each attempt of the message, in order; count or -1. */
int admin_attempts(struct db *db, const char *id,
    int (*fn)(void *, const struct admin_attempt *), void *arg, char *why);

/*
 * Stream the stored message: fn(arg, data, len) per chunk in order; a
 * non-zero return stops (not an error).  Returns the number of chunks
 * passed (0: the body is gone), or -1 with `why`.
 */
int admin_body(struct db *db, const char *id,
    int (*fn)(void *, const void *, size_t), void *arg, char *why);

/* ---- changes ---- */

enum admin_op {
	ADMIN_RETRY,   /* queued/deferred: due now */
	ADMIN_HOLD,    /* queued/deferred -> held */
	ADMIN_RELEASE, /* held -> deferred (attempted) or queued, due now */
	ADMIN_DELETE,  /* the message and everything of it */
	ADMIN_BOUNCE,  /* pending -> bounced, reported by the server */
};

/* One message of a change: `id` in, the rest out. */
struct admin_change {
	const char *id;
	bool found;
	int rcpts;         /* recipients the message has */
	int changed;       /* recipients changed (ADMIN_DELETE: all it had) */
	int notice;        /* ADMIN_BOUNCE: bounced recipients the notice covers
	                      (0 for the null sender or NOTIFY without FAILURE) */
	char sender[1100]; /* ADMIN_BOUNCE: the envelope sender */
};

/*
 * Apply `op` at time `now` to the `n` messages of `v` in one transaction.
 * RES_PERM (nothing changed) when some ID is not in the queue: their
 * `found` is false.  RES_TEMP with `why` on a database error.
 */
enum res admin_change(struct db *db, enum admin_op op, struct admin_change *v,
    int n, int64_t now, char *why);

/*
 * Make every queued or deferred recipient (at `domain` only, unless
 * NULL) due at `now`, in one transaction.  Returns how many, or -1.
 */
int64_t admin_retry_all(
    struct db *db, const char *domain, int64_t now, char *why);

/*
 * Delete finished messages whose last activity is before `before`, in
 * one transaction (db_prune_finished).  Returns how many, or -1.
 */
int admin_purge(struct db *db, int64_t before, char *why);

/* ---- statistics ---- */

struct admin_stats {
	struct db_counts counts;
	int64_t messages;         /* every message in the database */
	int64_t pending_messages; /* with a recipient queued/deferred/held */
	int64_t pending_size;     /* their total size (as received) */
	char oldest_id[QUEUE_ID_LEN + 1]; /* "" when nothing is pending */
};

struct admin_domain {
	char *domain;
	int64_t recipients, queued, deferred, held, delivered, bounced;
	int64_t oldest_pending_seconds; /* -1: nothing pending */
};

/*
 * The counts, and the queue_by_domain view in *doms (most pending first;
 * free with admin_domains_free).  RES_TEMP with `why` on error.
 */
enum res admin_get_stats(struct db *db, struct admin_stats *s,
    struct admin_domain **doms, int *ndoms, char *why);
void admin_domains_free(struct admin_domain *doms, int n);

#endif
