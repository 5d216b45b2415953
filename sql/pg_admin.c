/*
 * pg_admin.c - the queue CLI's SQL, the PostgreSQL side of store.h's
 * "queue CLI" operations (the SQLite side is sqlite_admin.c, whose
 * invariants these keep: a change is one transaction; leases are left
 * alone except by bounce; a recipient bounced here is reported by the
 * delivery side once nothing of its message is pending).
 *
 * Threads: only the CLI's single thread enters, on its own connection.
 */
#include "pg.h"
#include "store.h"
#include "vocab.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MSG_COLS                                                               \
	"m.id, m.received_at, m.sender, m.size, m.stored_size, "               \
	"m.body_type, m.smtputf8, m.dsn_ret, m.dsn_envid, m.client_ip, "       \
	"m.client_port, m.helo, m.protocol, m.tls_version, m.tls_cipher, "     \
	"m.auth_user"

struct store *
pg_open_admin(const char *conninfo, bool write, char *why)
{
	struct store *s = write ? pg_open_helper(conninfo, why)
	                        : pg_store_ops.open_readonly(conninfo, why);
	struct pg *db;

	if (s == NULL)
		return NULL;
	db = pg_db(s);
	db->cli = true;
	if (pg_check_schema(db, why) != RES_OK) {
		pg_close(s);
		return NULL;
	}
	return s;
}

enum res
pg_read_begin(struct store *s, char *why)
{
	return pg_run(
	    pg_db(s), "BEGIN ISOLATION LEVEL REPEATABLE READ", NULL, why);
}

void
pg_read_end(struct store *s)
{
	pg_rollback(s);
}

static void
msg_from_row(const PGresult *r, int i, struct store_msg *m)
{
	memset(m, 0, sizeof(*m));
	pg_copy(r, i, 0, m->id, sizeof(m->id));
	m->received_at = pg_iv(r, i, 1);
	m->sender = xstrdup(pg_tv(r, i, 2));
	m->size = pg_iv(r, i, 3);
	m->stored_size = pg_iv(r, i, 4);
	(void)body_type_parse(pg_tv(r, i, 5), &m->body_type);
	m->smtputf8 = pg_iv(r, i, 6) != 0;
	m->dsn_ret =
	    dsn_ret_parse(PQgetisnull(r, i, 7) ? NULL : pg_tv(r, i, 7));
	m->dsn_envid = pg_dup(r, i, 8);
	m->client_ip = pg_dup(r, i, 9);
	m->client_port = (int)pg_iv(r, i, 10);
	m->helo = pg_dup(r, i, 11);
	m->protocol = pg_dup(r, i, 12);
	m->tls_version = pg_dup(r, i, 13);
	m->tls_cipher = pg_dup(r, i, 14);
	m->auth_user = pg_dup(r, i, 15);
}

/* The recipients of m->id, in flight when leased beyond the database's
 * clock (`now` is the caller's and only shown). */
static int
load_rcpts(struct pg *db, struct store_msg *m, char *why)
{
	struct pg_args a = {0};
	PGresult *r;
	int i, n;

	pg_text(&a, m->id);
	r = pg_query(db,
	    "SELECT rcpt_no, address, domain, state, attempts, "
	    "next_attempt_at, coalesce(last_attempt_at, 0), last_reply, "
	    "notify, orcpt, notified, "
	    "(coalesce(lease_until, 0) > " PG_NOW ")::int "
	    "FROM recipients WHERE msg_id = $1 ORDER BY rcpt_no",
	    &a, false, false, why);
	if (r == NULL)
		return -1;
	n = PQntuples(r);
	m->rcpts = n > 0 ? xcalloc((size_t)n, sizeof(*m->rcpts)) : NULL;
	for (i = 0; i < n; i++) {
		struct store_rcpt *rc = &m->rcpts[i];

		rc->rcpt_no = (int)pg_iv(r, i, 0);
		rc->address = xstrdup(pg_tv(r, i, 1));
		rc->domain = pg_dup(r, i, 2);
		(void)rcpt_state_parse(pg_tv(r, i, 3), &rc->state);
		rc->attempts = (int)pg_iv(r, i, 4);
		rc->next_attempt_at = pg_iv(r, i, 5);
		rc->last_attempt_at = pg_iv(r, i, 6);
		rc->last_reply = pg_dup(r, i, 7);
		rc->notify =
		    PQgetisnull(r, i, 8) ? 0 : notify_parse(pg_tv(r, i, 8));
		rc->orcpt = pg_dup(r, i, 9);
		rc->notified = (unsigned)pg_iv(r, i, 10);
		rc->in_flight = pg_iv(r, i, 11) != 0;
	}
	m->nrcpts = n;
	PQclear(r);
	return 0;
}

int
pg_list(struct store *s, const struct store_filter *f, int64_t now,
    int (*fn)(void *, const struct store_msg *), void *arg, char *why)
{
	static const enum rcpt_state pending[] = {
	    RCPT_QUEUED, RCPT_DEFERRED, RCPT_HELD};
	struct pg *db = pg_db(s);
	struct pg_args a = {0};
	char domain[SMTP_DOMAIN_MAX + 1];
	PGresult *r;
	int i, n;

	(void)now;
	for (i = 0; i < 3; i++)
		pg_text(&a, rcpt_state_name(f->state ? *f->state : pending[i]));
	if (f->domain != NULL) {
		for (i = 0; i < SMTP_DOMAIN_MAX && f->domain[i] != '\0'; i++)
			domain[i] = ascii_lower(f->domain[i]);
		domain[i] = '\0';
		pg_text(&a, domain);
	} else {
		pg_text(&a, NULL);
	}
	if (f->received_before > 0)
		pg_int(&a, f->received_before);
	else
		pg_text(&a, NULL);
	r = pg_query(db,
	    "SELECT " MSG_COLS " FROM messages AS m WHERE m.id IN "
	    "(SELECT r.msg_id FROM recipients AS r "
	    "WHERE r.state IN ($1, $2, $3) "
	    "AND ($4::text IS NULL OR r.domain = $4)) "
	    "AND ($5::bigint IS NULL OR m.received_at < $5) "
	    "ORDER BY m.received_at, m.id",
	    &a, false, false, why);
	if (r == NULL)
		return -1;
	n = PQntuples(r);
	for (i = 0; i < n; i++) {
		struct store_msg m;
		int stop;

		msg_from_row(r, i, &m);
		if (load_rcpts(db, &m, why) != 0) {
			store_msg_clear(&m);
			PQclear(r);
			return -1;
		}
		stop = fn(arg, &m);
		store_msg_clear(&m);
		if (stop) {
			i++;
			break;
		}
	}
	PQclear(r);
	return i;
}

enum res
pg_load(struct store *s, const char *id, int64_t now, struct store_msg *m,
    char *why)
{
	struct pg *db = pg_db(s);
	struct pg_args a = {0};
	PGresult *r;

	(void)now;
	memset(m, 0, sizeof(*m));
	pg_text(&a, id);
	r = pg_query(db,
	    "SELECT " MSG_COLS " FROM messages AS m WHERE m.id = $1", &a, false,
	    false, why);
	if (r == NULL)
		return RES_TEMP;
	if (PQntuples(r) == 0) {
		PQclear(r);
		why_set(why, "no message %s in the queue", id);
		return RES_PERM;
	}
	msg_from_row(r, 0, m);
	PQclear(r);
	if (load_rcpts(db, m, why) != 0) {
		store_msg_clear(m);
		return RES_TEMP;
	}
	return RES_OK;
}

int
pg_exists(struct store *s, const char *id, char *why)
{
	struct pg_args a = {0};
	PGresult *r;
	int n;

	pg_text(&a, id);
	r = pg_query(pg_db(s), "SELECT 1 FROM messages WHERE id = $1", &a,
	    false, false, why);
	if (r == NULL)
		return -1;
	n = PQntuples(r) > 0;
	PQclear(r);
	return n;
}

/* NULL for an SQL NULL. */
static const char *
nv(const PGresult *r, int i, int col)
{
	return PQgetisnull(r, i, col) ? NULL : PQgetvalue(r, i, col);
}

int
pg_attempts(struct store *s, const char *id,
    int (*fn)(void *, const struct store_attempt_row *), void *arg, char *why)
{
	struct pg_args a = {0};
	PGresult *r;
	int i, n;

	pg_text(&a, id);
	r = pg_query(pg_db(s),
	    "SELECT a.at, a.rcpt_no, r.address, a.mx_host, a.ip, "
	    "coalesce(a.port, 0), a.tls, a.status, a.reply, "
	    "coalesce(a.duration_ms, -1), a.security, a.security_why "
	    "FROM attempts AS a LEFT JOIN recipients AS r "
	    "ON r.msg_id = a.msg_id AND r.rcpt_no = a.rcpt_no "
	    "WHERE a.msg_id = $1 ORDER BY a.id",
	    &a, false, false, why);
	if (r == NULL)
		return -1;
	n = PQntuples(r);
	for (i = 0; i < n; i++) {
		struct store_attempt_row at;

		at.at = pg_iv(r, i, 0);
		at.rcpt_no = (int)pg_iv(r, i, 1);
		at.address = nv(r, i, 2);
		at.mx_host = nv(r, i, 3);
		at.ip = nv(r, i, 4);
		at.port = (int)pg_iv(r, i, 5);
		at.tls = nv(r, i, 6);
		at.status = pg_tv(r, i, 7);
		at.reply = nv(r, i, 8);
		at.duration_ms = pg_iv(r, i, 9);
		at.security = nv(r, i, 10);
		at.security_why = nv(r, i, 11);
		if (fn(arg, &at) != 0) {
			i++;
			break;
		}
	}
	PQclear(r);
	return i;
}

int
pg_body(struct store *s, const char *id,
    int (*fn)(void *, const void *, size_t), void *arg, char *why)
{
	bool stopped; /* by fn: not an error here */

	return pg_body_chunks(pg_db(s), id, fn, arg, &stopped, why);
}

/* ---- changes ---- */

#define OP_MAX 2

static const char *const op_sql[][OP_MAX] = {
    [STORE_RETRY] = {"UPDATE recipients SET next_attempt_at = " PG_NOW " "
                     "WHERE msg_id = $1 AND state IN ('queued', 'deferred')"},
    [STORE_HOLD] = {"UPDATE recipients SET state = 'held' "
                    "WHERE msg_id = $1 AND state IN ('queued', 'deferred')"},
    [STORE_RELEASE] = {"UPDATE recipients SET state = CASE WHEN attempts > 0 "
                       "THEN 'deferred' ELSE 'queued' END, "
                       "next_attempt_at = " PG_NOW " "
                       "WHERE msg_id = $1 AND state = 'held'"},
    [STORE_DELETE] = {"WITH a AS (DELETE FROM attempts WHERE msg_id = $1), "
                      "b AS (DELETE FROM body_chunks WHERE msg_id = $1), "
                      "r AS (DELETE FROM recipients WHERE msg_id = $1) "
                      "DELETE FROM messages WHERE id = $1"},
    [STORE_BOUNCE] = {"INSERT INTO attempts (msg_id, rcpt_no, at, mx_host, "
                      "status, reply) SELECT msg_id, rcpt_no, $2, NULL, "
                      "'bounced', $3 FROM recipients "
                      "WHERE msg_id = $1 AND state IN " PG_PENDING,
        "UPDATE recipients SET state = 'bounced', last_reply = $3, "
        "last_attempt_at = $2, lease_until = NULL, "
        "notified = notified & ~1 "
        "WHERE msg_id = $1 AND state IN " PG_PENDING},
};

/* As sqlite_admin.c's look_up: -1 on error, else how many are missing. */
static int
look_up(struct pg *db, struct store_change *v, int n, char *why)
{
	int i, missing = 0;

	for (i = 0; i < n; i++) {
		struct pg_args a = {0};
		PGresult *r;

		pg_text(&a, v[i].id);
		r = pg_query(db,
		    "SELECT m.sender, (SELECT count(*) FROM recipients AS r "
		    "WHERE r.msg_id = m.id AND r.state IN " PG_PENDING " AND "
		    "(r.notify IS NULL OR r.notify = '' OR "
		    "position('FAILURE' IN upper(r.notify)) > 0)), "
		    "(SELECT count(*) FROM recipients AS r WHERE r.msg_id = "
		    "m.id) "
		    "FROM messages AS m WHERE m.id = $1 FOR UPDATE",
		    &a, false, false, why);
		if (r == NULL)
			return -1;
		v[i].found = PQntuples(r) > 0;
		v[i].changed = 0;
		v[i].notice = 0;
		v[i].rcpts = 0;
		v[i].sender[0] = '\0';
		if (v[i].found) {
			pg_copy(r, 0, 0, v[i].sender, sizeof(v[i].sender));
			v[i].rcpts = (int)pg_iv(r, 0, 2);
			if (v[i].sender[0] != '\0')
				v[i].notice = (int)pg_iv(r, 0, 1);
		} else {
			missing++;
		}
		PQclear(r);
	}
	return missing;
}

enum res
pg_change(struct store *s, enum store_op op, struct store_change *v, int n,
    int64_t now, char *why)
{
	struct pg *db = pg_db(s);
	enum res res = RES_TEMP;
	int i, k, missing;

	if (pg_begin(s, why) != RES_OK)
		return RES_TEMP;
	missing = look_up(db, v, n, why);
	if (missing != 0) {
		if (missing > 0) {
			why_set(why, "%d message%s not in the queue", missing,
			    missing == 1 ? "" : "s");
			res = RES_PERM;
		}
		goto out;
	}
	for (i = 0; i < n; i++) {
		for (k = 0; k < OP_MAX && op_sql[op][k] != NULL; k++) {
			struct pg_args a = {0};
			PGresult *r;

			pg_text(&a, v[i].id);
			if (op == STORE_BOUNCE)
				pg_int(&a, now);
			if (op == STORE_BOUNCE)
				pg_text(&a, STORE_BOUNCE_REPLY);
			r = pg_query(db, op_sql[op][k], &a, true, false, why);
			if (r == NULL)
				goto out;
			v[i].changed = (int)pg_changed(r);
			PQclear(r);
		}
		if (op == STORE_DELETE)
			v[i].changed = v[i].rcpts;
	}
	res = pg_commit(s, why);
out:
	if (res != RES_OK)
		pg_rollback(s);
	return res;
}

int64_t
pg_retry_all(struct store *s, const char *domain, int64_t now, char *why)
{
	struct pg_args a = {0};
	char low[SMTP_DOMAIN_MAX + 1];
	PGresult *r;
	int64_t n;
	int i;

	(void)now; /* the database's clock */
	if (domain != NULL) {
		for (i = 0; i < SMTP_DOMAIN_MAX && domain[i] != '\0'; i++)
			low[i] = ascii_lower(domain[i]);
		low[i] = '\0';
		pg_text(&a, low);
	} else {
		pg_text(&a, NULL);
	}
	r = pg_query(pg_db(s),
	    "UPDATE recipients SET next_attempt_at = " PG_NOW " "
	    "WHERE state IN ('queued', 'deferred') "
	    "AND ($1::text IS NULL OR domain = $1)",
	    &a, true, false, why);
	if (r == NULL)
		return -1;
	n = pg_changed(r);
	PQclear(r);
	return n;
}

int
pg_purge(struct store *s, int64_t before, char *why)
{
	int n;

	if (pg_begin(s, why) != RES_OK)
		return -1;
	n = pg_prune_finished(s, before, why);
	if (n >= 0 && pg_commit(s, why) != RES_OK)
		n = -1;
	if (n < 0)
		pg_rollback(s);
	return n;
}

/* ---- nodes ---- */

int
pg_nodes(struct store *s, int (*fn)(void *, const struct store_node *),
    void *arg, char *why)
{
	PGresult *r = pg_query(pg_db(s),
	    "SELECT n.name, coalesce(n.version, ''), n.started_at, "
	    "n.heartbeat_at, " PG_NOW " - n.heartbeat_at, "
	    "(SELECT count(*) FROM recipients AS r WHERE r.lease_owner = "
	    "n.name AND r.lease_until > " PG_NOW ") "
	    "FROM nodes AS n ORDER BY n.name",
	    NULL, false, false, why);
	int i, n;

	if (r == NULL)
		return -1;
	n = PQntuples(r);
	for (i = 0; i < n; i++) {
		struct store_node nd;

		nd.name = pg_tv(r, i, 0);
		nd.version = pg_tv(r, i, 1);
		nd.started_at = pg_iv(r, i, 2);
		nd.heartbeat_at = pg_iv(r, i, 3);
		nd.heartbeat_age = pg_iv(r, i, 4);
		nd.leases = pg_iv(r, i, 5);
		if (fn(arg, &nd) != 0) {
			i++;
			break;
		}
	}
	PQclear(r);
	return i;
}

/* ---- statistics ---- */

enum res
pg_get_stats(struct store *s, struct store_stats *st,
    struct store_domain **doms, int *ndoms, char *why)
{
	struct pg *db = pg_db(s);
	PGresult *r;
	int i, n;

	memset(st, 0, sizeof(*st));
	*doms = NULL;
	*ndoms = 0;
	if (pg_count_states(db, &st->counts, why) != RES_OK)
		return RES_TEMP;
	r = pg_query(db,
	    "SELECT (SELECT count(*) FROM messages), coalesce(p.n, 0), "
	    "coalesce(p.size, 0), coalesce(p.received_at, 0), p.id "
	    "FROM (SELECT 1) AS one LEFT JOIN "
	    "(SELECT count(*) OVER () AS n, sum(size) OVER () AS size, "
	    "received_at, id FROM messages WHERE id IN (SELECT msg_id FROM "
	    "recipients WHERE state IN " PG_PENDING ") "
	    "ORDER BY received_at, id LIMIT 1) AS p ON true",
	    NULL, false, false, why);
	if (r == NULL)
		return RES_TEMP;
	st->messages = pg_iv(r, 0, 0);
	st->pending_messages = pg_iv(r, 0, 1);
	st->pending_size = pg_iv(r, 0, 2);
	st->counts.oldest_pending = pg_iv(r, 0, 3);
	pg_copy(r, 0, 4, st->oldest_id, sizeof(st->oldest_id));
	PQclear(r);
	r = pg_query(db,
	    "SELECT domain, recipients, queued, deferred, held, delivered, "
	    "bounced, coalesce(oldest_pending_seconds, -1) "
	    "FROM queue_by_domain "
	    "ORDER BY queued + deferred + held DESC, recipients DESC, domain",
	    NULL, false, false, why);
	if (r == NULL)
		return RES_TEMP;
	n = PQntuples(r);
	if (n > 0)
		*doms = xcalloc((size_t)n, sizeof(**doms));
	for (i = 0; i < n; i++) {
		struct store_domain *d = &(*doms)[i];

		d->domain = xstrdup(pg_tv(r, i, 0));
		d->recipients = pg_iv(r, i, 1);
		d->queued = pg_iv(r, i, 2);
		d->deferred = pg_iv(r, i, 3);
		d->held = pg_iv(r, i, 4);
		d->delivered = pg_iv(r, i, 5);
		d->bounced = pg_iv(r, i, 6);
		d->oldest_pending_seconds = pg_iv(r, i, 7);
	}
	*ndoms = n;
	PQclear(r);
	return RES_OK;
}
