/*
 * test_data.c - the DATA decoder (dot-unstuffing, end of data, bare CR/LF,
 * NUL, long lines), its BDAT mode, and the Received header counter.
 * Every case is also fed one octet at a time, to catch state bugs at
 * buffer boundaries.
 */
#include "data.h"
#include "unit.h"

#include <stdlib.h>

struct dcase {
	const char *name;
	const char *in;
	size_t inlen; /* 0: strlen(in) */
	bool normalize;
	bool done;       /* end of data expected */
	const char *out; /* decoded message */
	size_t consumed; /* 0: all of it */
	unsigned flags;
};

#define S(x) x, sizeof(x) - 1

static const struct dcase dcases[] = {
    {"simple", S("a\r\n.\r\n"), false, true, "a\r\n", 0, 0},
    {"empty message", S(".\r\n"), false, true, "", 0, 0},
    {"unstuff", S("..x\r\n..\r\n.\r\n"), false, true, ".x\r\n.\r\n", 0, 0},
    {"dot in line", S("a.b\r\n.\r\n"), false, true, "a.b\r\n", 0, 0},
    {"pipelined after end", S("a\r\n.\r\nQUIT\r\n"), false, true, "a\r\n", 6,
        0},
    {"no end yet", S("a\r\n.\r"), false, false, "a\r\n", 0, 0},
    {"lf dot lf does not end", S("a\n.\nb\r\n.\r\n"), false, true,
        "a\n.\nb\r\n", 0, DD_BARE_LF},
    {"lf dot crlf does not end", S("a\n.\r\nb\r\n.\r\n"), false, true,
        "a\n.\r\nb\r\n", 0, DD_BARE_LF},
    {"crlf dot lf does not end", S("a\r\n.\nb\r\n.\r\n"), false, true,
        "a\r\n\nb\r\n", 0, DD_BARE_LF},
    {"cr dot crlf does not end", S("a\r.\r\nb\r\n.\r\n"), false, true,
        "a\r.\r\nb\r\n", 0, DD_BARE_CR},
    {"crlf dot cr x", S("a\r\n.\rx\r\n.\r\n"), false, true, "a\r\n\rx\r\n", 0,
        DD_BARE_CR},
    {"bare lf", S("a\nb\r\n.\r\n"), false, true, "a\nb\r\n", 0, DD_BARE_LF},
    {"bare cr", S("a\rb\r\n.\r\n"), false, true, "a\rb\r\n", 0, DD_BARE_CR},
    {"nul", S("a\0b\r\n.\r\n"), false, true, "a\0b\r\n", 0, DD_NUL},
    {"normalize lf", S("a\nb\r\n.\r\n"), true, true, "a\r\nb\r\n", 0,
        DD_BARE_LF},
    {"normalize cr", S("a\rb\r\n.\r\n"), true, true, "a\r\nb\r\n", 0,
        DD_BARE_CR},
    {"normalize lf dot crlf is data", S("a\n.\r\nb\r\n.\r\n"), true, true,
        "a\r\n.\r\nb\r\n", 0, DD_BARE_LF},
    {"normalize lf dot lf is data", S("a\n.\nb\r\n.\r\n"), true, true,
        "a\r\n.\r\nb\r\n", 0, DD_BARE_LF},
    {"crcrlf", S("a\r\r\n.\r\n"), false, true, "a\r\r\n", 0, DD_BARE_CR},
};

/* Feed in pieces of `step` octets; return what was produced. */
static char *
run(const struct dcase *c, size_t step, struct data_dec *d, size_t *outlen,
    size_t *consumed)
{
	size_t inlen = c->inlen ? c->inlen : strlen(c->in), off = 0;
	char *out = calloc(1, 2 * inlen + 8);

	*outlen = 0;
	data_dec_init(d, c->normalize);
	while (off < inlen && !d->done) {
		size_t n = inlen - off < step ? inlen - off : step, o;
		size_t used =
		    data_dec_feed(d, c->in + off, n, out + *outlen, &o);

		*outlen += o;
		off += used;
	}
	*consumed = off;
	return out;
}

static void
test_decoder(void)
{
	size_t i, steps[] = {1, 2, 3, 4096}, k;

	for (i = 0; i < sizeof(dcases) / sizeof(dcases[0]); i++) {
		const struct dcase *c = &dcases[i];
		size_t inlen = c->inlen ? c->inlen : strlen(c->in);
		size_t want_out = (c->flags & DD_NUL) ? 5 : strlen(c->out);

		for (k = 0; k < sizeof(steps) / sizeof(steps[0]); k++) {
			struct data_dec d;
			size_t outlen, consumed;
			char *out = run(c, steps[k], &d, &outlen, &consumed);

			CHECK(d.done == c->done, "%s (step %zu): done=%d",
			    c->name, steps[k], d.done);
			CHECK(outlen == want_out &&
			          memcmp(out, c->out, want_out) == 0,
			    "%s (step %zu): output", c->name, steps[k]);
			CHECK(consumed == (c->consumed ? c->consumed : inlen),
			    "%s (step %zu): consumed %zu", c->name, steps[k],
			    consumed);
			CHECK(d.flags == c->flags, "%s (step %zu): flags %x",
			    c->name, steps[k], d.flags);
			free(out);
		}
	}
}

static void
test_long_line(void)
{
	char *in = malloc(2000), out[4100];
	struct data_dec d;
	size_t o;

	memset(in, 'x', 998);
	memcpy(in + 998, "\r\n.\r\n", 5);
	data_dec_init(&d, false);
	data_dec_feed(&d, in, 1003, out, &o);
	CHECK(d.done && d.flags == 0, "998-octet line is fine");
	memset(in, 'x', 999);
	memcpy(in + 999, "\r\n.\r\n", 5);
	data_dec_init(&d, false);
	data_dec_feed(&d, in, 1004, out, &o);
	CHECK(d.done && d.flags == DD_LONG_LINE, "999-octet line is flagged");
	free(in);
}

static void
test_chunked(void)
{
	struct data_dec d;
	char out[64];
	size_t o, used, o2;

	data_dec_init_chunked(&d, false);
	used = data_dec_feed(&d, S("a\r\n.\r\nb\r\n"), out, &o);
	CHECK(!d.done && used == 9 && o == 9 &&
	          memcmp(out, "a\r\n.\r\nb\r\n", 9) == 0 && d.flags == 0,
	    "BDAT mode: dots are data");
	data_dec_init_chunked(&d, false);
	data_dec_feed(&d, S("a\nb\r"), out, &o);
	o2 = data_dec_finish(&d, out + o);
	CHECK(d.flags == (DD_BARE_LF | DD_BARE_CR) && o + o2 == 4,
	    "BDAT mode: bare LF, trailing bare CR");
	data_dec_init_chunked(&d, true);
	data_dec_feed(&d, S("a\nb"), out, &o);
	CHECK(o == 4 && memcmp(out, "a\r\nb", 4) == 0, "BDAT mode: normalise");
}

static void
test_hdr_scan(void)
{
	static const char *msg = "Received: a\r\nreceived:b\r\n"
	                         "RECEIVED: c\r\n d\r\nX-Received: no\r\n"
	                         "Subject: Received: no\r\n\r\n"
	                         "Received: body\r\n";
	struct hdr_scan h;
	size_t i;

	hdr_scan_init(&h);
	hdr_scan_feed(&h, msg, strlen(msg));
	CHECK(h.received == 3 && h.in_body, "three Received headers: %d",
	    h.received);
	hdr_scan_init(&h);
	for (i = 0; msg[i] != '\0'; i++)
		hdr_scan_feed(&h, msg + i, 1);
	CHECK(h.received == 3, "one octet at a time: %d", h.received);
	hdr_scan_init(&h);
	hdr_scan_feed(&h, S("\r\nReceived: x\r\n"));
	CHECK(h.received == 0, "no header section");
}

/*
 * The output bound: "x\r", then in a second call "M" and bare LFs, in
 * normalise mode, produce 2 * n + 1 octets from n (the held CR becomes
 * CRLF, then "M", then CRLF per LF).  Decode into a buffer of exactly
 * DATA_DEC_OUT_MAX(n) with a guard after it.
 */
static void
test_output_bound(void)
{
	enum { N = 16384 };
	char *in = malloc(N), *out = malloc(DATA_DEC_OUT_MAX(N) + 1);
	struct data_dec d;
	size_t o, worst = 0, modes;

	for (modes = 0; modes < 2; modes++) {
		data_dec_init_chunked(&d, true);
		if (modes == 1)
			data_dec_init(&d, true);
		data_dec_feed(&d, "x\r", 2, out, &o);
		in[0] = 'M';
		memset(in + 1, '\n', N - 1);
		out[DATA_DEC_OUT_MAX(N)] = 'G';
		data_dec_feed(&d, in, N, out, &o);
		if (o > worst)
			worst = o;
		CHECK(
		    o <= DATA_DEC_OUT_MAX(N) && out[DATA_DEC_OUT_MAX(N)] == 'G',
		    "output bound (%s): %zu octets from %d, bound %zu",
		    modes ? "DATA" : "BDAT", o, N, DATA_DEC_OUT_MAX(N));
	}
	CHECK(worst == 2 * N + 1, "the worst case is reached: %zu", worst);
	free(in);
	free(out);
}

int
main(void)
{
	test_output_bound();
	test_decoder();
	test_long_line();
	test_chunked();
	test_hdr_scan();
	UNIT_DONE();
}
