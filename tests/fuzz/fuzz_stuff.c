/*
 * fuzz_stuff.c - the client's dot-stuffer (smtpwire_stuff, the core of
 * smtpwire_data_put/end in queue/smtpwire.c) composed with the server's
 * DATA decoder (server/data.c).  Input: four octets seeding where the
 * message is split into smtpwire_data_put calls, then the message.
 *
 * Properties:
 *  - stuffing in pieces gives the same octets as stuffing whole, and a
 *    call never writes more than SMTPWIRE_STUFF_OUT_MAX(n) octets (each
 *    call's buffer is exactly that big, for AddressSanitizer);
 *  - what is sent has no bare CR or LF, and a strict receiver (bare
 *    newlines refused) and a normalising one both find the end of data
 *    exactly at its end, with nothing left over;
 *  - what they decode is the documented result (smtpwire.h): the message
 *    with every bare CR and bare LF made CRLF, plus CRLF when it does not
 *    end with a line break; and that equals what the server's own BDAT
 *    decoder makes of the message with bare_newline = normalize.
 */
#include "data.h"
#include "fuzz.h"
#include "smtpwire.h"

/* The documented result, computed directly. */
static void
canonical(const uint8_t *m, size_t n, struct fuzz_buf *out)
{
	size_t i;

	for (i = 0; i < n; i++) {
		if (m[i] == '\r' && i + 1 < n && m[i + 1] == '\n')
			continue; /* the LF adds the CRLF */
		if (m[i] == '\r' || m[i] == '\n')
			fuzz_buf_add(out, "\r\n", 2);
		else
			fuzz_buf_add(out, &m[i], 1);
	}
	if (out->len > 0 && out->p[out->len - 1] != '\n')
		fuzz_buf_add(out, "\r\n", 2);
}

static void
stuff(const uint8_t *m, size_t n, struct fuzz_rng *rng, struct fuzz_buf *out)
{
	struct smtpwire_data d;
	size_t pos = 0, piece, o;
	int zeros = 0;
	char *buf;

	smtpwire_stuff_init(&d);
	while (pos < n) {
		piece = rng ? fuzz_piece(rng, n - pos) : n - pos;
		if (piece == 0 && ++zeros > 4)
			piece = 1;
		buf = malloc(SMTPWIRE_STUFF_OUT_MAX(piece));
		if (buf == NULL)
			abort();
		o = smtpwire_stuff(&d, (const char *)m + pos, piece, buf);
		FUZZ_ASSERT(o <= SMTPWIRE_STUFF_OUT_MAX(piece),
		    "stuffing within SMTPWIRE_STUFF_OUT_MAX");
		fuzz_buf_add(out, buf, o);
		free(buf);
		pos += piece;
	}
	buf = malloc(SMTPWIRE_STUFF_END_MAX);
	if (buf == NULL)
		abort();
	o = smtpwire_stuff_end(&d, buf);
	FUZZ_ASSERT(o <= SMTPWIRE_STUFF_END_MAX, "end within its bound");
	fuzz_buf_add(out, buf, o);
	free(buf);
}

/* Decode what was sent as the server does; the message it stores. */
static void
receive(const struct fuzz_buf *wire, bool normalize, struct fuzz_buf *msg)
{
	struct data_dec d;
	size_t used, outlen;
	char *buf = malloc(DATA_DEC_OUT_MAX(wire->len));

	if (buf == NULL)
		abort();
	data_dec_init(&d, normalize);
	used = data_dec_feed(&d, wire->p, wire->len, buf, &outlen);
	FUZZ_ASSERT(d.done, "the receiver finds the end of data");
	FUZZ_ASSERT(used == wire->len, "the end of data is at the end");
	FUZZ_ASSERT((d.flags & (DD_BARE_CR | DD_BARE_LF)) == 0,
	    "no bare CR or LF is sent");
	fuzz_buf_add(msg, buf, outlen);
	free(buf);
}

/* The server's BDAT decoder with bare_newline = normalize. */
static void
bdat_normalized(const uint8_t *m, size_t n, struct fuzz_buf *out)
{
	struct data_dec d;
	size_t outlen;
	char *buf = malloc(DATA_DEC_OUT_MAX(n) + 2);

	if (buf == NULL)
		abort();
	data_dec_init_chunked(&d, true);
	data_dec_feed(&d, (const char *)m, n, buf, &outlen);
	outlen += data_dec_finish(&d, buf + outlen);
	fuzz_buf_add(out, buf, outlen);
	free(buf);
	if (out->len > 0 && out->p[out->len - 1] != '\n')
		fuzz_buf_add(out, "\r\n", 2);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fuzz_buf whole = {0}, split = {0}, strict = {0}, norm = {0},
	                want = {0}, bdat = {0};
	struct fuzz_rng rng;

	if (size < 4 || size > 65536)
		return 0;
	fuzz_rng_seed(&rng, data, 4);
	data += 4;
	size -= 4;

	stuff(data, size, NULL, &whole);
	stuff(data, size, &rng, &split);
	FUZZ_ASSERT(fuzz_buf_eq(&whole, &split),
	    "stuffing in pieces equals stuffing whole");
	receive(&whole, false, &strict);
	receive(&whole, true, &norm);
	canonical(data, size, &want);
	FUZZ_ASSERT(fuzz_buf_eq(&strict, &want),
	    "a strict receiver gets the documented result");
	FUZZ_ASSERT(fuzz_buf_eq(&norm, &want),
	    "a normalising receiver gets the documented result");
	bdat_normalized(data, size, &bdat);
	FUZZ_ASSERT(fuzz_buf_eq(&bdat, &want),
	    "the documented result is the server's own normalisation");

	fuzz_buf_free(&whole);
	fuzz_buf_free(&split);
	fuzz_buf_free(&strict);
	fuzz_buf_free(&norm);
	fuzz_buf_free(&want);
	fuzz_buf_free(&bdat);
	return 0;
}
