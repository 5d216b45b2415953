/*
 * listener.c - the acceptor thread (see listener.h).
 *
 * Threads: the acceptor thread owns the listening sockets while it runs;
 * the main thread stops it through `wake` (a pipe) and joins it, also to
 * change the set of sockets on reload, then starts a new one.
 */
#include "listener.h"
#include "anvil.h"
#include "cidr.h"
#include "holder.h"
#include "log.h"
#include "metrics.h"
#include "util.h"
#include "waiter.h"

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

struct lsock {
	int fd;
	struct listen_addr la;
};

struct listener {
	struct server *srv;
	struct pool *pool;
	struct lsock *socks;
	int nsocks;
	int wake[2];
	pthread_t thread;
	bool started;
};

/* Bind and listen on one address; -1 with `why`. */
static int
open_one(const struct listen_addr *la, char *why)
{
	int one = 1;
	int fd = socket(
	    la->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

	if (fd < 0) {
		why_set(why, "socket for %s: %s", la->text, strerror(errno));
		return -1;
	}
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (la->ss.ss_family == AF_INET6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
	if (bind(fd, (const struct sockaddr *)&la->ss, la->sslen) != 0 ||
	    listen(fd, LISTEN_BACKLOG) != 0) {
		why_set(
		    why, "cannot listen on %s: %s", la->text, strerror(errno));
		close(fd);
		return -1;
	}
	return fd;
}

struct listener *
listener_open(struct server *srv, const struct config *cfg, char *why)
{
	struct listener *l = xcalloc(1, sizeof(*l));
	int i;

	l->srv = srv;
	l->wake[0] = l->wake[1] = -1;
	l->socks = xcalloc((size_t)cfg->nlisten, sizeof(*l->socks));
	for (i = 0; i < cfg->nlisten; i++) {
		int fd = open_one(&cfg->listen[i], why);

		if (fd < 0)
			goto fail;
		l->socks[l->nsocks].fd = fd;
		l->socks[l->nsocks].la = cfg->listen[i];
		l->nsocks++;
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

bool
client_admit(struct server *srv, const struct config *cfg,
    const struct anvil_key *key, bool trusted, const char *ip, const char *who,
    char *text, size_t len)
{
	char client[80];
	enum anvil_verdict v;
	int count;

	/* Clients in relay_networks are exempt, as Postfix's mynetworks,
	 * but counted all the same. */
	v = anvil_connect(srv->anvil, key,
	    trusted ? 0 : cfg->max_connections_per_ip,
	    trusted ? 0 : cfg->max_connection_rate,
	    (int64_t)cfg->client_rate_time_unit * 1000, now_ms(), &count);
	if (v == ANVIL_OK)
		return true;
	anvil_key_text(key, cfg->client_ipv4_prefix, cfg->client_ipv6_prefix,
	    client, sizeof(client));
	if (v == ANVIL_TOO_MANY) {
		metrics_inc(M_REJECT_PER_IP);
		log_info(who,
		    "reject: client=[%s]: too many connections from %s (%d "
		    "open, max_connections_per_ip)",
		    ip, client, count);
		snprintf(text, len,
		    "421 4.7.0 %s Error: too many connections from %s\r\n",
		    cfg->hostname, client);
	} else {
		metrics_inc(M_REJECT_RATE);
		log_info(who,
		    "reject: client=[%s]: %d connections from %s in %ds "
		    "(max_connection_rate)",
		    ip, count, client, cfg->client_rate_time_unit);
		snprintf(text, len,
		    "421 4.7.0 %s Error: too many connections from %s; try "
		    "again in a minute\r\n",
		    cfg->hostname, client);
	}
	return false;
}

/*
 * Admission: may a new connection from this client be served?  When not,
 * it is refused with a 421 and its reason logged and counted.  A client is
 * counted in anvil (open connections, rate) when it is admitted.
 */
static bool
admit(struct listener *l, const struct config *cfg, int fd, bool trusted,
    const struct anvil_key *key, const char *ip, bool proxied)
{
	struct server *srv = l->srv;
	char text[256];

	if (!trusted && atomic_load(&srv->sessions) >= cfg->max_connections) {
		metrics_inc(M_REJECT_MAX_CONN);
		log_warn("acceptor",
		    "reject: client=[%s]: %d connections open "
		    "(max_connections)",
		    ip, cfg->max_connections);
		snprintf(text, sizeof(text),
		    "421 4.3.2 %s Error: too many connections; try again "
		    "later\r\n",
		    cfg->hostname);
		refuse(fd, text);
		return false;
	}
	/* Behind a balancer, the client's address comes in the PROXY
	 * header: admitted by the session (client_admit). */
	if (!proxied && !client_admit(srv, cfg, key, trusted, ip, "acceptor",
	                    text, sizeof(text))) {
		refuse(fd, text);
		return false;
	}
	if (!trusted && !pool_has_room(l->pool)) {
		anvil_disconnect(srv->anvil, key, now_ms());
		metrics_inc(M_REJECT_OVERLOAD);
		log_warn("acceptor",
		    "reject: client=[%s]: all %d workers busy and %d "
		    "sessions waiting for one",
		    ip, cfg->workers, pool_queued(l->pool));
		snprintf(text, sizeof(text),
		    "421 4.3.2 %s Service busy; try again later\r\n",
		    cfg->hostname);
		refuse(fd, text);
		return false;
	}
	return true;
}

/* Accept one connection; false when there was none to take. */
static bool
accept_one(struct listener *l, const struct config *cfg, int lfd,
    const struct listen_addr *la)
{
	struct sockaddr_storage peer;
	socklen_t peerlen = sizeof(peer);
	struct anvil_key key;
	struct session *s;
	char ip[64];
	bool trusted;
	int fd, one = 1;

	memset(&peer, 0, sizeof(peer));
	fd = accept4(lfd, (struct sockaddr *)&peer, &peerlen, SOCK_CLOEXEC);
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
	sockaddr_ntop((struct sockaddr *)&peer, ip, sizeof(ip));
	trusted = cidr_match(cfg->relay_networks, cfg->nrelay_networks,
	    (struct sockaddr *)&peer);
	metrics_inc(M_CONNECTIONS);
	anvil_key((struct sockaddr *)&peer, cfg->client_ipv4_prefix,
	    cfg->client_ipv6_prefix, &key);
	if (la->proxy) {
		/* Only a balancer of proxy_networks may connect here; the
		 * client it speaks for is known once its header is read. */
		if (!cidr_match(cfg->proxy_networks, cfg->nproxy_networks,
		        (struct sockaddr *)&peer)) {
			char text[256];

			metrics_inc(M_REJECT_PROXY);
			log_warn("acceptor",
			    "reject: client=[%s]: not in proxy_networks "
			    "(listener %s)",
			    ip, la->text);
			snprintf(text, sizeof(text),
			    "421 4.7.0 %s Error: not a trusted proxy\r\n",
			    cfg->hostname);
			refuse(fd, text);
			return true;
		}
		trusted = false;
	}
	if (!admit(l, cfg, fd, trusted, &key, ip, la->proxy))
		return true;
	s = session_new(l->srv, fd, &peer, la, trusted, &key);
	pool_submit(l->pool, session_wait(s), EV_START);
	(void)waiter_stress_check(l->srv->waiter, cfg);
	return true;
}

static void *
acceptor_main(void *arg)
{
	struct listener *l = arg;
	struct pollfd *p = xcalloc((size_t)l->nsocks + 1, sizeof(*p));
	int i, n = l->nsocks;

	for (i = 0; i < n; i++) {
		p[i].fd = l->socks[i].fd;
		p[i].events = POLLIN;
	}
	p[n].fd = l->wake[0];
	p[n].events = POLLIN;
	for (;;) {
		const struct config *cfg;
		struct held *ref;

		if (poll(p, (nfds_t)n + 1, -1) < 0) {
			if (errno == EINTR)
				continue;
			log_err("acceptor", "poll: %s", strerror(errno));
			break;
		}
		if (p[n].revents != 0)
			break;
		/* The limits of the configuration current now. */
		cfg = holder_get(l->srv->config, &ref);
		for (i = 0; i < n; i++) {
			int k;

			/* Drain a burst, but let other listeners take turns. */
			if (!(p[i].revents & POLLIN))
				continue;
			for (k = 0; k < 64; k++)
				if (!accept_one(l, cfg, l->socks[i].fd,
				        &l->socks[i].la))
					break;
		}
		holder_put(ref);
	}
	free(p);
	return NULL;
}

static int
start_thread(struct listener *l, char *why)
{
	char c;

	while (read(l->wake[0], &c, 1) == 1)
		; /* a stale wake-up from the last stop */
	if (pthread_create(&l->thread, NULL, acceptor_main, l) != 0) {
		why_set(why, "cannot start the acceptor thread");
		return -1;
	}
	l->started = true;
	return 0;
}

static void
stop_thread(struct listener *l)
{
	if (!l->started)
		return;
	(void)!write(l->wake[1], "x", 1);
	pthread_join(l->thread, NULL);
	l->started = false;
}

static bool
same_addr(const struct listen_addr *a, const struct listen_addr *b)
{
	return a->kind == b->kind && a->sslen == b->sslen &&
	       memcmp(&a->ss, &b->ss, a->sslen) == 0;
}

int
listener_reload(struct listener *l, const struct config *cfg)
{
	struct lsock *next = xcalloc((size_t)cfg->nlisten, sizeof(*next));
	char why[WHY_MAX];
	int i, j, n = 0, failed = 0;

	stop_thread(l);
	for (i = 0; i < cfg->nlisten; i++) {
		const struct listen_addr *la = &cfg->listen[i];

		for (j = 0; j < l->nsocks; j++)
			if (l->socks[j].fd >= 0 &&
			    same_addr(&l->socks[j].la, la))
				break;
		if (j < l->nsocks) { /* unchanged: keep it, backlog and all */
			next[n].fd = l->socks[j].fd;
			l->socks[j].fd = -1;
		} else if ((next[n].fd = open_one(la, why)) < 0) {
			log_err("main", "SIGHUP: %s", why);
			failed++;
			continue;
		} else {
			log_info("main", "SIGHUP: listening on %s", la->text);
		}
		next[n].la = *la;
		n++;
	}
	for (j = 0; j < l->nsocks; j++) {
		if (l->socks[j].fd < 0)
			continue;
		log_info("main", "SIGHUP: no longer listening on %s",
		    l->socks[j].la.text);
		close(l->socks[j].fd);
	}
	free(l->socks);
	l->socks = next;
	l->nsocks = n;
	if (l->pool != NULL && start_thread(l, why) != 0) {
		log_err("main", "SIGHUP: %s", why);
		failed++;
	}
	return failed;
}

int
listener_start(struct listener *l, struct pool *pool, char *why)
{
	l->pool = pool;
	return start_thread(l, why);
}

void
listener_stop(struct listener *l)
{
	int i;

	if (l == NULL)
		return;
	stop_thread(l);
	for (i = 0; i < l->nsocks; i++)
		close(l->socks[i].fd);
	if (l->wake[0] >= 0)
		close(l->wake[0]);
	if (l->wake[1] >= 0)
		close(l->wake[1]);
	free(l->socks);
	free(l);
}
