/*
 * server.h - what the acceptor, the worker pool, the waiter and the
 * sessions share.
 *
 * `struct server` is built by main before any thread starts and is
 * read-only afterwards, except for the atomic counters and what the
 * holders hold: SIGHUP swaps the configuration, the certificates and the
 * users whole, and each session keeps the versions it started with.
 *
 * A session is always in exactly one of three places (invariant):
 *   running   on a worker thread, which alone touches it;
 *   queued    in the pool's run queue (pool.c), waiting for a worker;
 *   parked    in the waiter's epoll set (waiter.c), waiting for input,
 *             for its output to drain, or for a deadline.
 * It moves between them only through pool_submit and waiter_park, each
 * under its owner's lock, so a session is never touched by two threads at
 * once.  Its `struct sess_wait` says what it waits for.
 */
#ifndef SLUICE_SERVER_H
#define SLUICE_SERVER_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "anvil.h"
#include "config.h"
#include "holder.h"
#include "queue.h"

struct waiter;

struct server {
	struct holder *config; /* struct config *, swapped on SIGHUP */
	struct queue *queue;
	int stop_fd; /* readable once shutdown began: idle sessions end */
	int kill_fd; /* readable once the grace period ended: all end */
	struct holder *tls;  /* struct tls_creds *, swapped on SIGHUP */
	struct holder *auth; /* struct auth_table *, NULL without AUTH */
	struct holder *dkim; /* struct dkim_keys *, swapped on SIGHUP */
	struct anvil *anvil; /* per-client counts and rates */
	struct waiter *waiter;
	atomic_long sessions; /* sessions open (running, queued or parked) */
	atomic_long messages_accepted;
	atomic_bool stress; /* stress mode: see listener.c */
};

/* Why a session runs now. */
enum sess_event {
	EV_START,   /* a new connection: greet it */
	EV_READY,   /* what it waited for is ready */
	EV_TIMEOUT, /* its deadline passed */
	EV_STOP,    /* shutdown ends it */
};

/* Which stage of shutdown ends a waiting session. */
enum sess_stop {
	STOP_EARLY = 1, /* at stop_fd: idle, outside a transaction */
	STOP_LATE = 2,  /* at kill_fd: inside a transaction (grace) */
};

/*
 * What a session waits for, and its place in the pool or the waiter: a
 * record embedded in the session.  The session fills the first group before
 * it is parked; the rest belongs to whoever holds the session.
 */
struct sess_wait {
	struct session *s;
	int fd;
	short events;     /* POLLIN or POLLOUT; 0: only the deadline */
	int64_t deadline; /* now_ms() value */
	int64_t since;    /* when the wait began */
	enum sess_stop stop;
	bool trusted; /* served first; never given stress timeouts */
	bool idle;    /* waiting for a command outside a transaction, a TLS
	               * handshake or a SASL line: stress shortens it */
	/* The hand-over: why it runs next (set by whoever hands it on). */
	enum sess_event ev;
	/* The waiter's, under its lock. */
	size_t heap_pos;
	bool parked;
	bool registered; /* fd is in the epoll set (maybe disarmed) */
	/* The pool's, under its lock. */
	struct sess_wait *next;
};

struct session;

/*
 * Count a client in srv->anvil when its limits allow another connection
 * (max_connections_per_ip, max_connection_rate; a trusted client is only
 * counted).  False when not: the refusal is logged under `who` and
 * counted, and `text` (len octets) holds its 421 reply with CRLF.  By the
 * acceptor (listener.c), and by a session once a PROXY header named its
 * client.
 */
bool client_admit(struct server *srv, const struct config *cfg,
    const struct anvil_key *key, bool trusted, const char *ip, const char *who,
    char *text, size_t len);

/*
 * A new session on the accepted descriptor `fd` (taken over), from `peer`,
 * on listener `la`, for client `key` (counted in srv->anvil by the caller:
 * the session releases it when it ends).  No I/O: the first session_run
 * (EV_START) greets the client.  Called by the acceptor.
 */
struct session *session_new(struct server *srv, int fd,
    const struct sockaddr_storage *peer, const struct listen_addr *la,
    bool trusted, const struct anvil_key *key);

/* The session's wait record. */
struct sess_wait *session_wait(struct session *s);

/*
 * Run the session on the calling worker until it must wait: then its wait
 * record says for what, and it returns true.  When the session has ended,
 * everything it held is released (the descriptor closed, the client's
 * count in anvil dropped) and it returns false.
 */
bool session_run(struct session *s, enum sess_event ev);

/* Release the memory an idle session does not need (before parking). */
void session_shrink(struct session *s);

#endif
