/*
 * cidr.c - network lists and peer matching (see cidr.h).
 */
#include "cidr.h"
#include "util.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

int
cidr_parse(const char *s, struct cidr *out, char *why)
{
	char buf[64];
	const char *slash = strchr(s, '/');
	size_t alen = slash ? (size_t)(slash - s) : strlen(s);
	int maxbits, i;

	memset(out, 0, sizeof(*out));
	if (alen == 0 || alen >= sizeof(buf)) {
		why_set(why, "bad network address \"%s\"", s);
		return -1;
	}
	memcpy(buf, s, alen);
	buf[alen] = '\0';
	if (inet_pton(AF_INET, buf, out->addr) == 1) {
		out->family = AF_INET;
		maxbits = 32;
	} else if (inet_pton(AF_INET6, buf, out->addr) == 1) {
		out->family = AF_INET6;
		maxbits = 128;
	} else {
		why_set(why, "bad network address \"%s\"", s);
		return -1;
	}
	out->prefix = maxbits;
	if (slash != NULL) {
		char *end;
		long p = strtol(slash + 1, &end, 10);

		if (slash[1] == '\0' || *end != '\0' || p < 0 || p > maxbits) {
			why_set(why, "bad prefix length in \"%s\"", s);
			return -1;
		}
		out->prefix = (int)p;
	}
	for (i = out->prefix; i < maxbits; i++) {
		if (out->addr[i / 8] & (0x80 >> (i % 8))) {
			why_set(why,
			    "\"%s\" has host bits set beyond the /%d prefix", s,
			    out->prefix);
			return -1;
		}
	}
	return 0;
}

static bool
prefix_match(const unsigned char *a, const unsigned char *net, int bits)
{
	int full = bits / 8, rest = bits % 8;

	if (memcmp(a, net, (size_t)full) != 0)
		return false;
	if (rest == 0)
		return true;
	return ((a[full] ^ net[full]) & (0xff << (8 - rest))) == 0;
}

bool
cidr_match(const struct cidr *list, int n, const struct sockaddr *sa)
{
	const unsigned char *a4 = NULL, *a6 = NULL;
	int i;

	if (sa->sa_family == AF_INET) {
		a4 = (const unsigned char *)&((const struct sockaddr_in *)sa)
		         ->sin_addr;
	} else if (sa->sa_family == AF_INET6) {
		const struct in6_addr *in6 =
		    &((const struct sockaddr_in6 *)sa)->sin6_addr;

		a6 = in6->s6_addr;
		if (IN6_IS_ADDR_V4MAPPED(in6))
			a4 = in6->s6_addr + 12;
	}
	for (i = 0; i < n; i++) {
		if (list[i].family == AF_INET && a4 != NULL &&
		    prefix_match(a4, list[i].addr, list[i].prefix))
			return true;
		if (list[i].family == AF_INET6 && a6 != NULL &&
		    prefix_match(a6, list[i].addr, list[i].prefix))
			return true;
	}
	return false;
}

void
sockaddr_ntop(const struct sockaddr *sa, char *buf, unsigned len)
{
	if (sa->sa_family == AF_INET) {
		inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr,
		    buf, len);
	} else if (sa->sa_family == AF_INET6) {
		const struct in6_addr *in6 =
		    &((const struct sockaddr_in6 *)sa)->sin6_addr;

		if (IN6_IS_ADDR_V4MAPPED(in6))
			inet_ntop(AF_INET, in6->s6_addr + 12, buf, len);
		else
			inet_ntop(AF_INET6, in6, buf, len);
	} else {
		snprintf(buf, len, "unknown");
	}
}

int
sockaddr_port(const struct sockaddr *sa)
{
	if (sa->sa_family == AF_INET)
		return ntohs(((const struct sockaddr_in *)sa)->sin_port);
	if (sa->sa_family == AF_INET6)
		return ntohs(((const struct sockaddr_in6 *)sa)->sin6_port);
	return 0;
}
