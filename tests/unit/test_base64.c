/*
 * test_base64.c - the one base64 codec (tls/base64.c, over GnuTLS): the
 * RFC 4648 test vectors both ways, every octet round-tripping, strict
 * decoding (only canonical encodings), and buffers that are one octet
 * short refused with an empty result rather than cut.
 */
#include "base64.h"
#include "unit.h"

#include <string.h>

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

struct ecase64 {
	const char *in;
	size_t len;
	size_t outlen;   /* 0: 64 */
	const char *out; /* NULL: -1 */
};

#define S(x) x, sizeof(x) - 1

static const struct ecase64 encases[] = {
    {S(""), 0, ""},
    {S("f"), 0, "Zg=="},
    {S("fo"), 0, "Zm8="},
    {S("foo"), 0, "Zm9v"},
    {S("foob"), 0, "Zm9vYg=="},
    {S("fooba"), 0, "Zm9vYmE="},
    {S("foobar"), 0, "Zm9vYmFy"},
    {S("\0alice\0secret"), 0, "AGFsaWNlAHNlY3JldA=="},
    {S("\xff\xfe\xfd"), 0, "//79"},
    {S("\xfb\xff"), 0, "+/8="},
    {S("foo"), 5, "Zm9v"},
    {S("foo"), 4, NULL},
    {S("f"), 4, NULL},
    {S(""), 1, ""},
};

static void
test_b64_encode(void)
{
	unsigned char all[256];
	char out[64], big[400], back[300];
	size_t i;

	for (i = 0; i < NELEM(encases); i++) {
		const struct ecase64 *c = &encases[i];
		size_t outlen = c->outlen ? c->outlen : sizeof(out);
		int r = base64_encode(c->in, c->len, out, outlen);

		if (c->out != NULL)
			CHECK(r == (int)strlen(c->out) &&
			          strcmp(out, c->out) == 0,
			    "encode #%zu -> \"%s\" (got %d \"%s\")", i, c->out,
			    r, r >= 0 ? out : "");
		else
			CHECK(r == -1, "encode #%zu: too small", i);
	}
	for (i = 0; i < sizeof(all); i++)
		all[i] = (unsigned char)i;
	CHECK(base64_encode(all, sizeof(all), big, sizeof(big)) == 344 &&
	          base64_decode(big, back, sizeof(back)) == 256 &&
	          memcmp(all, back, 256) == 0,
	    "every octet round-trips");
}

struct dcase64 {
	const char *in;
	int ret; /* -1: refused */
	const char *out;
};

static const struct dcase64 decases[] = {
    {"", 0, ""}, {"Zg==", 1, "f"}, {"Zm8=", 2, "fo"}, {"Zm9v", 3, "foo"},
    {"Zm9vYmFy", 6, "foobar"},
    {"Zh==", -1, NULL},     /* bits after the data not zero */
    {"Zm9=", -1, NULL},     /* the same with one "=" */
    {"Zg", -1, NULL},       /* no padding */
    {"Zg=", -1, NULL},      /* short padding */
    {"Zg===", -1, NULL},    /* too much */
    {"Z g==", -1, NULL},    /* white space */
    {"Zg==\n", -1, NULL},   /* a line end */
    {"Zm9v!", -1, NULL},    /* not the alphabet */
    {"Zm-_", -1, NULL},     /* base64url is another alphabet */
    {"=", -1, NULL},        /* SASL's empty response is auth.c's */
    {"Zg==Zg==", -1, NULL}, /* padding in the middle */
};

static void
test_decode(void)
{
	char out[64];
	size_t i;

	for (i = 0; i < NELEM(decases); i++) {
		const struct dcase64 *c = &decases[i];
		int r;

		memset(out, 'x', sizeof(out));
		r = base64_decode(c->in, out, sizeof(out));
		CHECK(r == c->ret &&
		          (r < 0 ? out[0] == '\0'
		                 : memcmp(out, c->out, (size_t)r) == 0 &&
		                       out[r] == '\0'),
		    "decode #%zu -> %d (got %d)", i, c->ret, r);
	}
	CHECK(base64_decode("Zm9v", out, 4) == 3 && strcmp(out, "foo") == 0,
	    "decode: room for the octets and the NUL");
	memset(out, 'x', sizeof(out));
	CHECK(base64_decode("Zm9v", out, 3) == -1 && out[0] == '\0',
	    "decode: one octet short is refused, not cut");
	CHECK(base64_decode("Zg==", out, 0) == -1, "decode: no room at all");
}

int
main(void)
{
	test_b64_encode();
	test_decode();
	UNIT_DONE();
}
