/*
 * https.h - the smallest HTTPS client MTA-STS needs (RFC 8461 section
 * 3.3): one GET over GnuTLS with PKIX verification of the host name,
 * HTTP/1.0 (so no chunked encoding), no redirects, the response bounded
 * in size and time.  Kept in one file so that a move to libcurl stays
 * cheap if sluice ever needs more of HTTP.
 *
 * Threads: no shared state; a call belongs to its caller's thread.
 */
#ifndef SLUICE_HTTPS_H
#define SLUICE_HTTPS_H

#include <stddef.h>
#include <stdint.h>

#include "dns.h"
#include "util.h"

#define HTTPS_HEAD_MAX (16 * 1024) /* status line and headers */

struct tls_creds;

struct https_reply {
	int status;      /* 200, 301, 404, ... */
	char ctype[128]; /* Content-Type as sent, "" when none */
	char *body;      /* malloc'd, NUL-terminated; NULL when empty */
	size_t len;      /* octets of body */
};

/*
 * GET https://HOST/PATH from one of `addrs` (HOST's addresses, with the
 * port to use), verifying the certificate for HOST against `creds`, by
 * `deadline` (now_ms()), the body at most `max` octets.  RES_OK with *out
 * (any status: the caller decides; free with https_reply_free); RES_TEMP
 * with `why` when no address gave a response (connect, TLS, a response
 * that is not HTTP, too long).
 */
enum res https_get(const struct mx_host *addrs, int naddrs, const char *host,
    const char *path, struct tls_creds *creds, int64_t deadline, size_t max,
    int stop_fd, struct https_reply *out, char *why);
void https_reply_free(struct https_reply *r);

/* POST `body` (`len` octets of `ctype`) the same way (the response body
 * kept up to 4 KB). */
enum res https_post(const struct mx_host *addrs, int naddrs, const char *host,
    const char *path, const char *ctype, const void *body, size_t len,
    struct tls_creds *creds, int64_t deadline, int stop_fd,
    struct https_reply *out, char *why);

/*
 * The pure step: a whole response (read to the end of the connection) in
 * `buf` parsed into *out: "HTTP/1.x NNN" status line, headers (one per
 * line, no folding), an empty line, the body (Content-Length long when
 * given).  0, or -1 with `why` (not HTTP, a header too long, a body over
 * `max` or shorter than its Content-Length, chunked encoding).
 */
int https_parse_response(const char *buf, size_t len, size_t max,
    struct https_reply *out, char *why);

#endif
