/*
 * admin.c - the queue CLI's SQL (see admin.h).
 *
 * Threads: only the CLI's single thread enters, on its own connection;
 * nothing here is shared.  The server keeps running on the same file:
 * SQLite's WAL locking and the connection's busy timeout arbitrate.
 *
 * Invariants the changes keep (the delivery side relies on them):
 *  1. A change is one transaction (BEGIN IMMEDIATE ... COMMIT): the server
 *     sees all of it or none of it.
 *  2. Leases are left alone, except by bounce: a recipient a delivery
 *     thread is working on stays leased, and db_record_attempt decides
 *     what its attempt may still change (nothing for a deleted message, a
 *     held recipient stays held unless the attempt was final).
 *  3. A recipient bounced here has notified bit 1 clear and no recipient
 *     of its message pending afterwards only if none was: the delivery
 *     side reports it to the sender once nothing is pending.
 */
#include "admin.h"

#include <errno.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

/* The queue ID alphabet (queue/queue.c): Crockford base 32. */
static const char id_alphabet[] = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";

#define MSG_COLS                                                               \
	"m.id, m.received_at, m.sender, m.size, m.stored_size, "               \
	"m.body_type, m.smtputf8, m.dsn_ret, m.dsn_envid, m.client_ip, "       \
	"m.client_port, m.helo, m.protocol, m.tls_version, m.tls_cipher, "     \
	"m.auth_user"

#define PENDING "('queued', 'deferred', 'held')"

/* Fill `why` with the connection's last error. */
static void
sql_failed(struct db *db, char *why)
{
	why_set(why, "queue database error: %s", sqlite3_errmsg(db_handle(db)));
}

static sqlite3_stmt *
prepare(struct db *db, const char *sql, char *why)
{
	sqlite3_stmt *st = NULL;

	if (sqlite3_prepare_v2(db_handle(db), sql, -1, &st, NULL) !=
	    SQLITE_OK) {
		sql_failed(db, why);
		sqlite3_finalize(st);
		return NULL;
	}
	return st;
}

static int
exec_sql(struct db *db, const char *sql, char *why)
{
	if (sqlite3_exec(db_handle(db), sql, NULL, NULL, NULL) != SQLITE_OK) {
		sql_failed(db, why);
		return -1;
	}
	return 0;
}

/* End whatever transaction is open, throwing its changes away. */
static void
rollback(struct db *db)
{
	if (!sqlite3_get_autocommit(db_handle(db)))
		sqlite3_exec(db_handle(db), "ROLLBACK", NULL, NULL, NULL);
}

static enum res
write_begin(struct db *db, char *why)
{
	return exec_sql(db, "BEGIN IMMEDIATE", why) == 0 ? RES_OK : RES_TEMP;
}

static enum res
write_commit(struct db *db, char *why)
{
	if (exec_sql(db, "COMMIT", why) == 0)
		return RES_OK;
	rollback(db);
	return RES_TEMP;
}

/* Step a statement that returns no rows; -1 with `why` on error. */
static int
step_done(struct db *db, sqlite3_stmt *st, char *why)
{
	int rc = sqlite3_step(st);

	sqlite3_reset(st);
	if (rc != SQLITE_DONE) {
		sql_failed(db, why);
		return -1;
	}
	return 0;
}

static char *
col_dup(sqlite3_stmt *st, int col)
{
	const unsigned char *t = sqlite3_column_text(st, col);

	return t ? xstrdup((const char *)t) : NULL;
}

static void
col_copy(sqlite3_stmt *st, int col, char *out, size_t len)
{
	const unsigned char *t = sqlite3_column_text(st, col);

	snprintf(out, len, "%s", t ? (const char *)t : "");
}

static const char *
col_text(sqlite3_stmt *st, int col)
{
	return (const char *)sqlite3_column_text(st, col);
}

static int
user_version(struct db *db)
{
	char why[WHY_MAX];
	sqlite3_stmt *st = prepare(db, "PRAGMA user_version", why);
	int v = -1;

	if (st == NULL)
		return -1;
	if (sqlite3_step(st) == SQLITE_ROW)
		v = sqlite3_column_int(st, 0);
	sqlite3_finalize(st);
	return v;
}

struct db *
admin_open(const char *path, bool write, char *why)
{
	struct stat sb;
	struct db *db;
	int v;

	if (stat(path, &sb) != 0) {
		if (errno == ENOENT)
			why_set(why, "no queue at %s", path);
		else
			why_set(
			    why, "cannot open %s: %s", path, strerror(errno));
		return NULL;
	}
	db = write ? db_open_helper(path, why) : db_open_readonly(path, why);
	if (db == NULL)
		return NULL;
	v = user_version(db);
	if (v < 0)
		why_set(why, "cannot read %s: %s", path,
		    sqlite3_errmsg(db_handle(db)));
	else if (v == 0)
		why_set(
		    why, "no queue at %s (the file holds no queue yet)", path);
	else if (v < DB_SCHEMA_VERSION)
		why_set(why,
		    "%s has queue schema version %d; start sluice serve once "
		    "to upgrade it to version %d",
		    path, v, DB_SCHEMA_VERSION);
	else if (v > DB_SCHEMA_VERSION)
		why_set(why,
		    "%s has queue schema version %d, newer than this sluice "
		    "(%d)",
		    path, v, DB_SCHEMA_VERSION);
	if (v != DB_SCHEMA_VERSION) {
		db_close(db);
		return NULL;
	}
	return db;
}

enum res
admin_read_begin(struct db *db, char *why)
{
	/* A deferred transaction: its first read fixes the snapshot. */
	return exec_sql(db, "BEGIN", why) == 0 ? RES_OK : RES_TEMP;
}

void
admin_read_end(struct db *db)
{
	rollback(db);
}

bool
admin_id_valid(const char *s)
{
	size_t i;

	for (i = 0; i < QUEUE_ID_LEN; i++)
		if (s[i] == '\0' || strchr(id_alphabet, s[i]) == NULL)
			return false;
	return s[i] == '\0';
}

/* ---- reading ---- */

void
admin_msg_clear(struct admin_msg *m)
{
	int i;

	if (m == NULL)
		return;
	for (i = 0; i < m->nrcpts; i++) {
		struct admin_rcpt *r = &m->rcpts[i];

		free(r->address);
		free(r->domain);
		free(r->last_reply);
		free(r->notify);
		free(r->orcpt);
	}
	free(m->rcpts);
	free(m->sender);
	free(m->body_type);
	free(m->dsn_ret);
	free(m->dsn_envid);
	free(m->client_ip);
	free(m->helo);
	free(m->protocol);
	free(m->tls_version);
	free(m->tls_cipher);
	free(m->auth_user);
	memset(m, 0, sizeof(*m));
}

/* The message row of a statement selecting MSG_COLS. */
static void
msg_from_row(sqlite3_stmt *st, struct admin_msg *m)
{
	memset(m, 0, sizeof(*m));
	col_copy(st, 0, m->id, sizeof(m->id));
	m->received_at = sqlite3_column_int64(st, 1);
	m->sender = col_dup(st, 2);
	if (m->sender == NULL)
		m->sender = xstrdup("");
	m->size = sqlite3_column_int64(st, 3);
	m->stored_size = sqlite3_column_int64(st, 4);
	m->body_type = col_dup(st, 5);
	m->smtputf8 = sqlite3_column_int(st, 6) != 0;
	m->dsn_ret = col_dup(st, 7);
	m->dsn_envid = col_dup(st, 8);
	m->client_ip = col_dup(st, 9);
	m->client_port = sqlite3_column_int(st, 10);
	m->helo = col_dup(st, 11);
	m->protocol = col_dup(st, 12);
	m->tls_version = col_dup(st, 13);
	m->tls_cipher = col_dup(st, 14);
	m->auth_user = col_dup(st, 15);
}

/* Add the recipients of m->id to `m`, with the prepared statement `st`. */
static int
load_rcpts(struct db *db, sqlite3_stmt *st, struct admin_msg *m, char *why)
{
	int rc, cap = 0;

	sqlite3_bind_text(st, 1, m->id, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 2, (int64_t)time(NULL));
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		struct admin_rcpt *r;

		if (m->nrcpts == cap) {
			cap = cap ? cap * 2 : 4;
			m->rcpts = xrealloc(m->rcpts, sizeof(*r) * (size_t)cap);
		}
		r = &m->rcpts[m->nrcpts++];
		memset(r, 0, sizeof(*r));
		r->rcpt_no = sqlite3_column_int(st, 0);
		r->address = col_dup(st, 1);
		r->domain = col_dup(st, 2);
		col_copy(st, 3, r->state, sizeof(r->state));
		r->attempts = sqlite3_column_int(st, 4);
		r->next_attempt_at = sqlite3_column_int64(st, 5);
		r->last_attempt_at = sqlite3_column_int64(st, 6);
		r->last_reply = col_dup(st, 7);
		r->notify = col_dup(st, 8);
		r->orcpt = col_dup(st, 9);
		r->notified = sqlite3_column_int(st, 10);
		r->in_flight = sqlite3_column_int(st, 11) != 0;
		if (r->address == NULL)
			r->address = xstrdup("");
	}
	sqlite3_reset(st);
	if (rc != SQLITE_DONE) {
		sql_failed(db, why);
		return -1;
	}
	return 0;
}

static sqlite3_stmt *
prepare_rcpts(struct db *db, char *why)
{
	return prepare(db,
	    "SELECT rcpt_no, address, domain, state, attempts, "
	    "next_attempt_at, coalesce(last_attempt_at, 0), last_reply, "
	    "notify, orcpt, notified, coalesce(lease_until, 0) > ?2 "
	    "FROM recipients WHERE msg_id = ?1 ORDER BY rcpt_no",
	    why);
}

int
admin_list(struct db *db, const struct admin_filter *f,
    int (*fn)(void *, const struct admin_msg *), void *arg, char *why)
{
	static const char *const pending[] = {"queued", "deferred", "held"};
	sqlite3_stmt *st, *rst = NULL;
	char domain[256];
	int n = 0, rc, i;

	/* The recipients' index finds the messages; then received order. */
	st = prepare(db,
	    "SELECT " MSG_COLS " FROM messages AS m WHERE m.id IN "
	    "(SELECT r.msg_id FROM recipients AS r "
	    "WHERE r.state IN (?1, ?2, ?3) AND (?4 IS NULL OR r.domain = ?4)) "
	    "AND (?5 IS NULL OR m.received_at < ?5) "
	    "ORDER BY m.received_at, m.id",
	    why);
	if (st == NULL || (rst = prepare_rcpts(db, why)) == NULL) {
		n = -1;
		goto out;
	}
	for (i = 0; i < 3; i++)
		sqlite3_bind_text(st, i + 1, f->state ? f->state : pending[i],
		    -1, SQLITE_STATIC);
	if (f->domain != NULL) {
		/* Domains are stored in lower case (ASCII; A-labels). */
		for (i = 0; i < 255 && f->domain[i] != '\0'; i++)
			domain[i] = ascii_lower(f->domain[i]);
		domain[i] = '\0';
		sqlite3_bind_text(st, 4, domain, -1, SQLITE_STATIC);
	}
	if (f->received_before > 0)
		sqlite3_bind_int64(st, 5, f->received_before);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		struct admin_msg m;
		int stop;

		msg_from_row(st, &m);
		if (load_rcpts(db, rst, &m, why) != 0) {
			admin_msg_clear(&m);
			n = -1;
			goto out;
		}
		n++;
		stop = fn(arg, &m);
		admin_msg_clear(&m);
		if (stop)
			goto out;
	}
	if (rc != SQLITE_DONE) {
		sql_failed(db, why);
		n = -1;
	}
out:
	sqlite3_finalize(rst);
	sqlite3_finalize(st);
	return n;
}

enum res
admin_load(struct db *db, const char *id, struct admin_msg *m, char *why)
{
	sqlite3_stmt *st, *rst = NULL;
	enum res r = RES_TEMP;
	int rc;

	memset(m, 0, sizeof(*m));
	st = prepare(
	    db, "SELECT " MSG_COLS " FROM messages AS m WHERE m.id = ?1", why);
	if (st == NULL)
		return RES_TEMP;
	sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
	rc = sqlite3_step(st);
	if (rc == SQLITE_DONE) {
		why_set(why, "no message %s in the queue", id);
		r = RES_PERM;
		goto out;
	}
	if (rc != SQLITE_ROW) {
		sql_failed(db, why);
		goto out;
	}
	msg_from_row(st, m);
	if ((rst = prepare_rcpts(db, why)) == NULL ||
	    load_rcpts(db, rst, m, why) != 0) {
		admin_msg_clear(m);
		goto out;
	}
	r = RES_OK;
out:
	sqlite3_finalize(rst);
	sqlite3_finalize(st);
	return r;
}

int
admin_attempts(struct db *db, const char *id,
    int (*fn)(void *, const struct admin_attempt *), void *arg, char *why)
{
	sqlite3_stmt *st = prepare(db,
	    "SELECT a.at, a.rcpt_no, r.address, a.mx_host, a.ip, "
	    "coalesce(a.port, 0), a.tls, a.status, a.reply, "
	    "coalesce(a.duration_ms, -1) "
	    "FROM attempts AS a LEFT JOIN recipients AS r "
	    "ON r.msg_id = a.msg_id AND r.rcpt_no = a.rcpt_no "
	    "WHERE a.msg_id = ?1 ORDER BY a.id",
	    why);
	int n = 0, rc;

	if (st == NULL)
		return -1;
	sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		struct admin_attempt a;

		a.at = sqlite3_column_int64(st, 0);
		a.rcpt_no = sqlite3_column_int(st, 1);
		a.address = col_text(st, 2);
		a.mx_host = col_text(st, 3);
		a.ip = col_text(st, 4);
		a.port = sqlite3_column_int(st, 5);
		a.tls = col_text(st, 6);
		a.status = col_text(st, 7);
		a.reply = col_text(st, 8);
		a.duration_ms = sqlite3_column_int64(st, 9);
		if (a.status == NULL)
			a.status = "";
		n++;
		if (fn(arg, &a) != 0)
			break;
	}
	if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
		sql_failed(db, why);
		n = -1;
	}
	sqlite3_finalize(st);
	return n;
}

int
admin_body(struct db *db, const char *id,
    int (*fn)(void *, const void *, size_t), void *arg, char *why)
{
	sqlite3_stmt *st = prepare(db,
	    "SELECT data FROM body_chunks WHERE msg_id = ?1 ORDER BY seq", why);
	int n = 0, rc;

	if (st == NULL)
		return -1;
	sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		const void *p = sqlite3_column_blob(st, 0);
		int len = sqlite3_column_bytes(st, 0);

		n++;
		if (len > 0 && fn(arg, p, (size_t)len) != 0)
			break;
	}
	if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
		sql_failed(db, why);
		n = -1;
	}
	sqlite3_finalize(st);
	return n;
}

/* ---- changes ---- */

/*
 * The statements of one kind of change, run per message in order; what
 * the last one changed is what the change reports (for a delete: every
 * recipient the message had, counted by look_up).
 */
static const char *const op_sql[][4] = {
    [ADMIN_RETRY] = {"UPDATE recipients SET next_attempt_at = ?2 "
                     "WHERE msg_id = ?1 AND state IN ('queued', 'deferred')",
        NULL},
    [ADMIN_HOLD] = {"UPDATE recipients SET state = 'held' "
                    "WHERE msg_id = ?1 AND state IN ('queued', 'deferred')",
        NULL},
    [ADMIN_RELEASE] = {"UPDATE recipients SET state = CASE WHEN attempts > 0 "
                       "THEN 'deferred' ELSE 'queued' END, "
                       "next_attempt_at = ?2 "
                       "WHERE msg_id = ?1 AND state = 'held'",
        NULL},
    [ADMIN_DELETE] = {"DELETE FROM attempts WHERE msg_id = ?1",
        "DELETE FROM body_chunks WHERE msg_id = ?1",
        "DELETE FROM recipients WHERE msg_id = ?1",
        "DELETE FROM messages WHERE id = ?1"},
    [ADMIN_BOUNCE] = {"INSERT INTO attempts (msg_id, rcpt_no, at, mx_host, "
                      "status, reply) SELECT msg_id, rcpt_no, ?2, NULL, "
                      "'bounced', ?3 FROM recipients "
                      "WHERE msg_id = ?1 AND state IN " PENDING,
        "UPDATE recipients SET state = 'bounced', last_reply = ?3, "
        "last_attempt_at = ?2, lease_until = NULL, "
        "notified = notified & ~1 "
        "WHERE msg_id = ?1 AND state IN " PENDING,
        NULL},
};

/*
 * Whether each message exists, with its sender and (for a bounce) how
 * many of its pending recipients the failure notice will cover (RFC 3461:
 * without NOTIFY, failures are reported).  -1 on error, else how many
 * were not found.
 */
static int
look_up(struct db *db, struct admin_change *v, int n, char *why)
{
	sqlite3_stmt *st = prepare(db,
	    "SELECT m.sender, (SELECT count(*) FROM recipients AS r "
	    "WHERE r.msg_id = m.id AND r.state IN " PENDING " AND "
	    "(r.notify IS NULL OR r.notify = '' OR "
	    "instr(upper(r.notify), 'FAILURE') > 0)), "
	    "(SELECT count(*) FROM recipients AS r WHERE r.msg_id = m.id) "
	    "FROM messages AS m WHERE m.id = ?1",
	    why);
	int i, rc, missing = 0;

	if (st == NULL)
		return -1;
	for (i = 0; i < n; i++) {
		sqlite3_bind_text(st, 1, v[i].id, -1, SQLITE_STATIC);
		rc = sqlite3_step(st);
		v[i].found = (rc == SQLITE_ROW);
		v[i].changed = 0;
		v[i].notice = 0;
		v[i].rcpts = 0;
		v[i].sender[0] = '\0';
		if (rc == SQLITE_ROW) {
			col_copy(st, 0, v[i].sender, sizeof(v[i].sender));
			v[i].rcpts = sqlite3_column_int(st, 2);
			if (v[i].sender[0] != '\0')
				v[i].notice = sqlite3_column_int(st, 1);
		} else if (rc == SQLITE_DONE) {
			missing++;
		} else {
			sql_failed(db, why);
			missing = -1;
		}
		sqlite3_reset(st);
		if (missing < 0)
			break;
	}
	sqlite3_finalize(st);
	return missing;
}

/* Run the statements of `op` for one message; -1 on error. */
static int
change_one(struct db *db, enum admin_op op, sqlite3_stmt **st, int nst,
    struct admin_change *c, int64_t now, char *why)
{
	int i;

	for (i = 0; i < nst; i++) {
		int np = sqlite3_bind_parameter_count(st[i]);

		sqlite3_bind_text(st[i], 1, c->id, -1, SQLITE_STATIC);
		if (np >= 2)
			sqlite3_bind_int64(st[i], 2, now);
		if (np >= 3)
			sqlite3_bind_text(
			    st[i], 3, ADMIN_BOUNCE_REPLY, -1, SQLITE_STATIC);
		if (step_done(db, st[i], why) != 0)
			return -1;
		c->changed = sqlite3_changes(db_handle(db));
	}
	if (op == ADMIN_DELETE)
		c->changed = c->rcpts;
	return 0;
}

enum res
admin_change(struct db *db, enum admin_op op, struct admin_change *v, int n,
    int64_t now, char *why)
{
	sqlite3_stmt *st[4] = {NULL, NULL, NULL, NULL};
	enum res r = RES_TEMP;
	int i, nst = 0, missing;

	if (write_begin(db, why) != RES_OK)
		return RES_TEMP;
	missing = look_up(db, v, n, why);
	if (missing != 0) {
		if (missing > 0) {
			why_set(why, "%d message%s not in the queue", missing,
			    missing == 1 ? "" : "s");
			r = RES_PERM;
		}
		goto out;
	}
	for (nst = 0; nst < 4 && op_sql[op][nst] != NULL; nst++)
		if ((st[nst] = prepare(db, op_sql[op][nst], why)) == NULL)
			goto out;
	for (i = 0; i < n; i++)
		if (change_one(db, op, st, nst, &v[i], now, why) != 0)
			goto out;
	r = write_commit(db, why);
out:
	for (i = 0; i < 4; i++)
		sqlite3_finalize(st[i]);
	if (r != RES_OK)
		rollback(db);
	return r;
}

int64_t
admin_retry_all(struct db *db, const char *domain, int64_t now, char *why)
{
	sqlite3_stmt *st;
	char low[256];
	int64_t n = -1;
	int i;

	if (write_begin(db, why) != RES_OK)
		return -1;
	st = prepare(db,
	    "UPDATE recipients SET next_attempt_at = ?1 "
	    "WHERE state IN ('queued', 'deferred') "
	    "AND (?2 IS NULL OR domain = ?2)",
	    why);
	if (st == NULL)
		goto out;
	sqlite3_bind_int64(st, 1, now);
	if (domain != NULL) {
		for (i = 0; i < 255 && domain[i] != '\0'; i++)
			low[i] = ascii_lower(domain[i]);
		low[i] = '\0';
		sqlite3_bind_text(st, 2, low, -1, SQLITE_STATIC);
	}
	if (step_done(db, st, why) != 0)
		goto out;
	n = sqlite3_changes(db_handle(db));
	if (write_commit(db, why) != RES_OK)
		n = -1;
out:
	sqlite3_finalize(st);
	if (n < 0)
		rollback(db);
	return n;
}

int
admin_purge(struct db *db, int64_t before, char *why)
{
	int n;

	if (write_begin(db, why) != RES_OK)
		return -1;
	n = db_prune_finished(db, before, why);
	if (n >= 0 && write_commit(db, why) != RES_OK)
		n = -1;
	if (n < 0)
		rollback(db);
	return n;
}

/* ---- statistics ---- */

/* One row of int64 columns (NULL reads as 0); -1 on error. */
static int
ints_row(struct db *db, const char *sql, int64_t *out, int n, char *why)
{
	sqlite3_stmt *st = prepare(db, sql, why);
	int i, rc = -1;

	if (st == NULL)
		return -1;
	if (sqlite3_step(st) == SQLITE_ROW) {
		for (i = 0; i < n; i++)
			out[i] = sqlite3_column_int64(st, i);
		rc = 0;
	} else {
		sql_failed(db, why);
	}
	sqlite3_finalize(st);
	return rc;
}

static int
load_domains(struct db *db, struct admin_domain **doms, int *ndoms, char *why)
{
	sqlite3_stmt *st = prepare(db,
	    "SELECT domain, recipients, queued, deferred, held, delivered, "
	    "bounced, coalesce(oldest_pending_seconds, -1) "
	    "FROM queue_by_domain "
	    "ORDER BY queued + deferred + held DESC, recipients DESC, domain",
	    why);
	int rc, cap = 0;

	if (st == NULL)
		return -1;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		struct admin_domain *d;

		if (*ndoms == cap) {
			cap = cap ? cap * 2 : 16;
			*doms = xrealloc(*doms, sizeof(**doms) * (size_t)cap);
		}
		d = &(*doms)[(*ndoms)++];
		d->domain = col_dup(st, 0);
		if (d->domain == NULL)
			d->domain = xstrdup("");
		d->recipients = sqlite3_column_int64(st, 1);
		d->queued = sqlite3_column_int64(st, 2);
		d->deferred = sqlite3_column_int64(st, 3);
		d->held = sqlite3_column_int64(st, 4);
		d->delivered = sqlite3_column_int64(st, 5);
		d->bounced = sqlite3_column_int64(st, 6);
		d->oldest_pending_seconds = sqlite3_column_int64(st, 7);
	}
	sqlite3_finalize(st);
	if (rc != SQLITE_DONE) {
		sql_failed(db, why);
		return -1;
	}
	return 0;
}

static int
oldest_id(struct db *db, char *out, size_t len, char *why)
{
	sqlite3_stmt *st = prepare(db,
	    "SELECT id FROM messages WHERE id IN (SELECT msg_id FROM "
	    "recipients WHERE state IN " PENDING ") "
	    "ORDER BY received_at, id LIMIT 1",
	    why);
	int rc;

	if (st == NULL)
		return -1;
	out[0] = '\0';
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		col_copy(st, 0, out, len);
	sqlite3_finalize(st);
	if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
		sql_failed(db, why);
		return -1;
	}
	return 0;
}

enum res
admin_get_stats(struct db *db, struct admin_stats *s,
    struct admin_domain **doms, int *ndoms, char *why)
{
	int64_t v[3];

	memset(s, 0, sizeof(*s));
	*doms = NULL;
	*ndoms = 0;
	if (db_queue_counts(db, &s->counts, why) != RES_OK)
		return RES_TEMP;
	if (ints_row(db,
	        "SELECT (SELECT count(*) FROM messages), count(*), "
	        "coalesce(sum(size), 0) FROM messages WHERE id IN "
	        "(SELECT msg_id FROM recipients WHERE state IN " PENDING ")",
	        v, 3, why) != 0 ||
	    oldest_id(db, s->oldest_id, sizeof(s->oldest_id), why) != 0 ||
	    load_domains(db, doms, ndoms, why) != 0) {
		admin_domains_free(*doms, *ndoms);
		*doms = NULL;
		*ndoms = 0;
		return RES_TEMP;
	}
	s->messages = v[0];
	s->pending_messages = v[1];
	s->pending_size = v[2];
	return RES_OK;
}

void
admin_domains_free(struct admin_domain *doms, int n)
{
	int i;

	for (i = 0; i < n; i++)
		free(doms[i].domain);
	free(doms);
}
