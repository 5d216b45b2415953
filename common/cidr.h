/*
 * cidr.h - IPv4/IPv6 network lists ("127.0.0.0/8, ::1/128") and matching
 * of peer addresses against them.  Pure; safe from any thread.
 */
#ifndef SLUICE_CIDR_H
#define SLUICE_CIDR_H

#include <stdbool.h>
#include <sys/socket.h>

struct cidr {
	int family;             /* AF_INET or AF_INET6 */
	unsigned char addr[16]; /* network address, host bits cleared */
	int prefix;
};

/*
 * Parse "192.0.2.0/24", "2001:db8::/32" or a bare address (a host route).
 * Returns 0, or -1 with `why` (WHY_MAX) filled.  Host bits set beyond the
 * prefix are an error, as in Postfix, since they usually hide a typo.
 */
int cidr_parse(const char *s, struct cidr *out, char *why);

/*
 * True when `sa` lies in one of `n` networks.  IPv4-mapped IPv6 peers
 * (::ffff:a.b.c.d) match IPv4 networks.
 */
bool cidr_match(const struct cidr *list, int n, const struct sockaddr *sa);

/*
 * Format the address of `sa` as text ("192.0.2.1", "2001:db8::1"); mapped
 * IPv4 is shown as IPv4.  `len` >= 46.
 */
void sockaddr_ntop(const struct sockaddr *sa, char *buf, unsigned len);

/* Port of `sa` in host order. */
int sockaddr_port(const struct sockaddr *sa);

#endif
