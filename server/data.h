/*
 * data.h - the DATA decoder and the header scanner.  Pure state machines:
 * no I/O, no allocation; safe from any thread (one instance per session).
 *
 * The decoder turns the octets a client sends after "354" into the message
 * (RFC 5321 section 4.5.2 dot-unstuffing) and finds the end of data.  The
 * end is only <CRLF>.<CRLF> (the first line counts as preceded by CRLF):
 * no other byte sequence ends the message, so nothing can be smuggled
 * behind it.  A bare LF or bare CR is flagged (and, in normalise mode,
 * rewritten as CRLF; a '.' after such a line break is then kept as data,
 * never taken as a terminator or unstuffed).
 */
#ifndef SLUICE_DATA_H
#define SLUICE_DATA_H

#include <stdbool.h>
#include <stddef.h>

/* Problems found in the data (bits of data_dec.flags). */
#define DD_BARE_LF 0x1
#define DD_BARE_CR 0x2
#define DD_NUL 0x4
#define DD_LONG_LINE 0x8 /* a line over 998 octets (RFC 5322 2.1.1) */

#define DD_LINE_MAX 998

struct data_dec {
	int state;
	bool normalize;
	bool chunked; /* BDAT: no dot handling, no terminator */
	bool done;    /* the terminating <CRLF>.<CRLF> was seen */
	unsigned flags;
	size_t line_len; /* octets in the current line */
};

void data_dec_init(struct data_dec *d, bool normalize_bare_newlines);

/*
 * For BDAT chunks (RFC 3030): the same line-ending checks, but dots are
 * plain data and nothing ends the message but the chunk sizes.
 */
void data_dec_init_chunked(struct data_dec *d, bool normalize_bare_newlines);

/*
 * At the end of BDAT data: emit a pending CR (a bare CR at the very end)
 * into `out` (room for 2 octets).  Returns the octets produced.
 */
size_t data_dec_finish(struct data_dec *d, char *out);

/*
 * The most octets data_dec_feed can produce from `n` input octets: 2 per
 * octet (a bare LF or CR normalised to CRLF) plus 2 for a CR held over from
 * the previous call (a bare CR normalised when the next octet arrives,
 * which is then decoded too).
 */
#define DATA_DEC_OUT_MAX(n) (2 * (size_t)(n) + 2)

/*
 * Decode `inlen` input octets into `out`, which must hold
 * DATA_DEC_OUT_MAX(inlen) octets.
 * Returns the number of input octets consumed: fewer than inlen only when
 * the end of data was reached (d->done), in which case the rest belongs to
 * the next command.  *outlen is set to the octets produced.
 */
size_t data_dec_feed(struct data_dec *d, const char *in, size_t inlen,
    char *out, size_t *outlen);

/*
 * The header scanner counts "Received:" header fields in the header
 * section of a message (up to the first empty line), fed with decoded
 * message octets in pieces of any size.
 */
struct hdr_scan {
	int state;
	size_t pos;    /* position in the current field name */
	char name[12]; /* start of the current line */
	bool in_body;
	int received;
	/* "TLS-Required: No" (RFC 8689 section 5), on one line */
	bool in_tls_required; /* the value of a TLS-Required field goes on */
	char value[4];        /* its first non-WSP octets, lower case */
	size_t vlen;
	bool tls_required_no;
};

void hdr_scan_init(struct hdr_scan *h);
void hdr_scan_feed(struct hdr_scan *h, const char *p, size_t len);

#endif
