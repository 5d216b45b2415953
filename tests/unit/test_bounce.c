/*
 * test_bounce.c - unit tests for queue/bounce.c: the DSN is parsed the way
 * a mail reader would (header and body split at the first empty line, the
 * boundary taken from Content-Type, the body cut into parts at the
 * delimiters, the delivery-status part cut into field blocks) and then
 * checked against RFC 3464 (fields and their syntax), RFC 3461 (RET and the
 * returned original), RFC 3834 (Auto-Submitted), RFC 5322 (CRLF, line
 * length) and RFC 2046 (the boundary occurs in no part).  Hostile replies
 * must not turn into header lines.
 */
#include "bounce.h"
#include "util.h"
#include "unit.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))
#define MAX_PARTS 8
#define MAX_BLOCKS 16

#define HOST "mx.example.org"
#define T_ARRIVAL 1700000000
#define T_ATTEMPT 1700003600
#define T_NOW 1700007200

/* A slice of the DSN. */
struct span {
	const char *p;
	size_t len;
};

/* One MIME part: its header section and its content. */
struct mpart {
	struct span hdr;
	struct span body;
};

/* The parsed DSN. */
struct dsn {
	char *raw;
	size_t len;
	struct span hdr;
	struct span body;
	char *boundary;
	struct mpart parts[MAX_PARTS];
	int nparts;
	struct span blocks[MAX_BLOCKS]; /* of the delivery-status part */
	int nblocks;
};

static const char small_orig[] =
    "Received: from client.example.net by " HOST "\r\n"
    "From: Alice <alice@example.net>\r\n"
    "To: bob@example.com\r\n"
    "Subject: hello\r\n"
    "Message-ID: <m1@example.net>\r\n"
    "\r\n"
    "Hi Bob,\r\n"
    "\r\n"
    "see you.\r\n";

static const char small_hdrs[] =
    "Received: from client.example.net by " HOST "\r\n"
    "From: Alice <alice@example.net>\r\n"
    "To: bob@example.com\r\n"
    "Subject: hello\r\n"
    "Message-ID: <m1@example.net>\r\n";

/* Split s at the first "\r\n\r\n": the header keeps its last CRLF. */
static void
split_hdr(struct span s, struct span *hdr, struct span *body)
{
	const char *end = memmem(s.p, s.len, "\r\n\r\n", 4);

	if (s.len >= 2 && s.p[0] == '\r' && s.p[1] == '\n') {
		*hdr = (struct span){s.p, 0};
		*body = (struct span){s.p + 2, s.len - 2};
	} else if (end == NULL) {
		*hdr = s;
		*body = (struct span){s.p + s.len, 0};
	} else {
		*hdr = (struct span){s.p, (size_t)(end - s.p) + 2};
		*body = (struct span){end + 4, s.len - (size_t)(end - s.p) - 4};
	}
}

/* Number of fields named `name` in a header section. */
static int
field_count(struct span h, const char *name)
{
	size_t nl = strlen(name);
	int n = 0;

	for (size_t i = 0; i < h.len;) {
		const char *eol = memmem(h.p + i, h.len - i, "\r\n", 2);
		size_t ll = eol ? (size_t)(eol - (h.p + i)) : h.len - i;

		if (ll > nl && h.p[i + nl] == ':' &&
		    ascii_ncasecmp(h.p + i, name, nl) == 0)
			n++;
		i += ll + 2;
	}
	return n;
}

/*
 * The unfolded value of the first field `name` in a header section
 * (leading white space removed), malloc'd; NULL when absent.
 */
static char *
field(struct span h, const char *name)
{
	size_t nl = strlen(name);

	for (size_t i = 0; i < h.len;) {
		const char *eol = memmem(h.p + i, h.len - i, "\r\n", 2);
		size_t ll = eol ? (size_t)(eol - (h.p + i)) : h.len - i;

		if (ll > nl && h.p[i + nl] == ':' &&
		    ascii_ncasecmp(h.p + i, name, nl) == 0) {
			char *v = xmalloc(h.len + 1);
			size_t o = 0, j = i + nl + 1;

			while (j < h.len && (h.p[j] == ' ' || h.p[j] == '\t'))
				j++;
			for (;;) {
				while (j < h.len && h.p[j] != '\r')
					v[o++] = h.p[j++];
				/* continuation line: CRLF then WSP */
				if (j + 2 < h.len && h.p[j + 1] == '\n' &&
				    (h.p[j + 2] == ' ' || h.p[j + 2] == '\t'))
					j += 2;
				else
					break;
			}
			v[o] = '\0';
			return v;
		}
		i += ll + 2;
	}
	return NULL;
}

/* True when field `name` is present and equals `want`. */
static bool
field_is(struct span h, const char *name, const char *want)
{
	char *v = field(h, name);
	bool ok = v != NULL && strcmp(v, want) == 0;

	if (!ok)
		printf("# %s: got \"%s\", want \"%s\"\n", name,
		    v ? v : "(none)", want);
	free(v);
	return ok;
}

static bool
field_has(struct span h, const char *name, const char *needle)
{
	char *v = field(h, name);
	bool ok = v != NULL && strstr(v, needle) != NULL;

	free(v);
	return ok;
}

static bool
span_has(struct span s, const char *needle)
{
	return memmem(s.p, s.len, needle, strlen(needle)) != NULL;
}

/*
 * True when the wrapped text part holds `needle` once its line breaks
 * (CRLF and the indentation after it) read as single spaces.
 */
static bool
text_has(struct span s, const char *needle)
{
	char *flat = xmalloc(s.len + 1);
	size_t o = 0;
	bool ok;

	for (size_t i = 0; i < s.len; i++) {
		if (s.p[i] == '\r' && i + 1 < s.len && s.p[i + 1] == '\n') {
			i++;
			while (i + 1 < s.len && s.p[i + 1] == ' ')
				i++;
			flat[o++] = ' ';
			continue;
		}
		flat[o++] = s.p[i];
	}
	flat[o] = '\0';
	ok = strstr(flat, needle) != NULL;
	free(flat);
	return ok;
}

static bool
span_eq(struct span s, const void *p, size_t n)
{
	return s.len == n && memcmp(s.p, p, n) == 0;
}

/* The boundary parameter of a Content-Type value, malloc'd, or NULL. */
static char *
boundary_of(const char *ct)
{
	const char *b = ct ? strstr(ct, "boundary=") : NULL;
	size_t n;

	if (b == NULL)
		return NULL;
	b += strlen("boundary=");
	if (*b == '"') {
		const char *q = strchr(++b, '"');

		if (q == NULL)
			return NULL;
		n = (size_t)(q - b);
	} else {
		n = strcspn(b, " \t;");
	}
	return xstrndup(b, n);
}

/* Parse a DSN into dsn; false when its structure is broken. */
static bool
parse(struct dsn *d, char *raw, size_t len)
{
	struct span all = {raw, len};
	char *ct;
	char delim[128];
	size_t dl;
	const char *p, *end;

	memset(d, 0, sizeof(*d));
	d->raw = raw;
	d->len = len;
	if (raw == NULL)
		return false;
	split_hdr(all, &d->hdr, &d->body);
	ct = field(d->hdr, "Content-Type");
	d->boundary = boundary_of(ct);
	free(ct);
	if (d->boundary == NULL)
		return false;
	dl = (size_t)snprintf(delim, sizeof(delim), "\r\n--%s", d->boundary);
	if (dl >= sizeof(delim))
		return false;
	end = d->body.p + d->body.len;
	/* The body may start with the first delimiter (no preamble). */
	p = d->body.p;
	if (d->body.len >= dl - 2 && memcmp(p, delim + 2, dl - 2) == 0)
		p += dl - 2;
	else if ((p = memmem(p, (size_t)(end - p), delim, dl)) != NULL)
		p += dl;
	else
		return false;
	for (;;) {
		const char *next;
		struct span s;

		if (end - p >= 2 && p[0] == '-' && p[1] == '-')
			return end - p == 4 && memcmp(p + 2, "\r\n", 2) == 0;
		if (end - p < 2 || p[0] != '\r' || p[1] != '\n')
			return false;
		p += 2;
		next = memmem(p, (size_t)(end - p), delim, dl);
		if (next == NULL || d->nparts == MAX_PARTS)
			return false;
		s = (struct span){p, (size_t)(next - p)};
		split_hdr(
		    s, &d->parts[d->nparts].hdr, &d->parts[d->nparts].body);
		d->nparts++;
		p = next + dl;
	}
}

/* Cut the delivery-status part (parts[1]) into its blocks of fields. */
static bool
parse_status(struct dsn *d)
{
	struct span s;
	const char *p, *end;

	if (d->nparts < 2)
		return false;
	s = d->parts[1].body;
	p = s.p;
	end = s.p + s.len;
	while (p < end && d->nblocks < MAX_BLOCKS) {
		const char *sep = memmem(p, (size_t)(end - p), "\r\n\r\n", 4);
		size_t n = sep ? (size_t)(sep - p) + 2 : (size_t)(end - p);

		d->blocks[d->nblocks++] = (struct span){p, n};
		p += n + (sep ? 2 : 0);
	}
	return d->nblocks > 0;
}

static void
dsn_free(struct dsn *d)
{
	free(d->boundary);
	free(d->raw);
}

/* Format and parse; every caller checks the parse. */
static bool
format(const struct bounce_msg *m, struct dsn *d)
{
	size_t len = 0;
	char *raw = bounce_format(m, &len);

	return parse(d, raw, len) && parse_status(d);
}

/* Every LF follows a CR and every CR precedes an LF; ends in CRLF. */
static bool
crlf_only(const char *p, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (p[i] == '\n' && (i == 0 || p[i - 1] != '\r'))
			return false;
		if (p[i] == '\r' && (i + 1 == n || p[i + 1] != '\n'))
			return false;
	}
	return n >= 2 && p[n - 2] == '\r' && p[n - 1] == '\n';
}

/* Length of the longest line, CRLF excluded. */
static size_t
longest_line(const char *p, size_t n)
{
	size_t max = 0, cur = 0;

	for (size_t i = 0; i < n; i++) {
		if (p[i] == '\r' && i + 1 < n && p[i + 1] == '\n') {
			max = cur > max ? cur : max;
			cur = 0;
			i++;
		} else {
			cur++;
		}
	}
	return cur > max ? cur : max;
}

/* True when some line of p[0..n) starts with `prefix` (any case). */
static bool
line_starts(const char *p, size_t n, const char *prefix)
{
	size_t pl = strlen(prefix);

	for (size_t i = 0; i < n; i++)
		if ((i == 0 || p[i - 1] == '\n') && n - i >= pl &&
		    ascii_ncasecmp(p + i, prefix, pl) == 0)
			return true;
	return false;
}

static bool
all_ascii(struct span s)
{
	for (size_t i = 0; i < s.len; i++)
		if ((unsigned char)s.p[i] >= 0x80)
			return false;
	return true;
}

static char *
date_of(int64_t t)
{
	static char buf[64];

	rfc5322_date(buf, sizeof(buf), t);
	return buf;
}

static struct bounce_msg
base_msg(const struct bounce_rcpt *r, int n)
{
	struct bounce_msg m = {
	    .reporting_mta = HOST,
	    .queue_id = "4F2A9C01D3E5B7A8",
	    .envid = "QQ+2B314",
	    .sender = "alice@example.net",
	    .arrival = T_ARRIVAL,
	    .now = T_NOW,
	    .kind = BOUNCE_FAILURE,
	    .rcpts = r,
	    .nrcpts = n,
	    .orig = (const unsigned char *)small_orig,
	    .orig_len = sizeof(small_orig) - 1,
	    .orig_size = sizeof(small_orig) - 1,
	};

	return m;
}

/* Top-level header, line discipline, part structure: one recipient. */
static void
test_one(void)
{
	struct bounce_rcpt r = {
	    .address = "bob@example.com",
	    .action = "failed",
	    .status = "5.1.1",
	    .remote_mta = "mx1.example.com",
	    .diagnostic = "550 5.1.1 <bob@example.com>: no such user",
	    .last_attempt = T_ATTEMPT,
	};
	struct bounce_msg m = base_msg(&r, 1);
	struct dsn d;
	bool ok = format(&m, &d);
	struct span b0, b1, text;
	char *v;

	CHECK(ok, "one: output parses as a multipart with a delivery-status");
	if (!ok) {
		dsn_free(&d);
		return;
	}
	CHECK(crlf_only(d.raw, d.len), "one: only CRLF line endings");
	CHECK(longest_line(d.raw, d.len) < 998, "one: lines under 998");
	CHECK(strlen(d.raw) == d.len, "one: length matches the text");
	CHECK(field_is(d.hdr, "Date", date_of(T_NOW)), "one: Date");
	CHECK(field_is(d.hdr, "From",
	          "Mail Delivery System <MAILER-DAEMON@" HOST ">"),
	    "one: From");
	CHECK(field_is(d.hdr, "To", "<alice@example.net>"), "one: To");
	CHECK(field_is(d.hdr, "Subject", "Undelivered Mail Returned to Sender"),
	    "one: Subject");
	CHECK(field_is(d.hdr, "Auto-Submitted", "auto-replied"),
	    "one: Auto-Submitted (RFC 3834)");
	v = field(d.hdr, "Message-ID");
	CHECK(
	    v && v[0] == '<' && strstr(v, "4F2A9C01D3E5B7A8") &&
	        strlen(v) > strlen("@" HOST ">") &&
	        strcmp(v + strlen(v) - strlen("@" HOST ">"), "@" HOST ">") == 0,
	    "one: Message-ID <queue id ...@host> (%s)", v ? v : "none");
	free(v);
	CHECK(field_is(d.hdr, "MIME-Version", "1.0"), "one: MIME-Version");
	CHECK(
	    field_has(d.hdr, "Content-Type", "multipart/report;") &&
	        field_has(d.hdr, "Content-Type", "report-type=delivery-status"),
	    "one: Content-Type multipart/report; report-type=delivery-status");
	CHECK(strlen(d.boundary) >= 1 && strlen(d.boundary) <= 70,
	    "one: boundary length 1..70 (RFC 2046)");
	CHECK(field_count(d.hdr, "Subject") == 1 &&
	          field_count(d.hdr, "To") == 1 &&
	          field_count(d.hdr, "From") == 1,
	    "one: no repeated header fields");
	CHECK(field_count(d.hdr, "Content-Transfer-Encoding") == 0,
	    "one: no Content-Transfer-Encoding for a 7-bit original");
	CHECK(d.nparts == 3, "one: three parts (%d)", d.nparts);
	if (d.nparts != 3) {
		dsn_free(&d);
		return;
	}
	CHECK(field_is(d.parts[0].hdr, "Content-Type",
	          "text/plain; charset=us-ascii"),
	    "one: part 1 text/plain us-ascii");
	CHECK(
	    field_is(d.parts[1].hdr, "Content-Type", "message/delivery-status"),
	    "one: part 2 message/delivery-status");
	CHECK(field_is(d.parts[2].hdr, "Content-Type", "message/rfc822"),
	    "one: part 3 message/rfc822");

	CHECK(d.nblocks == 2, "one: per-message block plus one recipient (%d)",
	    d.nblocks);
	if (d.nblocks != 2) {
		dsn_free(&d);
		return;
	}
	b0 = d.blocks[0];
	b1 = d.blocks[1];
	CHECK(
	    field_is(b0, "Reporting-MTA", "dns; " HOST), "one: Reporting-MTA");
	CHECK(field_is(b0, "Original-Envelope-Id", "QQ+314"),
	    "one: Original-Envelope-Id xtext-decoded");
	CHECK(field_is(b0, "Arrival-Date", date_of(T_ARRIVAL)),
	    "one: Arrival-Date");
	CHECK(field_count(b0, "Final-Recipient") == 0,
	    "one: no recipient field in the per-message block");
	CHECK(field_is(b1, "Final-Recipient", "rfc822; bob@example.com"),
	    "one: Final-Recipient");
	CHECK(field_count(b1, "Original-Recipient") == 0,
	    "one: no Original-Recipient without ORCPT");
	CHECK(field_is(b1, "Action", "failed"), "one: Action");
	CHECK(field_is(b1, "Status", "5.1.1"), "one: Status");
	CHECK(field_is(b1, "Remote-MTA", "dns; mx1.example.com"),
	    "one: Remote-MTA");
	CHECK(field_is(b1, "Diagnostic-Code",
	          "smtp; 550 5.1.1 <bob@example.com>: no such user"),
	    "one: Diagnostic-Code");
	CHECK(field_is(b1, "Last-Attempt-Date", date_of(T_ATTEMPT)),
	    "one: Last-Attempt-Date");

	text = d.parts[0].body;
	CHECK(all_ascii(text), "one: text part is us-ascii");
	CHECK(text_has(text, "bob@example.com") && text_has(text, "5.1.1"),
	    "one: text names the recipient and its status");
	CHECK(text_has(text, "mx1.example.com") &&
	          text_has(text, "550 5.1.1 <bob@example.com>: no such user"),
	    "one: text quotes the remote server's reply");
	CHECK(text_has(text, "could not be delivered"),
	    "one: text says the message could not be delivered");
	CHECK(span_eq(d.parts[2].body, small_orig, sizeof(small_orig) - 1),
	    "one: small original returned byte for byte");
	CHECK(!span_has(d.parts[2].body, d.boundary),
	    "one: boundary not in the returned original");
	dsn_free(&d);
}

/* Three recipients: ORCPT decoded, one without remote MTA or reply. */
static void
test_three(void)
{
	struct bounce_rcpt r[] = {
	    {.address = "a+b@x",
	        .orcpt = "rfc822;a+2Bb@x",
	        .action = "failed",
	        .status = "5.1.1",
	        .remote_mta = "mx.x",
	        .diagnostic = "550 5.1.1 unknown user",
	        .last_attempt = T_ATTEMPT},
	    {.address = "c@y",
	        .action = "failed",
	        .status = "5.4.4",
	        .diagnostic = "Host or domain name not found",
	        .last_attempt = 0},
	    {.address = "d@z",
	        .orcpt = "RFC822;D+40Z+2Eold",
	        .action = "failed",
	        .status = "5.2.2",
	        .remote_mta = "mx.z",
	        .diagnostic = "552-5.2.2 mailbox full\r\n552 5.2.2 try later",
	        .last_attempt = T_ATTEMPT + 60},
	};
	struct bounce_msg m = base_msg(r, 3);
	struct dsn d;
	bool ok;

	m.envid = NULL;
	ok = format(&m, &d);
	CHECK(ok && d.nblocks == 4,
	    "three: per-message block plus three recipient blocks");
	if (!ok || d.nblocks != 4) {
		dsn_free(&d);
		return;
	}
	CHECK(crlf_only(d.raw, d.len), "three: only CRLF line endings");
	CHECK(field_count(d.blocks[0], "Original-Envelope-Id") == 0,
	    "three: no Original-Envelope-Id without ENVID");
	CHECK(field_is(d.blocks[1], "Final-Recipient", "rfc822; a+b@x"),
	    "three: rcpt 1 Final-Recipient");
	CHECK(field_is(d.blocks[1], "Original-Recipient", "rfc822; a+b@x"),
	    "three: rcpt 1 Original-Recipient decoded from rfc822;a+2Bb@x");
	CHECK(field_is(d.blocks[1], "Remote-MTA", "dns; mx.x"),
	    "three: rcpt 1 Remote-MTA");
	CHECK(field_is(d.blocks[1], "Diagnostic-Code",
	          "smtp; 550 5.1.1 unknown user"),
	    "three: rcpt 1 Diagnostic-Code");
	CHECK(field_is(d.blocks[2], "Final-Recipient", "rfc822; c@y"),
	    "three: rcpt 2 Final-Recipient");
	CHECK(field_is(d.blocks[2], "Status", "5.4.4"), "three: rcpt 2 Status");
	CHECK(field_count(d.blocks[2], "Remote-MTA") == 0,
	    "three: rcpt 2 has no Remote-MTA");
	CHECK(field_count(d.blocks[2], "Original-Recipient") == 0,
	    "three: rcpt 2 has no Original-Recipient");
	CHECK(field_count(d.blocks[2], "Last-Attempt-Date") == 0,
	    "three: rcpt 2 has no Last-Attempt-Date when never tried");
	CHECK(field_is(d.blocks[2], "Diagnostic-Code",
	          "X-Sluice; Host or domain name not found"),
	    "three: rcpt 2 non-SMTP diagnostic typed X-Sluice");
	CHECK(field_is(d.blocks[3], "Original-Recipient", "RFC822; D@Z.old"),
	    "three: rcpt 3 Original-Recipient keeps case, decodes +40 +2E");
	CHECK(field_is(d.blocks[3], "Diagnostic-Code",
	          "smtp; 552-5.2.2 mailbox full 552 5.2.2 try later"),
	    "three: rcpt 3 multi-line reply joined on one field");
	CHECK(
	    field_is(d.blocks[3], "Last-Attempt-Date", date_of(T_ATTEMPT + 60)),
	    "three: rcpt 3 Last-Attempt-Date");
	for (int i = 1; i <= 3; i++)
		CHECK(field_is(d.blocks[i], "Action", "failed") &&
		          field_count(d.blocks[i], "Status") == 1,
		    "three: rcpt %d Action and one Status", i);
	CHECK(text_has(d.parts[0].body, "a+b@x") &&
	          text_has(d.parts[0].body, "c@y") &&
	          text_has(d.parts[0].body, "d@z"),
	    "three: text lists every recipient");
	CHECK(text_has(d.parts[0].body, "Host or domain name not found"),
	    "three: text gives the local reason");
	dsn_free(&d);
}

/* Kinds: Subject, Action and the text's promise. */
static void
test_kinds(void)
{
	static const struct {
		enum bounce_kind kind;
		const char *action; /* as the caller gives it */
		const char *status;
		const char *subject;
		const char *want_action;
		const char *text;
	} cases[] = {
	    {BOUNCE_FAILURE, "failed", "5.1.1",
	        "Undelivered Mail Returned to Sender", "failed",
	        "will not be retried"},
	    {BOUNCE_DELAY, "delayed", "4.4.1",
	        "Delayed Mail (still being retried)", "delayed",
	        "will be retried"},
	    {BOUNCE_SUCCESS, "delivered", "2.0.0",
	        "Successful Mail Delivery Report", "delivered", "delivered"},
	    {BOUNCE_SUCCESS, "relayed", "2.0.0",
	        "Successful Mail Delivery Report", "relayed", "delivered"},
	    {BOUNCE_DELAY, NULL, NULL, "Delayed Mail (still being retried)",
	        "delayed", "will be retried"},
	    {BOUNCE_FAILURE, "bogus\r\nX: y", "5.1",
	        "Undelivered Mail Returned to Sender", "failed",
	        "could not be delivered"},
	};

	for (size_t i = 0; i < NELEM(cases); i++) {
		struct bounce_rcpt r = {
		    .address = "bob@example.com",
		    .action = cases[i].action,
		    .status = cases[i].status,
		    .remote_mta = "mx1.example.com",
		    .diagnostic = "451 4.4.1 try again",
		    .last_attempt = T_ATTEMPT,
		};
		struct bounce_msg m = base_msg(&r, 1);
		struct dsn d;
		bool ok;
		const char *want_status = cases[i].status;

		if (want_status == NULL || strcmp(want_status, "5.1") == 0)
			want_status =
			    cases[i].kind == BOUNCE_DELAY ? "4.0.0" : "5.0.0";
		m.kind = cases[i].kind;
		ok = format(&m, &d);
		CHECK(ok && d.nblocks == 2, "kind %zu: parses", i);
		if (!ok || d.nblocks != 2) {
			dsn_free(&d);
			continue;
		}
		CHECK(field_is(d.hdr, "Subject", cases[i].subject),
		    "kind %zu: Subject", i);
		CHECK(field_is(d.blocks[1], "Action", cases[i].want_action),
		    "kind %zu: Action %s", i, cases[i].want_action);
		CHECK(field_is(d.blocks[1], "Status", want_status),
		    "kind %zu: Status %s", i, want_status);
		CHECK(text_has(d.parts[0].body, cases[i].text),
		    "kind %zu: text says \"%s\"", i, cases[i].text);
		CHECK(!line_starts(d.raw, d.len, "X:"),
		    "kind %zu: no injected line", i);
		dsn_free(&d);
	}
}

/* RET=HDRS, a large original, an original without a body. */
static void
test_return(void)
{
	struct bounce_rcpt r = {.address = "bob@example.com",
	    .action = "failed",
	    .status = "5.1.1",
	    .diagnostic = "550 5.1.1 no"};
	struct bounce_msg m = base_msg(&r, 1);
	struct dsn d;
	bool ok;
	size_t big_len = BOUNCE_RETURN_LIMIT + 5000, n;
	char *big;

	/* RET=HDRS */
	m.ret_hdrs = 1;
	ok = format(&m, &d) && d.nparts == 3;
	CHECK(ok, "hdrs: three parts");
	if (ok) {
		CHECK(field_is(d.parts[2].hdr, "Content-Type",
		          "text/rfc822-headers"),
		    "hdrs: text/rfc822-headers");
		CHECK(span_eq(
		          d.parts[2].body, small_hdrs, sizeof(small_hdrs) - 1),
		    "hdrs: exactly the header section");
		CHECK(!span_has(d.parts[2].body, "see you"),
		    "hdrs: no body text returned");
		CHECK(text_has(d.parts[0].body, "header section"),
		    "hdrs: text says only the headers are attached");
	}
	dsn_free(&d);

	/* Larger than BOUNCE_RETURN_LIMIT, all of it at hand. */
	big = xmalloc(big_len + 1);
	n = (size_t)snprintf(big, big_len, "%s", small_hdrs);
	memcpy(big + n, "\r\n", 2);
	n += 2;
	while (n + 72 < big_len) {
		memset(big + n, 'x', 70);
		memcpy(big + n + 70, "\r\n", 2);
		n += 72;
	}
	m = base_msg(&r, 1);
	m.orig = (const unsigned char *)big;
	m.orig_len = n;
	m.orig_size = n;
	ok = format(&m, &d) && d.nparts == 3;
	CHECK(n > BOUNCE_RETURN_LIMIT && ok, "large: three parts");
	if (ok) {
		CHECK(field_is(d.parts[2].hdr, "Content-Type",
		          "text/rfc822-headers"),
		    "large: only headers, as text/rfc822-headers");
		CHECK(span_eq(
		          d.parts[2].body, small_hdrs, sizeof(small_hdrs) - 1),
		    "large: exactly the header section");
		CHECK(d.len < 20000, "large: the DSN stays small (%zu)", d.len);
		CHECK(text_has(d.parts[0].body, "header section") &&
		          text_has(d.parts[0].body, "octets"),
		    "large: text explains the size limit");
	}
	dsn_free(&d);

	/* Only the start at hand: orig_size says it is large. */
	m.orig_len = 4096;
	m.orig_size = 10 * 1024 * 1024;
	ok = format(&m, &d) && d.nparts == 3;
	CHECK(ok &&
	          field_is(
	              d.parts[2].hdr, "Content-Type", "text/rfc822-headers") &&
	          span_eq(d.parts[2].body, small_hdrs, sizeof(small_hdrs) - 1),
	    "large: a partial original returns its header section");
	dsn_free(&d);

	/* No empty line within orig_len: all of it is the header section. */
	m.orig_len = 60;
	m.orig_size = 10 * 1024 * 1024;
	ok = format(&m, &d) && d.nparts == 3;
	CHECK(ok && span_eq(d.parts[2].body, big, 60),
	    "large: no end of header within orig_len returns all orig_len");
	CHECK(ok && crlf_only(d.raw, d.len),
	    "large: cut header section keeps CRLF discipline");
	dsn_free(&d);
	free(big);

	/* Exactly at the limit: returned whole. */
	big = xmalloc(BOUNCE_RETURN_LIMIT);
	n = (size_t)snprintf(big, BOUNCE_RETURN_LIMIT, "%s\r\n", small_hdrs);
	while (BOUNCE_RETURN_LIMIT - n > 74) {
		memset(big + n, 'y', 70);
		memcpy(big + n + 70, "\r\n", 2);
		n += 72;
	}
	memset(big + n, 'z', BOUNCE_RETURN_LIMIT - n - 2);
	memcpy(big + BOUNCE_RETURN_LIMIT - 2, "\r\n", 2);
	n = BOUNCE_RETURN_LIMIT;
	m.orig = (const unsigned char *)big;
	m.orig_len = n;
	m.orig_size = n;
	ok = format(&m, &d) && d.nparts == 3;
	CHECK(ok && n == BOUNCE_RETURN_LIMIT &&
	          field_is(d.parts[2].hdr, "Content-Type", "message/rfc822") &&
	          span_eq(d.parts[2].body, big, n),
	    "limit: an original of exactly BOUNCE_RETURN_LIMIT returned whole");
	dsn_free(&d);
	free(big);

	/* No original at all: two parts. */
	m = base_msg(&r, 1);
	m.orig = NULL;
	m.orig_len = 0;
	m.orig_size = 0;
	ok = format(&m, &d);
	CHECK(ok && d.nparts == 2, "none: no original, two parts");
	dsn_free(&d);
}

/* 8-bit originals are labelled 8bit at the top and on their part. */
static void
test_8bit(void)
{
	static const char orig[] =
	    "Subject: caf\xc3\xa9\r\n\r\nna\xc3\xafve\r\n";
	struct bounce_rcpt r = {
	    .address = "b\xc3\xb8@x", .action = "failed", .status = "5.1.1"};
	struct bounce_msg m = base_msg(&r, 1);
	struct dsn d;
	bool ok;

	m.orig = (const unsigned char *)orig;
	m.orig_len = m.orig_size = sizeof(orig) - 1;
	ok = format(&m, &d) && d.nparts == 3;
	CHECK(ok && field_is(d.hdr, "Content-Transfer-Encoding", "8bit"),
	    "8bit: top level Content-Transfer-Encoding: 8bit");
	CHECK(
	    ok && field_is(d.parts[2].hdr, "Content-Transfer-Encoding", "8bit"),
	    "8bit: returned part Content-Transfer-Encoding: 8bit");
	CHECK(ok && span_eq(d.parts[2].body, orig, sizeof(orig) - 1),
	    "8bit: original returned byte for byte");
	CHECK(ok && all_ascii(d.parts[0].body) && all_ascii(d.parts[1].body),
	    "8bit: text and delivery-status stay ASCII");
	dsn_free(&d);
}

/* Hostile peers: nothing they send becomes a header or delimiter line. */
static void
test_hostile(void)
{
	char long_word[5001], long_text[6001];
	struct bounce_rcpt r[] = {
	    {.address = "bob@example.com\r\nBcc: evil1@x",
	        .orcpt = "rfc822;x+0D+0ABcc:+20evil2@x",
	        .action = "failed",
	        .status = "5.7.1",
	        .remote_mta = "mx.evil\r\nBcc: evil3@x",
	        .diagnostic =
	            "550 5.7.1 denied\r\nBcc: evil@x\r\n\r\n--x\x01\x7f",
	        .last_attempt = T_ATTEMPT},
	    {.address = "w@x",
	        .action = "failed",
	        .status = "5.0.0",
	        .remote_mta = "mx.x",
	        .diagnostic = long_word},
	    {.address = "t@x",
	        .action = "failed",
	        .status = "5.0.0",
	        .diagnostic = long_text},
	};
	struct bounce_msg m = base_msg(r, 3);
	struct dsn d;
	bool ok;
	char *v;

	memcpy(long_word, "550 ", 4);
	memset(long_word + 4, 'A', sizeof(long_word) - 5);
	long_word[sizeof(long_word) - 1] = '\0';
	for (size_t i = 0; i < sizeof(long_text) - 1; i++)
		long_text[i] = i % 7 == 6 ? ' ' : 'b';
	memcpy(long_text, "554 ", 4);
	long_text[sizeof(long_text) - 1] = '\0';
	m.sender = "alice@example.net\r\nBcc: evil4@x";
	m.envid = "id+0D+0ABcc:+20evil5@x";

	ok = format(&m, &d);
	/* Line checks first: they hold even if the structure broke. */
	CHECK(d.raw && !line_starts(d.raw, d.len, "Bcc"),
	    "hostile: no line starts with Bcc anywhere");
	CHECK(d.raw && crlf_only(d.raw, d.len),
	    "hostile: only CRLF line endings");
	CHECK(d.raw && longest_line(d.raw, d.len) < 998,
	    "hostile: no line over 998 octets (%zu)",
	    d.raw ? longest_line(d.raw, d.len) : 0);
	CHECK(ok && d.nblocks == 4, "hostile: still parses, four blocks");
	if (!ok || d.nblocks != 4) {
		dsn_free(&d);
		return;
	}
	CHECK(field_count(d.hdr, "Bcc") == 0 && field_count(d.hdr, "To") == 1,
	    "hostile: one To, no Bcc in the top-level header");
	CHECK(d.nparts == 3, "hostile: still three parts (%d)", d.nparts);
	v = field(d.blocks[1], "Diagnostic-Code");
	CHECK(v && strcmp(v, "smtp; 550 5.7.1 denied Bcc: evil@x --x") == 0,
	    "hostile: reply flattened into its one field (%s)", v ? v : "none");
	free(v);
	CHECK(field_is(d.blocks[1], "Remote-MTA", "dns; mx.evil Bcc: evil3@x"),
	    "hostile: remote MTA flattened");
	CHECK(field_is(
	          d.blocks[1], "Original-Recipient", "rfc822; x Bcc: evil2@x"),
	    "hostile: decoded ORCPT flattened");
	CHECK(field_is(d.blocks[0], "Original-Envelope-Id", "id Bcc: evil5@x"),
	    "hostile: decoded ENVID flattened");
	CHECK(field_is(d.hdr, "To", "<alice@example.net Bcc: evil4@x>"),
	    "hostile: sender flattened into To");
	v = field(d.blocks[2], "Diagnostic-Code");
	CHECK(v && strncmp(v, "smtp; 550 AAAA", 14) == 0 && strlen(v) < 998 &&
	          strcmp(v + strlen(v) - 3, "...") == 0,
	    "hostile: a 5000-octet word is cut and marked");
	free(v);
	v = field(d.blocks[3], "Diagnostic-Code");
	CHECK(v && strncmp(v, "smtp; 554 bb", 12) == 0 && strlen(v) > 800 &&
	          strlen(v) < 998,
	    "hostile: a long reply is kept, folded (%zu)", v ? strlen(v) : 0);
	free(v);
	CHECK(all_ascii(d.parts[0].body) && all_ascii(d.parts[1].body),
	    "hostile: text and delivery-status stay ASCII");
	dsn_free(&d);
}

/*
 * The boundary never occurs in the returned original: build originals
 * that contain the boundaries the formatter chose before, several times.
 */
static void
test_boundary(void)
{
	struct bounce_rcpt r = {.address = "bob@example.com",
	    .action = "failed",
	    .status = "5.1.1"};
	struct bounce_msg m = base_msg(&r, 1);
	struct dsn d;
	char orig[4096], *seen[5];
	size_t n;
	bool ok, distinct = true;

	n = (size_t)snprintf(orig, sizeof(orig), "%s\r\n", small_hdrs);
	n += (size_t)snprintf(orig + n, sizeof(orig) - n,
	    "--=_sluice_4F2A9C01D3E5B7A8_0\r\n"
	    "--=_sluice_4F2A9C01D3E5B7A8\r\n--4F2A9C01D3E5B7A8.1\r\n");
	for (int i = 0; i < 5; i++) {
		m.orig = (const unsigned char *)orig;
		m.orig_len = m.orig_size = n;
		ok = format(&m, &d) && d.nparts == 3;
		CHECK(ok && !memmem(orig, n, d.boundary, strlen(d.boundary)),
		    "boundary %d: not in an original holding %d earlier ones",
		    i, i);
		CHECK(ok && span_eq(d.parts[2].body, orig, n),
		    "boundary %d: original still returned exactly", i);
		seen[i] = ok ? xstrdup(d.boundary) : xstrdup("");
		for (int j = 0; j < i; j++)
			distinct = distinct && strcmp(seen[i], seen[j]) != 0;
		n += (size_t)snprintf(orig + n, sizeof(orig) - n,
		    "--%s\r\nContent-Type: "
		    "text/plain\r\n\r\nfake\r\n--%s--\r\n",
		    seen[i], seen[i]);
		dsn_free(&d);
	}
	CHECK(distinct, "boundary: each collision picks a new boundary");
	/* With RET=HDRS, a boundary-looking header line. */
	n = (size_t)snprintf(orig, sizeof(orig),
	    "X-Trap: --%s\r\nSubject: s\r\n\r\nbody\r\n", seen[0]);
	m.orig_len = m.orig_size = n;
	m.ret_hdrs = 1;
	ok = format(&m, &d) && d.nparts == 3;
	CHECK(ok && !span_has(d.parts[2].body, d.boundary) &&
	          span_has(d.parts[2].body, "X-Trap"),
	    "boundary: not in returned headers either");
	dsn_free(&d);
	for (int i = 0; i < 5; i++)
		free(seen[i]);
}

/* Degenerate input: no recipients, missing names. */
static void
test_degenerate(void)
{
	struct bounce_msg m = base_msg(NULL, 0);
	struct dsn d;
	bool ok;

	m.reporting_mta = NULL;
	m.queue_id = NULL;
	m.arrival = 0;
	ok = format(&m, &d);
	CHECK(ok && d.nblocks == 1 && d.nparts == 3,
	    "degenerate: no recipients still a valid report");
	CHECK(ok && field_is(d.blocks[0], "Reporting-MTA", "dns; localhost") &&
	          field_count(d.blocks[0], "Arrival-Date") == 0,
	    "degenerate: defaults for missing host, no Arrival-Date");
	CHECK(ok && crlf_only(d.raw, d.len), "degenerate: CRLF only");
	dsn_free(&d);
}

/* Times from a damaged queue row: valid dates, no crash. */
static void
test_hostile_times(void)
{
	struct bounce_rcpt r = {.address = "bob@example.org",
	    .status = "5.1.1",
	    .last_attempt = INT64_MIN};
	struct bounce_msg m = base_msg(&r, 1);
	struct dsn d;
	bool ok;

	m.arrival = -1;
	m.now = INT64_MAX;
	ok = format(&m, &d);
	CHECK(ok && field_is(d.hdr, "Date", "Fri, 31 Dec 9999 23:59:59 +0000"),
	    "hostile times: a time past 9999 is 9999-12-31");
	CHECK(ok &&
	          field_is(d.blocks[0], "Arrival-Date",
	              "Thu, 1 Jan 1970 00:00:00 +0000") &&
	          field_is(d.blocks[1], "Last-Attempt-Date",
	              "Thu, 1 Jan 1970 00:00:00 +0000"),
	    "hostile times: a negative time is 1970-01-01");
	dsn_free(&d);
}

int
main(void)
{
	test_one();
	test_three();
	test_kinds();
	test_return();
	test_8bit();
	test_hostile();
	test_boundary();
	test_degenerate();
	test_hostile_times();
	UNIT_DONE();
}
