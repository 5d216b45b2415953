/*
 * server.h - what the acceptor, the worker pool and the sessions share.
 *
 * `struct server` is built by main before any thread starts and is
 * read-only afterwards, except for the atomic counters and what the
 * holders hold: SIGHUP swaps the configuration, the certificates and the
 * users whole, and each session keeps the versions it started with.
 */
#ifndef SLUICE_SERVER_H
#define SLUICE_SERVER_H

#include <stdatomic.h>
#include <sys/socket.h>

#include "config.h"
#include "holder.h"
#include "queue.h"

struct server {
	struct holder *config; /* struct config *, swapped on SIGHUP */
	struct queue *queue;
	int stop_fd; /* readable once shutdown began: idle sessions end */
	int kill_fd; /* readable once the grace period ended: all end */
	struct holder *tls;   /* struct tls_creds *, swapped on SIGHUP */
	struct holder *auth;  /* struct auth_db *, NULL without AUTH */
	atomic_long sessions; /* sessions in progress */
	atomic_long messages_accepted;
};

/* One accepted connection, handed from the acceptor to a worker. */
struct job {
	int fd;
	struct sockaddr_storage peer;
	socklen_t peerlen;
	struct listen_addr listener; /* a copy: configurations come and go */
};

/*
 * Run one ESMTP session on job->fd to its end, then close the descriptor.
 * Called by a worker thread.
 */
void session_run(struct server *srv, const struct job *job);

#endif
