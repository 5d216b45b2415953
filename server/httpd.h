/*
 * httpd.h - the metrics endpoint: GET /metrics over HTTP on
 * metrics_listen (libmicrohttpd, its own thread).  See docs/metrics.md.
 *
 * Threads: httpd_start and httpd_stop are called by the main thread (at
 * start, at SIGHUP, at shutdown); requests are served on libmicrohttpd's
 * own polling thread, which reads the queue on its own read-only
 * connection.
 */
#ifndef SLUICE_HTTPD_H
#define SLUICE_HTTPD_H

#include "config.h"
#include "server.h"

struct httpd;

/*
 * Serve metrics on `cfg->metrics_listen` (the caller checks it is set):
 * a numeric IPv4 or IPv6 address and a port; a host name or a missing
 * port is an error.  `cfg` is only read during the call (queue_path is
 * copied); `srv` must outlive the httpd.  Queue gauges are read from
 * queue_path on a read-only connection at each scrape; sessions_active
 * from srv->sessions.  NULL + why ("metrics_listen 127.0.0.1:9100:
 * Address already in use").
 */
struct httpd *httpd_start(
    const struct config *cfg, struct server *srv, char *why);

/* Stop serving (waits for the thread) and free everything; NULL: no-op. */
void httpd_stop(struct httpd *h);

#endif
