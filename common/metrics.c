/*
 * metrics.c - the counters and histograms of metrics.h, and their
 * Prometheus text exposition (format 0.0.4).
 *
 * Threads: any thread adds and observes; the metrics endpoint's thread
 * renders.  Shared state, all lock-free:
 *   counters[]      _Atomic, relaxed adds;
 *   hists[].bucket  _Atomic per-bucket (not cumulative) counts, relaxed;
 *   hists[].sum     _Atomic sum of observations in millionths, relaxed;
 *   start_us        written once by a constructor before main(), then
 *                   only read.
 *
 * Invariants:
 *  1. A histogram's _count is the sum of its bucket counts as read by the
 *     same render, so the le="+Inf" bucket always equals _count and the
 *     buckets are cumulative and non-decreasing.  _sum is read
 *     separately and may be a few observations ahead or behind.
 *  2. Counter families whose samples differ only by a label are adjacent
 *     in enum metric: HELP and TYPE are written once per family.
 */
#include "metrics.h"
#include "vocab.h"
#include "strbuf.h"
#include "util.h"
#include "version.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define HELP_REJECTED                                                          \
	"SMTP sessions refused or ended early by the server, by reason."
#define HELP_DELIVERIES "Delivery attempts per recipient, by result."

/* One sample of a counter family; `label` NULL when it has none. */
struct counter_def {
	const char *name;
	const char *label;
	const char *value;
	const char *help;
};

static const struct counter_def counter_defs[M_NCOUNTERS] = {
    [M_CONNECTIONS] = {"sluice_connections_total", NULL, NULL,
        "SMTP connections accepted on the listeners."},
    [M_REJECT_PER_IP] = {"sluice_sessions_rejected_total", "reason",
        "per_ip_limit", HELP_REJECTED},
    [M_REJECT_OVERLOAD] = {"sluice_sessions_rejected_total", "reason",
        "overload", HELP_REJECTED},
    [M_REJECT_SHUTDOWN] = {"sluice_sessions_rejected_total", "reason",
        "shutdown", HELP_REJECTED},
    [M_REJECT_ERRORS] = {"sluice_sessions_rejected_total", "reason",
        "too_many_errors", HELP_REJECTED},
    [M_REJECT_TIMEOUT] = {"sluice_sessions_rejected_total", "reason", "timeout",
        HELP_REJECTED},
    [M_REJECT_TLS] = {"sluice_sessions_rejected_total", "reason", "tls_failed",
        HELP_REJECTED},
    [M_REJECT_MAX_CONN] = {"sluice_sessions_rejected_total", "reason",
        "max_connections", HELP_REJECTED},
    [M_REJECT_RATE] = {"sluice_sessions_rejected_total", "reason",
        "connection_rate", HELP_REJECTED},
    [M_REJECT_PROXY] = {"sluice_sessions_rejected_total", "reason", "proxy",
        HELP_REJECTED},
    [M_RCPT_REJECTED] = {"sluice_recipients_rejected_total", NULL, NULL,
        "RCPT TO commands refused (relay denied, bad address, limits)."},
    [M_AUTH_FAILED] = {"sluice_auth_failures_total", NULL, NULL,
        "Failed SMTP AUTH attempts."},
    [M_AUTH_RATE_LIMITED] = {"sluice_auth_rate_limited_total", NULL, NULL,
        "AUTH commands refused because the client failed too often "
        "(max_auth_failure_rate)."},
    [M_STRESS_EPISODES] = {"sluice_stress_episodes_total", NULL, NULL,
        "Times stress mode began (stress_threshold)."},
    [M_MESSAGES_ACCEPTED] = {"sluice_messages_accepted_total", NULL, NULL,
        "Messages accepted (250 after the data) and committed to the "
        "queue."},
    [M_BYTES_ACCEPTED] = {"sluice_accepted_bytes_total", NULL, NULL,
        "Octets of accepted messages, as received."},
    [M_DELIVERY_SENT] = {"sluice_deliveries_total", "result", "sent",
        HELP_DELIVERIES},
    [M_DELIVERY_DEFERRED] = {"sluice_deliveries_total", "result", "deferred",
        HELP_DELIVERIES},
    [M_DELIVERY_BOUNCED] = {"sluice_deliveries_total", "result", "bounced",
        HELP_DELIVERIES},
    [M_NOTICES] = {"sluice_notices_total", NULL, NULL,
        "Delivery status notifications (failure, delay, success) queued."},
    [M_DEST_SUSPENDED] = {"sluice_destination_suspensions_total", NULL, NULL,
        "Times delivery to a destination was suspended after every address "
        "failed."},
    [M_RATE_WAITS] = {"sluice_destination_rate_waits_total", NULL, NULL,
        "Deliveries held back for their destination's rate "
        "(destination_rate, destination_rates)."},
    [M_DEST_SLOWDOWNS] = {"sluice_destination_slowdowns_total", NULL, NULL,
        "Times a next hop asked to slow down (421, or 4.7.x about rates "
        "or too many) and its destination went at half speed for a while."},
    [M_QUEUE_WAKEUPS] = {"sluice_queue_wakeups_total", NULL, NULL,
        "Times another node's new mail woke delivery (a shared "
        "PostgreSQL queue's LISTEN/NOTIFY)."},
};

struct gauge_def {
	const char *name;
	const char *help;
};

static const struct gauge_def gauge_defs[M_NGAUGES] = {
    [G_DESTS_SUSPENDED] = {"sluice_destinations_suspended",
        "Destinations whose delivery is suspended now (deferred without a "
        "connection until a probe succeeds)."},
};

/* Upper bounds of the finite buckets; a last bucket is le="+Inf". */
static const double latency_bounds[] = {
    0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600, 14400, 86400};
static const double batch_bounds[] = {1, 2, 4, 8, 16, 32, 64, 128, 256};

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))
#define MAX_BUCKETS 13 /* the longest bounds list, plus +Inf */
#define SUM_SCALE 1000000.0
/* Observations are clamped here so that the scaled value fits int64_t. */
#define MAX_OBSERVATION 1e12

_Static_assert(NELEM(latency_bounds) + 1 <= MAX_BUCKETS, "MAX_BUCKETS");
_Static_assert(NELEM(batch_bounds) + 1 <= MAX_BUCKETS, "MAX_BUCKETS");

struct hist_def {
	const char *name;
	const char *help;
	const double *bounds;
	size_t nbounds;
};

static const struct hist_def hist_defs[M_NHISTS] = {
    [H_DELIVERY_LATENCY] = {"sluice_delivery_latency_seconds",
        "Time from a message's acceptance to its delivery, per delivered "
        "recipient.",
        latency_bounds, NELEM(latency_bounds)},
    [H_COMMIT_BATCH] = {"sluice_commit_batch_size",
        "Operations committed together by one queue transaction (group "
        "commit).",
        batch_bounds, NELEM(batch_bounds)},
};

struct hist {
	_Atomic int64_t bucket[MAX_BUCKETS];
	_Atomic int64_t sum; /* millionths */
};

static _Atomic int64_t counters[M_NCOUNTERS];
static _Atomic int64_t gauges[M_NGAUGES];
static struct hist hists[M_NHISTS];
static int64_t start_us;

__attribute__((constructor)) static void
metrics_note_start(void)
{
	start_us = wall_us();
}

void
metrics_add(enum metric m, int64_t n)
{
	if ((int)m < 0 || m >= M_NCOUNTERS || n <= 0)
		return;
	atomic_fetch_add_explicit(&counters[m], n, memory_order_relaxed);
}

void
metrics_gauge_set(enum metric_gauge g, int64_t v)
{
	if ((int)g < 0 || g >= M_NGAUGES)
		return;
	atomic_store_explicit(&gauges[g], v, memory_order_relaxed);
}

void
metrics_observe(enum metric_hist h, double value)
{
	const struct hist_def *d;
	size_t i;

	if ((int)h < 0 || h >= M_NHISTS || value != value)
		return;
	d = &hist_defs[h];
	if (value < 0)
		value = 0;
	if (value > MAX_OBSERVATION)
		value = MAX_OBSERVATION;
	for (i = 0; i < d->nbounds && value > d->bounds[i]; i++)
		continue;
	atomic_fetch_add_explicit(&hists[h].bucket[i], 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&hists[h].sum,
	    (int64_t)(value * SUM_SCALE + 0.5), memory_order_relaxed);
}

/* ---- rendering ---- */

/* A label value with \, " and newline escaped (format 0.0.4). */
static void
sb_label_value(struct strbuf *b, const char *v)
{
	for (; *v != '\0'; v++) {
		if (*v == '\\')
			strbuf_str(b, "\\\\");
		else if (*v == '"')
			strbuf_str(b, "\\\"");
		else if (*v == '\n')
			strbuf_str(b, "\\n");
		else
			strbuf_add(b, v, 1);
	}
}

/* Millionths as a decimal without trailing zeros: 1500000 -> "1.5". */
static void
sb_scaled(struct strbuf *b, int64_t v)
{
	char frac[8];
	int n;

	snprintf(frac, sizeof(frac), "%06lld", (long long)(v % 1000000));
	for (n = 6; n > 0 && frac[n - 1] == '0'; n--)
		frac[n - 1] = '\0';
	if (n == 0)
		strbuf_fmt(b, "%lld", (long long)(v / 1000000));
	else
		strbuf_fmt(b, "%lld.%s", (long long)(v / 1000000), frac);
}

static void
sb_family(
    struct strbuf *b, const char *name, const char *type, const char *help)
{
	strbuf_fmt(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void
render_counters(struct strbuf *b)
{
	const char *prev = NULL;
	int m;

	for (m = 0; m < M_NCOUNTERS; m++) {
		const struct counter_def *d = &counter_defs[m];
		long long v = (long long)atomic_load_explicit(
		    &counters[m], memory_order_relaxed);

		if (prev == NULL || strcmp(prev, d->name) != 0)
			sb_family(b, d->name, "counter", d->help);
		prev = d->name;
		if (d->label != NULL)
			strbuf_fmt(b, "%s{%s=\"%s\"} %lld\n", d->name, d->label,
			    d->value, v);
		else
			strbuf_fmt(b, "%s %lld\n", d->name, v);
	}
}

static void
render_hist(struct strbuf *b, int h)
{
	const struct hist_def *d = &hist_defs[h];
	int64_t cum = 0;
	size_t i;

	sb_family(b, d->name, "histogram", d->help);
	for (i = 0; i <= d->nbounds; i++) {
		cum += atomic_load_explicit(
		    &hists[h].bucket[i], memory_order_relaxed);
		if (i < d->nbounds)
			strbuf_fmt(b, "%s_bucket{le=\"%g\"} %lld\n", d->name,
			    d->bounds[i], (long long)cum);
		else
			strbuf_fmt(b, "%s_bucket{le=\"+Inf\"} %lld\n", d->name,
			    (long long)cum);
	}
	strbuf_fmt(b, "%s_sum ", d->name);
	sb_scaled(b, atomic_load_explicit(&hists[h].sum, memory_order_relaxed));
	strbuf_fmt(b, "\n%s_count %lld\n", d->name, (long long)cum);
}

static void
render_queue(struct strbuf *b, const struct metrics_gauges *g)
{
	const int64_t counts[RCPT_NSTATES] = {
	    [RCPT_QUEUED] = g->queue_queued,
	    [RCPT_DEFERRED] = g->queue_deferred,
	    [RCPT_HELD] = g->queue_held,
	    [RCPT_DELIVERED] = g->queue_delivered,
	    [RCPT_BOUNCED] = g->queue_bounced,
	};
	size_t i;

	sb_family(b, "sluice_queue_up", "gauge",
	    "1 when the queue could be read for this scrape, else 0 (and the "
	    "queue gauges are absent).");
	strbuf_fmt(b, "sluice_queue_up %d\n", g->have_queue ? 1 : 0);
	if (!g->have_queue)
		return;
	sb_family(b, "sluice_queue_recipients", "gauge",
	    "Recipients in the queue, by state.");
	for (i = 0; i < RCPT_NSTATES; i++)
		strbuf_fmt(b, "sluice_queue_recipients{state=\"%s\"} %lld\n",
		    rcpt_state_name((enum rcpt_state)i), (long long)counts[i]);
	sb_family(b, "sluice_queue_oldest_message_age_seconds", "gauge",
	    "Age of the oldest message with a recipient still queued, "
	    "deferred or held (0 when there is none).");
	strbuf_fmt(b, "sluice_queue_oldest_message_age_seconds %lld\n",
	    (long long)g->oldest_age_seconds);
}

char *
metrics_render(const struct metrics_gauges *g, size_t *len)
{
	struct strbuf b = {0};
	int h;

	render_counters(&b);
	for (h = 0; h < M_NHISTS; h++)
		render_hist(&b, h);
	sb_family(&b, "sluice_sessions_active", "gauge",
	    "SMTP sessions open (running, queued for a worker, or parked).");
	strbuf_fmt(
	    &b, "sluice_sessions_active %lld\n", (long long)g->sessions_active);
	sb_family(&b, "sluice_sessions_parked", "gauge",
	    "SMTP sessions waiting without a worker (for input, for the "
	    "client to read, or for a delay).");
	strbuf_fmt(
	    &b, "sluice_sessions_parked %lld\n", (long long)g->sessions_parked);
	sb_family(&b, "sluice_stress_mode", "gauge",
	    "1 while stress mode shortens untrusted clients' timeouts.");
	strbuf_fmt(&b, "sluice_stress_mode %lld\n", (long long)g->stress);
	for (h = 0; h < M_NGAUGES; h++) {
		sb_family(&b, gauge_defs[h].name, "gauge", gauge_defs[h].help);
		strbuf_fmt(&b, "%s %lld\n", gauge_defs[h].name,
		    (long long)atomic_load_explicit(
		        &gauges[h], memory_order_relaxed));
	}
	render_queue(&b, g);
	sb_family(&b, "sluice_start_time_seconds", "gauge",
	    "Start time of the process since the Unix epoch, in seconds.");
	strbuf_fmt(&b, "sluice_start_time_seconds ");
	sb_scaled(&b, start_us);
	strbuf_fmt(&b, "\n");
	sb_family(&b, "sluice_build_info", "gauge",
	    "Always 1; the version is in the label.");
	strbuf_fmt(&b, "sluice_build_info{version=\"");
	sb_label_value(&b, SLUICE_VERSION);
	strbuf_fmt(&b, "\"} 1\n");
	*len = b.len;
	return b.p;
}
