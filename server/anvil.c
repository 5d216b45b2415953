/*
 * anvil.c - per-client connection counts and rates (see anvil.h).
 *
 * Shared state: the table below, guarded by a->mu.  An open-addressing
 * hash table with linear probing, at most half full; it grows by doubling
 * and is rebuilt (without the entries a sweep drops) when it reaches
 * max_clients.
 *
 * Invariants:
 *  1. An entry with open connections (conns > 0) is never dropped, so
 *     every anvil_disconnect finds the entry its anvil_connect counted in.
 *  2. At most max_clients entries are in use, and the slots are at least
 *     twice the entries.
 */
#include "anvil.h"
#include "sync.h"
#include "util.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct rate {
	int64_t start; /* the current window began here */
	int cur, prev; /* events in the current and the previous window */
};

struct client {
	struct anvil_key key;
	bool used;
	int conns;
	int64_t last; /* the last event, to age the entry out */
	struct rate conn_rate, auth_rate;
};

struct anvil {
	pthread_mutex_t mu;
	struct client *slots; /* guarded by mu */
	size_t nslots, nused; /* guarded by mu */
	size_t max;
};

#define ANVIL_MIN_SLOTS 1024

void
anvil_key(const struct sockaddr *sa, int v4_prefix, int v6_prefix,
    struct anvil_key *k)
{
	const unsigned char *addr = NULL;
	int len = 0, prefix = 0, i;

	memset(k, 0, sizeof(*k));
	if (sa->sa_family == AF_INET) {
		k->b[0] = 4;
		addr = (const unsigned char *)&((const struct sockaddr_in *)sa)
		           ->sin_addr;
		len = 4;
		prefix = v4_prefix;
	} else if (sa->sa_family == AF_INET6) {
		const struct in6_addr *a6 =
		    &((const struct sockaddr_in6 *)sa)->sin6_addr;

		/* An IPv4 client on a dual-stack socket is an IPv4 client. */
		if (IN6_IS_ADDR_V4MAPPED(a6)) {
			k->b[0] = 4;
			addr = a6->s6_addr + 12;
			len = 4;
			prefix = v4_prefix;
		} else {
			k->b[0] = 6;
			addr = a6->s6_addr;
			len = 16;
			prefix = v6_prefix;
		}
	}
	for (i = 0; i < len; i++) {
		int bits = prefix - i * 8;

		if (bits >= 8)
			k->b[1 + i] = addr[i];
		else if (bits > 0)
			k->b[1 + i] =
			    (unsigned char)(addr[i] & (0xff << (8 - bits)));
	}
}

void
anvil_key_text(const struct anvil_key *k, int v4_prefix, int v6_prefix,
    char *buf, size_t len)
{
	char ip[INET6_ADDRSTRLEN];
	int prefix = k->b[0] == 4 ? v4_prefix : v6_prefix;

	if (k->b[0] != 4 && k->b[0] != 6) {
		snprintf(buf, len, "unknown");
		return;
	}
	inet_ntop(k->b[0] == 4 ? AF_INET : AF_INET6, k->b + 1, ip, sizeof(ip));
	if (prefix == (k->b[0] == 4 ? 32 : 128))
		snprintf(buf, len, "%s", ip);
	else
		snprintf(buf, len, "%s/%d", ip, prefix);
}

struct anvil *
anvil_new(size_t max_clients)
{
	struct anvil *a = xcalloc(1, sizeof(*a));

	mutex_init(&a->mu);
	a->max = max_clients < 16 ? 16 : max_clients;
	a->nslots = ANVIL_MIN_SLOTS;
	a->slots = xcalloc(a->nslots, sizeof(*a->slots));
	return a;
}

void
anvil_free(struct anvil *a)
{
	if (a == NULL)
		return;
	mutex_destroy(&a->mu);
	free(a->slots);
	free(a);
}

static size_t
key_hash(const struct anvil_key *k)
{
	uint64_t h = 1469598103934665603ULL; /* FNV-1a */
	size_t i;

	for (i = 0; i < sizeof(k->b); i++)
		h = (h ^ k->b[i]) * 1099511628211ULL;
	return (size_t)h;
}

/* The slot holding `k`, or the free slot where it would go.  Caller holds
 * mu; the table always has a free slot (invariant 2). */
static struct client *
find(struct anvil *a, const struct anvil_key *k)
{
	size_t i = key_hash(k) & (a->nslots - 1);

	while (a->slots[i].used && memcmp(&a->slots[i].key, k, sizeof(*k)) != 0)
		i = (i + 1) & (a->nslots - 1);
	return &a->slots[i];
}

/* Roll `r` forward to `now`. */
static void
rate_roll(struct rate *r, int64_t unit, int64_t now)
{
	if (r->start == 0 || now - r->start >= 2 * unit || now < r->start) {
		r->prev = 0;
		r->cur = 0;
		r->start = now;
	} else if (now - r->start >= unit) {
		r->prev = r->cur;
		r->cur = 0;
		r->start += unit;
	}
}

/* Events in the sliding window that ends now. */
static int
rate_value(struct rate *r, int64_t unit, int64_t now)
{
	rate_roll(r, unit, now);
	return r->cur +
	       (int)((int64_t)r->prev * (unit - (now - r->start)) / unit);
}

/*
 * Rebuild the table into `nslots` slots, keeping the entries with open
 * connections or with an event since `idle_before`.  Caller holds mu.
 */
static void
rebuild(struct anvil *a, size_t nslots, int64_t idle_before)
{
	struct client *old = a->slots;
	size_t n = a->nslots, i;

	a->slots = xcalloc(nslots, sizeof(*a->slots));
	a->nslots = nslots;
	a->nused = 0;
	for (i = 0; i < n; i++) {
		if (!old[i].used)
			continue;
		if (old[i].conns == 0 && old[i].last < idle_before)
			continue;
		*find(a, &old[i].key) = old[i];
		a->nused++;
	}
	free(old);
}

/*
 * Make room for one more entry: grow while under max_clients, else drop
 * idle clients (no open connection), those idle longest first: aged out
 * (two windows), then idle for one window, then any.
 */
static void
make_room(struct anvil *a, int64_t unit, int64_t now)
{
	if (a->nused + 1 <= a->nslots / 2)
		return;
	if (a->nused + 1 <= a->max) {
		rebuild(a, a->nslots * 2, INT64_MIN);
		return;
	}
	rebuild(a, a->nslots, now - 2 * unit);
	if (a->nused + 1 > a->max * 3 / 4)
		rebuild(a, a->nslots, now - unit);
	if (a->nused + 1 > a->max * 3 / 4)
		rebuild(a, a->nslots, INT64_MAX);
}

/* The entry of `k`, made when missing; NULL when none can be made. */
static struct client *
get(struct anvil *a, const struct anvil_key *k, int64_t unit, int64_t now)
{
	struct client *c = find(a, k);

	if (c->used)
		return c;
	make_room(a, unit, now);
	if (a->nused + 1 > a->max || a->nused + 1 > a->nslots / 2)
		return NULL; /* every entry holds a connection */
	c = find(a, k);
	memset(c, 0, sizeof(*c));
	c->key = *k;
	c->used = true;
	a->nused++;
	BUG_ON(a->nused > a->max || a->nused * 2 > a->nslots); /* invariant 2 */
	return c;
}

enum anvil_verdict
anvil_connect(struct anvil *a, const struct anvil_key *k, int max_conns,
    int max_rate, int64_t unit, int64_t now, int *count)
{
	enum anvil_verdict v = ANVIL_OK;
	struct client *c;

	*count = 0;
	mutex_lock(&a->mu);
	c = get(a, k, unit, now);
	if (c != NULL) {
		int r = rate_value(&c->conn_rate, unit, now);

		c->last = now;
		if (max_conns > 0 && c->conns >= max_conns) {
			v = ANVIL_TOO_MANY;
			*count = c->conns;
		} else if (max_rate > 0 && r >= max_rate) {
			v = ANVIL_RATE;
			*count = r;
		} else {
			c->conns++;
			c->conn_rate.cur++;
			*count = c->conns;
		}
	}
	mutex_unlock(&a->mu);
	return v;
}

void
anvil_disconnect(struct anvil *a, const struct anvil_key *k, int64_t now)
{
	struct client *c;

	mutex_lock(&a->mu);
	c = find(a, k);
	if (c->used && c->conns > 0) {
		c->conns--;
		c->last = now;
	}
	mutex_unlock(&a->mu);
}

int
anvil_auth_failed(
    struct anvil *a, const struct anvil_key *k, int64_t unit, int64_t now)
{
	struct client *c;
	int r = 0;

	mutex_lock(&a->mu);
	c = get(a, k, unit, now);
	if (c != NULL) {
		rate_roll(&c->auth_rate, unit, now);
		c->auth_rate.cur++;
		c->last = now;
		r = rate_value(&c->auth_rate, unit, now);
	}
	mutex_unlock(&a->mu);
	return r;
}

int
anvil_auth_rate(
    struct anvil *a, const struct anvil_key *k, int64_t unit, int64_t now)
{
	struct client *c;
	int r = 0;

	mutex_lock(&a->mu);
	c = find(a, k);
	if (c->used)
		r = rate_value(&c->auth_rate, unit, now);
	mutex_unlock(&a->mu);
	return r;
}

size_t
anvil_size(struct anvil *a)
{
	size_t n;

	mutex_lock(&a->mu);
	n = a->nused;
	mutex_unlock(&a->mu);
	return n;
}
