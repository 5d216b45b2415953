/*
 * fuzz_dns.c - DNS answer handling (dns/dns.c) from ldns_wire2pkt on: what
 * a hostile or broken name server can answer.  A canned resolver
 * (dns_resolver_new_canned) answers each query with the next packet of
 * the input.
 *
 * Input: one octet of options (bits 0-1 inet_protocols, bit 2
 * dns_resolve_host instead of dns_resolve_mx, bit 3 our hostname is
 * mx1.example.com, bits 4-7 max_hosts), then packets, each a 2-octet
 * big-endian length and a DNS message; a length of 0, or the end of the
 * input, is no reply (a transport error).  The domain asked for is
 * example.com (or, for dns_resolve_host, mail.example.com); our own
 * listening address is 192.0.2.1.
 *
 * The resolver runs with dnssec = trust-ad, so the AD bit of each packet
 * counts.  After an MX result, the TLSA records of its first host are
 * asked (the next packet).
 *
 * Properties (dns.h):
 *  - RES_OK comes with at least one address, and *out and *n are empty
 *    otherwise;
 *  - every host has a NUL-terminated name, an address of a family
 *    inet_protocols allows with the right length and port, its text form
 *    in `ip`, and no address appears twice; preferences never decrease;
 *    at most max_hosts distinct hosts; never our own address;
 *  - RES_TEMP's reason starts "4.", RES_PERM's "5.", printable ASCII;
 *  - every host of an MX result says the same of the MX answer's
 *    security;
 *  - a TLSA lookup gives records with association data, or nothing, or
 *    RES_TEMP with a "4.7.5" reason;
 *  - queries are sane: a NUL-terminated name of at most 4 x 256
 *    characters (a CNAME target's text, \DDD escapes included), type A,
 *    AAAA, MX or TLSA.
 */
#include "dns.h"
#include "fuzz.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#define PORT 2525

struct feed {
	const uint8_t *p;
	size_t left;
	int queries;
};

static unsigned char *
answer(void *arg, const char *name, int qtype, size_t *len)
{
	struct feed *f = arg;
	unsigned char *wire;
	size_t n;

	/* A name is at most 255 octets on the wire; its text form (a CNAME
	 * target from the answer) escapes odd octets as \DDD. */
	FUZZ_ASSERT(strnlen(name, 4 * DNS_NAME_MAX + 4) <= 4 * DNS_NAME_MAX,
	    "query names are bounded");
	FUZZ_ASSERT(qtype == 1 || qtype == 28 || qtype == 15 || qtype == 52,
	    "queries are A, AAAA, MX or TLSA");
	FUZZ_ASSERT(++f->queries <= 1000, "a bounded number of queries");
	if (f->left < 2)
		return NULL;
	n = (size_t)f->p[0] << 8 | f->p[1];
	f->p += 2;
	f->left -= 2;
	if (n > f->left)
		n = f->left;
	if (n == 0)
		return NULL;
	wire = malloc(n);
	if (wire == NULL)
		abort();
	memcpy(wire, f->p, n);
	f->p += n;
	f->left -= n;
	*len = n;
	return wire;
}

static void
check_why(enum res res, const char *why)
{
	size_t i, n = strnlen(why, WHY_MAX);

	FUZZ_ASSERT(n < WHY_MAX, "why is NUL-terminated");
	FUZZ_ASSERT(n >= 4, "a failure has a reason");
	FUZZ_ASSERT(why[0] == (res == RES_TEMP ? '4' : '5') && why[1] == '.',
	    "RES_TEMP says 4.x.y, RES_PERM 5.x.y");
	for (i = 0; i < n; i++)
		FUZZ_ASSERT(
		    why[i] >= 0x20 && why[i] < 0x7f, "the reason is printable");
}

/* `self` NULL: no self rule (dns_resolve_host). */
static void
check_hosts(const struct mx_host *h, int n, int inet, int max_hosts,
    const struct sockaddr_storage *self)
{
	int i, j, names = 0;

	for (i = 0; i < n; i++) {
		char ip[64];
		const void *a;
		int port;

		FUZZ_ASSERT(strnlen(h[i].name, DNS_NAME_MAX) < DNS_NAME_MAX &&
		                h[i].name[0] != '\0',
		    "host name NUL-terminated, not empty");
		FUZZ_ASSERT(
		    strnlen(h[i].cname_target, DNS_NAME_MAX) < DNS_NAME_MAX &&
		        (h[i].cname_target[0] == '\0' || h[i].addr_secure),
		    "a CNAME target is NUL-terminated, and only for a secure "
		    "address");
		if (h[i].addr.ss_family == AF_INET) {
			const struct sockaddr_in *sin =
			    (const struct sockaddr_in *)&h[i].addr;

			FUZZ_ASSERT(
			    inet != INET_IPV6, "no IPv4 when ipv6 only");
			FUZZ_ASSERT(h[i].addrlen == sizeof(*sin), "addrlen");
			a = &sin->sin_addr;
			port = ntohs(sin->sin_port);
			FUZZ_ASSERT(self == NULL ||
			                memcmp(a,
			                    &((const struct sockaddr_in *)self)
			                         ->sin_addr,
			                    4) != 0,
			    "never our own address");
		} else {
			const struct sockaddr_in6 *sin6 =
			    (const struct sockaddr_in6 *)&h[i].addr;

			FUZZ_ASSERT(h[i].addr.ss_family == AF_INET6,
			    "an IPv4 or IPv6 address");
			FUZZ_ASSERT(
			    inet != INET_IPV4, "no IPv6 when ipv4 only");
			FUZZ_ASSERT(h[i].addrlen == sizeof(*sin6), "addrlen");
			a = &sin6->sin6_addr;
			port = ntohs(sin6->sin6_port);
		}
		FUZZ_ASSERT(port == PORT, "the caller's port");
		FUZZ_ASSERT(inet_ntop(h[i].addr.ss_family, a, ip, sizeof(ip)) &&
		                strcmp(ip, h[i].ip) == 0,
		    "ip is the address as text");
		for (j = 0; j < i; j++)
			FUZZ_ASSERT(h[j].addrlen != h[i].addrlen ||
			                memcmp(&h[j].addr, &h[i].addr,
			                    h[i].addrlen) != 0,
			    "no address twice");
		if (i > 0)
			FUZZ_ASSERT(h[i].pref >= h[i - 1].pref,
			    "preferences never decrease");
		if (i == 0 || strcmp(h[i].name, h[i - 1].name) != 0)
			names++;
	}
	if (max_hosts > 0)
		FUZZ_ASSERT(names <= max_hosts, "at most max_hosts hosts");
}

static void
check_tlsa(struct dns_resolver *r, const char *host)
{
	struct dns_tlsa *t = (struct dns_tlsa *)r; /* must be reset */
	char why[WHY_MAX];
	bool secure;
	int i, n = -1;
	enum res res;

	memset(why, 'x', sizeof(why));
	res = dns_lookup_tlsa(r, host, PORT, &t, &n, &secure, why);
	if (res != RES_OK) {
		FUZZ_ASSERT(res == RES_TEMP && n == 0 && t == NULL,
		    "a failed TLSA lookup is temporary, and empty");
		check_why(res, why);
		FUZZ_ASSERT(strncmp(why, "4.7.5 ", 6) == 0,
		    "a TLSA lookup error is 4.7.5");
		FUZZ_ASSERT(!secure, "a failure is not secure");
		return;
	}
	FUZZ_ASSERT(n >= 0 && (n == 0 || t != NULL), "records or none");
	for (i = 0; i < n; i++)
		FUZZ_ASSERT(t[i].len > 0 && t[i].data != NULL,
		    "a TLSA record has association data");
	dns_tlsa_free(t, n);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct sockaddr_storage self_addr;
	struct sockaddr_in *sin = (struct sockaddr_in *)&self_addr;
	struct dns_self self;
	struct dns_resolver *r;
	struct mx_host *out = (struct mx_host *)&self; /* must be reset */
	struct feed f;
	char why[WHY_MAX];
	enum res res;
	int n = -1, inet, max_hosts;

	if (size < 1 || size > 65536)
		return 0;
	inet = data[0] & 3;
	if (inet == 3)
		inet = INET_ALL;
	max_hosts = data[0] >> 4;
	memset(&self_addr, 0, sizeof(self_addr));
	sin->sin_family = AF_INET;
	inet_pton(AF_INET, "192.0.2.1", &sin->sin_addr);
	self.hostname = (data[0] & 8) ? "mx1.example.com" : "relay.invalid";
	self.addrs = &self_addr;
	self.naddrs = 1;
	f.p = data + 1;
	f.left = size - 1;
	f.queries = 0;

	r = dns_resolver_new_canned(inet, answer, &f);
	dns_resolver_set_dnssec(r, true);
	memset(why, 'x', sizeof(why));
	if (data[0] & 4)
		res = dns_resolve_host(
		    r, "mail.example.com", PORT, &out, &n, why);
	else
		res = dns_resolve_mx(
		    r, "example.com", PORT, &self, max_hosts, &out, &n, why);
	if (res == RES_OK) {
		FUZZ_ASSERT(n >= 1 && out != NULL,
		    "RES_OK comes with at least one address");
		if (data[0] & 4)
			check_hosts(out, n, inet, 0, NULL);
		else
			check_hosts(out, n, inet, max_hosts, &self_addr);
		for (int i = 1; i < n; i++)
			FUZZ_ASSERT(out[i].mx_secure == out[0].mx_secure,
			    "one MX answer, one security");
		check_tlsa(r, out[0].name);
	} else {
		FUZZ_ASSERT(res == RES_TEMP || res == RES_PERM, "a result");
		FUZZ_ASSERT(n == 0 && out == NULL, "nothing on failure");
		check_why(res, why);
	}
	free(out);
	dns_resolver_free(r);
	return 0;
}
