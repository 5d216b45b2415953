/*
 * proxy.c - the PROXY protocol header, versions 1 and 2 (see proxy.h;
 * haproxy's doc/proxy-protocol.txt).  Strict: what a balancer sends is
 * taken, anything else is refused, never guessed at.
 */
#include "proxy.h"
#include "util.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>

#define V1_MAX 107 /* the whole line, CRLF included */

static const unsigned char v2_sig[12] = {
    0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};

/* A port: 1 to 5 digits, no sign, no leading zero, at most 65535. */
static bool
port_ok(const char *s, int *port)
{
	size_t n = strlen(s), i;
	long v = 0;

	if (n == 0 || n > 5 || (n > 1 && s[0] == '0'))
		return false;
	for (i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		v = v * 10 + (s[i] - '0');
	}
	if (v > 65535)
		return false;
	*port = (int)v;
	return true;
}

static enum proxy_status
parse_v1(const unsigned char *p, size_t n, struct proxy_hdr *h, char *why)
{
	char line[V1_MAX + 1], *f[7], *save = NULL, *t;
	size_t len, i;
	int nf = 0, sport, dport, af;
	const unsigned char *crlf = NULL;

	for (i = 0; i + 1 < n && i + 1 < V1_MAX; i++)
		if (p[i] == '\r' && p[i + 1] == '\n') {
			crlf = p + i;
			break;
		}
	if (crlf == NULL) {
		if (n >= V1_MAX) {
			why_set(why,
			    "PROXY v1 header without CRLF in %d octets",
			    V1_MAX);
			return PROXY_BAD;
		}
		return PROXY_MORE;
	}
	len = (size_t)(crlf - p);
	memcpy(line, p, len);
	line[len] = '\0';
	for (i = 0; i < len; i++)
		if ((unsigned char)line[i] < 0x20 ||
		    (unsigned char)line[i] > 0x7e) {
			why_set(why, "PROXY v1 header with a control octet");
			return PROXY_BAD;
		}
	h->used = len + 2;
	if (strncmp(line, "PROXY UNKNOWN", 13) == 0 &&
	    (line[13] == '\0' || line[13] == ' ')) {
		h->local = true;
		return PROXY_OK;
	}
	/* Single spaces between the fields (the spec's format). */
	if (strstr(line, "  ") != NULL || line[len - 1] == ' ') {
		why_set(why, "PROXY v1 header with extra spaces");
		return PROXY_BAD;
	}
	for (t = strtok_r(line, " ", &save); t != NULL && nf < 7;
	     t = strtok_r(NULL, " ", &save))
		f[nf++] = t;
	if (nf != 6 || t != NULL || strcmp(f[0], "PROXY") != 0 ||
	    (strcmp(f[1], "TCP4") != 0 && strcmp(f[1], "TCP6") != 0)) {
		why_set(why, "bad PROXY v1 header (expected PROXY TCP4|TCP6 "
		             "SRC DST SPORT DPORT)");
		return PROXY_BAD;
	}
	af = strcmp(f[1], "TCP4") == 0 ? AF_INET : AF_INET6;
	memset(&h->src, 0, sizeof(h->src));
	if (af == AF_INET) {
		struct sockaddr_in *sin = (struct sockaddr_in *)&h->src;
		struct in_addr dst;

		if (inet_pton(AF_INET, f[2], &sin->sin_addr) != 1 ||
		    inet_pton(AF_INET, f[3], &dst) != 1)
			goto bad_addr;
		sin->sin_family = AF_INET;
		h->srclen = sizeof(*sin);
	} else {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&h->src;
		struct in6_addr dst;

		if (inet_pton(AF_INET6, f[2], &sin6->sin6_addr) != 1 ||
		    inet_pton(AF_INET6, f[3], &dst) != 1)
			goto bad_addr;
		sin6->sin6_family = AF_INET6;
		h->srclen = sizeof(*sin6);
	}
	if (!port_ok(f[4], &sport) || !port_ok(f[5], &dport)) {
		why_set(why, "bad port in the PROXY v1 header");
		return PROXY_BAD;
	}
	if (af == AF_INET)
		((struct sockaddr_in *)&h->src)->sin_port =
		    htons((uint16_t)sport);
	else
		((struct sockaddr_in6 *)&h->src)->sin6_port =
		    htons((uint16_t)sport);
	return PROXY_OK;
bad_addr:
	why_set(why, "bad %s address in the PROXY v1 header", f[1]);
	return PROXY_BAD;
}

static enum proxy_status
parse_v2(const unsigned char *p, size_t n, struct proxy_hdr *h, char *why)
{
	size_t len;
	unsigned cmd, fam;

	if (n < 16)
		return PROXY_MORE;
	if ((p[12] & 0xF0) != 0x20) {
		why_set(why, "PROXY v2 header of version %u", p[12] >> 4);
		return PROXY_BAD;
	}
	cmd = p[12] & 0x0F;
	fam = p[13];
	len = ((size_t)p[14] << 8) | p[15];
	if (cmd > 1) {
		why_set(why, "PROXY v2 header with command %u", cmd);
		return PROXY_BAD;
	}
	if (len > PROXY_V2_MAX_LEN) {
		why_set(why, "PROXY v2 header of %zu octets (at most %d)",
		    16 + len, PROXY_MAX);
		return PROXY_BAD;
	}
	if (n < 16 + len)
		return PROXY_MORE;
	h->used = 16 + len;
	if (cmd == 0 || fam == 0x00 || fam == 0x31 || fam == 0x32) {
		/* LOCAL (a health check), UNSPEC or a UNIX socket. */
		h->local = true;
		return PROXY_OK;
	}
	memset(&h->src, 0, sizeof(h->src));
	if (fam == 0x11 && len >= 12) { /* TCP over IPv4 */
		struct sockaddr_in *sin = (struct sockaddr_in *)&h->src;

		sin->sin_family = AF_INET;
		memcpy(&sin->sin_addr, p + 16, 4);
		memcpy(&sin->sin_port, p + 24, 2);
		h->srclen = sizeof(*sin);
		return PROXY_OK;
	}
	if (fam == 0x21 && len >= 36) { /* TCP over IPv6 */
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&h->src;

		sin6->sin6_family = AF_INET6;
		memcpy(&sin6->sin6_addr, p + 16, 16);
		memcpy(&sin6->sin6_port, p + 48, 2);
		h->srclen = sizeof(*sin6);
		return PROXY_OK;
	}
	why_set(why, "PROXY v2 header with address family 0x%02x (%zu octets)",
	    fam, len);
	return PROXY_BAD;
}

enum proxy_status
proxy_parse(const unsigned char *p, size_t n, struct proxy_hdr *h, char *why)
{
	static const char v1_start[] = "PROXY ";
	size_t k;

	memset(h, 0, sizeof(*h));
	if (n == 0)
		return PROXY_MORE;
	if (p[0] == 'P') {
		k = n < 6 ? n : 6;
		if (memcmp(p, v1_start, k) != 0)
			goto bad;
		return parse_v1(p, n, h, why);
	}
	if (p[0] == v2_sig[0]) {
		k = n < sizeof(v2_sig) ? n : sizeof(v2_sig);
		if (memcmp(p, v2_sig, k) != 0)
			goto bad;
		return parse_v2(p, n, h, why);
	}
bad:
	why_set(why, "no PROXY header");
	return PROXY_BAD;
}
