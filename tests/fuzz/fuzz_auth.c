/*
 * fuzz_auth.c - SMTP AUTH decoding (server/auth.c, tls/base64.c):
 * auth_b64_decode, base64_encode and sasl_plain_split.  The input is used three
 * ways: as the base64 text a client sends (a C string: the session refuses a
 * line with a NUL), as octets to encode, and as a decoded PLAIN message.  The
 * first octet also chooses the decoder's output capacity.
 *
 * Properties, checked against GnuTLS's base64 (gnutls_base64_encode2 and
 * gnutls_base64_decode2):
 *  - strict: whatever auth_b64_decode accepts is the canonical encoding
 *    of what it returned (GnuTLS encodes the result back to the input),
 *    except "=" (RFC 4954 section 4: an empty response);
 *  - complete: the canonical encoding of any octets decodes to them when
 *    they fit, and base64_encode produces exactly GnuTLS's encoding;
 *  - bounded: the output is NUL-terminated within its capacity (each
 *    buffer exactly that big, for AddressSanitizer);
 *  - sasl_plain_split accepts exactly the messages with two NULs, a
 *    non-empty authcid and fields under AUTH_FIELD_MAX, and its three
 *    fields joined by NULs are the message, nothing cut; on failure no
 *    field keeps anything.
 */
#include "auth.h"
#include "base64.h"
#include "fuzz.h"

#include <gnutls/gnutls.h>

/* GnuTLS's base64 of `p`: malloc'd, NUL-terminated. */
static char *
gnutls_b64(const void *p, size_t n)
{
	gnutls_datum_t in = {(unsigned char *)p, (unsigned)n}, out = {0};
	char *s;

	if (n == 0)
		return strdup("");
	if (gnutls_base64_encode2(&in, &out) != 0)
		abort();
	s = malloc(out.size + 1);
	if (s == NULL)
		abort();
	memcpy(s, out.data, out.size);
	s[out.size] = '\0';
	/* GnuTLS may count a final NUL in size. */
	s[strcspn(s, "\r\n")] = '\0';
	gnutls_free(out.data);
	return s;
}

static void
check_decode(const char *text, size_t cap)
{
	char *out = malloc(cap);
	int n;

	if (out == NULL)
		abort();
	n = auth_b64_decode(text, out, cap);
	FUZZ_ASSERT(n >= -1, "result");
	if (n < 0) {
		FUZZ_ASSERT(out[0] == '\0', "nothing on failure");
	} else {
		FUZZ_ASSERT((size_t)n < cap && out[n] == '\0',
		    "NUL-terminated within the capacity");
		if (strcmp(text, "=") == 0) {
			FUZZ_ASSERT(n == 0, "\"=\" is the empty response");
		} else {
			char *again = gnutls_b64(out, (size_t)n);

			FUZZ_ASSERT(strcmp(again, text) == 0,
			    "only canonical base64 is accepted");
			free(again);
		}
	}
	free(out);
}

/* Octets -> canonical base64 -> auth_b64_decode gives them back. */
static void
check_round_trip(const uint8_t *p, size_t n, size_t cap)
{
	char *text = gnutls_b64(p, n), *mine, *out;
	size_t tl = strlen(text);
	int k;

	mine = malloc(tl + 1);
	if (mine == NULL)
		abort();
	k = base64_encode(p, n, mine, tl + 1);
	FUZZ_ASSERT(k == (int)tl && strcmp(mine, text) == 0,
	    "base64_encode is GnuTLS's encoding");
	FUZZ_ASSERT(base64_encode(p, n, mine, tl) == -1 && mine[0] == '\0',
	    "one octet short is refused");
	free(mine);

	out = malloc(cap);
	if (out == NULL)
		abort();
	k = auth_b64_decode(text, out, cap);
	if (n < cap)
		FUZZ_ASSERT(k == (int)n && memcmp(out, p, n) == 0,
		    "canonical base64 decodes to its octets");
	else
		FUZZ_ASSERT(k == -1, "too big for the buffer is refused");
	free(out);
	free(text);
}

static void
check_plain(const uint8_t *p, size_t n)
{
	char *z = malloc(AUTH_FIELD_MAX), *c = malloc(AUTH_FIELD_MAX),
	     *w = malloc(AUTH_FIELD_MAX);
	size_t nuls = 0, i, first = 0, second = 0;
	bool fits;
	int rc;

	if (z == NULL || c == NULL || w == NULL)
		abort();
	for (i = 0; i < n; i++) {
		if (p[i] != '\0')
			continue;
		if (nuls == 0)
			first = i;
		else if (nuls == 1)
			second = i;
		nuls++;
	}
	fits = nuls == 2 && first < AUTH_FIELD_MAX &&
	       second - first - 1 < AUTH_FIELD_MAX &&
	       n - second - 1 < AUTH_FIELD_MAX && second > first + 1;
	rc = sasl_plain_split((const char *)p, n, z, c, w);
	if (rc == 0) {
		size_t zl = strlen(z), cl = strlen(c), wl = strlen(w);

		FUZZ_ASSERT(fits, "accepted only when well-formed");
		FUZZ_ASSERT(cl > 0, "authcid not empty");
		FUZZ_ASSERT(zl + 1 + cl + 1 + wl == n &&
		                memcmp(p, z, zl) == 0 &&
		                memcmp(p + zl + 1, c, cl) == 0 &&
		                memcmp(p + zl + 1 + cl + 1, w, wl) == 0,
		    "the three fields are the message, nothing cut");
	} else {
		FUZZ_ASSERT(rc == -1, "result");
		FUZZ_ASSERT(!fits, "a well-formed message is accepted");
		FUZZ_ASSERT(z[0] == '\0' && c[0] == '\0' && w[0] == '\0',
		    "no field keeps anything on failure");
	}
	free(z);
	free(c);
	free(w);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *text;
	size_t cap;

	if (size < 1 || size > 4096)
		return 0;
	cap = 1 + data[0] % 128;
	data++;
	size--;

	text = malloc(size + 1);
	if (text == NULL)
		abort();
	memcpy(text, data, size);
	text[size] = '\0';
	check_decode(text, cap);
	check_decode(text, size + 1);
	free(text);

	check_round_trip(data, size, cap);
	check_round_trip(data, size, size + 1);
	check_plain(data, size);
	return 0;
}
