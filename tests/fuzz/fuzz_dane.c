/*
 * fuzz_dane.c - DANE authentication (tls/dane.c) of a hostile server's
 * certificate chain against TLSA records: the chain's DER as the server
 * sends it, parsed by GnuTLS, matched, verified to a DANE-TA anchor.
 *
 * Input: one octet, the number of records (low 3 bits); each record as
 * usage, selector, matching type, a length octet and that much data; then
 * certificates, each a 2-octet big-endian length and DER, to the end (at
 * most 8).  The reference names are mx.example.test and example.test.
 *
 * Properties:
 *  - the result is 0 or -1, the same when checked again;
 *  - 0 names a usable record of the input ("DANE-EE 3 S M" with usage 3,
 *    "DANE-TA 2 S M" with usage 2), and DANE-TA only with at least two
 *    certificates (the anchor is never the leaf);
 *  - without usable records, or without certificates, it is -1;
 *  - -1 comes with a printable reason.
 */
#include "dane.h"
#include "fuzz.h"
#include "util.h"

#define CERTS_MAX 8

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char *const names[] = {"mx.example.test", "example.test"};
	struct dns_tlsa recs[8];
	struct dane_cert chain[CERTS_MAX];
	char what[64], what2[64], why[WHY_MAX], why2[WHY_MAX];
	size_t pos = 1, k;
	int i, n = 0, nrec, usable = 0, rc, rc2;

	if (size < 1 || size > 65536)
		return 0;
	nrec = data[0] & 7;
	for (i = 0; i < nrec; i++) {
		if (pos + 4 > size)
			return 0;
		recs[i].usage = data[pos];
		recs[i].selector = data[pos + 1];
		recs[i].mtype = data[pos + 2];
		recs[i].len = data[pos + 3];
		pos += 4;
		if (pos + recs[i].len > size)
			return 0;
		recs[i].data = (unsigned char *)data + pos;
		pos += recs[i].len;
		usable += dane_usable(&recs[i]);
	}
	while (n < CERTS_MAX && pos + 2 <= size) {
		size_t len = (size_t)data[pos] << 8 | data[pos + 1];

		pos += 2;
		if (len > size - pos)
			len = size - pos;
		chain[n].der = data + pos;
		chain[n].len = len;
		pos += len;
		n++;
	}
	memset(what, 0, sizeof(what));
	memset(why, 0, sizeof(why));
	rc = dane_verify(
	    chain, n, recs, nrec, names, 2, what, sizeof(what), why);
	rc2 = dane_verify(
	    chain, n, recs, nrec, names, 2, what2, sizeof(what2), why2);
	FUZZ_ASSERT(rc == 0 || rc == -1, "0 or -1");
	FUZZ_ASSERT(rc == rc2, "the same result when checked again");
	if (rc == 0) {
		unsigned u, s, m;
		bool found = false;

		FUZZ_ASSERT(usable > 0 && n > 0,
		    "success needs a usable record and a certificate");
		FUZZ_ASSERT(sscanf(what, "DANE-%*2s %u %u %u", &u, &s, &m) == 3,
		    "success names its record");
		FUZZ_ASSERT((u == 3 && strncmp(what, "DANE-EE ", 8) == 0) ||
		                (u == 2 && strncmp(what, "DANE-TA ", 8) == 0),
		    "the name and the usage agree");
		FUZZ_ASSERT(
		    u == 3 || n >= 2, "a DANE-TA anchor is never the leaf");
		for (i = 0; i < nrec; i++)
			found |= dane_usable(&recs[i]) && recs[i].usage == u &&
			         recs[i].selector == s && recs[i].mtype == m;
		FUZZ_ASSERT(found, "the record named is a usable input record");
		for (i = 0; i < nrec && m == 1; i++)
			FUZZ_ASSERT(
			    !(dane_usable(&recs[i]) && recs[i].usage == u &&
			        recs[i].selector == s && recs[i].mtype == 2),
			    "no SHA-256 match where SHA-512 records outrank "
			    "it");
		FUZZ_ASSERT(strcmp(what, what2) == 0, "the same record again");
	} else {
		FUZZ_ASSERT(why[0] != '\0', "a failure has a reason");
		for (k = 0; why[k] != '\0'; k++)
			FUZZ_ASSERT((unsigned char)why[k] >= 0x20 &&
			                (unsigned char)why[k] < 0x7f,
			    "the reason is printable");
	}
	return 0;
}
