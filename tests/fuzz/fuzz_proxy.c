/*
 * fuzz_proxy.c - the PROXY protocol header parser (server/proxy.c) on
 * whatever a peer sends first.  Input: the octets of the connection.
 *
 * Properties:
 *  - a header taken (PROXY_OK) is at most PROXY_MAX and at most the
 *    input's octets; parsing exactly those octets gives the same header,
 *    and every shorter start of it asks for more (PROXY_MORE), so the
 *    header is found whatever pieces it arrives in;
 *  - an address taken is IPv4 or IPv6 with the matching length;
 *  - PROXY_MORE is only given while fewer than PROXY_MAX octets were seen.
 */
#include "fuzz.h"
#include "proxy.h"
#include "util.h"

#include <netinet/in.h>

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct proxy_hdr h, again;
	char why[WHY_MAX];
	enum proxy_status st;
	size_t k;

	if (size > 4 * PROXY_MAX)
		return 0;
	st = proxy_parse(data, size, &h, why);
	if (st == PROXY_MORE)
		FUZZ_ASSERT(size < PROXY_MAX, "more only below PROXY_MAX");
	if (st != PROXY_OK)
		return 0;
	FUZZ_ASSERT(h.used > 0 && h.used <= size && h.used <= PROXY_MAX,
	    "the header fits in the input and in PROXY_MAX");
	if (!h.local)
		FUZZ_ASSERT((h.src.ss_family == AF_INET &&
		                h.srclen == sizeof(struct sockaddr_in)) ||
		                (h.src.ss_family == AF_INET6 &&
		                    h.srclen == sizeof(struct sockaddr_in6)),
		    "an IPv4 or IPv6 client address");
	FUZZ_ASSERT(proxy_parse(data, h.used, &again, why) == PROXY_OK &&
	                again.used == h.used && again.local == h.local &&
	                memcmp(&again.src, &h.src, sizeof(h.src)) == 0,
	    "the header alone parses the same");
	for (k = 0; k < h.used; k++)
		FUZZ_ASSERT(proxy_parse(data, k, &again, why) == PROXY_MORE,
		    "every shorter start asks for more");
	return 0;
}
