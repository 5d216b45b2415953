/*
 * fuzz_data.c - the DATA decoder, its BDAT (chunked) mode and the header
 * scanner (server/data.c).  Input: one mode octet (bit 0: bare_newline =
 * normalize, bit 1: BDAT), four octets seeding where the stream is split,
 * then the octets a client sends after "354" (or in BDAT chunks).
 *
 * Properties:
 *  - split anywhere (pieces of 0, 1, 2, ... octets, as the fuzzer's seed
 *    chooses, and one octet at a time), the stream decodes exactly as when
 *    fed whole: same output, flags, end of data and octets consumed;
 *  - one call never writes more than DATA_DEC_OUT_MAX(n) octets: each
 *    call gets a heap buffer of exactly that size, so AddressSanitizer
 *    sees any octet beyond it;
 *  - the result equals a reference written independently from data.h's
 *    contract: the stream cut into lines at CRLF (and, when normalising,
 *    at a bare CR or LF), a line after CRLF that starts with '.' loses
 *    it, the line "." ended by CRLF ends the data (nothing else does), the
 *    flags say which bare CR, bare LF, NUL and long lines were seen;
 *  - the header scanner counts the same Received fields whole and split,
 *    and as a reference count over the header section.
 */
#include "data.h"
#include "fuzz.h"

struct result {
	struct fuzz_buf out;
	unsigned flags;
	bool done;
	size_t consumed;
};

static void
dec_init(struct data_dec *d, unsigned mode)
{
	if (mode & 2)
		data_dec_init_chunked(d, mode & 1);
	else
		data_dec_init(d, mode & 1);
}

/* Feed `in` in pieces chosen by `rng` (NULL: whole; step 1: by octet). */
static void
decode(const uint8_t *in, size_t n, unsigned mode, struct fuzz_rng *rng,
    bool by_octet, struct result *r)
{
	struct data_dec d;
	size_t pos = 0, piece, used, outlen;
	int zeros = 0;
	char *buf;

	memset(r, 0, sizeof(*r));
	dec_init(&d, mode);
	while (pos < n && !d.done) {
		piece = by_octet ? 1 : rng ? fuzz_piece(rng, n - pos) : n - pos;
		if (piece == 0 && ++zeros > 4)
			piece = 1; /* pieces of 0 octets, but progress */
		buf = malloc(DATA_DEC_OUT_MAX(piece));
		if (buf == NULL)
			abort();
		used = data_dec_feed(
		    &d, (const char *)in + pos, piece, buf, &outlen);
		FUZZ_ASSERT(outlen <= DATA_DEC_OUT_MAX(piece),
		    "output within DATA_DEC_OUT_MAX");
		FUZZ_ASSERT(used <= piece, "consumed at most the input");
		FUZZ_ASSERT(used == piece || d.done,
		    "input left over only at the end of data");
		if (piece == 0)
			FUZZ_ASSERT(outlen == 0, "nothing from nothing");
		fuzz_buf_add(&r->out, buf, outlen);
		free(buf);
		pos += used;
	}
	if ((mode & 2) && !d.done) {
		buf = malloc(2);
		if (buf == NULL)
			abort();
		outlen = data_dec_finish(&d, buf);
		FUZZ_ASSERT(outlen <= 2, "finish writes at most 2 octets");
		fuzz_buf_add(&r->out, buf, outlen);
		free(buf);
	}
	r->flags = d.flags;
	r->done = d.done;
	r->consumed = pos;
	if (mode & 2)
		FUZZ_ASSERT(!d.done, "nothing ends BDAT data");
}

/* The reference: lines and breaks, from the contract in data.h. */
struct ref {
	struct result *r;
	struct fuzz_buf line; /* content octets of the current line */
	bool normalize, chunked;
	bool hard; /* the current line follows CRLF or the start */
};

/* The current line ends with a CRLF (hard) or a bare CR/LF (soft). */
static void
ref_break(struct ref *f, bool hard)
{
	const char *p = f->line.p ? f->line.p : "";
	size_t n = f->line.len;

	if (!f->chunked && f->hard && n >= 1 && p[0] == '.') {
		if (n == 1 && hard) {
			f->r->done = true;
			return;
		}
		p++; /* dot-unstuffing */
		n--;
	}
	if (n > DD_LINE_MAX)
		f->r->flags |= DD_LONG_LINE;
	fuzz_buf_add(&f->r->out, p, n);
	fuzz_buf_add(&f->r->out, "\r\n", 2);
	f->line.len = 0;
	f->hard = hard;
}

static void
ref_content(struct ref *f, char c)
{
	if (c == '\0')
		f->r->flags |= DD_NUL;
	fuzz_buf_add(&f->line, &c, 1);
}

static void
reference(const uint8_t *in, size_t n, unsigned mode, struct result *r)
{
	struct ref f;
	bool held_cr = false;
	size_t i;

	memset(r, 0, sizeof(*r));
	memset(&f, 0, sizeof(f));
	f.r = r;
	f.normalize = mode & 1;
	f.chunked = mode & 2;
	f.hard = true;
	for (i = 0; i < n && !r->done; i++) {
		char c = (char)in[i];

		if (c == '\r' && i + 1 == n) {
			held_cr = true; /* bare or not: the next call says */
		} else if (c == '\r' && in[i + 1] == '\n') {
			i++;
			ref_break(&f, true);
		} else if (c == '\r' || c == '\n') {
			r->flags |= c == '\r' ? DD_BARE_CR : DD_BARE_LF;
			if (f.normalize)
				ref_break(&f, false);
			else
				ref_content(&f, c);
		} else {
			ref_content(&f, c);
		}
	}
	r->consumed = r->done ? i : n;
	if (!r->done) {
		/* The line in progress: what is known of it so far. */
		const char *p = f.line.p ? f.line.p : "";
		size_t len = f.line.len;

		if (!f.chunked && f.hard && len >= 1 && p[0] == '.') {
			p++;
			len--;
		}
		if (len > DD_LINE_MAX)
			r->flags |= DD_LONG_LINE;
		fuzz_buf_add(&r->out, p, len);
		if (held_cr && f.chunked) {
			/* data_dec_finish: the CR is bare after all. */
			r->flags |= DD_BARE_CR;
			fuzz_buf_add(&r->out, f.normalize ? "\r\n" : "\r",
			    f.normalize ? 2 : 1);
		}
	}
	fuzz_buf_free(&f.line);
}

static void
same(const struct result *a, const struct result *b, const char *what)
{
	FUZZ_ASSERT(fuzz_buf_eq(&a->out, &b->out), what);
	FUZZ_ASSERT(a->flags == b->flags, what);
	FUZZ_ASSERT(a->done == b->done, what);
	FUZZ_ASSERT(a->consumed == b->consumed, what);
}

/* Received fields in the header section, counted line by line. */
static int
ref_received(const char *p, size_t n)
{
	size_t i = 0, eol, colon;
	int count = 0;

	while (i < n) {
		const char *nl = memchr(p + i, '\n', n - i);

		eol = nl ? (size_t)(nl - p) : n;
		/* An empty line ("" or "\r" before LF) ends the header. */
		if (nl != NULL && (eol == i || (eol == i + 1 && p[i] == '\r')))
			break;
		for (colon = i; colon < eol && p[colon] != ':'; colon++)
			;
		if (colon < eol && colon - i == 8) {
			static const char rcv[] = "received";
			size_t k;
			bool eq = true;

			for (k = 0; k < 8; k++) {
				char c = p[i + k];

				if (c >= 'A' && c <= 'Z')
					c = (char)(c + 32);
				eq = eq && c == rcv[k];
			}
			count += eq;
		}
		i = eol + 1;
	}
	return count;
}

static void
check_headers(const struct fuzz_buf *msg, struct fuzz_rng *rng)
{
	struct hdr_scan whole, split;
	size_t pos = 0, piece;
	const char *p = msg->p ? msg->p : "";

	hdr_scan_init(&whole);
	hdr_scan_feed(&whole, p, msg->len);
	hdr_scan_init(&split);
	while (pos < msg->len) {
		piece = fuzz_piece(rng, msg->len - pos);
		hdr_scan_feed(&split, p + pos, piece);
		pos += piece;
	}
	FUZZ_ASSERT(
	    whole.received == split.received && whole.in_body == split.in_body,
	    "header scan independent of the split");
	FUZZ_ASSERT(whole.received == ref_received(p, msg->len),
	    "Received count as the reference");
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct result whole, split, octets, ref;
	struct fuzz_rng rng;
	unsigned mode;

	if (size < 5 || size > 16384)
		return 0;
	mode = data[0] & 3;
	fuzz_rng_seed(&rng, data + 1, 4);
	data += 5;
	size -= 5;

	decode(data, size, mode, NULL, false, &whole);
	decode(data, size, mode, &rng, false, &split);
	reference(data, size, mode, &ref);
	same(&whole, &split, "split decodes as whole");
	if (size <= 512) { /* one heap buffer per octet: slow */
		decode(data, size, mode, NULL, true, &octets);
		same(&whole, &octets, "octet by octet decodes as whole");
		fuzz_buf_free(&octets.out);
	}
	same(&whole, &ref, "decodes as the reference");
	if (whole.done)
		FUZZ_ASSERT(
		    whole.consumed >= 3 &&
		        memcmp(data + whole.consumed - 3, ".\r\n", 3) == 0 &&
		        (whole.consumed == 3 ||
		            (whole.consumed >= 5 &&
		                memcmp(data + whole.consumed - 5, "\r\n", 2) ==
		                    0)),
		    "only <CRLF>.<CRLF> ends the data");
	check_headers(&whole.out, &rng);

	fuzz_buf_free(&whole.out);
	fuzz_buf_free(&split.out);
	fuzz_buf_free(&ref.out);
	return 0;
}
