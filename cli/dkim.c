/*
 * dkim.c - `sluice dkim`: make a DKIM key and print the DNS record that
 * publishes it (tls/dkim.c does the work).
 *
 *   sluice dkim keygen DOMAIN SELECTOR --key FILE [--ed25519 | --rsa BITS]
 *   sluice dkim show DOMAIN SELECTOR --key FILE
 *
 * keygen writes the key (PKCS#8 PEM, mode 0600, never over an existing
 * file; RSA 2048 by default) and prints the record; show prints the
 * record of an existing key.  The record alone goes to standard output,
 * one line, ready to paste into a zone; exit 0, 1 on failure, 2 on a
 * usage error.  Add the key to dkim_keys (DOMAIN:SELECTOR:FILE) and
 * reload.
 *
 * Threads: single-threaded command; no shared state.
 */
#include "cli.h"
#include "dkim.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DKIM_USAGE                                                             \
	"usage: sluice dkim keygen DOMAIN SELECTOR --key FILE "                \
	"[--ed25519 | --rsa BITS]\n"                                           \
	"       sluice dkim show DOMAIN SELECTOR --key FILE\n"

/* A domain and a selector we can put in a record: DNS names' octets. */
static bool
name_ok(const char *s, bool dots)
{
	size_t i, n = strlen(s);

	if (n == 0 || n > 253 || s[0] == '.' || s[0] == '-')
		return false;
	for (i = 0; i < n; i++) {
		char c = s[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		        (c >= '0' && c <= '9') || c == '-' || c == '_' ||
		        (dots && c == '.')))
			return false;
	}
	return dots || n <= DKIM_SELECTOR_MAX;
}

int
dkim_cmd(int argc, char **argv)
{
	const char *key = NULL;
	enum dkim_alg alg = DKIM_RSA_SHA256;
	unsigned long bits = 2048;
	char why[WHY_MAX], *end;
	bool keygen;
	int i;

	if (argc < 4 ||
	    (strcmp(argv[1], "keygen") != 0 && strcmp(argv[1], "show") != 0)) {
		fputs(DKIM_USAGE, stderr);
		return 2;
	}
	keygen = strcmp(argv[1], "keygen") == 0;
	for (i = 4; i < argc; i++) {
		if (strcmp(argv[i], "--key") == 0 && i + 1 < argc) {
			key = argv[++i];
		} else if (keygen && strcmp(argv[i], "--ed25519") == 0) {
			alg = DKIM_ED25519_SHA256;
		} else if (keygen && strcmp(argv[i], "--rsa") == 0 &&
		           i + 1 < argc) {
			alg = DKIM_RSA_SHA256;
			bits = strtoul(argv[++i], &end, 10);
			if (*end != '\0' || bits < 1024 || bits > 8192) {
				fprintf(stderr,
				    "sluice: dkim: --rsa takes 1024 to 8192 "
				    "bits (2048 or more recommended)\n");
				return 2;
			}
		} else {
			fprintf(stderr, "sluice: unexpected argument \"%s\"\n",
			    argv[i]);
			fputs(DKIM_USAGE, stderr);
			return 2;
		}
	}
	if (key == NULL) {
		fputs(DKIM_USAGE, stderr);
		return 2;
	}
	if (!name_ok(argv[2], true) || !name_ok(argv[3], false)) {
		fprintf(stderr,
		    "sluice: dkim: \"%s\" / \"%s\": a domain (A-label) and a "
		    "selector of letters, digits, '-' and '_' are needed\n",
		    argv[2], argv[3]);
		return 2;
	}
	if (keygen && dkim_keygen(key, alg, (unsigned)bits, why) != 0) {
		fprintf(stderr, "sluice: dkim: %s\n", why);
		return 1;
	}
	if (dkim_print_record(stdout, argv[2], argv[3], key, why) != 0) {
		fprintf(stderr, "sluice: dkim: %s\n", why);
		return 1;
	}
	return 0;
}
