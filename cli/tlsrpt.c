/*
 * tlsrpt.c - `sluice tlsrpt show [--date YYYY-MM-DD] [-c FILE]`: the
 * TLS-RPT reports (RFC 8460 section 4) of one UTC day, built from the
 * tlsrpt_results table that delivery fills: one JSON report per recipient
 * domain, one per line, in domain order.  The day defaults to yesterday.
 *
 * Each report has organization-name (tlsrpt_organization, else the
 * hostname), date-range, contact-info (tlsrpt_contact, else
 * postmaster@hostname), report-id, and a policy object per policy seen
 * (type, its lines as policy-string, the domain, and for sts its mx
 * patterns as mx-host) with the session counts and the failures grouped
 * by result type, addresses and MX host.
 *
 * Threads: single-threaded command; no shared state.
 */
#include "cli.h"
#include "json.h"
#include "loadcfg.h"
#include "store.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define TLSRPT_USAGE "usage: sluice tlsrpt show [--date YYYY-MM-DD] [-c FILE]\n"

struct row {
	char *domain, *type, *policy, *mx, *result, *local, *ip;
	int64_t count;
};

struct rows {
	struct row *v;
	int n, cap;
};

static int
collect(void *arg, const struct store_tlsrpt *t, int64_t count)
{
	struct rows *r = arg;
	struct row *w;

	if (r->n == r->cap) {
		r->cap = r->cap ? r->cap * 2 : 64;
		r->v = xrealloc(r->v, (size_t)r->cap * sizeof(*r->v));
	}
	w = &r->v[r->n++];
	w->domain = xstrdup(t->domain);
	w->type = xstrdup(t->policy_type);
	w->policy = xstrdup(t->policy_string);
	w->mx = xstrdup(t->mx_host);
	w->result = xstrdup(t->result_type);
	w->local = xstrdup(t->sending_ip);
	w->ip = xstrdup(t->receiving_ip);
	w->count = count;
	return 0;
}

/* The lines of `s` as a JSON array; with `prefix`, only the lines that
 * start with it, without it. */
static void
lines_json(FILE *f, const char *s, const char *prefix)
{
	const char *p = s;
	bool first = true;
	size_t pl = prefix ? strlen(prefix) : 0;

	fputc('[', f);
	while (*p != '\0') {
		const char *e = strchr(p, '\n');
		size_t n = e ? (size_t)(e - p) : strlen(p);

		if (prefix == NULL ||
		    (n >= pl && strncmp(p, prefix, pl) == 0)) {
			char *line = xmalloc(n + 1);

			memcpy(line, p + pl, n - pl);
			line[n - pl] = '\0';
			if (!first)
				fputc(',', f);
			json_fput_str(f, line);
			free(line);
			first = false;
		}
		p += n + (e != NULL);
	}
	fputc(']', f);
}

static bool
same_policy(const struct row *a, const struct row *b)
{
	return strcmp(a->domain, b->domain) == 0 &&
	       strcmp(a->type, b->type) == 0 &&
	       strcmp(a->policy, b->policy) == 0;
}

/* One policy object: rows [from, to) share its domain and policy. */
static void
policy_json(FILE *f, const struct row *v, int from, int to)
{
	int64_t ok = 0, failed = 0;
	bool first = true;
	int i;

	for (i = from; i < to; i++) {
		if (v[i].result[0] == '\0')
			ok += v[i].count;
		else
			failed += v[i].count;
	}
	fputs("{\"policy\":{\"policy-type\":", f);
	json_fput_str(f, v[from].type);
	fputs(",\"policy-string\":", f);
	lines_json(f, v[from].policy, NULL);
	fputs(",\"policy-domain\":", f);
	json_fput_str(f, v[from].domain);
	if (strcmp(v[from].type, "sts") == 0) {
		fputs(",\"mx-host\":", f);
		lines_json(f, v[from].policy, "mx: ");
	}
	fprintf(f,
	    "},\"summary\":{\"total-successful-session-count\":%lld,"
	    "\"total-failure-session-count\":%lld}",
	    (long long)ok, (long long)failed);
	fputs(",\"failure-details\":[", f);
	for (i = from; i < to; i++) {
		/* One row per result, addresses and MX host (the table's
		 * key), so one detail each. */
		if (v[i].result[0] == '\0')
			continue;
		if (!first)
			fputc(',', f);
		first = false;
		fputs("{\"result-type\":", f);
		json_fput_str(f, v[i].result);
		if (v[i].local[0] != '\0') {
			fputs(",\"sending-mta-ip\":", f);
			json_fput_str(f, v[i].local);
		}
		fputs(",\"receiving-mx-hostname\":", f);
		json_fput_str(f, v[i].mx);
		if (v[i].ip[0] != '\0') {
			fputs(",\"receiving-ip\":", f);
			json_fput_str(f, v[i].ip);
		}
		fprintf(f, ",\"failed-session-count\":%lld}",
		    (long long)v[i].count);
	}
	fputs("]}", f);
}

/* The report of one domain: rows [from, to). */
static void
report_json(FILE *f, const struct config *cfg, const char *date,
    const struct row *v, int from, int to)
{
	char contact[300], id[600];
	int i, j;

	snprintf(contact, sizeof(contact), "postmaster@%s", cfg->hostname);
	snprintf(
	    id, sizeof(id), "%s_%s@%s", date, v[from].domain, cfg->hostname);
	fputs("{\"organization-name\":", f);
	json_fput_str(f, cfg->tlsrpt_organization[0] ? cfg->tlsrpt_organization
	                                             : cfg->hostname);
	fprintf(f,
	    ",\"date-range\":{\"start-datetime\":\"%sT00:00:00Z\","
	    "\"end-datetime\":\"%sT23:59:59Z\"},\"contact-info\":",
	    date, date);
	json_fput_str(
	    f, cfg->tlsrpt_contact[0] ? cfg->tlsrpt_contact : contact);
	fputs(",\"report-id\":", f);
	json_fput_str(f, id);
	fputs(",\"policies\":[", f);
	for (i = from; i < to; i = j) {
		for (j = i + 1; j < to && same_policy(&v[i], &v[j]); j++)
			;
		if (i > from)
			fputc(',', f);
		policy_json(f, v, i, j);
	}
	fputs("]}\n", f);
}

/* "YYYY-MM-DD" into the Unix time of its UTC midnight. */
static bool
parse_date(const char *s, int64_t *day)
{
	struct tm tm;
	char *end;

	memset(&tm, 0, sizeof(tm));
	end = strptime(s, "%Y-%m-%d", &tm);
	if (end == NULL || *end != '\0')
		return false;
	*day = (int64_t)timegm(&tm);
	return true;
}

int
tlsrpt_cmd(int argc, char **argv)
{
	const char *path = NULL, *date = NULL, *source;
	struct rows rows = {NULL, 0, 0};
	struct config *cfg;
	struct store *st = NULL;
	char why[WHY_MAX], day_text[16];
	int64_t day;
	time_t t;
	int i, j, rc = 1;

	if (argc < 2 || strcmp(argv[1], "show") != 0) {
		fputs(TLSRPT_USAGE, stderr);
		return 2;
	}
	for (i = 2; i < argc; i++) {
		if (strcmp(argv[i], "--date") == 0 && i + 1 < argc)
			date = argv[++i];
		else if (strcmp(argv[i], "-c") == 0 && i + 1 < argc)
			path = argv[++i];
		else {
			fputs(TLSRPT_USAGE, stderr);
			return 2;
		}
	}
	if (date != NULL && !parse_date(date, &day)) {
		fprintf(stderr, "sluice: bad date \"%s\" (YYYY-MM-DD)\n", date);
		return 2;
	}
	if (date == NULL) {
		day = (int64_t)time(NULL);
		day = day - day % 86400 - 86400; /* yesterday */
	}
	t = (time_t)day;
	strftime(day_text, sizeof(day_text), "%Y-%m-%d", gmtime(&t));
	cfg = load_config(path, &source);
	if (cfg == NULL)
		return 1;
	st = store_open_admin(cfg->queue_path, false, why);
	if (st == NULL) {
		fprintf(stderr, "sluice: %s\n", why);
		goto out;
	}
	if (store_tlsrpt_day(st, day, collect, &rows, why) < 0) {
		fprintf(stderr, "sluice: %s\n", why);
		goto out;
	}
	for (i = 0; i < rows.n; i = j) {
		for (j = i + 1; j < rows.n &&
		                strcmp(rows.v[i].domain, rows.v[j].domain) == 0;
		     j++)
			;
		report_json(stdout, cfg, day_text, rows.v, i, j);
	}
	rc = fflush(stdout) == 0 ? 0 : 1;
out:
	for (i = 0; i < rows.n; i++) {
		free(rows.v[i].domain);
		free(rows.v[i].type);
		free(rows.v[i].policy);
		free(rows.v[i].mx);
		free(rows.v[i].result);
		free(rows.v[i].local);
		free(rows.v[i].ip);
	}
	free(rows.v);
	store_close(st);
	config_free(cfg);
	return rc;
}
