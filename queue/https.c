/*
 * https.c - one HTTPS GET (see https.h).
 *
 * Invariants:
 *  1. The certificate is verified for the host name asked for (PKIX, the
 *     trust store of outbound verification); no redirect is followed (a
 *     3xx is a status like any other for the caller).
 *  2. At most HTTPS_HEAD_MAX + max + 1 octets are ever read; the parse
 *     works on what was read, never past it.
 */
#include "https.h"
#include "conn.h"
#include "smtpwire.h"
#include "strbuf.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void
https_reply_free(struct https_reply *r)
{
	if (r == NULL)
		return;
	free(r->body);
	memset(r, 0, sizeof(*r));
}

/* The next line of buf[*pos..len): its start and length without the line
 * end; false when no line end is left. */
static bool
next_line(
    const char *buf, size_t len, size_t *pos, const char **line, size_t *n)
{
	const char *nl = memchr(buf + *pos, '\n', len - *pos);

	if (nl == NULL)
		return false;
	*line = buf + *pos;
	*n = (size_t)(nl - *line);
	if (*n > 0 && (*line)[*n - 1] == '\r')
		(*n)--;
	*pos = (size_t)(nl - buf) + 1;
	return true;
}

/* Is header line l[0..n) the field `name`?  Its value trimmed, if so. */
static bool
header_is(const char *l, size_t n, const char *name, const char **v, size_t *vn)
{
	size_t k = strlen(name);

	if (n <= k || l[k] != ':' || ascii_ncasecmp(l, name, k) != 0)
		return false;
	*v = l + k + 1;
	*vn = n - k - 1;
	while (*vn > 0 && (**v == ' ' || **v == '\t')) {
		(*v)++;
		(*vn)--;
	}
	while (*vn > 0 && ((*v)[*vn - 1] == ' ' || (*v)[*vn - 1] == '\t'))
		(*vn)--;
	return true;
}

int
https_parse_response(
    const char *buf, size_t len, size_t max, struct https_reply *out, char *why)
{
	const char *l, *v;
	size_t pos = 0, n, vn, i, clen = 0, body;
	bool have_len = false;

	memset(out, 0, sizeof(*out));
	if (!next_line(buf, len, &pos, &l, &n) || n < 12 ||
	    memcmp(l, "HTTP/1.", 7) != 0 || (l[7] != '0' && l[7] != '1') ||
	    l[8] != ' ' || l[9] < '1' || l[9] > '5' || l[10] < '0' ||
	    l[10] > '9' || l[11] < '0' || l[11] > '9' ||
	    (n > 12 && l[12] != ' ')) {
		why_set(why, "not an HTTP/1.x response");
		return -1;
	}
	out->status = (l[9] - '0') * 100 + (l[10] - '0') * 10 + (l[11] - '0');
	for (;;) {
		if (pos > HTTPS_HEAD_MAX) {
			why_set(why, "response header over %d octets",
			    HTTPS_HEAD_MAX);
			return -1;
		}
		if (!next_line(buf, len, &pos, &l, &n)) {
			why_set(why, "response ends in its header");
			return -1;
		}
		if (n == 0)
			break;
		if (header_is(l, n, "Content-Type", &v, &vn)) {
			if (vn >= sizeof(out->ctype))
				vn = sizeof(out->ctype) - 1;
			memcpy(out->ctype, v, vn);
			out->ctype[vn] = '\0';
			for (i = 0; i < vn; i++)
				if ((unsigned char)v[i] < 0x20 ||
				    (unsigned char)v[i] >= 0x7f)
					out->ctype[i] = '?';
		} else if (header_is(l, n, "Content-Length", &v, &vn)) {
			size_t c = 0;

			if (vn == 0 || vn > 12)
				goto bad_length;
			for (i = 0; i < vn; i++) {
				if (v[i] < '0' || v[i] > '9')
					goto bad_length;
				c = c * 10 + (size_t)(v[i] - '0');
			}
			if (have_len && c != clen)
				goto bad_length;
			clen = c;
			have_len = true;
		} else if (header_is(l, n, "Transfer-Encoding", &v, &vn) &&
		           !(vn == 8 &&
		               ascii_ncasecmp(v, "identity", 8) == 0)) {
			why_set(why, "transfer encoding not asked for");
			return -1;
		}
	}
	body = len - pos;
	if (have_len) {
		if (clen > max) {
			why_set(why, "body of %zu octets, over %zu", clen, max);
			return -1;
		}
		if (body < clen) {
			why_set(why, "body cut short (%zu of %zu octets)", body,
			    clen);
			return -1;
		}
		body = clen;
	} else if (body > max) {
		why_set(why, "body over %zu octets", max);
		return -1;
	}
	if (body > 0) {
		out->body = xmalloc(body + 1);
		memcpy(out->body, buf + pos, body);
		out->body[body] = '\0';
	}
	out->len = body;
	return 0;
bad_length:
	why_set(why, "bad Content-Length");
	return -1;
}

/* A request's method and, for POST, its body. */
struct request {
	const char *method, *ctype;
	const void *body;
	size_t len;
};

/* One address: connect, TLS, the request, read to the end.  RES_OK with
 * the whole response in *resp. */
static enum res
get_one(const struct mx_host *h, const char *host, const char *path,
    const struct request *rq, struct tls_creds *creds, int64_t deadline,
    size_t cap, int stop_fd, struct strbuf *resp, char *why)
{
	char err[WHY_MAX];
	struct conn *c;
	enum conn_status st;
	const char *p;
	size_t n;
	int fd = smtpwire_connect(&h->addr, h->addrlen, deadline);

	if (fd < 0) {
		why_set(why, "connect to %s[%s]:%d: %s", host, h->ip,
		    sockaddr_port((const struct sockaddr *)&h->addr),
		    strerror(errno));
		return RES_TEMP;
	}
	c = conn_new(fd);
	conn_set_stop_fd(c, stop_fd);
	if (conn_tls_connect(c, creds, host, true, deadline, err) != CONN_OK) {
		why_set(why, "TLS with %s[%s]: %s", host, h->ip, err);
		conn_free(c);
		return RES_TEMP;
	}
	conn_printf(c,
	    "%s %s HTTP/1.0\r\nHost: %s\r\nUser-Agent: sluice\r\n"
	    "Connection: close\r\n",
	    rq->method, path, host);
	if (rq->body != NULL)
		conn_printf(c, "Content-Type: %s\r\nContent-Length: %zu\r\n",
		    rq->ctype, rq->len);
	conn_write(c, "\r\n", 2);
	if (rq->body != NULL)
		conn_write(c, rq->body, rq->len);
	for (;;) {
		st = conn_peek(c, &p, &n, deadline);
		if (st == CONN_EOF)
			break;
		if (st != CONN_OK) {
			why_set(why, "reading from %s[%s]: %s", host, h->ip,
			    st == CONN_TIMEOUT ? "timed out" : "broken");
			conn_free(c);
			return RES_TEMP;
		}
		if (resp->len + n > cap) {
			why_set(
			    why, "response from %s over %zu octets", host, cap);
			conn_free(c);
			return RES_TEMP;
		}
		strbuf_add(resp, p, n);
		conn_consume(c, n);
	}
	conn_free(c);
	return RES_OK;
}

static enum res
request(const struct mx_host *addrs, int naddrs, const char *host,
    const char *path, const struct request *rq, struct tls_creds *creds,
    int64_t deadline, size_t max, int stop_fd, struct https_reply *out,
    char *why)
{
	struct strbuf resp = {NULL, 0, 0};
	char err[WHY_MAX];
	int i;

	memset(out, 0, sizeof(*out));
	why_set(why, "no address for %s", host);
	for (i = 0; i < naddrs; i++) {
		strbuf_truncate(&resp, 0);
		if (get_one(&addrs[i], host, path, rq, creds, deadline,
		        HTTPS_HEAD_MAX + max + 1, stop_fd, &resp,
		        why) != RES_OK)
			continue;
		if (https_parse_response(
		        resp.p ? resp.p : "", resp.len, max, out, err) != 0) {
			why_set(why, "https://%s%s: %s", host, path, err);
			strbuf_free(&resp);
			return RES_TEMP;
		}
		strbuf_free(&resp);
		return RES_OK;
	}
	strbuf_free(&resp);
	return RES_TEMP;
}

enum res
https_get(const struct mx_host *addrs, int naddrs, const char *host,
    const char *path, struct tls_creds *creds, int64_t deadline, size_t max,
    int stop_fd, struct https_reply *out, char *why)
{
	struct request rq = {"GET", NULL, NULL, 0};

	return request(addrs, naddrs, host, path, &rq, creds, deadline, max,
	    stop_fd, out, why);
}

enum res
https_post(const struct mx_host *addrs, int naddrs, const char *host,
    const char *path, const char *ctype, const void *body, size_t len,
    struct tls_creds *creds, int64_t deadline, int stop_fd,
    struct https_reply *out, char *why)
{
	struct request rq = {"POST", ctype, body, len};

	return request(addrs, naddrs, host, path, &rq, creds, deadline, 4096,
	    stop_fd, out, why);
}
