/*
 * listener.c - the acceptor thread (see listener.h).
 *
 * Threads: the acceptor thread owns the listening sockets once started;
 * the main thread stops it through `wake` (a pipe) and joins it.
 */
#include "listener.h"
#include "cidr.h"
#include "log.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/*
 * A large backlog: with a small one, bursts of reconnecting clients stall
 * on SYN retransmits (the kernel caps it at net.core.somaxconn).
 */
#define LISTEN_BACKLOG 4096

struct listener {
	struct server *srv;
	struct pool *pool;
	struct ipcount *ipc;
	int *fds;
	int nfds;
	int wake[2];
	pthread_t thread;
	bool started;
};

struct listener *
listener_open(struct server *srv, char *why)
{
	const struct config *cfg = srv->cfg;
	struct listener *l = xcalloc(1, sizeof(*l));
	int i, one = 1;

	l->srv = srv;
	l->wake[0] = l->wake[1] = -1;
	l->fds = xcalloc((size_t)cfg->nlisten, sizeof(int));
	for (i = 0; i < cfg->nlisten; i++) {
		const struct listen_addr *la = &cfg->listen[i];
		int fd = socket(la->ss.ss_family,
		    SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

		if (fd < 0) {
			why_set(why, "socket for %s: %s", la->text,
			    strerror(errno));
			goto fail;
		}
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (la->ss.ss_family == AF_INET6)
			setsockopt(
			    fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
		if (bind(fd, (const struct sockaddr *)&la->ss, la->sslen) !=
		        0 ||
		    listen(fd, LISTEN_BACKLOG) != 0) {
			why_set(why, "cannot listen on %s: %s", la->text,
			    strerror(errno));
			close(fd);
			goto fail;
		}
		l->fds[l->nfds++] = fd;
	}
	if (pipe2(l->wake, O_CLOEXEC | O_NONBLOCK) != 0) {
		why_set(why, "pipe: %s", strerror(errno));
		goto fail;
	}
	return l;
fail:
	listener_stop(l);
	return NULL;
}

/* Tell a client we cannot serve it, without ever blocking. */
static void
refuse(int fd, const char *text)
{
	(void)!send(fd, text, strlen(text), MSG_NOSIGNAL | MSG_DONTWAIT);
	close(fd);
}

/* Accept one connection; false when there was none to take. */
static bool
accept_one(struct listener *l, int lfd, const struct listen_addr *la)
{
	const struct config *cfg = l->srv->cfg;
	struct job job;
	char ip[64], text[256];
	bool trusted;
	int fd, one = 1;

	memset(&job, 0, sizeof(job));
	job.peerlen = sizeof(job.peer);
	fd = accept4(
	    lfd, (struct sockaddr *)&job.peer, &job.peerlen, SOCK_CLOEXEC);
	if (fd < 0) {
		if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR &&
		    errno != ECONNABORTED) {
			log_warn("acceptor", "accept on %s: %s", la->text,
			    strerror(errno));
			/* EMFILE and friends: back off instead of spinning. */
			usleep(100 * 1000);
		}
		return false;
	}
	/* Replies are batched by the session: send each batch at once. */
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	job.fd = fd;
	job.listener = la;
	sockaddr_ntop((struct sockaddr *)&job.peer, ip, sizeof(ip));
	/* Clients in relay_networks are exempt, as Postfix's mynetworks. */
	trusted = cidr_match(cfg->relay_networks, cfg->nrelay_networks,
	    (struct sockaddr *)&job.peer);
	if (!ipcount_acquire(l->ipc, (struct sockaddr *)&job.peer,
	        trusted ? 0 : cfg->max_connections_per_ip)) {
		log_info("acceptor",
		    "reject: client=[%s]: too many "
		    "connections from this address (%d)",
		    ip, cfg->max_connections_per_ip);
		snprintf(text, sizeof(text),
		    "421 4.7.0 %s Error: too many "
		    "connections from %s\r\n",
		    cfg->hostname, ip);
		refuse(fd, text);
		return true;
	}
	if (!pool_submit(l->pool, &job)) {
		ipcount_release(l->ipc, (struct sockaddr *)&job.peer);
		log_warn("acceptor",
		    "reject: client=[%s]: all %d workers "
		    "busy and the queue is full",
		    ip, cfg->workers);
		snprintf(text, sizeof(text),
		    "421 4.3.2 %s Service busy; try "
		    "again later\r\n",
		    cfg->hostname);
		refuse(fd, text);
	}
	return true;
}

static void *
acceptor_main(void *arg)
{
	struct listener *l = arg;
	const struct config *cfg = l->srv->cfg;
	struct pollfd *p = xcalloc((size_t)l->nfds + 1, sizeof(*p));
	int i;

	for (i = 0; i < l->nfds; i++) {
		p[i].fd = l->fds[i];
		p[i].events = POLLIN;
	}
	p[l->nfds].fd = l->wake[0];
	p[l->nfds].events = POLLIN;
	for (;;) {
		if (poll(p, (nfds_t)l->nfds + 1, -1) < 0) {
			if (errno == EINTR)
				continue;
			log_err("acceptor", "poll: %s", strerror(errno));
			break;
		}
		if (p[l->nfds].revents != 0)
			break;
		for (i = 0; i < l->nfds; i++) {
			int n;

			/* Drain a burst, but let other listeners take turns. */
			if (!(p[i].revents & POLLIN))
				continue;
			for (n = 0; n < 64; n++)
				if (!accept_one(l, l->fds[i], &cfg->listen[i]))
					break;
		}
	}
	free(p);
	return NULL;
}

int
listener_start(
    struct listener *l, struct pool *pool, struct ipcount *ipc, char *why)
{
	l->pool = pool;
	l->ipc = ipc;
	if (pthread_create(&l->thread, NULL, acceptor_main, l) != 0) {
		why_set(why, "cannot start the acceptor thread");
		return -1;
	}
	l->started = true;
	return 0;
}

void
listener_stop(struct listener *l)
{
	int i;

	if (l == NULL)
		return;
	if (l->started) {
		(void)!write(l->wake[1], "x", 1);
		pthread_join(l->thread, NULL);
	}
	for (i = 0; i < l->nfds; i++)
		close(l->fds[i]);
	if (l->wake[0] >= 0)
		close(l->wake[0]);
	if (l->wake[1] >= 0)
		close(l->wake[1]);
	free(l->fds);
	free(l);
}
