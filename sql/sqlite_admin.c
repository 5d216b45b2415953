/*
 * sqlite_admin.c - the queue CLI's SQL, the SQLite side of store.h's
 * "queue CLI" operations.
 *
 * Threads: only the CLI's single thread enters, on its own connection;
 * nothing here is shared.  The server keeps running on the same file:
 * SQLite's WAL locking and the connection's busy timeout arbitrate.
 *
 * Invariants the changes keep (the delivery side relies on them):
 *  1. A change is one transaction (BEGIN IMMEDIATE ... COMMIT): the server
 *     sees all of it or none of it.
 *  2. Leases are left alone, except by bounce: a recipient a delivery
 *     thread is working on stays leased, and store_record_attempt decides
 *     what its attempt may still change (nothing for a deleted message, a
 *     held recipient stays held unless the attempt was final).
 *  3. A recipient bounced here has notified bit 1 clear and no recipient
 *     of its message pending afterwards only if none was: the delivery
 *     side reports it to the sender once nothing is pending.
 */
#include "store.h"
#include "vocab.h"
#include "sqlite.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define MSG_COLS                                                               \
	"m.id, m.received_at, m.sender, m.size, m.stored_size, "               \
	"m.body_type, m.smtputf8, m.dsn_ret, m.dsn_envid, m.client_ip, "       \
	"m.client_port, m.helo, m.protocol, m.tls_version, m.tls_cipher, "     \
	"m.auth_user"

static char *
col_dup(sqlite3_stmt *st, int col)
{
	const unsigned char *t = sqlite3_column_text(st, col);

	return t ? xstrdup((const char *)t) : NULL;
}

static const char *
col_text(sqlite3_stmt *st, int col)
{
	return (const char *)sqlite3_column_text(st, col);
}

struct store *
sq_open_admin(const char *path, bool write, char *why)
{
	struct stat sb;
	struct store *store;
	struct db *db;

	if (stat(path, &sb) != 0) {
		if (errno == ENOENT)
			why_set(why, "no queue at %s", path);
		else
			why_set(
			    why, "cannot open %s: %s", path, strerror(errno));
		return NULL;
	}
	store = write ? sqlite_store_ops.open_helper(path, why)
	              : sqlite_store_ops.open_readonly(path, why);
	if (store == NULL)
		return NULL;
	db = sq_db(store);
	db_errors_for_cli(db);
	if (db_check_schema(db, why) != RES_OK) {
		sq_close(store);
		return NULL;
	}
	return store;
}

enum res
sq_read_begin(struct store *store, char *why)
{
	struct db *db = sq_db(store);

	/* A deferred transaction: its first read fixes the snapshot. */
	return db_run(db, "BEGIN", why);
}

void
sq_read_end(struct store *store)
{
	sq_rollback(store);
}

/* ---- reading ---- */

/* The message row of a statement selecting MSG_COLS. */
static void
msg_from_row(sqlite3_stmt *st, struct store_msg *m)
{
	memset(m, 0, sizeof(*m));
	copy_col(st, 0, m->id, sizeof(m->id));
	m->received_at = sqlite3_column_int64(st, 1);
	m->sender = col_dup(st, 2);
	if (m->sender == NULL)
		m->sender = xstrdup("");
	m->size = sqlite3_column_int64(st, 3);
	m->stored_size = sqlite3_column_int64(st, 4);
	(void)body_type_parse(col_text(st, 5), &m->body_type);
	m->smtputf8 = sqlite3_column_int(st, 6) != 0;
	m->dsn_ret = dsn_ret_parse(col_text(st, 7));
	m->dsn_envid = col_dup(st, 8);
	m->client_ip = col_dup(st, 9);
	m->client_port = sqlite3_column_int(st, 10);
	m->helo = col_dup(st, 11);
	m->protocol = col_dup(st, 12);
	m->tls_version = col_dup(st, 13);
	m->tls_cipher = col_dup(st, 14);
	m->auth_user = col_dup(st, 15);
}

/*
 * Add the recipients of m->id to `m`, with the statement of rcpts_stmt;
 * in flight: leased beyond `now`.
 */
static int
load_rcpts(struct db *db, sqlite3_stmt *st, struct store_msg *m, int64_t now,
    char *why)
{
	int rc, cap = 0;

	sqlite3_bind_text(st, 1, m->id, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 2, now);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		struct store_rcpt *r;

		if (m->nrcpts == cap) {
			cap = cap ? cap * 2 : 4;
			m->rcpts = xrealloc(m->rcpts, sizeof(*r) * (size_t)cap);
		}
		r = &m->rcpts[m->nrcpts++];
		memset(r, 0, sizeof(*r));
		r->rcpt_no = sqlite3_column_int(st, 0);
		r->address = col_dup(st, 1);
		r->domain = col_dup(st, 2);
		(void)rcpt_state_parse(col_text(st, 3), &r->state);
		r->attempts = sqlite3_column_int(st, 4);
		r->next_attempt_at = sqlite3_column_int64(st, 5);
		r->last_attempt_at = sqlite3_column_int64(st, 6);
		r->last_reply = col_dup(st, 7);
		r->notify = col_text(st, 8) ? notify_parse(col_text(st, 8)) : 0;
		r->orcpt = col_dup(st, 9);
		r->notified = (unsigned)sqlite3_column_int(st, 10);
		r->in_flight = sqlite3_column_int(st, 11) != 0;
		if (r->address == NULL)
			r->address = xstrdup("");
	}
	sqlite3_reset(st);
	if (rc != SQLITE_DONE) {
		db_fail(db, rc, why);
		return -1;
	}
	return 0;
}

static sqlite3_stmt *
rcpts_stmt(struct db *db, char *why)
{
	return prep(db,
	    "SELECT rcpt_no, address, domain, state, attempts, "
	    "next_attempt_at, coalesce(last_attempt_at, 0), last_reply, "
	    "notify, orcpt, notified, coalesce(lease_until, 0) > ?2 "
	    "FROM recipients WHERE msg_id = ?1 ORDER BY rcpt_no",
	    why);
}

int
sq_list(struct store *store, const struct store_filter *f, int64_t now,
    int (*fn)(void *, const struct store_msg *), void *arg, char *why)
{
	struct db *db = sq_db(store);
	static const enum rcpt_state pending[] = {
	    RCPT_QUEUED, RCPT_DEFERRED, RCPT_HELD};
	sqlite3_stmt *st, *rst = NULL;
	char domain[SMTP_DOMAIN_MAX + 1];
	int n = 0, rc, i;

	/* The recipients' index finds the messages; then received order. */
	st = prep(db,
	    "SELECT " MSG_COLS " FROM messages AS m WHERE m.id IN "
	    "(SELECT r.msg_id FROM recipients AS r "
	    "WHERE r.state IN (?1, ?2, ?3) AND (?4 IS NULL OR r.domain = ?4)) "
	    "AND (?5 IS NULL OR m.received_at < ?5) "
	    "ORDER BY m.received_at, m.id",
	    why);
	if (st == NULL || (rst = rcpts_stmt(db, why)) == NULL) {
		n = -1;
		goto out;
	}
	for (i = 0; i < 3; i++)
		sqlite3_bind_text(st, i + 1,
		    rcpt_state_name(f->state ? *f->state : pending[i]), -1,
		    SQLITE_STATIC);
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
		struct store_msg m;
		int stop;

		msg_from_row(st, &m);
		if (load_rcpts(db, rst, &m, now, why) != 0) {
			store_msg_clear(&m);
			n = -1;
			goto out;
		}
		n++;
		stop = fn(arg, &m);
		store_msg_clear(&m);
		if (stop)
			goto out;
	}
	if (rc != SQLITE_DONE) {
		db_fail(db, rc, why);
		n = -1;
	}
out:
	sqlite3_reset(st);
	return n;
}

enum res
sq_load(struct store *store, const char *id, int64_t now, struct store_msg *m,
    char *why)
{
	struct db *db = sq_db(store);
	sqlite3_stmt *st, *rst;
	enum res r = RES_TEMP;
	int rc;

	memset(m, 0, sizeof(*m));
	st = prep(
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
		db_fail(db, rc, why);
		goto out;
	}
	msg_from_row(st, m);
	if ((rst = rcpts_stmt(db, why)) == NULL ||
	    load_rcpts(db, rst, m, now, why) != 0) {
		store_msg_clear(m);
		goto out;
	}
	r = RES_OK;
out:
	sqlite3_reset(st);
	return r;
}

int
sq_exists(struct store *store, const char *id, char *why)
{
	struct db *db = sq_db(store);
	sqlite3_stmt *st =
	    prep(db, "SELECT 1 FROM messages WHERE id = ?1", why);
	int rc;

	if (st == NULL)
		return -1;
	sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
	rc = sqlite3_step(st);
	sqlite3_reset(st);
	if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
		db_fail(db, rc, why);
		return -1;
	}
	return rc == SQLITE_ROW;
}

int
sq_attempts(struct store *store, const char *id,
    int (*fn)(void *, const struct store_attempt_row *), void *arg, char *why)
{
	struct db *db = sq_db(store);
	sqlite3_stmt *st = prep(db,
	    "SELECT a.at, a.rcpt_no, r.address, a.mx_host, a.ip, "
	    "coalesce(a.port, 0), a.tls, a.status, a.reply, "
	    "coalesce(a.duration_ms, -1), a.security, a.security_why "
	    "FROM attempts AS a LEFT JOIN recipients AS r "
	    "ON r.msg_id = a.msg_id AND r.rcpt_no = a.rcpt_no "
	    "WHERE a.msg_id = ?1 ORDER BY a.id",
	    why);
	int n = 0, rc;

	if (st == NULL)
		return -1;
	sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		struct store_attempt_row a;

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
		a.security = col_text(st, 10);
		a.security_why = col_text(st, 11);
		if (a.status == NULL)
			a.status = "";
		n++;
		if (fn(arg, &a) != 0)
			break;
	}
	if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
		db_fail(db, rc, why);
		n = -1;
	}
	sqlite3_reset(st);
	return n;
}

int
sq_body(struct store *store, const char *id,
    int (*fn)(void *, const void *, size_t), void *arg, char *why)
{
	struct db *db = sq_db(store);
	bool stopped; /* by fn: not an error here */

	return db_body_chunks(db, id, fn, arg, &stopped, why);
}

/* ---- changes ---- */

#define OP_MAX 2 /* statements of one change */

/*
 * The statements of one kind of change, run per message in order; what
 * the last one changed is what the change reports.  A delete lists the
 * messages, then db_delete_listed deletes them (it reports every
 * recipient the message had, counted by look_up).
 */
static const char *const op_sql[][OP_MAX] = {
    [STORE_RETRY] = {"UPDATE recipients SET next_attempt_at = ?2 "
                     "WHERE msg_id = ?1 AND state IN ('queued', 'deferred')"},
    [STORE_HOLD] = {"UPDATE recipients SET state = 'held' "
                    "WHERE msg_id = ?1 AND state IN ('queued', 'deferred')"},
    [STORE_RELEASE] = {"UPDATE recipients SET state = CASE WHEN attempts > 0 "
                       "THEN 'deferred' ELSE 'queued' END, "
                       "next_attempt_at = ?2 "
                       "WHERE msg_id = ?1 AND state = 'held'"},
    [STORE_DELETE] = {"INSERT OR IGNORE INTO temp.delete_ids (id) "
                      "VALUES (?1)"},
    [STORE_BOUNCE] = {"INSERT INTO attempts (msg_id, rcpt_no, at, mx_host, "
                      "status, reply) SELECT msg_id, rcpt_no, ?2, NULL, "
                      "'bounced', ?3 FROM recipients "
                      "WHERE msg_id = ?1 AND state IN " DB_PENDING,
        "UPDATE recipients SET state = 'bounced', last_reply = ?3, "
        "last_attempt_at = ?2, lease_until = NULL, "
        "notified = notified & ~1 "
        "WHERE msg_id = ?1 AND state IN " DB_PENDING},
};

/*
 * Whether each message exists, with its sender and (for a bounce) how
 * many of its pending recipients the failure notice will cover (RFC 3461:
 * without NOTIFY, failures are reported).  -1 on error, else how many
 * were not found.
 */
static int
look_up(struct db *db, struct store_change *v, int n, char *why)
{
	sqlite3_stmt *st = prep(db,
	    "SELECT m.sender, (SELECT count(*) FROM recipients AS r "
	    "WHERE r.msg_id = m.id AND r.state IN " DB_PENDING " AND "
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
			copy_col(st, 0, v[i].sender, sizeof(v[i].sender));
			v[i].rcpts = sqlite3_column_int(st, 2);
			if (v[i].sender[0] != '\0')
				v[i].notice = sqlite3_column_int(st, 1);
		} else if (rc == SQLITE_DONE) {
			missing++;
		} else {
			db_fail(db, rc, why);
			missing = -1;
		}
		sqlite3_reset(st);
		if (missing < 0)
			break;
	}
	return missing;
}

/* Run the statements of `op` for one message; -1 on error. */
static int
change_one(struct db *db, enum store_op op, sqlite3_stmt **st, int nst,
    struct store_change *c, int64_t now, char *why)
{
	int i;

	for (i = 0; i < nst; i++) {
		int np = sqlite3_bind_parameter_count(st[i]);

		sqlite3_bind_text(st[i], 1, c->id, -1, SQLITE_STATIC);
		if (np >= 2)
			sqlite3_bind_int64(st[i], 2, now);
		if (np >= 3)
			sqlite3_bind_text(
			    st[i], 3, STORE_BOUNCE_REPLY, -1, SQLITE_STATIC);
		if (step_done(db, st[i], why) != RES_OK)
			return -1;
		c->changed = sqlite3_changes(sq_handle(db));
	}
	if (op == STORE_DELETE)
		c->changed = c->rcpts;
	return 0;
}

enum res
sq_change(struct store *store, enum store_op op, struct store_change *v, int n,
    int64_t now, char *why)
{
	struct db *db = sq_db(store);
	sqlite3_stmt *st[OP_MAX];
	enum res r = RES_TEMP;
	int i, nst, missing;

	if (sq_begin(sq_store(db), why) != RES_OK)
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
	if (op == STORE_DELETE && db_delete_start(db, why) != 0)
		goto out;
	for (nst = 0; nst < OP_MAX && op_sql[op][nst] != NULL; nst++)
		if ((st[nst] = prep(db, op_sql[op][nst], why)) == NULL)
			goto out;
	for (i = 0; i < n; i++)
		if (change_one(db, op, st, nst, &v[i], now, why) != 0)
			goto out;
	if (op == STORE_DELETE && db_delete_listed(db, why) < 0)
		goto out;
	r = sq_commit(sq_store(db), why);
out:
	if (r != RES_OK)
		sq_rollback(sq_store(db));
	return r;
}

int64_t
sq_retry_all(struct store *store, const char *domain, int64_t now, char *why)
{
	struct db *db = sq_db(store);
	sqlite3_stmt *st;
	char low[SMTP_DOMAIN_MAX + 1];
	int64_t n = -1;
	int i;

	if (sq_begin(sq_store(db), why) != RES_OK)
		return -1;
	st = prep(db,
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
	if (step_done(db, st, why) != RES_OK)
		goto out;
	n = sqlite3_changes(sq_handle(db));
	if (sq_commit(sq_store(db), why) != RES_OK)
		n = -1;
out:
	if (n < 0)
		sq_rollback(sq_store(db));
	return n;
}

int
sq_purge(struct store *store, int64_t before, char *why)
{
	struct db *db = sq_db(store);
	int n;

	if (sq_begin(sq_store(db), why) != RES_OK)
		return -1;
	n = sq_prune_finished(sq_store(db), before, why);
	if (n >= 0 && sq_commit(sq_store(db), why) != RES_OK)
		n = -1;
	if (n < 0)
		sq_rollback(sq_store(db));
	return n;
}

/* ---- statistics ---- */

static int
load_domains(struct db *db, struct store_domain **doms, int *ndoms, char *why)
{
	sqlite3_stmt *st = prep(db,
	    "SELECT domain, recipients, queued, deferred, held, delivered, "
	    "bounced, coalesce(oldest_pending_seconds, -1) "
	    "FROM queue_by_domain "
	    "ORDER BY queued + deferred + held DESC, recipients DESC, domain",
	    why);
	int rc, cap = 0;

	if (st == NULL)
		return -1;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		struct store_domain *d;

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
	sqlite3_reset(st);
	if (rc != SQLITE_DONE) {
		db_fail(db, rc, why);
		return -1;
	}
	return 0;
}

/*
 * Every message, and the pending ones (a recipient queued, deferred or
 * held): how many, their size, and the oldest (received first; by ID
 * among those received in the same second), in one pass over them.
 */
static int
load_pending(struct db *db, struct store_stats *s, char *why)
{
	sqlite3_stmt *st = prep(db,
	    "SELECT t.n, coalesce(p.n, 0), coalesce(p.size, 0), "
	    "coalesce(p.received_at, 0), p.id "
	    "FROM (SELECT count(*) AS n FROM messages) AS t LEFT JOIN "
	    "(SELECT count(*) OVER () AS n, sum(size) OVER () AS size, "
	    "received_at, id FROM messages WHERE id IN " DB_PENDING_IDS " "
	    "ORDER BY received_at, id LIMIT 1) AS p",
	    why);
	int rc;

	if (st == NULL)
		return -1;
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		s->messages = sqlite3_column_int64(st, 0);
		s->pending_messages = sqlite3_column_int64(st, 1);
		s->pending_size = sqlite3_column_int64(st, 2);
		s->counts.oldest_pending = sqlite3_column_int64(st, 3);
		copy_col(st, 4, s->oldest_id, sizeof(s->oldest_id));
	} else {
		db_fail(db, rc, why);
	}
	sqlite3_reset(st);
	return rc == SQLITE_ROW ? 0 : -1;
}

enum res
sq_get_stats(struct store *store, struct store_stats *s,
    struct store_domain **doms, int *ndoms, char *why)
{
	struct db *db = sq_db(store);

	memset(s, 0, sizeof(*s));
	*doms = NULL;
	*ndoms = 0;
	if (db_count_states(db, &s->counts, why) != RES_OK ||
	    load_pending(db, s, why) != 0 ||
	    load_domains(db, doms, ndoms, why) != 0) {
		store_domains_free(*doms, *ndoms);
		*doms = NULL;
		*ndoms = 0;
		return RES_TEMP;
	}
	return RES_OK;
}
