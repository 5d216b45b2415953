/*
 * metrics.h - the relay's counters and histograms, served in the
 * Prometheus text format at /metrics when metrics_listen is set
 * (server/httpd.c).  See docs/metrics.md for every name.
 *
 * Threads: every function may be called from any thread at any time
 * (lock-free atomic counters); nothing needs initialising.
 */
#ifndef SLUICE_METRICS_H
#define SLUICE_METRICS_H

#include <stddef.h>
#include <stdint.h>

/* Counters (monotonic since start). */
enum metric {
	M_CONNECTIONS,		/* sluice_connections_total */
	M_REJECT_PER_IP,	/* sluice_sessions_rejected_total{reason="per_ip_limit"} */
	M_REJECT_OVERLOAD,	/* ...{reason="overload"}: every worker busy */
	M_REJECT_SHUTDOWN,	/* ...{reason="shutdown"} */
	M_REJECT_ERRORS,	/* ...{reason="too_many_errors"} */
	M_REJECT_TIMEOUT,	/* ...{reason="timeout"} */
	M_REJECT_TLS,		/* ...{reason="tls_failed"} */
	M_RCPT_REJECTED,	/* sluice_recipients_rejected_total */
	M_AUTH_FAILED,		/* sluice_auth_failures_total */
	M_MESSAGES_ACCEPTED,	/* sluice_messages_accepted_total */
	M_BYTES_ACCEPTED,	/* sluice_accepted_bytes_total */
	M_DELIVERY_SENT,	/* sluice_deliveries_total{result="sent"} */
	M_DELIVERY_DEFERRED,	/* ...{result="deferred"} */
	M_DELIVERY_BOUNCED,	/* ...{result="bounced"} */
	M_NOTICES,		/* sluice_notices_total: DSNs queued */
	M_NCOUNTERS
};

/* Histograms. */
enum metric_hist {
	H_DELIVERY_LATENCY,	/* sluice_delivery_latency_seconds: received
				 * to delivered, per recipient */
	H_COMMIT_BATCH,		/* sluice_commit_batch_size: operations per
				 * group commit */
	M_NHISTS
};

void metrics_add(enum metric m, int64_t n);
static inline void
metrics_inc(enum metric m)
{
	metrics_add(m, 1);
}
void metrics_observe(enum metric_hist h, double value);

/* Gauges read when the metrics are rendered. */
struct metrics_gauges {
	int64_t sessions_active;	/* sluice_sessions_active */
	int have_queue;			/* 0: the queue could not be read */
	int64_t queue_queued, queue_deferred, queue_held;
	int64_t queue_delivered, queue_bounced; /* sluice_queue_recipients{state} */
	int64_t oldest_age_seconds;	/* sluice_queue_oldest_message_age_seconds */
};

/*
 * The Prometheus text exposition (version 0.0.4) of every metric, with the
 * gauges in `g`: a malloc'd string, NUL-terminated, *len its length.
 */
char *metrics_render(const struct metrics_gauges *g, size_t *len);

#endif
