/*
 * dane.h - DANE authentication of an SMTP server's certificate chain
 * (RFC 7672 section 3, RFC 7671), with GnuTLS's certificate and trust-list
 * APIs: libgnutls-dane checks neither the path to a DANE-TA anchor nor the
 * name, and resolves through its own resolver.
 *
 * Usable records (RFC 7672 section 3.1): usage 3 (DANE-EE) and 2
 * (DANE-TA), selector 0 (the certificate) or 1 (its SubjectPublicKeyInfo),
 * matching type 0 (exact), 1 (SHA-256) or 2 (SHA-512).  Usages 0 and 1
 * (PKIX-TA, PKIX-EE) are not usable for SMTP.  Where a usage and selector
 * have SHA-512 records, their SHA-256 ones are ignored (digest agility,
 * RFC 7671 section 9).
 *
 *  - DANE-EE: the leaf matches; no name check, no expiry check (section
 *    3.1.1).
 *  - DANE-TA: a certificate of the presented chain other than the leaf
 *    matches; it becomes the only trust anchor, the chain from the leaf
 *    to it is verified (signatures, validity, CA constraints), and the
 *    leaf must match one of the reference names (section 3.2.2: the MX
 *    host name, and the next-hop domain when the MX answer was secure).
 *
 * Threads: pure functions of their arguments.
 */
#ifndef SLUICE_DANE_H
#define SLUICE_DANE_H

#include <stdbool.h>
#include <stddef.h>

#include "dns.h"

/* Is `t` a record DANE for SMTP uses? */
bool dane_usable(const struct dns_tlsa *t);

/* A DER certificate. */
struct dane_cert {
	const unsigned char *der;
	size_t len;
};

/*
 * Check `chain` (leaf first, as the server sent it) against the usable
 * records of `recs` (DANE-TA validity: at the present time).  0 when one
 * authenticates the server, with the record that did in `what` ("DANE-EE
 * 3 1 1", "DANE-TA 2 0 1"); -1 with `why` (WHY_MAX) otherwise.
 */
int dane_verify(const struct dane_cert *chain, int n,
    const struct dns_tlsa *recs, int nrecs, const char *const *names,
    int nnames, char *what, size_t wlen, char *why);

#endif
