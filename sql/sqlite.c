/*
 * sqlite.c - the SQLite backend of the queue (the contracts are
 * store.h's; the queue CLI's operations are in sqlite_admin.c).
 *
 * Threads: a `struct db` is used by one thread at a time; nothing here is
 * shared between connections.  SQLite's own file locking (WAL) arbitrates
 * between the writer, readers and the sqlite3 command-line tool.
 *
 * Invariants:
 *  1. A message row exists only for mail that was acknowledged with 250:
 *     sq_put_envelope (store_put_mail) runs in the transaction whose
 *     commit precedes the 250.
 *  2. Chunks of a message not yet acknowledged are listed in `incoming`, so
 *     they can be told from queued mail and reclaimed after a crash.
 */
#include "sqlite.h"
#include "vocab.h"
#include "log.h"

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern const char sql_schema_text[];
extern const char sql_views_text[];
extern const char sql_upgrade2_text[];
extern const char sql_upgrade3_text[];
extern const char sql_upgrade4_text[];
extern const char sql_upgrade5_text[];
extern const char sql_upgrade6_text[];
extern const char sql_upgrade7_text[];
extern const char sql_upgrade8_text[];
extern const char sql_upgrade9_text[];

/* upgrades[v] brings a version v - 1 queue to version v. */
static const char *const upgrades[] = {
    [2] = sql_upgrade2_text,
    [3] = sql_upgrade3_text,
    [4] = sql_upgrade4_text,
    [5] = sql_upgrade5_text,
    [6] = sql_upgrade6_text,
    [7] = sql_upgrade7_text,
    [8] = sql_upgrade8_text,
    [9] = sql_upgrade9_text,
};

/* The writer's statements, prepared before it stores anything. */
enum stmt_id {
	S_PUT_CHUNK,
	S_PUT_INCOMING,
	S_PUT_MESSAGE,
	S_PUT_RCPT,
	S_DEL_INCOMING,
	S_DEL_CHUNKS,
	S_NSTMT,
};

static const char *const stmt_sql[S_NSTMT] = {
    [S_PUT_CHUNK] = "INSERT INTO body_chunks (msg_id, seq, data) "
                    "VALUES (?1, ?2, ?3)",
    [S_PUT_INCOMING] = "INSERT OR IGNORE INTO incoming (msg_id, "
                       "started_at) VALUES (?1, ?2)",
    [S_PUT_MESSAGE] = "INSERT INTO messages (id, received_at, sender, "
                      "size, stored_size, body_type, smtputf8, dsn_ret, "
                      "dsn_envid, client_ip, client_port, helo, "
                      "protocol, tls_version, tls_cipher, auth_user, "
                      "requiretls, tls_required_no) "
                      "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, "
                      "?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)",
    [S_PUT_RCPT] = "INSERT INTO recipients (msg_id, rcpt_no, address, "
                   "domain, next_attempt_at, notify, orcpt) "
                   "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    [S_DEL_INCOMING] = "DELETE FROM incoming WHERE msg_id = ?1",
    [S_DEL_CHUNKS] = "DELETE FROM body_chunks WHERE msg_id = ?1",
};

#define DB_CACHED_MAX 64

struct db {
	struct store base; /* first: see sq_db() */
	sqlite3 *h;
	char *path;        /* for messages */
	bool cli;          /* errors worded for a person (db_errors_for_cli) */
	int busy_ms;       /* the busy timeout (store_set_busy_timeout) */
	int page_size;     /* 0 until read (wal_frame_bytes) */
	int64_t wal_bytes; /* after the last commit (store_watch_wal) */
	enum store_error last_error; /* of the last failure (sql_error) */
	sqlite3_stmt *st[S_NSTMT];
	struct {
		const char *sql;
		sqlite3_stmt *st;
	} cached[DB_CACHED_MAX]; /* see prep() */
	int ncached;
};

/*
 * The words for a failed statement: on the server's connections, the
 * text of an SMTP reply (see store.h; `write`: the statement changes the
 * queue, so a full disk is "4.3.1"); on the queue CLI's, for a person.
 */
static enum res
sql_error(struct db *db, int rc, bool write, char *why)
{
	const char *msg = db->h ? sqlite3_errmsg(db->h) : sqlite3_errstr(rc);

	if (!write)
		db->last_error = STORE_E_READ;
	else if ((rc & 0xff) == SQLITE_FULL)
		db->last_error = STORE_E_FULL;
	else
		db->last_error = STORE_E_WRITE;
	if (db->cli)
		why_set(why, "queue database error: %s", msg);
	else
		store_error_why(db->last_error, msg, why);
	return RES_TEMP;
}

enum res
db_fail(struct db *db, int rc, char *why)
{
	return sql_error(db, rc, true, why);
}

/* The reason for a failed read. */
static void
read_failed(struct db *db, char *why)
{
	sql_error(db, SQLITE_ERROR, false, why);
}

void
db_errors_for_cli(struct db *db)
{
	db->cli = true;
}

enum res
step_done(struct db *db, sqlite3_stmt *st, char *why)
{
	int rc = sqlite3_step(st);
	enum res r = RES_OK;

	if (rc != SQLITE_DONE)
		r = db_fail(db, rc, why);
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
	return r;
}

static int
exec_simple(struct db *db, const char *sql, char *why)
{
	char *err = NULL;
	int rc = sqlite3_exec(db->h, sql, NULL, NULL, &err);

	if (rc != SQLITE_OK) {
		why_set(why, "%s", err ? err : sqlite3_errstr(rc));
		sqlite3_free(err);
		return -1;
	}
	return 0;
}

int
user_version(struct db *db)
{
	sqlite3_stmt *st;
	int v = -1;

	if (sqlite3_prepare_v2(db->h, "PRAGMA user_version", -1, &st, NULL) !=
	    SQLITE_OK)
		return -1;
	if (sqlite3_step(st) == SQLITE_ROW)
		v = sqlite3_column_int(st, 0);
	sqlite3_finalize(st);
	return v;
}

/*
 * Bring the schema to DB_SCHEMA_VERSION in one transaction: a new file gets
 * schema.sql; an older one would get the upgrade steps in order.
 */
static int
migrate(struct db *db, char *why)
{
	char sql[64];
	int v = -1, step;

	if (exec_simple(db, "BEGIN IMMEDIATE", why) != 0)
		return -1;
	v = user_version(db);
	if (v < 0) {
		why_set(why, "cannot read schema version: %s",
		    sqlite3_errmsg(db->h));
		goto fail;
	}
	if (v > DB_SCHEMA_VERSION) {
		why_set(why,
		    "queue schema version %d is newer than this "
		    "sluice (%d)",
		    v, DB_SCHEMA_VERSION);
		goto fail;
	}
	if (v == 0 && exec_simple(db, sql_schema_text, why) != 0)
		goto fail;
	for (step = v + 1; v > 0 && step <= DB_SCHEMA_VERSION; step++) {
		if (exec_simple(db, upgrades[step], why) != 0)
			goto fail;
		log_info(
		    "queue", "upgraded the queue schema to version %d", step);
	}
	snprintf(
	    sql, sizeof(sql), "PRAGMA user_version = %d", DB_SCHEMA_VERSION);
	if (v < DB_SCHEMA_VERSION && exec_simple(db, sql, why) != 0)
		goto fail;
	if (exec_simple(db, sql_views_text, why) != 0 ||
	    exec_simple(db, "COMMIT", why) != 0)
		goto fail;
	return 0;
fail:
	sqlite3_exec(db->h, "ROLLBACK", NULL, NULL, NULL);
	if (v == DB_SCHEMA_VERSION) {
		/*
		 * The schema is current and only refreshing the views failed
		 * (a full disk, say): the queue is usable as it is, and
		 * refusing to start would only hold mail back.
		 */
		log_warn("queue", "cannot refresh the views: %s", why);
		return 0;
	}
	return -1;
}

/*
 * Durability and integrity for a connection that writes mail: a commit
 * returns only after the WAL is synced, which is what a 250 reply promises.
 */
static int
writer_pragmas(struct db *db, char *why)
{
	if (exec_simple(db, "PRAGMA synchronous = FULL", why) != 0 ||
	    exec_simple(db, "PRAGMA foreign_keys = ON", why) != 0)
		return -1;
	return 0;
}

/* Prepare the writer statements (db->st) not prepared yet. */
static int
prepare_writer(struct db *db, char *why)
{
	int i;

	for (i = 0; i < S_NSTMT; i++) {
		if (db->st[i] != NULL)
			continue;
		if (sqlite3_prepare_v3(db->h, stmt_sql[i], -1,
		        SQLITE_PREPARE_PERSISTENT, &db->st[i],
		        NULL) != SQLITE_OK) {
			why_set(why, "cannot prepare \"%s\": %s", stmt_sql[i],
			    sqlite3_errmsg(db->h));
			return -1;
		}
	}
	return 0;
}

static struct db *
open_common(const char *path, int flags, char *why)
{
	struct db *db = xcalloc(1, sizeof(*db));
	int rc;

	db->base.ops = &sqlite_store_ops;
	db->path = xstrdup(path);
	rc = sqlite3_open_v2(path, &db->h, flags | SQLITE_OPEN_NOMUTEX, NULL);
	if (rc != SQLITE_OK) {
		why_set(why, "cannot open %s: %s", path,
		    db->h ? sqlite3_errmsg(db->h) : sqlite3_errstr(rc));
		sq_close(sq_store(db));
		return NULL;
	}
	db->busy_ms = 10000;
	sqlite3_busy_timeout(db->h, db->busy_ms);
	sqlite3_extended_result_codes(db->h, 1);
	return db;
}

static struct store *
sq_open(const char *path, char *why)
{
	struct db *db;
	char err[WHY_MAX];

	db = open_common(path, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, why);
	if (db == NULL)
		return NULL;
	/* WAL, with the writer's synchronous=FULL (writer_pragmas). */
	if (exec_simple(db, "PRAGMA journal_mode = WAL", err) != 0 ||
	    writer_pragmas(db, err) != 0) {
		why_set(why, "cannot set up %s: %s", path, err);
		goto fail;
	}
	if (migrate(db, err) != 0) {
		why_set(why, "cannot create or upgrade the schema of %s: %s",
		    path, err);
		goto fail;
	}
	if (prepare_writer(db, err) != 0) {
		why_set(why, "bug: %s", err);
		goto fail;
	}
	return sq_store(db);
fail:
	sq_close(sq_store(db));
	return NULL;
}

static struct store *
sq_open_helper(const char *path, char *why)
{
	return sq_store(open_common(path, SQLITE_OPEN_READWRITE, why));
}

static struct store *
sq_open_readonly(const char *path, char *why)
{
	return sq_store(open_common(path, SQLITE_OPEN_READONLY, why));
}

void
sq_close(struct store *store)
{
	struct db *db = sq_db(store);
	int i;

	if (db == NULL)
		return;
	for (i = 0; i < S_NSTMT; i++)
		sqlite3_finalize(db->st[i]);
	for (i = 0; i < db->ncached; i++)
		sqlite3_finalize(db->cached[i].st);
	sqlite3_close(db->h);
	free(db->path);
	free(db);
}

enum res
db_run(struct db *db, const char *sql, char *why)
{
	sqlite3_stmt *st = prep(db, sql, why);

	return st == NULL ? RES_TEMP : step_done(db, st, why);
}

enum res
sq_begin(struct store *store, char *why)
{
	struct db *db = sq_db(store);

	return db_run(db, "BEGIN IMMEDIATE", why);
}

enum res
sq_commit(struct store *store, char *why)
{
	struct db *db = sq_db(store);
	enum res r = db_run(db, "COMMIT", why);

	/* A failed COMMIT may leave the transaction open: end it. */
	if (r != RES_OK && !sqlite3_get_autocommit(db->h))
		sq_rollback(sq_store(db));
	return r;
}

void
sq_rollback(struct store *store)
{
	struct db *db = sq_db(store);
	char why[WHY_MAX];

	if (!sqlite3_get_autocommit(db->h))
		(void)db_run(db, "ROLLBACK", why);
}

static enum res
sq_put_chunk(struct store *store, const char *id, int seq, const void *data,
    size_t len, char *why)
{
	struct db *db = sq_db(store);
	sqlite3_stmt *st = db->st[S_PUT_CHUNK];

	sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
	sqlite3_bind_int(st, 2, seq);
	sqlite3_bind_blob64(st, 3, data, len, SQLITE_STATIC);
	return step_done(db, st, why);
}

static enum res
sq_put_incoming(
    struct store *store, const char *id, int64_t started_at, char *why)
{
	struct db *db = sq_db(store);
	sqlite3_stmt *st = db->st[S_PUT_INCOMING];

	sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 2, started_at);
	return step_done(db, st, why);
}

static void
bind_text_or_null(sqlite3_stmt *st, int col, const char *s)
{
	if (s == NULL)
		sqlite3_bind_null(st, col);
	else
		sqlite3_bind_text(st, col, s, -1, SQLITE_STATIC);
}

static enum res
sq_put_envelope(struct store *store, const struct envelope *env, char *why)
{
	struct db *db = sq_db(store);
	sqlite3_stmt *st = db->st[S_PUT_MESSAGE];
	enum res r;
	int i;

	sqlite3_bind_text(st, 1, env->id, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 2, env->received_at);
	sqlite3_bind_text(st, 3, env->sender, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 4, env->size);
	sqlite3_bind_int64(st, 5, env->stored_size);
	sqlite3_bind_text(
	    st, 6, body_type_name(env->body_type), -1, SQLITE_STATIC);
	sqlite3_bind_int(st, 7, env->smtputf8 ? 1 : 0);
	bind_text_or_null(st, 8, dsn_ret_name(env->dsn_ret));
	bind_text_or_null(st, 9, env->dsn_envid);
	sqlite3_bind_text(st, 10, env->client_ip, -1, SQLITE_STATIC);
	sqlite3_bind_int(st, 11, env->client_port);
	bind_text_or_null(st, 12, env->helo);
	sqlite3_bind_text(st, 13, env->protocol, -1, SQLITE_STATIC);
	bind_text_or_null(st, 14, env->tls_version);
	bind_text_or_null(st, 15, env->tls_cipher);
	bind_text_or_null(st, 16, env->auth_user);
	sqlite3_bind_int(st, 17, env->requiretls ? 1 : 0);
	sqlite3_bind_int(st, 18, env->tls_required_no ? 1 : 0);
	if ((r = step_done(db, st, why)) != RES_OK)
		return r;
	st = db->st[S_PUT_RCPT];
	for (i = 0; i < env->nrcpts; i++) {
		const struct envelope_rcpt *rc = &env->rcpts[i];
		char notify[NOTIFY_TEXT_MAX];

		notify_text(rc->notify, notify, sizeof(notify));
		sqlite3_bind_text(st, 1, env->id, -1, SQLITE_STATIC);
		sqlite3_bind_int(st, 2, i);
		sqlite3_bind_text(st, 3, rc->address, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 4, rc->domain, -1, SQLITE_STATIC);
		sqlite3_bind_int64(st, 5, env->received_at);
		if (rc->notify != 0)
			sqlite3_bind_text(st, 6, notify, -1, SQLITE_TRANSIENT);
		bind_text_or_null(st, 7, rc->orcpt);
		if ((r = step_done(db, st, why)) != RES_OK)
			return r;
	}
	st = db->st[S_DEL_INCOMING];
	sqlite3_bind_text(st, 1, env->id, -1, SQLITE_STATIC);
	return step_done(db, st, why);
}

static enum res
sq_drop_incoming(struct store *store, const char *id, char *why)
{
	struct db *db = sq_db(store);
	enum res r;

	sqlite3_bind_text(db->st[S_DEL_CHUNKS], 1, id, -1, SQLITE_STATIC);
	if ((r = step_done(db, db->st[S_DEL_CHUNKS], why)) != RES_OK)
		return r;
	sqlite3_bind_text(db->st[S_DEL_INCOMING], 1, id, -1, SQLITE_STATIC);
	return step_done(db, db->st[S_DEL_INCOMING], why);
}

static int
sq_reclaim_incoming(
    struct store *store, int (*fn)(void *, const char *), void *arg, char *why)
{
	struct db *db = sq_db(store);
	sqlite3_stmt *st = NULL;
	char **ids = NULL;
	int n = 0, i, dropped = 0, rc;

	if (sq_begin(sq_store(db), why) != RES_OK)
		return -1;
	rc = sqlite3_prepare_v2(
	    db->h, "SELECT msg_id FROM incoming", -1, &st, NULL);
	if (rc != SQLITE_OK)
		goto fail;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		const char *id = (const char *)sqlite3_column_text(st, 0);

		if (id == NULL || !fn(arg, id))
			continue;
		ids = xrealloc(ids, sizeof(char *) * (size_t)(n + 1));
		ids[n++] = xstrdup(id);
	}
	sqlite3_finalize(st);
	st = NULL;
	if (rc != SQLITE_DONE)
		goto fail;
	for (i = 0; i < n; i++) {
		if (sq_drop_incoming(sq_store(db), ids[i], why) != RES_OK)
			goto fail_noset;
		dropped++;
	}
	if (sq_commit(sq_store(db), why) != RES_OK)
		goto fail_noset;
	for (i = 0; i < n; i++)
		free(ids[i]);
	free(ids);
	return dropped;
fail:
	db_fail(db, rc, why);
fail_noset:
	sqlite3_finalize(st);
	sq_rollback(sq_store(db));
	for (i = 0; i < n; i++)
		free(ids[i]);
	free(ids);
	return -1;
}

/* The bytes `frames` WAL frames take, with the WAL's 32-byte header. */
static int64_t
wal_frame_bytes(struct db *db, int frames)
{
	sqlite3_stmt *st;

	if (frames <= 0)
		return 0;
	if (db->page_size == 0 && sqlite3_prepare_v2(db->h, "PRAGMA page_size",
	                              -1, &st, NULL) == SQLITE_OK) {
		if (sqlite3_step(st) == SQLITE_ROW)
			db->page_size = sqlite3_column_int(st, 0);
		sqlite3_finalize(st);
	}
	/* Each frame is a 24-byte header and one page. */
	return 32 +
	       (int64_t)frames * (24 + (db->page_size ? db->page_size : 4096));
}

static enum res
sq_checkpoint(struct store *store, enum store_ckpt_mode mode, int busy_ms,
    struct store_ckpt *out, char *why)
{
	struct db *db = sq_db(store);
	static const int modes[] = {
	    [STORE_CKPT_PASSIVE] = SQLITE_CHECKPOINT_PASSIVE,
	    [STORE_CKPT_RESTART] = SQLITE_CHECKPOINT_RESTART,
	    [STORE_CKPT_TRUNCATE] = SQLITE_CHECKPOINT_TRUNCATE,
	};
	int nlog = -1, ncopied = -1, rc, tries;

	memset(out, 0, sizeof(*out));
	if (mode != STORE_CKPT_PASSIVE)
		sqlite3_busy_timeout(db->h, busy_ms);
	for (tries = 0; tries < 2; tries++) {
		rc = sqlite3_wal_checkpoint_v2(
		    db->h, NULL, modes[mode], &nlog, &ncopied);
		/*
		 * A connection that has not read the database yet has not
		 * opened its WAL either, and SQLite (3.40) then returns
		 * SQLITE_OK having done nothing, with -1 frames: the
		 * checkpointer's connection did exactly that at every call
		 * while queue.db-wal grew to gigabytes.  One read opens the
		 * WAL for the connection's lifetime.
		 */
		if (rc != SQLITE_OK || nlog >= 0 || user_version(db) < 0)
			break;
	}
	if (mode != STORE_CKPT_PASSIVE)
		sqlite3_busy_timeout(db->h, db->busy_ms);
	if (rc != SQLITE_OK && (rc & 0xff) != SQLITE_BUSY) {
		why_set(why, "checkpoint: %s", sqlite3_errmsg(db->h));
		return RES_TEMP;
	}
	if (nlog < 0) {
		why_set(why, "checkpoint: the WAL of %s is not open", db->path);
		return RES_TEMP;
	}
	out->wal_bytes = wal_frame_bytes(db, nlog);
	out->copied_bytes = wal_frame_bytes(db, ncopied);
	out->complete = rc == SQLITE_OK && ncopied == nlog;
	return RES_OK;
}

/* sqlite3_wal_hook: called in the committing thread after each commit. */
static int
wal_hook(void *arg, sqlite3 *h, const char *name, int frames)
{
	struct db *db = arg;

	(void)h;
	(void)name;
	db->wal_bytes = wal_frame_bytes(db, frames);
	return SQLITE_OK;
}

static enum res
sq_watch_wal(struct store *store, int64_t limit, char *why)
{
	struct db *db = sq_db(store);
	char sql[64];

	snprintf(sql, sizeof(sql), "PRAGMA journal_size_limit = %lld",
	    (long long)limit);
	if (exec_simple(db, sql, why) != 0)
		return RES_TEMP;
	(void)wal_frame_bytes(db, 1); /* read the page size now */
	/* Replaces the hook of SQLite's automatic checkpoints. */
	sqlite3_wal_hook(db->h, wal_hook, db);
	return RES_OK;
}

static enum store_error
sq_last_error(const struct store *store)
{
	return sq_cdb(store)->last_error;
}

static int64_t
sq_wal_bytes(const struct store *store)
{
	const struct db *db = sq_cdb(store);

	return db->wal_bytes;
}

/* ---- delivery ---- */

static void bind_text_or_null(sqlite3_stmt *st, int col, const char *s);

sqlite3_stmt *
prep(struct db *db, const char *sql, char *why)
{
	sqlite3_stmt *st = NULL;
	int i;

	for (i = 0; i < db->ncached; i++) {
		if (db->cached[i].sql == sql) {
			sqlite3_clear_bindings(db->cached[i].st);
			return db->cached[i].st;
		}
	}
	if (sqlite3_prepare_v3(db->h, sql, -1, SQLITE_PREPARE_PERSISTENT, &st,
	        NULL) != SQLITE_OK) {
		read_failed(db, why);
		return NULL;
	}
	if (db->ncached < DB_CACHED_MAX) {
		db->cached[db->ncached].sql = sql;
		db->cached[db->ncached].st = st;
		db->ncached++;
	}
	return st;
}

/* Column `col` as text ("" for NULL). */
static const char *
text_col(sqlite3_stmt *st, int col)
{
	const unsigned char *t = sqlite3_column_text(st, col);

	return t != NULL ? (const char *)t : "";
}

void
copy_col(sqlite3_stmt *st, int col, char *out, size_t len)
{
	const unsigned char *t = sqlite3_column_text(st, col);

	snprintf(out, len, "%s", t ? (const char *)t : "");
}

static int
sq_list_due(
    struct store *store, int64_t now, struct store_due *out, int max, char *why)
{
	struct db *db = sq_db(store);
	sqlite3_stmt *st = prep(db,
	    "SELECT r.msg_id, r.rcpt_no, r.domain, m.sender "
	    "FROM recipients AS r JOIN messages AS m ON m.id = r.msg_id "
	    "WHERE r.state IN ('queued', 'deferred') "
	    "AND r.next_attempt_at <= ?1 "
	    "AND (r.lease_until IS NULL OR r.lease_until <= ?1) "
	    "ORDER BY r.next_attempt_at LIMIT ?2",
	    why);
	int n = 0, rc;

	if (st == NULL)
		return -1;
	sqlite3_bind_int64(st, 1, now);
	sqlite3_bind_int(st, 2, max);
	while (n < max && (rc = sqlite3_step(st)) == SQLITE_ROW) {
		copy_col(st, 0, out[n].msg_id, sizeof(out[n].msg_id));
		out[n].rcpt_no = sqlite3_column_int(st, 1);
		copy_col(st, 2, out[n].domain, sizeof(out[n].domain));
		copy_col(st, 3, out[n].sender, sizeof(out[n].sender));
		n++;
	}
	if (n < max && rc != SQLITE_DONE) {
		read_failed(db, why);
		n = -1;
	}
	sqlite3_reset(st);
	return n;
}

static int64_t
sq_next_due(struct store *store)
{
	struct db *db = sq_db(store);
	char why[WHY_MAX];
	sqlite3_stmt *st = prep(db,
	    "SELECT min(max(next_attempt_at, coalesce(lease_until, 0))) "
	    "FROM recipients WHERE state IN ('queued', 'deferred')",
	    why);
	int64_t t = 0;

	if (st == NULL)
		return 0;
	if (sqlite3_step(st) == SQLITE_ROW)
		t = sqlite3_column_int64(st, 0);
	sqlite3_reset(st);
	return t;
}

static enum res
sq_lease(struct store *store, const char *msg_id, int rcpt_no, int64_t until,
    char *why)
{
	struct db *db = sq_db(store);
	sqlite3_stmt *st = prep(db,
	    "UPDATE recipients SET lease_until = ?3 "
	    "WHERE msg_id = ?1 AND rcpt_no = ?2",
	    why);

	if (st == NULL)
		return RES_TEMP;
	sqlite3_bind_text(st, 1, msg_id, -1, SQLITE_STATIC);
	sqlite3_bind_int(st, 2, rcpt_no);
	sqlite3_bind_int64(st, 3, until);
	return step_done(db, st, why);
}

/* Through recipients_leased: the leased rows only, not the whole queue. */
static enum res
sq_clear_leases(struct store *store, char *why)
{
	struct db *db = sq_db(store);

	return exec_simple(db,
	           "UPDATE recipients SET lease_until = NULL "
	           "WHERE lease_until IS NOT NULL",
	           why) == 0
	           ? RES_OK
	           : RES_TEMP;
}

static enum res
sq_load_message(struct store *store, const char *msg_id,
    struct store_msg_info *m, char *why)
{
	struct db *db = sq_db(store);
	sqlite3_stmt *st = prep(db,
	    "SELECT sender, body_type, smtputf8, coalesce(dsn_ret, ''), "
	    "coalesce(dsn_envid, ''), received_at, stored_size, requiretls, "
	    "tls_required_no FROM messages WHERE id = ?1",
	    why);
	enum res r = RES_PERM;
	int rc;

	if (st == NULL)
		return RES_TEMP;
	sqlite3_bind_text(st, 1, msg_id, -1, SQLITE_STATIC);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		copy_col(st, 0, m->sender, sizeof(m->sender));
		m->body_type = BODY_7BIT;
		(void)body_type_parse(text_col(st, 1), &m->body_type);
		m->smtputf8 = sqlite3_column_int(st, 2);
		m->dsn_ret = dsn_ret_parse(text_col(st, 3));
		copy_col(st, 4, m->envid, sizeof(m->envid));
		m->received_at = sqlite3_column_int64(st, 5);
		m->stored_size = sqlite3_column_int64(st, 6);
		m->requiretls = sqlite3_column_int(st, 7);
		m->tls_required_no = sqlite3_column_int(st, 8);
		r = RES_OK;
	} else if (rc == SQLITE_DONE) {
		why_set(why, "message %s is no longer in the queue", msg_id);
	} else {
		read_failed(db, why);
		r = RES_TEMP;
	}
	sqlite3_reset(st);
	return r;
}

static enum res
sq_load_rcpt(struct store *store, const char *msg_id, int rcpt_no,
    struct store_rcpt_info *r, char *why)
{
	struct db *db = sq_db(store);
	sqlite3_stmt *st = prep(db,
	    "SELECT address, domain, state, coalesce(notify, ''), "
	    "coalesce(orcpt, ''), attempts, notified FROM recipients "
	    "WHERE msg_id = ?1 AND rcpt_no = ?2",
	    why);
	enum res res = RES_PERM;
	int rc;

	if (st == NULL)
		return RES_TEMP;
	sqlite3_bind_text(st, 1, msg_id, -1, SQLITE_STATIC);
	sqlite3_bind_int(st, 2, rcpt_no);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		r->rcpt_no = rcpt_no;
		copy_col(st, 0, r->address, sizeof(r->address));
		copy_col(st, 1, r->domain, sizeof(r->domain));
		if (!rcpt_state_parse(text_col(st, 2), &r->state)) {
			/* The schema's CHECK keeps this from happening. */
			why_set(why, "recipient %s/%d has an unknown state",
			    msg_id, rcpt_no);
			sqlite3_reset(st);
			return RES_TEMP;
		}
		r->notify = notify_parse(text_col(st, 3));
		copy_col(st, 4, r->orcpt, sizeof(r->orcpt));
		r->attempts = sqlite3_column_int(st, 5);
		r->notified = (unsigned)sqlite3_column_int(st, 6);
		res = RES_OK;
	} else if (rc == SQLITE_DONE) {
		why_set(why, "recipient %s/%d is no longer in the queue",
		    msg_id, rcpt_no);
	} else {
		read_failed(db, why);
		res = RES_TEMP;
	}
	sqlite3_reset(st);
	return res;
}

int
db_body_chunks(struct db *db, const char *msg_id,
    int (*fn)(void *, const void *, size_t), void *arg, bool *stopped,
    char *why)
{
	sqlite3_stmt *st = prep(db,
	    "SELECT data FROM body_chunks WHERE msg_id = ?1 ORDER BY seq", why);
	int n = 0, rc;

	*stopped = false;
	if (st == NULL)
		return -1;
	sqlite3_bind_text(st, 1, msg_id, -1, SQLITE_STATIC);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		const void *p = sqlite3_column_blob(st, 0);
		int len = sqlite3_column_bytes(st, 0);

		n++;
		if (len > 0 && fn(arg, p, (size_t)len) != 0) {
			*stopped = true;
			break;
		}
	}
	if (!*stopped && rc != SQLITE_DONE) {
		read_failed(db, why);
		n = -1;
	}
	sqlite3_reset(st);
	return n;
}

static enum res
sq_read_body(struct store *store, const char *msg_id,
    int (*fn)(void *, const void *, size_t), void *arg, char *why)
{
	struct db *db = sq_db(store);
	bool stopped;

	if (db_body_chunks(db, msg_id, fn, arg, &stopped, why) < 0)
		return RES_TEMP;
	if (stopped) {
		why_set(why, "4.4.2 connection lost while sending");
		return RES_TEMP;
	}
	return RES_OK;
}

static int
sq_sts_get(
    struct store *store, const char *domain, struct store_sts *out, char *why)
{
	struct db *db = sq_db(store);
	sqlite3_stmt *st = prep(db,
	    "SELECT id, policy_text, fetched_at, expires_at FROM "
	    "sts_policies WHERE domain = ?1",
	    why);
	int rc, found = -1;

	if (st == NULL)
		return -1;
	memset(out, 0, sizeof(*out));
	sqlite3_bind_text(st, 1, domain, -1, SQLITE_STATIC);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		copy_col(st, 0, out->id, sizeof(out->id));
		out->text = xstrdup(text_col(st, 1));
		out->fetched_at = sqlite3_column_int64(st, 2);
		out->expires_at = sqlite3_column_int64(st, 3);
		found = 1;
	} else if (rc == SQLITE_DONE) {
		found = 0;
	} else {
		read_failed(db, why);
	}
	sqlite3_reset(st);
	return found;
}

static enum res
sq_sts_put(struct store *store, const struct store_sts_row *r, char *why)
{
	struct db *db = sq_db(store);
	sqlite3_stmt *st;

	if (r->text == NULL) { /* a failed refresh: only noted */
		st = prep(db,
		    "UPDATE sts_policies SET last_error = ?2 WHERE domain = ?1",
		    why);
		if (st == NULL)
			return RES_TEMP;
		sqlite3_bind_text(st, 1, r->domain, -1, SQLITE_STATIC);
		bind_text_or_null(st, 2, r->error);
		return step_done(db, st, why);
	}
	st = prep(db,
	    "INSERT OR REPLACE INTO sts_policies (domain, id, mode, mx, "
	    "max_age, fetched_at, expires_at, policy_text, last_error) "
	    "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6 + ?5, ?7, NULL)",
	    why);
	if (st == NULL)
		return RES_TEMP;
	sqlite3_bind_text(st, 1, r->domain, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, r->id, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 3, r->mode, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 4, r->mx, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 5, r->max_age);
	sqlite3_bind_int64(st, 6, r->fetched_at);
	sqlite3_bind_text(st, 7, r->text, -1, SQLITE_STATIC);
	return step_done(db, st, why);
}

static int
sq_sts_due(
    struct store *store, int64_t now, char (*domains)[256], int max, char *why)
{
	struct db *db = sq_db(store);
	sqlite3_stmt *st = prep(db,
	    "SELECT domain FROM sts_policies WHERE mode != 'none' AND "
	    "expires_at - min(max_age / 4, 21600) <= ?1 "
	    "ORDER BY expires_at LIMIT ?2",
	    why);
	int rc = SQLITE_DONE, n = 0;

	if (st == NULL)
		return -1;
	sqlite3_bind_int64(st, 1, now);
	sqlite3_bind_int(st, 2, max);
	while (n < max && (rc = sqlite3_step(st)) == SQLITE_ROW)
		copy_col(st, 0, domains[n++], 256);
	if (n < max && rc != SQLITE_DONE) {
		read_failed(db, why);
		n = -1;
	}
	sqlite3_reset(st);
	return n;
}

static enum res
sq_tlsrpt_add(struct store *store, const struct store_tlsrpt *t, char *why)
{
	struct db *db = sq_db(store);
	sqlite3_stmt *st = prep(db,
	    "INSERT INTO tlsrpt_results (day, policy_domain, policy_type, "
	    "policy_string, mx_host, result_type, sending_ip, receiving_ip, "
	    "count) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 1) "
	    "ON CONFLICT DO UPDATE SET count = count + 1",
	    why);

	if (st == NULL)
		return RES_TEMP;
	sqlite3_bind_int64(st, 1, t->day);
	sqlite3_bind_text(st, 2, t->domain, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 3, t->policy_type, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 4, t->policy_string, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 5, t->mx_host, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 6, t->result_type, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 7, t->sending_ip, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 8, t->receiving_ip, -1, SQLITE_STATIC);
	return step_done(db, st, why);
}

static int
sq_tlsrpt_sent(struct store *store, int64_t day, int64_t sent_at, char *why)
{
	struct db *db = sq_db(store);
	sqlite3_stmt *st;
	int rc, r = -1;

	if (sent_at > 0) {
		st = prep(db,
		    "INSERT OR REPLACE INTO tlsrpt_sent (day, sent_at) "
		    "VALUES (?1, ?2)",
		    why);
		if (st == NULL)
			return -1;
		sqlite3_bind_int64(st, 1, day);
		sqlite3_bind_int64(st, 2, sent_at);
		return step_done(db, st, why) == RES_OK ? 1 : -1;
	}
	st = prep(db, "SELECT 1 FROM tlsrpt_sent WHERE day = ?1", why);
	if (st == NULL)
		return -1;
	sqlite3_bind_int64(st, 1, day);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		r = 1;
	else if (rc == SQLITE_DONE)
		r = 0;
	else
		read_failed(db, why);
	sqlite3_reset(st);
	return r;
}

static int
sq_tlsrpt_day(struct store *store, int64_t day,
    int (*fn)(void *, const struct store_tlsrpt *, int64_t), void *arg,
    char *why)
{
	struct db *db = sq_db(store);
	sqlite3_stmt *st = prep(db,
	    "SELECT policy_domain, policy_type, policy_string, mx_host, "
	    "result_type, sending_ip, receiving_ip, count FROM tlsrpt_results "
	    "WHERE day = ?1 ORDER BY policy_domain, policy_type, "
	    "policy_string, result_type, mx_host, receiving_ip",
	    why);
	int rc, n = 0;

	if (st == NULL)
		return -1;
	sqlite3_bind_int64(st, 1, day);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		struct store_tlsrpt t;

		t.day = day;
		t.domain = text_col(st, 0);
		t.policy_type = text_col(st, 1);
		t.policy_string = text_col(st, 2);
		t.mx_host = text_col(st, 3);
		t.result_type = text_col(st, 4);
		t.sending_ip = text_col(st, 5);
		t.receiving_ip = text_col(st, 6);
		n++;
		if (fn(arg, &t, sqlite3_column_int64(st, 7)) != 0) {
			rc = SQLITE_DONE;
			break;
		}
	}
	if (rc != SQLITE_DONE) {
		read_failed(db, why);
		n = -1;
	}
	sqlite3_reset(st);
	return n;
}

static enum res
sq_record_attempt(struct store *store, const struct store_attempt *a, char *why)
{
	struct db *db = sq_db(store);
	sqlite3_stmt *st = prep(db,
	    "INSERT INTO attempts (msg_id, rcpt_no, at, mx_host, ip, port, "
	    "tls, status, reply, duration_ms, security, security_why) "
	    "SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12 "
	    "WHERE EXISTS (SELECT 1 FROM recipients "
	    "WHERE msg_id = ?1 AND rcpt_no = ?2)",
	    why);
	enum res r;

	if (st == NULL)
		return RES_TEMP;
	sqlite3_bind_text(st, 1, a->msg_id, -1, SQLITE_STATIC);
	sqlite3_bind_int(st, 2, a->rcpt_no);
	sqlite3_bind_int64(st, 3, a->at);
	bind_text_or_null(st, 4, a->mx_host);
	bind_text_or_null(st, 5, a->ip);
	if (a->port > 0)
		sqlite3_bind_int(st, 6, a->port);
	else
		sqlite3_bind_null(st, 6);
	bind_text_or_null(st, 7, a->tls);
	sqlite3_bind_text(
	    st, 8, attempt_status_name(a->state), -1, SQLITE_STATIC);
	bind_text_or_null(st, 9, a->reply);
	sqlite3_bind_int64(st, 10, a->duration_ms);
	bind_text_or_null(st, 11, a->security);
	bind_text_or_null(st, 12, a->security_why);
	if ((r = step_done(db, st, why)) != RES_OK)
		return r;
	st = prep(db,
	    "UPDATE recipients SET state = ?3, attempts = attempts + 1, "
	    "last_attempt_at = ?4, last_reply = ?5, lease_until = NULL, "
	    "next_attempt_at = CASE WHEN ?3 = 'deferred' THEN ?6 "
	    "ELSE next_attempt_at END "
	    "WHERE msg_id = ?1 AND rcpt_no = ?2 AND (state IN ('queued', "
	    "'deferred') OR (?3 = 'delivered' AND (state = 'held' OR "
	    "(state = 'bounced' AND (notified & 1) = 0))) OR "
	    "(?3 = 'bounced' AND state = 'held'))",
	    why);
	if (st == NULL)
		return RES_TEMP;
	sqlite3_bind_text(st, 1, a->msg_id, -1, SQLITE_STATIC);
	sqlite3_bind_int(st, 2, a->rcpt_no);
	sqlite3_bind_text(st, 3, rcpt_state_name(a->state), -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 4, a->at);
	bind_text_or_null(st, 5, a->reply);
	sqlite3_bind_int64(st, 6, a->next_at);
	return step_done(db, st, why);
}

static enum res
sq_release_finished(struct store *store, const char *msg_id, char *why)
{
	struct db *db = sq_db(store);
	sqlite3_stmt *st = prep(db,
	    "DELETE FROM body_chunks WHERE msg_id = ?1 AND NOT EXISTS "
	    "(SELECT 1 FROM recipients WHERE msg_id = ?1 "
	    "AND state NOT IN ('delivered', 'bounced'))",
	    why);

	if (st == NULL)
		return RES_TEMP;
	sqlite3_bind_text(st, 1, msg_id, -1, SQLITE_STATIC);
	return step_done(db, st, why);
}

static int
sq_unreported_bounces(struct store *store, const char *msg_id,
    struct store_bounced **out, char *why)
{
	struct db *db = sq_db(store);
	sqlite3_stmt *st = prep(db,
	    "SELECT count(*) FROM recipients WHERE msg_id = ?1 "
	    "AND state IN ('queued', 'deferred')",
	    why);
	int n = 0, cap = 0, rc, pending;

	*out = NULL;
	if (st == NULL)
		return -1;
	sqlite3_bind_text(st, 1, msg_id, -1, SQLITE_STATIC);
	rc = sqlite3_step(st);
	pending = rc == SQLITE_ROW ? sqlite3_column_int(st, 0) : -1;
	sqlite3_reset(st);
	if (pending != 0)
		return pending < 0 ? -1 : 0;
	st = prep(db,
	    "SELECT r.rcpt_no, r.address, coalesce(r.orcpt, ''), "
	    "coalesce(r.notify, ''), coalesce(r.last_reply, ''), "
	    "coalesce((SELECT a.mx_host FROM attempts AS a "
	    "WHERE a.msg_id = r.msg_id AND a.rcpt_no = r.rcpt_no "
	    "ORDER BY a.id DESC LIMIT 1), ''), "
	    "coalesce(r.last_attempt_at, 0) "
	    "FROM recipients AS r WHERE r.msg_id = ?1 "
	    "AND r.state = 'bounced' AND (r.notified & 1) = 0 "
	    "ORDER BY r.rcpt_no",
	    why);
	if (st == NULL)
		return -1;
	sqlite3_bind_text(st, 1, msg_id, -1, SQLITE_STATIC);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		struct store_bounced *b;

		if (n == cap) {
			cap = cap ? cap * 2 : 8;
			*out = xrealloc(*out, sizeof(**out) * (size_t)cap);
		}
		b = &(*out)[n++];
		b->rcpt_no = sqlite3_column_int(st, 0);
		copy_col(st, 1, b->address, sizeof(b->address));
		copy_col(st, 2, b->orcpt, sizeof(b->orcpt));
		b->notify = notify_parse(text_col(st, 3));
		copy_col(st, 4, b->last_reply, sizeof(b->last_reply));
		copy_col(st, 5, b->mx_host, sizeof(b->mx_host));
		b->last_attempt_at = sqlite3_column_int64(st, 6);
	}
	sqlite3_reset(st);
	if (rc != SQLITE_DONE) {
		read_failed(db, why);
		free(*out);
		*out = NULL;
		return -1;
	}
	return n;
}

static int
sq_list_unreported(
    struct store *store, char (*ids)[QUEUE_ID_LEN + 1], int max, char *why)
{
	struct db *db = sq_db(store);
	sqlite3_stmt *st = prep(db,
	    "SELECT DISTINCT r.msg_id FROM recipients AS r "
	    "INDEXED BY recipients_unreported "
	    "WHERE r.state = 'bounced' AND (r.notified & 1) = 0 "
	    "AND NOT EXISTS (SELECT 1 FROM recipients AS p "
	    "WHERE p.msg_id = r.msg_id AND p.state IN ('queued', 'deferred')) "
	    "LIMIT ?1",
	    why);
	int n = 0, rc = SQLITE_DONE;

	if (st == NULL)
		return -1;
	sqlite3_bind_int(st, 1, max);
	while (n < max && (rc = sqlite3_step(st)) == SQLITE_ROW)
		copy_col(st, 0, ids[n++], QUEUE_ID_LEN + 1);
	if (n < max && rc != SQLITE_DONE) {
		read_failed(db, why);
		n = -1;
	}
	sqlite3_reset(st);
	return n;
}

static enum res
sq_mark_reported(struct store *store, const char *msg_id, char *why)
{
	struct db *db = sq_db(store);
	sqlite3_stmt *st = prep(db,
	    "UPDATE recipients SET notified = notified | 1 WHERE msg_id = ?1 "
	    "AND state = 'bounced' AND (notified & 1) = 0",
	    why);

	if (st == NULL)
		return RES_TEMP;
	sqlite3_bind_text(st, 1, msg_id, -1, SQLITE_STATIC);
	return step_done(db, st, why);
}

static enum res
sq_mark_delay_reported(
    struct store *store, const char *msg_id, int rcpt_no, char *why)
{
	struct db *db = sq_db(store);
	sqlite3_stmt *st = prep(db,
	    "UPDATE recipients SET notified = notified | 2 "
	    "WHERE msg_id = ?1 AND rcpt_no = ?2",
	    why);

	if (st == NULL)
		return RES_TEMP;
	sqlite3_bind_text(st, 1, msg_id, -1, SQLITE_STATIC);
	sqlite3_bind_int(st, 2, rcpt_no);
	return step_done(db, st, why);
}

sqlite3 *
sq_handle(struct db *db)
{
	return db->h;
}

/* Where a recipient in `state` is counted; NULL for an unknown state. */
static int64_t *
count_of(struct store_counts *c, const char *state)
{
	enum rcpt_state st;

	if (state == NULL || !rcpt_state_parse(state, &st))
		return NULL;
	switch (st) {
	case RCPT_QUEUED:
		return &c->queued;
	case RCPT_DEFERRED:
		return &c->deferred;
	case RCPT_HELD:
		return &c->held;
	case RCPT_DELIVERED:
		return &c->delivered;
	case RCPT_BOUNCED:
		return &c->bounced;
	}
	return NULL;
}

enum res
db_count_states(struct db *db, struct store_counts *c, char *why)
{
	sqlite3_stmt *st = prep(
	    db, "SELECT state, count(*) FROM recipients GROUP BY state", why);
	int rc;

	if (st == NULL)
		return RES_TEMP;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		int64_t *n =
		    count_of(c, (const char *)sqlite3_column_text(st, 0));

		if (n != NULL)
			*n = sqlite3_column_int64(st, 1);
	}
	sqlite3_reset(st);
	if (rc != SQLITE_DONE) {
		read_failed(db, why);
		return RES_TEMP;
	}
	return RES_OK;
}

static enum res
sq_queue_counts(struct store *store, struct store_counts *c, char *why)
{
	struct db *db = sq_db(store);
	sqlite3_stmt *st;
	enum res r = RES_OK;

	memset(c, 0, sizeof(*c));
	if (db_count_states(db, c, why) != RES_OK)
		return RES_TEMP;
	/* The pending recipients' index finds the messages (not a scan of
	 * every message, finished ones included). */
	st = prep(db,
	    "SELECT coalesce(min(received_at), 0) FROM messages "
	    "WHERE id IN " DB_PENDING_IDS,
	    why);
	if (st == NULL)
		return RES_TEMP;
	if (sqlite3_step(st) == SQLITE_ROW) {
		c->oldest_pending = sqlite3_column_int64(st, 0);
	} else {
		read_failed(db, why);
		r = RES_TEMP;
	}
	sqlite3_reset(st);
	return r;
}

static enum res
sq_probe_write(struct store *store, char *why)
{
	struct db *db = sq_db(store);

	if (exec_simple(db, "BEGIN IMMEDIATE", why) != 0)
		return RES_TEMP;
	return exec_simple(db, "ROLLBACK", why) == 0 ? RES_OK : RES_TEMP;
}

/* Run `n` statements that return no rows, in order; -1 at the first
 * that fails. */
static int
run_all(struct db *db, const char *const *sql, size_t n, char *why)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (db_run(db, sql[i], why) != RES_OK)
			return -1;
	return 0;
}

int
db_delete_start(struct db *db, char *why)
{
	static const char *const steps[] = {
	    "CREATE TEMP TABLE IF NOT EXISTS delete_ids (id TEXT PRIMARY KEY)",
	    "DELETE FROM temp.delete_ids",
	};

	return run_all(db, steps, sizeof(steps) / sizeof(steps[0]), why);
}

int
db_delete_listed(struct db *db, char *why)
{
	static const char *const steps[] = {
	    "DELETE FROM attempts WHERE msg_id IN temp.delete_ids",
	    "DELETE FROM body_chunks WHERE msg_id IN temp.delete_ids",
	    "DELETE FROM recipients WHERE msg_id IN temp.delete_ids",
	    "DELETE FROM messages WHERE id IN temp.delete_ids",
	};

	if (run_all(db, steps, sizeof(steps) / sizeof(steps[0]), why) != 0)
		return -1;
	/* The rows the last step deleted: the messages themselves. */
	return sqlite3_changes(db->h);
}

int
sq_prune_finished(struct store *store, int64_t before, char *why)
{
	struct db *db = sq_db(store);
	sqlite3_stmt *st;

	if (db_delete_start(db, why) != 0)
		return -1;
	st = prep(db,
	    "INSERT INTO temp.delete_ids SELECT m.id FROM messages AS m "
	    "WHERE NOT EXISTS (SELECT 1 FROM recipients AS r "
	    "WHERE r.msg_id = m.id AND (r.state NOT IN ('delivered', "
	    "'bounced') OR coalesce(r.last_attempt_at, m.received_at) >= ?1)) "
	    "LIMIT ?2",
	    why);
	if (st == NULL)
		return -1;
	sqlite3_bind_int64(st, 1, before);
	sqlite3_bind_int(st, 2, STORE_PRUNE_MAX);
	if (step_done(db, st, why) != RES_OK)
		return -1;
	return db_delete_listed(db, why);
}

enum res
db_check_schema(struct db *db, char *why)
{
	int v = user_version(db);

	if (v == DB_SCHEMA_VERSION)
		return RES_OK;
	if (v < 0)
		why_set(
		    why, "cannot read %s: %s", db->path, sqlite3_errmsg(db->h));
	else if (v == 0)
		why_set(why, "no queue at %s (the file holds no queue yet)",
		    db->path);
	else if (v < DB_SCHEMA_VERSION)
		why_set(why,
		    "%s has queue schema version %d; start sluice serve once "
		    "to upgrade it to version %d",
		    db->path, v, DB_SCHEMA_VERSION);
	else
		why_set(why,
		    "%s has queue schema version %d, newer than this sluice "
		    "(%d)",
		    db->path, v, DB_SCHEMA_VERSION);
	return RES_TEMP;
}

static enum res
sq_helper_writer(struct store *store, char *why)
{
	struct db *db = sq_db(store);
	char err[WHY_MAX];

	if (writer_pragmas(db, err) != 0) {
		why_set(why, "cannot set up the queue: %s", err);
		return RES_TEMP;
	}
	if (db_check_schema(db, why) != RES_OK)
		return RES_TEMP;
	return prepare_writer(db, why) == 0 ? RES_OK : RES_TEMP;
}

static void
sq_set_busy_timeout(struct store *store, int ms)
{
	struct db *db = sq_db(store);

	db->busy_ms = ms;
	sqlite3_busy_timeout(db->h, ms);
}

static int
sq_resume_deferred(struct store *store, int64_t since, int64_t now,
    bool (*match)(void *arg, const char *domain), void *arg, char *why)
{
	struct db *db = sq_db(store);
	sqlite3_stmt *st = prep(db,
	    "SELECT DISTINCT domain FROM recipients WHERE state = 'deferred' "
	    "AND next_attempt_at > ?2 AND last_attempt_at >= ?1",
	    why);
	char **domains = NULL;
	int n = 0, cap = 0, i, rc, total = 0;

	if (st == NULL)
		return -1;
	sqlite3_bind_int64(st, 1, since);
	sqlite3_bind_int64(st, 2, now);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		const char *d = (const char *)sqlite3_column_text(st, 0);

		if (d == NULL || !match(arg, d))
			continue;
		if (n == cap) {
			cap = cap ? 2 * cap : 16;
			domains =
			    xrealloc(domains, sizeof(char *) * (size_t)cap);
		}
		domains[n++] = xstrdup(d);
	}
	if (rc != SQLITE_DONE) {
		read_failed(db, why);
		total = -1;
	}
	sqlite3_reset(st);
	st = total < 0
	         ? NULL
	         : prep(db,
	               "UPDATE recipients SET next_attempt_at = ?2 "
	               "WHERE domain = ?3 AND state = 'deferred' "
	               "AND next_attempt_at > ?2 AND last_attempt_at >= ?1",
	               why);
	if (st == NULL)
		total = -1;
	for (i = 0; i < n && total >= 0; i++) {
		sqlite3_bind_int64(st, 1, since);
		sqlite3_bind_int64(st, 2, now);
		sqlite3_bind_text(st, 3, domains[i], -1, SQLITE_STATIC);
		if (step_done(db, st, why) != RES_OK)
			total = -1;
		else
			total += sqlite3_changes(db->h);
	}
	for (i = 0; i < n; i++)
		free(domains[i]);
	free(domains);
	return total;
}

static int
sq_first_pending(struct store *store, int64_t now, const char *domain,
    struct store_due *out, char *why)
{
	struct db *db = sq_db(store);
	sqlite3_stmt *st = prep(db,
	    "SELECT msg_id, rcpt_no, domain FROM recipients "
	    "WHERE domain = ?1 AND state IN ('queued', 'deferred') "
	    "AND (lease_until IS NULL OR lease_until <= ?2) "
	    "ORDER BY next_attempt_at LIMIT 1",
	    why);
	int rc, n = 0;

	if (st == NULL)
		return -1;
	sqlite3_bind_text(st, 1, domain, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 2, now);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		copy_col(st, 0, out->msg_id, sizeof(out->msg_id));
		out->rcpt_no = sqlite3_column_int(st, 1);
		copy_col(st, 2, out->domain, sizeof(out->domain));
		n = 1;
	} else if (rc != SQLITE_DONE) {
		read_failed(db, why);
		n = -1;
	}
	sqlite3_reset(st);
	return n;
}

const struct store_ops sqlite_store_ops = {
    .name = "sqlite",
    .open = sq_open,
    .open_helper = sq_open_helper,
    .open_readonly = sq_open_readonly,
    .open_admin = sq_open_admin,
    .put_envelope = sq_put_envelope,
    .close = sq_close,
    .begin = sq_begin,
    .commit = sq_commit,
    .rollback = sq_rollback,
    .put_chunk = sq_put_chunk,
    .put_incoming = sq_put_incoming,
    .drop_incoming = sq_drop_incoming,
    .reclaim_incoming = sq_reclaim_incoming,
    .checkpoint = sq_checkpoint,
    .watch_wal = sq_watch_wal,
    .wal_bytes = sq_wal_bytes,
    .last_error = sq_last_error,
    .list_due = sq_list_due,
    .next_due = sq_next_due,
    .lease = sq_lease,
    .clear_leases = sq_clear_leases,
    .load_message = sq_load_message,
    .load_rcpt = sq_load_rcpt,
    .read_body = sq_read_body,
    .record_attempt = sq_record_attempt,
    .sts_get = sq_sts_get,
    .sts_put = sq_sts_put,
    .sts_due = sq_sts_due,
    .tlsrpt_add = sq_tlsrpt_add,
    .tlsrpt_day = sq_tlsrpt_day,
    .tlsrpt_sent = sq_tlsrpt_sent,
    .unreported_bounces = sq_unreported_bounces,
    .list_unreported = sq_list_unreported,
    .mark_delay_reported = sq_mark_delay_reported,
    .mark_reported = sq_mark_reported,
    .release_finished = sq_release_finished,
    .queue_counts = sq_queue_counts,
    .probe_write = sq_probe_write,
    .prune_finished = sq_prune_finished,
    .helper_writer = sq_helper_writer,
    .set_busy_timeout = sq_set_busy_timeout,
    .resume_deferred = sq_resume_deferred,
    .first_pending = sq_first_pending,
    .read_begin = sq_read_begin,
    .read_end = sq_read_end,
    .list = sq_list,
    .load = sq_load,
    .exists = sq_exists,
    .attempts = sq_attempts,
    .body = sq_body,
    .change = sq_change,
    .retry_all = sq_retry_all,
    .purge = sq_purge,
    .get_stats = sq_get_stats,
};
