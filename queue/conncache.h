/*
 * conncache.h - the SMTP connection a delivery thread keeps open after a
 * message, for its next message to the same site (up to
 * max_messages_per_connection), and what that connection goes to.
 *
 * Threads: each delivery thread has its own cache and uses it alone.
 */
#ifndef SLUICE_CONNCACHE_H
#define SLUICE_CONNCACHE_H

#include "dests.h"
#include "dns.h"
#include "smtpc.h"

#include <stdbool.h>
#include <stdint.h>

/* Close a connection kept idle this long (ms). */
#define CONNCACHE_IDLE_MS 5000

/* Where a connection goes, for the records and logs of its messages. */
struct conn_peer {
	char mx[DNS_NAME_MAX]; /* the host's name; "" when none */
	char ip[64];
	int port;
	char relay[DNS_NAME_MAX + 80]; /* "mx[ip]:port", or "none" */
	char security_why[128]; /* why its TLS level (DANE's plan), or "" */
};

/* A connection in hand, and how many messages it has carried. */
struct held_conn {
	struct smtpc *c; /* NULL: none */
	struct conn_peer peer;
	int uses;
};

struct conncache {
	struct held_conn kept;          /* kept.c NULL: nothing kept */
	char dest[DESTS_KEY_MAX + 256]; /* the site it goes to, and its TLS
	                                  level (conncache_take's key) */
	int64_t since;                  /* now_ms() of its last use */
};

/* No connection, peer "none". */
void held_conn_init(struct held_conn *h);

/* QUIT and close h's connection; h is left empty (held_conn_init). */
void held_conn_close(struct held_conn *h);

/*
 * Take the kept connection into *h when it goes to `dest`: as it is right
 * after its last message (within a second: the server is ready for MAIL,
 * RFC 5321 section 4.1.4), after an RSET that checks it is still there
 * otherwise.  False when there is none for `dest` or the RSET failed;
 * either way nothing is kept afterwards (another site's connection is
 * closed).
 */
bool conncache_take(
    struct conncache *k, const char *dest, int64_t now, struct held_conn *h);

/*
 * After a message that left h's connection usable: keep it for the next
 * message to `dest` when it has carried fewer than `max_uses`, else
 * close it.  *h is left empty.
 */
void conncache_put(struct conncache *k, struct held_conn *h, const char *dest,
    int max_uses, int64_t now);

/* When the kept connection has been idle too long, or -1: none kept. */
int64_t conncache_expiry(const struct conncache *k);

/* Close the kept connection, if any. */
void conncache_drop(struct conncache *k);

#endif
