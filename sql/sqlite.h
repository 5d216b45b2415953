/*
 * sqlite.h - the SQLite backend of the storage interface, shared between
 * its files: sql/sqlite.c (connections, the schema, intake and delivery)
 * and sql/sqlite_admin.c (the queue CLI's reads and changes).  The
 * statement cache, the step and error helpers, the schema check, the
 * counts by state and the deletion of whole messages.  Only files in
 * sql/ include it; everything else goes through store.h.
 *
 * Threads: as store.h: a connection belongs to one thread at a time.
 */
#ifndef SLUICE_SQLITE_H
#define SLUICE_SQLITE_H

#include <sqlite3.h>
#include <stdbool.h>
#include <stddef.h>

#include "store_impl.h"
#include "sync.h"

#define DB_SCHEMA_VERSION 9

/* A connection: its `struct store` first (sql/sqlite.c). */
struct db;

/* The connection behind a store of this backend, and back. */
static inline struct db *
sq_db(struct store *s)
{
	BUG_ON(s->ops != &sqlite_store_ops);
	return (struct db *)(void *)s;
}

static inline const struct db *
sq_cdb(const struct store *s)
{
	BUG_ON(s->ops != &sqlite_store_ops);
	return (const struct db *)(const void *)s;
}

static inline struct store *
sq_store(struct db *db)
{
	return (struct store *)(void *)db;
}

/* The states of a recipient still to be delivered, as an SQL list. */
#define DB_PENDING "('queued', 'deferred', 'held')"

/* The IDs of the messages with a recipient pending, for "id IN ...": the
 * recipients' index finds them without reading every message. */
#define DB_PENDING_IDS                                                         \
	"(SELECT msg_id FROM recipients WHERE state IN " DB_PENDING ")"

/*
 * The statement for `sql`, prepared once per connection and kept (its
 * bindings cleared): `sql` is a string literal, so its address
 * identifies it.  The caller resets it after use (sqlite3_reset), never
 * finalizes it (store_close does).  NULL with `why` on error.
 */
sqlite3_stmt *prep(struct db *db, const char *sql, char *why);

/*
 * Step a statement that returns no rows, then reset it and clear its
 * bindings.  RES_TEMP with `why` (db_fail) on error.
 */
enum res step_done(struct db *db, sqlite3_stmt *st, char *why);

/* prep and step_done of `sql` (a string literal). */
enum res db_run(struct db *db, const char *sql, char *why);

/*
 * Fill `why` with the connection's last error (`rc`: the failing call's
 * result code) and return RES_TEMP.  The words are those of an SMTP reply
 * (see store.h), or, after db_errors_for_cli, "queue database error: ...".
 */
enum res db_fail(struct db *db, int rc, char *why);

/* The SQLite connection itself (the CLI's row counts). */
sqlite3 *sq_handle(struct db *db);

/* Word this connection's errors for a person at a terminal. */
void db_errors_for_cli(struct db *db);

/* Column `col` as text into out[len] ("" for NULL), cut to fit. */
void copy_col(sqlite3_stmt *st, int col, char *out, size_t len);

/* PRAGMA user_version: the queue's schema version, -1 when unreadable. */
int user_version(struct db *db);

/*
 * RES_OK when the queue has the schema this sluice reads and writes
 * (DB_SCHEMA_VERSION); else RES_TEMP with `why` naming the file and what
 * is wrong: unreadable, no queue yet, older (start sluice serve once to
 * upgrade it) or newer.  Creating and upgrading is store_open's work only.
 */
enum res db_check_schema(struct db *db, char *why);

/*
 * fn(arg, data, len) for each chunk of the message's body in order (empty
 * ones skipped), until fn returns non-zero (*stopped is then true).
 * Returns how many chunks were read (0: the body is gone), or -1 with
 * `why` on error.
 */
int db_body_chunks(struct db *db, const char *msg_id,
    int (*fn)(void *, const void *, size_t), void *arg, bool *stopped,
    char *why);

/* Fill c's counts by state (c->oldest_pending is left as it is). */
enum res db_count_states(struct db *db, struct store_counts *c, char *why);

/*
 * Deleting whole messages, in the caller's transaction: db_delete_start
 * empties the list (creating it: the connection's temp.delete_ids (id)),
 * the caller INSERTs the IDs, and db_delete_listed deletes those messages
 * with their recipients, attempts and body.  db_delete_start returns 0,
 * db_delete_listed how many messages went; -1 with `why` on error.
 */
int db_delete_start(struct db *db, char *why);
int db_delete_listed(struct db *db, char *why);

/* The queue CLI's operations (sql/sqlite_admin.c; contracts in store.h). */
struct store *sq_open_admin(const char *path, bool write, char *why);
enum res sq_read_begin(struct store *store, char *why);
void sq_read_end(struct store *store);
int sq_list(struct store *store, const struct store_filter *f, int64_t now,
    int (*fn)(void *, const struct store_msg *), void *arg, char *why);
enum res sq_load(struct store *store, const char *id, int64_t now,
    struct store_msg *m, char *why);
int sq_exists(struct store *store, const char *id, char *why);
int sq_attempts(struct store *store, const char *id,
    int (*fn)(void *, const struct store_attempt_row *), void *arg, char *why);
int sq_body(struct store *store, const char *id,
    int (*fn)(void *, const void *, size_t), void *arg, char *why);
enum res sq_change(struct store *store, enum store_op op,
    struct store_change *v, int n, int64_t now, char *why);
int64_t sq_retry_all(
    struct store *store, const char *domain, int64_t now, char *why);
int sq_purge(struct store *store, int64_t before, char *why);
enum res sq_get_stats(struct store *store, struct store_stats *st,
    struct store_domain **doms, int *ndoms, char *why);

/* Used by both files: the prune of finished messages and the ends of a
 * transaction (sql/sqlite.c). */
int sq_prune_finished(struct store *store, int64_t before, char *why);
enum res sq_begin(struct store *store, char *why);
enum res sq_commit(struct store *store, char *why);
void sq_rollback(struct store *store);
void sq_close(struct store *store);

#endif
