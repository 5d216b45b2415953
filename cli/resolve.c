/*
 * resolve.c - `sluice resolve DOMAIN [-c FILE]`: where mail for DOMAIN
 * would go, resolved as delivery resolves it (dns/dns.c, with the
 * configured resolver, port and MX limit): one line per address in the
 * order they are tried, "NAME PREF ADDRESS PORT".  A failure prints
 * "temporary REASON" (exit 75) or "permanent REASON" (exit 69).
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
	for (i = 0; i < n; i++)
		printf("%s %d %s %d\n", hosts[i].name, hosts[i].pref,
		    hosts[i].ip,
		    sockaddr_port((struct sockaddr *)&hosts[i].addr));
	rc = 0;
out:
	free(hosts);
	dns_resolver_free(r);
	config_free(cfg);
	return rc;
}
