/*
 * deliver.h - delivery: a dispatcher thread claims due recipients from the
 * queue (with a lease), groups the recipients of one message that share a
 * destination into one job, honours destination_concurrency, and hands
 * jobs to `delivery_threads` threads that resolve MX hosts, deliver with
 * the SMTP client, record every attempt, retry on the schedule, and send
 * bounces (DSN) for permanent failures and expiry.
 *
 * Threads: delivery_start / delivery_stop from the main thread only.
 */
#ifndef SLUICE_DELIVER_H
#define SLUICE_DELIVER_H

#include "config.h"
#include "dns.h"
#include "queue.h"

struct delivery;

/*
 * Start the dispatcher and the delivery threads.  `self` (our hostname and
 * listen addresses, for MX loop detection) is copied.  When `stop_fd`
 * becomes readable (the shutdown grace period is over), deliveries in
 * progress stop waiting for their peers and are deferred.  NULL with
 * `why`.
 */
struct delivery *delivery_start(struct queue *q, const struct config *cfg,
    const struct dns_self *self, int stop_fd, char *why);

/*
 * Stop claiming work, let the threads finish the jobs they hold (each
 * bounded by the client timeouts), join them and free everything.
 * Recipients still leased become due again at the next start.
 */
void delivery_stop(struct delivery *d);

#endif
