/*
 * test_metrics.c - the counters, histograms and their Prometheus text
 * exposition (common/metrics.c): exact sample lines after known adds and
 * observations, the format's syntax line by line, HELP and TYPE once per
 * family, and concurrent adds from several threads.
 *
 * Threads: the main thread, plus NTHREADS adders in the last test.  The
 * checks run in order in one process: the counters start at zero and are
 * never reset, so each test states the totals it expects so far.
 */
#include "metrics.h"
#include "version.h"
#include "unit.h"
#include "util.h"

#include <math.h>
#include <pthread.h>
#include <regex.h>
#include <stdlib.h>

#define NTHREADS 8
#define NADDS 100000

static char *
render(const struct metrics_gauges *g)
{
	size_t len;
	char *s = metrics_render(g, &len);

	CHECK(strlen(s) == len, "render: length %zu matches the text", len);
	return s;
}

/* True when `line` is one whole line of `text`. */
static int
has_line(const char *text, const char *line)
{
	size_t n = strlen(line);
	const char *p = text;

	while ((p = strstr(p, line)) != NULL) {
		if ((p == text || p[-1] == '\n') && p[n] == '\n')
			return 1;
		p++;
	}
	return 0;
}

/* How many lines of `text` start with `prefix`. */
static int
count_lines(const char *text, const char *prefix)
{
	size_t n = strlen(prefix);
	const char *p = text;
	int count = 0;

	while (p != NULL && *p != '\0') {
		if (strncmp(p, prefix, n) == 0)
			count++;
		p = strchr(p, '\n');
		if (p != NULL)
			p++;
	}
	return count;
}

static void
check_lines(const char *text, const char *const *lines, const char *what)
{
	for (; *lines != NULL; lines++)
		CHECK(has_line(text, *lines), "%s: line \"%s\"", what, *lines);
}

/*
 * Whether the family of sample `name` was typed: `seen` holds " name "
 * for each TYPE line so far; a histogram's samples carry a suffix.
 */
static int
typed(const char *seen, const char *name)
{
	static const char *const sfx[] = {"", "_bucket", "_sum", "_count"};
	char key[160];
	size_t n = strlen(name), i, k;

	for (i = 0; i < 4; i++) {
		k = strlen(sfx[i]);
		if (n <= k || strcmp(name + n - k, sfx[i]) != 0)
			continue;
		snprintf(key, sizeof(key), " %.*s ", (int)(n - k), name);
		if (strstr(seen, key) != NULL)
			return 1;
	}
	return 0;
}

/*
 * Every line is a comment (HELP or TYPE) or a sample "name{l="v"} value";
 * every sample's family has exactly one HELP and one TYPE, before it.
 */
static void
check_syntax(const char *text, const char *what)
{
	regex_t sample, meta;
	regmatch_t m[3];
	char *copy = xstrdup(text), *line, *save = NULL;
	int bad = 0, samples = 0, untyped = 0, dup = 0;
	char name[128], fam[128], seen[4096] = " ";

	regcomp(&sample,
	    "^([a-zA-Z_:][a-zA-Z0-9_:]*)"
	    "(\\{[a-zA-Z_][a-zA-Z0-9_]*=\"([^\"\\\\]|\\\\.)*\"\\})? "
	    "(-?[0-9]+(\\.[0-9]+)?|\\+Inf|-Inf|NaN)$",
	    REG_EXTENDED);
	regcomp(&meta,
	    "^# (HELP|TYPE) ([a-zA-Z_:][a-zA-Z0-9_:]*) "
	    "(counter|gauge|histogram|[^\n]+)$",
	    REG_EXTENDED);
	CHECK(text[0] != '\0' && text[strlen(text) - 1] == '\n',
	    "%s: the text ends with a newline", what);
	for (line = strtok_r(copy, "\n", &save); line != NULL;
	     line = strtok_r(NULL, "\n", &save)) {
		if (line[0] == '#') {
			if (regexec(&meta, line, 3, m, 0) != 0) {
				bad++;
				printf("# bad comment line: %s\n", line);
			} else if (strncmp(line, "# TYPE ", 7) == 0) {
				snprintf(fam, sizeof(fam), " %.*s ",
				    (int)(m[2].rm_eo - m[2].rm_so),
				    line + m[2].rm_so);
				if (strstr(seen, fam) != NULL)
					dup++;
				if (strlen(seen) + strlen(fam) < sizeof(seen))
					strcat(seen, fam + 1);
			}
			continue;
		}
		samples++;
		if (regexec(&sample, line, 2, m, 0) != 0) {
			bad++;
			printf("# bad sample line: %s\n", line);
			continue;
		}
		snprintf(name, sizeof(name), "%.*s",
		    (int)(m[1].rm_eo - m[1].rm_so), line);
		if (!typed(seen, name)) {
			untyped++;
			printf("# no TYPE before: %s\n", line);
		}
	}
	CHECK(bad == 0 && samples > 20, "%s: %d sample lines, all parse", what,
	    samples);
	CHECK(untyped == 0, "%s: every sample's family has a TYPE before it",
	    what);
	CHECK(dup == 0, "%s: no family has two TYPE lines", what);
	regfree(&sample);
	regfree(&meta);
	free(copy);
}

static void
test_zero(void)
{
	struct metrics_gauges g = {0};
	static const char *const lines[] = {
	    "# HELP sluice_connections_total SMTP connections accepted on "
	    "the listeners.",
	    "# TYPE sluice_connections_total counter",
	    "sluice_connections_total 0",
	    "sluice_sessions_rejected_total{reason=\"per_ip_limit\"} 0",
	    "sluice_sessions_rejected_total{reason=\"tls_failed\"} 0",
	    "sluice_deliveries_total{result=\"bounced\"} 0",
	    "sluice_delivery_latency_seconds_bucket{le=\"0.1\"} 0",
	    "sluice_delivery_latency_seconds_bucket{le=\"+Inf\"} 0",
	    "sluice_delivery_latency_seconds_sum 0",
	    "sluice_delivery_latency_seconds_count 0",
	    "sluice_commit_batch_size_count 0",
	    "sluice_sessions_active 0",
	    "sluice_queue_up 0",
	    "sluice_build_info{version=\"" SLUICE_VERSION "\"} 1",
	    NULL,
	};
	char *s = render(&g);

	check_lines(s, lines, "zero");
	CHECK(count_lines(s, "sluice_queue_recipients") == 0 &&
	          count_lines(s, "sluice_queue_oldest") == 0 &&
	          count_lines(s, "# TYPE sluice_queue_recipients") == 0,
	    "zero: no queue gauges when the queue could not be read");
	check_syntax(s, "zero");
	free(s);
}

static void
test_counters(void)
{
	struct metrics_gauges g = {0};
	static const char *const lines[] = {
	    "sluice_connections_total 3",
	    "sluice_sessions_rejected_total{reason=\"per_ip_limit\"} 2",
	    "sluice_sessions_rejected_total{reason=\"overload\"} 1",
	    "sluice_sessions_rejected_total{reason=\"shutdown\"} 0",
	    "sluice_sessions_rejected_total{reason=\"too_many_errors\"} 0",
	    "sluice_sessions_rejected_total{reason=\"timeout\"} 4",
	    "sluice_sessions_rejected_total{reason=\"tls_failed\"} 0",
	    "sluice_recipients_rejected_total 0",
	    "sluice_auth_failures_total 1",
	    "sluice_messages_accepted_total 2",
	    "sluice_accepted_bytes_total 123456789012",
	    "sluice_deliveries_total{result=\"sent\"} 5",
	    "sluice_deliveries_total{result=\"deferred\"} 0",
	    "sluice_deliveries_total{result=\"bounced\"} 0",
	    "sluice_notices_total 0",
	    NULL,
	};
	static const char *const families[] = {"sluice_connections_total",
	    "sluice_sessions_rejected_total",
	    "sluice_recipients_rejected_total", "sluice_auth_failures_total",
	    "sluice_messages_accepted_total", "sluice_accepted_bytes_total",
	    "sluice_deliveries_total", "sluice_notices_total",
	    "sluice_delivery_latency_seconds", "sluice_commit_batch_size",
	    "sluice_sessions_active", "sluice_queue_up",
	    "sluice_start_time_seconds", "sluice_build_info", NULL};
	char *s, prefix[128];
	int i;

	metrics_add(M_CONNECTIONS, 3);
	metrics_add(M_CONNECTIONS, 0);
	metrics_add(M_CONNECTIONS, -7); /* ignored: counters only grow */
	metrics_add((enum metric)M_NCOUNTERS, 9); /* ignored */
	metrics_add((enum metric)(-1), 9);        /* ignored */
	metrics_inc(M_REJECT_PER_IP);
	metrics_inc(M_REJECT_PER_IP);
	metrics_inc(M_REJECT_OVERLOAD);
	metrics_add(M_REJECT_TIMEOUT, 4);
	metrics_inc(M_AUTH_FAILED);
	metrics_add(M_MESSAGES_ACCEPTED, 2);
	metrics_add(M_BYTES_ACCEPTED, 123456789012LL);
	metrics_add(M_DELIVERY_SENT, 5);
	s = render(&g);
	check_lines(s, lines, "counters");
	for (i = 0; families[i] != NULL; i++) {
		snprintf(prefix, sizeof(prefix), "# HELP %s ", families[i]);
		CHECK(count_lines(s, prefix) == 1, "counters: one HELP for %s",
		    families[i]);
		snprintf(prefix, sizeof(prefix), "# TYPE %s ", families[i]);
		CHECK(count_lines(s, prefix) == 1, "counters: one TYPE for %s",
		    families[i]);
	}
	CHECK(has_line(s, "# TYPE sluice_sessions_rejected_total counter") &&
	          has_line(s, "# TYPE sluice_deliveries_total counter"),
	    "counters: labelled families are counters");
	CHECK(count_lines(s, "sluice_sessions_rejected_total{") == 9 &&
	          count_lines(s, "sluice_deliveries_total{") == 3,
	    "counters: 9 reasons and 3 results");
	free(s);
}

static void
test_histograms(void)
{
	struct metrics_gauges g = {0};
	static const char *const lines[] = {
	    "# TYPE sluice_delivery_latency_seconds histogram",
	    "sluice_delivery_latency_seconds_bucket{le=\"0.1\"} 3",
	    "sluice_delivery_latency_seconds_bucket{le=\"0.5\"} 3",
	    "sluice_delivery_latency_seconds_bucket{le=\"1\"} 4",
	    "sluice_delivery_latency_seconds_bucket{le=\"5\"} 4",
	    "sluice_delivery_latency_seconds_bucket{le=\"10\"} 4",
	    "sluice_delivery_latency_seconds_bucket{le=\"30\"} 4",
	    "sluice_delivery_latency_seconds_bucket{le=\"60\"} 4",
	    "sluice_delivery_latency_seconds_bucket{le=\"300\"} 5",
	    "sluice_delivery_latency_seconds_bucket{le=\"900\"} 5",
	    "sluice_delivery_latency_seconds_bucket{le=\"3600\"} 5",
	    "sluice_delivery_latency_seconds_bucket{le=\"14400\"} 5",
	    "sluice_delivery_latency_seconds_bucket{le=\"86400\"} 5",
	    "sluice_delivery_latency_seconds_bucket{le=\"+Inf\"} 6",
	    "sluice_delivery_latency_seconds_sum 100120.850001",
	    "sluice_delivery_latency_seconds_count 6",
	    "# TYPE sluice_commit_batch_size histogram",
	    "sluice_commit_batch_size_bucket{le=\"1\"} 1",
	    "sluice_commit_batch_size_bucket{le=\"2\"} 1",
	    "sluice_commit_batch_size_bucket{le=\"4\"} 3",
	    "sluice_commit_batch_size_bucket{le=\"8\"} 3",
	    "sluice_commit_batch_size_bucket{le=\"256\"} 4",
	    "sluice_commit_batch_size_bucket{le=\"+Inf\"} 5",
	    "sluice_commit_batch_size_sum 563",
	    "sluice_commit_batch_size_count 5",
	    NULL,
	};
	char *s;

	metrics_observe(H_DELIVERY_LATENCY, 0.05);
	metrics_observe(H_DELIVERY_LATENCY, 0.1); /* on a bound: le="0.1" */
	metrics_observe(H_DELIVERY_LATENCY, -3);  /* counts as 0 */
	metrics_observe(H_DELIVERY_LATENCY, 0.700001);
	metrics_observe(H_DELIVERY_LATENCY, 120);
	metrics_observe(H_DELIVERY_LATENCY, 100000);    /* over 86400: +Inf */
	metrics_observe(H_DELIVERY_LATENCY, NAN);       /* NaN: ignored */
	metrics_observe((enum metric_hist)M_NHISTS, 1); /* ignored */
	metrics_observe(H_COMMIT_BATCH, 1);
	metrics_observe(H_COMMIT_BATCH, 3);
	metrics_observe(H_COMMIT_BATCH, 4);
	metrics_observe(H_COMMIT_BATCH, 255);
	metrics_observe(H_COMMIT_BATCH, 300);
	s = render(&g);
	check_lines(s, lines, "histograms");
	CHECK(count_lines(s, "sluice_delivery_latency_seconds_bucket{") == 13,
	    "histograms: 12 latency buckets and +Inf");
	CHECK(count_lines(s, "sluice_commit_batch_size_bucket{") == 10,
	    "histograms: 9 batch buckets and +Inf");
	CHECK(strstr(s, "sluice_commit_batch_size_count 5\n# HELP ") != NULL,
	    "histograms: _count is the family's last line");
	free(s);
}

static void
test_gauges(void)
{
	struct metrics_gauges g = {
	    .sessions_active = 7,
	    .have_queue = 1,
	    .queue_queued = 3,
	    .queue_deferred = 2,
	    .queue_held = 1,
	    .queue_delivered = 40,
	    .queue_bounced = 5,
	    .oldest_age_seconds = 3600,
	};
	static const char *const lines[] = {
	    "# TYPE sluice_sessions_active gauge",
	    "sluice_sessions_active 7",
	    "# TYPE sluice_queue_up gauge",
	    "sluice_queue_up 1",
	    "# TYPE sluice_queue_recipients gauge",
	    "sluice_queue_recipients{state=\"queued\"} 3",
	    "sluice_queue_recipients{state=\"deferred\"} 2",
	    "sluice_queue_recipients{state=\"held\"} 1",
	    "sluice_queue_recipients{state=\"delivered\"} 40",
	    "sluice_queue_recipients{state=\"bounced\"} 5",
	    "# TYPE sluice_queue_oldest_message_age_seconds gauge",
	    "sluice_queue_oldest_message_age_seconds 3600",
	    "# TYPE sluice_start_time_seconds gauge",
	    "# TYPE sluice_build_info gauge",
	    NULL,
	};
	const char *p;
	double start, now = (double)wall_us() / 1e6;
	char *s = render(&g);

	check_lines(s, lines, "gauges");
	CHECK(count_lines(s, "sluice_queue_recipients{") == 5,
	    "gauges: five queue states");
	p = strstr(s, "\nsluice_start_time_seconds ");
	start = p ? strtod(p + 27, NULL) : 0;
	CHECK(start > now - 600 && start <= now,
	    "gauges: start time %.6f is the start of this test (now %.6f)",
	    start, now);
	check_syntax(s, "gauges");
	free(s);
}

static void *
adder(void *arg)
{
	int i;

	(void)arg;
	for (i = 0; i < NADDS; i++) {
		metrics_inc(M_NOTICES);
		if (i % 10 == 0)
			metrics_observe(H_COMMIT_BATCH, 2);
	}
	return NULL;
}

static void
test_threads(void)
{
	struct metrics_gauges g = {0};
	pthread_t t[NTHREADS];
	char line[128], *s;
	int i, started = 0;
	long long hist = 5 + (long long)NTHREADS * (NADDS / 10);

	for (i = 0; i < NTHREADS; i++)
		started += pthread_create(&t[i], NULL, adder, NULL) == 0;
	CHECK(started == NTHREADS, "threads: %d adders started", started);
	for (i = 0; i < started; i++)
		pthread_join(t[i], NULL);
	s = render(&g);
	snprintf(line, sizeof(line), "sluice_notices_total %lld",
	    (long long)NTHREADS * NADDS);
	CHECK(has_line(s, line), "threads: %d x %d adds: \"%s\"", NTHREADS,
	    NADDS, line);
	snprintf(
	    line, sizeof(line), "sluice_commit_batch_size_count %lld", hist);
	CHECK(has_line(s, line), "threads: concurrent observations: \"%s\"",
	    line);
	snprintf(line, sizeof(line),
	    "sluice_commit_batch_size_bucket{le=\"2\"} %lld", hist - 4);
	CHECK(has_line(s, line), "threads: all in le=\"2\": \"%s\"", line);
	snprintf(line, sizeof(line), "sluice_commit_batch_size_sum %lld",
	    563 + 2LL * (hist - 5));
	CHECK(has_line(s, line), "threads: exact sum: \"%s\"", line);
	free(s);
}

int
main(void)
{
	test_zero();
	test_counters();
	test_histograms();
	test_gauges();
	test_threads();
	UNIT_DONE();
}
