/*
 * signtime.c - how long one signature takes with GnuTLS, as sluice makes
 * it for DKIM (gnutls_privkey_sign_hash2 for RSA, sign_data2 over the
 * digest for Ed25519): the reference beside `bench.py --only dkim`'s
 * extra CPU per message.
 *
 *   signtime KEYFILE [N]    prints "SECONDS" per signature (N: 200)
 */
#include <gnutls/abstract.h>
#include <gnutls/gnutls.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

int
main(int argc, char **argv)
{
	gnutls_datum_t pem, dig, sig;
	gnutls_privkey_t k;
	unsigned char d[32] = {1};
	struct timespec t0, t1;
	int i, n = argc > 2 ? atoi(argv[2]) : 200, rsa;

	if (argc < 2 || gnutls_load_file(argv[1], &pem) < 0)
		return 2;
	gnutls_privkey_init(&k);
	if (gnutls_privkey_import_x509_raw(
	        k, &pem, GNUTLS_X509_FMT_PEM, NULL, 0) < 0)
		return 1;
	rsa = gnutls_privkey_get_pk_algorithm(k, NULL) == GNUTLS_PK_RSA;
	dig.data = d;
	dig.size = sizeof(d);
	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t0);
	for (i = 0; i < n; i++) {
		int rc = rsa ? gnutls_privkey_sign_hash2(
		                   k, GNUTLS_SIGN_RSA_SHA256, 0, &dig, &sig)
		             : gnutls_privkey_sign_data2(
		                   k, GNUTLS_SIGN_EDDSA_ED25519, 0, &dig, &sig);

		if (rc < 0)
			return 1;
		gnutls_free(sig.data);
	}
	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t1);
	printf("%.9f\n", ((double)(t1.tv_sec - t0.tv_sec) +
	                     (double)(t1.tv_nsec - t0.tv_nsec) / 1e9) /
	                     n);
	gnutls_privkey_deinit(k);
	gnutls_free(pem.data);
	return 0;
}
