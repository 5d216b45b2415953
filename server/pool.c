/*
 * pool.c - worker threads and the run queue (see pool.h).
 *
 * Shared state, all guarded by p->mu: the two lanes of the run queue
 * (intrusive lists through sess_wait.next) and `stop`.  `queued` and
 * `running` are atomics written under the lock and read without it by
 * workers deciding whether to linger.  The lock is never held while a
 * session runs.
 *
 * A worker that finds its session waiting lingers (polls its descriptor)
 * for up to the park grace before parking it, so that a client in the
 * middle of a quick exchange is answered without a trip through the
 * waiter.  It does not linger when more sessions wait for a worker than
 * there are idle workers to take them, nor for a wait that has only a
 * deadline.  docs/benchmark.md has the measurements behind the grace.
 */
#include "pool.h"
#include "sync.h"
#include "log.h"
#include "util.h"
#include "waiter.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define WORKER_STACK (512 * 1024)
/* How long a worker watches a session that waits, before parking it. */
#define PARK_GRACE_MS 20

struct lane {
	struct sess_wait *head, *tail;
};

struct pool {
	struct server *srv;
	pthread_t *threads;
	int nthreads; /* main thread only: threads started */
	int nworkers; /* set before the threads start */
	int max_queued;
	int grace_ms;
	pthread_mutex_t mu;
	pthread_cond_t cv;      /* work arrived, or stop */
	pthread_cond_t idle_cv; /* the queue emptied and no worker runs */
	struct lane trusted;    /* guarded by mu */
	struct lane untrusted;  /* guarded by mu */
	atomic_int queued;      /* written under mu */
	atomic_int running;     /* written under mu */
	bool stop;              /* guarded by mu */
};

static void
lane_push(struct lane *l, struct sess_wait *w)
{
	w->next = NULL;
	if (l->tail != NULL)
		l->tail->next = w;
	else
		l->head = w;
	l->tail = w;
}

static struct sess_wait *
lane_pop(struct lane *l)
{
	struct sess_wait *w = l->head;

	if (w != NULL) {
		l->head = w->next;
		if (l->head == NULL)
			l->tail = NULL;
		w->next = NULL;
	}
	return w;
}

void
pool_submit(struct pool *p, struct sess_wait *w, enum sess_event ev)
{
	w->ev = ev;
	mutex_lock(&p->mu);
	lane_push(w->trusted ? &p->trusted : &p->untrusted, w);
	atomic_fetch_add(&p->queued, 1);
	pthread_cond_signal(&p->cv);
	mutex_unlock(&p->mu);
}

bool
pool_has_room(struct pool *p)
{
	return atomic_load(&p->queued) < p->max_queued;
}

/*
 * Watch a waiting session for up to the grace: the event it should run
 * with next, or -1 to park it.
 */
static int
linger(struct pool *p, struct sess_wait *w)
{
	struct pollfd pfd[2];
	int64_t left = w->deadline - now_ms();
	int rc;

	if (w->events == 0 || p->grace_ms <= 0 ||
	    atomic_load(&p->queued) > p->nworkers - atomic_load(&p->running))
		return -1;
	if (left <= 0)
		return EV_TIMEOUT;
	pfd[0].fd = w->fd;
	pfd[0].events = w->events;
	pfd[1].fd = w->stop == STOP_EARLY ? p->srv->stop_fd : p->srv->kill_fd;
	pfd[1].events = POLLIN;
	do
		rc = poll(pfd, 2, left < p->grace_ms ? (int)left : p->grace_ms);
	while (rc < 0 && errno == EINTR);
	if (rc > 0 && (pfd[1].revents & POLLIN))
		return EV_STOP;
	if (rc > 0 && pfd[0].revents != 0)
		return EV_READY;
	if (w->deadline <= now_ms())
		return EV_TIMEOUT;
	return -1;
}

/* Run a session until it ends or is parked. */
static void
run(struct pool *p, struct sess_wait *w)
{
	enum sess_event ev = w->ev;
	struct session *s = w->s;

	for (;;) {
		int next;

		if (!session_run(s, ev))
			return; /* ended: w is gone with it */
		next = linger(p, w);
		if (next < 0) {
			session_shrink(s);
			waiter_park(p->srv->waiter, w);
			return;
		}
		ev = (enum sess_event)next;
	}
}

static void *
worker_main(void *arg)
{
	struct pool *p = arg;

	for (;;) {
		struct sess_wait *w;

		mutex_lock(&p->mu);
		while (p->trusted.head == NULL && p->untrusted.head == NULL &&
		       !p->stop)
			cond_wait(&p->cv, &p->mu);
		w = lane_pop(&p->trusted);
		if (w == NULL)
			w = lane_pop(&p->untrusted);
		if (w == NULL) { /* stopping, and nothing left */
			mutex_unlock(&p->mu);
			break;
		}
		atomic_fetch_sub(&p->queued, 1);
		atomic_fetch_add(&p->running, 1);
		mutex_unlock(&p->mu);

		run(p, w);

		mutex_lock(&p->mu);
		atomic_fetch_sub(&p->running, 1);
		if (atomic_load(&p->running) == 0 &&
		    atomic_load(&p->queued) == 0)
			pthread_cond_broadcast(&p->idle_cv);
		mutex_unlock(&p->mu);
	}
	return NULL;
}

struct pool *
pool_new(struct server *srv, int nworkers, int max_queued, char *why)
{
	struct pool *p = xcalloc(1, sizeof(*p));
	pthread_attr_t attr;
	const char *g = getenv("SLUICE_PARK_GRACE_MS");
	int i;

	p->srv = srv;
	p->nworkers = nworkers;
	p->max_queued = max_queued;
	p->grace_ms = g != NULL ? atoi(g) : PARK_GRACE_MS;
	p->threads = xcalloc((size_t)nworkers, sizeof(*p->threads));
	mutex_init(&p->mu);
	cond_init(&p->cv);
	cond_init(&p->idle_cv);
	pthread_attr_init(&attr);
	pthread_attr_setstacksize(&attr, WORKER_STACK);
	for (i = 0; i < nworkers; i++) {
		if (pthread_create(&p->threads[i], &attr, worker_main, p) !=
		    0) {
			why_set(why, "cannot create worker thread %d of %d", i,
			    nworkers);
			pthread_attr_destroy(&attr);
			pool_join(p);
			return NULL;
		}
		p->nthreads++;
	}
	pthread_attr_destroy(&attr);
	return p;
}

int
pool_queued(struct pool *p)
{
	return atomic_load(&p->queued);
}

void
pool_join(struct pool *p)
{
	int i;

	mutex_lock(&p->mu);
	while (atomic_load(&p->running) > 0 || atomic_load(&p->queued) > 0)
		cond_wait(&p->idle_cv, &p->mu);
	p->stop = true;
	pthread_cond_broadcast(&p->cv);
	mutex_unlock(&p->mu);
	for (i = 0; i < p->nthreads; i++)
		pthread_join(p->threads[i], NULL);
	mutex_destroy(&p->mu);
	cond_destroy(&p->cv);
	cond_destroy(&p->idle_cv);
	free(p->threads);
	free(p);
}
