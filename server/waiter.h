/*
 * waiter.h - where sessions wait without a thread: one epoll set and one
 * deadline heap, served by the waiter thread (the Apache httpd `event`
 * MPM's answer to idle keep-alive connections).  A parked session goes
 * back to the pool (pool_submit) when its descriptor is ready (EV_READY),
 * its deadline passes (EV_TIMEOUT), or shutdown reaches its stage
 * (EV_STOP: stop_fd for idle sessions, kill_fd for all).
 *
 * It also keeps stress mode (Postfix's stress): while open connections
 * reach stress_threshold percent of max_connections, or more sessions wait
 * for a worker than there are workers, untrusted clients waiting for a
 * command get stress_command_timeout instead of command_timeout.  Entering
 * and leaving stress is logged once and counted.
 *
 * Threads: waiter_park from any worker; the rest from the main thread
 * (waiter_parked and waiter_stress_check from any thread).
 */
#ifndef SLUICE_WAITER_H
#define SLUICE_WAITER_H

#include "pool.h"
#include "server.h"

struct waiter;

/* Start the waiter thread; NULL with `why`. */
struct waiter *waiter_new(struct server *srv, struct pool *pool, char *why);

/*
 * Park the session whose wait record is `w` (its fd, events, deadline,
 * stop stage, trusted and idle flags filled by the session).  From now on
 * the session belongs to the waiter until it is handed to the pool.
 */
void waiter_park(struct waiter *wt, struct sess_wait *w);

/* Sessions parked now. */
long waiter_parked(struct waiter *wt);

/*
 * Re-evaluate stress mode now with `cfg`'s thresholds (the acceptor calls
 * this after each accept, so that a burst starts it at once; the waiter
 * thread once a second).  Returns the mode.
 */
bool waiter_stress_check(struct waiter *wt, const struct config *cfg);

/*
 * Stop the thread, and hand the sessions still parked to the pool with
 * EV_STOP; a session parked after this is handed over at once with EV_STOP
 * too.  Then (once the pool has stopped: pool_join) free the waiter.
 */
void waiter_stop(struct waiter *wt);
void waiter_free(struct waiter *wt); /* NULL is a no-op */

#endif
