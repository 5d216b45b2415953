/*
 * metrics.h - the relay's counters and histograms, served in the
 * Prometheus text format (version 0.0.4) at /metrics when metrics_listen
 * is set (server/httpd.c).  docs/metrics.md describes every name; the
 * name each enum value is exported as is in the comment beside it.
 *
 * Threads: every function may be called from any thread at any time
 * (lock-free C11 atomics, relaxed ordering: each value is exact, but a
 * scrape may see one counter updated before another); nothing needs
 * initialising.  The process start time is taken when the binary loads.
 */
#ifndef SLUICE_METRICS_H
#define SLUICE_METRICS_H

#include <stddef.h>
#include <stdint.h>

/*
 * Counters (monotonic since start).  Values of one labelled family are
 * contiguous: the exporter writes HELP and TYPE once per run of one name.
 */
enum metric {
	M_CONNECTIONS, /* sluice_connections_total */
	/* sluice_sessions_rejected_total{reason="per_ip_limit"}: */
	M_REJECT_PER_IP,     /* more than max_connections_per_ip */
	M_REJECT_OVERLOAD,   /* ...{reason="overload"}: every worker busy */
	M_REJECT_SHUTDOWN,   /* ...{reason="shutdown"} */
	M_REJECT_ERRORS,     /* ...{reason="too_many_errors"} */
	M_REJECT_TIMEOUT,    /* ...{reason="timeout"} */
	M_REJECT_TLS,        /* ...{reason="tls_failed"} */
	M_REJECT_MAX_CONN,   /* ...{reason="max_connections"} */
	M_REJECT_RATE,       /* ...{reason="connection_rate"} */
	M_REJECT_PROXY,      /* ...{reason="proxy"}: no valid PROXY header */
	M_RCPT_REJECTED,     /* sluice_recipients_rejected_total */
	M_AUTH_FAILED,       /* sluice_auth_failures_total */
	M_AUTH_RATE_LIMITED, /* sluice_auth_rate_limited_total */
	M_STRESS_EPISODES,   /* sluice_stress_episodes_total */
	M_MESSAGES_ACCEPTED, /* sluice_messages_accepted_total */
	M_BYTES_ACCEPTED,    /* sluice_accepted_bytes_total */
	M_DELIVERY_SENT,     /* sluice_deliveries_total{result="sent"} */
	M_DELIVERY_DEFERRED, /* ...{result="deferred"} */
	M_DELIVERY_BOUNCED,  /* ...{result="bounced"} */
	M_NOTICES,           /* sluice_notices_total: DSNs queued */
	M_DEST_SUSPENDED,    /* sluice_destination_suspensions_total */
	M_RATE_WAITS,        /* sluice_destination_rate_waits_total */
	M_DEST_SLOWDOWNS,    /* sluice_destination_slowdowns_total */
	M_QUEUE_WAKEUPS,     /* sluice_queue_wakeups_total: other nodes' mail */
	M_NCOUNTERS
};

/* Histograms (buckets, _sum and _count; buckets listed in metrics.c). */
enum metric_hist {
	H_DELIVERY_LATENCY, /* sluice_delivery_latency_seconds: received
	                     * to delivered, per recipient */
	H_COMMIT_BATCH,     /* sluice_commit_batch_size: operations per
	                     * group commit */
	M_NHISTS
};

/*
 * Add `n` to counter `m`.  A counter never goes down: n <= 0 and values of
 * `m` out of range are ignored.
 */
void metrics_add(enum metric m, int64_t n);
static inline void
metrics_inc(enum metric m)
{
	metrics_add(m, 1);
}

/*
 * Record one observation.  Negative values (a clock stepped back) count as
 * 0; NaN is ignored.  The sum is kept in integer millionths, exact for
 * whole numbers and to the microsecond for latencies.
 */
void metrics_observe(enum metric_hist h, double value);

/* Gauges kept here: the value last set is exported. */
enum metric_gauge {
	G_DESTS_SUSPENDED, /* sluice_destinations_suspended */
	M_NGAUGES
};

/* Set gauge `g` (values of `g` out of range are ignored). */
void metrics_gauge_set(enum metric_gauge g, int64_t v);

/* Gauges read when the metrics are rendered. */
struct metrics_gauges {
	int64_t sessions_active; /* sluice_sessions_active */
	int64_t sessions_parked; /* sluice_sessions_parked */
	int64_t stress;          /* sluice_stress_mode (0 or 1) */
	int have_queue;          /* sluice_queue_up; 0: the queue could
	                          * not be read, and the queue gauges
	                          * below are left out */
	int64_t queue_queued, queue_deferred, queue_held;
	int64_t queue_delivered,
	    queue_bounced; /* sluice_queue_recipients{state} */
	int64_t
	    oldest_age_seconds; /* sluice_queue_oldest_message_age_seconds */
};

/*
 * The Prometheus text exposition (version 0.0.4) of every metric, with the
 * gauges in `g`, plus sluice_start_time_seconds and
 * sluice_build_info{version}: a malloc'd string (free it), NUL-terminated,
 * *len its length.
 */
char *metrics_render(const struct metrics_gauges *g, size_t *len);

#endif
