/*
 * deliver.h - delivery: a dispatcher thread claims due recipients from the
 * queue (with a lease), groups the recipients of one message that share a
 * destination into one job, honours destination_concurrency per site (an
 * MX host set, the smarthost, a route's host: dests.h), defers at once the
 * mail of sites suspended after connection failures (one probe per retry
 * interval), and hands jobs to `delivery_threads` threads that resolve MX
 * hosts, deliver with the SMTP client, record every attempt, retry on the
 * schedule, and send bounces (DSN) for permanent failures and expiry.
 *
 * Threads: delivery_start / delivery_stop from the main thread only.
 */
#ifndef SLUICE_DELIVER_H
#define SLUICE_DELIVER_H

#include "config.h"
#include "dns.h"
#include "queue.h"

struct delivery;
struct delivery_conf;
struct held;

/*
 * What delivery takes from `cfg` (routes, smarthost and its password,
 * TLS client credentials, timeouts, our own names and addresses for MX
 * loop detection).  NULL with `why` (an unreadable password file, a bad
 * CA file).
 */
struct delivery_conf *delivery_conf_new(const struct config *cfg, char *why);

/* `c` holds `cfg_ref` (the reference keeping its config alive) until
 * it is freed. */
void delivery_conf_keep(struct delivery_conf *c, struct held *cfg_ref);
void delivery_conf_free(struct delivery_conf *c);

/*
 * Start the dispatcher and the delivery threads with `conf` (taken over).
 * When `stop_fd` becomes readable (the shutdown grace period is over),
 * deliveries in progress stop waiting for their peers and are deferred.
 * NULL with `why`.
 */
struct delivery *delivery_start(
    struct queue *q, struct delivery_conf *conf, int stop_fd, char *why);

/*
 * SIGHUP: jobs that start from now on use `conf` (taken over); jobs in
 * progress finish with the old one.  delivery_threads and queue_path
 * keep their values from the start.
 */
void delivery_reconfigure(struct delivery *d, struct delivery_conf *c);

/*
 * Stop claiming work, let the threads finish the jobs they hold (each
 * bounded by the client timeouts), join them and free everything.
 * Recipients still leased become due again at the next start.
 */
void delivery_stop(struct delivery *d);

#endif
