/*
 * conncache.c - the connection a delivery thread keeps for its next
 * message to the same site (see conncache.h).
 */
#include "conncache.h"

#include <stdio.h>
#include <string.h>

#define REUSE_AT_ONCE_MS 1000 /* within this, no RSET before reuse */

void
held_conn_init(struct held_conn *h)
{
	memset(h, 0, sizeof(*h));
	snprintf(h->peer.relay, sizeof(h->peer.relay), "none");
}

void
held_conn_close(struct held_conn *h)
{
	smtpc_close(h->c);
	held_conn_init(h);
}

bool
conncache_take(
    struct conncache *k, const char *dest, int64_t now, struct held_conn *h)
{
	if (k->kept.c == NULL)
		return false;
	if (strcmp(k->dest, dest) != 0 ||
	    (now - k->since >= REUSE_AT_ONCE_MS &&
	        smtpc_reset(k->kept.c) != RES_OK)) {
		conncache_drop(k);
		return false;
	}
	*h = k->kept;
	held_conn_init(&k->kept);
	k->dest[0] = '\0';
	return true;
}

void
conncache_put(struct conncache *k, struct held_conn *h, const char *dest,
    int max_uses, int64_t now)
{
	conncache_drop(k);
	if (h->c == NULL)
		return;
	if (++h->uses >= max_uses) {
		held_conn_close(h);
		return;
	}
	k->kept = *h;
	snprintf(k->dest, sizeof(k->dest), "%s", dest);
	k->since = now;
	held_conn_init(h);
}

int64_t
conncache_expiry(const struct conncache *k)
{
	return k->kept.c != NULL ? k->since + CONNCACHE_IDLE_MS : -1;
}

void
conncache_drop(struct conncache *k)
{
	held_conn_close(&k->kept);
	k->dest[0] = '\0';
}
