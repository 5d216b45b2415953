/*
 * dns.c - where to deliver mail for a domain: MX, A and AAAA lookups on
 * ldns, turned into the ordered list of addresses to try (RFC 5321 section
 * 5.1, RFC 7505 null MX).  The contract is in dns.h.
 *
 * Threads: a `struct dns_resolver` belongs to one thread at a time (the
 * ldns resolver inside holds per-server RTT state and the PRNG state for
 * shuffling equal preferences lives next to it); nothing in this file is
 * shared between threads.  dns_order_mx() is pure.
 *
 * Invariants:
 *  1. Every lookup goes through dns_query(): one question, no search list,
 *     CNAMEs followed for at most DNS_CNAME_MAX hops, and the outcome
 *     typed as RES_OK (records, or none: NODATA), RES_PERM (NXDOMAIN) or
 *     RES_TEMP (transport error, timeout, SERVFAIL, REFUSED, ...).  The
 *     records returned are usable: an A record holds 4 octets, AAAA 16,
 *     MX a preference and a name; others are dropped, and an answer with
 *     records of the type but none usable is RES_TEMP ("malformed
 *     answer", as Postfix says "malformed or unexpected name server
 *     reply"), never an empty success.
 *  2. A result list holds hosts in the order to try: ascending preference,
 *     and within one host its AAAA addresses before its A addresses.  No
 *     address appears twice (the first, best-preference, occurrence wins).
 *  3. RES_OK always comes with at least one address.
 *  4. An answer is secure (DNSSEC) only with dnssec = trust-ad, when the
 *     reply had AD set and came from a trusted server (loopback, or
 *     dnssec_trusted_servers); a CNAME chain is secure only when every
 *     reply along it was.  The cache keeps the flag with the answer.
 *
 * Limits: ldns uses one port for all its name servers, so when
 * dns_servers lists several with different ports, the first one's port
 * applies to all.  Each query waits dns_timeout for each server, once.
 */
#include "dns.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include <ldns/ldns.h>
#undef dprintf /* ldns/util.h defines one that breaks POSIX dprintf() */

#include "cidr.h"

#define DNS_CNAME_MAX 8 /* CNAME hops followed per lookup */
#define DNS_MX_MAX 100  /* max_hosts counted at most this, for lookups */
#define DNS_MX_SPARE 10 /* MX hosts looked up beyond max_hosts, at most */

/*
 * Answers are cached per resolver (so per thread, without locks) for their
 * TTL, at most DNS_CACHE_TTL_MAX seconds: a relay sending many messages to
 * one domain asks once.  Only successful answers are cached; failures are
 * asked again at the next attempt.
 */
#define DNS_CACHE_SIZE 128
#define DNS_CACHE_TTL_MAX 300
#define DNS_CACHE_TTL_NODATA 30

struct cache_entry {
	char name[DNS_NAME_MAX];
	ldns_rr_type type;
	ldns_rr_list *rrs; /* NULL: NODATA (or NXDOMAIN when nxdomain) */
	bool nxdomain;     /* cached only for TLSA and TXT (asked per host or
	                      per delivery) */
	bool secure;       /* invariant 4 */
	int64_t expires;   /* now_ms(); 0: unused */
};

struct dns_resolver {
	struct cache_entry cache[DNS_CACHE_SIZE];
	ldns_resolver *res;   /* NULL for a canned resolver */
	dns_answer_fn answer; /* canned answers (tests), or NULL */
	void *answer_arg;
	int inet;     /* INET_ALL, INET_IPV4, INET_IPV6 */
	uint64_t rng; /* xorshift64* state for shuffling equal preferences */
	bool dnssec;  /* dnssec = trust-ad: ask for AD, keep it (invariant 4) */
	struct cidr *trusted; /* dnssec_trusted_servers (a copy) */
	int ntrusted;
};

/* A growing list of addresses, the future *out. */
struct hostvec {
	struct mx_host *v;
	int n, cap;
};

/* Name of the query types used here, for messages. */
static const char *
type_name(ldns_rr_type type)
{
	switch (type) {
	case LDNS_RR_TYPE_MX:
		return "MX";
	case LDNS_RR_TYPE_A:
		return "A";
	case LDNS_RR_TYPE_AAAA:
		return "AAAA";
	case LDNS_RR_TYPE_TLSA:
		return "TLSA";
	case LDNS_RR_TYPE_TXT:
		return "TXT";
	default:
		return "?";
	}
}

/* Name of a DNS RCODE ("SERVFAIL"), for messages. */
static const char *
rcode_name(ldns_pkt_rcode rcode)
{
	ldns_lookup_table *lt = ldns_lookup_by_id(ldns_rcodes, (int)rcode);

	return lt != NULL && lt->name != NULL ? lt->name : "unknown rcode";
}

/* xorshift64*: good enough to shuffle equal MX preferences. */
static unsigned
resolver_rnd(void *arg)
{
	struct dns_resolver *r = arg;

	r->rng ^= r->rng >> 12;
	r->rng ^= r->rng << 25;
	r->rng ^= r->rng >> 27;
	return (unsigned)((r->rng * 2685821657736338717ULL) >> 32);
}

struct dns_resolver *
dns_resolver_new(const struct config *cfg, char *why)
{
	struct dns_resolver *r = NULL;
	ldns_resolver *res = NULL;
	ldns_rdf *ns = NULL;
	ldns_status st;
	uint64_t seed = 0;
	int i, port;

	if (cfg->ndns_servers == 0) {
		st = ldns_resolver_new_frm_file(&res, NULL);
		if (st != LDNS_STATUS_OK) {
			res = NULL;
			why_set(why, "cannot use /etc/resolv.conf: %s",
			    ldns_get_errorstr_by_id(st));
			goto out;
		}
		if (ldns_resolver_nameserver_count(res) == 0) {
			why_set(why, "no name server in /etc/resolv.conf");
			goto out;
		}
	} else {
		res = ldns_resolver_new();
		if (res == NULL) {
			why_set(why, "cannot create a DNS resolver");
			goto out;
		}
		for (i = 0; i < cfg->ndns_servers; i++) {
			const char *host = cfg->dns_servers[i].host;

			ns = ldns_rdf_new_frm_str(strchr(host, ':') != NULL
			                              ? LDNS_RDF_TYPE_AAAA
			                              : LDNS_RDF_TYPE_A,
			    host);
			if (ns == NULL || ldns_resolver_push_nameserver(
			                      res, ns) != LDNS_STATUS_OK) {
				why_set(
				    why, "bad DNS server address \"%s\"", host);
				goto out;
			}
			ldns_rdf_deep_free(ns); /* the resolver made a copy */
			ns = NULL;
		}
		/* One port for all servers: ldns has no per-server port. */
		port = cfg->dns_servers[0].port;
		ldns_resolver_set_port(res, (uint16_t)(port > 0 ? port : 53));
	}
	ldns_resolver_set_timeout(
	    res, (struct timeval){.tv_sec = cfg->dns_timeout, .tv_usec = 0});
	ldns_resolver_set_retry(res, 1);
	ldns_resolver_set_retrans(res, 1);
	ldns_resolver_set_recursive(res, true);
	ldns_resolver_set_fallback(res, true); /* TCP when truncated */
	ldns_resolver_set_usevc(res, false);
	ldns_resolver_set_random(res, false); /* servers in the given order */
	/* No search list, no default domain (RFC 5321 section 5.1). */
	ldns_resolver_set_defnames(res, false);
	ldns_resolver_set_dnsrch(res, false);

	if (getrandom(&seed, sizeof seed, 0) != (ssize_t)sizeof seed)
		seed = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
	r = xcalloc(1, sizeof *r);
	r->res = res;
	res = NULL;
	r->inet = cfg->inet_protocols;
	r->rng = seed != 0 ? seed : 0x9e3779b97f4a7c15ULL;
	r->dnssec = cfg->dnssec == DNSSEC_TRUST_AD;
	if (cfg->ndnssec_trusted > 0) {
		r->trusted =
		    xcalloc((size_t)cfg->ndnssec_trusted, sizeof(*r->trusted));
		memcpy(r->trusted, cfg->dnssec_trusted,
		    (size_t)cfg->ndnssec_trusted * sizeof(*r->trusted));
		r->ntrusted = cfg->ndnssec_trusted;
	}
out:
	if (ns != NULL)
		ldns_rdf_deep_free(ns);
	if (res != NULL)
		ldns_resolver_deep_free(res);
	return r;
}

void
dns_resolver_free(struct dns_resolver *r)
{
	size_t i;

	if (r == NULL)
		return;
	for (i = 0; i < DNS_CACHE_SIZE; i++)
		ldns_rr_list_deep_free(r->cache[i].rrs);
	if (r->res != NULL)
		ldns_resolver_deep_free(r->res);
	free(r->trusted);
	free(r);
}

struct dns_resolver *
dns_resolver_new_canned(int inet_protocols, dns_answer_fn answer, void *arg)
{
	struct dns_resolver *r = xcalloc(1, sizeof *r);

	r->answer = answer;
	r->answer_arg = arg;
	r->inet = inet_protocols;
	r->rng = 0x9e3779b97f4a7c15ULL;
	return r;
}

void
dns_resolver_set_dnssec(struct dns_resolver *r, bool on)
{
	r->dnssec = on;
}

/*
 * May the AD bit of `pkt` be believed (invariant 4)?  Canned answers
 * stand for a local resolver.
 */
static bool
answer_secure(const struct dns_resolver *r, ldns_pkt *pkt)
{
	struct sockaddr_storage ss;
	const ldns_rdf *from;
	size_t len = 0;

	if (!r->dnssec || !ldns_pkt_ad(pkt))
		return false;
	if (r->answer != NULL)
		return true;
	from = ldns_pkt_answerfrom(pkt);
	if (from == NULL)
		return false;
	memset(&ss, 0, sizeof(ss));
	if (ldns_rdf_get_type(from) == LDNS_RDF_TYPE_A &&
	    ldns_rdf_size(from) == 4) {
		struct sockaddr_in *sin = (struct sockaddr_in *)&ss;

		sin->sin_family = AF_INET;
		memcpy(&sin->sin_addr, ldns_rdf_data(from), 4);
		len = 4;
		if (ldns_rdf_data(from)[0] == 127)
			return true;
	} else if (ldns_rdf_get_type(from) == LDNS_RDF_TYPE_AAAA &&
	           ldns_rdf_size(from) == 16) {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;

		sin6->sin6_family = AF_INET6;
		memcpy(&sin6->sin6_addr, ldns_rdf_data(from), 16);
		len = 16;
		if (IN6_IS_ADDR_LOOPBACK(&sin6->sin6_addr))
			return true;
	}
	return len > 0 &&
	       cidr_match(r->trusted, r->ntrusted, (struct sockaddr *)&ss);
}

/* One question, to the name servers or the canned answers. */
static ldns_status
ask(struct dns_resolver *r, const ldns_rdf *name, ldns_rr_type type,
    ldns_pkt **pkt)
{
	unsigned char *wire;
	char *text;
	size_t i, len = 0, n;
	ldns_status st;

	*pkt = NULL;
	if (r->answer == NULL) {
		/*
		 * ldns marks a server that timed out as unreachable for the
		 * life of the resolver; a resolver lives as long as its
		 * delivery thread, so give every server a new chance.
		 */
		for (i = 0; i < ldns_resolver_nameserver_count(r->res); i++)
			ldns_resolver_set_nameserver_rtt(
			    r->res, i, LDNS_RESOLV_RTT_MIN);
		/* AD in the question asks a validating resolver for AD in
		 * the reply, without the RRSIGs DO would bring (RFC 6840
		 * section 5.7). */
		return ldns_resolver_query_status(pkt, r->res, name, type,
		    LDNS_RR_CLASS_IN, LDNS_RD | (r->dnssec ? LDNS_AD : 0));
	}
	text = ldns_rdf2str(name);
	if (text == NULL)
		return LDNS_STATUS_MEM_ERR;
	n = strlen(text);
	if (n > 1 && text[n - 1] == '.')
		text[n - 1] = '\0';
	wire = r->answer(r->answer_arg, text, (int)type, &len);
	free(text);
	if (wire == NULL)
		return LDNS_STATUS_NETWORK_ERR;
	st = ldns_wire2pkt(pkt, wire, len);
	free(wire);
	if (st != LDNS_STATUS_OK)
		*pkt = NULL;
	return st;
}

/* Does `rr` hold what its type needs (invariant 1)? */
static bool
rr_usable(const ldns_rr *rr, ldns_rr_type type)
{
	const ldns_rdf *rdf;

	switch (type) {
	case LDNS_RR_TYPE_A:
	case LDNS_RR_TYPE_AAAA:
		rdf = ldns_rr_rd_count(rr) == 1 ? ldns_rr_rdf(rr, 0) : NULL;
		return rdf != NULL &&
		       ldns_rdf_get_type(rdf) ==
		           (type == LDNS_RR_TYPE_A ? LDNS_RDF_TYPE_A
		                                   : LDNS_RDF_TYPE_AAAA) &&
		       ldns_rdf_size(rdf) == (type == LDNS_RR_TYPE_A ? 4 : 16);
	case LDNS_RR_TYPE_MX:
		return ldns_rr_rd_count(rr) == 2 &&
		       ldns_rdf_get_type(ldns_rr_rdf(rr, 0)) ==
		           LDNS_RDF_TYPE_INT16 &&
		       ldns_rdf_size(ldns_rr_rdf(rr, 0)) == 2 &&
		       ldns_rdf_get_type(ldns_rr_rdf(rr, 1)) ==
		           LDNS_RDF_TYPE_DNAME;
	case LDNS_RR_TYPE_TLSA:
		return ldns_rr_rd_count(rr) == 4 &&
		       ldns_rdf_size(ldns_rr_rdf(rr, 0)) == 1 &&
		       ldns_rdf_size(ldns_rr_rdf(rr, 1)) == 1 &&
		       ldns_rdf_size(ldns_rr_rdf(rr, 2)) == 1 &&
		       ldns_rdf_size(ldns_rr_rdf(rr, 3)) > 0;
	case LDNS_RR_TYPE_TXT:
		return ldns_rr_rd_count(rr) >= 1;
	default:
		return true;
	}
}

/*
 * The usable records in `pkt`'s answer section of `type` owned by
 * `owner` (NULL: none); *bad counts those of the type that were not.
 */
static ldns_rr_list *
answer_records(
    ldns_pkt *pkt, const ldns_rdf *owner, ldns_rr_type type, int *bad)
{
	ldns_rr_list *ans = ldns_pkt_answer(pkt), *out = NULL;
	size_t i;

	*bad = 0;
	for (i = 0; i < ldns_rr_list_rr_count(ans); i++) {
		ldns_rr *rr = ldns_rr_list_rr(ans, i);

		if (ldns_rr_get_type(rr) != type ||
		    ldns_rr_get_class(rr) != LDNS_RR_CLASS_IN ||
		    ldns_dname_compare(ldns_rr_owner(rr), owner) != 0)
			continue;
		if (!rr_usable(rr, type)) {
			(*bad)++;
			continue;
		}
		if (out == NULL)
			out = ldns_rr_list_new();
		ldns_rr_list_push_rr(out, ldns_rr_clone(rr));
	}
	return out;
}

/* The target of the CNAME owned by `owner` in `pkt`'s answer, or NULL. */
static const ldns_rdf *
answer_cname(ldns_pkt *pkt, const ldns_rdf *owner)
{
	ldns_rr_list *ans = ldns_pkt_answer(pkt);
	size_t i;

	for (i = 0; i < ldns_rr_list_rr_count(ans); i++) {
		ldns_rr *rr = ldns_rr_list_rr(ans, i);

		if (ldns_rr_get_type(rr) == LDNS_RR_TYPE_CNAME &&
		    ldns_rr_rd_count(rr) == 1 &&
		    ldns_dname_compare(ldns_rr_owner(rr), owner) == 0)
			return ldns_rr_rdf(rr, 0);
	}
	return NULL;
}

/*
 * Look up `type` records of `name`, following CNAMEs (RFC 1034 section
 * 3.6.2) first within an answer, then by asking again for the target.
 * RES_OK with *out the records (NULL: none, NODATA); RES_PERM on NXDOMAIN;
 * RES_TEMP otherwise.  `why` is filled unless RES_OK.  *secure says
 * whether the answer (records, NODATA or NXDOMAIN) was (invariant 4).
 */
static enum res dns_query(struct dns_resolver *r, const char *name,
    ldns_rr_type type, ldns_rr_list **out, bool *secure, char *why);

/*
 * How long a negative answer (NXDOMAIN, NODATA) may be cached (RFC 2308
 * section 5): the SOA record of its authority section, the lesser of its
 * TTL and its minimum field; -1 without one.
 */
static int64_t
negative_ttl(ldns_pkt *pkt)
{
	ldns_rr_list *auth = ldns_pkt_authority(pkt);
	size_t i;

	for (i = 0; i < ldns_rr_list_rr_count(auth); i++) {
		ldns_rr *rr = ldns_rr_list_rr(auth, i);
		const ldns_rdf *min;
		int64_t t;

		if (ldns_rr_get_type(rr) != LDNS_RR_TYPE_SOA ||
		    ldns_rr_rd_count(rr) != 7)
			continue;
		min = ldns_rr_rdf(rr, 6);
		if (ldns_rdf_size(min) != 4)
			continue;
		t = (int64_t)ldns_rdf2native_int32(min);
		return t < (int64_t)ldns_rr_ttl(rr) ? t
		                                    : (int64_t)ldns_rr_ttl(rr);
	}
	return -1;
}

static enum res
dns_query_net(struct dns_resolver *r, const char *name, ldns_rr_type type,
    ldns_rr_list **out, bool *secure, int64_t *neg_ttl, char *why)
{
	ldns_rdf *cur = NULL;
	ldns_pkt *pkt = NULL;
	const ldns_rdf *target;
	ldns_pkt_rcode rcode;
	ldns_status st;
	enum res res = RES_TEMP;
	int hops = 0, bad;
	bool moved;

	*out = NULL;
	*secure = r->dnssec;
	*neg_ttl = -1;
	cur = ldns_dname_new_frm_str(name);
	if (cur == NULL) {
		why_set(why, "5.1.2 bad domain name \"%s\"", name);
		res = RES_PERM;
		goto out;
	}
	for (;;) {
		st = ask(r, cur, type, &pkt);
		if (st != LDNS_STATUS_OK || pkt == NULL) {
			why_set(why,
			    "4.4.3 DNS lookup of %s for %s failed: no answer "
			    "(%s)",
			    type_name(type), name,
			    st != LDNS_STATUS_OK ? ldns_get_errorstr_by_id(st)
			                         : "empty reply");
			goto out;
		}
		rcode = ldns_pkt_get_rcode(pkt);
		if (!answer_secure(r, pkt))
			*secure = false;
		*neg_ttl = negative_ttl(pkt);
		if (rcode == LDNS_RCODE_NXDOMAIN) {
			why_set(why,
			    "5.1.2 domain %s does not exist (NXDOMAIN)", name);
			res = RES_PERM;
			goto out;
		}
		if (rcode != LDNS_RCODE_NOERROR) {
			why_set(why, "4.4.3 DNS lookup of %s for %s failed: %s",
			    type_name(type), name, rcode_name(rcode));
			goto out;
		}
		/* Walk the CNAME chain as far as this answer goes. */
		for (moved = false;; moved = true) {
			*out = answer_records(pkt, cur, type, &bad);
			if (*out != NULL) {
				res = RES_OK;
				goto out;
			}
			if (bad > 0) {
				why_set(why,
				    "4.4.3 DNS lookup of %s for %s failed: "
				    "malformed answer (no usable %s record)",
				    type_name(type), name, type_name(type));
				goto out;
			}
			target = answer_cname(pkt, cur);
			if (target == NULL)
				break;
			if (++hops > DNS_CNAME_MAX) {
				why_set(why,
				    "4.4.3 DNS lookup of %s for %s failed: "
				    "more than %d CNAMEs",
				    type_name(type), name, DNS_CNAME_MAX);
				goto out;
			}
			ldns_rdf_deep_free(cur);
			cur = ldns_rdf_clone(target);
		}
		/* No records: NODATA, unless a CNAME target is still to ask. */
		if (!moved) {
			res = RES_OK;
			goto out;
		}
		ldns_pkt_free(pkt);
		pkt = NULL;
	}
out:
	if (res == RES_TEMP)
		*secure = false;
	ldns_pkt_free(pkt);
	ldns_rdf_deep_free(cur);
	return res;
}

/* dns_query_net through the cache (same contract). */
static enum res
dns_query(struct dns_resolver *r, const char *name, ldns_rr_type type,
    ldns_rr_list **out, bool *secure, char *why)
{
	struct cache_entry *e, *victim = &r->cache[0];
	int64_t now = now_ms(), ttl, neg_ttl;
	enum res res;
	size_t i;

	for (i = 0; i < DNS_CACHE_SIZE; i++) {
		e = &r->cache[i];
		if (e->expires > now && e->type == type &&
		    ascii_casecmp(e->name, name) == 0) {
			*out = e->rrs ? ldns_rr_list_clone(e->rrs) : NULL;
			*secure = e->secure;
			if (e->nxdomain) {
				why_set(why,
				    "5.1.2 domain %s does not exist "
				    "(NXDOMAIN)",
				    name);
				return RES_PERM;
			}
			return RES_OK;
		}
		if (e->expires < victim->expires)
			victim = e;
	}
	res = dns_query_net(r, name, type, out, secure, &neg_ttl, why);
	if (strlen(name) >= sizeof(victim->name) ||
	    !(res == RES_OK ||
	        (res == RES_PERM &&
	            (type == LDNS_RR_TYPE_TLSA || type == LDNS_RR_TYPE_TXT))))
		return res;
	ttl = *out ? DNS_CACHE_TTL_MAX
	      : neg_ttl >= 0 && neg_ttl < DNS_CACHE_TTL_NODATA
	          ? neg_ttl
	          : DNS_CACHE_TTL_NODATA;
	for (i = 0; *out != NULL && i < ldns_rr_list_rr_count(*out); i++) {
		int64_t t = ldns_rr_ttl(ldns_rr_list_rr(*out, i));

		if (t < ttl)
			ttl = t;
	}
	if (ttl <= 0)
		return res;
	ldns_rr_list_deep_free(victim->rrs);
	snprintf(victim->name, sizeof(victim->name), "%s", name);
	victim->type = type;
	victim->rrs = *out ? ldns_rr_list_clone(*out) : NULL;
	victim->nxdomain = res == RES_PERM;
	victim->secure = *secure;
	victim->expires = now + ttl * 1000;
	return res;
}

/* Text of a dname without the trailing dot, lower case; -1 too long. */
static int
dname_text(const ldns_rdf *rdf, char *buf, size_t len)
{
	char *s = ldns_rdf2str(rdf);
	size_t n, i;
	int rc = -1;

	if (s == NULL)
		goto out;
	n = strlen(s);
	if (n > 1 && s[n - 1] == '.')
		s[--n] = '\0';
	if (n >= len)
		goto out;
	for (i = 0; i <= n; i++)
		buf[i] = ascii_lower(s[i]);
	rc = 0;
out:
	free(s);
	return rc;
}

/*
 * If `s` is an IP literal ("192.0.2.1", "2001:db8::1", "[192.0.2.1]",
 * "[IPv6:2001:db8::1]"), fill `ss` (port 0) and return true.
 */
static bool
ip_literal(const char *s, struct sockaddr_storage *ss, socklen_t *sslen)
{
	struct sockaddr_in *sin = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
	char buf[64];
	size_t n = strlen(s);

	if (n >= 2 && s[0] == '[' && s[n - 1] == ']') {
		s++;
		n -= 2;
		if (n > 5 && ascii_ncasecmp(s, "IPv6:", 5) == 0) {
			s += 5;
			n -= 5;
		}
	}
	if (n == 0 || n >= sizeof buf)
		return false;
	memcpy(buf, s, n);
	buf[n] = '\0';
	memset(ss, 0, sizeof *ss);
	if (inet_pton(AF_INET, buf, &sin->sin_addr) == 1) {
		sin->sin_family = AF_INET;
		*sslen = sizeof *sin;
		return true;
	}
	if (inet_pton(AF_INET6, buf, &sin6->sin6_addr) == 1) {
		sin6->sin6_family = AF_INET6;
		*sslen = sizeof *sin6;
		return true;
	}
	return false;
}

/* The raw address bytes of `ss` (IPv4-mapped IPv6 as IPv4); 0: none. */
static size_t
addr_bytes(const struct sockaddr_storage *ss, const unsigned char **p)
{
	const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)ss;

	*p = NULL;
	if (ss->ss_family == AF_INET) {
		*p = (const unsigned char *)&((const struct sockaddr_in *)ss)
		         ->sin_addr;
		return 4;
	}
	if (ss->ss_family != AF_INET6)
		return 0;
	if (IN6_IS_ADDR_V4MAPPED(&sin6->sin6_addr)) {
		*p = sin6->sin6_addr.s6_addr + 12;
		return 4;
	}
	*p = sin6->sin6_addr.s6_addr;
	return 16;
}

/* Same address (ports ignored)? */
static bool
addr_equal(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
	const unsigned char *pa, *pb;
	size_t na = addr_bytes(a, &pa), nb = addr_bytes(b, &pb);

	return na != 0 && na == nb && memcmp(pa, pb, na) == 0;
}

/* Is `ss` one of our own listening addresses (wildcards excluded)? */
static bool
addr_is_self(const struct dns_self *self, const struct sockaddr_storage *ss)
{
	static const unsigned char zero[16];
	const unsigned char *p;
	size_t len;
	int i;

	if (self == NULL || self->addrs == NULL)
		return false;
	for (i = 0; i < self->naddrs; i++) {
		len = addr_bytes(&self->addrs[i], &p);
		if (len == 0 || memcmp(p, zero, len) == 0)
			continue; /* 0.0.0.0 or :: is no particular address */
		if (addr_equal(&self->addrs[i], ss))
			return true;
	}
	return false;
}

/* `in` in lower case without a trailing dot into `out`; -1: too long. */
static int
norm_name(const char *in, char *out, size_t len)
{
	size_t n = strlen(in), i;

	if (n > 1 && in[n - 1] == '.')
		n--;
	if (n == 0 || n >= len)
		return -1;
	for (i = 0; i < n; i++)
		out[i] = ascii_lower(in[i]);
	out[n] = '\0';
	return 0;
}

/* Host names equal, ignoring case and one trailing dot on either side. */
static bool
name_equal(const char *a, const char *b)
{
	size_t na = strlen(a), nb = strlen(b);

	if (na > 0 && a[na - 1] == '.')
		na--;
	if (nb > 0 && b[nb - 1] == '.')
		nb--;
	return na == nb && ascii_ncasecmp(a, b, na) == 0;
}

/* Append `ss` for host `name` unless the address is already listed. */
static bool
hostvec_add(struct hostvec *hv, const char *name, int pref,
    const struct sockaddr_storage *ss, socklen_t sslen, int port, bool secure)
{
	struct mx_host *h;
	int i;

	for (i = 0; i < hv->n; i++)
		if (addr_equal(&hv->v[i].addr, ss))
			return false;
	if (hv->n == hv->cap) {
		hv->cap = hv->cap ? hv->cap * 2 : 8;
		hv->v = xrealloc(hv->v, (size_t)hv->cap * sizeof *hv->v);
	}
	h = &hv->v[hv->n++];
	memset(h, 0, sizeof *h);
	snprintf(h->name, sizeof h->name, "%s", name);
	h->pref = pref;
	h->addr_secure = secure;
	memcpy(&h->addr, ss, sslen);
	h->addrlen = sslen;
	if (ss->ss_family == AF_INET6) {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&h->addr;

		sin6->sin6_port = htons((uint16_t)port);
		inet_ntop(AF_INET6, &sin6->sin6_addr, h->ip, sizeof h->ip);
	} else {
		struct sockaddr_in *sin = (struct sockaddr_in *)&h->addr;

		sin->sin_port = htons((uint16_t)port);
		inet_ntop(AF_INET, &sin->sin_addr, h->ip, sizeof h->ip);
	}
	return true;
}

/*
 * Append the addresses in `rrs` (A or AAAA records) to `hv`.  Returns how
 * many addresses the records held (those already listed included).
 */
static int
add_records(struct hostvec *hv, const ldns_rr_list *rrs, const char *name,
    int pref, int port, bool secure)
{
	struct sockaddr_storage ss;
	socklen_t sslen;
	ldns_rdf *rdf;
	size_t i;
	int n = 0;

	char owner[DNS_NAME_MAX] = "";

	/* The records' owner: not `name` when a CNAME chain led there. */
	if (secure && ldns_rr_list_rr_count(rrs) > 0 &&
	    (dname_text(ldns_rr_owner(ldns_rr_list_rr(rrs, 0)), owner,
	         sizeof(owner)) != 0 ||
	        name_equal(owner, name)))
		owner[0] = '\0';
	for (i = 0; i < ldns_rr_list_rr_count(rrs); i++) {
		rdf = ldns_rr_a_address(ldns_rr_list_rr(rrs, i));
		memset(&ss, 0, sizeof ss);
		if (rdf != NULL && ldns_rdf_get_type(rdf) == LDNS_RDF_TYPE_A &&
		    ldns_rdf_size(rdf) == 4) {
			struct sockaddr_in *sin = (struct sockaddr_in *)&ss;

			sin->sin_family = AF_INET;
			memcpy(&sin->sin_addr, ldns_rdf_data(rdf), 4);
			sslen = sizeof *sin;
		} else if (rdf != NULL &&
		           ldns_rdf_get_type(rdf) == LDNS_RDF_TYPE_AAAA &&
		           ldns_rdf_size(rdf) == 16) {
			struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;

			sin6->sin6_family = AF_INET6;
			memcpy(&sin6->sin6_addr, ldns_rdf_data(rdf), 16);
			sslen = sizeof *sin6;
		} else {
			continue;
		}
		if (hostvec_add(hv, name, pref, &ss, sslen, port, secure))
			snprintf(hv->v[hv->n - 1].cname_target,
			    sizeof(hv->v[hv->n - 1].cname_target), "%s", owner);
		n++;
	}
	return n;
}

/*
 * Append the addresses of host `name` to `hv`: AAAA then A, as
 * inet_protocols allows.  RES_OK when it has at least one (possibly
 * already listed); RES_PERM + why when it has none (NXDOMAIN or no
 * records); RES_TEMP + why when a lookup failed and none was found.
 */
static enum res
host_addrs(struct dns_resolver *r, const char *name, int pref, int port,
    struct hostvec *hv, char *why)
{
	static const ldns_rr_type types[] = {LDNS_RR_TYPE_AAAA, LDNS_RR_TYPE_A};
	ldns_rr_list *rrs = NULL;
	char qwhy[WHY_MAX];
	enum res res = RES_PERM, qres;
	bool found = false, nxdomain = false, secure;
	size_t i;

	why[0] = '\0';
	for (i = 0; i < sizeof types / sizeof types[0] && !nxdomain; i++) {
		if ((types[i] == LDNS_RR_TYPE_AAAA && r->inet == INET_IPV4) ||
		    (types[i] == LDNS_RR_TYPE_A && r->inet == INET_IPV6))
			continue;
		qres = dns_query(r, name, types[i], &rrs, &secure, qwhy);
		if (qres == RES_OK && rrs != NULL) {
			/* Only an address counts (invariant 3). */
			if (add_records(hv, rrs, name, pref, port, secure) > 0)
				found = true;
		} else if (qres == RES_TEMP) {
			res = RES_TEMP;
			snprintf(why, WHY_MAX, "%s", qwhy);
		} else if (qres == RES_PERM) {
			nxdomain = true; /* no other type to find either */
		}
		ldns_rr_list_deep_free(rrs);
		rrs = NULL;
	}
	if (found)
		return RES_OK;
	if (res == RES_PERM && nxdomain)
		why_set(why, "5.4.4 host %s does not exist (NXDOMAIN)", name);
	else if (res == RES_PERM)
		why_set(why, "5.4.4 host %s has no address", name);
	return res;
}

/* Drop the entries of `hv` whose preference is >= `pref` (the tail). */
static void
hostvec_cut(struct hostvec *hv, int pref)
{
	while (hv->n > 0 && hv->v[hv->n - 1].pref >= pref)
		hv->n--;
}

/* Did entries [from, hv->n) bring in one of our own addresses? */
static bool
hostvec_has_self(
    const struct hostvec *hv, int from, const struct dns_self *self)
{
	int i;

	for (i = from; i < hv->n; i++)
		if (addr_is_self(self, &hv->v[i].addr))
			return true;
	return false;
}

/*
 * The MX records of `rrs` as mx_rr, null MX ("."), unprintable names and
 * IP literals (RFC 5321 section 5.1: MX data must be a name) left out.
 * Sets *null_mx when the only record is a null MX (RFC 7505 section 3).
 */
static int
mx_records(const ldns_rr_list *rrs, struct mx_rr **out, bool *null_mx)
{
	struct sockaddr_storage ss;
	socklen_t sslen;
	size_t i, count = ldns_rr_list_rr_count(rrs);
	struct mx_rr *mx = xcalloc(count > 0 ? count : 1, sizeof *mx);
	ldns_rr *rr;
	int n = 0;

	*null_mx = false;
	for (i = 0; i < count; i++) {
		rr = ldns_rr_list_rr(rrs, i);
		if (ldns_rr_mx_preference(rr) == NULL ||
		    ldns_rr_mx_exchange(rr) == NULL)
			continue;
		if (ldns_dname_label_count(ldns_rr_mx_exchange(rr)) == 0) {
			*null_mx = count == 1;
			continue;
		}
		if (dname_text(ldns_rr_mx_exchange(rr), mx[n].name,
		        sizeof mx[n].name) != 0 ||
		    ip_literal(mx[n].name, &ss, &sslen))
			continue;
		mx[n].pref = ldns_rdf2native_int16(ldns_rr_mx_preference(rr));
		n++;
	}
	*out = mx;
	return n;
}

/* The address-literal domain "[192.0.2.1]" (RFC 5321 section 4.1.3). */
static enum res
resolve_literal(struct dns_resolver *r, const char *domain, int port,
    const struct dns_self *self, struct hostvec *hv, char *why)
{
	struct sockaddr_storage ss;
	socklen_t sslen;

	if (!ip_literal(domain, &ss, &sslen)) {
		why_set(why, "5.1.2 bad address literal %s", domain);
		return RES_PERM;
	}
	if ((ss.ss_family == AF_INET && r->inet == INET_IPV6) ||
	    (ss.ss_family == AF_INET6 && r->inet == INET_IPV4)) {
		why_set(why, "5.4.4 no usable address for %s (inet_protocols)",
		    domain);
		return RES_PERM;
	}
	if (addr_is_self(self, &ss)) {
		why_set(why, "5.4.6 mail for %s loops back to myself", domain);
		return RES_PERM;
	}
	hostvec_add(hv, domain, -1, &ss, sslen, port, false);
	return RES_OK;
}

/* Keep the first `max_hosts` hosts of `hv` (0: no cap). */
static void
hostvec_cap(struct hostvec *hv, int max_hosts)
{
	int i, hosts = 0;

	if (max_hosts <= 0)
		return;
	for (i = 0; i < hv->n; i++) {
		if (i > 0 && strcmp(hv->v[i].name, hv->v[i - 1].name) == 0)
			continue;
		if (++hosts > max_hosts) {
			hv->n = i;
			return;
		}
	}
}

/*
 * Resolve the hosts of the ordered `mx` list into `hv`, at most
 * `max_hosts` hosts, applying the self rule by address (RFC 5321 section
 * 5.1).  RES_OK, `hv` possibly empty: then *temp says whether a lookup
 * failed temporarily (its reason in `tmpwhy`).  RES_PERM + why (5.4.6)
 * when one of our own addresses is at the best preference.
 */
static enum res
resolve_mx_hosts(struct dns_resolver *r, const char *domain,
    const struct mx_rr *mx, int nmx, int port, const struct dns_self *self,
    int max_hosts, struct hostvec *hv, bool *temp, char *tmpwhy, char *why)
{
	char hwhy[WHY_MAX];
	int looked[DNS_MX_MAX + DNS_MX_SPARE];
	int i, j, from, nlooked = 0, nhosts = 0, last_pref = -1;
	int max_lookups =
	    (max_hosts > 0 && max_hosts < DNS_MX_MAX ? max_hosts : DNS_MX_MAX) +
	    DNS_MX_SPARE;
	enum res hres;
	bool dup;

	for (i = 0; i < nmx && nlooked < max_lookups; i++) {
		/*
		 * At the cap, go on only through hosts of the same preference
		 * as the last one kept: one of them may turn out to be us.
		 */
		if (max_hosts > 0 && nhosts >= max_hosts &&
		    mx[i].pref != last_pref)
			break;
		for (dup = false, j = 0; j < nlooked && !dup; j++)
			dup = strcmp(mx[looked[j]].name, mx[i].name) == 0;
		if (dup)
			continue; /* the same name at a worse preference */
		looked[nlooked++] = i;
		from = hv->n;
		hres = host_addrs(r, mx[i].name, mx[i].pref, port, hv, hwhy);
		if (hres == RES_TEMP && !*temp) {
			*temp = true;
			snprintf(tmpwhy, WHY_MAX, "%s", hwhy);
		}
		if (hres != RES_OK)
			continue; /* no such host or no address: skip it */
		if (hostvec_has_self(hv, from, self)) {
			if (mx[i].pref <= mx[0].pref) {
				why_set(why,
				    "5.4.6 mail for %s loops back to myself",
				    domain);
				hv->n = 0;
				return RES_PERM;
			}
			hostvec_cut(hv, mx[i].pref); /* keep better MX only */
			break;
		}
		if (hv->n > from) {
			nhosts++;
			last_pref = mx[i].pref;
		}
	}
	hostvec_cap(hv, max_hosts);
	return RES_OK;
}

enum res
dns_resolve_mx(struct dns_resolver *r, const char *domain, int port,
    const struct dns_self *self, int max_hosts, struct mx_host **out, int *n,
    char *why)
{
	struct hostvec hv = {NULL, 0, 0};
	ldns_rr_list *rrs = NULL;
	struct mx_rr *mx = NULL;
	const char *self_name = self != NULL ? self->hostname : NULL;
	char dom[DNS_NAME_MAX], tmpwhy[WHY_MAX] = "";
	bool temp = false, null_mx, mx_secure = false;
	int nmx, nkept, i;
	enum res res;

	*out = NULL;
	*n = 0;
	why[0] = '\0';
	if (domain[0] == '[') {
		res = resolve_literal(r, domain, port, self, &hv, why);
		goto out;
	}
	if (norm_name(domain, dom, sizeof dom) != 0) {
		why_set(why, "5.1.2 bad domain name \"%.200s\"", domain);
		res = RES_PERM;
		goto out;
	}
	res = dns_query(r, dom, LDNS_RR_TYPE_MX, &rrs, &mx_secure, why);
	if (res != RES_OK)
		goto out;
	if (rrs == NULL) {
		/* No MX: the domain is its own implicit MX (section 5.1). */
		if (self_name != NULL && name_equal(dom, self_name)) {
			why_set(
			    why, "5.4.6 mail for %s loops back to myself", dom);
			res = RES_PERM;
			goto out;
		}
		res = host_addrs(r, dom, -1, port, &hv, why);
		if (res == RES_PERM)
			why_set(why, "5.1.2 domain %s has no MX and no address",
			    dom);
		if (res == RES_OK && hostvec_has_self(&hv, 0, self)) {
			why_set(
			    why, "5.4.6 mail for %s loops back to myself", dom);
			res = RES_PERM;
		}
		goto out;
	}
	nmx = mx_records(rrs, &mx, &null_mx);
	if (null_mx) {
		why_set(why,
		    "5.1.10 %s does not accept mail (null MX, RFC 7505)", dom);
		res = RES_PERM;
		goto out;
	}
	nkept = dns_order_mx(mx, nmx, self_name, resolver_rnd, r);
	if (nkept == 0 && nmx > 0) {
		why_set(why, "5.4.6 mail for %s loops back to myself", dom);
		res = RES_PERM;
		goto out;
	}
	res = resolve_mx_hosts(
	    r, dom, mx, nkept, port, self, max_hosts, &hv, &temp, tmpwhy, why);
	if (res != RES_OK)
		goto out;
	if (hv.n == 0 && temp) {
		why_set(why, "%s", tmpwhy);
		res = RES_TEMP;
	} else if (hv.n == 0) {
		why_set(why, "5.4.4 no usable address for %s", dom);
		res = RES_PERM;
	}
out:
	if (res == RES_OK) {
		for (i = 0; i < hv.n; i++)
			hv.v[i].mx_secure = mx_secure;
		*out = hv.v;
		*n = hv.n;
		hv.v = NULL;
	}
	free(hv.v);
	free(mx);
	ldns_rr_list_deep_free(rrs);
	return res;
}

enum res
dns_resolve_host(struct dns_resolver *r, const char *host, int port,
    struct mx_host **out, int *n, char *why)
{
	struct hostvec hv = {NULL, 0, 0};
	struct sockaddr_storage ss;
	socklen_t sslen;
	char name[DNS_NAME_MAX];
	enum res res;

	*out = NULL;
	*n = 0;
	why[0] = '\0';
	if (ip_literal(host, &ss, &sslen)) {
		res = resolve_literal(r, host, port, NULL, &hv, why);
	} else if (norm_name(host, name, sizeof name) != 0) {
		why_set(why, "5.4.4 bad host name \"%.200s\"", host);
		res = RES_PERM;
	} else {
		res = host_addrs(r, name, -1, port, &hv, why);
	}
	if (res == RES_OK) {
		*out = hv.v;
		*n = hv.n;
		hv.v = NULL;
	}
	free(hv.v);
	return res;
}

/* qsort order: preference, then name (so the order is reproducible). */
static int
mx_cmp(const void *a, const void *b)
{
	const struct mx_rr *x = a, *y = b;

	if (x->pref != y->pref)
		return x->pref < y->pref ? -1 : 1;
	return strcmp(x->name, y->name);
}

int
dns_order_mx(struct mx_rr *rr, int n, const char *self_name,
    unsigned (*rnd)(void *), void *rnd_arg)
{
	struct mx_rr tmp;
	int start, end, i, j;

	if (n <= 0)
		return 0;
	qsort(rr, (size_t)n, sizeof *rr, mx_cmp);
	/* Equal preferences in random order (RFC 5321 section 5.1). */
	for (start = 0; start < n && rnd != NULL; start = end) {
		for (end = start + 1; end < n && rr[end].pref == rr[start].pref;
		     end++)
			;
		for (i = end - 1; i > start; i--) { /* Fisher-Yates */
			j = start +
			    (int)(rnd(rnd_arg) % (unsigned)(i - start + 1));
			tmp = rr[i];
			rr[i] = rr[j];
			rr[j] = tmp;
		}
	}
	if (self_name == NULL || *self_name == '\0')
		return n;
	/* The first match has the lowest preference: keep what is better. */
	for (i = 0; i < n; i++) {
		if (!name_equal(rr[i].name, self_name))
			continue;
		for (start = i; start > 0 && rr[start - 1].pref == rr[i].pref;
		     start--)
			;
		return start;
	}
	return n;
}

void
dns_tlsa_free(struct dns_tlsa *v, int n)
{
	int i;

	for (i = 0; i < n; i++)
		free(v[i].data);
	free(v);
}

enum res
dns_lookup_tlsa(struct dns_resolver *r, const char *host, int port,
    struct dns_tlsa **out, int *n, bool *secure, char *why)
{
	char name[DNS_NAME_MAX + 16], qwhy[WHY_MAX];
	ldns_rr_list *rrs = NULL;
	struct dns_tlsa *v;
	enum res res;
	size_t i, count;

	*out = NULL;
	*n = 0;
	*secure = false;
	if ((size_t)snprintf(name, sizeof(name), "_%d._tcp.%s", port, host) >=
	    sizeof(name)) {
		why_set(why, "4.7.5 TLSA lookup error for %s:%d: name too long",
		    host, port);
		return RES_TEMP;
	}
	res = dns_query(r, name, LDNS_RR_TYPE_TLSA, &rrs, secure, qwhy);
	if (res == RES_PERM)
		return RES_OK; /* NXDOMAIN: no records (secure or not) */
	if (res != RES_OK) {
		/* qwhy: "4.4.3 DNS lookup of TLSA for ... failed: ..." */
		why_set(why, "4.7.5 TLSA lookup error for %s:%d (%s)", host,
		    port, strncmp(qwhy, "4.4.3 ", 6) == 0 ? qwhy + 6 : qwhy);
		return RES_TEMP;
	}
	count = rrs != NULL ? ldns_rr_list_rr_count(rrs) : 0;
	v = xcalloc(count > 0 ? count : 1, sizeof(*v));
	for (i = 0; i < count; i++) {
		const ldns_rr *rr = ldns_rr_list_rr(rrs, i);
		const ldns_rdf *d = ldns_rr_rdf(rr, 3);

		v[i].usage = ldns_rdf_data(ldns_rr_rdf(rr, 0))[0];
		v[i].selector = ldns_rdf_data(ldns_rr_rdf(rr, 1))[0];
		v[i].mtype = ldns_rdf_data(ldns_rr_rdf(rr, 2))[0];
		v[i].len = ldns_rdf_size(d);
		v[i].data = xmalloc(v[i].len);
		memcpy(v[i].data, ldns_rdf_data(d), v[i].len);
	}
	ldns_rr_list_deep_free(rrs);
	*out = v;
	*n = (int)count;
	return RES_OK;
}

void
dns_txt_free(char **v, int n)
{
	int i;

	for (i = 0; i < n; i++)
		free(v[i]);
	free(v);
}

enum res
dns_lookup_txt(struct dns_resolver *r, const char *name, char ***out, int *n,
    bool *secure, char *why)
{
	char qwhy[WHY_MAX];
	ldns_rr_list *rrs = NULL;
	enum res res;
	size_t i, k, count;
	char **v;

	*out = NULL;
	*n = 0;
	*secure = false;
	res = dns_query(r, name, LDNS_RR_TYPE_TXT, &rrs, secure, qwhy);
	if (res == RES_PERM)
		return RES_OK; /* NXDOMAIN: none */
	if (res != RES_OK) {
		why_set(why, "%s", qwhy);
		return RES_TEMP;
	}
	count = rrs != NULL ? ldns_rr_list_rr_count(rrs) : 0;
	v = xcalloc(count > 0 ? count : 1, sizeof(*v));
	for (i = 0; i < count; i++) {
		const ldns_rr *rr = ldns_rr_list_rr(rrs, i);
		size_t len = 0, o = 0;

		for (k = 0; k < ldns_rr_rd_count(rr); k++)
			len += ldns_rdf_size(ldns_rr_rdf(rr, k));
		v[i] = xmalloc(len + 1);
		for (k = 0; k < ldns_rr_rd_count(rr); k++) {
			const ldns_rdf *d = ldns_rr_rdf(rr, k);
			size_t sl = ldns_rdf_size(d);

			if (sl == 0)
				continue;
			/* A character-string: a length octet, then octets. */
			if ((size_t)ldns_rdf_data(d)[0] < sl - 1)
				sl = (size_t)ldns_rdf_data(d)[0] + 1;
			memcpy(v[i] + o, ldns_rdf_data(d) + 1, sl - 1);
			o += sl - 1;
		}
		v[i][o] = '\0'; /* a NUL inside cuts the text there */
	}
	ldns_rr_list_deep_free(rrs);
	*out = v;
	*n = (int)count;
	return RES_OK;
}
