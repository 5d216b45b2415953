/*
 * data.c - DATA decoding and header scanning (see data.h).
 *
 * Decoder states:
 *
 *   SOL ──'.'──> DOT ──'\r'──> DOT_CR ──'\n'──> end of data
 *    │            │ other: drop the dot (unstuff), like MID
 *    │            │         (".\r" + other: a bare CR, also MID)
 *    v            v
 *   MID <──────────────────── SOFT (line start after a bare LF/CR in
 *    │ '\r'                        normalise mode: '.' is plain data)
 *    v
 *    CR ──'\n'──> SOL (emit CRLF)
 *       other:   bare CR
 */
#include "data.h"

#include <string.h>

enum {
	ST_SOL,    /* start of line after CRLF (or start of data) */
	ST_DOT,    /* "." at start of line */
	ST_DOT_CR, /* ".\r" at start of line */
	ST_MID,    /* inside a line */
	ST_CR,     /* "\r" seen inside a line, not yet emitted */
	ST_SOFT,   /* start of line after a normalised bare LF/CR */
};

void
data_dec_init(struct data_dec *d, bool normalize)
{
	memset(d, 0, sizeof(*d));
	d->state = ST_SOL;
	d->normalize = normalize;
}

static void newline(struct data_dec *d, char *out, size_t *o);

void
data_dec_init_chunked(struct data_dec *d, bool normalize)
{
	data_dec_init(d, normalize);
	d->chunked = true;
}

size_t
data_dec_finish(struct data_dec *d, char *out)
{
	size_t o = 0;

	if (d->state == ST_CR || d->state == ST_DOT_CR) {
		d->flags |= DD_BARE_CR;
		if (d->normalize)
			newline(d, out, &o);
		else
			out[o++] = '\r';
		d->state = ST_MID;
	}
	return o;
}

/* Count a content octet of the current line and check it. */
static void
content(struct data_dec *d, char c, char *out, size_t *o)
{
	if (c == '\0')
		d->flags |= DD_NUL;
	if (++d->line_len > DD_LINE_MAX)
		d->flags |= DD_LONG_LINE;
	out[(*o)++] = c;
}

static void
newline(struct data_dec *d, char *out, size_t *o)
{
	out[(*o)++] = '\r';
	out[(*o)++] = '\n';
	d->line_len = 0;
}

size_t
data_dec_feed(
    struct data_dec *d, const char *in, size_t inlen, char *out, size_t *outlen)
{
	size_t i, o = 0;

	for (i = 0; i < inlen && !d->done; i++) {
		char c = in[i];

		switch (d->state) {
		case ST_SOL:
			if (c == '.' && !d->chunked) {
				d->state = ST_DOT;
				break;
			}
			d->state = ST_MID;
			goto mid;
		case ST_DOT:
			if (c == '\r') {
				d->state = ST_DOT_CR;
				break;
			}
			/* Unstuff: the leading dot is dropped. */
			d->state = ST_MID;
			goto mid;
		case ST_DOT_CR:
			if (c == '\n') {
				d->done = true;
				break;
			}
			/* ".\r" then something else: a bare CR after a
			 * (dropped) leading dot. */
			d->state = ST_CR;
			goto cr_other;
		case ST_SOFT:
			d->state = ST_MID;
			goto mid;
		case ST_CR:
			if (c == '\n') {
				newline(d, out, &o);
				d->state = ST_SOL;
				break;
			}
		cr_other:
			d->flags |= DD_BARE_CR;
			if (d->normalize) {
				newline(d, out, &o);
				d->state = ST_SOFT;
			} else {
				content(d, '\r', out, &o);
				d->state = ST_MID;
			}
			i--; /* look at c again */
			break;
		case ST_MID:
		mid:
			if (c == '\r') {
				d->state = ST_CR;
			} else if (c == '\n') {
				d->flags |= DD_BARE_LF;
				if (d->normalize) {
					newline(d, out, &o);
					d->state = ST_SOFT;
				} else {
					content(d, '\n', out, &o);
					d->state = ST_MID;
				}
			} else {
				content(d, c, out, &o);
				d->state = ST_MID;
			}
			break;
		}
	}
	*outlen = o;
	return i;
}

enum {
	H_SOL,   /* start of a header line */
	H_NAME,  /* inside a field name */
	H_VALUE, /* inside a field (name decided) */
	H_CR,    /* CR at end of a header line */
	H_BODY,
};

void
hdr_scan_init(struct hdr_scan *h)
{
	memset(h, 0, sizeof(*h));
	h->state = H_SOL;
}

void
hdr_scan_feed(struct hdr_scan *h, const char *p, size_t len)
{
	size_t i;

	for (i = 0; i < len && h->state != H_BODY; i++) {
		char c = p[i];

		switch (h->state) {
		case H_SOL:
			if (c == '\r') {
				/* An empty line ends the header section. */
				h->state = H_CR;
				h->pos = (size_t)-1;
				break;
			}
			if (c == '\n') {
				h->state = H_BODY;
				break;
			}
			h->pos = 0;
			h->state = H_NAME;
			/* fall through */
		case H_NAME:
			if (c == ':') {
				if (h->pos == 8 &&
				    strncmp(h->name, "received", 8) == 0)
					h->received++;
				h->in_tls_required =
				    h->pos == 12 &&
				    strncmp(h->name, "tls-required", 12) == 0;
				h->vlen = 0;
				h->state = H_VALUE;
				break;
			}
			if (c == '\n') {
				h->state = H_SOL;
				break;
			}
			if (h->pos < sizeof(h->name))
				h->name[h->pos] =
				    (c >= 'A' && c <= 'Z') ? (char)(c + 32) : c;
			h->pos++;
			break;
		case H_VALUE:
			if (c == '\n') {
				if (h->in_tls_required && h->vlen == 2 &&
				    memcmp(h->value, "no", 2) == 0)
					h->tls_required_no = true;
				h->in_tls_required = false;
				h->state = H_SOL;
			} else if (h->in_tls_required && c != ' ' &&
			           c != '\t' && c != '\r') {
				if (h->vlen < sizeof(h->value))
					h->value[h->vlen] =
					    (c >= 'A' && c <= 'Z')
					        ? (char)(c + 32)
					        : c;
				h->vlen++;
			}
			break;
		case H_CR:
			h->state = (c == '\n') ? H_BODY : H_VALUE;
			break;
		}
	}
	h->in_body = (h->state == H_BODY);
}
