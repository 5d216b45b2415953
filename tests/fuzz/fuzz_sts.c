/*
 * fuzz_sts.c - what an MTA-STS publisher controls: the HTTP response of
 * the policy host (queue/https.c's https_parse_response), the policy file
 * in it and the _mta-sts TXT record (queue/sts.c), and an MX name checked
 * against the patterns.
 *
 * Input: one octet selecting the part (0: a whole HTTP response whose
 * body is then parsed as a policy, 1: a TXT record, 2: a policy, then a
 * NUL and an MX host name, 3: a TLS-RPT TXT record, queue/tlsrpt.c's
 * tlsrpt_rua), then the octets.
 *
 * Properties:
 *  - a response parsed has a status of 100..599, a body within the cap
 *    that is a copy of octets of the input, a printable Content-Type;
 *  - a TXT record accepted has an id of 1..32 alphanumerics and starts
 *    "v=STSv1";
 *  - a policy accepted has a mode, max_age within 0..31557600, at least
 *    one mx unless mode none, and patterns that are lower-case names of
 *    letters, digits, '-' and '.' with "*." only in front; parsing it
 *    again gives the same;
 *  - the reporting URIs of a TLS-RPT record are mailto: or https: ones,
 *    NUL-terminated within their bound, at most the number asked for,
 *    and none unless the record starts "v=TLSRPTv1";
 *  - an MX name matches a pattern only when it equals it (any case, a
 *    trailing dot aside) or the pattern is "*.x" and the name is one
 *    more label in front of x.
 */
#include "fuzz.h"
#include "https.h"
#include "sts.h"
#include "tlsrpt.h"

#define BODY_CAP 4096

static void
check_policy(const struct sts_policy *p)
{
	int i;
	size_t k;

	FUZZ_ASSERT(p->mode == STS_MODE_NONE || p->mode == STS_MODE_TESTING ||
	                p->mode == STS_MODE_ENFORCE,
	    "a known mode");
	FUZZ_ASSERT(p->max_age >= 0 && p->max_age <= STS_MAX_AGE_MAX,
	    "max_age in range");
	FUZZ_ASSERT(p->mode == STS_MODE_NONE || p->nmx > 0,
	    "mx patterns unless mode none");
	for (i = 0; i < p->nmx; i++) {
		const char *m = p->mx[i];
		size_t start = strncmp(m, "*.", 2) == 0 ? 2 : 0;

		FUZZ_ASSERT(m[start] != '\0', "a pattern is not empty");
		for (k = start; m[k] != '\0'; k++)
			FUZZ_ASSERT((m[k] >= 'a' && m[k] <= 'z') ||
			                (m[k] >= '0' && m[k] <= '9') ||
			                m[k] == '-' || m[k] == '.',
			    "patterns are lower-case names");
	}
}

/* The plain rule, for comparison. */
static bool
plain_match(const struct sts_policy *p, const char *host)
{
	size_t n = strlen(host), k;
	char *h = malloc(n + 1);
	bool yes = false;
	int i;

	if (h == NULL)
		abort();
	if (n > 0 && host[n - 1] == '.')
		n--;
	for (k = 0; k < n; k++)
		h[k] =
		    (host[k] >= 'A' && host[k] <= 'Z') ? host[k] + 32 : host[k];
	h[n] = '\0';
	for (i = 0; i < p->nmx && !yes; i++) {
		const char *m = p->mx[i];

		if (strcmp(m, h) == 0)
			yes = true;
		else if (strncmp(m, "*.", 2) == 0) {
			const char *dot = strchr(h, '.');

			yes = dot != NULL && dot > h &&
			      strcmp(dot + 1, m + 2) == 0;
		}
	}
	free(h);
	return yes;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct https_reply rep;
	struct sts_policy p, again;
	char why[WHY_MAX], id[STS_ID_MAX + 1], *text;
	const char *nul;
	size_t k;

	if (size < 1 || size > 65536)
		return 0;
	switch (data[0] % 4) {
	case 0:
		if (https_parse_response((const char *)data + 1, size - 1,
		        BODY_CAP, &rep, why) != 0)
			return 0;
		FUZZ_ASSERT(rep.status >= 100 && rep.status <= 599,
		    "a three-digit status");
		FUZZ_ASSERT(rep.len <= BODY_CAP && rep.len <= size - 1,
		    "the body fits the cap and the input");
		FUZZ_ASSERT(rep.len == 0 || memmem(data + 1, size - 1, rep.body,
		                                rep.len) != NULL,
		    "the body is octets of the input");
		for (k = 0; rep.ctype[k] != '\0'; k++)
			FUZZ_ASSERT((unsigned char)rep.ctype[k] >= 0x20 &&
			                (unsigned char)rep.ctype[k] < 0x7f,
			    "a printable Content-Type");
		if (rep.len > 0 &&
		    sts_parse_policy(rep.body, rep.len, &p, why) == 0)
			check_policy(&p);
		https_reply_free(&rep);
		break;
	case 3: {
		char uris[3][TLSRPT_URI_MAX];
		int n, i;

		text = malloc(size);
		if (text == NULL)
			abort();
		memcpy(text, data + 1, size - 1);
		text[size - 1] = '\0';
		n = tlsrpt_rua(text, uris, 3);
		FUZZ_ASSERT(n >= 0 && n <= 3, "at most the URIs asked for");
		FUZZ_ASSERT(n == 0 || strncmp(text, "v=TLSRPTv1", 10) == 0,
		    "URIs only from a TLS-RPT record");
		for (i = 0; i < n; i++) {
			FUZZ_ASSERT(
			    strnlen(uris[i], TLSRPT_URI_MAX) < TLSRPT_URI_MAX,
			    "a URI is NUL-terminated");
			FUZZ_ASSERT(strncmp(uris[i], "mailto:", 7) == 0 ||
			                strncmp(uris[i], "https://", 8) == 0,
			    "mailto: or https:");
		}
		free(text);
		break;
	}
	case 1:
		text = malloc(size);
		if (text == NULL)
			abort();
		memcpy(text, data + 1, size - 1);
		text[size - 1] = '\0';
		if (sts_parse_txt(text, id) == 1) {
			FUZZ_ASSERT(strncmp(text + strspn(text, " \t"),
			                "v=STSv1", 7) == 0,
			    "the record starts with the version");
			FUZZ_ASSERT(id[0] != '\0' && strlen(id) <= STS_ID_MAX,
			    "an id of 1 to 32 characters");
			for (k = 0; id[k] != '\0'; k++)
				FUZZ_ASSERT(
				    (id[k] >= '0' && id[k] <= '9') ||
				        (id[k] >= 'a' && id[k] <= 'z') ||
				        (id[k] >= 'A' && id[k] <= 'Z'),
				    "the id is alphanumeric");
		}
		free(text);
		break;
	default:
		nul = memchr(data + 1, '\0', size - 1);
		if (nul == NULL)
			return 0;
		if (sts_parse_policy((const char *)data + 1,
		        (size_t)(nul - (const char *)data) - 1, &p, why) != 0)
			return 0;
		check_policy(&p);
		text = malloc(size);
		if (text == NULL)
			abort();
		k = (size_t)((const uint8_t *)nul - data) + 1;
		memcpy(text, data + k, size - k);
		text[size - k] = '\0';
		FUZZ_ASSERT(sts_mx_matches(&p, text) == plain_match(&p, text),
		    "matching follows the plain rule");
		FUZZ_ASSERT(sts_parse_policy((const char *)data + 1,
		                (size_t)(nul - (const char *)data) - 1, &again,
		                why) == 0 &&
		                memcmp(&p, &again, sizeof(p)) == 0,
		    "parsing again gives the same");
		free(text);
		break;
	}
	return 0;
}
