/*
 * tlsrpt.c - TLS-RPT (RFC 8460) reports from the tlsrpt_results table
 * (see tlsrpt.h): the JSON of each domain's report, the rua of its
 * _smtp._tls record, gzip, and the report mail.
 *
 * Invariants:
 *  1. A report holds exactly the rows of its day and domain: the sums
 *     of its summaries are the counts of those rows.
 *  2. The JSON is written by json_fput_str for every string: any octets
 *     stored (an MX name, a policy line) come out as valid JSON.
 */
#include "tlsrpt.h"
#include "base64.h"
#include "dkim.h"
#include "https.h"
#include "json.h"
#include "queue.h"
#include "queueid.h"
#include "strbuf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zlib.h>

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

/* "YYYY-MM-DD" of the UTC day starting at `day` (gmtime_r: the daily
 * run shares the process with other threads). */
static void
day_text(int64_t day, char out[16])
{
	time_t t = (time_t)day;
	struct tm tm;

	if (gmtime_r(&t, &tm) == NULL ||
	    strftime(out, 16, "%Y-%m-%d", &tm) == 0)
		snprintf(out, 16, "1970-01-01");
}

/* The report-id (RFC 8460 section 4.3), also in the mail's Subject. */
static void
report_id(char *out, size_t len, const char *date, const char *domain,
    const char *hostname)
{
	snprintf(out, len, "%s_%s@%s", date, domain, hostname);
}

/* The report of one domain: rows [from, to). */
static void
report_json(FILE *f, const struct config *cfg, const char *date,
    const struct row *v, int from, int to)
{
	char contact[300], id[600];
	int i, j;

	snprintf(contact, sizeof(contact), "postmaster@%s", cfg->hostname);
	report_id(id, sizeof(id), date, v[from].domain, cfg->hostname);
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

void
tlsrpt_free(struct tlsrpt_report *v, int n)
{
	int i;

	for (i = 0; i < n; i++)
		free(v[i].json);
	free(v);
}

int
tlsrpt_build(struct store *st, const struct config *cfg, int64_t day,
    struct tlsrpt_report **out, int *n, char *why)
{
	struct rows rows = {NULL, 0, 0};
	struct tlsrpt_report *v = NULL;
	char date[16];
	int i, j, k = 0, rc = 0;

	*out = NULL;
	*n = 0;
	day_text(day, date);
	if (store_tlsrpt_day(st, day, collect, &rows, why) < 0)
		rc = -1;
	if (rc == 0 && rows.n > 0)
		v = xcalloc((size_t)rows.n, sizeof(*v));
	for (i = 0; rc == 0 && i < rows.n; i = j) {
		FILE *f;

		for (j = i + 1; j < rows.n &&
		                strcmp(rows.v[i].domain, rows.v[j].domain) == 0;
		     j++)
			;
		snprintf(
		    v[k].domain, sizeof(v[k].domain), "%s", rows.v[i].domain);
		f = open_memstream(&v[k].json, &v[k].len);
		if (f == NULL) {
			why_set(why, "out of memory");
			rc = -1;
			break;
		}
		report_json(f, cfg, date, rows.v, i, j);
		fclose(f);
		k++;
	}
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
	if (rc != 0) {
		tlsrpt_free(v, k);
		return -1;
	}
	*out = v;
	*n = k;
	return 0;
}

int
tlsrpt_rua(const char *txt, char (*uris)[TLSRPT_URI_MAX], int max)
{
	const char *p = txt, *e;
	int n = 0;

	if (strncmp(p, "v=TLSRPTv1", 10) != 0 ||
	    (p[10] != ';' && p[10] != ' ' && p[10] != '\t'))
		return 0;
	for (p += 10; *p != '\0'; p = e + (*e != '\0')) {
		while (*p == ';' || *p == ' ' || *p == '\t')
			p++;
		e = p + strcspn(p, ";");
		if (strncmp(p, "rua=", 4) != 0)
			continue;
		for (p += 4; p < e && n < max;) {
			size_t l = strcspn(p, ",;");

			if (p + l > e)
				l = (size_t)(e - p);
			while (l > 0 && (p[l - 1] == ' ' || p[l - 1] == '\t'))
				l--;
			if (l > 0 && l < TLSRPT_URI_MAX &&
			    (strncmp(p, "mailto:", 7) == 0 ||
			        strncmp(p, "https://", 8) == 0)) {
				memcpy(uris[n], p, l);
				uris[n][l] = '\0';
				n++;
			}
			p += l;
			while (p < e && (*p == ',' || *p == ' ' || *p == '\t'))
				p++;
		}
	}
	return n;
}

int
tlsrpt_gzip(const void *in, size_t len, unsigned char **out, size_t *olen)
{
	z_stream z;
	size_t cap = deflateBound(NULL, (uLong)len) + 64;
	int rc;

	memset(&z, 0, sizeof(z));
	/* 15 + 16: the gzip wrapper (RFC 1952), not zlib's. */
	if (deflateInit2(&z, Z_DEFAULT_COMPRESSION, Z_DEFLATED, 15 + 16, 8,
	        Z_DEFAULT_STRATEGY) != Z_OK)
		return -1;
	*out = xmalloc(cap);
	z.next_in = (Bytef *)in;
	z.avail_in = (uInt)len;
	z.next_out = *out;
	z.avail_out = (uInt)cap;
	rc = deflate(&z, Z_FINISH);
	*olen = cap - z.avail_out;
	deflateEnd(&z);
	if (rc != Z_STREAM_END) {
		free(*out);
		*out = NULL;
		return -1;
	}
	return 0;
}

char *
tlsrpt_mail(const struct config *cfg, const char *domain, int64_t day,
    const unsigned char *gz, size_t gzlen, size_t *len)
{
	struct strbuf m = {NULL, 0, 0};
	char date[64], d0[16], boundary[40], id[QUEUE_ID_LEN + 1], rid[600];
	char *b64;
	size_t blen = 4 * (gzlen / 3 + 1) + 1, i;
	const char *s = cfg->hostname;

	rfc5322_date(date, sizeof(date), (int64_t)time(NULL));
	day_text(day, d0);
	report_id(rid, sizeof(rid), d0, domain, s);
	queue_new_id(id);
	snprintf(boundary, sizeof(boundary), "tlsrpt-%s", id);
	strbuf_fmt(&m,
	    "From: TLS reports <postmaster@%s>\r\n"
	    "Date: %s\r\n"
	    "Subject: Report Domain: %s Submitter: %s Report-ID: <%s>\r\n"
	    "Message-ID: <%s.tlsrpt@%s>\r\n"
	    "TLS-Report-Domain: %s\r\n"
	    "TLS-Report-Submitter: %s\r\n"
	    "TLS-Required: No\r\n"
	    "MIME-Version: 1.0\r\n"
	    "Content-Type: multipart/report; report-type=\"tlsrpt\";\r\n"
	    "\tboundary=\"%s\"\r\n"
	    "\r\n"
	    "--%s\r\n"
	    "Content-Type: text/plain; charset=us-ascii\r\n"
	    "\r\n"
	    "The TLS report (RFC 8460) of %s for %s, from %s.\r\n"
	    "\r\n"
	    "--%s\r\n"
	    "Content-Type: application/tlsrpt+gzip\r\n"
	    "Content-Transfer-Encoding: base64\r\n"
	    "Content-Disposition: attachment;\r\n"
	    "\tfilename=\"%s!%s!%lld!%lld.json.gz\"\r\n"
	    "\r\n",
	    s, date, domain, s, rid, id, s, domain, s, boundary, boundary,
	    domain, d0, s, boundary, s, domain, (long long)day,
	    (long long)(day + 86399));
	b64 = xmalloc(blen);
	if (base64_encode(gz, gzlen, b64, blen) < 0)
		b64[0] = '\0';
	blen = strlen(b64);
	for (i = 0; i < blen; i += 76) {
		strbuf_add(&m, b64 + i, blen - i < 76 ? blen - i : 76);
		strbuf_add(&m, "\r\n", 2);
	}
	free(b64);
	strbuf_fmt(&m, "\r\n--%s--\r\n", boundary);
	*len = m.len;
	return m.p;
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
post_report(const struct tlsrpt_send *s, const char *uri,
    const unsigned char *gz, size_t gzlen)
{
	char host[256], path[TLSRPT_URI_MAX], why[WHY_MAX];
	struct mx_host *addrs = NULL;
	struct https_reply rep;
	int port, n, rc = -1;

	if (!parse_https(uri, host, sizeof(host), &port, path, sizeof(path))) {
		s->say(s->arg, false, "bad report URI %s", uri);
		return -1;
	}
	if (dns_resolve_host(s->dns, host, port, &addrs, &n, why) != RES_OK) {
		s->say(s->arg, false, "%s: %s", uri, why);
		return -1;
	}
	if (https_post(addrs, n, host, path, "application/tlsrpt+gzip", gz,
	        gzlen, s->creds, deadline_in(30), s->stop_fd, &rep,
	        why) != RES_OK)
		s->say(s->arg, false, "%s: %s", uri, why);
	else if (rep.status != 200 && rep.status != 201)
		s->say(s->arg, false, "%s: HTTP status %d", uri, rep.status);
	else
		rc = 0;
	https_reply_free(&rep);
	free(addrs);
	return rc;
}

/* Queue the report mail to the mailto: addresses (a null sender, so that
 * a report is never answered by a bounce); 0 or -1. */
static int
mail_report(const struct tlsrpt_send *s, int64_t day, const char *domain,
    char (*to)[TLSRPT_URI_MAX], int nto, const unsigned char *gz, size_t gzlen)
{
	struct envelope env;
	struct envelope_rcpt er[TLSRPT_RUA_MAX];
	char why[WHY_MAX], *text, *sig = NULL;
	size_t len, siglen = 0;
	int i;

	text = tlsrpt_mail(s->cfg, domain, day, gz, gzlen, &len);
	/* RFC 8460 section 5.3: reports SHOULD be DKIM-signed. */
	if (s->dkim != NULL &&
	    dkim_sign_as_host(s->dkim, s->cfg->hostname, text, len,
	        (int64_t)time(NULL), &sig, &siglen, why) != RES_OK) {
		s->say(
		    s->arg, false, "report to %s not signed: %s", domain, why);
		free(text);
		return -1;
	}
	memset(&env, 0, sizeof(env));
	memset(er, 0, sizeof(er));
	for (i = 0; i < nto; i++) {
		char *at = strrchr(to[i], '@');

		er[i].address = to[i] + 7;
		for (char *c = at ? at + 1 : to[i]; *c; c++)
			*c = ascii_lower(*c);
		er[i].domain = at ? at + 1 : "";
	}
	queue_new_id(env.id);
	env.received_at = (int64_t)time(NULL);
	env.sender = "";
	env.rcpts = er;
	env.nrcpts = nto;
	env.size = (int64_t)len;
	env.stored_size = (int64_t)(len + siglen);
	env.prepend = sig;
	env.prepend_len = siglen;
	env.body_type = BODY_7BIT;
	env.tls_required_no = 1;
	env.client_ip = "127.0.0.1";
	env.helo = "local";
	env.protocol = "local";
	if (s->enqueue(s->arg, &env, text, len, why) != RES_OK) {
		s->say(
		    s->arg, false, "report to %s not queued: %s", domain, why);
		free(text);
		free(sig);
		return -1;
	}
	free(text);
	free(sig);
	s->say(s->arg, true, "%s: queued as %s for %d address%s", domain,
	    env.id, nto, nto == 1 ? "" : "es");
	return 0;
}

int
tlsrpt_send_one(
    const struct tlsrpt_send *s, int64_t day, const struct tlsrpt_report *rep)
{
	char name[300], why[WHY_MAX], **txt = NULL;
	char uris[TLSRPT_RUA_MAX][TLSRPT_URI_MAX];
	char mailto[TLSRPT_RUA_MAX][TLSRPT_URI_MAX];
	unsigned char *gz;
	size_t gzlen;
	bool secure;
	int i, n = 0, ntxt = 0, nmail = 0, rc = 0;

	snprintf(name, sizeof(name), "_smtp._tls.%s", rep->domain);
	if (dns_lookup_txt(s->dns, name, &txt, &ntxt, &secure, why) != RES_OK) {
		s->say(s->arg, false, "%s: %s", rep->domain, why);
		return -1;
	}
	for (i = 0; i < ntxt && n == 0; i++)
		n = tlsrpt_rua(txt[i], uris, TLSRPT_RUA_MAX);
	dns_txt_free(txt, ntxt);
	if (n == 0) {
		s->say(s->arg, false, "%s publishes no TLS-RPT address",
		    rep->domain);
		return -1;
	}
	if (tlsrpt_gzip(rep->json, rep->len, &gz, &gzlen) != 0) {
		s->say(s->arg, false, "cannot compress the report");
		return -1;
	}
	for (i = 0; i < n; i++) {
		if (strncmp(uris[i], "mailto:", 7) == 0)
			memcpy(mailto[nmail++], uris[i], TLSRPT_URI_MAX);
		else if (post_report(s, uris[i], gz, gzlen) == 0)
			s->say(s->arg, true, "%s: posted to %s", rep->domain,
			    uris[i]);
		else
			rc = -1;
	}
	if (nmail > 0 &&
	    mail_report(s, day, rep->domain, mailto, nmail, gz, gzlen) != 0)
		rc = -1;
	free(gz);
	return rc;
}
