/*
 * listener.h - the acceptor: one thread polls every listening socket,
 * accepts, admits (max_connections for untrusted clients; per client, as
 * anvil.h counts them: max_connections_per_ip and max_connection_rate; a
 * run queue with room) and hands each new session to the worker pool.  A
 * client that cannot be served gets a 421 and is closed at once, never
 * left waiting.
 *
 * Threads: listener_open / listener_start / listener_stop from the main
 * thread; the acceptor thread is internal.
 */
#ifndef SLUICE_LISTENER_H
#define SLUICE_LISTENER_H

#include "pool.h"
#include "server.h"

struct listener;

/*
 * Bind and listen on every configured address (before serving starts: a
 * failure here is fatal).  NULL with `why`.
 */
struct listener *listener_open(
    struct server *srv, const struct config *cfg, char *why);

/* Start accepting into `pool`. */
int listener_start(struct listener *l, struct pool *pool, char *why);

/*
 * SIGHUP: listen on `cfg`'s addresses.  Sockets whose address and kind did
 * not change stay open (pending connections are kept); new ones are
 * opened, removed ones closed.  Addresses that cannot be opened are
 * logged and left out; returns how many.  Main thread only.
 */
int listener_reload(struct listener *l, const struct config *cfg);

/* Stop accepting, close the listening sockets, join the thread, free. */
void listener_stop(struct listener *l);

#endif
