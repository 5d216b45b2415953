/*
 * pool.h - the worker pool: `workers` threads running sessions from a run
 * queue.  A worker runs a session while it has something to do; when the
 * session must wait, the worker watches it a little longer (the park
 * grace, while no other session waits for a worker), then parks it in the
 * waiter (waiter.h) and takes the next one.  So a session costs a thread
 * only while it works, and idle clients cannot exhaust the pool.
 *
 * The run queue has two lanes: sessions of trusted clients (relay_networks)
 * are always taken first.
 *
 * Threads: pool_submit_new from the acceptor; pool_resume from the waiter
 * (and workers); pool_new / pool_join from the main thread.
 */
#ifndef SLUICE_POOL_H
#define SLUICE_POOL_H

#include <stdbool.h>

#include "server.h"

struct pool;

/*
 * Start `nworkers` threads.  A new connection is refused (pool_submit_new
 * returns false) while `max_queued` or more sessions wait for a worker.
 * NULL with `why` when threads cannot be created.
 */
struct pool *pool_new(
    struct server *srv, int nworkers, int max_queued, char *why);

/*
 * True while a new session may be queued: fewer than `max_queued` sessions
 * wait for a worker (otherwise the acceptor refuses the client with 421).
 */
bool pool_has_room(struct pool *p);

/*
 * Queue a session to run with `ev`.  Never fails: a session handed over is
 * always run, trusted clients' first.
 */
void pool_submit(struct pool *p, struct sess_wait *w, enum sess_event ev);

/* Sessions waiting for a worker. */
int pool_queued(struct pool *p);

/*
 * Stop: wait until the run queue is empty and every worker is idle, then
 * stop the workers and free the pool.  The caller makes sure nothing is
 * submitted any more (the acceptor and the waiter are stopped first).
 */
void pool_join(struct pool *p);

#endif
