/*
 * dane.c - DANE authentication of a server's chain (see dane.h).
 *
 * Invariants:
 *  1. Only usable records are looked at (dane_usable); a record's data is
 *     compared whole (matching type 0) or as a digest of the exact length.
 *     Digest agility (RFC 7671 section 9): where a usage and selector
 *     have SHA-512 records, their SHA-256 records are ignored, so that a
 *     domain moving off a weakened digest is not held back by its old
 *     records.
 *  2. DANE-EE looks at the leaf only and at nothing but the match.
 *  3. DANE-TA trusts the matched certificate alone (a fresh trust list
 *     per check), verifies the chain from the leaf up to it, and checks
 *     the leaf's name: a chain with the real anchor appended to another
 *     key's certificate does not verify.
 */
#include "dane.h"
#include "util.h"

#include <gnutls/abstract.h>
#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DANE_CHAIN_MAX 16 /* certificates of a chain looked at */

bool
dane_usable(const struct dns_tlsa *t)
{
	return (t->usage == 2 || t->usage == 3) && t->selector <= 1 &&
	       t->mtype <= 2 && t->len > 0;
}

/*
 * Is recs[i] usable and not outranked by a stronger digest of the same
 * usage and selector?  SHA-512 (2) ranks above SHA-256 (1); an exact
 * match (0) is not a digest and always counts.
 */
static bool
counted(const struct dns_tlsa *recs, int nrecs, int i)
{
	int j;

	if (!dane_usable(&recs[i]))
		return false;
	if (recs[i].mtype != 1)
		return true;
	for (j = 0; j < nrecs; j++)
		if (recs[j].mtype == 2 && recs[j].usage == recs[i].usage &&
		    recs[j].selector == recs[i].selector &&
		    dane_usable(&recs[j]))
			return false;
	return true;
}

/* The octets `selector` names of `crt`: the certificate (0 returned) or
 * its SPKI (1: free out->data with gnutls_free); -1 on failure. */
static int
selected(gnutls_x509_crt_t crt, const struct dane_cert *c, int selector,
    gnutls_datum_t *out)
{
	gnutls_pubkey_t pub;
	int rc;

	if (selector == 0) {
		out->data = (unsigned char *)c->der;
		out->size = (unsigned)c->len;
		return 0;
	}
	if (gnutls_pubkey_init(&pub) < 0)
		return -1;
	rc = gnutls_pubkey_import_x509(pub, crt, 0);
	if (rc >= 0)
		rc = gnutls_pubkey_export2(pub, GNUTLS_X509_FMT_DER, out);
	gnutls_pubkey_deinit(pub);
	return rc < 0 ? -1 : 1;
}

/* Does certificate `crt` (DER `c`) match record `t`? */
static bool
matches(
    gnutls_x509_crt_t crt, const struct dane_cert *c, const struct dns_tlsa *t)
{
	gnutls_datum_t d;
	unsigned char digest[64];
	bool ok = false;
	int owned = selected(crt, c, t->selector, &d);

	if (owned < 0)
		return false;
	if (t->mtype == 0) {
		ok = t->len == d.size && memcmp(t->data, d.data, d.size) == 0;
	} else {
		gnutls_digest_algorithm_t alg =
		    t->mtype == 1 ? GNUTLS_DIG_SHA256 : GNUTLS_DIG_SHA512;
		size_t dl = t->mtype == 1 ? 32 : 64;

		ok = t->len == dl &&
		     gnutls_hash_fast(alg, d.data, d.size, digest) == 0 &&
		     memcmp(t->data, digest, dl) == 0;
	}
	if (owned > 0)
		gnutls_free(d.data);
	return ok;
}

/* Why GnuTLS refused a chain, in words. */
static void
status_text(unsigned status, char *buf, size_t len)
{
	gnutls_datum_t out = {NULL, 0};

	if (gnutls_certificate_verification_status_print(
	        status, GNUTLS_CRT_X509, &out, 0) == 0) {
		snprintf(buf, len, "%s", (const char *)out.data);
		gnutls_free(out.data);
	} else {
		snprintf(buf, len, "status 0x%x", status);
	}
}

/*
 * DANE-TA: the chain crts[0..ta] verified with crts[ta] as the only trust
 * anchor, and the leaf's name one of `names`.  0, or -1 with `why`.
 */
static int
verify_to_anchor(gnutls_x509_crt_t *crts, int ta, const struct dane_cert *der,
    const char *const *names, int nnames, char *why)
{
	gnutls_x509_trust_list_t tl = NULL;
	gnutls_x509_crt_t anchor = NULL;
	gnutls_datum_t d = {
	    (unsigned char *)der[ta].der, (unsigned)der[ta].len};
	unsigned status = 0;
	char text[256];
	int i, rc = -1;

	if (gnutls_x509_trust_list_init(&tl, 0) < 0 ||
	    gnutls_x509_crt_init(&anchor) < 0 ||
	    gnutls_x509_crt_import(anchor, &d, GNUTLS_X509_FMT_DER) < 0) {
		why_set(why, "cannot set up the DANE-TA anchor");
		if (anchor != NULL)
			gnutls_x509_crt_deinit(anchor);
		goto out;
	}
	if (gnutls_x509_trust_list_add_cas(tl, &anchor, 1, 0) != 1) {
		gnutls_x509_crt_deinit(anchor);
		why_set(why, "cannot set up the DANE-TA anchor");
		goto out;
	}
	/* The trust list owns the anchor now. */
	if (gnutls_x509_trust_list_verify_crt2(tl, crts, (unsigned)ta + 1, NULL,
	        0, GNUTLS_VERIFY_ALLOW_UNSORTED_CHAIN, &status, NULL) < 0 ||
	    status != 0) {
		status_text(status, text, sizeof(text));
		why_set(why,
		    "the chain does not verify to the DANE-TA anchor: %s",
		    text);
		goto out;
	}
	for (i = 0; i < nnames; i++)
		if (names[i] != NULL && names[i][0] != '\0' &&
		    gnutls_x509_crt_check_hostname2(crts[0], names[i], 0)) {
			rc = 0;
			goto out;
		}
	why_set(why, "the certificate matches neither %s%s%s",
	    nnames > 0 ? names[0] : "", nnames > 1 ? " nor " : "",
	    nnames > 1 ? names[1] : "");
out:
	if (tl != NULL)
		gnutls_x509_trust_list_deinit(tl, 1);
	return rc;
}

int
dane_verify(const struct dane_cert *chain, int n, const struct dns_tlsa *recs,
    int nrecs, const char *const *names, int nnames, char *what, size_t wlen,
    char *why)
{
	gnutls_x509_crt_t crts[DANE_CHAIN_MAX];
	char tawhy[WHY_MAX] = "";
	int i, k, ncrt = 0, rc = -1;
	bool any_ta = false;

	if (n <= 0) {
		why_set(why, "the server sent no certificate");
		return -1;
	}
	if (n > DANE_CHAIN_MAX)
		n = DANE_CHAIN_MAX;
	for (; ncrt < n; ncrt++) {
		gnutls_datum_t d = {(unsigned char *)chain[ncrt].der,
		    (unsigned)chain[ncrt].len};

		if (gnutls_x509_crt_init(&crts[ncrt]) < 0)
			break;
		if (gnutls_x509_crt_import(
		        crts[ncrt], &d, GNUTLS_X509_FMT_DER) < 0) {
			gnutls_x509_crt_deinit(crts[ncrt]);
			break;
		}
	}
	if (ncrt == 0) {
		why_set(why, "the server's certificate cannot be read");
		return -1;
	}
	/* DANE-EE first: the cheaper check, and what most servers use. */
	for (i = 0; i < nrecs; i++)
		if (counted(recs, nrecs, i) && recs[i].usage == 3 &&
		    matches(crts[0], &chain[0], &recs[i])) {
			snprintf(what, wlen, "DANE-EE 3 %u %u",
			    recs[i].selector, recs[i].mtype);
			rc = 0;
			goto out;
		}
	for (i = 0; i < nrecs; i++) {
		if (!counted(recs, nrecs, i) || recs[i].usage != 2)
			continue;
		any_ta = true;
		for (k = 1; k < ncrt; k++) {
			if (!matches(crts[k], &chain[k], &recs[i]))
				continue;
			if (verify_to_anchor(
			        crts, k, chain, names, nnames, tawhy) == 0) {
				snprintf(what, wlen, "DANE-TA 2 %u %u",
				    recs[i].selector, recs[i].mtype);
				rc = 0;
				goto out;
			}
		}
	}
	if (tawhy[0] != '\0')
		why_set(why, "%s", tawhy);
	else if (any_ta)
		why_set(why, "no certificate of the chain matches a TLSA "
		             "record");
	else
		why_set(why, "the certificate matches no TLSA record");
out:
	for (i = 0; i < ncrt; i++)
		gnutls_x509_crt_deinit(crts[i]);
	return rc;
}
