/*
 * pg.c - the PostgreSQL backend of the queue (the contracts are store.h's;
 * the queue CLI's operations are in pg_admin.c), for a queue that several
 * sluice nodes share.
 *
 * Threads: a `struct pg` is used by one thread at a time; PostgreSQL's
 * row locks arbitrate between connections and between nodes.
 *
 * Invariants:
 *  1. A message row exists only for mail that was acknowledged with 250:
 *     pg_put_envelope runs in the transaction whose COMMIT precedes the
 *     250, and a COMMIT that does not say so (an aborted transaction, a
 *     lost connection) is a failure.
 *  2. Claiming locks the due rows it reads (FOR UPDATE SKIP LOCKED), so
 *     two nodes never lease the same recipient in one round, and a lease
 *     runs on the database's clock: a dead node's recipients come due
 *     again when its leases end.
 *  3. The fence: an attempt made under a lease (lease_token not 0) is
 *     recorded only while that lease is the recipient's; a node presumed
 *     dead cannot overwrite the result of the node that took over.
 *  4. A node reclaims only the `incoming` rows it wrote and clears only
 *     its own leases.
 *  5. A transaction is sent in libpq's pipeline mode: BEGIN and the
 *     writes that need no answer (chunks, envelopes) go out without
 *     waiting, and their results are read at COMMIT, or before the first
 *     statement whose answer is needed.  A batch of messages costs one
 *     round trip, and the first failure in it fails its COMMIT.
 */
#include "pg.h"
#include "log.h"
#include "strbuf.h"
#include "utf8.h"
#include "version.h"
#include "vocab.h"

#include <errno.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

extern const char sql_pg_schema_text[];
extern const char sql_pg_views_text[];
extern const char sql_pg_upgrade2_text[];

/* upgrades[v] brings a version v - 1 database to version v. */
static const char *const upgrades[] = {
    [2] = sql_pg_upgrade2_text,
};

/* ---- parameters and results ---- */

void
pg_text(struct pg_args *a, const char *s)
{
	BUG_ON(a->n >= PG_ARGS_MAX);
	if (s != NULL && !utf8_valid((const unsigned char *)s, strlen(s))) {
		size_t i = 0, n = strlen(s);
		char *c = xmalloc(n + 1);

		while (i < n) {
			int k =
			    utf8_seq_len((const unsigned char *)s + i, n - i);

			if (k > 0) {
				memcpy(c + i, s + i, (size_t)k);
				i += (size_t)k;
			} else {
				c[i++] = '?';
			}
		}
		c[n] = '\0';
		a->owned[a->nowned++] = c;
		s = c;
	}
	a->v[a->n] = s;
	a->len[a->n] = 0;
	a->fmt[a->n] = 0;
	a->n++;
}

void
pg_int(struct pg_args *a, int64_t x)
{
	BUG_ON(a->n >= PG_ARGS_MAX);
	snprintf(a->num[a->n], sizeof(a->num[a->n]), "%lld", (long long)x);
	pg_text(a, a->num[a->n]);
}

void
pg_bin(struct pg_args *a, const void *p, size_t n)
{
	BUG_ON(a->n >= PG_ARGS_MAX);
	a->v[a->n] = p;
	a->len[a->n] = (int)n;
	a->fmt[a->n] = 1;
	a->n++;
}

const char *
pg_tv(const PGresult *r, int row, int col)
{
	return PQgetisnull(r, row, col) ? "" : PQgetvalue(r, row, col);
}

int64_t
pg_iv(const PGresult *r, int row, int col)
{
	return PQgetisnull(r, row, col)
	           ? 0
	           : strtoll(PQgetvalue(r, row, col), NULL, 10);
}

char *
pg_dup(const PGresult *r, int row, int col)
{
	return PQgetisnull(r, row, col) ? NULL
	                                : xstrdup(PQgetvalue(r, row, col));
}

void
pg_copy(const PGresult *r, int row, int col, char *out, size_t len)
{
	snprintf(out, len, "%s", pg_tv(r, row, col));
}

int64_t
pg_changed(PGresult *r)
{
	const char *t = PQcmdTuples(r);

	return t != NULL && *t != '\0' ? strtoll(t, NULL, 10) : -1;
}

/* ---- errors ---- */

/* The server's words on one line. */
static void
one_line(const char *in, char *out, size_t len)
{
	size_t i, o = 0;

	for (i = 0; in != NULL && in[i] != '\0' && o + 1 < len; i++)
		out[o++] = (in[i] == '\n' || in[i] == '\r' || in[i] == '\t')
		               ? ' '
		               : in[i];
	while (o > 0 && out[o - 1] == ' ')
		o--;
	out[o] = '\0';
}

static enum res
pg_fail(struct pg *db, const PGresult *r, bool write, char *why)
{
	const char *state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
	char msg[WHY_MAX];

	one_line(r != NULL && *PQresultErrorMessage(r) != '\0'
	             ? PQresultErrorMessage(r)
	             : PQerrorMessage(db->c),
	    msg, sizeof(msg));
	if (msg[0] == '\0')
		snprintf(msg, sizeof(msg), "the database connection failed");
	/* Class 53: disk full (53100), out of memory (53200). */
	if (state != NULL &&
	    (strcmp(state, "53100") == 0 || strcmp(state, "53200") == 0))
		db->last_error = STORE_E_FULL;
	else
		db->last_error = write ? STORE_E_WRITE : STORE_E_READ;
	if (db->cli)
		why_set(why, "queue database error: %s", msg);
	else if (PQstatus(db->c) != CONNECTION_OK)
		/* Where the database is, is none of a client's business:
		 * reconnect() logs it. */
		store_error_why(
		    db->last_error, "the queue database is unreachable", why);
	else
		store_error_why(db->last_error, msg, why);
	return RES_TEMP;
}

/* ---- running statements ---- */

static int pg_setup(struct pg *db, char *why);
static enum res pg_send(
    struct pg *db, const char *sql, struct pg_args *a, char *why);
static PGresult *query_once(struct pg *db, const char *sql,
    const struct pg_args *a, bool write, bool binary, char *why);

/*
 * End the pipeline: a sync, then every result of what was sent; the
 * first failure is the pipeline's (RES_TEMP with `why`).  *committed
 * (when not NULL) says whether a COMMIT went through.
 */
/* An attempt refused by the fence: said in the log, not an error. */
static void
fenced(const char *what)
{
	log_warn("queue",
	    "%s: the attempt is not recorded: the recipient is no longer "
	    "this node's (its lease passed to another node, or it was "
	    "deleted)",
	    what);
}

/* The result of statement `stmt` of the pipeline: checked if it is one
 * of the attempts. */
static void
check_result(struct pg *db, int stmt, const PGresult *r)
{
	int i;

	for (i = 0; i < db->nchecks; i++)
		if (db->checks[i].stmt == stmt &&
		    PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1 &&
		    pg_iv(r, 0, 0) == 0)
			fenced(db->checks[i].what);
}

static enum res
pipe_end(struct pg *db, bool *committed, PGresult **last, char *why)
{
	bool failed = false;
	int ends = 0;

	if (committed != NULL)
		*committed = false;
	if (last != NULL)
		*last = NULL;
	if (!db->piped)
		return RES_OK;
	if (PQpipelineSync(db->c) != 1) {
		pg_fail(db, NULL, true, why);
		failed = true;
		ends = db->pending + 1; /* nothing more will come */
	}
	while (ends <= db->pending) {
		PGresult *r = PQgetResult(db->c);
		ExecStatusType st;

		if (r == NULL) {
			/* The end of one statement's results; past the
			 * last one, only a lost connection gives these. */
			if (++ends > db->pending ||
			    PQstatus(db->c) != CONNECTION_OK) {
				if (!failed)
					pg_fail(db, NULL, true, why);
				failed = true;
				break;
			}
			continue;
		}
		st = PQresultStatus(r);
		if (st == PGRES_PIPELINE_SYNC) {
			PQclear(r);
			break;
		}
		if (st == PGRES_COMMAND_OK && committed != NULL &&
		    strcmp(PQcmdStatus(r), "COMMIT") == 0)
			*committed = true;
		if (db->nchecks > 0)
			check_result(db, ends, r);
		if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK &&
		    st != PGRES_PIPELINE_ABORTED && !failed) {
			pg_fail(db, r, true, why);
			failed = true;
		}
		if (last != NULL && *last == NULL && ends == db->pending - 1 &&
		    (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK))
			*last = r; /* the caller's */
		else
			PQclear(r);
	}
	if (failed && last != NULL && *last != NULL) {
		PQclear(*last);
		*last = NULL;
	}
	PQexitPipelineMode(db->c);
	db->piped = false;
	db->pending = 0;
	db->nchecks = 0;
	return failed ? RES_TEMP : RES_OK;
}

/*
 * An attempt's statement (one row: how many rows the fence let through):
 * into the pipeline with a note to check it there, or run and checked at
 * once; `what` NULL: an attempt under no lease, sent unchecked.
 */
static enum res
pg_send_attempt(struct pg *db, const char *sql, struct pg_args *a,
    const char *what, char *why)
{
	PGresult *r;

	if (what == NULL)
		return pg_send(db, sql, a, why);
	if (db->piped) {
		if (db->nchecks == db->cap_checks) {
			db->cap_checks =
			    db->cap_checks ? 2 * db->cap_checks : 16;
			db->checks = xrealloc(db->checks,
			    sizeof(*db->checks) * (size_t)db->cap_checks);
		}
		db->checks[db->nchecks].stmt = db->pending;
		snprintf(db->checks[db->nchecks].what,
		    sizeof(db->checks[0].what), "%s", what);
		db->nchecks++;
		return pg_send(db, sql, a, why);
	}
	r = pg_query(db, sql, a, true, false, why);
	if (r == NULL)
		return RES_TEMP;
	if (PQntuples(r) == 1 && pg_iv(r, 0, 0) == 0)
		fenced(what);
	PQclear(r);
	return RES_OK;
}

/* A pipeline on this connection (false when it cannot have one: the
 * connection is lost). */
static bool
pipe_open(struct pg *db)
{
	if (!db->piped && PQstatus(db->c) == CONNECTION_OK &&
	    PQenterPipelineMode(db->c) == 1) {
		db->piped = true;
		db->pending = 0;
	}
	return db->piped;
}

/* One statement into the open pipeline; RES_TEMP with `why` when it
 * cannot be sent. */
static enum res
pipe_send(struct pg *db, const char *sql, const struct pg_args *a, bool binary,
    bool write, char *why)
{
	if (PQsendQueryParams(db->c, sql, a ? a->n : 0, NULL, a ? a->v : NULL,
	        a ? a->len : NULL, a ? a->fmt : NULL, binary ? 1 : 0) != 1)
		return pg_fail(db, NULL, write, why);
	db->pending++;
	return RES_OK;
}

static void
args_free(struct pg_args *a)
{
	while (a != NULL && a->nowned > 0)
		free(a->owned[--a->nowned]);
}

/* A statement whose answer is not needed now: into the pipeline when
 * one is open (or, inside a transaction whose pipeline a read has
 * ended, a new one), else run at once. */
static enum res
pg_send(struct pg *db, const char *sql, struct pg_args *a, char *why)
{
	enum res r;

	if (!db->piped && PQtransactionStatus(db->c) == PQTRANS_INTRANS)
		(void)pipe_open(db);
	if (!db->piped)
		return pg_run(db, sql, a, why);
	r = pipe_send(db, sql, a, false, true, why);
	args_free(a);
	return r;
}

/* Re-establish a broken connection; 0 when it is good again. */
static int
reconnect(struct pg *db)
{
	char why[WHY_MAX];

	static _Atomic int64_t logged; /* ms: at most one line per 10 s */
	int64_t t = now_ms(), last = atomic_load(&logged);

	PQreset(db->c);
	if (PQstatus(db->c) != CONNECTION_OK) {
		if (t - last >= 10000 &&
		    atomic_compare_exchange_strong(&logged, &last, t)) {
			char msg[WHY_MAX];

			one_line(PQerrorMessage(db->c), msg, sizeof(msg));
			log_warn("queue", "cannot reach the queue database: %s",
			    msg);
		}
		return -1;
	}
	log_info("queue", "reconnected to the queue database");
	return db->used ? pg_setup(db, why) : 0;
}

PGresult *
pg_query(struct pg *db, const char *sql, struct pg_args *a, bool write,
    bool binary, char *why)
{
	PGresult *r = query_once(db, sql, a, write, binary, why);

	args_free(a);
	return r;
}

static PGresult *
query_once(struct pg *db, const char *sql, const struct pg_args *a, bool write,
    bool binary, char *why)
{
	PGresult *r;
	int tries;

	/* An answer is needed in a pipeline: the statement goes last in it,
	 * and the pipeline's results come back in one round trip. */
	if (db->piped) {
		if (pipe_send(db, sql, a, binary, write, why) != RES_OK) {
			(void)pipe_end(db, NULL, NULL, why);
			return NULL;
		}
		return pipe_end(db, NULL, &r, why) == RES_OK ? r : NULL;
	}
	for (tries = 0; tries < 2; tries++) {
		bool idle = PQtransactionStatus(db->c) == PQTRANS_IDLE ||
		            PQstatus(db->c) != CONNECTION_OK;
		ExecStatusType st;

		if (PQstatus(db->c) != CONNECTION_OK && reconnect(db) != 0)
			break;
		r = PQexecParams(db->c, sql, a ? a->n : 0, NULL,
		    a ? a->v : NULL, a ? a->len : NULL, a ? a->fmt : NULL,
		    binary ? 1 : 0);
		st = PQresultStatus(r);
		if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK)
			return r;
		/* A statement outside a transaction on a connection that
		 * broke meanwhile: once more on a new one. */
		if (idle && PQstatus(db->c) != CONNECTION_OK && tries == 0) {
			PQclear(r);
			continue;
		}
		pg_fail(db, r, write, why);
		PQclear(r);
		return NULL;
	}
	pg_fail(db, NULL, write, why);
	return NULL;
}

enum res
pg_run(struct pg *db, const char *sql, struct pg_args *a, char *why)
{
	PGresult *r = pg_query(db, sql, a, true, false, why);

	if (r == NULL)
		return RES_TEMP;
	PQclear(r);
	return RES_OK;
}

/* A script of several statements without parameters. */
static int
exec_script(struct pg *db, const char *sql, char *why)
{
	PGresult *r = PQexec(db->c, sql);
	ExecStatusType st = PQresultStatus(r);
	int rc = 0;

	if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
		char msg[WHY_MAX];

		one_line(PQresultErrorMessage(r), msg, sizeof(msg));
		why_set(why, "%s", msg);
		rc = -1;
	}
	PQclear(r);
	return rc;
}

/* ---- connections and the schema ---- */

/* libpq's notices (NOTICE: view ... does not exist): not ours to print. */
static void
no_notices(void *arg, const char *message)
{
	(void)arg;
	(void)message;
}

static struct pg *
connect_db(const char *conninfo, char *why)
{
	struct pg *db = xcalloc(1, sizeof(*db));
	char name[512], msg[WHY_MAX];

	db->base.ops = &pg_store_ops;
	db->conninfo = xstrdup(conninfo);
	db->c = PQconnectdb(conninfo);
	if (db->c == NULL || PQstatus(db->c) != CONNECTION_OK) {
		store_path_shown(conninfo, name, sizeof(name));
		one_line(db->c ? PQerrorMessage(db->c) : "out of memory", msg,
		    sizeof(msg));
		why_set(why, "cannot connect to %s: %s", name, msg);
		pg_close(pg_store(db));
		return NULL;
	}
	PQsetNoticeProcessor(db->c, no_notices, NULL);
	return db;
}

/*
 * A connection that writes mail: its commits must be durable, which is
 * what a 250 reply promises.  A server that does not make them so is
 * refused unless allow_unsafe_database says otherwise.
 */
static int
pg_setup(struct pg *db, char *why)
{
	PGresult *r;
	char err[WHY_MAX];
	const char *fsync_on, *sync_commit;
	bool unsafe;

	db->used = true;
	r = pg_query(db,
	    "SELECT current_setting('fsync'), "
	    "current_setting('synchronous_commit')",
	    NULL, false, false, err);
	if (r == NULL) {
		why_set(why, "cannot read the database's settings: %s", err);
		return -1;
	}
	fsync_on = pg_tv(r, 0, 0);
	sync_commit = pg_tv(r, 0, 1);
	unsafe = strcmp(fsync_on, "on") != 0 || strcmp(sync_commit, "off") == 0;
	if (unsafe && !store_allow_unsafe) {
		why_set(why,
		    "the database runs with fsync = %s, synchronous_commit = "
		    "%s: mail acknowledged with 250 could be lost in a crash "
		    "(allow_unsafe_database = yes accepts that)",
		    fsync_on, sync_commit);
		PQclear(r);
		return -1;
	}
	if (unsafe)
		log_warn("queue",
		    "the queue database runs with fsync = %s and "
		    "synchronous_commit = %s: mail acknowledged with 250 can "
		    "be "
		    "lost in a crash (allow_unsafe_database = yes)",
		    fsync_on, sync_commit);
	PQclear(r);
	return 0;
}

static int
schema_version(struct pg *db, char *why)
{
	PGresult *r =
	    pg_query(db, "SELECT to_regclass('sluice_schema') IS NOT NULL",
	        NULL, false, false, why);
	int v;

	if (r == NULL)
		return -1;
	v = strcmp(pg_tv(r, 0, 0), "t") == 0;
	PQclear(r);
	if (v == 0)
		return 0;
	r = pg_query(db, "SELECT max(version) FROM sluice_schema", NULL, false,
	    false, why);
	if (r == NULL)
		return -1;
	v = (int)pg_iv(r, 0, 0);
	PQclear(r);
	return v;
}

/*
 * Bring the schema to PG_SCHEMA_VERSION in one transaction, under an
 * advisory lock so that nodes starting together take turns; the views
 * are made again each time.
 */
static int
migrate(struct pg *db, char *why)
{
	char err[WHY_MAX];
	int v, step;

	if (exec_script(
	        db, "BEGIN; SELECT pg_advisory_xact_lock(5715236)", err) != 0)
		goto fail;
	if ((v = schema_version(db, err)) < 0)
		goto fail;
	if (v > PG_SCHEMA_VERSION) {
		why_set(err,
		    "queue schema version %d is newer than this sluice (%d)", v,
		    PG_SCHEMA_VERSION);
		goto fail;
	}
	if (v == 0 && exec_script(db, sql_pg_schema_text, err) != 0)
		goto fail;
	for (step = v + 1; v > 0 && step <= PG_SCHEMA_VERSION; step++) {
		char sql[96];

		if (exec_script(db, upgrades[step], err) != 0)
			goto fail;
		snprintf(sql, sizeof(sql),
		    "UPDATE sluice_schema SET version = %d", step);
		if (exec_script(db, sql, err) != 0)
			goto fail;
		log_info(
		    "queue", "upgraded the queue schema to version %d", step);
	}
	if (exec_script(db, sql_pg_views_text, err) != 0 ||
	    exec_script(db, "COMMIT", err) != 0)
		goto fail;
	return 0;
fail:
	why_set(why, "%s", err);
	(void)exec_script(db, "ROLLBACK", err);
	return -1;
}

enum res
pg_check_schema(struct pg *db, char *why)
{
	char err[WHY_MAX], name[512];
	int v = schema_version(db, err);

	if (v == PG_SCHEMA_VERSION)
		return RES_OK;
	store_path_shown(db->conninfo, name, sizeof(name));
	if (v < 0)
		why_set(why, "cannot read %s: %s", name, err);
	else if (v == 0)
		why_set(why, "no queue at %s (the database holds no queue yet)",
		    name);
	else if (v < PG_SCHEMA_VERSION)
		why_set(why,
		    "%s has queue schema version %d; start sluice serve once "
		    "to upgrade it to version %d",
		    name, v, PG_SCHEMA_VERSION);
	else
		why_set(why,
		    "%s has queue schema version %d, newer than this sluice "
		    "(%d)",
		    name, v, PG_SCHEMA_VERSION);
	return RES_TEMP;
}

/* This node in `nodes`, started now (on the database's clock). */
static enum res
register_node(struct pg *db, char *why)
{
	struct pg_args a = {0};

	pg_text(&a, store_node_name());
	pg_text(&a, SLUICE_VERSION);
	return pg_run(db,
	    "INSERT INTO nodes (name, started_at, heartbeat_at, version) "
	    "VALUES ($1, " PG_NOW ", " PG_NOW ", $2) ON CONFLICT (name) DO "
	    "UPDATE SET started_at = EXCLUDED.started_at, "
	    "heartbeat_at = EXCLUDED.heartbeat_at, version = EXCLUDED.version",
	    &a, why);
}

struct store *
pg_open_schema(const char *conninfo, char *why)
{
	struct pg *db = connect_db(conninfo, why);
	char err[WHY_MAX];

	if (db == NULL)
		return NULL;
	if (pg_setup(db, err) != 0) {
		why_set(why, "%s", err);
		goto fail;
	}
	if (migrate(db, err) != 0) {
		why_set(why, "cannot create or upgrade the schema: %s", err);
		goto fail;
	}
	return pg_store(db);
fail:
	pg_close(pg_store(db));
	return NULL;
}

static struct store *
pg_open(const char *conninfo, char *why)
{
	struct store *s = pg_open_schema(conninfo, why);
	struct pg *db;
	char err[WHY_MAX];

	if (s == NULL)
		return NULL;
	db = pg_db(s);
	if (register_node(db, err) != RES_OK) {
		why_set(
		    why, "cannot register node %s: %s", store_node_name(), err);
		goto fail;
	}
	return pg_store(db);
fail:
	pg_close(pg_store(db));
	return NULL;
}

struct store *
pg_open_helper(const char *conninfo, char *why)
{
	struct pg *db = connect_db(conninfo, why);

	return db != NULL ? pg_store(db) : NULL;
}

static struct store *
pg_open_readonly(const char *conninfo, char *why)
{
	struct pg *db = connect_db(conninfo, why);
	char err[WHY_MAX];

	if (db == NULL)
		return NULL;
	if (exec_script(db, "SET default_transaction_read_only = on", err) !=
	    0) {
		why_set(why, "cannot set up a read-only connection: %s", err);
		pg_close(pg_store(db));
		return NULL;
	}
	return pg_store(db);
}

void
pg_close(struct store *s)
{
	struct pg *db;

	if (s == NULL)
		return;
	db = pg_db(s);
	if (db->c != NULL)
		PQfinish(db->c);
	free(db->conninfo);
	free(db->checks);
	free(db);
}

enum res
pg_begin(struct store *s, char *why)
{
	struct pg *db = pg_db(s);

	/* A connection lost between transactions: a new one. */
	if (PQstatus(db->c) != CONNECTION_OK && reconnect(db) != 0)
		return pg_fail(db, NULL, true, why);
	db->notify = false;
	(void)pipe_open(db);
	return pg_send(db, "BEGIN", NULL, why);
}

enum res
pg_commit(struct store *s, char *why)
{
	struct pg *db = pg_db(s);
	bool committed = false;
	enum res res;

	/*
	 * Always through a pipeline, so that its results say whether COMMIT
	 * committed: an aborted transaction answers it with ROLLBACK.  With
	 * new mail, the other nodes' wake-up goes in the same round trip; a
	 * NOTIFY that fails aborts the transaction the same way.  No retry:
	 * a transaction never survives a lost connection.
	 */
	if (!pipe_open(db)) {
		res = pg_fail(db, NULL, true, why);
	} else {
		res = db->notify ? pipe_send(db, "NOTIFY " PG_CHANNEL, NULL,
		                       false, true, why)
		                 : RES_OK;
		if (res == RES_OK)
			res = pipe_send(db, "COMMIT", NULL, false, true, why);
		if (pipe_end(db, &committed, NULL, why) != RES_OK) {
			res = RES_TEMP;
		} else if (res == RES_OK && !committed) {
			db->last_error = STORE_E_WRITE;
			store_error_why(db->last_error,
			    "the transaction was rolled back", why);
			res = RES_TEMP;
		}
	}
	db->notify = false;
	if (res != RES_OK)
		pg_rollback(s);
	return res;
}

void
pg_rollback(struct store *s)
{
	struct pg *db = pg_db(s);
	char why[WHY_MAX];

	(void)pipe_end(db, NULL, NULL, why);
	if (PQstatus(db->c) == CONNECTION_OK &&
	    PQtransactionStatus(db->c) != PQTRANS_IDLE)
		PQclear(PQexec(db->c, "ROLLBACK"));
}

/* ---- intake ---- */

static enum res
pg_put_chunk(struct store *s, const char *id, int seq, const void *data,
    size_t len, char *why)
{
	struct pg_args a = {0};

	pg_text(&a, id);
	pg_int(&a, seq);
	pg_bin(&a, data, len);
	return pg_send(pg_db(s),
	    "INSERT INTO body_chunks (msg_id, seq, data) VALUES ($1, $2, $3)",
	    &a, why);
}

static enum res
pg_put_incoming(struct store *s, const char *id, int64_t started_at, char *why)
{
	struct pg_args a = {0};

	pg_text(&a, id);
	pg_int(&a, started_at);
	pg_text(&a, store_node_name());
	return pg_send(pg_db(s),
	    "INSERT INTO incoming (msg_id, started_at, node) "
	    "VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
	    &a, why);
}

/* One element of a text[] literal: quoted, or NULL. */
static void
array_add(struct strbuf *b, const char *s)
{
	if (b->len > 1)
		strbuf_add(b, ",", 1);
	if (s == NULL) {
		strbuf_str(b, "NULL");
		return;
	}
	strbuf_add(b, "\"", 1);
	for (; *s != '\0'; s++) {
		if (*s == '"' || *s == '\\')
			strbuf_add(b, "\\", 1);
		strbuf_add(b, s, 1);
	}
	strbuf_add(b, "\"", 1);
}

/*
 * The message, its recipients and the end of its `incoming` row in one
 * statement (one round trip, whatever the number of recipients).
 */
static enum res
pg_put_envelope(struct store *s, const struct envelope *env, char *why)
{
	struct strbuf addr = {0}, dom = {0}, notify = {0}, orcpt = {0};
	struct pg_args a = {0};
	enum res r;
	int i;

	strbuf_str(&addr, "{");
	strbuf_str(&dom, "{");
	strbuf_str(&notify, "{");
	strbuf_str(&orcpt, "{");
	for (i = 0; i < env->nrcpts; i++) {
		const struct envelope_rcpt *rc = &env->rcpts[i];
		char nt[NOTIFY_TEXT_MAX];

		notify_text(rc->notify, nt, sizeof(nt));
		array_add(&addr, rc->address);
		array_add(&dom, rc->domain);
		array_add(&notify, rc->notify != 0 ? nt : NULL);
		array_add(&orcpt, rc->orcpt);
	}
	strbuf_str(&addr, "}");
	strbuf_str(&dom, "}");
	strbuf_str(&notify, "}");
	strbuf_str(&orcpt, "}");
	pg_text(&a, env->id);
	pg_int(&a, env->received_at);
	pg_text(&a, env->sender);
	pg_int(&a, env->size);
	pg_int(&a, env->stored_size);
	pg_text(&a, body_type_name(env->body_type));
	pg_int(&a, env->smtputf8 ? 1 : 0);
	pg_text(&a, dsn_ret_name(env->dsn_ret));
	pg_text(&a, env->dsn_envid);
	pg_text(&a, env->client_ip);
	pg_int(&a, env->client_port);
	pg_text(&a, env->helo);
	pg_text(&a, env->protocol);
	pg_text(&a, env->tls_version);
	pg_text(&a, env->tls_cipher);
	pg_text(&a, env->auth_user);
	pg_int(&a, env->requiretls ? 1 : 0);
	pg_int(&a, env->tls_required_no ? 1 : 0);
	pg_text(&a, store_node_name());
	pg_text(&a, addr.p);
	pg_text(&a, dom.p);
	pg_text(&a, notify.p);
	pg_text(&a, orcpt.p);
	r = pg_send(pg_db(s),
	    "WITH m AS (INSERT INTO messages (id, received_at, sender, size, "
	    "stored_size, body_type, smtputf8, dsn_ret, dsn_envid, client_ip, "
	    "client_port, helo, protocol, tls_version, tls_cipher, auth_user, "
	    "requiretls, tls_required_no, node) VALUES ($1, $2, $3, $4, $5, "
	    "$6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, "
	    "$19)), "
	    "r AS (INSERT INTO recipients (msg_id, rcpt_no, address, domain, "
	    "next_attempt_at, notify, orcpt) SELECT $1, u.n - 1, u.a, "
	    "u.d, " PG_NOW ", "
	    "u.t, u.o FROM unnest($20::text[], $21::text[], $22::text[], "
	    "$23::text[]) WITH ORDINALITY AS u (a, d, t, o, n)) "
	    "DELETE FROM incoming WHERE msg_id = $1",
	    &a, why);
	strbuf_free(&addr);
	strbuf_free(&dom);
	strbuf_free(&notify);
	strbuf_free(&orcpt);
	if (r == RES_OK)
		pg_db(s)->notify = true;
	return r;
}

static enum res
pg_drop_incoming(struct store *s, const char *id, char *why)
{
	struct pg_args a = {0};

	pg_text(&a, id);
	return pg_send(pg_db(s),
	    "WITH c AS (DELETE FROM body_chunks WHERE msg_id = $1) "
	    "DELETE FROM incoming WHERE msg_id = $1",
	    &a, why);
}

static int
pg_reclaim_incoming(
    struct store *s, int (*fn)(void *, const char *), void *arg, char *why)
{
	struct pg *db = pg_db(s);
	struct pg_args a = {0};
	PGresult *r;
	int i, n, dropped = 0;

	if (pg_begin(s, why) != RES_OK)
		return -1;
	pg_text(&a, store_node_name());
	r = pg_query(db, "SELECT msg_id FROM incoming WHERE node = $1", &a,
	    false, false, why);
	if (r == NULL)
		goto fail;
	n = PQntuples(r);
	for (i = 0; i < n; i++) {
		if (!fn(arg, pg_tv(r, i, 0)))
			continue;
		if (pg_drop_incoming(s, pg_tv(r, i, 0), why) != RES_OK) {
			PQclear(r);
			goto fail;
		}
		dropped++;
	}
	PQclear(r);
	if (pg_commit(s, why) != RES_OK)
		return -1;
	return dropped;
fail:
	pg_rollback(s);
	return -1;
}

/* No WAL of ours: PostgreSQL checkpoints by itself. */
static enum res
pg_checkpoint(struct store *s, enum store_ckpt_mode mode, int busy_ms,
    struct store_ckpt *out, char *why)
{
	(void)s;
	(void)mode;
	(void)busy_ms;
	(void)why;
	memset(out, 0, sizeof(*out));
	out->complete = true;
	return RES_OK;
}

static enum res
pg_watch_wal(struct store *s, int64_t limit, char *why)
{
	(void)s;
	(void)limit;
	(void)why;
	return RES_OK;
}

static int64_t
pg_wal_bytes(const struct store *s)
{
	(void)s;
	return 0;
}

static enum store_error
pg_last_error(const struct store *s)
{
	BUG_ON(s->ops != &pg_store_ops);
	return ((const struct pg *)(const void *)s)->last_error;
}

/* ---- delivery ---- */

/*
 * Due recipients, locked until the claiming transaction ends: another
 * node's claim skips them, then finds them leased.
 */
static int
pg_list_due(
    struct store *s, int64_t now, struct store_due *out, int max, char *why)
{
	struct pg_args a = {0};
	PGresult *r;
	int i, n;

	/* Due by the database's clock, which every node shares. */
	(void)now;
	pg_int(&a, max);
	r = pg_query(pg_db(s),
	    "SELECT r.msg_id, r.rcpt_no, r.domain, "
	    "(SELECT m.sender FROM messages AS m WHERE m.id = r.msg_id) "
	    "FROM recipients AS r "
	    "WHERE r.state IN ('queued', 'deferred') "
	    "AND r.next_attempt_at <= " PG_NOW " "
	    "AND (r.lease_until IS NULL OR r.lease_until <= " PG_NOW ") "
	    "ORDER BY r.next_attempt_at LIMIT $1 "
	    "FOR UPDATE SKIP LOCKED",
	    &a, true, false, why);
	if (r == NULL)
		return -1;
	n = PQntuples(r);
	for (i = 0; i < n && i < max; i++) {
		pg_copy(r, i, 0, out[i].msg_id, sizeof(out[i].msg_id));
		out[i].rcpt_no = (int)pg_iv(r, i, 1);
		pg_copy(r, i, 2, out[i].domain, sizeof(out[i].domain));
		pg_copy(r, i, 3, out[i].sender, sizeof(out[i].sender));
	}
	PQclear(r);
	return i;
}

/* In this process's clock, from the database's: a lease's end. */
static int64_t
pg_next_due(struct store *s)
{
	char why[WHY_MAX];
	struct pg_args a = {0};
	PGresult *r;
	int64_t t = 0;

	pg_int(&a, (int64_t)time(NULL));
	r = pg_query(pg_db(s),
	    "SELECT coalesce(min(greatest(next_attempt_at, "
	    "coalesce(lease_until, 0))) - " PG_NOW " + $1, 0) "
	    "FROM recipients WHERE state IN ('queued', 'deferred')",
	    &a, false, false, why);
	if (r == NULL)
		return 0;
	t = pg_iv(r, 0, 0);
	PQclear(r);
	return t;
}

/*
 * A lease until `until` on this process's clock, kept on the database's
 * as a duration from now; `until` 0 gives it back.  A new token each
 * time (the fence).
 */
static enum res
pg_lease(
    struct store *s, const char *msg_id, int rcpt_no, int64_t until, char *why)
{
	struct pg_args a = {0};

	pg_text(&a, msg_id);
	pg_int(&a, rcpt_no);
	if (until == 0)
		return pg_send(pg_db(s),
		    "UPDATE recipients SET lease_until = NULL "
		    "WHERE msg_id = $1 AND rcpt_no = $2",
		    &a, why);
	pg_int(&a, until - (int64_t)time(NULL));
	pg_text(&a, store_node_name());
	return pg_send(pg_db(s),
	    "UPDATE recipients SET lease_until = " PG_NOW " + $3, "
	    "lease_owner = $4, lease_token = nextval('lease_tokens') "
	    "WHERE msg_id = $1 AND rcpt_no = $2",
	    &a, why);
}

/* This node's leases only: the others' may be running. */
static enum res
pg_clear_leases(struct store *s, char *why)
{
	struct pg_args a = {0};

	pg_text(&a, store_node_name());
	return pg_send(pg_db(s),
	    "UPDATE recipients SET lease_until = NULL "
	    "WHERE lease_owner = $1 AND lease_until IS NOT NULL",
	    &a, why);
}

static enum res
pg_listen(struct store *s, char *why)
{
	return pg_run(pg_db(s), "LISTEN " PG_CHANNEL, NULL, why);
}

/* Take every notification that came; how many. */
static int
drain(PGconn *c)
{
	PGnotify *n;
	int k = 0;

	while ((n = PQnotifies(c)) != NULL) {
		PQfreemem(n);
		k++;
	}
	return k;
}

static int
pg_wait_notify(struct store *s, int ms, char *why)
{
	struct pg *db = pg_db(s);
	struct pollfd p;
	int k;

	if (PQstatus(db->c) != CONNECTION_OK || PQconsumeInput(db->c) == 0)
		goto lost;
	if ((k = drain(db->c)) > 0)
		return 1;
	p.fd = PQsocket(db->c);
	p.events = POLLIN;
	p.revents = 0;
	if (p.fd < 0)
		goto lost;
	k = poll(&p, 1, ms);
	if (k < 0 && errno != EINTR)
		goto lost;
	if (k <= 0)
		return 0;
	if (PQconsumeInput(db->c) == 0)
		goto lost;
	return drain(db->c) > 0;
lost:
	pg_fail(db, NULL, false, why);
	return -1;
}

static enum res
pg_heartbeat(struct store *s, int lease, int *live, char *why)
{
	struct pg *db = pg_db(s);
	struct pg_args a = {0};
	PGresult *r;

	pg_text(&a, store_node_name());
	if (pg_send(db,
	        "UPDATE nodes SET heartbeat_at = " PG_NOW " WHERE name = $1",
	        &a, why) != RES_OK)
		return RES_TEMP;
	memset(&a, 0, sizeof(a));
	pg_text(&a, store_node_name());
	pg_int(&a, lease);
	if (pg_send(db,
	        "UPDATE recipients SET lease_until = " PG_NOW " + $2 "
	        "WHERE lease_owner = $1 AND lease_until IS NOT NULL",
	        &a, why) != RES_OK)
		return RES_TEMP;
	memset(&a, 0, sizeof(a));
	pg_int(&a, lease);
	r = pg_query(db,
	    "SELECT count(*) FROM nodes WHERE heartbeat_at >= " PG_NOW " - $1",
	    &a, false, false, why);
	if (r == NULL)
		return RES_TEMP;
	*live = (int)pg_iv(r, 0, 0);
	if (*live < 1)
		*live = 1;
	PQclear(r);
	return RES_OK;
}

static enum res
pg_load_message(
    struct store *s, const char *msg_id, struct store_msg_info *m, char *why)
{
	struct pg_args a = {0};
	PGresult *r;

	pg_text(&a, msg_id);
	r = pg_query(pg_db(s),
	    "SELECT sender, body_type, smtputf8, coalesce(dsn_ret, ''), "
	    "coalesce(dsn_envid, ''), received_at, stored_size, requiretls, "
	    "tls_required_no FROM messages WHERE id = $1",
	    &a, false, false, why);
	if (r == NULL)
		return RES_TEMP;
	if (PQntuples(r) == 0) {
		PQclear(r);
		why_set(why, "message %s is no longer in the queue", msg_id);
		return RES_PERM;
	}
	pg_copy(r, 0, 0, m->sender, sizeof(m->sender));
	m->body_type = BODY_7BIT;
	(void)body_type_parse(pg_tv(r, 0, 1), &m->body_type);
	m->smtputf8 = (int)pg_iv(r, 0, 2);
	m->dsn_ret = dsn_ret_parse(pg_tv(r, 0, 3));
	pg_copy(r, 0, 4, m->envid, sizeof(m->envid));
	m->received_at = pg_iv(r, 0, 5);
	m->stored_size = pg_iv(r, 0, 6);
	m->requiretls = (int)pg_iv(r, 0, 7);
	m->tls_required_no = (int)pg_iv(r, 0, 8);
	PQclear(r);
	return RES_OK;
}

static enum res
pg_load_rcpt(struct store *s, const char *msg_id, int rcpt_no,
    struct store_rcpt_info *ri, char *why)
{
	struct pg_args a = {0};
	PGresult *r;

	pg_text(&a, msg_id);
	pg_int(&a, rcpt_no);
	pg_text(&a, store_node_name());
	r = pg_query(pg_db(s),
	    "SELECT address, domain, state, coalesce(notify, ''), "
	    "coalesce(orcpt, ''), attempts, notified, "
	    "CASE WHEN lease_owner = $3 AND lease_until IS NOT NULL "
	    "THEN lease_token ELSE 0 END "
	    "FROM recipients WHERE msg_id = $1 AND rcpt_no = $2",
	    &a, false, false, why);
	if (r == NULL)
		return RES_TEMP;
	if (PQntuples(r) == 0) {
		PQclear(r);
		why_set(why, "recipient %s/%d is no longer in the queue",
		    msg_id, rcpt_no);
		return RES_PERM;
	}
	ri->rcpt_no = rcpt_no;
	pg_copy(r, 0, 0, ri->address, sizeof(ri->address));
	pg_copy(r, 0, 1, ri->domain, sizeof(ri->domain));
	if (!rcpt_state_parse(pg_tv(r, 0, 2), &ri->state)) {
		PQclear(r);
		why_set(why, "recipient %s/%d has an unknown state", msg_id,
		    rcpt_no);
		return RES_TEMP;
	}
	ri->notify = notify_parse(pg_tv(r, 0, 3));
	pg_copy(r, 0, 4, ri->orcpt, sizeof(ri->orcpt));
	ri->attempts = (int)pg_iv(r, 0, 5);
	ri->notified = (unsigned)pg_iv(r, 0, 6);
	ri->lease_token = pg_iv(r, 0, 7);
	PQclear(r);
	return RES_OK;
}

int
pg_body_chunks(struct pg *db, const char *msg_id,
    int (*fn)(void *, const void *, size_t), void *arg, bool *stopped,
    char *why)
{
	struct pg_args a = {0};
	PGresult *r;
	int i, n;

	*stopped = false;
	pg_text(&a, msg_id);
	r = pg_query(db,
	    "SELECT data FROM body_chunks WHERE msg_id = $1 ORDER BY seq", &a,
	    false, true, why);
	if (r == NULL)
		return -1;
	n = PQntuples(r);
	for (i = 0; i < n; i++) {
		int len = PQgetlength(r, i, 0);

		if (len > 0 && fn(arg, PQgetvalue(r, i, 0), (size_t)len) != 0) {
			*stopped = true;
			i++;
			break;
		}
	}
	PQclear(r);
	return i;
}

static enum res
pg_read_body(struct store *s, const char *msg_id,
    int (*fn)(void *, const void *, size_t), void *arg, char *why)
{
	bool stopped;

	if (pg_body_chunks(pg_db(s), msg_id, fn, arg, &stopped, why) < 0)
		return RES_TEMP;
	if (stopped) {
		why_set(why, "4.4.2 connection lost while sending");
		return RES_TEMP;
	}
	return RES_OK;
}

/*
 * The attempt, then the recipient's new state, as the SQLite backend
 * (what the queue CLI changed meanwhile wins), both behind the fence
 * when the attempt was made under a lease.
 */
static enum res
pg_record_attempt(struct store *s, const struct store_attempt *at, char *why)
{
	struct pg *db = pg_db(s);
	struct pg_args a = {0};
	char what[64];

	pg_text(&a, at->msg_id);
	pg_int(&a, at->rcpt_no);
	pg_int(&a, at->lease_token);
	pg_text(&a, store_node_name());
	pg_int(&a, at->at);
	pg_text(&a, at->mx_host);
	pg_text(&a, at->ip);
	if (at->port > 0)
		pg_int(&a, at->port);
	else
		pg_text(&a, NULL);
	pg_text(&a, at->tls);
	pg_text(&a, attempt_status_name(at->state));
	pg_text(&a, at->reply);
	pg_int(&a, at->duration_ms);
	pg_text(&a, at->security);
	pg_text(&a, at->security_why);
	pg_text(&a, rcpt_state_name(at->state));
	pg_int(&a, at->next_at);
	snprintf(
	    what, sizeof(what), "id=%s rcpt_no=%d", at->msg_id, at->rcpt_no);
	/* One statement: the fence, the attempt, the recipient's new state
	 * (what the queue CLI changed meanwhile wins, as with SQLite).  Only
	 * an attempt under a lease is checked (`what`). */
	return pg_send_attempt(db,
	    "WITH f AS (SELECT 1 FROM recipients WHERE msg_id = $1 "
	    "AND rcpt_no = $2 AND ($3::bigint = 0 OR (lease_owner = $4 "
	    "AND lease_token = $3::bigint))), "
	    "a AS (INSERT INTO attempts (msg_id, rcpt_no, at, mx_host, ip, "
	    "port, tls, status, reply, duration_ms, security, security_why, "
	    "node) SELECT $1, $2, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, "
	    "$4 FROM f), "
	    "u AS (UPDATE recipients SET state = $15, "
	    "attempts = attempts + 1, last_attempt_at = $5, last_reply = $11, "
	    "lease_until = NULL, next_attempt_at = CASE WHEN $15 = "
	    "'deferred' THEN " PG_NOW " + ($16::bigint - $5::bigint) "
	    "ELSE next_attempt_at END "
	    "WHERE msg_id = $1 AND rcpt_no = $2 AND EXISTS (SELECT 1 FROM f) "
	    "AND ($3::bigint = 0 OR (lease_owner = $4 "
	    "AND lease_token = $3::bigint)) "
	    "AND (state IN ('queued', 'deferred') OR ($15 = 'delivered' AND "
	    "(state = 'held' OR (state = 'bounced' AND (notified & 1) = 0))) "
	    "OR ($15 = 'bounced' AND state = 'held'))) "
	    "SELECT count(*) FROM f",
	    &a, at->lease_token != 0 ? what : NULL, why);
}

static enum res
pg_release_finished(struct store *s, const char *msg_id, char *why)
{
	struct pg_args a = {0};

	pg_text(&a, msg_id);
	return pg_send(pg_db(s),
	    "DELETE FROM body_chunks WHERE msg_id = $1 AND NOT EXISTS "
	    "(SELECT 1 FROM recipients WHERE msg_id = $1 "
	    "AND state NOT IN ('delivered', 'bounced'))",
	    &a, why);
}

static int
pg_unreported_bounces(
    struct store *s, const char *msg_id, struct store_bounced **out, char *why)
{
	struct pg_args a = {0};
	PGresult *r;
	int i, n;

	*out = NULL;
	pg_text(&a, msg_id);
	r = pg_query(pg_db(s),
	    "SELECT r.rcpt_no, r.address, coalesce(r.orcpt, ''), "
	    "coalesce(r.notify, ''), coalesce(r.last_reply, ''), "
	    "coalesce((SELECT a.mx_host FROM attempts AS a "
	    "WHERE a.msg_id = r.msg_id AND a.rcpt_no = r.rcpt_no "
	    "ORDER BY a.id DESC LIMIT 1), ''), "
	    "coalesce(r.last_attempt_at, 0) "
	    "FROM recipients AS r WHERE r.msg_id = $1 "
	    "AND r.state = 'bounced' AND (r.notified & 1) = 0 "
	    "AND NOT EXISTS (SELECT 1 FROM recipients AS p WHERE "
	    "p.msg_id = $1 AND p.state IN ('queued', 'deferred')) "
	    "ORDER BY r.rcpt_no",
	    &a, false, false, why);
	if (r == NULL)
		return -1;
	n = PQntuples(r);
	if (n > 0)
		*out = xcalloc((size_t)n, sizeof(**out));
	for (i = 0; i < n; i++) {
		struct store_bounced *b = &(*out)[i];

		b->rcpt_no = (int)pg_iv(r, i, 0);
		pg_copy(r, i, 1, b->address, sizeof(b->address));
		pg_copy(r, i, 2, b->orcpt, sizeof(b->orcpt));
		b->notify = notify_parse(pg_tv(r, i, 3));
		pg_copy(r, i, 4, b->last_reply, sizeof(b->last_reply));
		pg_copy(r, i, 5, b->mx_host, sizeof(b->mx_host));
		b->last_attempt_at = pg_iv(r, i, 6);
	}
	PQclear(r);
	return n;
}

static int
pg_list_unreported(
    struct store *s, char (*ids)[QUEUE_ID_LEN + 1], int max, char *why)
{
	struct pg_args a = {0};
	PGresult *r;
	int i, n;

	pg_int(&a, max);
	r = pg_query(pg_db(s),
	    "SELECT DISTINCT r.msg_id FROM recipients AS r "
	    "WHERE r.state = 'bounced' AND (r.notified & 1) = 0 "
	    "AND NOT EXISTS (SELECT 1 FROM recipients AS p "
	    "WHERE p.msg_id = r.msg_id AND p.state IN ('queued', 'deferred')) "
	    "LIMIT $1",
	    &a, false, false, why);
	if (r == NULL)
		return -1;
	n = PQntuples(r);
	for (i = 0; i < n && i < max; i++)
		pg_copy(r, i, 0, ids[i], QUEUE_ID_LEN + 1);
	PQclear(r);
	return i;
}

static enum res
pg_mark_reported(struct store *s, const char *msg_id, char *why)
{
	struct pg_args a = {0};

	pg_text(&a, msg_id);
	return pg_send(pg_db(s),
	    "UPDATE recipients SET notified = notified | 1 WHERE msg_id = $1 "
	    "AND state = 'bounced' AND (notified & 1) = 0",
	    &a, why);
}

static enum res
pg_mark_delay_reported(
    struct store *s, const char *msg_id, int rcpt_no, char *why)
{
	struct pg_args a = {0};

	pg_text(&a, msg_id);
	pg_int(&a, rcpt_no);
	return pg_send(pg_db(s),
	    "UPDATE recipients SET notified = notified | 2 "
	    "WHERE msg_id = $1 AND rcpt_no = $2",
	    &a, why);
}

enum res
pg_count_states(struct pg *db, struct store_counts *c, char *why)
{
	PGresult *r = pg_query(db,
	    "SELECT state, count(*) FROM recipients GROUP BY state", NULL,
	    false, false, why);
	int i;

	if (r == NULL)
		return RES_TEMP;
	for (i = 0; i < PQntuples(r); i++) {
		enum rcpt_state st;
		int64_t n = pg_iv(r, i, 1);

		if (!rcpt_state_parse(pg_tv(r, i, 0), &st))
			continue;
		switch (st) {
		case RCPT_QUEUED:
			c->queued = n;
			break;
		case RCPT_DEFERRED:
			c->deferred = n;
			break;
		case RCPT_HELD:
			c->held = n;
			break;
		case RCPT_DELIVERED:
			c->delivered = n;
			break;
		case RCPT_BOUNCED:
			c->bounced = n;
			break;
		}
	}
	PQclear(r);
	return RES_OK;
}

static enum res
pg_queue_counts(struct store *s, struct store_counts *c, char *why)
{
	struct pg *db = pg_db(s);
	PGresult *r;

	memset(c, 0, sizeof(*c));
	if (pg_count_states(db, c, why) != RES_OK)
		return RES_TEMP;
	r = pg_query(db,
	    "SELECT coalesce(min(received_at), 0) FROM messages WHERE id IN "
	    "(SELECT msg_id FROM recipients WHERE state IN " PG_PENDING ")",
	    NULL, false, false, why);
	if (r == NULL)
		return RES_TEMP;
	c->oldest_pending = pg_iv(r, 0, 0);
	PQclear(r);
	return RES_OK;
}

/* The database takes a write now (sluice health). */
static enum res
pg_probe_write(struct store *s, char *why)
{
	struct pg *db = pg_db(s);
	struct pg_args a = {0};
	enum res r;

	if (pg_begin(s, why) != RES_OK)
		return RES_TEMP;
	pg_text(&a, store_node_name());
	r = pg_run(db,
	    "UPDATE nodes SET heartbeat_at = heartbeat_at WHERE name = $1", &a,
	    why);
	pg_rollback(s);
	return r;
}

int
pg_prune_finished(struct store *s, int64_t before, char *why)
{
	struct pg_args a = {0};
	PGresult *r;
	int64_t n;

	pg_int(&a, before);
	pg_int(&a, STORE_PRUNE_MAX);
	r = pg_query(pg_db(s),
	    "WITH d AS (SELECT m.id FROM messages AS m "
	    "WHERE NOT EXISTS (SELECT 1 FROM recipients AS r "
	    "WHERE r.msg_id = m.id AND (r.state NOT IN ('delivered', "
	    "'bounced') OR coalesce(r.last_attempt_at, m.received_at) >= $1)) "
	    "LIMIT $2), "
	    "a AS (DELETE FROM attempts WHERE msg_id IN (SELECT id FROM d)), "
	    "b AS (DELETE FROM body_chunks WHERE msg_id IN (SELECT id FROM "
	    "d)), "
	    "r AS (DELETE FROM recipients WHERE msg_id IN (SELECT id FROM d)) "
	    "DELETE FROM messages WHERE id IN (SELECT id FROM d)",
	    &a, true, false, why);
	if (r == NULL)
		return -1;
	n = pg_changed(r);
	PQclear(r);
	return (int)n;
}

static enum res
pg_helper_writer(struct store *s, char *why)
{
	struct pg *db = pg_db(s);
	char err[WHY_MAX];

	if (pg_setup(db, err) != 0) {
		why_set(why, "cannot set up the queue: %s", err);
		return RES_TEMP;
	}
	return pg_check_schema(db, why);
}

static void
pg_set_busy_timeout(struct store *s, int ms)
{
	char sql[64], why[WHY_MAX];

	snprintf(sql, sizeof(sql), "SET lock_timeout = %d", ms);
	(void)pg_run(pg_db(s), sql, NULL, why);
}

static int
pg_resume_deferred(struct store *s, int64_t since, int64_t now,
    bool (*match)(void *arg, const char *domain), void *arg, char *why)
{
	struct pg *db = pg_db(s);
	struct pg_args a = {0};
	PGresult *r;
	int i, total = 0;

	pg_int(&a, since);
	pg_int(&a, now);
	r = pg_query(db,
	    "SELECT DISTINCT domain FROM recipients WHERE state = 'deferred' "
	    "AND next_attempt_at > $2 AND last_attempt_at >= $1",
	    &a, false, false, why);
	if (r == NULL)
		return -1;
	for (i = 0; i < PQntuples(r) && total >= 0; i++) {
		struct pg_args u = {0};
		PGresult *ur;

		if (!match(arg, pg_tv(r, i, 0)))
			continue;
		pg_int(&u, since);
		pg_int(&u, now);
		pg_text(&u, pg_tv(r, i, 0));
		ur = pg_query(db,
		    "UPDATE recipients SET next_attempt_at = $2 "
		    "WHERE domain = $3 AND state = 'deferred' "
		    "AND next_attempt_at > $2 AND last_attempt_at >= $1",
		    &u, true, false, why);
		if (ur == NULL) {
			total = -1;
			break;
		}
		total += (int)pg_changed(ur);
		PQclear(ur);
	}
	PQclear(r);
	return total;
}

static int
pg_first_pending(struct store *s, int64_t now, const char *domain,
    struct store_due *out, char *why)
{
	struct pg_args a = {0};
	PGresult *r;
	int n;

	(void)now;
	pg_text(&a, domain);
	r = pg_query(pg_db(s),
	    "SELECT msg_id, rcpt_no, domain FROM recipients "
	    "WHERE domain = $1 AND state IN ('queued', 'deferred') "
	    "AND (lease_until IS NULL OR lease_until <= " PG_NOW ") "
	    "ORDER BY next_attempt_at LIMIT 1",
	    &a, false, false, why);
	if (r == NULL)
		return -1;
	n = PQntuples(r) > 0;
	if (n) {
		pg_copy(r, 0, 0, out->msg_id, sizeof(out->msg_id));
		out->rcpt_no = (int)pg_iv(r, 0, 1);
		pg_copy(r, 0, 2, out->domain, sizeof(out->domain));
	}
	PQclear(r);
	return n;
}

/* ---- MTA-STS and TLS-RPT ---- */

static int
pg_sts_get(
    struct store *s, const char *domain, struct store_sts *out, char *why)
{
	struct pg_args a = {0};
	PGresult *r;
	int found;

	memset(out, 0, sizeof(*out));
	pg_text(&a, domain);
	r = pg_query(pg_db(s),
	    "SELECT id, policy_text, fetched_at, expires_at FROM sts_policies "
	    "WHERE domain = $1",
	    &a, false, false, why);
	if (r == NULL)
		return -1;
	found = PQntuples(r) > 0;
	if (found) {
		pg_copy(r, 0, 0, out->id, sizeof(out->id));
		out->text = xstrdup(pg_tv(r, 0, 1));
		out->fetched_at = pg_iv(r, 0, 2);
		out->expires_at = pg_iv(r, 0, 3);
	}
	PQclear(r);
	return found;
}

static enum res
pg_sts_put(struct store *s, const struct store_sts_row *row, char *why)
{
	struct pg_args a = {0};

	pg_text(&a, row->domain);
	if (row->text == NULL) {
		pg_text(&a, row->error);
		return pg_run(pg_db(s),
		    "UPDATE sts_policies SET last_error = $2 WHERE domain = $1",
		    &a, why);
	}
	pg_text(&a, row->id);
	pg_text(&a, row->mode);
	pg_text(&a, row->mx);
	pg_int(&a, row->max_age);
	pg_int(&a, row->fetched_at);
	pg_text(&a, row->text);
	return pg_run(pg_db(s),
	    "INSERT INTO sts_policies (domain, id, mode, mx, max_age, "
	    "fetched_at, expires_at, policy_text, last_error) "
	    "VALUES ($1, $2, $3, $4, $5, $6, $6 + $5, $7, NULL) "
	    "ON CONFLICT (domain) DO UPDATE SET id = EXCLUDED.id, "
	    "mode = EXCLUDED.mode, mx = EXCLUDED.mx, "
	    "max_age = EXCLUDED.max_age, fetched_at = EXCLUDED.fetched_at, "
	    "expires_at = EXCLUDED.expires_at, "
	    "policy_text = EXCLUDED.policy_text, last_error = NULL",
	    &a, why);
}

static int
pg_sts_due(
    struct store *s, int64_t now, char (*domains)[256], int max, char *why)
{
	struct pg_args a = {0};
	PGresult *r;
	int i;

	pg_int(&a, now);
	pg_int(&a, max);
	r = pg_query(pg_db(s),
	    "SELECT domain FROM sts_policies WHERE mode != 'none' AND "
	    "expires_at - least(max_age / 4, 21600) <= $1 "
	    "ORDER BY expires_at LIMIT $2",
	    &a, false, false, why);
	if (r == NULL)
		return -1;
	for (i = 0; i < PQntuples(r) && i < max; i++)
		pg_copy(r, i, 0, domains[i], 256);
	PQclear(r);
	return i;
}

static enum res
pg_tlsrpt_add(struct store *s, const struct store_tlsrpt *t, char *why)
{
	struct pg_args a = {0};

	pg_int(&a, t->day);
	pg_text(&a, t->domain);
	pg_text(&a, t->policy_type);
	pg_text(&a, t->policy_string);
	pg_text(&a, t->mx_host);
	pg_text(&a, t->result_type);
	pg_text(&a, t->sending_ip);
	pg_text(&a, t->receiving_ip);
	return pg_send(pg_db(s),
	    "INSERT INTO tlsrpt_results AS t (day, policy_domain, policy_type, "
	    "policy_string, mx_host, result_type, sending_ip, receiving_ip, "
	    "count) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 1) "
	    "ON CONFLICT (day, policy_domain, policy_type, policy_string, "
	    "mx_host, result_type, sending_ip, receiving_ip) "
	    "DO UPDATE SET count = t.count + 1",
	    &a, why);
}

static int
pg_tlsrpt_sent(struct store *s, int64_t day, int64_t sent_at, char *why)
{
	struct pg_args a = {0};
	PGresult *r;
	int n;

	pg_int(&a, day);
	if (sent_at > 0) {
		pg_int(&a, sent_at);
		return pg_run(pg_db(s),
		           "INSERT INTO tlsrpt_sent (day, sent_at) VALUES ($1, "
		           "$2) ON CONFLICT (day) DO UPDATE SET sent_at = $2",
		           &a, why) == RES_OK
		           ? 1
		           : -1;
	}
	r = pg_query(pg_db(s), "SELECT 1 FROM tlsrpt_sent WHERE day = $1", &a,
	    false, false, why);
	if (r == NULL)
		return -1;
	n = PQntuples(r) > 0;
	PQclear(r);
	return n;
}

static int
pg_tlsrpt_day(struct store *s, int64_t day,
    int (*fn)(void *, const struct store_tlsrpt *, int64_t), void *arg,
    char *why)
{
	struct pg_args a = {0};
	PGresult *r;
	int i, n;

	pg_int(&a, day);
	r = pg_query(pg_db(s),
	    "SELECT policy_domain, policy_type, policy_string, mx_host, "
	    "result_type, sending_ip, receiving_ip, count FROM tlsrpt_results "
	    "WHERE day = $1 ORDER BY policy_domain, policy_type, "
	    "policy_string, result_type, mx_host, receiving_ip",
	    &a, false, false, why);
	if (r == NULL)
		return -1;
	n = PQntuples(r);
	for (i = 0; i < n; i++) {
		struct store_tlsrpt t;

		t.day = day;
		t.domain = pg_tv(r, i, 0);
		t.policy_type = pg_tv(r, i, 1);
		t.policy_string = pg_tv(r, i, 2);
		t.mx_host = pg_tv(r, i, 3);
		t.result_type = pg_tv(r, i, 4);
		t.sending_ip = pg_tv(r, i, 5);
		t.receiving_ip = pg_tv(r, i, 6);
		if (fn(arg, &t, pg_iv(r, i, 7)) != 0) {
			i++;
			break;
		}
	}
	PQclear(r);
	return i;
}

const struct store_ops pg_store_ops = {
    .name = "postgresql",
    .open = pg_open,
    .open_helper = pg_open_helper,
    .open_readonly = pg_open_readonly,
    .open_admin = pg_open_admin,
    .put_envelope = pg_put_envelope,
    .close = pg_close,
    .begin = pg_begin,
    .commit = pg_commit,
    .rollback = pg_rollback,
    .put_chunk = pg_put_chunk,
    .put_incoming = pg_put_incoming,
    .drop_incoming = pg_drop_incoming,
    .reclaim_incoming = pg_reclaim_incoming,
    .checkpoint = pg_checkpoint,
    .watch_wal = pg_watch_wal,
    .wal_bytes = pg_wal_bytes,
    .last_error = pg_last_error,
    .list_due = pg_list_due,
    .next_due = pg_next_due,
    .lease = pg_lease,
    .clear_leases = pg_clear_leases,
    .heartbeat = pg_heartbeat,
    .listen = pg_listen,
    .wait_notify = pg_wait_notify,
    .nodes = pg_nodes,
    .load_message = pg_load_message,
    .load_rcpt = pg_load_rcpt,
    .read_body = pg_read_body,
    .record_attempt = pg_record_attempt,
    .sts_get = pg_sts_get,
    .sts_put = pg_sts_put,
    .sts_due = pg_sts_due,
    .tlsrpt_add = pg_tlsrpt_add,
    .tlsrpt_day = pg_tlsrpt_day,
    .tlsrpt_sent = pg_tlsrpt_sent,
    .unreported_bounces = pg_unreported_bounces,
    .list_unreported = pg_list_unreported,
    .mark_delay_reported = pg_mark_delay_reported,
    .mark_reported = pg_mark_reported,
    .release_finished = pg_release_finished,
    .queue_counts = pg_queue_counts,
    .probe_write = pg_probe_write,
    .prune_finished = pg_prune_finished,
    .helper_writer = pg_helper_writer,
    .set_busy_timeout = pg_set_busy_timeout,
    .resume_deferred = pg_resume_deferred,
    .first_pending = pg_first_pending,
    .read_begin = pg_read_begin,
    .read_end = pg_read_end,
    .list = pg_list,
    .load = pg_load,
    .exists = pg_exists,
    .attempts = pg_attempts,
    .body = pg_body,
    .change = pg_change,
    .retry_all = pg_retry_all,
    .purge = pg_purge,
    .get_stats = pg_get_stats,
};
