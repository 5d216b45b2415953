/*
 * sts.h - MTA-STS (RFC 8461): the _mta-sts TXT record, the policy file
 * and its MX patterns (pure), and fetching a policy over HTTPS.  Caching
 * (the sts_policies table) and applying a policy are delivery's
 * (deliver.c).
 *
 * Threads: no shared state.
 */
#ifndef SLUICE_STS_H
#define SLUICE_STS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dns.h"
#include "util.h"

#define STS_MX_MAX 32              /* mx patterns kept per policy */
#define STS_ID_MAX 32              /* id: 1 to 32 alphanumerics */
#define STS_POLICY_MAX (64 * 1024) /* octets of a policy file */
#define STS_MAX_AGE_MAX 31557600   /* about a year (section 3.2) */
#define STS_PATH "/.well-known/mta-sts.txt"

enum sts_mode { STS_MODE_NONE = 0, STS_MODE_TESTING, STS_MODE_ENFORCE };

struct sts_policy {
	char id[STS_ID_MAX + 1]; /* from the TXT record it was fetched under */
	enum sts_mode mode;
	char mx[STS_MX_MAX][DNS_NAME_MAX]; /* lower case, "*.x" or a name */
	int nmx;
	int64_t max_age; /* seconds */
};

/*
 * A TXT record of _mta-sts.DOMAIN (section 3.1): 1 when it is a valid
 * "v=STSv1; id=...;" record, its id into id[STS_ID_MAX + 1]; 0 when not
 * (another record, or a bad one: both are ignored).
 */
int sts_parse_txt(const char *txt, char *id);

/*
 * A policy file (section 3.2): "key: value" lines ending in LF or CRLF;
 * version STSv1, mode, max_age (0..STS_MAX_AGE_MAX) required, mx (one or
 * more unless mode is none); unknown keys ignored.  0 with *p filled
 * (id left empty), or -1 with `why`.
 */
int sts_parse_policy(
    const char *text, size_t len, struct sts_policy *p, char *why);

/* Does MX host `host` match one of the policy's patterns (section 4.1:
 * "*.example.com" matches exactly one more label)? */
bool sts_mx_matches(const struct sts_policy *p, const char *host);

const char *sts_mode_name(enum sts_mode m);

struct tls_creds;

/*
 * Fetch DOMAIN's policy from https://mta-sts.DOMAIN:PORT/.well-known/
 * mta-sts.txt (PORT: mta_sts_port), its certificate PKIX-verified with
 * `creds`, by `deadline`: only a 200 with text/plain counts (no
 * redirects).  0 with *p (id empty) and *text (the body as fetched,
 * malloc'd), or -1 with `why` ("4.7.5 MTA-STS policy of DOMAIN: ...").
 */
int sts_fetch(struct dns_resolver *r, const char *domain, int port,
    struct tls_creds *creds, int64_t deadline, int stop_fd,
    struct sts_policy *p, char **text, char *why);

#endif
