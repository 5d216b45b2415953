/*
 * pool.h - the worker pool: `workers` threads serving a bounded job queue
 * of accepted connections.  Each worker runs one session to its end.
 *
 * Threads: pool_submit from the acceptor thread; pool_new / pool_join from
 * the main thread.
 */
#ifndef SLUICE_POOL_H
#define SLUICE_POOL_H

#include <stdbool.h>

#include "server.h"

struct pool;
struct ipcount;

/*
 * Start `nworkers` threads and a job queue of `qcap` entries.  When a
 * session ends, its client's connection count in `ipc` is released.
 * NULL with `why` when threads cannot be created.
 */
struct pool *pool_new(
    struct server *srv, struct ipcount *ipc, int nworkers, int qcap, char *why);

/*
 * Queue a connection.  False when every worker is busy and the queue is
 * full: the caller refuses the client.  On success the job is copied.
 */
bool pool_submit(struct pool *p, const struct job *job);

/* Number of sessions running or queued. */
int pool_busy(struct pool *p);

/* Finish queued jobs, stop the workers, wait for them, free the pool. */
void pool_join(struct pool *p);

/*
 * Per-client connection counts for max_connections_per_ip.  Thread-safe
 * (a mutex inside).  acquire returns false when the client is at `limit`
 * already (limit 0: no limit); every successful acquire is followed by one
 * release.
 */
struct ipcount *ipcount_new(void);
void ipcount_free(struct ipcount *ic);
bool ipcount_acquire(struct ipcount *ic, const struct sockaddr *sa, int limit);
void ipcount_release(struct ipcount *ic, const struct sockaddr *sa);

#endif
