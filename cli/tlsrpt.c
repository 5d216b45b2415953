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
#include "dkim.h"
#include "dns.h"
#include "https.h"
#include "loadcfg.h"
#include "queue.h"
#include "queueid.h"
#include "store.h"
#include "tls.h"
#include "tlsrpt.h"
#include "util.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define TLSRPT_USAGE "usage: sluice tlsrpt show [--date YYYY-MM-DD] [-c FILE]\n"

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

/* The CLI's messages: progress on stdout, problems on stderr. */
static void __attribute__((format(printf, 3, 4)))
say(void *arg, bool ok, const char *fmt, ...)
{
	va_list ap;

	(void)arg;
	if (!ok)
		fputs("sluice: ", stderr);
	va_start(ap, fmt);
	vfprintf(ok ? stdout : stderr, fmt, ap);
	va_end(ap);
	fputc('\n', ok ? stdout : stderr);
}

/* Queue a report mail in one transaction of our own. */
static enum res
enqueue(void *arg, const struct envelope *env, const char *text, size_t len,
    char *why)
{
	struct store *st = arg;
	enum res r = store_begin(st, why);

	if (r == RES_OK)
		r = store_put_mail(
		    st, env, 0, &(struct store_part){text, len}, 1, why);
	if (r == RES_OK)
		r = store_commit(st, why);
	else
		store_rollback(st);
	return r;
}

int
tlsrpt_cmd(int argc, char **argv)
{
	const char *path = NULL, *date = NULL, *source;
	struct tlsrpt_report *reps = NULL;
	struct dns_resolver *r = NULL;
	struct tls_creds *creds = NULL;
	struct dkim_keys *dkim = NULL;
	struct config *cfg;
	struct store *st = NULL;
	char why[WHY_MAX];
	int64_t day;
	struct tlsrpt_send snd;
	bool send;
	int i, n = 0, rc = 1;

	if (argc < 2 ||
	    (strcmp(argv[1], "show") != 0 && strcmp(argv[1], "send") != 0)) {
		fputs(TLSRPT_USAGE, stderr);
		return 2;
	}
	send = strcmp(argv[1], "send") == 0;
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
	cfg = load_config(path, &source);
	if (cfg == NULL)
		return 1;
	/* send queues mail: a connection that may (as sendmail's). */
	st = send ? store_open_helper(cfg->queue_path, why)
	          : store_open_admin(cfg->queue_path, false, why);
	if (st == NULL || (send && store_helper_writer(st, why) != RES_OK) ||
	    tlsrpt_build(st, cfg, day, &reps, &n, why) != 0) {
		fprintf(stderr, "sluice: %s\n", why);
		goto out;
	}
	rc = 0;
	if (send) {
		r = dns_resolver_new(cfg, why);
		creds = r ? tls_client_creds_new(cfg->tls_ca_file, why) : NULL;
		if (creds == NULL) {
			fprintf(stderr, "sluice: %s\n", why);
			rc = 1;
			goto out;
		}
		if (cfg->ndkim_keys > 0) {
			char warn[WHY_MAX];

			dkim = dkim_keys_load(
			    cfg->dkim_keys, cfg->ndkim_keys, warn, why);
			if (dkim == NULL) {
				fprintf(stderr, "sluice: %s\n", why);
				rc = 1;
				goto out;
			}
		}
		snd = (struct tlsrpt_send){
		    cfg, r, creds, -1, dkim, enqueue, say, st};
	}
	for (i = 0; i < n; i++) {
		if (!send)
			fwrite(reps[i].json, 1, reps[i].len, stdout);
		else if (tlsrpt_send_one(&snd, day, &reps[i]) != 0)
			rc = 1;
	}
	if (fflush(stdout) != 0)
		rc = 1;
out:
	tlsrpt_free(reps, n);
	tls_creds_unref(creds);
	dkim_keys_free(dkim);
	dns_resolver_free(r);
	store_close(st);
	config_free(cfg);
	return rc;
}
