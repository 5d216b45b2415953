/* dns.c - placeholder until the ldns implementation lands (see dns.h). */
#include "dns.h"

#include <stdlib.h>

struct dns_resolver {
	int unused;
};

struct dns_resolver *
dns_resolver_new(const struct config *cfg, char *why)
{
	(void)cfg;
	why_set(why, "DNS is not implemented yet");
	return NULL;
}

void
dns_resolver_free(struct dns_resolver *r)
{
	free(r);
}

enum res
dns_resolve_mx(struct dns_resolver *r, const char *domain, int port,
    const struct dns_self *self, int max_hosts, struct mx_host **out, int *n,
    char *why)
{
	(void)r, (void)domain, (void)port, (void)self, (void)max_hosts;
	*out = NULL;
	*n = 0;
	why_set(why, "4.4.3 DNS is not implemented yet");
	return RES_TEMP;
}

enum res
dns_resolve_host(struct dns_resolver *r, const char *host, int port,
    struct mx_host **out, int *n, char *why)
{
	(void)r, (void)host, (void)port;
	*out = NULL;
	*n = 0;
	why_set(why, "4.4.3 DNS is not implemented yet");
	return RES_TEMP;
}

int
dns_order_mx(struct mx_rr *rr, int n, const char *self_name,
    unsigned (*rnd)(void *), void *rnd_arg)
{
	(void)rr, (void)self_name, (void)rnd, (void)rnd_arg;
	return n;
}
