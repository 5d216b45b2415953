/*
 * check.c - `sluice check-config [-c FILE]`: load the configuration as
 * `sluice serve` would, with the TLS priority string, certificate and
 * auth_users file it names, and report every problem; exit 0 and
 * "FILE: configuration OK" when there is none.
 *
 * Threads: single-threaded command; no shared state.
 */
#include "cli.h"
#include "dkim.h"
#include "relays.h"
#include "loadcfg.h"
#include "serve.h"
#include "util.h"

#include <stdio.h>

int
check_config_cmd(int argc, char **argv)
{
	const char *source, *path;
	struct config *cfg;
	struct tls_creds *creds;
	struct auth_table *users;
	struct dkim_keys *dkim;
	struct relays *relays;
	char why[WHY_MAX];
	bool failed;
	int rc;

	rc = loadcfg_args(
	    argc, argv, "sluice check-config [-c FILE]", &path, NULL);
	if (rc != 0)
		return rc;
	cfg = load_config(path, &source);
	if (cfg == NULL)
		return 1;
	if (tls_priority_check(cfg->tls_priority, why) != 0) {
		fprintf(stderr, "%s: %s\n", source, why);
		rc = 1;
	} else if (cfg->tls_cert[0] != '\0') {
		creds = serve_load_tls(cfg, false, why);
		if (creds == NULL) {
			fprintf(stderr, "%s: %s\n", source, why);
			rc = 1;
		}
		tls_creds_unref(creds);
	}
	users = serve_load_auth(cfg, &failed);
	if (failed)
		rc = 1;
	auth_table_free(users);
	dkim = serve_load_dkim(cfg, why);
	if (dkim == NULL) {
		fprintf(stderr, "%s: %s\n", source, why);
		rc = 1;
	}
	dkim_keys_free(dkim);
	relays = relays_load(cfg->sender_relays, why);
	if (relays == NULL) {
		fprintf(stderr, "%s: %s\n", source, why);
		rc = 1;
	}
	relays_free(relays);
	if (rc == 0)
		printf("%s: configuration OK\n", source);
	config_free(cfg);
	return rc;
}
