/*
 * httpd.h - the metrics endpoint: GET /metrics over HTTP on
 * metrics_listen (libmicrohttpd, its own thread).
 */
#ifndef SLUICE_HTTPD_H
#define SLUICE_HTTPD_H

#include "config.h"
#include "server.h"

struct httpd;

/*
 * Serve metrics on `cfg->metrics_listen` (the caller checks it is set).
 * Queue gauges are read from `cfg->queue_path` on a read-only connection
 * at each scrape; sessions_active from srv->sessions.  NULL + why.
 */
struct httpd *httpd_start(const struct config *cfg, struct server *srv,
    char *why);
void httpd_stop(struct httpd *h);

#endif
