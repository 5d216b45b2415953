/*
 * test_dns.c - unit tests for dns/dns.c: the pure MX ordering step
 * (dns_order_mx: sort, shuffle of equal preferences, the RFC 5321
 * section 5.1 self rule by name), IP literals (no DNS involved), and the
 * parts `sluice resolve` cannot reach: the self rule by listening address
 * and the reuse of one resolver after a timeout.  Those run against
 * tests/lib/fakedns.py, started here on a free port.
 *
 * Malformed answers (records without data) are fed through a canned
 * resolver (dns_resolver_new_canned), as tests/fuzz/fuzz_dns.c does.
 *
 * The rest of the DNS behaviour (null MX, NXDOMAIN, SERVFAIL, TC, CNAME,
 * ...) is covered end to end by tests/integration/test_dns.py.
 */
#include "config.h"
#include "dns.h"
#include "util.h"
#include "unit.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAXRR 16

/* -- dns_order_mx ------------------------------------------------------ */

/* A fixed random sequence: rnd_arg points to one of these. */
struct seq {
	const unsigned *v; /* NULL: a linear congruential sequence */
	int n, i;
	unsigned lcg;
};

static unsigned
seq_rnd(void *arg)
{
	struct seq *s = arg;

	if (s->v == NULL) {
		s->lcg = s->lcg * 1103515245u + 12345u;
		return s->lcg >> 8;
	}
	return s->v[s->i++ % s->n];
}

struct rr_in {
	const char *name;
	int pref;
};

/* Fill `rr` from a NULL-terminated table; returns the count. */
static int
fill(struct mx_rr *rr, const struct rr_in *in)
{
	int n;

	for (n = 0; in[n].name != NULL; n++) {
		snprintf(rr[n].name, sizeof rr[n].name, "%s", in[n].name);
		rr[n].pref = in[n].pref;
	}
	return n;
}

/* "a:10 b:20" for messages. */
static const char *
show(const struct mx_rr *rr, int n)
{
	static char buf[512];
	size_t len = 0;
	int i;

	buf[0] = '\0';
	for (i = 0; i < n && len < sizeof buf; i++)
		len += (size_t)snprintf(buf + len, sizeof buf - len, "%s%s:%d",
		    i ? " " : "", rr[i].name, rr[i].pref);
	return buf;
}

/* Ascending preferences, each preference in one contiguous run? */
static bool
grouped(const struct mx_rr *rr, int n)
{
	int i;

	for (i = 1; i < n; i++)
		if (rr[i].pref < rr[i - 1].pref)
			return false;
	return true;
}

/* Same multiset of (name, pref) as `in` (names are unique in tests)? */
static bool
same_records(const struct mx_rr *rr, int n, const struct rr_in *in)
{
	int i, j, count = 0;

	for (j = 0; in[j].name != NULL; j++) {
		for (i = 0; i < n; i++)
			if (strcmp(rr[i].name, in[j].name) == 0 &&
			    rr[i].pref == in[j].pref)
				count++;
	}
	return count == n && j == n;
}

static const struct rr_in mixed[] = {
    {"d.test", 10},
    {"x.test", 30},
    {"a.test", 10},
    {"y.test", 5},
    {"b.test", 10},
    {"z.test", 5},
    {"c.test", 10},
    {"w.test", 20},
    {NULL, 0},
};

static void
test_sort(void)
{
	static const struct rr_in in[] = {
	    {"thirty.test", 30},
	    {"ten.test", 10},
	    {"twenty.test", 20},
	    {"zero.test", 0},
	    {"big.test", 65535},
	    {NULL, 0},
	};
	static const unsigned zero[] = {0};
	struct seq s = {zero, 1, 0, 0};
	struct mx_rr rr[MAXRR];
	int n = fill(rr, in), k;

	k = dns_order_mx(rr, n, NULL, seq_rnd, &s);
	CHECK(k == 5 &&
	          strcmp(show(rr, k), "zero.test:0 ten.test:10 twenty.test:20 "
	                              "thirty.test:30 big.test:65535") == 0,
	    "distinct preferences sorted ascending (%s)", show(rr, k));

	n = fill(rr, mixed);
	k = dns_order_mx(rr, n, NULL, NULL, NULL);
	CHECK(k == n && grouped(rr, k) && same_records(rr, k, mixed),
	    "no rnd: sorted only (%s)", show(rr, k));

	CHECK(dns_order_mx(rr, 0, "relay.test", seq_rnd, &s) == 0,
	    "empty list stays empty");
	n = fill(rr, in);
	CHECK(dns_order_mx(rr, 1, "other.test", seq_rnd, &s) == 1 &&
	          strcmp(rr[0].name, "thirty.test") == 0,
	    "one record");
}

static void
test_shuffle(void)
{
	static const unsigned zeros[] = {0};
	static const unsigned ones[] = {1};
	static const unsigned count[] = {0, 1, 2, 3, 4, 5, 6, 7};
	static const unsigned big[] = {4000000000u, 7, 123456789u};
	struct {
		const char *what;
		const unsigned *v;
		int n;
	} seqs[] = {
	    {"zeros", zeros, 1},
	    {"ones", ones, 1},
	    {"counting", count, 8},
	    {"large values", big, 3},
	    {"lcg", NULL, 0},
	};
	char first[512], again[512], perms[24][64];
	struct mx_rr rr[MAXRR];
	struct seq s;
	size_t i;
	int n, k, j, p, nperms = 0, distinct = 0;

	/* Every sequence: same records, preference groups contiguous. */
	for (i = 0; i < sizeof seqs / sizeof seqs[0]; i++) {
		s = (struct seq){seqs[i].v, seqs[i].n, 0, 42};
		n = fill(rr, mixed);
		k = dns_order_mx(rr, n, NULL, seq_rnd, &s);
		CHECK(k == n && grouped(rr, k) && same_records(rr, k, mixed),
		    "rnd %s: groups stay contiguous and ascending (%s)",
		    seqs[i].what, show(rr, k));
		if (i == 0)
			snprintf(first, sizeof first, "%s", show(rr, k));
		else if (strcmp(first, show(rr, k)) != 0)
			distinct++;
	}
	CHECK(distinct > 0, "different rnd sequences give different orders");

	/* The same sequence gives the same order (tests can rely on it). */
	s = (struct seq){count, 8, 0, 0};
	n = fill(rr, mixed);
	dns_order_mx(rr, n, NULL, seq_rnd, &s);
	snprintf(first, sizeof first, "%s", show(rr, n));
	s = (struct seq){count, 8, 0, 0};
	n = fill(rr, mixed);
	dns_order_mx(rr, n, NULL, seq_rnd, &s);
	snprintf(again, sizeof again, "%s", show(rr, n));
	CHECK(strcmp(first, again) == 0, "same rnd sequence, same order");

	/* Over many LCG draws, all 24 orders of the 4 equal records show. */
	s = (struct seq){NULL, 0, 0, 7};
	for (j = 0; j < 2000; j++) {
		char key[64];

		n = fill(rr, mixed);
		dns_order_mx(rr, n, NULL, seq_rnd, &s);
		/* rr[2..5] are the four preference-10 records. */
		snprintf(key, sizeof key, "%c%c%c%c", rr[2].name[0],
		    rr[3].name[0], rr[4].name[0], rr[5].name[0]);
		for (p = 0; p < nperms && strcmp(perms[p], key) != 0; p++)
			;
		if (p == nperms && nperms < 24)
			snprintf(perms[nperms++], sizeof perms[0], "%s", key);
	}
	CHECK(nperms == 24, "all 24 orders of 4 equal preferences occur (%d)",
	    nperms);
}

struct self_case {
	const char *what;
	struct rr_in in[8];
	const char *self;
	int kept;
	const char *names; /* the kept names, sorted, space separated */
};

/* The kept names in sorted order, for an order-independent comparison. */
static const char *
kept_sorted(struct mx_rr *rr, int n)
{
	static char buf[512];
	struct mx_rr tmp;
	size_t len = 0;
	int i, j;

	for (i = 1; i < n; i++)
		for (j = i; j > 0 && strcmp(rr[j - 1].name, rr[j].name) > 0;
		     j--) {
			tmp = rr[j];
			rr[j] = rr[j - 1];
			rr[j - 1] = tmp;
		}
	buf[0] = '\0';
	for (i = 0; i < n && len < sizeof buf; i++)
		len += (size_t)snprintf(buf + len, sizeof buf - len, "%s%s",
		    i ? " " : "", rr[i].name);
	return buf;
}

static void
test_self(void)
{
	static const struct self_case cases[] = {
	    {"self in the middle keeps only better MX",
	        {{"mx20.test", 20}, {"relay.test", 10}, {"mx5.test", 5},
	            {NULL, 0}},
	        "relay.test", 1, "mx5.test"},
	    {"self drops its equals too",
	        {{"a.test", 5}, {"b.test", 10}, {"relay.test", 10},
	            {"c.test", 5}, {"d.test", 20}, {NULL, 0}},
	        "relay.test", 2, "a.test c.test"},
	    {"self at the best preference: loop",
	        {{"relay.test", 10}, {"b.test", 20}, {NULL, 0}}, "relay.test",
	        0, ""},
	    {"self sharing the best preference: loop",
	        {{"a.test", 10}, {"relay.test", 10}, {"b.test", 20}, {NULL, 0}},
	        "relay.test", 0, ""},
	    {"self alone: loop", {{"relay.test", 0}, {NULL, 0}}, "relay.test",
	        0, ""},
	    {"self not listed keeps all",
	        {{"a.test", 10}, {"b.test", 20}, {NULL, 0}}, "relay.test", 2,
	        "a.test b.test"},
	    {"self name compared without case",
	        {{"a.test", 5}, {"relay.test", 10}, {NULL, 0}}, "RELAY.Test", 1,
	        "a.test"},
	    {"self name with a trailing dot",
	        {{"a.test", 5}, {"relay.test", 10}, {NULL, 0}}, "relay.test.",
	        1, "a.test"},
	    {"self listed twice: the better one counts",
	        {{"relay.test", 30}, {"a.test", 5}, {"relay.test", 10},
	            {"b.test", 20}, {NULL, 0}},
	        "relay.test", 1, "a.test"},
	    {"a longer name is not self",
	        {{"mx.relay.test", 5}, {"a.test", 10}, {NULL, 0}}, "relay.test",
	        2, "a.test mx.relay.test"},
	    {"a prefix is not self",
	        {{"relay.tes", 5}, {"a.test", 10}, {NULL, 0}}, "relay.test", 2,
	        "a.test relay.tes"},
	    {"no self name keeps all",
	        {{"a.test", 5}, {"relay.test", 10}, {NULL, 0}}, NULL, 2,
	        "a.test relay.test"},
	    {"empty self name keeps all",
	        {{"a.test", 5}, {"relay.test", 10}, {NULL, 0}}, "", 2,
	        "a.test relay.test"},
	};
	struct mx_rr rr[MAXRR];
	size_t i;
	int n, k, rep;

	for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		bool ok = true;
		char got[512] = "";

		/* Several shuffles: the result must not depend on them. */
		for (rep = 0; rep < 8 && ok; rep++) {
			struct seq s = {NULL, 0, 0, (unsigned)rep * 977u};

			n = fill(rr, cases[i].in);
			k = dns_order_mx(rr, n, cases[i].self, seq_rnd, &s);
			ok = k == cases[i].kept && grouped(rr, k);
			snprintf(
			    got, sizeof got, "%d: %s", k, kept_sorted(rr, k));
			ok = ok &&
			     strcmp(kept_sorted(rr, k), cases[i].names) == 0;
		}
		CHECK(ok, "self rule: %s (got %s)", cases[i].what, got);
	}
}

/* -- literals: no DNS involved ------------------------------------------- */

/* A resolver on `server` ("IP:PORT"); inet_protocols `inet`. */
static struct dns_resolver *
resolver_on(const char *ip, int port, int timeout, int inet)
{
	struct config *cfg = config_defaults();
	struct dns_resolver *r;
	char why[WHY_MAX] = "";

	free(cfg->dns_servers);
	cfg->dns_servers = xcalloc(1, sizeof *cfg->dns_servers);
	snprintf(cfg->dns_servers[0].host, sizeof cfg->dns_servers[0].host,
	    "%s", ip);
	cfg->dns_servers[0].port = port;
	cfg->ndns_servers = 1;
	cfg->dns_timeout = timeout;
	cfg->inet_protocols = inet;
	r = dns_resolver_new(cfg, why);
	CHECK(r != NULL, "resolver on %s:%d (%s)", ip, port, why);
	config_free(cfg);
	return r;
}

static int
host_port(const struct mx_host *h)
{
	if (h->addr.ss_family == AF_INET6)
		return ntohs(
		    ((const struct sockaddr_in6 *)&h->addr)->sin6_port);
	return ntohs(((const struct sockaddr_in *)&h->addr)->sin_port);
}

static void
test_literals(void)
{
	static const struct {
		const char *in;
		int inet;
		enum res res;
		int family;
		const char *ip;
	} cases[] = {
	    {"192.0.2.1", INET_ALL, RES_OK, AF_INET, "192.0.2.1"},
	    {"[192.0.2.1]", INET_ALL, RES_OK, AF_INET, "192.0.2.1"},
	    {"2001:db8::1", INET_ALL, RES_OK, AF_INET6, "2001:db8::1"},
	    {"[IPv6:2001:DB8::1]", INET_ALL, RES_OK, AF_INET6, "2001:db8::1"},
	    {"[ipv6:::1]", INET_ALL, RES_OK, AF_INET6, "::1"},
	    {"192.0.2.1", INET_IPV6, RES_PERM, 0, "5.4.4"},
	    {"2001:db8::1", INET_IPV4, RES_PERM, 0, "5.4.4"},
	    {"[IPv6:2001:db8::1]", INET_IPV6, RES_OK, AF_INET6, "2001:db8::1"},
	};
	struct dns_resolver *r;
	struct mx_host *h = NULL;
	struct dns_self self;
	struct sockaddr_storage me;
	char why[WHY_MAX] = "";
	size_t i;
	int n;
	enum res res;

	for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		/* Port 9 on loopback: any query would fail; none is made. */
		r = resolver_on("127.0.0.1", 9, 1, cases[i].inet);
		if (r == NULL)
			continue;
		why[0] = '\0';
		res = dns_resolve_host(r, cases[i].in, 2525, &h, &n, why);
		if (cases[i].res == RES_OK)
			CHECK(res == RES_OK && n == 1 &&
			          h[0].addr.ss_family == cases[i].family &&
			          strcmp(h[0].ip, cases[i].ip) == 0 &&
			          strcmp(h[0].name, cases[i].in) == 0 &&
			          h[0].pref == -1 && host_port(&h[0]) == 2525 &&
			          h[0].addrlen ==
			              (cases[i].family == AF_INET
			                      ? sizeof(struct sockaddr_in)
			                      : sizeof(struct sockaddr_in6)),
			    "host literal %s -> %s port 2525 (%s)", cases[i].in,
			    cases[i].ip, why);
		else
			CHECK(res == cases[i].res && n == 0 && h == NULL &&
			          strncmp(why, cases[i].ip,
			              strlen(cases[i].ip)) == 0,
			    "host literal %s refused: %s", cases[i].in, why);
		free(h);
		h = NULL;
		dns_resolver_free(r);
	}

	r = resolver_on("127.0.0.1", 9, 1, INET_ALL);
	if (r == NULL)
		return;
	res = dns_resolve_mx(r, "[192.0.2.7]", 25, NULL, 5, &h, &n, why);
	CHECK(res == RES_OK && n == 1 && strcmp(h[0].ip, "192.0.2.7") == 0 &&
	          h[0].pref == -1 && host_port(&h[0]) == 25,
	    "address-literal domain goes straight to the address (%s)", why);
	free(h);
	h = NULL;

	memset(&me, 0, sizeof me);
	((struct sockaddr_in *)&me)->sin_family = AF_INET;
	inet_pton(AF_INET, "192.0.2.7", &((struct sockaddr_in *)&me)->sin_addr);
	self = (struct dns_self){"relay.test", &me, 1};
	res = dns_resolve_mx(r, "[192.0.2.7]", 25, &self, 5, &h, &n, why);
	CHECK(res == RES_PERM && h == NULL && strncmp(why, "5.4.6 ", 6) == 0,
	    "address-literal domain that is us: loop (%s)", why);
	res = dns_resolve_mx(r, "[not an address]", 25, &self, 5, &h, &n, why);
	CHECK(res == RES_PERM && h == NULL && strncmp(why, "5.1.2 ", 6) == 0,
	    "bad address literal (%s)", why);
	dns_resolver_free(r);
	dns_resolver_free(NULL);
	CHECK(true, "dns_resolver_free(NULL) is a no-op");
}

/* -- against fakedns --------------------------------------------------- */

static const char zone[] =
    "$TTL 300\n"
    "; MX 5 a, 10 b, 20 c: addresses .2, .3, .4\n"
    "selfaddr.test. IN MX 5 a.test.\n"
    "selfaddr.test. IN MX 10 b.test.\n"
    "selfaddr.test. IN MX 20 c.test.\n"
    "a.test. IN A 127.0.0.2\n"
    "b.test. IN A 127.0.0.3\n"
    "b.test. IN AAAA ::3\n"
    "c.test. IN A 127.0.0.4\n"
    "; two hosts at the best preference, one of them us (.3)\n"
    "selfeq.test. IN MX 10 a.test.\n"
    "selfeq.test. IN MX 10 b.test.\n"
    "selfeq.test. IN MX 20 c.test.\n"
    "; no MX, the address is ours\n"
    "implicit.test. IN A 127.0.0.3\n"
    "; the same host twice, and another name for the same address\n"
    "dup.test. IN MX 10 a.test.\n"
    "dup.test. IN MX 20 a.test.\n"
    "dup.test. IN MX 30 a-again.test.\n"
    "dup.test. IN MX 40 c.test.\n"
    "a-again.test. IN A 127.0.0.2\n"
    "; CNAME chains: within limits, and a loop\n"
    "chain.test. IN CNAME chain1.test.\n"
    "chain1.test. IN CNAME chain2.test.\n"
    "chain2.test. IN A 127.0.0.2\n"
    "loop1.test. IN CNAME loop2.test.\n"
    "loop2.test. IN CNAME loop1.test.\n"
    "CaseMX.test. IN MX 10 A.TEST.\n";

struct fakedns {
	pid_t pid;
	int port;
	char zone[64];
};

/* Where fakedns.py is: from the repository root, or next to this file. */
static const char *
fakedns_path(char *buf, size_t len)
{
	const char *slash;

	if (access("tests/lib/fakedns.py", R_OK) == 0)
		return "tests/lib/fakedns.py";
	slash = strrchr(__FILE__, '/');
	if (slash == NULL)
		return "../lib/fakedns.py";
	snprintf(buf, len, "%.*s/../lib/fakedns.py", (int)(slash - __FILE__),
	    __FILE__);
	return buf;
}

/* Start fakedns on a free port; 0 when READY, -1 on failure. */
static int
fakedns_start(struct fakedns *fd, const char *text)
{
	char path[512], buf[1024];
	const char *script = fakedns_path(path, sizeof path), *port;
	size_t have = 0;
	ssize_t got;
	int p[2] = {-1, -1}, zfd, rc = -1, i;

	fd->pid = -1;
	fd->port = 0;
	snprintf(fd->zone, sizeof fd->zone, "/tmp/sluice-test-dns-XXXXXX");
	zfd = mkstemp(fd->zone);
	if (zfd < 0)
		goto out;
	got = write(zfd, text, strlen(text));
	close(zfd);
	if (got != (ssize_t)strlen(text) || pipe(p) != 0)
		goto out;
	fd->pid = fork();
	if (fd->pid == 0) {
		dup2(p[1], 1);
		close(p[0]);
		close(p[1]);
		if (getenv("TEST_DNS_VERBOSE") == NULL) {
			int null = open("/dev/null", O_WRONLY);

			dup2(null, 2);
		}
		execl("/usr/bin/python3", "python3", script, "--listen",
		    "127.0.0.1", "--port", "0", "--zone", fd->zone,
		    (char *)NULL);
		_exit(127);
	}
	if (fd->pid < 0)
		goto out;
	/* Wait for "PORT N\nREADY\n", 10 s at most. */
	for (i = 0; i < 100 && have < sizeof buf - 1; i++) {
		struct pollfd pfd = {p[0], POLLIN, 0};

		if (poll(&pfd, 1, 100) <= 0)
			continue;
		got = read(p[0], buf + have, sizeof buf - 1 - have);
		if (got <= 0)
			break;
		have += (size_t)got;
		buf[have] = '\0';
		port = strstr(buf, "PORT ");
		if (port != NULL && strstr(buf, "\nREADY\n") != NULL) {
			fd->port = atoi(port + 5);
			rc = fd->port > 0 ? 0 : -1;
			break;
		}
	}
out:
	if (p[0] >= 0)
		close(p[0]);
	if (p[1] >= 0)
		close(p[1]);
	return rc;
}

static void
fakedns_stop(struct fakedns *fd)
{
	int status = -1;

	if (fd->pid > 0) {
		kill(fd->pid, SIGTERM);
		while (waitpid(fd->pid, &status, 0) < 0 && errno == EINTR)
			;
		CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0,
		    "fakedns exits cleanly on SIGTERM (status %d)", status);
	}
	unlink(fd->zone);
}

static void
set_addr(struct sockaddr_storage *ss, const char *ip, int port)
{
	memset(ss, 0, sizeof *ss);
	if (strchr(ip, ':') != NULL) {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;

		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons((uint16_t)port);
		inet_pton(AF_INET6, ip, &sin6->sin6_addr);
	} else {
		struct sockaddr_in *sin = (struct sockaddr_in *)ss;

		sin->sin_family = AF_INET;
		sin->sin_port = htons((uint16_t)port);
		inet_pton(AF_INET, ip, &sin->sin_addr);
	}
}

/* "name pref ip, ..." of a result, in order. */
static const char *
show_hosts(const struct mx_host *h, int n)
{
	static char buf[1024];
	size_t len = 0;
	int i;

	buf[0] = '\0';
	for (i = 0; i < n && len < sizeof buf; i++)
		len += (size_t)snprintf(buf + len, sizeof buf - len,
		    "%s%s %d %s", i ? ", " : "", h[i].name, h[i].pref, h[i].ip);
	return buf;
}

struct addr_case {
	const char *what;
	const char *domain;
	const char *self_ips[3]; /* our listening addresses */
	int max_hosts;
	enum res res;
	const char *expect; /* show_hosts(), or the start of why */
};

static void
test_self_addresses(struct dns_resolver *r)
{
	static const struct addr_case cases[] = {
	    {"no listener addresses", "selfaddr.test", {NULL}, 5, RES_OK,
	        "a.test 5 127.0.0.2, b.test 10 ::3, b.test 10 127.0.0.3, "
	        "c.test 20 127.0.0.4"},
	    {"our address at pref 10 keeps only pref 5", "selfaddr.test",
	        {"127.0.0.3"}, 5, RES_OK, "a.test 5 127.0.0.2"},
	    {"our IPv6 address at pref 10", "selfaddr.test", {"::3"}, 5, RES_OK,
	        "a.test 5 127.0.0.2"},
	    {"an IPv4-mapped listener matches", "selfaddr.test",
	        {"::ffff:127.0.0.3"}, 5, RES_OK, "a.test 5 127.0.0.2"},
	    {"our address at pref 20", "selfaddr.test",
	        {"192.0.2.9", "127.0.0.4"}, 5, RES_OK,
	        "a.test 5 127.0.0.2, b.test 10 ::3, b.test 10 127.0.0.3"},
	    {"our address at the best pref: loop", "selfaddr.test",
	        {"127.0.0.2"}, 5, RES_PERM, "5.4.6 mail for selfaddr.test"},
	    {"wildcard listeners do not count", "selfaddr.test",
	        {"0.0.0.0", "::"}, 5, RES_OK,
	        "a.test 5 127.0.0.2, b.test 10 ::3, b.test 10 127.0.0.3, "
	        "c.test 20 127.0.0.4"},
	    {"other addresses do not count", "selfaddr.test",
	        {"127.0.0.9", "::9"}, 2, RES_OK,
	        "a.test 5 127.0.0.2, b.test 10 ::3, b.test 10 127.0.0.3"},
	    {"implicit MX that is us: loop", "implicit.test", {"127.0.0.3"}, 5,
	        RES_PERM, "5.4.6 mail for implicit.test"},
	    {"implicit MX, not us", "implicit.test", {"127.0.0.9"}, 5, RES_OK,
	        "implicit.test -1 127.0.0.3"},
	    {"same host twice, same address twice: listed once", "dup.test",
	        {NULL}, 5, RES_OK, "a.test 10 127.0.0.2, c.test 40 127.0.0.4"},
	    {"MX names are compared without case", "casemx.test", {NULL}, 5,
	        RES_OK, "a.test 10 127.0.0.2"},
	};
	struct sockaddr_storage addrs[3];
	struct mx_host *h = NULL;
	struct dns_self self;
	char why[WHY_MAX] = "";
	size_t i;
	int j, n, rep;
	enum res res;

	for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		for (j = 0; j < 3 && cases[i].self_ips[j] != NULL; j++)
			set_addr(&addrs[j], cases[i].self_ips[j], 2525);
		self = (struct dns_self){"relay.test", addrs, j};
		why[0] = '\0';
		res = dns_resolve_mx(r, cases[i].domain, 25, &self,
		    cases[i].max_hosts, &h, &n, why);
		if (cases[i].res == RES_OK)
			CHECK(res == RES_OK && strcmp(show_hosts(h, n),
			                           cases[i].expect) == 0,
			    "%s: %s (%s)", cases[i].what, show_hosts(h, n),
			    why);
		else
			CHECK(res == cases[i].res && h == NULL && n == 0 &&
			          strncmp(why, cases[i].expect,
			              strlen(cases[i].expect)) == 0,
			    "%s: %s", cases[i].what, why);
		free(h);
		h = NULL;
	}

	/*
	 * Two hosts at the best preference, the second of them us: with
	 * max_hosts 1 the search must still look at both, whatever the
	 * shuffle put first.
	 */
	set_addr(&addrs[0], "127.0.0.3", 25);
	self = (struct dns_self){"relay.test", addrs, 1};
	for (rep = 0, j = 0; rep < 12; rep++) {
		res =
		    dns_resolve_mx(r, "selfeq.test", 25, &self, 1, &h, &n, why);
		if (res == RES_PERM && strncmp(why, "5.4.6 ", 6) == 0)
			j++;
		free(h);
		h = NULL;
	}
	CHECK(j == 12, "us among equal best MX, max_hosts 1: loop (%d/12)", j);
}

static void
test_lookups(struct dns_resolver *r)
{
	struct mx_host *h = NULL;
	char why[WHY_MAX] = "";
	int n;
	enum res res;

	res = dns_resolve_host(r, "b.test", 587, &h, &n, why);
	CHECK(res == RES_OK &&
	          strcmp(show_hosts(h, n),
	              "b.test -1 ::3, b.test -1 127.0.0.3") == 0 &&
	          host_port(&h[0]) == 587 && host_port(&h[1]) == 587,
	    "host: AAAA then A, port set (%s)", show_hosts(h, n));
	free(h);
	h = NULL;
	res = dns_resolve_host(r, "chain.test", 25, &h, &n, why);
	CHECK(res == RES_OK &&
	          strcmp(show_hosts(h, n), "chain.test -1 127.0.0.2") == 0,
	    "host: two CNAMEs followed (%s %s)", show_hosts(h, n), why);
	free(h);
	h = NULL;
	res = dns_resolve_host(r, "loop1.test", 25, &h, &n, why);
	CHECK(res == RES_TEMP && h == NULL && strncmp(why, "4.4.3 ", 6) == 0,
	    "host: CNAME loop is bounded (%s)", why);
	res = dns_resolve_host(r, "nx.test", 25, &h, &n, why);
	CHECK(res == RES_PERM && h == NULL && strncmp(why, "5.4.4 ", 6) == 0 &&
	          strstr(why, "NXDOMAIN") != NULL,
	    "host: NXDOMAIN (%s)", why);
	res = dns_resolve_host(r, "selfaddr.test", 25, &h, &n, why);
	CHECK(res == RES_PERM && h == NULL && strncmp(why, "5.4.4 ", 6) == 0,
	    "host: no address (%s)", why);
	res = dns_resolve_host(r, "servfail.b.test", 25, &h, &n, why);
	CHECK(res == RES_TEMP && h == NULL &&
	          strstr(why, "4.4.3 DNS lookup of") == why &&
	          strstr(why, "SERVFAIL") != NULL,
	    "host: SERVFAIL (%s)", why);
	/* A timeout, then the same resolver still works. */
	res = dns_resolve_mx(r, "timeout.test", 25, NULL, 5, &h, &n, why);
	CHECK(res == RES_TEMP && h == NULL && strncmp(why, "4.4.3 ", 6) == 0,
	    "MX lookup timeout is temporary (%s)", why);
	res = dns_resolve_mx(r, "selfaddr.test", 25, NULL, 1, &h, &n, why);
	CHECK(res == RES_OK && n == 1 && strcmp(h[0].name, "a.test") == 0,
	    "the resolver works again after a timeout (%s)", why);
	free(h);
}

static void
test_with_fakedns(void)
{
	struct fakedns fd;
	struct dns_resolver *r, *r6;

	if (fakedns_start(&fd, zone) != 0) {
		CHECK(
		    false, "fakedns starts (set TEST_DNS_VERBOSE to see why)");
		fakedns_stop(&fd);
		return;
	}
	r = resolver_on("127.0.0.1", fd.port, 1, INET_ALL);
	r6 = resolver_on("127.0.0.1", fd.port, 1, INET_IPV6);
	if (r != NULL && r6 != NULL) {
		struct mx_host *h = NULL;
		char why[WHY_MAX] = "";
		int n;
		enum res res;

		test_self_addresses(r);
		test_lookups(r);
		res = dns_resolve_mx(
		    r6, "selfaddr.test", 25, NULL, 5, &h, &n, why);
		CHECK(res == RES_OK &&
		          strcmp(show_hosts(h, n), "b.test 10 ::3") == 0,
		    "inet_protocols ipv6: AAAA only (%s %s)", show_hosts(h, n),
		    why);
		free(h);
	}
	dns_resolver_free(r);
	dns_resolver_free(r6);
	fakedns_stop(&fd);
}

/* -- malformed answers, through a canned resolver ---------------------- */

/* One answer record: owner, type and raw data. */
struct crr {
	const char *owner;
	int type;
	const char *data;
	size_t len;
};

/* A canned reply: the answers to give, in the order asked. */
struct canned {
	const char *name; /* the question expected */
	int type;
	struct crr rrs[3];
	int nrrs;
};

struct script {
	const struct canned *c;
	int n, next;
	bool wrong; /* a question came that was not expected */
};

static size_t
put_name(unsigned char *p, const char *name)
{
	size_t o = 0;

	while (*name != '\0') {
		size_t l = strcspn(name, ".");

		p[o++] = (unsigned char)l;
		memcpy(p + o, name, l);
		o += l;
		name += l + (name[l] == '.');
	}
	p[o++] = 0;
	return o;
}

static unsigned char *
canned_answer(void *arg, const char *name, int qtype, size_t *len)
{
	struct script *s = arg;
	const struct canned *c;
	unsigned char *p;
	size_t o = 12;
	int i;

	if (s->next >= s->n || strcmp(s->c[s->next].name, name) != 0 ||
	    s->c[s->next].type != qtype) {
		s->wrong = true;
		return NULL;
	}
	c = &s->c[s->next++];
	p = xcalloc(1, 1024);
	/* id 1; QR, AA, RD, RA; NOERROR; one question, nrrs answers */
	memcpy(p, "\0\1\x85\x80\0\1\0\0\0\0\0\0", 12);
	p[7] = (unsigned char)c->nrrs;
	o += put_name(p + o, name);
	p[o++] = 0;
	p[o++] = (unsigned char)qtype;
	p[o++] = 0;
	p[o++] = 1;
	for (i = 0; i < c->nrrs; i++) {
		const struct crr *rr = &c->rrs[i];

		o += put_name(p + o, rr->owner);
		p[o++] = 0;
		p[o++] = (unsigned char)rr->type;
		memcpy(p + o, "\0\1\0\0\1\x2c", 6); /* IN, TTL 300 */
		o += 6;
		p[o++] = 0;
		p[o++] = (unsigned char)rr->len;
		memcpy(p + o, rr->data, rr->len);
		o += rr->len;
	}
	*len = o;
	return p;
}

static void
test_malformed(void)
{
	/* An A record with no data (the fuzzer's find), then AAAA too. */
	static const struct canned host_empty_a[] = {
	    {"mail.test", 28, {{0}}, 0},
	    {"mail.test", 1, {{"mail.test", 1, "", 0}}, 1},
	};
	static const struct canned implicit_empty_a[] = {
	    {"d.test", 15, {{0}}, 0},
	    {"d.test", 28, {{"d.test", 28, "", 0}}, 1},
	    {"d.test", 1, {{"d.test", 1, "", 0}}, 1},
	};
	static const struct canned one_good_a[] = {
	    {"mail.test", 28, {{0}}, 0},
	    {"mail.test", 1,
	        {{"mail.test", 1, "", 0}, {"mail.test", 1, "\xc0\0\2\x05", 4}},
	        2},
	};
	static const struct canned mx_empty[] = {
	    {"d.test", 15, {{"d.test", 15, "", 0}}, 1},
	};
	struct mx_host *h = NULL;
	struct script sc;
	struct dns_resolver *r;
	char why[WHY_MAX];
	enum res res;
	int n = -1;

	sc = (struct script){host_empty_a, 2, 0, false};
	r = dns_resolver_new_canned(INET_ALL, canned_answer, &sc);
	res = dns_resolve_host(r, "mail.test", 25, &h, &n, why);
	CHECK(res == RES_TEMP && h == NULL && n == 0 && !sc.wrong &&
	          strcmp(why, "4.4.3 DNS lookup of A for mail.test failed: "
	                      "malformed answer (no usable A record)") == 0,
	    "host: an A record without data is a malformed answer, not "
	    "success without address (%d: %s)",
	    res, why);
	dns_resolver_free(r);

	sc = (struct script){implicit_empty_a, 3, 0, false};
	r = dns_resolver_new_canned(INET_ALL, canned_answer, &sc);
	res = dns_resolve_mx(r, "d.test", 25, NULL, 5, &h, &n, why);
	CHECK(res == RES_TEMP && h == NULL && n == 0 && !sc.wrong &&
	          strstr(why, "4.4.3 ") == why &&
	          strstr(why, "malformed answer") != NULL,
	    "implicit MX: A and AAAA without data are a malformed answer "
	    "(%d: %s)",
	    res, why);
	dns_resolver_free(r);

	sc = (struct script){one_good_a, 2, 0, false};
	r = dns_resolver_new_canned(INET_ALL, canned_answer, &sc);
	res = dns_resolve_host(r, "mail.test", 25, &h, &n, why);
	CHECK(res == RES_OK && n == 1 && !sc.wrong &&
	          strcmp(show_hosts(h, n), "mail.test -1 192.0.2.5") == 0,
	    "host: the usable A record of two is used (%s)", show_hosts(h, n));
	free(h);
	h = NULL;
	dns_resolver_free(r);

	sc = (struct script){mx_empty, 1, 0, false};
	r = dns_resolver_new_canned(INET_ALL, canned_answer, &sc);
	res = dns_resolve_mx(r, "d.test", 25, NULL, 5, &h, &n, why);
	CHECK(res == RES_TEMP && h == NULL && !sc.wrong &&
	          strcmp(why, "4.4.3 DNS lookup of MX for d.test failed: "
	                      "malformed answer (no usable MX record)") == 0,
	    "MX record without data: malformed answer (%d: %s)", res, why);
	dns_resolver_free(r);
}

int
main(void)
{
	setvbuf(stdout, NULL, _IOLBF, 0); /* whole lines, before any fork */
	test_sort();
	test_shuffle();
	test_self();
	test_literals();
	test_with_fakedns();
	test_malformed();
	UNIT_DONE();
}
