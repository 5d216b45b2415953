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
#include "dns.h"
#include "https.h"
#include "loadcfg.h"
#include "queue.h"
#include "queueid.h"
#include "store.h"
#include "tls.h"
#include "tlsrpt.h"
#include "util.h"

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

/* The host, port and path of an https: URI. */
static bool
parse_https(const char *uri, char *host, size_t hlen, int *port, char *path,
    size_t plen)
{
	const char *h = uri + 8, *slash = strchr(h, '/'), *colon;
	size_t n = slash ? (size_t)(slash - h) : strlen(h);

	colon = memchr(h, ':', n);
	*port = 443;
	if (colon != NULL) {
		*port = atoi(colon + 1);
		n = (size_t)(colon - h);
	}
	if (n == 0 || n >= hlen || *port <= 0 || *port > 65535)
		return false;
	memcpy(host, h, n);
	host[n] = '\0';
	snprintf(path, plen, "%s", slash ? slash : "/");
	return true;
}

/* POST the gzipped report to an https: URI; 0 on a 200 or 201. */
static int
post_report(struct dns_resolver *r, struct tls_creds *creds, const char *uri,
    const unsigned char *gz, size_t gzlen)
{
	char host[256], path[TLSRPT_URI_MAX], why[WHY_MAX];
	struct mx_host *addrs = NULL;
	struct https_reply rep;
	int port, n, rc = -1;

	if (!parse_https(uri, host, sizeof(host), &port, path, sizeof(path))) {
		fprintf(stderr, "sluice: bad report URI %s\n", uri);
		return -1;
	}
	if (dns_resolve_host(r, host, port, &addrs, &n, why) != RES_OK) {
		fprintf(stderr, "sluice: %s: %s\n", uri, why);
		return -1;
	}
	if (https_post(addrs, n, host, path, "application/tlsrpt+gzip", gz,
	        gzlen, creds, deadline_in(30), -1, &rep, why) != RES_OK) {
		fprintf(stderr, "sluice: %s: %s\n", uri, why);
	} else if (rep.status != 200 && rep.status != 201) {
		fprintf(
		    stderr, "sluice: %s: HTTP status %d\n", uri, rep.status);
	} else {
		rc = 0;
	}
	https_reply_free(&rep);
	free(addrs);
	return rc;
}

/* Queue the report mail to the mailto: addresses (a null sender, so that
 * a report is never answered by a bounce); 0 or -1. */
static int
mail_report(struct store *st, const struct config *cfg, int64_t day,
    const char *domain, char (*to)[TLSRPT_URI_MAX], int nto,
    const unsigned char *gz, size_t gzlen)
{
	struct envelope env;
	struct envelope_rcpt er[TLSRPT_RUA_MAX];
	char why[WHY_MAX], *text;
	size_t len;
	enum res r;
	int i;

	text = tlsrpt_mail(cfg, domain, day, gz, gzlen, &len);
	memset(&env, 0, sizeof(env));
	memset(er, 0, sizeof(er));
	for (i = 0; i < nto; i++) {
		char *at;

		er[i].address = to[i] + 7;
		at = strrchr(to[i], '@');
		for (char *c = at ? at + 1 : to[i]; *c; c++)
			*c = ascii_lower(*c);
		er[i].domain = at ? at + 1 : "";
	}
	queue_new_id(env.id);
	env.received_at = (int64_t)time(NULL);
	env.sender = "";
	env.rcpts = er;
	env.nrcpts = nto;
	env.size = env.stored_size = (int64_t)len;
	env.body_type = BODY_7BIT;
	env.tls_required_no = 1;
	env.client_ip = "127.0.0.1";
	env.helo = "local";
	env.protocol = "local";
	r = store_begin(st, why);
	if (r == RES_OK)
		r = store_put_mail(
		    st, &env, 0, &(struct store_part){text, len}, 1, why);
	if (r == RES_OK)
		r = store_commit(st, why);
	else
		store_rollback(st);
	free(text);
	if (r != RES_OK) {
		fprintf(stderr, "sluice: report to %s not queued: %s\n", domain,
		    why);
		return -1;
	}
	printf("%s: queued as %s for %d address%s\n", domain, env.id, nto,
	    nto == 1 ? "" : "es");
	return 0;
}

/* Send one domain's report to the URIs of its _smtp._tls record. */
static int
send_report(struct store *st, const struct config *cfg, struct dns_resolver *r,
    struct tls_creds *creds, int64_t day, const struct tlsrpt_report *rep)
{
	char name[300], why[WHY_MAX], **txt = NULL;
	char uris[TLSRPT_RUA_MAX][TLSRPT_URI_MAX],
	    mailto[TLSRPT_RUA_MAX][TLSRPT_URI_MAX];
	unsigned char *gz;
	size_t gzlen;
	bool secure;
	int i, n = 0, ntxt = 0, nmail = 0, rc = 0;

	snprintf(name, sizeof(name), "_smtp._tls.%s", rep->domain);
	if (dns_lookup_txt(r, name, &txt, &ntxt, &secure, why) != RES_OK) {
		fprintf(stderr, "sluice: %s: %s\n", rep->domain, why);
		return -1;
	}
	for (i = 0; i < ntxt && n == 0; i++)
		n = tlsrpt_rua(txt[i], uris, TLSRPT_RUA_MAX);
	dns_txt_free(txt, ntxt);
	if (n == 0) {
		fprintf(stderr, "sluice: %s publishes no TLS-RPT address\n",
		    rep->domain);
		return -1;
	}
	if (tlsrpt_gzip(rep->json, rep->len, &gz, &gzlen) != 0) {
		fprintf(stderr, "sluice: cannot compress the report\n");
		return -1;
	}
	for (i = 0; i < n; i++) {
		if (strncmp(uris[i], "mailto:", 7) == 0)
			memcpy(mailto[nmail++], uris[i], TLSRPT_URI_MAX);
		else if (post_report(r, creds, uris[i], gz, gzlen) == 0)
			printf("%s: posted to %s\n", rep->domain, uris[i]);
		else
			rc = -1;
	}
	if (nmail > 0 && mail_report(st, cfg, day, rep->domain, mailto, nmail,
	                     gz, gzlen) != 0)
		rc = -1;
	free(gz);
	return rc;
}

int
tlsrpt_cmd(int argc, char **argv)
{
	const char *path = NULL, *date = NULL, *source;
	struct tlsrpt_report *reps = NULL;
	struct dns_resolver *r = NULL;
	struct tls_creds *creds = NULL;
	struct config *cfg;
	struct store *st = NULL;
	char why[WHY_MAX];
	int64_t day;
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
	}
	for (i = 0; i < n; i++) {
		if (!send)
			fwrite(reps[i].json, 1, reps[i].len, stdout);
		else if (send_report(st, cfg, r, creds, day, &reps[i]) != 0)
			rc = 1;
	}
	if (fflush(stdout) != 0)
		rc = 1;
out:
	tlsrpt_free(reps, n);
	tls_creds_unref(creds);
	dns_resolver_free(r);
	store_close(st);
	config_free(cfg);
	return rc;
}
