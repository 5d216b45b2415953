/*
 * fuzz_bounce.c - DSN generation (queue/bounce.c) from hostile envelope
 * fields, remote replies and stored messages.
 *
 * Input: one octet (bits 0-1 the kind, 3 being out of range; bit 2
 * RET=HDRS; bit 3 the stored message is 200,000 octets longer than what
 * is given; bits 4-6 the number of recipients), 24 octets of times
 * (arrival, now, last attempt: any 64-bit values, as a damaged queue row
 * could hold), then NUL-separated fields: reporting MTA, queue ID, ENVID,
 * sender, and per recipient address, ORCPT, action, status, remote MTA,
 * diagnostic (a field "\x01" is NULL); the rest is the stored message.
 *
 * Properties (bounce.h, and bounce.c's invariants):
 *  - the top-level header has exactly the fields it should, each once,
 *    and nothing a peer sent can add a header line or a MIME part: every
 *    line of the header, the part headers and the report is a known field
 *    or a folded continuation;
 *  - outside the returned original, every line ends in CRLF, has at most
 *    998 octets, and holds printable ASCII only;
 *  - the boundary (RFC 2046: 1 to 70 characters) occurs in the body only
 *    as delimiters, and there are 2 parts, or 3 when the original is
 *    returned;
 *  - the original is returned exactly: whole as message/rfc822 when it is
 *    all there and small enough and RET=HDRS was not asked, else its
 *    header section as text/rfc822-headers, never a body octet; 8-bit
 *    content is declared;
 *  - one Final-Recipient per recipient, with a valid Action and Status;
 *  - every date is a valid RFC 5322 date, whatever the stored times.
 */
#include "bounce.h"
#include "fuzz.h"

#define MAX_RCPTS 7
#define LINE_MAX_OCTETS 998

struct span {
	const char *p;
	size_t n;
};

static size_t
count_in(const char *p, size_t n, const char *needle, size_t nl)
{
	size_t c = 0;
	const char *q = p, *end = p + n;

	while (nl > 0 && q < end &&
	       (q = memmem(q, (size_t)(end - q), needle, nl)) != NULL) {
		c++;
		q++;
	}
	return c;
}

/* CRLF lines of printable ASCII (HT allowed), at most 998 octets. */
static void
check_text(struct span s, const char *what)
{
	size_t i, col = 0;

	for (i = 0; i < s.n; i++) {
		unsigned char c = (unsigned char)s.p[i];

		if (c == '\r') {
			FUZZ_ASSERT(i + 1 < s.n && s.p[i + 1] == '\n', what);
			i++;
			col = 0;
			continue;
		}
		FUZZ_ASSERT(c != '\n', what);
		FUZZ_ASSERT((c >= 0x20 && c < 0x7f) || c == '\t', what);
		FUZZ_ASSERT(++col <= LINE_MAX_OCTETS, what);
	}
}

/* Is `line` a field whose name is one of `names` (NULL-terminated)? */
static bool
known_field(const char *line, size_t n, const char *const *names, int *which)
{
	int i;

	for (i = 0; names[i] != NULL; i++) {
		size_t k = strlen(names[i]);

		if (n > k + 1 && strncasecmp(line, names[i], k) == 0 &&
		    line[k] == ':' && line[k + 1] == ' ') {
			*which = i;
			return true;
		}
	}
	return false;
}

/*
 * Every line of a header block (or of the report) is a known field or a
 * continuation (starting with a space or tab) of one.  Counts each name
 * in `seen`.  Empty lines are allowed only when `groups` (the report).
 */
static void
check_fields(struct span s, const char *const *names, int *seen, bool groups,
    const char *what)
{
	const char *p = s.p, *end = s.p + s.n;
	bool in_field = false;
	int which;

	while (p < end) {
		const char *eol = memmem(p, (size_t)(end - p), "\r\n", 2);
		size_t n;

		FUZZ_ASSERT(eol != NULL, what);
		n = (size_t)(eol - p);
		if (n == 0) {
			FUZZ_ASSERT(groups, what);
			in_field = false;
		} else if (p[0] == ' ' || p[0] == '\t') {
			FUZZ_ASSERT(in_field, what);
		} else {
			FUZZ_ASSERT(known_field(p, n, names, &which), what);
			seen[which]++;
			in_field = true;
		}
		p = eol + 2;
	}
}

static bool
status_valid(const char *v, size_t n)
{
	size_t i = 2, d;
	int part;

	if (n < 5 || (v[0] != '2' && v[0] != '4' && v[0] != '5') || v[1] != '.')
		return false;
	for (part = 0; part < 2; part++) {
		for (d = 0; i < n && v[i] >= '0' && v[i] <= '9'; i++)
			d++;
		if (d < 1 || d > 3)
			return false;
		if (part == 0 && (i >= n || v[i++] != '.'))
			return false;
	}
	return i == n;
}

/* The values of field `name` in the report: Action and Status checks. */
static void
check_report(struct span s, int nrcpts)
{
	static const char *const names[] = {"Reporting-MTA",
	    "X-Sluice-Queue-ID", "Original-Envelope-Id", "Arrival-Date",
	    "Final-Recipient", "Original-Recipient", "Action", "Status",
	    "Remote-MTA", "Diagnostic-Code", "Last-Attempt-Date", NULL};
	int seen[12] = {0};
	const char *p = s.p, *end = s.p + s.n;

	check_fields(s, names, seen, true, "report lines are known fields");
	FUZZ_ASSERT(seen[0] == 1, "one Reporting-MTA");
	FUZZ_ASSERT(seen[4] == nrcpts && seen[6] == nrcpts && seen[7] == nrcpts,
	    "one Final-Recipient, Action and Status per recipient");
	while (p < end) {
		const char *eol = memmem(p, (size_t)(end - p), "\r\n", 2);
		size_t n = (size_t)(eol - p);

		if (n > 8 && strncmp(p, "Status: ", 8) == 0)
			FUZZ_ASSERT(status_valid(p + 8, n - 8), "Status valid");
		if (n > 8 && strncmp(p, "Action: ", 8) == 0) {
			struct span v = {p + 8, n - 8};

			FUZZ_ASSERT(
			    (v.n == 6 && !memcmp(v.p, "failed", 6)) ||
			        (v.n == 7 && !memcmp(v.p, "delayed", 7)) ||
			        (v.n == 9 && !memcmp(v.p, "delivered", 9)) ||
			        (v.n == 7 && !memcmp(v.p, "relayed", 7)) ||
			        (v.n == 8 && !memcmp(v.p, "expanded", 8)),
			    "Action valid");
		}
		p = eol + 2;
	}
}

/* An RFC 5322 date as rfc5322_date writes it, years 1970 to 9999. */
static bool
date_valid(const char *v, size_t n)
{
	char day[4], mon[4], buf[64];
	int d, y, hh, mm, ss, used = -1;

	if (n >= sizeof(buf))
		return false;
	memcpy(buf, v, n);
	buf[n] = '\0';
	if (sscanf(buf, "%3[A-Za-z], %2d %3[A-Za-z] %4d %2d:%2d:%2d +0000%n",
	        day, &d, mon, &y, &hh, &mm, &ss, &used) != 7)
		return false;
	return used == (int)n && d >= 1 && d <= 31 && y >= 1970 && y <= 9999 &&
	       hh <= 23 && mm <= 59 && ss <= 60;
}

/* Every field `name` in the lines of `s` holds a valid date. */
static void
check_dates(struct span s, const char *name)
{
	const char *p = s.p, *end = s.p + s.n;
	size_t k = strlen(name);

	while (p < end) {
		const char *eol = memmem(p, (size_t)(end - p), "\r\n", 2);
		size_t n = (size_t)(eol - p);

		if (n > k + 2 && strncmp(p, name, k) == 0 && p[k] == ':')
			FUZZ_ASSERT(date_valid(p + k + 2, n - k - 2),
			    "dates are valid, whatever the stored times");
		p = eol + 2;
	}
}

/* What the original part must hold (bounce.h), and whether whole. */
static struct span
expected_return(const struct bounce_msg *m, bool *whole)
{
	struct span r = {(const char *)m->orig, m->orig_len};
	const char *e;

	*whole = !m->ret_hdrs && m->orig_size <= BOUNCE_RETURN_LIMIT &&
	         m->orig_len == m->orig_size;
	if (*whole)
		return r;
	/* The header section: up to the empty line, without it. */
	if (r.n >= 2 && r.p[0] == '\r' && r.p[1] == '\n')
		r.n = 0;
	else if ((e = memmem(r.p, r.n, "\r\n\r\n", 4)) != NULL)
		r.n = (size_t)(e - r.p) + 2;
	if (r.n > 0 && r.p[r.n - 1] == '\r')
		r.n--;
	return r;
}

static void
check_dsn(const struct bounce_msg *m, const char *out, size_t len)
{
	static const char *const top[] = {"Date", "From", "To", "Subject",
	    "Auto-Submitted", "Message-ID", "MIME-Version", "Content-Type",
	    "Content-Transfer-Encoding", NULL};
	static const char *const part[] = {"Content-Type",
	    "Content-Description", "Content-Transfer-Encoding", NULL};
	int seen[10] = {0}, pseen[4], i, nparts;
	const char *hend, *b, *bend, *body, *close;
	char delim[128], closing[128];
	size_t blen, dl;
	struct span hdr, parts[3], ret;
	bool whole, eight;

	hend = memmem(out, len, "\r\n\r\n", 4);
	FUZZ_ASSERT(hend != NULL, "a header section");
	hdr = (struct span){out, (size_t)(hend - out) + 2};
	check_text(hdr, "header lines are CRLF-ended printable ASCII");
	check_fields(hdr, top, seen, false, "header lines are known fields");
	for (i = 0; i < 8; i++)
		FUZZ_ASSERT(seen[i] == 1, "each header field once");
	check_dates(hdr, "Date");
	FUZZ_ASSERT(seen[8] <= 1, "Content-Transfer-Encoding at most once");

	/* In Content-Type's folded line (a peer's tab would be a space). */
	b = memmem(hdr.p, hdr.n, "\r\n\tboundary=\"", 13);
	FUZZ_ASSERT(b != NULL, "a boundary");
	b += 13;
	bend = memchr(b, '"', (size_t)(hdr.p + hdr.n - b));
	FUZZ_ASSERT(bend != NULL, "the boundary is quoted");
	blen = (size_t)(bend - b);
	FUZZ_ASSERT(blen >= 1 && blen <= 70, "RFC 2046: 1 to 70 characters");

	/* Delimiters: "\r\n--B\r\n" per part, "\r\n--B--\r\n" at the end. */
	snprintf(delim, sizeof(delim), "\r\n--%.*s\r\n", (int)blen, b);
	snprintf(closing, sizeof(closing), "\r\n--%.*s--\r\n", (int)blen, b);
	dl = strlen(delim);
	FUZZ_ASSERT(
	    len >= strlen(closing) && memcmp(out + len - strlen(closing),
	                                  closing, strlen(closing)) == 0,
	    "ends with the closing delimiter");
	close = out + len - strlen(closing);
	body = hend + 2;
	nparts = 0;
	for (const char *p = body; p < close;) {
		const char *d = memmem(p, (size_t)(close - p), delim, dl);
		const char *next;

		if (d == NULL)
			break;
		FUZZ_ASSERT(nparts < 3, "at most 3 parts");
		next = memmem(d + dl, (size_t)(close - d - dl), delim, dl);
		parts[nparts].p = d + dl;
		parts[nparts].n = (size_t)((next ? next : close) - (d + dl));
		nparts++;
		p = next ? next : close;
	}
	FUZZ_ASSERT(nparts == (m->orig_len > 0 ? 3 : 2),
	    "2 parts, 3 with the original");
	/* (In the top-level header, where a sender may write anything, it
	 * delimits nothing.) */
	FUZZ_ASSERT(count_in(body, (size_t)(out + len - body), b, blen) ==
	                (size_t)nparts + 1,
	    "the boundary occurs in the body only as delimiters");
	/* The preamble. */
	check_text(
	    (struct span){body, (size_t)(parts[0].p - dl - body)}, "preamble");

	eight = false;
	for (i = 0; i < nparts; i++) {
		const char *ph = memmem(parts[i].p, parts[i].n, "\r\n\r\n", 4);
		struct span h, content;

		FUZZ_ASSERT(ph != NULL, "each part has a header");
		h = (struct span){parts[i].p, (size_t)(ph - parts[i].p) + 2};
		content = (struct span){ph + 4, parts[i].n - h.n - 2};
		memset(pseen, 0, sizeof(pseen));
		check_text(h, "part header lines are CRLF-ended ASCII");
		check_fields(h, part, pseen, false,
		    "part header lines are known fields");
		FUZZ_ASSERT(pseen[0] == 1, "each part has one Content-Type");
		if (i < 2) {
			check_text(content, "notification and report lines");
			if (i == 1) {
				check_report(content, m->nrcpts);
				check_dates(content, "Arrival-Date");
				check_dates(content, "Last-Attempt-Date");
			}
			continue;
		}
		/* The returned original, exactly. */
		ret = expected_return(m, &whole);
		FUZZ_ASSERT(
		    content.n == ret.n &&
		        (ret.n == 0 || memcmp(content.p, ret.p, ret.n) == 0),
		    "the original is returned exactly");
		FUZZ_ASSERT(
		    memmem(h.p, h.n,
		        whole ? "message/rfc822" : "text/rfc822-headers",
		        whole ? 14 : 19) != NULL,
		    "whole as message/rfc822, else its headers");
		for (size_t k = 0; k < ret.n; k++)
			eight = eight || (unsigned char)ret.p[k] >= 0x80;
		FUZZ_ASSERT(!eight || pseen[2] == 1,
		    "8-bit content is declared in its part");
	}
	FUZZ_ASSERT(!eight || seen[8] == 1, "8-bit content is declared");
}

/* The next NUL-terminated field of the input ("\x01": NULL). */
static const char *
next_field(const uint8_t **p, size_t *left)
{
	const uint8_t *nul;
	const char *f;

	if (*left == 0)
		return NULL;
	nul = memchr(*p, '\0', *left);
	if (nul == NULL)
		return NULL;
	f = (const char *)*p;
	*left -= (size_t)(nul - *p) + 1;
	*p = nul + 1;
	return strcmp(f, "\x01") == 0 ? NULL : f;
}

static int64_t
get64(const uint8_t *p)
{
	uint64_t v = 0;
	int i;

	for (i = 0; i < 8; i++)
		v = v << 8 | p[i];
	return (int64_t)v;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct bounce_rcpt r[MAX_RCPTS];
	struct bounce_msg m;
	const uint8_t *p;
	size_t left, len = 0;
	char *out;
	int i;

	if (size < 25 || size > 65536)
		return 0;
	memset(&m, 0, sizeof(m));
	memset(r, 0, sizeof(r));
	m.kind = (enum bounce_kind)(data[0] & 3);
	m.ret_hdrs = (data[0] & 4) != 0;
	m.nrcpts = (data[0] >> 4) & 7;
	m.arrival = get64(data + 1);
	m.now = get64(data + 9);
	p = data + 25;
	left = size - 25;
	m.reporting_mta = next_field(&p, &left);
	m.queue_id = next_field(&p, &left);
	m.envid = next_field(&p, &left);
	m.sender = next_field(&p, &left);
	for (i = 0; i < m.nrcpts; i++) {
		r[i].address = next_field(&p, &left);
		r[i].orcpt = next_field(&p, &left);
		r[i].action = next_field(&p, &left);
		r[i].status = next_field(&p, &left);
		r[i].remote_mta = next_field(&p, &left);
		r[i].diagnostic = next_field(&p, &left);
		r[i].last_attempt = get64(data + 17) + i;
	}
	m.rcpts = r;
	m.orig = p;
	m.orig_len = left;
	m.orig_size = left + ((data[0] & 8) ? 200000 : 0);

	out = bounce_format(&m, &len);
	FUZZ_ASSERT(out != NULL && len > 0, "a DSN");
	check_dsn(&m, out, len);
	free(out);
	return 0;
}
