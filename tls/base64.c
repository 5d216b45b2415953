/*
 * base64.c - base64 through gnutls_base64_encode2/decode2 (see base64.h).
 */
#include "base64.h"

#include <gnutls/gnutls.h>
#include <limits.h>
#include <string.h>

/* Wipe and free what GnuTLS allocated. */
static void
datum_free(gnutls_datum_t *d)
{
	if (d->data != NULL) {
		explicit_bzero(d->data, d->size);
		gnutls_free(d->data);
	}
	d->data = NULL;
	d->size = 0;
}

/* Copy d into out[outlen] with a NUL after it: its size, or -1. */
static int
copy_out(const gnutls_datum_t *d, void *out, size_t outlen)
{
	if (d->size >= outlen || d->size > INT_MAX)
		return -1;
	if (d->size > 0)
		memcpy(out, d->data, d->size);
	((char *)out)[d->size] = '\0';
	return (int)d->size;
}

int
base64_encode(const void *in, size_t len, char *out, size_t outlen)
{
	gnutls_datum_t d = {(unsigned char *)in, (unsigned)len}, r = {0};
	int n = -1;

	if (outlen > 0)
		out[0] = '\0';
	if (len > (size_t)INT_MAX / 4 * 3)
		return -1;
	if (len == 0)
		return outlen > 0 ? 0 : -1;
	if (gnutls_base64_encode2(&d, &r) == 0)
		n = copy_out(&r, out, outlen);
	if (n < 0 && outlen > 0)
		out[0] = '\0';
	datum_free(&r);
	return n;
}

int
base64_decode(const char *in, void *out, size_t outlen)
{
	size_t inlen = strlen(in);
	gnutls_datum_t d = {(unsigned char *)in, (unsigned)inlen}, r = {0},
	               again = {0};
	int n = -1;

	if (outlen > 0)
		((char *)out)[0] = '\0';
	if (inlen > INT_MAX)
		return -1;
	if (inlen == 0)
		return outlen > 0 ? 0 : -1;
	/* Canonical: the octets encode back to exactly `in`. */
	if (gnutls_base64_decode2(&d, &r) == 0 &&
	    gnutls_base64_encode2(&r, &again) == 0 && again.size == inlen &&
	    memcmp(again.data, in, inlen) == 0)
		n = copy_out(&r, out, outlen);
	if (n < 0 && outlen > 0)
		((char *)out)[0] = '\0';
	datum_free(&r);
	datum_free(&again);
	return n;
}
