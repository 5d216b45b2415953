/*
 * pool.c - worker threads, the bounded job queue, and per-client counts
 * (see pool.h).
 *
 * Shared state:
 *  - p->mu guards p->jobs (a ring of qcap entries: head, count), p->stop
 *    and p->running.
 *  - ic->mu guards the ipcount hash table.
 * Neither lock is held across I/O or a session.
 */
#include "pool.h"
#include "log.h"
#include "util.h"

#include <netinet/in.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define WORKER_STACK (512 * 1024)

struct pool {
	struct server *srv;
	struct ipcount *ipc;
	pthread_t *threads;
	int nthreads;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct job *jobs;      /* guarded by mu */
	int qcap, head, count; /* guarded by mu */
	int running;           /* guarded by mu: sessions in progress */
	bool stop;             /* guarded by mu */
};

static void *
worker_main(void *arg)
{
	struct pool *p = arg;
	struct job job;

	for (;;) {
		pthread_mutex_lock(&p->mu);
		while (p->count == 0 && !p->stop)
			pthread_cond_wait(&p->cv, &p->mu);
		if (p->count == 0) {
			pthread_mutex_unlock(&p->mu);
			break;
		}
		job = p->jobs[p->head];
		p->head = (p->head + 1) % p->qcap;
		p->count--;
		p->running++;
		pthread_mutex_unlock(&p->mu);

		atomic_fetch_add(&p->srv->sessions, 1);
		session_run(p->srv, &job);
		atomic_fetch_sub(&p->srv->sessions, 1);
		ipcount_release(p->ipc, (struct sockaddr *)&job.peer);

		pthread_mutex_lock(&p->mu);
		p->running--;
		pthread_mutex_unlock(&p->mu);
	}
	return NULL;
}

struct pool *
pool_new(
    struct server *srv, struct ipcount *ipc, int nworkers, int qcap, char *why)
{
	struct pool *p = xcalloc(1, sizeof(*p));
	pthread_attr_t attr;
	int i;

	p->srv = srv;
	p->ipc = ipc;
	p->qcap = qcap;
	p->jobs = xcalloc((size_t)qcap, sizeof(*p->jobs));
	p->threads = xcalloc((size_t)nworkers, sizeof(*p->threads));
	pthread_mutex_init(&p->mu, NULL);
	pthread_cond_init(&p->cv, NULL);
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

bool
pool_submit(struct pool *p, const struct job *job)
{
	bool ok = false;

	pthread_mutex_lock(&p->mu);
	if (!p->stop && p->count < p->qcap &&
	    p->running + p->count < p->nthreads + p->qcap) {
		p->jobs[(p->head + p->count) % p->qcap] = *job;
		p->count++;
		pthread_cond_signal(&p->cv);
		ok = true;
	}
	pthread_mutex_unlock(&p->mu);
	return ok;
}

int
pool_busy(struct pool *p)
{
	int n;

	pthread_mutex_lock(&p->mu);
	n = p->running + p->count;
	pthread_mutex_unlock(&p->mu);
	return n;
}

void
pool_join(struct pool *p)
{
	int i;

	pthread_mutex_lock(&p->mu);
	p->stop = true;
	pthread_cond_broadcast(&p->cv);
	pthread_mutex_unlock(&p->mu);
	for (i = 0; i < p->nthreads; i++)
		pthread_join(p->threads[i], NULL);
	pthread_mutex_destroy(&p->mu);
	pthread_cond_destroy(&p->cv);
	free(p->threads);
	free(p->jobs);
	free(p);
}

/* ---- per-client connection counts: an open-addressing hash table ---- */

struct ipslot {
	unsigned char key[17]; /* family byte + 16 address bytes */
	int count;             /* 0: free (tombstones are count 0 too) */
	bool used;
};

struct ipcount {
	pthread_mutex_t mu;
	struct ipslot *slots; /* guarded by mu */
	size_t nslots, nused; /* guarded by mu */
};

struct ipcount *
ipcount_new(void)
{
	struct ipcount *ic = xcalloc(1, sizeof(*ic));

	pthread_mutex_init(&ic->mu, NULL);
	ic->nslots = 1024;
	ic->slots = xcalloc(ic->nslots, sizeof(*ic->slots));
	return ic;
}

void
ipcount_free(struct ipcount *ic)
{
	if (ic == NULL)
		return;
	pthread_mutex_destroy(&ic->mu);
	free(ic->slots);
	free(ic);
}

static void
ip_key(const struct sockaddr *sa, unsigned char *key)
{
	memset(key, 0, 17);
	if (sa->sa_family == AF_INET) {
		key[0] = 4;
		memcpy(key + 1, &((const struct sockaddr_in *)sa)->sin_addr, 4);
	} else if (sa->sa_family == AF_INET6) {
		key[0] = 6;
		memcpy(
		    key + 1, &((const struct sockaddr_in6 *)sa)->sin6_addr, 16);
	}
}

static size_t
ip_hash(const unsigned char *key)
{
	uint64_t h = 1469598103934665603ULL; /* FNV-1a */
	int i;

	for (i = 0; i < 17; i++)
		h = (h ^ key[i]) * 1099511628211ULL;
	return (size_t)h;
}

/* Find the slot for `key`, or the first unused one.  Caller holds mu. */
static struct ipslot *
ip_find(struct ipcount *ic, const unsigned char *key)
{
	size_t i = ip_hash(key) & (ic->nslots - 1);
	struct ipslot *free_slot = NULL;

	for (;;) {
		struct ipslot *s = &ic->slots[i];

		if (!s->used)
			return free_slot ? free_slot : s;
		if (s->count == 0 && free_slot == NULL)
			free_slot = s;
		else if (s->count > 0 && memcmp(s->key, key, 17) == 0)
			return s;
		i = (i + 1) & (ic->nslots - 1);
	}
}

/* Rebuild the table without tombstones, growing when needed. */
static void
ip_rehash(struct ipcount *ic)
{
	struct ipslot *old = ic->slots;
	size_t n = ic->nslots, i, live = 0;

	for (i = 0; i < n; i++)
		if (old[i].used && old[i].count > 0)
			live++;
	if (live * 2 >= n)
		ic->nslots = n * 2;
	ic->slots = xcalloc(ic->nslots, sizeof(*ic->slots));
	ic->nused = 0;
	for (i = 0; i < n; i++) {
		if (old[i].used && old[i].count > 0) {
			struct ipslot *s = ip_find(ic, old[i].key);

			*s = old[i];
			ic->nused++;
		}
	}
	free(old);
}

bool
ipcount_acquire(struct ipcount *ic, const struct sockaddr *sa, int limit)
{
	unsigned char key[17];
	struct ipslot *s;
	bool ok = true;

	ip_key(sa, key);
	pthread_mutex_lock(&ic->mu);
	s = ip_find(ic, key);
	if (!s->used || s->count == 0) {
		if (!s->used)
			ic->nused++;
		memcpy(s->key, key, 17);
		s->used = true;
		s->count = 0;
	}
	if (limit > 0 && s->count >= limit)
		ok = false;
	else
		s->count++;
	if (ic->nused * 4 >= ic->nslots * 3)
		ip_rehash(ic);
	pthread_mutex_unlock(&ic->mu);
	return ok;
}

void
ipcount_release(struct ipcount *ic, const struct sockaddr *sa)
{
	unsigned char key[17];
	struct ipslot *s;

	ip_key(sa, key);
	pthread_mutex_lock(&ic->mu);
	s = ip_find(ic, key);
	if (s->used && s->count > 0 && memcmp(s->key, key, 17) == 0)
		s->count--;
	pthread_mutex_unlock(&ic->mu);
}
