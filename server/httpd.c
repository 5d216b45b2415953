/*
 * httpd.c - the metrics endpoint (see httpd.h): libmicrohttpd with its
 * internal polling thread on metrics_listen.
 *
 *   GET /metrics  200, the Prometheus text format 0.0.4 (metrics_render)
 *   GET /         200, a short text page pointing at /metrics
 *   other paths   404;  other methods on these paths: 405 (HEAD is GET)
 *
 * Threads: httpd_start and httpd_stop run on the main thread.  Between
 * them, MHD's internal polling thread is the only thread that enters the
 * request handler, and so the only user of `h->store` (a read-only SQLite
 * connection opened lazily at the first scrape, closed and reopened after
 * a failure) and of `h->queue_was_up`; httpd_stop closes the connection
 * only after MHD_stop_daemon has joined that thread.  `h->started` tells
 * the MHD logger whether httpd_start is still waiting (it then keeps the
 * message for `why`) or the daemon runs (it logs the message).
 *
 * One slow or idle client cannot pin the endpoint: connections are capped
 * in total and per address and time out after HTTPD_TIMEOUT seconds idle.
 * The queue connection only reads (WAL): it never holds up the writer.
 * epoll (MHD_USE_AUTO) rather than select, since the relay's descriptors
 * can number more than FD_SETSIZE.
 */
#include "httpd.h"
#include "store.h"
#include "log.h"
#include "metrics.h"
#include "util.h"
#include "waiter.h"
#include "version.h"

#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define HTTPD_MAX_CONNECTIONS 32
#define HTTPD_MAX_PER_IP 4
#define HTTPD_TIMEOUT 10 /* seconds */

#define CT_METRICS "text/plain; version=0.0.4; charset=utf-8"
#define CT_TEXT "text/plain; charset=utf-8"

struct httpd {
	struct MHD_Daemon *d;
	char *queue_path; /* a copy: a reload frees the config */
	struct server *srv;
	char addr[300];      /* metrics_listen as text, for messages */
	struct store *store; /* MHD thread only */
	bool queue_was_up;   /* MHD thread only: log changes once */
	atomic_bool started;
	char start_err[WHY_MAX]; /* main thread, before `started` */
};

/* MHD's error log: kept for `why` while starting, logged afterwards. */
static void
mhd_logger(void *cls, const char *fmt, va_list ap)
{
	struct httpd *h = cls;
	char msg[WHY_MAX];
	size_t n;

	vsnprintf(msg, sizeof(msg), fmt, ap);
	n = strlen(msg);
	while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
		msg[--n] = '\0';
	if (atomic_load(&h->started))
		log_warn("httpd", "%s: %s", h->addr, msg);
	else
		why_set(h->start_err, "%s", msg);
}

/* Read the queue gauges; false when the queue could not be read. */
static bool
read_queue(struct httpd *h, struct metrics_gauges *g)
{
	struct store_counts c;
	char why[WHY_MAX];
	int64_t now;

	if (h->store == NULL)
		h->store = store_open_readonly(h->queue_path, why);
	if (h->store != NULL &&
	    store_queue_counts(h->store, &c, why) != RES_OK) {
		/* Start afresh next time (the file may have been replaced). */
		store_close(h->store);
		h->store = NULL;
	}
	if (h->store == NULL) {
		if (h->queue_was_up)
			log_warn(
			    "httpd", "metrics: cannot read the queue: %s", why);
		h->queue_was_up = false;
		return false;
	}
	if (!h->queue_was_up) {
		char shown[512];

		store_path_shown(h->queue_path, shown, sizeof(shown));
		log_info("httpd", "metrics: reading the queue %s", shown);
	}
	h->queue_was_up = true;
	g->queue_queued = c.queued;
	g->queue_deferred = c.deferred;
	g->queue_held = c.held;
	g->queue_delivered = c.delivered;
	g->queue_bounced = c.bounced;
	now = (int64_t)time(NULL);
	if (c.oldest_pending > 0 && c.oldest_pending < now)
		g->oldest_age_seconds = now - c.oldest_pending;
	return true;
}

static enum MHD_Result
reply(struct MHD_Connection *conn, unsigned status, const char *ctype,
    char *body, size_t len)
{
	struct MHD_Response *r;
	enum MHD_Result ret;

	r = MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
	if (r == NULL) {
		free(body);
		return MHD_NO;
	}
	MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
	if (status == MHD_HTTP_METHOD_NOT_ALLOWED)
		MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
	ret = MHD_queue_response(conn, status, r);
	MHD_destroy_response(r);
	return ret;
}

static enum MHD_Result
reply_text(struct MHD_Connection *conn, unsigned status, const char *text)
{
	return reply(conn, status, CT_TEXT, xstrdup(text), strlen(text));
}

static enum MHD_Result
serve_metrics(struct httpd *h, struct MHD_Connection *conn)
{
	struct metrics_gauges g;
	char *body;
	size_t len;

	memset(&g, 0, sizeof(g));
	g.sessions_active = atomic_load(&h->srv->sessions);
	g.sessions_parked =
	    h->srv->waiter != NULL ? waiter_parked(h->srv->waiter) : 0;
	g.stress = atomic_load(&h->srv->stress) ? 1 : 0;
	g.have_queue = read_queue(h, &g);
	body = metrics_render(&g, &len);
	return reply(conn, MHD_HTTP_OK, CT_METRICS, body, len);
}

/* MHD's request handler; runs on the MHD polling thread only. */
static enum MHD_Result
handle(void *cls, struct MHD_Connection *conn, const char *url,
    const char *method, const char *version, const char *upload_data,
    size_t *upload_data_size, void **con_cls)
{
	struct httpd *h = cls;
	bool get;

	(void)version;
	(void)upload_data;
	(void)con_cls;
	/* Any request body is never read: the reply closes the connection. */
	(void)upload_data_size;
	get = strcmp(method, MHD_HTTP_METHOD_GET) == 0 ||
	      strcmp(method, MHD_HTTP_METHOD_HEAD) == 0;
	if (strcmp(url, "/metrics") != 0 && strcmp(url, "/") != 0)
		return reply_text(conn, MHD_HTTP_NOT_FOUND,
		    "Not found.  The metrics are at /metrics.\n");
	if (!get)
		return reply_text(conn, MHD_HTTP_METHOD_NOT_ALLOWED,
		    "Method not allowed: use GET.\n");
	if (strcmp(url, "/") == 0)
		return reply_text(conn, MHD_HTTP_OK,
		    "sluice " SLUICE_VERSION "\n"
		    "Prometheus metrics: /metrics\n");
	return serve_metrics(h, conn);
}

/*
 * metrics_listen as a socket address.  The configuration has checked that
 * it is a numeric IP address with a port (T_IPPORT), so inet_pton cannot
 * normally fail: -1 only if it does.
 */
static int
sock_addr(const struct hostport *hp, struct sockaddr_storage *ss)
{
	struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;

	memset(ss, 0, sizeof(*ss));
	if (inet_pton(AF_INET, hp->host, &s4->sin_addr) == 1) {
		s4->sin_family = AF_INET;
		s4->sin_port = htons((uint16_t)hp->port);
	} else if (inet_pton(AF_INET6, hp->host, &s6->sin6_addr) == 1) {
		s6->sin6_family = AF_INET6;
		s6->sin6_port = htons((uint16_t)hp->port);
	} else {
		return -1;
	}
	return 0;
}

/* "Failed to bind to port 9100: Address already in use" -> the reason. */
static const char *
mhd_reason(const char *msg)
{
	const char *p = strrchr(msg, ':');

	if (strncmp(msg, "Failed to bind", 14) == 0 && p != NULL && p[1] == ' ')
		return p + 2;
	return msg[0] != '\0' ? msg : "cannot start the HTTP server";
}

struct httpd *
httpd_start(const struct config *cfg, struct server *srv, char *why)
{
	const struct hostport *hp = &cfg->metrics_listen;
	struct httpd *h = xcalloc(1, sizeof(*h));
	struct sockaddr_storage ss;
	unsigned flags =
	    MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_AUTO | MHD_USE_ERROR_LOG;

	h->queue_path = xstrdup(cfg->queue_path);
	h->srv = srv;
	h->queue_was_up = true; /* so that a first failure is logged */
	atomic_init(&h->started, false);
	if (strchr(hp->host, ':') != NULL)
		snprintf(
		    h->addr, sizeof(h->addr), "[%s]:%d", hp->host, hp->port);
	else
		snprintf(h->addr, sizeof(h->addr), "%s:%d", hp->host, hp->port);
	if (sock_addr(hp, &ss) != 0) {
		why_set(why, "metrics_listen %s: not an IP address and port",
		    h->addr);
		goto fail;
	}
	if (ss.ss_family == AF_INET6)
		flags |= MHD_USE_IPv6;
	h->d = MHD_start_daemon(flags, (uint16_t)hp->port, NULL, NULL, handle,
	    h, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
	    MHD_OPTION_EXTERNAL_LOGGER, mhd_logger, h,
	    MHD_OPTION_CONNECTION_LIMIT, (unsigned)HTTPD_MAX_CONNECTIONS,
	    MHD_OPTION_PER_IP_CONNECTION_LIMIT, (unsigned)HTTPD_MAX_PER_IP,
	    MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)HTTPD_TIMEOUT,
	    MHD_OPTION_END);
	if (h->d == NULL) {
		why_set(why, "metrics_listen %s: %s", h->addr,
		    mhd_reason(h->start_err));
		goto fail;
	}
	atomic_store(&h->started, true);
	log_info("httpd", "metrics at http://%s/metrics", h->addr);
	return h;
fail:
	free(h->queue_path);
	free(h);
	return NULL;
}

void
httpd_stop(struct httpd *h)
{
	if (h == NULL)
		return;
	MHD_stop_daemon(h->d);
	store_close(h->store);
	free(h->queue_path);
	free(h);
}
