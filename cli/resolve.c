/*
 * resolve.c - `sluice resolve DOMAIN [-c FILE]`: where mail for DOMAIN
 * would go, resolved as delivery resolves it (dns/dns.c, with the
 * configured resolver, port and MX limit): one line per address in the
 * order they are tried, "NAME PREF ADDRESS PORT".  A failure prints
 * "temporary REASON" (exit 75) or "permanent REASON" (exit 69).
 *
 * With dnssec = trust-ad each line also says which answers were secure
 * ("mx=secure addr=insecure"), and a host whose address was secure is
 * followed by its TLSA records as DANE would see them, one per line:
 * "  tlsa USAGE SELECTOR MTYPE HEX secure|insecure", "  tlsa none
 * secure|insecure" or "  tlsa error REASON".
 *
 * Threads: single-threaded command; no shared state.
 */
#include "cli.h"
#include "dns.h"
#include "loadcfg.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <sysexits.h>

/* The TLSA records of a host, for the DANE check. */
static void
print_tlsa(struct dns_resolver *r, const char *host, int port)
{
	struct dns_tlsa *t = NULL;
	char why[WHY_MAX];
	bool secure;
	int i, n;
	size_t k;

	if (dns_lookup_tlsa(r, host, port, &t, &n, &secure, why) != RES_OK) {
		printf("  tlsa error %s\n", why);
		return;
	}
	if (n == 0)
		printf("  tlsa none %s\n", secure ? "secure" : "insecure");
	for (i = 0; i < n; i++) {
		printf(
		    "  tlsa %u %u %u ", t[i].usage, t[i].selector, t[i].mtype);
		for (k = 0; k < t[i].len; k++)
			printf("%02x", t[i].data[k]);
		printf(" %s\n", secure ? "secure" : "insecure");
	}
	dns_tlsa_free(t, n);
}

int
resolve_cmd(int argc, char **argv)
{
	const char *source, *path, *domain;
	struct config *cfg;
	struct dns_resolver *r = NULL;
	struct mx_host *hosts = NULL;
	struct dns_self self = {NULL, NULL, 0};
	char why[WHY_MAX];
	enum res res;
	int i, n = 0, rc;

	rc = loadcfg_args(
	    argc, argv, "sluice resolve DOMAIN [-c FILE]", &path, &domain);
	if (rc != 0)
		return rc;
	cfg = load_config(path, &source);
	if (cfg == NULL)
		return 1;
	rc = 1;
	r = dns_resolver_new(cfg, why);
	if (r == NULL) {
		fprintf(stderr, "sluice: %s\n", why);
		goto out;
	}
	self.hostname = cfg->hostname;
	res = dns_resolve_mx(r, domain, cfg->delivery_port, &self,
	    cfg->max_mx_hosts, &hosts, &n, why);
	if (res != RES_OK) {
		printf("%s %s\n", res == RES_TEMP ? "temporary" : "permanent",
		    why);
		rc = res == RES_TEMP ? EX_TEMPFAIL : EX_UNAVAILABLE;
		goto out;
	}
	for (i = 0; i < n; i++) {
		printf("%s %d %s %d", hosts[i].name, hosts[i].pref, hosts[i].ip,
		    sockaddr_port((struct sockaddr *)&hosts[i].addr));
		if (cfg->dnssec == DNSSEC_TRUST_AD)
			printf(" mx=%s addr=%s",
			    hosts[i].mx_secure ? "secure" : "insecure",
			    hosts[i].addr_secure ? "secure" : "insecure");
		printf("\n");
		if (cfg->dnssec == DNSSEC_TRUST_AD && hosts[i].addr_secure)
			print_tlsa(r, hosts[i].name, cfg->delivery_port);
	}
	rc = 0;
out:
	free(hosts);
	dns_resolver_free(r);
	config_free(cfg);
	return rc;
}
