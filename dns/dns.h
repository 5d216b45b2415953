/*
 * dns.h - where to deliver mail for a domain: MX resolution on ldns
 * (RFC 5321 section 5.1, RFC 7505 null MX), turned into an ordered list of
 * addresses to try.
 *
 * DNSSEC (dnssec = trust-ad): sluice does not validate; it asks with AD
 * set and believes the AD bit of replies from a loopback server (a local
 * validating resolver such as unbound) or one in dnssec_trusted_servers,
 * as Postfix and maddy do.  mx_host and dns_lookup_tlsa say which answers
 * were secure.
 *
 * Threads: each delivery thread owns its own `struct dns_resolver` (an
 * ldns resolver holds sockets and RTT state); nothing here is shared.  The
 * ordering functions are pure.
 *
 * Results are typed as everywhere in sluice: RES_OK, RES_TEMP (try again
 * later: SERVFAIL, timeout, no answer, a malformed answer) or RES_PERM
 * (bounce), with `why`
 * (WHY_MAX bytes) starting with the enhanced status code to report:
 *   "5.1.2 domain example.invalid does not exist (NXDOMAIN)"
 *   "5.1.10 example.com does not accept mail (null MX, RFC 7505)"
 *   "4.4.3 DNS lookup of MX for example.com failed: SERVFAIL"
 *   "4.4.3 DNS lookup of A for mx.example.com failed: malformed answer
 *    (no usable A record)"
 *   "5.4.6 mail for example.com loops back to myself"
 *   "5.4.4 no usable address for example.com"
 */
#ifndef SLUICE_DNS_H
#define SLUICE_DNS_H

#include <stdbool.h>
#include <sys/socket.h>

#include "config.h"
#include "util.h"

#define DNS_NAME_MAX 256

/* One address to try, in order. */
struct mx_host {
	char name[DNS_NAME_MAX];      /* MX exchange (or the domain itself) */
	int pref;                     /* MX preference; -1 for implicit MX */
	struct sockaddr_storage addr; /* port set to the caller's port */
	socklen_t addrlen;
	char ip[64];      /* the address as text */
	bool mx_secure;   /* the MX answer (records or NODATA) was secure */
	bool addr_secure; /* this address's A/AAAA answer was secure */
	/* The name its address records belong to when a secure CNAME chain
	 * led there from `name` (RFC 7672 section 2.2.2: TLSA is asked there
	 * first); "" otherwise. */
	char cname_target[DNS_NAME_MAX];
};

/* A TLSA record (RFC 6698 section 2.1). */
struct dns_tlsa {
	unsigned char usage, selector, mtype;
	unsigned char *data; /* the certificate association data */
	size_t len;
};

/* An MX record as received, for the pure ordering step. */
struct mx_rr {
	char name[DNS_NAME_MAX]; /* lower case, no trailing dot */
	int pref;
};

/* Who "myself" is, for the RFC 5321 section 5.1 loop rule. */
struct dns_self {
	const char *hostname;                 /* our hostname */
	const struct sockaddr_storage *addrs; /* our listen addresses */
	int naddrs;
};

struct dns_resolver;

/*
 * A resolver using cfg->dns_servers (IP or IP:PORT; none means
 * /etc/resolv.conf), cfg->dns_timeout and cfg->inet_protocols.  Queries
 * are recursive (RD), fall back to TCP on truncation, and use no search
 * list (RFC 5321 wants fully qualified names).  NULL with `why`.
 */
struct dns_resolver *dns_resolver_new(const struct config *cfg, char *why);
void dns_resolver_free(struct dns_resolver *r);

/*
 * For tests and fuzzing: a resolver that asks `answer` instead of name
 * servers.  answer(arg, name, qtype, &len) returns the reply to a query
 * (`name` as asked, without the trailing dot; `qtype` 1 for A, 28 for AAAA,
 * 15 for MX) as a DNS message in wire format, malloc'd (the resolver frees
 * it), or NULL for no reply (a transport error).  From ldns_wire2pkt on,
 * replies go through the same code as those from the network.  Equal MX
 * preferences are shuffled from a fixed seed.  Never fails.
 */
typedef unsigned char *(*dns_answer_fn)(
    void *arg, const char *name, int qtype, size_t *len);
struct dns_resolver *dns_resolver_new_canned(
    int inet_protocols, dns_answer_fn answer, void *arg);

/*
 * dnssec = trust-ad for a canned resolver: the AD bit of its answers is
 * believed (they stand for a local validating resolver).
 */
void dns_resolver_set_dnssec(struct dns_resolver *r, bool on);

/*
 * The ordered addresses to try for mail to `domain` on `port`, at most
 * `max_hosts` distinct hosts (each host contributes all its addresses:
 * AAAA then A when inet_protocols allows both).  *out is malloc'd
 * (free it), *n its length (>= 1 on RES_OK).  CNAMEs are followed.  No MX
 * records: the implicit MX, the domain's own A/AAAA.  MX targets that are
 * IP literals or have no address are skipped.  When `self` matches an MX
 * host (its name, or one of its addresses), only hosts with a lower
 * preference value are kept; none left is 5.4.6.
 */
enum res dns_resolve_mx(struct dns_resolver *r, const char *domain, int port,
    const struct dns_self *self, int max_hosts, struct mx_host **out, int *n,
    char *why);

/*
 * Addresses of one host (A/AAAA per inet_protocols), for smarthosts and
 * routes, which bypass MX.  `host` may be an IP literal.  Same conventions
 * as dns_resolve_mx.
 */
enum res dns_resolve_host(struct dns_resolver *r, const char *host, int port,
    struct mx_host **out, int *n, char *why);

/*
 * The TLSA records of `host` for `port` (_PORT._tcp.HOST, RFC 7672
 * section 2.2), whatever their fields: RES_OK with *out (free with
 * dns_tlsa_free) and *n (0: none, NODATA or NXDOMAIN), and *secure when
 * the answer was DNSSEC-validated (dnssec = trust-ad).  RES_TEMP with
 * "4.7.5 TLSA lookup error for HOST:PORT: ..." when the lookup failed:
 * the caller defers that host, never falls back to plaintext.
 */
enum res dns_lookup_tlsa(struct dns_resolver *r, const char *host, int port,
    struct dns_tlsa **out, int *n, bool *secure, char *why);
void dns_tlsa_free(struct dns_tlsa *v, int n);

/*
 * The TXT records of `name`, each record's strings joined (and cut at a
 * NUL): RES_OK with *out (free with dns_txt_free) and *n (0: none, NODATA
 * or NXDOMAIN), *secure as for TLSA; RES_TEMP with `why` when the lookup
 * failed.
 */
enum res dns_lookup_txt(struct dns_resolver *r, const char *name, char ***out,
    int *n, bool *secure, char *why);
void dns_txt_free(char **v, int n);

/*
 * Pure step of dns_resolve_mx: sort `rr` by preference, putting equal
 * preferences in random order (`rnd` returns a random number; tests pass a
 * fixed sequence), then apply the self rule: when rr[k].name equals
 * self_name (case-insensitive), drop every record with preference >=
 * rr[k].pref.  Returns the number of records kept (0 when the self rule
 * removed all: a loop).  Null MX (a single "." record) is detected by the
 * caller before this.
 */
int dns_order_mx(struct mx_rr *rr, int n, const char *self_name,
    unsigned (*rnd)(void *), void *rnd_arg);

#endif
