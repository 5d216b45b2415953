/*
 * holder.c - reference-counted current versions (see holder.h).
 *
 * Shared state: h->cur (guarded by h->mu); a held's refs (guarded by the
 * mutex of the holder it came from, which outlives every reference).
 */
#include "holder.h"
#include "sync.h"
#include "util.h"

#include <pthread.h>
#include <stdlib.h>

struct held {
	struct holder *h;
	void *obj;
	int refs; /* guarded by h->mu; the holder's own counts as one */
};

struct holder {
	pthread_mutex_t mu;
	void (*free_fn)(void *);
	struct held *cur; /* guarded by mu */
};

struct holder *
holder_new(void (*free_fn)(void *))
{
	struct holder *h = xcalloc(1, sizeof(*h));

	mutex_init(&h->mu);
	h->free_fn = free_fn;
	return h;
}

/* Drop one reference; caller holds h->mu.  Returns what to free. */
static struct held *
unref_locked(struct held *r)
{
	return (r != NULL && --r->refs == 0) ? r : NULL;
}

static void
release(struct holder *h, struct held *dead)
{
	if (dead == NULL)
		return;
	if (dead->obj != NULL)
		h->free_fn(dead->obj);
	free(dead);
}

void
holder_set(struct holder *h, void *obj)
{
	struct held *r = xcalloc(1, sizeof(*r)), *dead;

	r->h = h;
	r->obj = obj;
	r->refs = 1;
	mutex_lock(&h->mu);
	dead = unref_locked(h->cur);
	h->cur = r;
	mutex_unlock(&h->mu);
	release(h, dead);
}

void *
holder_get(struct holder *h, struct held **ref)
{
	struct held *r;

	mutex_lock(&h->mu);
	r = h->cur;
	if (r != NULL)
		r->refs++;
	mutex_unlock(&h->mu);
	*ref = r;
	return r != NULL ? r->obj : NULL;
}

void
holder_put(struct held *ref)
{
	struct held *dead;
	struct holder *h;

	if (ref == NULL)
		return;
	h = ref->h;
	mutex_lock(&h->mu);
	dead = unref_locked(ref);
	mutex_unlock(&h->mu);
	release(h, dead);
}

void
holder_free(struct holder *h)
{
	if (h == NULL)
		return;
	release(h, unref_locked(h->cur));
	mutex_destroy(&h->mu);
	free(h);
}
