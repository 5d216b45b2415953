/*
 * tlsrpt.h - TLS-RPT (RFC 8460) reports of one UTC day from the
 * tlsrpt_results table that delivery fills: the JSON report of each
 * recipient domain (section 4), the reporting URIs of its _smtp._tls
 * record (section 3), the gzip of a report and the report mail (section
 * 5.3: multipart/report, report-type="tlsrpt", with TLS-Required: No).
 *
 * Threads: no shared state.
 */
#ifndef SLUICE_TLSRPT_H
#define SLUICE_TLSRPT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "envelope.h"
#include "store.h"

#define TLSRPT_URI_MAX 512
#define TLSRPT_RUA_MAX 8

struct tlsrpt_report {
	char domain[256];
	char *json; /* one line, ending in LF */
	size_t len;
};

/*
 * The reports of `day` (UTC midnight), one per domain in domain order:
 * *out (free with tlsrpt_free) and *n; -1 with `why`.
 */
int tlsrpt_build(struct store *st, const struct config *cfg, int64_t day,
    struct tlsrpt_report **out, int *n, char *why);
void tlsrpt_free(struct tlsrpt_report *v, int n);

/*
 * The mailto: and https: URIs of a "v=TLSRPTv1; rua=..." TXT record, at
 * most `max`, into uris; 0 when the record is not TLS-RPT or has none.
 */
int tlsrpt_rua(const char *txt, char (*uris)[TLSRPT_URI_MAX], int max);

/* `in` gzipped (RFC 1952) into *out (malloc'd): 0, or -1. */
int tlsrpt_gzip(const void *in, size_t len, unsigned char **out, size_t *olen);

/* The report mail of `domain` for `day` with the gzipped report (a
 * malloc'd string of *len octets, CRLF lines). */
char *tlsrpt_mail(const struct config *cfg, const char *domain, int64_t day,
    const unsigned char *gz, size_t gzlen, size_t *len);

struct tls_creds;
struct dns_resolver;
struct dkim_keys;

/* How reports are sent: by the CLI or by the server's daily run. */
struct tlsrpt_send {
	const struct config *cfg;
	struct dns_resolver *dns;     /* the rua TXT records, https: hosts */
	struct tls_creds *creds;      /* PKIX trust for https: reports */
	int stop_fd;                  /* readable: give up (shutdown), or -1 */
	const struct dkim_keys *dkim; /* signs the report mails, or NULL */
	/* Queue a report mail (text of len octets) for env's recipients. */
	enum res (*enqueue)(void *arg, const struct envelope *env,
	    const char *text, size_t len, char *why);
	/* What happened: progress (ok) or a problem. */
	void (*say)(void *arg, bool ok, const char *fmt, ...)
	    __attribute__((format(printf, 3, 4)));
	void *arg;
};

/*
 * Send `rep` (of `day`) to the rua of its domain's _smtp._tls record:
 * gzipped, one queued mail to the mailto: addresses, a POST to each
 * https: one (200 or 201).  0, or -1 when a destination was missed.
 */
int tlsrpt_send_one(
    const struct tlsrpt_send *s, int64_t day, const struct tlsrpt_report *rep);

#endif
