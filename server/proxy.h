/*
 * proxy.h - the HAProxy PROXY protocol header (versions 1 and 2) that a
 * load balancer sends before the client's first octet, on listeners
 * marked /proxy: where the connection really comes from.
 *
 * Threads: pure; any thread.
 */
#ifndef SLUICE_PROXY_H
#define SLUICE_PROXY_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

/* The longest header taken: v1's 107 octets, or v2's 16 and at most
 * PROXY_V2_MAX_LEN more (addresses and TLVs). */
#define PROXY_V2_MAX_LEN 512
#define PROXY_MAX (16 + PROXY_V2_MAX_LEN)

enum proxy_status {
	PROXY_MORE, /* a valid start: more octets are needed */
	PROXY_BAD,  /* not a PROXY header (why says how) */
	PROXY_OK,   /* a whole header of h->used octets */
};

struct proxy_hdr {
	size_t used; /* octets of the header */
	bool local;  /* LOCAL, UNKNOWN or AF_UNIX: no client address given
	                (a health check); the connection's own is kept */
	struct sockaddr_storage src; /* the client, when !local */
	socklen_t srclen;
};

/*
 * Parse the start of a connection (`n` octets at `p`).  Version 1 is
 * "PROXY TCP4|TCP6 SRC DST SPORT DPORT\r\n" or "PROXY UNKNOWN...\r\n",
 * with addresses and ports exactly as inet_pton and 0..65535 take them;
 * version 2 is the 12-octet signature, version 2 with the command LOCAL
 * or PROXY, a TCP over IPv4 or IPv6 (or UNSPEC, UNIX) address block.
 * `why` (WHY_MAX) is set on PROXY_BAD.
 */
enum proxy_status proxy_parse(
    const unsigned char *p, size_t n, struct proxy_hdr *h, char *why);

#endif
