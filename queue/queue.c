/*
 * queue.c - message intake with group commit (see queue.h).
 *
 * Threads: session threads call queue_msg_*; one writer thread (writer_main)
 * owns the write connection.  They meet in two places:
 *  - q->mu guards the pending operation list (q->head, q->tail), q->stop
 *    and q->nlive / q->live (ids of messages being received, for the
 *    periodic reclaim; only the writer touches `live`, but under mu for
 *    simplicity of reasoning);
 *  - the checkpointer thread moves the WAL into the database file on its
 *    own connection, woken by the writer every CKPT_COMMITS commits, so
 *    that no commit (and no client waiting for its 250) pays for it;
 *  - m->mu guards a message's inflight, failed, fail_why and done fields,
 *    which the writer updates when an operation finishes.
 *
 * Message life cycle (SQLite-style):
 *
 *   queue_msg_new ──write()──> chunks in flight ──commit()──> durable ──free
 *         │                         │
 *         └────────free()───────────┴──> OP_DROP (chunks deleted)
 *
 * Invariants:
 *  1. A session never has more than MAX_INFLIGHT operations queued, so a
 *     message costs at most (MAX_INFLIGHT + 1) * QUEUE_CHUNK bytes of RAM.
 *  2. The writer finishes every operation it takes, and signals its owner
 *     only after the transaction holding it has committed or failed.
 *  3. queue_msg_free waits for the message's operations to finish before
 *     freeing it, so the writer never touches a freed queue_msg.
 */
#include "queue.h"
#include "db.h"
#include "log.h"
#include "metrics.h"

#include <gnutls/crypto.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_INFLIGHT 2
#define RECLAIM_INTERVAL_MS (10 * 60 * 1000)
#define CKPT_COMMITS 200

enum op_type {
	OP_CHUNK,
	OP_COMMIT,
	OP_DROP,
	OP_RUN, /* queue_run: a caller's function in the transaction */
};

/* How a queue_run caller waits for its operation. */
struct waiter {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	bool done;       /* guarded by mu */
	enum res result; /* set before done */
	char why[WHY_MAX];
};

struct op {
	enum op_type type;
	struct queue_msg *m; /* NULL for OP_DROP */
	char id[QUEUE_ID_LEN + 1];
	unsigned char *data; /* owned by the op */
	size_t len;
	int seq;
	bool first;                 /* first chunk: also record `incoming` */
	const struct envelope *env; /* OP_COMMIT; the session waits */
	enum res (*fn)(struct db *, void *, char *); /* OP_RUN */
	void *arg;                                   /* OP_RUN */
	struct waiter *w;                            /* OP_RUN */
	enum res result;
	char why[WHY_MAX];
	struct op *next;
};

struct queue {
	struct db *db;      /* writer thread only, after open */
	struct db *ckpt_db; /* checkpointer thread only, after open */
	pthread_t writer;
	pthread_t checkpointer;
	pthread_cond_t ckpt_cv; /* wakes the checkpointer */
	int commits;            /* guarded by mu: since the last checkpoint */
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct op *head, *tail; /* guarded by mu */
	bool stop;              /* guarded by mu */
	uint64_t mail_seq;      /* guarded by mu: messages committed */
	pthread_cond_t mail_cv; /* guarded by mu: broadcast on new mail */
	char **live;            /* writer only: ids being received */
	int nlive;
};

struct queue_msg {
	struct queue *q;
	char id[QUEUE_ID_LEN + 1];
	unsigned char *buf; /* session only: chunk being filled */
	size_t len, cap;
	int seq;        /* session only: next chunk number */
	bool committed; /* session only */
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int inflight;           /* guarded by mu */
	bool failed;            /* guarded by mu */
	char fail_why[WHY_MAX]; /* guarded by mu */
	bool done;              /* guarded by mu: commit finished */
};

/* Crockford's base32: no I, L, O, U, so IDs read aloud well. */
static const char b32[] = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";

void
queue_new_id(char *buf)
{
	uint64_t t = (uint64_t)wall_us();
	uint32_t r = 0;
	int i;

	/* 11 characters of microseconds (sortable by time), 5 random. */
	(void)gnutls_rnd(GNUTLS_RND_NONCE, &r, sizeof(r));
	for (i = 10; i >= 0; i--) {
		buf[i] = b32[t & 31];
		t >>= 5;
	}
	for (i = 11; i < QUEUE_ID_LEN; i++) {
		buf[i] = b32[r & 31];
		r >>= 5;
	}
	buf[QUEUE_ID_LEN] = '\0';
}

static void
submit(struct queue *q, struct op *op)
{
	pthread_mutex_lock(&q->mu);
	if (q->tail != NULL)
		q->tail->next = op;
	else
		q->head = op;
	q->tail = op;
	pthread_cond_signal(&q->cv);
	pthread_mutex_unlock(&q->mu);
}

static void
live_add(struct queue *q, const char *id)
{
	q->live = xrealloc(q->live, sizeof(char *) * (size_t)(q->nlive + 1));
	q->live[q->nlive++] = xstrdup(id);
}

static void
live_del(struct queue *q, const char *id)
{
	int i;

	for (i = 0; i < q->nlive; i++) {
		if (strcmp(q->live[i], id) == 0) {
			free(q->live[i]);
			q->live[i] = q->live[--q->nlive];
			return;
		}
	}
}

/* db_reclaim_incoming callback: reclaim what no session is receiving. */
static int
not_live(void *arg, const char *id)
{
	struct queue *q = arg;
	int i;

	for (i = 0; i < q->nlive; i++)
		if (strcmp(q->live[i], id) == 0)
			return 0;
	return 1;
}

static bool
msg_failed(struct queue_msg *m, char *why)
{
	bool failed;

	pthread_mutex_lock(&m->mu);
	failed = m->failed;
	if (failed)
		why_set(why, "%s", m->fail_why);
	pthread_mutex_unlock(&m->mu);
	return failed;
}

/* Apply one operation inside the current transaction. */
static enum res
apply(struct queue *q, struct op *op)
{
	if (op->m != NULL && msg_failed(op->m, op->why))
		return RES_TEMP;
	switch (op->type) {
	case OP_CHUNK:
	case OP_COMMIT:
		if (op->first && db_put_incoming(q->db, op->id,
		                     (int64_t)time(NULL), op->why) != RES_OK)
			return RES_TEMP;
		if ((op->len > 0 || op->type == OP_CHUNK) &&
		    db_put_chunk(q->db, op->id, op->seq, op->data, op->len,
		        op->why) != RES_OK)
			return RES_TEMP;
		if (op->type == OP_COMMIT)
			return db_put_message(q->db, op->env, op->why);
		return RES_OK;
	case OP_DROP:
		return db_drop_incoming(q->db, op->id, op->why);
	case OP_RUN:
		return op->fn(q->db, op->arg, op->why);
	}
	return RES_OK;
}

/* Tell the owner how its operation ended, then free it. */
static void
finish(struct queue *q, struct op *op)
{
	struct queue_msg *m = op->m;

	if (op->type == OP_CHUNK && op->first && op->result == RES_OK)
		live_add(q, op->id);
	if (op->type == OP_COMMIT || op->type == OP_DROP)
		live_del(q, op->id);
	if (op->type == OP_COMMIT && op->result == RES_OK) {
		pthread_mutex_lock(&q->mu);
		q->mail_seq++;
		pthread_cond_broadcast(&q->mail_cv);
		pthread_mutex_unlock(&q->mu);
	}
	if (op->w != NULL) {
		pthread_mutex_lock(&op->w->mu);
		op->w->result = op->result;
		memcpy(op->w->why, op->why, WHY_MAX);
		op->w->done = true;
		pthread_cond_signal(&op->w->cv);
		pthread_mutex_unlock(&op->w->mu);
	}
	if (op->type == OP_DROP && op->result != RES_OK)
		log_warn("queue",
		    "id=%s cannot delete partial message: %s "
		    "(reclaimed later)",
		    op->id, op->why);
	if (m != NULL) {
		pthread_mutex_lock(&m->mu);
		if (op->result != RES_OK && !m->failed) {
			m->failed = true;
			memcpy(m->fail_why, op->why, WHY_MAX);
		}
		if (op->type == OP_COMMIT)
			m->done = true;
		m->inflight--;
		pthread_cond_broadcast(&m->cv);
		pthread_mutex_unlock(&m->mu);
	}
	free(op->data);
	free(op);
}

/*
 * Run a batch in one transaction; if anything in it fails, roll back and
 * run each operation in a transaction of its own so that only the failing
 * ones fail.
 */
static void
run_batch(struct queue *q, struct op *batch)
{
	struct op *op, *next;
	char why[WHY_MAX];
	enum res r;
	int n = 0;

	r = db_begin(q->db, why);
	for (op = batch; r == RES_OK && op != NULL; op = op->next, n++)
		r = apply(q, op);
	if (r == RES_OK)
		r = db_commit(q->db, why);
	if (r == RES_OK)
		metrics_observe(H_COMMIT_BATCH, n);
	else
		db_rollback(q->db);
	if (r == RES_OK) {
		pthread_mutex_lock(&q->mu);
		if (++q->commits >= CKPT_COMMITS)
			pthread_cond_signal(&q->ckpt_cv);
		pthread_mutex_unlock(&q->mu);
		for (op = batch; op != NULL; op = next) {
			next = op->next;
			op->result = RES_OK;
			finish(q, op);
		}
		return;
	}
	for (op = batch; op != NULL; op = next) {
		next = op->next;
		op->result = db_begin(q->db, op->why);
		if (op->result == RES_OK)
			op->result = apply(q, op);
		if (op->result == RES_OK)
			op->result = db_commit(q->db, op->why);
		else
			db_rollback(q->db);
		finish(q, op);
	}
}

static void
reclaim(struct queue *q)
{
	char why[WHY_MAX];
	int n = db_reclaim_incoming(q->db, not_live, q, why);

	if (n < 0)
		log_warn(
		    "queue", "reclaiming partial messages failed: %s", why);
	else if (n > 0)
		log_info("queue", "reclaimed %d partial message%s", n,
		    n == 1 ? "" : "s");
}

static void *
writer_main(void *arg)
{
	struct queue *q = arg;
	int64_t next_reclaim = now_ms() + RECLAIM_INTERVAL_MS;
	struct op *batch;

	for (;;) {
		pthread_mutex_lock(&q->mu);
		while (q->head == NULL && !q->stop && now_ms() < next_reclaim) {
			struct timespec ts;

			clock_gettime(CLOCK_REALTIME, &ts);
			ts.tv_sec += 1;
			pthread_cond_timedwait(&q->cv, &q->mu, &ts);
		}
		batch = q->head;
		q->head = q->tail = NULL;
		if (batch == NULL && q->stop) {
			pthread_mutex_unlock(&q->mu);
			break;
		}
		pthread_mutex_unlock(&q->mu);
		if (batch != NULL)
			run_batch(q, batch);
		if (now_ms() >= next_reclaim) {
			reclaim(q);
			next_reclaim = now_ms() + RECLAIM_INTERVAL_MS;
		}
	}
	return NULL;
}

static void *
checkpointer_main(void *arg)
{
	struct queue *q = arg;
	char why[WHY_MAX];

	pthread_mutex_lock(&q->mu);
	while (!q->stop) {
		struct timespec ts;

		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_sec += 1;
		if (q->commits < CKPT_COMMITS)
			pthread_cond_timedwait(&q->ckpt_cv, &q->mu, &ts);
		if (q->commits == 0)
			continue;
		q->commits = 0;
		pthread_mutex_unlock(&q->mu);
		if (db_checkpoint(q->ckpt_db, why) != RES_OK)
			log_warn("queue", "%s", why);
		pthread_mutex_lock(&q->mu);
	}
	pthread_mutex_unlock(&q->mu);
	return NULL;
}

struct queue *
queue_open(const char *path, char *why)
{
	struct queue *q = xcalloc(1, sizeof(*q));

	q->db = db_open(path, why);
	if (q->db == NULL)
		goto fail;
	q->ckpt_db = db_open_helper(path, why);
	if (q->ckpt_db == NULL)
		goto fail;
	db_disable_autocheckpoint(q->db);
	/* No session is alive yet: every partial message is an orphan, and
	 * no delivery thread holds a lease. */
	reclaim(q);
	if (db_clear_leases(q->db, why) != RES_OK)
		log_warn("queue", "cannot clear delivery leases: %s", why);
	pthread_mutex_init(&q->mu, NULL);
	pthread_cond_init(&q->cv, NULL);
	pthread_cond_init(&q->ckpt_cv, NULL);
	pthread_cond_init(&q->mail_cv, NULL);
	if (pthread_create(&q->writer, NULL, writer_main, q) != 0) {
		why_set(why, "cannot start the queue writer thread");
		goto fail_sync;
	}
	if (pthread_create(&q->checkpointer, NULL, checkpointer_main, q) != 0) {
		why_set(why, "cannot start the queue checkpointer thread");
		pthread_mutex_lock(&q->mu);
		q->stop = true;
		pthread_cond_signal(&q->cv);
		pthread_mutex_unlock(&q->mu);
		pthread_join(q->writer, NULL);
		goto fail_sync;
	}
	return q;
fail_sync:
	pthread_mutex_destroy(&q->mu);
	pthread_cond_destroy(&q->cv);
	pthread_cond_destroy(&q->ckpt_cv);
	pthread_cond_destroy(&q->mail_cv);
fail:
	db_close(q->ckpt_db);
	db_close(q->db);
	free(q);
	return NULL;
}

void
queue_close(struct queue *q)
{
	int i;

	if (q == NULL)
		return;
	pthread_mutex_lock(&q->mu);
	q->stop = true;
	pthread_cond_signal(&q->cv);
	pthread_cond_signal(&q->ckpt_cv);
	pthread_mutex_unlock(&q->mu);
	pthread_join(q->writer, NULL);
	pthread_join(q->checkpointer, NULL);
	db_close(q->ckpt_db);
	db_close(q->db);
	for (i = 0; i < q->nlive; i++)
		free(q->live[i]);
	free(q->live);
	pthread_mutex_destroy(&q->mu);
	pthread_cond_destroy(&q->cv);
	pthread_cond_destroy(&q->ckpt_cv);
	pthread_cond_destroy(&q->mail_cv);
	free(q);
}

struct queue_msg *
queue_msg_new(struct queue *q)
{
	struct queue_msg *m = xcalloc(1, sizeof(*m));

	m->q = q;
	queue_new_id(m->id);
	pthread_mutex_init(&m->mu, NULL);
	pthread_cond_init(&m->cv, NULL);
	return m;
}

const char *
queue_msg_id(const struct queue_msg *m)
{
	return m->id;
}

/* Hand the filled buffer to the writer as an operation of `type`. */
static void
send_op(struct queue_msg *m, enum op_type type, const struct envelope *env)
{
	struct op *op = xcalloc(1, sizeof(*op));

	op->type = type;
	op->m = m;
	memcpy(op->id, m->id, sizeof(op->id));
	op->data = m->buf;
	op->len = m->len;
	op->seq = m->seq++;
	/* A multi-chunk message is "incoming" until its commit. */
	op->first = (type == OP_CHUNK && op->seq == 0);
	op->env = env;
	m->buf = NULL;
	m->len = m->cap = 0;
	pthread_mutex_lock(&m->mu);
	m->inflight++;
	pthread_mutex_unlock(&m->mu);
	submit(m->q, op);
}

enum res
queue_msg_write(struct queue_msg *m, const void *data, size_t len, char *why)
{
	const unsigned char *p = data;

	if (msg_failed(m, why))
		return RES_TEMP;
	while (len > 0) {
		size_t n;

		if (m->len == QUEUE_CHUNK) {
			/* Invariant 1: wait for room before queueing more. */
			pthread_mutex_lock(&m->mu);
			while (m->inflight >= MAX_INFLIGHT)
				pthread_cond_wait(&m->cv, &m->mu);
			pthread_mutex_unlock(&m->mu);
			send_op(m, OP_CHUNK, NULL);
		}
		if (m->cap == m->len) {
			/* Grow geometrically: small messages stay small. */
			m->cap = m->cap == 0 ? 4096 : m->cap * 2;
			if (m->cap > QUEUE_CHUNK)
				m->cap = QUEUE_CHUNK;
			m->buf = xrealloc(m->buf, m->cap);
		}
		n = m->cap - m->len;
		if (n > len)
			n = len;
		memcpy(m->buf + m->len, p, n);
		m->len += n;
		p += n;
		len -= n;
	}
	return RES_OK;
}

enum res
queue_msg_commit(struct queue_msg *m, const struct envelope *env, char *why)
{
	enum res r = RES_OK;

	if (msg_failed(m, why))
		return RES_TEMP;
	send_op(m, OP_COMMIT, env);
	pthread_mutex_lock(&m->mu);
	while (!m->done)
		pthread_cond_wait(&m->cv, &m->mu);
	if (m->failed) {
		why_set(why, "%s", m->fail_why);
		r = RES_TEMP;
	}
	pthread_mutex_unlock(&m->mu);
	m->committed = (r == RES_OK);
	return r;
}

void
queue_msg_free(struct queue_msg *m)
{
	struct op *op;

	if (m == NULL)
		return;
	/* Invariant 3: the writer must be done with us. */
	pthread_mutex_lock(&m->mu);
	while (m->inflight > 0)
		pthread_cond_wait(&m->cv, &m->mu);
	pthread_mutex_unlock(&m->mu);
	if (!m->committed && m->seq > 0) {
		op = xcalloc(1, sizeof(*op));
		op->type = OP_DROP;
		memcpy(op->id, m->id, sizeof(op->id));
		submit(m->q, op);
	}
	free(m->buf);
	pthread_mutex_destroy(&m->mu);
	pthread_cond_destroy(&m->cv);
	free(m);
}

enum res
queue_run(struct queue *q, enum res (*fn)(struct db *, void *, char *),
    void *arg, char *why)
{
	struct op *op = xcalloc(1, sizeof(*op));
	struct waiter w;

	pthread_mutex_init(&w.mu, NULL);
	pthread_cond_init(&w.cv, NULL);
	w.done = false;
	w.result = RES_TEMP; /* set by the writer before done */
	op->type = OP_RUN;
	op->fn = fn;
	op->arg = arg;
	op->w = &w;
	submit(q, op);
	pthread_mutex_lock(&w.mu);
	while (!w.done)
		pthread_cond_wait(&w.cv, &w.mu);
	pthread_mutex_unlock(&w.mu);
	pthread_mutex_destroy(&w.mu);
	pthread_cond_destroy(&w.cv);
	if (w.result != RES_OK)
		why_set(why, "%s", w.why);
	return w.result;
}

uint64_t
queue_mail_seq(struct queue *q)
{
	uint64_t v;

	pthread_mutex_lock(&q->mu);
	v = q->mail_seq;
	pthread_mutex_unlock(&q->mu);
	return v;
}

void
queue_wait_mail(struct queue *q, uint64_t seen, int64_t deadline_ms,
    const atomic_bool *stop)
{
	pthread_mutex_lock(&q->mu);
	while (q->mail_seq == seen && now_ms() < deadline_ms &&
	       !atomic_load(stop)) {
		struct timespec ts;
		int64_t left = deadline_ms - now_ms();

		if (left > 200)
			left = 200; /* look at *stop now and then */
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_sec += left / 1000;
		ts.tv_nsec += (left % 1000) * 1000000;
		if (ts.tv_nsec >= 1000000000) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000;
		}
		pthread_cond_timedwait(&q->mail_cv, &q->mu, &ts);
	}
	pthread_mutex_unlock(&q->mu);
}
