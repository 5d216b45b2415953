/*
 * queue.c - message intake with group commit (see queue.h).
 *
 * Threads: session threads call queue_msg_*; one writer thread (writer_main)
 * owns the write connection.  They meet in two places:
 *  - q->mu guards the pending operation list (q->head, q->tail), q->stop
 *    and q->nlive / q->live (ids of messages being received, for the
 *    periodic reclaim; only the writer touches `live`, but under mu for
 *    simplicity of reasoning);
 *  - q->mu also guards the WAL bookkeeping the writer and the
 *    checkpointer thread share (commit_seq, ckpt_due, ckpt_running,
 *    forcing, wal_dirty; see "The WAL" below);
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
 *  1. A session never has more than MAX_INFLIGHT chunks queued (and its
 *     commit, which carries the last one), so a message costs at most
 *     (MAX_INFLIGHT + 1) * QUEUE_CHUNK bytes of RAM.
 *  2. The writer finishes every operation it takes, and signals its owner
 *     only after the transaction holding it has committed or failed.
 *  3. queue_msg_free waits for the message's operations to finish before
 *     freeing it, so the writer never touches a freed queue_msg.
 *  4. At most DATA_INFLIGHT_MAX octets of message data (plus one chunk)
 *     wait for the writer, whatever the number of sessions.
 *
 * The WAL.  Every commit appends to queue.db-wal, and SQLite starts the WAL
 * over only when a transaction begins while every page in it has been
 * copied into queue.db (checkpointed) and no reader still uses it.  Under
 * sustained intake that never happens by itself: a checkpoint that leaves
 * the writer alone always finds newer commits behind it when it ends
 * (measured: 50,000 messages at full speed, every checkpoint caught up
 * with the WAL as it found it, and the WAL still grew to 337 MB).  So:
 *  - the checkpointer thread, on its own connection, copies the WAL into
 *    queue.db (PASSIVE) each time the commits have added CKPT_STEP bytes,
 *    in parallel with the writer, so that little is left to copy later;
 *  - when a commit leaves the WAL over its cap (WAL_CAP), the writer
 *    itself runs a RESTART checkpoint before its next batch: it copies
 *    the rest, waits at most CKPT_BUSY_MS for readers, and the next commit
 *    starts the WAL over; journal_size_limit then trims the file to the
 *    cap.  Sessions wait for that long; the WAL never holds more than the
 *    cap plus the batch that crossed it;
 *  - a reader inside a transaction that began before the newest commits
 *    (a sqlite3 shell after BEGIN; SELECT) keeps SQLite from copying
 *    past its snapshot and from reusing the WAL, by design: the WAL then
 *    grows until it ends, the writer logs why, and retries less and less
 *    often (up to every FORCE_BACKOFF_MAX ms) so the wait costs little;
 *  - once no commit came for a second, the checkpointer truncates the WAL
 *    file to nothing (TRUNCATE), so disk use follows the data.
 */
#include "queue.h"
#include "sync.h"
#include "store.h"
#include "log.h"
#include "metrics.h"
#include "queueid.h"

#include <gnutls/crypto.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MAX_INFLIGHT 2
/*
 * Message octets handed to the writer and not yet written, all messages
 * together: sessions wait beyond this (invariant 4), so many sessions
 * (parked ones hand over what they buffered) cannot queue more than this
 * much in memory when the disk is slower than the network.
 */
#define DATA_INFLIGHT_MAX (16 * 1024 * 1024)
#define RECLAIM_INTERVAL_MS (10 * 60 * 1000)
#define WAL_CAP (64 * 1024 * 1024)
#define CKPT_STEP (4 * 1024 * 1024)
#define CKPT_BUSY_MS 100
#define IDLE_TRUNCATE_MS 1000
#define FORCE_BACKOFF_MIN 100
#define FORCE_BACKOFF_MAX 5000

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
	enum res (*fn)(struct store *, void *, char *); /* OP_RUN */
	void *arg;                                      /* OP_RUN */
	struct waiter *w;                               /* OP_RUN */
	enum res result;
	char why[WHY_MAX];
	enum store_error err; /* the kind of failure, with `why` */
	struct op *next;
};

struct queue {
	struct store *store;      /* writer thread only, after open */
	struct store *ckpt_store; /* checkpointer thread only, after open */
	pthread_t writer;
	pthread_t checkpointer;
	pthread_t listener; /* a shared queue's wake-ups (listener_main) */
	bool listening;     /* the listener thread runs */
	char *path;
	int64_t wal_cap;             /* set at open */
	pthread_cond_t ckpt_cv;      /* wakes the checkpointer */
	pthread_cond_t ckpt_done_cv; /* a checkpointer run ended */
	uint64_t commit_seq;         /* guarded by mu: commits so far */
	int64_t ckpt_due;  /* guarded by mu: WAL bytes since the checkpointer
	                    * last started */
	bool ckpt_running; /* guarded by mu: the checkpointer is at work */
	bool forcing;      /* guarded by mu: the writer checkpoints */
	bool wal_dirty;    /* guarded by mu: may hold pages (not truncated
	                    * since the last commit) */
	int64_t last_commit_ms; /* guarded by mu: now_ms() of the last commit */
	bool ckpt_idle; /* guarded by mu: the checkpointer waits for a commit */
	int64_t wal_prev;    /* writer only: WAL bytes after the last commit */
	int64_t force_after; /* writer only: no forced checkpoint before */
	int force_backoff;   /* writer only: ms, after failed ones */
	int64_t blocked_since; /* writer only: first failed one, 0: none */
	int64_t warned_at;     /* writer only: when we last said so */
	int64_t warned_bytes;  /* writer only: the WAL then */
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct op *head, *tail; /* guarded by mu */
	bool stop;              /* guarded by mu */
	uint64_t mail_seq;      /* guarded by mu: messages committed */
	int64_t data_inflight;  /* guarded by mu: octets not yet written */
	pthread_cond_t room_cv; /* guarded by mu: data_inflight went down */
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
	int inflight;              /* guarded by mu */
	bool failed;               /* guarded by mu */
	char fail_why[WHY_MAX];    /* guarded by mu */
	enum store_error fail_err; /* guarded by mu */
	bool done;                 /* guarded by mu: commit finished */
};

void
queue_new_id(char *buf)
{
	uint32_t r = 0;

	(void)gnutls_rnd(GNUTLS_RND_NONCE, &r, sizeof(r));
	queue_id_make(buf, (uint64_t)wall_us(), r);
}

static void
submit(struct queue *q, struct op *op)
{
	mutex_lock(&q->mu);
	if (q->tail != NULL)
		q->tail->next = op;
	else
		q->head = op;
	q->tail = op;
	pthread_cond_signal(&q->cv);
	mutex_unlock(&q->mu);
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

/* store_reclaim_incoming callback: reclaim what no session is receiving. */
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

	mutex_lock(&m->mu);
	failed = m->failed;
	if (failed)
		why_set(why, "%s", m->fail_why);
	mutex_unlock(&m->mu);
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
		if (op->first && store_put_incoming(q->store, op->id,
		                     (int64_t)time(NULL), op->why) != RES_OK)
			return RES_TEMP;
		if (op->type == OP_CHUNK)
			return store_put_chunk(q->store, op->id, op->seq,
			    op->data, op->len, op->why);
		return store_put_mail(q->store, op->env, op->seq,
		    &(struct store_part){op->data, op->len}, 1, op->why);
	case OP_DROP:
		return store_drop_incoming(q->store, op->id, op->why);
	case OP_RUN:
		return op->fn(q->store, op->arg, op->why);
	}
	return RES_OK;
}

/* One new mail: what a commit of the writer, or another node's, says. */
static void
mail_arrived(struct queue *q)
{
	mutex_lock(&q->mu);
	q->mail_seq++;
	pthread_cond_broadcast(&q->mail_cv);
	mutex_unlock(&q->mu);
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
	if (op->type == OP_COMMIT && op->result == RES_OK)
		mail_arrived(q);
	if (op->len > 0 && op->m != NULL) {
		mutex_lock(&q->mu);
		q->data_inflight -= (int64_t)op->len;
		pthread_cond_broadcast(&q->room_cv);
		mutex_unlock(&q->mu);
	}
	if (op->w != NULL) {
		mutex_lock(&op->w->mu);
		op->w->result = op->result;
		memcpy(op->w->why, op->why, WHY_MAX);
		op->w->done = true;
		pthread_cond_signal(&op->w->cv);
		mutex_unlock(&op->w->mu);
	}
	if (op->type == OP_DROP && op->result != RES_OK)
		log_warn("queue",
		    "id=%s cannot delete partial message: %s "
		    "(reclaimed later)",
		    op->id, op->why);
	if (m != NULL) {
		mutex_lock(&m->mu);
		if (op->result != RES_OK && !m->failed) {
			m->failed = true;
			memcpy(m->fail_why, op->why, WHY_MAX);
			m->fail_err = op->err;
		}
		if (op->type == OP_COMMIT)
			m->done = true;
		m->inflight--;
		pthread_cond_broadcast(&m->cv);
		mutex_unlock(&m->mu);
	}
	free(op->data);
	free(op);
}

/* `bytes` as "12.3 MB" into buf. */
static const char *
mb(int64_t bytes, char *buf, size_t len)
{
	snprintf(buf, len, "%.1f MB", (double)bytes / 1e6);
	return buf;
}

/* The writer's RESTART checkpoint once the WAL is over its cap. */
static void
force_checkpoint(struct queue *q, int64_t wal, int64_t batch)
{
	char why[WHY_MAX], b1[32], b2[32];
	struct store_ckpt c;
	int64_t t0, now;
	enum res r;

	/* Let a PASSIVE run end rather than fail on its lock. */
	mutex_lock(&q->mu);
	q->forcing = true;
	while (q->ckpt_running)
		cond_wait(&q->ckpt_done_cv, &q->mu);
	mutex_unlock(&q->mu);
	t0 = now_ms();
	r = store_checkpoint(
	    q->store, STORE_CKPT_RESTART, CKPT_BUSY_MS, &c, why);
	now = now_ms();
	mutex_lock(&q->mu);
	q->forcing = false;
	if (r == RES_OK && c.complete)
		q->ckpt_due = 0;
	pthread_cond_signal(&q->ckpt_cv);
	mutex_unlock(&q->mu);
	if (r == RES_OK && c.complete) {
		log_info("queue",
		    "WAL checkpoint: restart wal_bytes=%lld cap_bytes=%lld "
		    "batch_bytes=%lld ms=%lld%s",
		    (long long)wal, (long long)q->wal_cap, (long long)batch,
		    (long long)(now - t0),
		    q->blocked_since ? " (no longer blocked)" : "");
		q->force_after = 0;
		q->force_backoff = 0;
		q->blocked_since = 0;
		q->warned_bytes = 0;
		return;
	}
	if (q->blocked_since == 0)
		q->blocked_since = now;
	if (r != RES_OK) {
		log_warn("queue", "WAL over its cap (%s): %s",
		    mb(q->wal_cap, b1, sizeof(b1)), why);
	} else if (q->warned_bytes == 0 || wal >= 2 * q->warned_bytes ||
	           now - q->warned_at >= 60 * 1000) {
		log_warn("queue",
		    "WAL checkpoint blocked: wal_bytes=%lld cap_bytes=%lld: "
		    "the WAL (%s) is over its cap (%s) and cannot start over "
		    "while another connection to the queue holds a read "
		    "transaction open (a sqlite3 shell after BEGIN, a long "
		    "query) or a lock; it grows until that ends",
		    (long long)wal, (long long)q->wal_cap,
		    mb(wal, b1, sizeof(b1)), mb(q->wal_cap, b2, sizeof(b2)));
		q->warned_at = now;
		q->warned_bytes = wal;
	}
	/* Each attempt holds the writer up to CKPT_BUSY_MS: back off. */
	q->force_backoff =
	    q->force_backoff == 0 ? FORCE_BACKOFF_MIN : q->force_backoff * 2;
	if (q->force_backoff > FORCE_BACKOFF_MAX)
		q->force_backoff = FORCE_BACKOFF_MAX;
	q->force_after = now + q->force_backoff;
}

/*
 * After each commit: count the WAL's growth for the checkpointer and
 * force a checkpoint when the WAL is over its cap.
 */
static void
wal_committed(struct queue *q)
{
	int64_t wal = store_wal_bytes(q->store);
	/*
	 * Smaller than after the last commit: this one started the WAL over
	 * (only then can it shrink).  Not assumed after a RESTART: a batch
	 * then counts all it wrote only if it is smaller than the WAL was.
	 */
	int64_t batch = wal >= q->wal_prev ? wal - q->wal_prev : wal;

	q->wal_prev = wal;
	mutex_lock(&q->mu);
	q->commit_seq++;
	q->last_commit_ms = now_ms();
	q->wal_dirty = true;
	q->ckpt_due += batch;
	if (q->ckpt_due >= CKPT_STEP || q->ckpt_idle)
		pthread_cond_signal(&q->ckpt_cv);
	mutex_unlock(&q->mu);
	if (wal > q->wal_cap && now_ms() >= q->force_after)
		force_checkpoint(q, wal, batch);
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

	r = store_begin(q->store, why);
	for (op = batch; r == RES_OK && op != NULL; op = op->next, n++)
		r = apply(q, op);
	if (r == RES_OK)
		r = store_commit(q->store, why);
	if (r == RES_OK)
		metrics_observe(H_COMMIT_BATCH, n);
	else
		store_rollback(q->store);
	if (r == RES_OK) {
		for (op = batch; op != NULL; op = next) {
			next = op->next;
			op->result = RES_OK;
			finish(q, op);
		}
		wal_committed(q);
		return;
	}
	for (op = batch; op != NULL; op = next) {
		next = op->next;
		op->result = store_begin(q->store, op->why);
		if (op->result == RES_OK)
			op->result = apply(q, op);
		if (op->result == RES_OK)
			op->result = store_commit(q->store, op->why);
		else
			store_rollback(q->store);
		if (op->result != RES_OK)
			op->err = store_last_error(q->store);
		finish(q, op);
	}
	wal_committed(q);
}

static void
reclaim(struct queue *q)
{
	char why[WHY_MAX];
	int n = store_reclaim_incoming(q->store, not_live, q, why);

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
		mutex_lock(&q->mu);
		/* Work and stop signal q->cv; the reclaim is due by time. */
		while (q->head == NULL && !q->stop && now_ms() < next_reclaim)
			cond_wait_until(&q->cv, &q->mu, next_reclaim);
		batch = q->head;
		q->head = q->tail = NULL;
		if (batch == NULL && q->stop) {
			mutex_unlock(&q->mu);
			break;
		}
		mutex_unlock(&q->mu);
		if (batch != NULL)
			run_batch(q, batch);
		if (now_ms() >= next_reclaim) {
			reclaim(q);
			next_reclaim = now_ms() + RECLAIM_INTERVAL_MS;
		}
	}
	return NULL;
}

/*
 * When the checkpointer has something to do without being signalled: the
 * idle TRUNCATE, IDLE_TRUNCATE_MS after the last commit, while the WAL may
 * hold pages and the last TRUNCATE did not fail at this very commit.
 * Otherwise 0: it sleeps until signalled (a commit that finds it so, a
 * PASSIVE's worth of commits, the end of a forced checkpoint, stop).
 */
static int64_t
ckpt_wake_at(const struct queue *q, uint64_t failed_seq)
{
	if (q->forcing || !q->wal_dirty || q->commit_seq == failed_seq)
		return 0;
	return q->last_commit_ms + IDLE_TRUNCATE_MS;
}

/* The checkpointer's sleep, with q->mu held. */
static void
ckpt_sleep(struct queue *q, uint64_t failed_seq)
{
	int64_t until = ckpt_wake_at(q, failed_seq);

	if (until == 0) {
		q->ckpt_idle = true;
		cond_wait(&q->ckpt_cv, &q->mu);
		q->ckpt_idle = false;
	} else if (now_ms() < until) {
		cond_wait_until(&q->ckpt_cv, &q->mu, until);
	}
}

/*
 * The checkpointer thread: PASSIVE every CKPT_STEP bytes of commits, and
 * TRUNCATE once no commit came for IDLE_TRUNCATE_MS (each at most once
 * per idle spell, so a reader that blocks it costs one CKPT_BUSY_MS wait).
 */
static void *
checkpointer_main(void *arg)
{
	struct queue *q = arg;
	uint64_t failed_seq = UINT64_MAX; /* when a TRUNCATE failed */
	char why[WHY_MAX];

	mutex_lock(&q->mu);
	while (!q->stop) {
		uint64_t seen;
		enum store_ckpt_mode mode;
		struct store_ckpt c;
		enum res r;

		if (q->forcing || q->ckpt_due < CKPT_STEP)
			ckpt_sleep(q, failed_seq);
		if (q->stop || q->forcing)
			continue;
		seen = q->commit_seq;
		if (q->ckpt_due >= CKPT_STEP)
			mode = STORE_CKPT_PASSIVE;
		else if (ckpt_wake_at(q, failed_seq) != 0 &&
		         now_ms() >= ckpt_wake_at(q, failed_seq))
			mode = STORE_CKPT_TRUNCATE;
		else
			continue;
		if (mode == STORE_CKPT_PASSIVE)
			q->ckpt_due = 0;
		q->ckpt_running = true;
		mutex_unlock(&q->mu);
		r = store_checkpoint(
		    q->ckpt_store, mode, CKPT_BUSY_MS, &c, why);
		if (r != RES_OK)
			log_warn("queue", "%s", why);
		mutex_lock(&q->mu);
		q->ckpt_running = false;
		pthread_cond_broadcast(&q->ckpt_done_cv);
		if (mode == STORE_CKPT_TRUNCATE) {
			/* A commit since then may have written a new WAL. */
			if (r == RES_OK && c.complete && q->commit_seq == seen)
				q->wal_dirty = false;
			else
				failed_seq = seen;
		}
	}
	mutex_unlock(&q->mu);
	return NULL;
}

static bool
stopping(struct queue *q)
{
	bool stop;

	mutex_lock(&q->mu);
	stop = q->stop;
	mutex_unlock(&q->mu);
	return stop;
}

/*
 * A shared queue: the other nodes' new mail wakes delivery here at once
 * (LISTEN), instead of at its next look.  A lost connection is made
 * again (a second later, and every second while the database is away),
 * and listens again; polling delivers meanwhile.
 */
static void *
listener_main(void *arg)
{
	struct queue *q = arg;
	struct store *s = NULL;
	char why[WHY_MAX];
	bool down = false;

	while (!stopping(q)) {
		int r;

		if (s == NULL) {
			s = store_open_helper(q->path, why);
			if (s != NULL && store_listen(s, why) != RES_OK) {
				store_close(s);
				s = NULL;
			}
			if (s == NULL) {
				if (!down)
					log_warn("queue",
					    "cannot listen for other nodes' "
					    "mail (delivery polls meanwhile): "
					    "%s",
					    why);
				down = true;
				for (r = 0; r < 10 && !stopping(q); r++)
					usleep(100 * 1000);
				continue;
			}
			if (down)
				log_info("queue",
				    "listening for other nodes' mail again");
			down = false;
		}
		r = store_wait_notify(s, 500, why);
		if (r > 0) {
			metrics_inc(M_QUEUE_WAKEUPS);
			mail_arrived(q);
		} else if (r < 0) {
			log_warn("queue",
			    "lost the connection that listens for other "
			    "nodes' mail: %s",
			    why);
			store_close(s);
			s = NULL;
			down = true;
		}
	}
	store_close(s);
	return NULL;
}

/*
 * The WAL's cap: WAL_CAP, or SLUICE_TEST_WAL_CAP bytes (at least 64 KiB)
 * when that is set.  That variable is not a configuration key: it lets the
 * tests and bench/ show the cap holding with a few thousand messages.
 */
static int64_t
wal_cap(void)
{
	const char *s = getenv("SLUICE_TEST_WAL_CAP");
	char *end;
	long long v;

	if (s == NULL || *s == '\0')
		return WAL_CAP;
	v = strtoll(s, &end, 10);
	if (*end != '\0' || v < 64 * 1024) {
		log_warn("queue",
		    "SLUICE_TEST_WAL_CAP=%s ignored: not a "
		    "number of bytes >= 65536",
		    s);
		return WAL_CAP;
	}
	log_warn("queue",
	    "WAL cap %lld bytes from SLUICE_TEST_WAL_CAP (a test setting)", v);
	return v;
}

struct queue *
queue_open(const char *path, char *why)
{
	struct queue *q = xcalloc(1, sizeof(*q));

	q->store = store_open(path, why);
	if (q->store == NULL)
		goto fail;
	q->ckpt_store = store_open_helper(path, why);
	if (q->ckpt_store == NULL)
		goto fail;
	q->wal_cap = wal_cap();
	if (store_watch_wal(q->store, q->wal_cap, why) != RES_OK)
		goto fail;
	/* The last run may have left pages in the WAL. */
	q->wal_dirty = true;
	/* No session is alive yet: every partial message is an orphan, and
	 * no delivery thread holds a lease. */
	reclaim(q);
	if (store_clear_leases(q->store, why) != RES_OK)
		log_warn("queue", "cannot clear delivery leases: %s", why);
	mutex_init(&q->mu);
	cond_init(&q->cv);
	cond_init(&q->ckpt_cv);
	cond_init(&q->ckpt_done_cv);
	cond_init(&q->mail_cv);
	cond_init(&q->room_cv);
	if (pthread_create(&q->writer, NULL, writer_main, q) != 0) {
		why_set(why, "cannot start the queue writer thread");
		goto fail_sync;
	}
	if (pthread_create(&q->checkpointer, NULL, checkpointer_main, q) != 0) {
		why_set(why, "cannot start the queue checkpointer thread");
		mutex_lock(&q->mu);
		q->stop = true;
		pthread_cond_signal(&q->cv);
		mutex_unlock(&q->mu);
		pthread_join(q->writer, NULL);
		goto fail_sync;
	}
	q->path = xstrdup(path);
	return q;
fail_sync:
	mutex_destroy(&q->mu);
	cond_destroy(&q->cv);
	cond_destroy(&q->ckpt_cv);
	cond_destroy(&q->ckpt_done_cv);
	cond_destroy(&q->mail_cv);
	cond_destroy(&q->room_cv);
fail:
	store_close(q->ckpt_store);
	store_close(q->store);
	free(q);
	return NULL;
}

void
queue_close(struct queue *q)
{
	char why[WHY_MAX];
	struct store_ckpt c;
	int i;

	if (q == NULL)
		return;
	mutex_lock(&q->mu);
	q->stop = true;
	pthread_cond_signal(&q->cv);
	pthread_cond_signal(&q->ckpt_cv);
	mutex_unlock(&q->mu);
	pthread_join(q->writer, NULL);
	pthread_join(q->checkpointer, NULL);
	if (q->listening)
		pthread_join(q->listener, NULL);
	free(q->path);
	/* Leave no WAL behind when no reader is in the way. */
	(void)store_checkpoint(
	    q->store, STORE_CKPT_TRUNCATE, CKPT_BUSY_MS, &c, why);
	store_close(q->ckpt_store);
	store_close(q->store);
	for (i = 0; i < q->nlive; i++)
		free(q->live[i]);
	free(q->live);
	mutex_destroy(&q->mu);
	cond_destroy(&q->cv);
	cond_destroy(&q->ckpt_cv);
	cond_destroy(&q->ckpt_done_cv);
	cond_destroy(&q->mail_cv);
	cond_destroy(&q->room_cv);
	free(q);
}

struct queue_msg *
queue_msg_new(struct queue *q)
{
	struct queue_msg *m = xcalloc(1, sizeof(*m));

	m->q = q;
	queue_new_id(m->id);
	mutex_init(&m->mu);
	cond_init(&m->cv);
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
	if (op->len > 0) { /* invariant 4 */
		struct queue *q = m->q;

		mutex_lock(&q->mu);
		while (q->data_inflight > 0 &&
		       q->data_inflight + (int64_t)op->len > DATA_INFLIGHT_MAX)
			cond_wait(&q->room_cv, &q->mu);
		q->data_inflight += (int64_t)op->len;
		BUG_ON(q->data_inflight != (int64_t)op->len &&
		       q->data_inflight > DATA_INFLIGHT_MAX);
		mutex_unlock(&q->mu);
	}
	mutex_lock(&m->mu);
	m->inflight++;
	BUG_ON(m->inflight > MAX_INFLIGHT + (type == OP_COMMIT));
	mutex_unlock(&m->mu);
	submit(m->q, op);
}

/* Hand the buffer over as a chunk, once the message has room in flight
 * (invariant 1). */
static void
send_chunk(struct queue_msg *m)
{
	mutex_lock(&m->mu);
	while (m->inflight >= MAX_INFLIGHT)
		cond_wait(&m->cv, &m->mu);
	mutex_unlock(&m->mu);
	send_op(m, OP_CHUNK, NULL);
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
			send_chunk(m);
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

void
queue_msg_park(struct queue_msg *m)
{
	if (m == NULL || m->buf == NULL)
		return;
	if (msg_failed(m, NULL) || m->len == 0) {
		/* Nothing there that will ever be stored. */
		free(m->buf);
		m->buf = NULL;
		m->len = m->cap = 0;
		return;
	}
	if (m->len < QUEUE_PARK_MIN) {
		if (m->cap > m->len) {
			m->buf = xrealloc(m->buf, m->len);
			m->cap = m->len;
		}
		return;
	}
	send_chunk(m);
}

int
queue_msg_reply_code(struct queue_msg *m)
{
	enum store_error e;

	mutex_lock(&m->mu);
	e = m->fail_err;
	mutex_unlock(&m->mu);
	return store_error_code(e);
}

enum res
queue_msg_commit(struct queue_msg *m, const struct envelope *env, char *why)
{
	enum res r = RES_OK;

	if (msg_failed(m, why))
		return RES_TEMP;
	send_op(m, OP_COMMIT, env);
	mutex_lock(&m->mu);
	while (!m->done)
		cond_wait(&m->cv, &m->mu);
	if (m->failed) {
		why_set(why, "%s", m->fail_why);
		r = RES_TEMP;
	}
	mutex_unlock(&m->mu);
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
	mutex_lock(&m->mu);
	while (m->inflight > 0)
		cond_wait(&m->cv, &m->mu);
	mutex_unlock(&m->mu);
	if (!m->committed && m->seq > 0) {
		op = xcalloc(1, sizeof(*op));
		op->type = OP_DROP;
		memcpy(op->id, m->id, sizeof(op->id));
		submit(m->q, op);
	}
	free(m->buf);
	mutex_destroy(&m->mu);
	cond_destroy(&m->cv);
	free(m);
}

enum res
queue_run(struct queue *q, enum res (*fn)(struct store *, void *, char *),
    void *arg, char *why)
{
	struct op *op = xcalloc(1, sizeof(*op));
	struct waiter w;

	mutex_init(&w.mu);
	cond_init(&w.cv);
	w.done = false;
	w.result = RES_TEMP; /* set by the writer before done */
	op->type = OP_RUN;
	op->fn = fn;
	op->arg = arg;
	op->w = &w;
	submit(q, op);
	mutex_lock(&w.mu);
	while (!w.done)
		cond_wait(&w.cv, &w.mu);
	mutex_unlock(&w.mu);
	mutex_destroy(&w.mu);
	cond_destroy(&w.cv);
	if (w.result != RES_OK)
		why_set(why, "%s", w.why);
	return w.result;
}

uint64_t
queue_mail_seq(struct queue *q)
{
	uint64_t v;

	mutex_lock(&q->mu);
	v = q->mail_seq;
	mutex_unlock(&q->mu);
	return v;
}

void
queue_listen_others(struct queue *q)
{
	if (!store_path_is_database(q->path) || q->listening)
		return;
	if (pthread_create(&q->listener, NULL, listener_main, q) == 0)
		q->listening = true;
	else
		log_warn("queue", "cannot start the listener thread: "
		                  "delivery polls for other nodes' mail");
}

void
queue_wait_mail(struct queue *q, uint64_t seen, int64_t deadline_ms,
    const atomic_bool *stop)
{
	mutex_lock(&q->mu);
	while (
	    q->mail_seq == seen && now_ms() < deadline_ms && !atomic_load(stop))
		cond_wait_until(&q->mail_cv, &q->mu, deadline_ms);
	mutex_unlock(&q->mu);
}

void
queue_wake(struct queue *q)
{
	mutex_lock(&q->mu);
	pthread_cond_broadcast(&q->mail_cv);
	mutex_unlock(&q->mu);
}
