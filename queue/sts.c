/*
 * sts.c - MTA-STS records, policies and fetching (see sts.h).
 *
 * Invariants:
 *  1. A policy accepted has version STSv1, a known mode, a max_age within
 *     0..STS_MAX_AGE_MAX, and (unless mode none) at least one mx pattern,
 *     each a lower-case name or "*." and a name.
 *  2. Parsing never reads past `len`, whatever the octets.
 */
#include "sts.h"
#include "https.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *
sts_mode_name(enum sts_mode m)
{
	switch (m) {
	case STS_MODE_ENFORCE:
		return "enforce";
	case STS_MODE_TESTING:
		return "testing";
	default:
		return "none";
	}
}

static bool
is_wsp(char c)
{
	return c == ' ' || c == '\t';
}

static bool
is_alnum(char c)
{
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') ||
	       (c >= 'A' && c <= 'Z');
}

int
sts_parse_txt(const char *txt, char *id)
{
	const char *p = txt, *e;
	bool first = true, have_id = false;
	size_t n;

	id[0] = '\0';
	/* sts-text-record = sts-version 1*(*WSP ";" *WSP sts-field) *WSP
	 * [";"]; the version comes first. */
	while (*p != '\0') {
		while (is_wsp(*p))
			p++;
		e = strchr(p, ';');
		n = e != NULL ? (size_t)(e - p) : strlen(p);
		while (n > 0 && is_wsp(p[n - 1]))
			n--;
		if (first) {
			if (n != 7 || strncmp(p, "v=STSv1", 7) != 0)
				return 0;
			first = false;
		} else if (n > 3 && strncmp(p, "id=", 3) == 0) {
			size_t i;

			if (have_id || n - 3 > STS_ID_MAX)
				return 0;
			for (i = 3; i < n; i++)
				if (!is_alnum(p[i]))
					return 0;
			memcpy(id, p + 3, n - 3);
			id[n - 3] = '\0';
			have_id = true;
		} else if (n > 0 && memchr(p, '=', n) == NULL) {
			return 0; /* not a field */
		}
		if (e == NULL)
			break;
		p = e + 1;
	}
	if (!have_id)
		id[0] = '\0';
	return have_id ? 1 : 0;
}

/* A pattern: a name of letters, digits, '-' and '.' (A-labels), possibly
 * "*." first; into out[DNS_NAME_MAX] lower case. */
static bool
mx_pattern(const char *v, size_t n, char *out)
{
	size_t i, start = 0;

	if (n > 0 && v[n - 1] == '.')
		n--; /* a trailing dot is allowed and dropped */
	if (n == 0 || n >= DNS_NAME_MAX)
		return false;
	if (n > 2 && v[0] == '*' && v[1] == '.')
		start = 2;
	for (i = start; i < n; i++) {
		char c = v[i];

		if (!(is_alnum(c) || c == '-' ||
		        (c == '.' && i > start && v[i - 1] != '.')))
			return false;
	}
	if (v[n - 1] == '.' || v[start] == '.')
		return false;
	for (i = 0; i < n; i++)
		out[i] = ascii_lower(v[i]);
	out[n] = '\0';
	return true;
}

int
sts_parse_policy(const char *text, size_t len, struct sts_policy *p, char *why)
{
	size_t pos = 0;
	bool version = false, mode = false, age = false;

	memset(p, 0, sizeof(*p));
	while (pos < len) {
		const char *l = text + pos, *nl = memchr(l, '\n', len - pos);
		size_t n = nl != NULL ? (size_t)(nl - l) : len - pos;
		size_t k = 0, v, vn;

		pos += n + (nl != NULL);
		if (n > 0 && l[n - 1] == '\r')
			n--;
		if (n == 0)
			continue;
		while (k < n && l[k] != ':')
			k++;
		if (k == n) {
			why_set(why, "a line without a colon");
			return -1;
		}
		for (v = k + 1; v < n && is_wsp(l[v]); v++)
			;
		for (vn = n - v; vn > 0 && is_wsp(l[v + vn - 1]); vn--)
			;
		if (k == 7 && strncmp(l, "version", 7) == 0 && !version) {
			if (vn != 5 || strncmp(l + v, "STSv1", 5) != 0) {
				why_set(why, "version is not STSv1");
				return -1;
			}
			version = true;
		} else if (k == 4 && strncmp(l, "mode", 4) == 0 && !mode) {
			if (vn == 7 && strncmp(l + v, "enforce", 7) == 0)
				p->mode = STS_MODE_ENFORCE;
			else if (vn == 7 && strncmp(l + v, "testing", 7) == 0)
				p->mode = STS_MODE_TESTING;
			else if (vn == 4 && strncmp(l + v, "none", 4) == 0)
				p->mode = STS_MODE_NONE;
			else {
				why_set(why, "unknown mode");
				return -1;
			}
			mode = true;
		} else if (k == 7 && strncmp(l, "max_age", 7) == 0 && !age) {
			int64_t a = 0;
			size_t i;

			if (vn == 0 || vn > 10) {
				why_set(why, "bad max_age");
				return -1;
			}
			for (i = 0; i < vn; i++) {
				if (l[v + i] < '0' || l[v + i] > '9') {
					why_set(why, "bad max_age");
					return -1;
				}
				a = a * 10 + (l[v + i] - '0');
			}
			if (a > STS_MAX_AGE_MAX) {
				why_set(
				    why, "max_age over %d", STS_MAX_AGE_MAX);
				return -1;
			}
			p->max_age = a;
			age = true;
		} else if (k == 2 && strncmp(l, "mx", 2) == 0) {
			if (p->nmx == STS_MX_MAX)
				continue; /* more than we keep: ignored */
			if (!mx_pattern(l + v, vn, p->mx[p->nmx])) {
				why_set(why, "bad mx pattern");
				return -1;
			}
			p->nmx++;
		}
		/* Anything else: an extension, ignored (section 3.2). */
	}
	if (!version || !mode || !age) {
		why_set(why, "missing %s",
		    !version ? "version"
		    : !mode  ? "mode"
		             : "max_age");
		return -1;
	}
	if (p->mode != STS_MODE_NONE && p->nmx == 0) {
		why_set(why, "no mx");
		return -1;
	}
	return 0;
}

bool
sts_mx_matches(const struct sts_policy *p, const char *host)
{
	size_t hn = strlen(host);
	int i;

	if (hn > 0 && host[hn - 1] == '.')
		hn--;
	for (i = 0; i < p->nmx; i++) {
		const char *m = p->mx[i];
		size_t mn = strlen(m);

		if (m[0] == '*') {
			const char *dot;

			/* "*.b.c" matches "a.b.c": one label, not empty. */
			if (hn <= mn - 1)
				continue;
			if (ascii_ncasecmp(
			        host + hn - (mn - 1), m + 1, mn - 1) != 0)
				continue;
			dot = memchr(host, '.', hn - (mn - 1));
			if (dot == NULL && hn - (mn - 1) > 0)
				return true;
		} else if (hn == mn && ascii_ncasecmp(host, m, hn) == 0) {
			return true;
		}
	}
	return false;
}

/* Is `ct` text/plain (parameters allowed)? */
static bool
text_plain(const char *ct)
{
	size_t n = strlen("text/plain");

	return ascii_ncasecmp(ct, "text/plain", n) == 0 &&
	       (ct[n] == '\0' || ct[n] == ';' || ct[n] == ' ' || ct[n] == '\t');
}

int
sts_fetch(struct dns_resolver *r, const char *domain, int port,
    struct tls_creds *creds, int64_t deadline, int stop_fd,
    struct sts_policy *p, char **text, char *why)
{
	char host[DNS_NAME_MAX + 16], err[WHY_MAX];
	struct mx_host *addrs = NULL;
	struct https_reply rep;
	int n = 0, rc = -1;

	*text = NULL;
	snprintf(host, sizeof(host), "mta-sts.%s", domain);
	if (dns_resolve_host(r, host, port, &addrs, &n, err) != RES_OK) {
		why_set(why, "4.7.5 MTA-STS policy of %s: %s", domain, err);
		return -1;
	}
	if (https_get(addrs, n, host, STS_PATH, creds, deadline, STS_POLICY_MAX,
	        stop_fd, &rep, err) != RES_OK) {
		why_set(why, "4.7.5 MTA-STS policy of %s: %s", domain, err);
		free(addrs);
		return -1;
	}
	free(addrs);
	if (rep.status != 200)
		why_set(why, "4.7.5 MTA-STS policy of %s: HTTP status %d%s",
		    domain, rep.status,
		    rep.status >= 300 && rep.status < 400
		        ? " (redirects are not followed)"
		        : "");
	else if (!text_plain(rep.ctype))
		why_set(why,
		    "4.7.5 MTA-STS policy of %s: Content-Type \"%s\", not "
		    "text/plain",
		    domain, rep.ctype);
	else if (sts_parse_policy(rep.body ? rep.body : "", rep.len, p, err) !=
	         0)
		why_set(why, "4.7.5 MTA-STS policy of %s: invalid: %s", domain,
		    err);
	else {
		*text = rep.body ? rep.body : xstrdup("");
		rep.body = NULL;
		rc = 0;
	}
	https_reply_free(&rep);
	return rc;
}
