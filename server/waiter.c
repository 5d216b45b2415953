/*
 * waiter.c - parked sessions: an epoll set and a deadline heap (see
 * waiter.h).
 *
 * Shared state, guarded by wt->mu: the heap (parked sessions ordered by
 * deadline, each knowing its heap_pos), `stopped`, `quit`, `wake_at`,
 * `shorten`, and the sess_wait fields parked/registered/heap_pos of every
 * parked session.  epoll_ctl is called under the lock, so that a session is
 * never armed in the epoll set while it is not parked.
 *
 * Invariants:
 *  1. A session is parked (in the heap) exactly when its descriptor is
 *     armed in the epoll set or its wait has no events; every path that
 *     takes it out (an event, its deadline, shutdown) does so under the
 *     lock, and disarms it: an EPOLLONESHOT event disarms it by itself,
 *     the other paths remove it with EPOLL_CTL_DEL.  So it is handed to the
 *     pool once, and no stale event can name it afterwards.
 *  2. The thread never sleeps past the earliest deadline: a park with an
 *     earlier deadline than the one it sleeps to wakes it (eventfd).
 */
#include "waiter.h"
#include "sync.h"
#include "holder.h"
#include "log.h"
#include "metrics.h"
#include "util.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#define WAITER_EVENTS 256
#define STRESS_EVERY_MS 1000

struct waiter {
	struct server *srv;
	struct pool *pool;
	int epfd;
	int wake; /* eventfd */
	pthread_t thread;
	bool started;
	pthread_mutex_t mu;
	struct sess_wait **heap; /* guarded by mu */
	size_t n, cap;           /* guarded by mu */
	int stopped;             /* guarded by mu: 0 or an enum sess_stop */
	bool quit;               /* guarded by mu */
	bool shorten;            /* guarded by mu: stress began */
	int64_t wake_at;         /* guarded by mu */
	atomic_long parked;
	atomic_llong stress_ms; /* stress_command_timeout, in stress mode */
};

/* epoll tags of the descriptors that are not sessions. */
static char tag_wake, tag_stop, tag_kill;

/* -------- the heap (caller holds mu) -------- */

static void
heap_set(struct waiter *wt, size_t i, struct sess_wait *w)
{
	wt->heap[i] = w;
	w->heap_pos = i;
}

static void
sift_up(struct waiter *wt, size_t i)
{
	struct sess_wait *w = wt->heap[i];

	while (i > 0) {
		size_t up = (i - 1) / 2;

		if (wt->heap[up]->deadline <= w->deadline)
			break;
		heap_set(wt, i, wt->heap[up]);
		i = up;
	}
	heap_set(wt, i, w);
}

static void
sift_down(struct waiter *wt, size_t i)
{
	struct sess_wait *w = wt->heap[i];

	for (;;) {
		size_t c = 2 * i + 1;

		if (c >= wt->n)
			break;
		if (c + 1 < wt->n &&
		    wt->heap[c + 1]->deadline < wt->heap[c]->deadline)
			c++;
		if (w->deadline <= wt->heap[c]->deadline)
			break;
		heap_set(wt, i, wt->heap[c]);
		i = c;
	}
	heap_set(wt, i, w);
}

static void
heap_push(struct waiter *wt, struct sess_wait *w)
{
	if (wt->n == wt->cap) {
		wt->cap = wt->cap ? wt->cap * 2 : 1024;
		wt->heap = xrealloc(wt->heap, wt->cap * sizeof(*wt->heap));
	}
	heap_set(wt, wt->n, w);
	wt->n++;
	sift_up(wt, wt->n - 1);
}

static void
heap_remove(struct waiter *wt, struct sess_wait *w)
{
	size_t i = w->heap_pos;
	struct sess_wait *last = wt->heap[--wt->n];

	if (i == wt->n)
		return;
	heap_set(wt, i, last);
	if (i > 0 && wt->heap[(i - 1) / 2]->deadline > last->deadline)
		sift_up(wt, i);
	else
		sift_down(wt, i);
}

/* Take a parked session out (caller holds mu); invariant 1. */
static void
unpark(struct waiter *wt, struct sess_wait *w, bool disarm)
{
	BUG_ON(
	    !w->parked || w->heap_pos >= wt->n || wt->heap[w->heap_pos] != w);
	heap_remove(wt, w);
	w->parked = false;
	atomic_fetch_sub(&wt->parked, 1);
	if (disarm && w->registered) {
		(void)epoll_ctl(wt->epfd, EPOLL_CTL_DEL, w->fd, NULL);
		w->registered = false;
	}
}

/* -------- parking -------- */

/* Wake the waiter thread (a new earlier deadline, stress, quit). */
static void
wake(struct waiter *wt)
{
	uint64_t one = 1;

	(void)!write(wt->wake, &one, sizeof(one));
}

void
waiter_park(struct waiter *wt, struct sess_wait *w)
{
	struct epoll_event ev;
	bool soon = false, failed = false;
	enum sess_event now = EV_STOP;

	memset(&ev, 0, sizeof(ev));
	/* Stress mode: sessions that began waiting before it began, or that
	 * were running then, get the short timeout too. */
	if (w->idle && !w->trusted && atomic_load(&wt->srv->stress)) {
		int64_t cap = w->since + atomic_load(&wt->stress_ms);

		if (cap < w->deadline)
			w->deadline = cap;
	}
	mutex_lock(&wt->mu);
	if (wt->quit || wt->stopped >= (int)w->stop)
		goto hand_back;
	BUG_ON(w->parked); /* a session is parked once (invariant 1) */
	heap_push(wt, w);
	w->parked = true;
	atomic_fetch_add(&wt->parked, 1);
	if (w->events != 0) {
		ev.events = EPOLLONESHOT;
		if (w->events & POLLIN)
			ev.events |= EPOLLIN;
		if (w->events & POLLOUT)
			ev.events |= EPOLLOUT;
		ev.data.ptr = w;
		if (epoll_ctl(wt->epfd,
		        w->registered ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, w->fd,
		        &ev) != 0) {
			failed = true;
			unpark(wt, w, false);
			now = EV_TIMEOUT;
			goto hand_back;
		}
		w->registered = true;
	}
	soon = w->deadline < wt->wake_at;
	mutex_unlock(&wt->mu);
	if (soon)
		wake(wt);
	return;
hand_back:
	mutex_unlock(&wt->mu);
	if (failed)
		log_warn("smtpd", "cannot wait for a session: epoll_ctl: %s",
		    strerror(errno));
	pool_submit(wt->pool, w, now);
}

long
waiter_parked(struct waiter *wt)
{
	return atomic_load(&wt->parked);
}

/* -------- the thread -------- */

/*
 * Hand every session parked at `stage` or earlier to the pool with
 * EV_STOP (shutdown reached that stage), or all of them (`all`).
 */
static void
stop_stage(struct waiter *wt, int stage, bool all)
{
	struct sess_wait *list = NULL, *w;
	size_t i, kept = 0;

	mutex_lock(&wt->mu);
	if (stage > wt->stopped)
		wt->stopped = stage;
	for (i = 0; i < wt->n; i++) {
		w = wt->heap[i];
		if (!all && (int)w->stop > stage) {
			heap_set(wt, kept++, w);
			continue;
		}
		w->parked = false;
		atomic_fetch_sub(&wt->parked, 1);
		if (w->registered) {
			(void)epoll_ctl(wt->epfd, EPOLL_CTL_DEL, w->fd, NULL);
			w->registered = false;
		}
		w->next = list;
		list = w;
	}
	wt->n = kept;
	for (i = kept / 2; i-- > 0;)
		sift_down(wt, i);
	mutex_unlock(&wt->mu);
	while ((w = list) != NULL) {
		list = w->next;
		pool_submit(wt->pool, w, EV_STOP);
	}
}

/* Hand the sessions whose deadline passed to the pool. */
static void
expire(struct waiter *wt)
{
	struct sess_wait *list = NULL, *w;
	int64_t now = now_ms();

	mutex_lock(&wt->mu);
	while (wt->n > 0 && wt->heap[0]->deadline <= now) {
		w = wt->heap[0];
		unpark(wt, w, true);
		w->next = list;
		list = w;
	}
	mutex_unlock(&wt->mu);
	while ((w = list) != NULL) {
		list = w->next;
		pool_submit(wt->pool, w, EV_TIMEOUT);
	}
}

/* Stress began: untrusted clients waiting for a command get at most
 * stress_command_timeout from the start of their wait. */
static void
shorten(struct waiter *wt)
{
	int64_t timeout_ms = atomic_load(&wt->stress_ms);
	size_t i;

	mutex_lock(&wt->mu);
	if (wt->shorten) {
		wt->shorten = false;
		for (i = 0; i < wt->n; i++) {
			struct sess_wait *w = wt->heap[i];

			if (w->idle && !w->trusted &&
			    w->since + timeout_ms < w->deadline)
				w->deadline = w->since + timeout_ms;
		}
		for (i = wt->n / 2; i-- > 0;)
			sift_down(wt, i);
	}
	mutex_unlock(&wt->mu);
}

static void
on_ready(struct waiter *wt, struct sess_wait *w)
{
	bool mine;

	mutex_lock(&wt->mu);
	mine = w->parked;
	if (mine)
		unpark(wt, w, false); /* EPOLLONESHOT disarmed it */
	mutex_unlock(&wt->mu);
	if (mine)
		pool_submit(wt->pool, w, EV_READY);
}

static void
forget_fd(struct waiter *wt, int fd)
{
	(void)epoll_ctl(wt->epfd, EPOLL_CTL_DEL, fd, NULL);
}

static void *
waiter_main(void *arg)
{
	struct waiter *wt = arg;
	struct epoll_event evs[WAITER_EVENTS];
	int64_t next_stress = 0;

	for (;;) {
		int64_t now = now_ms(), timeout = STRESS_EVERY_MS;
		int i, n;

		mutex_lock(&wt->mu);
		if (wt->quit) {
			mutex_unlock(&wt->mu);
			break;
		}
		if (wt->n > 0 && wt->heap[0]->deadline - now < timeout)
			timeout = wt->heap[0]->deadline - now;
		if (timeout < 0)
			timeout = 0;
		wt->wake_at = now + timeout;
		mutex_unlock(&wt->mu);

		n = epoll_wait(wt->epfd, evs, WAITER_EVENTS, (int)timeout);
		for (i = 0; i < n; i++) {
			void *tag = evs[i].data.ptr;

			if (tag == &tag_wake) {
				uint64_t v;

				(void)!read(wt->wake, &v, sizeof(v));
			} else if (tag == &tag_stop) {
				forget_fd(wt, wt->srv->stop_fd);
				stop_stage(wt, STOP_EARLY, false);
			} else if (tag == &tag_kill) {
				forget_fd(wt, wt->srv->kill_fd);
				stop_stage(wt, STOP_LATE, false);
			} else {
				on_ready(wt, tag);
			}
		}
		expire(wt);
		if (now_ms() >= next_stress) {
			struct held *ref;

			(void)waiter_stress_check(
			    wt, holder_get(wt->srv->config, &ref));
			holder_put(ref);
			next_stress = now_ms() + STRESS_EVERY_MS;
		}
		shorten(wt);
	}
	return NULL;
}

static int
watch(struct waiter *wt, int fd, void *tag)
{
	struct epoll_event ev;

	memset(&ev, 0, sizeof(ev));
	ev.events = EPOLLIN;
	ev.data.ptr = tag;
	return epoll_ctl(wt->epfd, EPOLL_CTL_ADD, fd, &ev);
}

struct waiter *
waiter_new(struct server *srv, struct pool *pool, char *why)
{
	struct waiter *wt = xcalloc(1, sizeof(*wt));

	wt->srv = srv;
	wt->pool = pool;
	mutex_init(&wt->mu);
	wt->wake = -1;
	wt->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (wt->epfd < 0 ||
	    (wt->wake = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) < 0 ||
	    watch(wt, wt->wake, &tag_wake) != 0 ||
	    watch(wt, srv->stop_fd, &tag_stop) != 0 ||
	    watch(wt, srv->kill_fd, &tag_kill) != 0) {
		why_set(why, "waiter: %s", strerror(errno));
		waiter_free(wt);
		return NULL;
	}
	if (pthread_create(&wt->thread, NULL, waiter_main, wt) != 0) {
		why_set(why, "cannot start the waiter thread");
		waiter_free(wt);
		return NULL;
	}
	wt->started = true;
	return wt;
}

bool
waiter_stress_check(struct waiter *wt, const struct config *cfg)
{
	struct server *srv = wt->srv;
	long open = atomic_load(&srv->sessions);
	long limit = (long)cfg->max_connections * cfg->stress_threshold / 100;
	int queued = pool_queued(wt->pool);
	bool was = atomic_load(&srv->stress), on;

	/* Leave stress 10% below where it began, so it does not flap. */
	if (was)
		on = open >= limit - limit / 10 || queued > cfg->workers / 2;
	else
		on = open >= limit || queued > cfg->workers;
	/* Before the mode turns on: waiter_park reads it then. */
	if (on)
		atomic_store(&wt->stress_ms,
		    (long long)cfg->stress_command_timeout * 1000);
	if (on != was &&
	    atomic_compare_exchange_strong(&srv->stress, &was, on)) {
		if (on) {
			metrics_inc(M_STRESS_EPISODES);
			log_warn("smtpd",
			    "stress: %ld connections open (threshold %ld), "
			    "%d sessions waiting for a worker: untrusted "
			    "clients get %ds to send a command",
			    open, limit, queued, cfg->stress_command_timeout);
			mutex_lock(&wt->mu);
			wt->shorten = true;
			mutex_unlock(&wt->mu);
			wake(wt);
		} else {
			log_info("smtpd",
			    "stress over: %ld connections open, %d sessions "
			    "waiting for a worker",
			    open, queued);
		}
	}
	return on;
}

void
waiter_stop(struct waiter *wt)
{
	if (wt == NULL)
		return;
	mutex_lock(&wt->mu);
	wt->quit = true;
	mutex_unlock(&wt->mu);
	if (wt->started) {
		wake(wt);
		pthread_join(wt->thread, NULL);
		wt->started = false;
	}
	stop_stage(wt, STOP_LATE, true);
}

void
waiter_free(struct waiter *wt)
{
	if (wt == NULL)
		return;
	waiter_stop(wt);
	if (wt->epfd >= 0)
		close(wt->epfd);
	if (wt->wake >= 0)
		close(wt->wake);
	mutex_destroy(&wt->mu);
	free(wt->heap);
	free(wt);
}
