/*
 * pg.h - the PostgreSQL backend of the storage interface, shared between
 * its files: sql/pg.c (connections, the schema, intake and delivery) and
 * sql/pg_admin.c (the queue CLI's reads and changes).  Only files in sql/
 * include it; everything else goes through store.h.
 *
 * Threads: as store.h: a connection belongs to one thread at a time.
 */
#ifndef SLUICE_PG_H
#define SLUICE_PG_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "store_impl.h"
#include "sync.h"

#define PG_SCHEMA_VERSION 2

/* The database's clock, in Unix seconds (the transaction's start). */
#define PG_NOW "(floor(extract(epoch FROM now()))::bigint)"

/* The channel of new mail's wake-ups (store_listen). */
#define PG_CHANNEL "sluice_mail"

/* The states of a recipient still to be delivered, as an SQL list. */
#define PG_PENDING "('queued', 'deferred', 'held')"

/* A connection: its `struct store` first. */
struct pg {
	struct store base;
	PGconn *c;
	char *conninfo;
	bool cli;    /* errors worded for a person */
	bool used;   /* a write connection: sessions set up (pg_setup) */
	bool notify; /* the open transaction stored mail: NOTIFY at COMMIT */
	bool piped;  /* in pipeline mode: statements sent, results unread */
	int pending; /* statements sent in this pipeline */
	/* Attempts in the pipeline, to check as their results come (fenced:
	 * a count of 0 says the lease was no longer this node's). */
	struct pg_check {
		int stmt; /* its place in the pipeline, from 0 */
		char what[64];
	} * checks;
	int nchecks, cap_checks;
	enum store_error last_error;
};

static inline struct pg *
pg_db(struct store *s)
{
	BUG_ON(s->ops != &pg_store_ops);
	return (struct pg *)(void *)s;
}

static inline struct store *
pg_store(struct pg *db)
{
	return (struct store *)(void *)db;
}

/* Parameters of one statement, in text (binary where said). */
#define PG_ARGS_MAX 24
struct pg_args {
	int n;
	const char *v[PG_ARGS_MAX];
	int len[PG_ARGS_MAX];
	int fmt[PG_ARGS_MAX];
	char num[PG_ARGS_MAX][24];
	char *owned[PG_ARGS_MAX]; /* copies made valid UTF-8 (pg_text) */
	int nowned;
};

/*
 * A text parameter (NULL: SQL NULL).  PostgreSQL's text holds only valid
 * UTF-8 and a statement with anything else fails, so octets that are not
 * (which the SQLite queue would keep) go in as '?', one per octet: no
 * peer's text can make a message or an attempt impossible to record.
 */
void pg_text(struct pg_args *a, const char *s);
void pg_int(struct pg_args *a, int64_t x);
void pg_bin(struct pg_args *a, const void *p, size_t n);

/*
 * Run `sql` with the parameters of `a` (NULL: none; used once: its
 * copies are freed), text results, or
 * binary ones with `binary`.  The result when the statement succeeded
 * (PQclear it), else NULL with `why` and the connection's last error
 * (`write`: the statement changes the queue).  A connection found
 * broken outside a transaction is re-established and the statement run
 * again, once.
 */
PGresult *pg_query(struct pg *db, const char *sql, struct pg_args *a,
    bool write, bool binary, char *why);

/* pg_query of a statement that returns no rows: RES_OK or RES_TEMP. */
enum res pg_run(struct pg *db, const char *sql, struct pg_args *a, char *why);

/* Rows a pg_run or pg_query changed (PQcmdTuples), or -1. */
int64_t pg_changed(PGresult *r);

/* Field accessors: "" / 0 / NULL for an SQL NULL. */
const char *pg_tv(const PGresult *r, int row, int col);
int64_t pg_iv(const PGresult *r, int row, int col);
char *pg_dup(const PGresult *r, int row, int col);
void pg_copy(const PGresult *r, int row, int col, char *out, size_t len);

enum res pg_begin(struct store *s, char *why);
enum res pg_commit(struct store *s, char *why);
void pg_rollback(struct store *s);
void pg_close(struct store *s);
struct store *pg_open_helper(const char *conninfo, char *why);

/* A connection to a queue whose schema is made or upgraded first (as
 * store_open), without this process counting as a node. */
struct store *pg_open_schema(const char *conninfo, char *why);

/* RES_OK when the database has the schema this sluice knows. */
enum res pg_check_schema(struct pg *db, char *why);

/* fn per chunk of the body in order; the count, -1 on error; *stopped
 * when fn returned non-zero. */
int pg_body_chunks(struct pg *db, const char *msg_id,
    int (*fn)(void *, const void *, size_t), void *arg, bool *stopped,
    char *why);

/* Recipients by state (store_counts, oldest_pending aside). */
enum res pg_count_states(struct pg *db, struct store_counts *c, char *why);

/* Delete finished messages before `before` (store_prune_finished). */
int pg_prune_finished(struct store *s, int64_t before, char *why);

/* The queue CLI's operations (sql/pg_admin.c). */
struct store *pg_open_admin(const char *conninfo, bool write, char *why);
enum res pg_read_begin(struct store *s, char *why);
void pg_read_end(struct store *s);
int pg_list(struct store *s, const struct store_filter *f, int64_t now,
    int (*fn)(void *, const struct store_msg *), void *arg, char *why);
enum res pg_load(struct store *s, const char *id, int64_t now,
    struct store_msg *m, char *why);
int pg_exists(struct store *s, const char *id, char *why);
int pg_attempts(struct store *s, const char *id,
    int (*fn)(void *, const struct store_attempt_row *), void *arg, char *why);
int pg_body(struct store *s, const char *id,
    int (*fn)(void *, const void *, size_t), void *arg, char *why);
enum res pg_change(struct store *s, enum store_op op, struct store_change *v,
    int n, int64_t now, char *why);
int64_t pg_retry_all(
    struct store *s, const char *domain, int64_t now, char *why);
int pg_purge(struct store *s, int64_t before, char *why);
int pg_nodes(struct store *s, int (*fn)(void *, const struct store_node *),
    void *arg, char *why);
enum res pg_get_stats(struct store *s, struct store_stats *st,
    struct store_domain **doms, int *ndoms, char *why);

#endif
