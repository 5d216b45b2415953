/*
 * fuzz_reply.c - the SMTP client's reply reader and EHLO keywords
 * (queue/smtpwire.c): what a hostile next hop can send.  The input is
 * what the server sends, one reply after another.
 *
 * It is read twice: split into lines as conn_read_line does (conn.h: at
 * LF, CRLF or LF stripped, lines over SMTPWIRE_LINE_MAX cut) and fed to
 * smtpwire_reply_line; and through a real conn over a socketpair with
 * smtpwire_read_reply.  Both must see the same replies.
 *
 * Properties:
 *  - a reply is accepted only when every line carries the same valid
 *    reply code (RFC 5321 section 4.2: [2-5][0-5][0-9]) followed by
 *    nothing, ' ' or '-', without NUL, within SMTPWIRE_LINES_MAX lines,
 *    ending at the first line without '-'; anything else is malformed
 *    with code 0;
 *  - the text is NUL-terminated, printable ASCII, starts with the code;
 *  - EHLO keywords: a SIZE limit is never negative and is exactly the
 *    advertised digits; a line that is not a keyword changes nothing.
 */
#include "conn.h"
#include "fuzz.h"
#include "smtpwire.h"
#include "util.h"

#include <errno.h>
#include <limits.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_REPLIES 4096

struct outcome {
	int n;
	int status[MAX_REPLIES]; /* 1 complete, -1 malformed, 0 unfinished */
	int code[MAX_REPLIES];
	struct fuzz_buf texts; /* each reply's text and a NUL */
};

static bool
is_code(const char *l, size_t len)
{
	return len >= 3 && l[0] >= '2' && l[0] <= '5' && l[1] >= '0' &&
	       l[1] <= '5' && l[2] >= '0' && l[2] <= '9';
}

static void
check_text(const struct smtp_reply *r)
{
	size_t i, n = strnlen(r->text, sizeof(r->text));

	FUZZ_ASSERT(n < sizeof(r->text), "text NUL-terminated");
	for (i = 0; i < n; i++)
		FUZZ_ASSERT(
		    r->text[i] >= 0x20 && r->text[i] < 0x7f, "text sanitized");
}

/* A keyword line, checked against what smtpwire_ehlo_keyword did. */
static void
ehlo_line(void *arg, const char *line)
{
	struct smtp_ehlo *e = arg, before = *e;
	size_t n = strlen(line);

	FUZZ_ASSERT(n <= SMTPWIRE_LINE_MAX, "keyword line bounded");
	smtpwire_ehlo_keyword(e, line);
	FUZZ_ASSERT(e->size_limit >= 0, "SIZE never negative");
	while (n > 0 && line[n - 1] == ' ')
		n--;
	if (n > 5 && strncasecmp(line, "SIZE ", 5) == 0 &&
	    memcmp(&before, e, sizeof(before)) != 0) {
		long long v = 0;
		size_t i;

		FUZZ_ASSERT(n - 5 <= 20, "SIZE digits");
		for (i = 5; i < n; i++) {
			FUZZ_ASSERT(line[i] >= '0' && line[i] <= '9',
			    "SIZE is digits only");
			FUZZ_ASSERT(v <= (LLONG_MAX - (line[i] - '0')) / 10,
			    "SIZE fits");
			v = v * 10 + (line[i] - '0');
		}
		FUZZ_ASSERT(e->size && e->size_limit == v,
		    "SIZE is the advertised value");
	}
	if (strncasecmp(line, "PIPELINING", 10) != 0 &&
	    strncasecmp(line, "8BITMIME", 8) != 0 &&
	    strncasecmp(line, "SMTPUTF8", 8) != 0 &&
	    strncasecmp(line, "DSN", 3) != 0 &&
	    strncasecmp(line, "CHUNKING", 8) != 0 &&
	    strncasecmp(line, "BINARYMIME", 10) != 0 &&
	    strncasecmp(line, "STARTTLS", 8) != 0 &&
	    strncasecmp(line, "SIZE", 4) != 0 &&
	    strncasecmp(line, "AUTH", 4) != 0)
		FUZZ_ASSERT(memcmp(&before, e, sizeof(before)) == 0,
		    "a line that is no keyword changes nothing");
}

static void
record(struct outcome *o, int status, const struct smtp_reply *r)
{
	if (o->n >= MAX_REPLIES)
		return;
	o->status[o->n] = status;
	o->code[o->n] = r->code;
	fuzz_buf_add(&o->texts, r->text, strlen(r->text) + 1);
	o->n++;
}

/* The pure path: lines as conn_read_line makes them. */
static void
pure(const uint8_t *data, size_t size, struct outcome *o)
{
	struct smtpwire_reply_state st = {0, 0};
	struct smtp_reply r;
	struct smtp_ehlo e;
	char line[SMTPWIRE_LINE_MAX];
	size_t pos = 0;
	int first_code = -1, nlines = 0, rc;

	memset(&e, 0, sizeof(e));
	memset(&r, 0, sizeof(r));
	while (pos < size) {
		const uint8_t *lf = memchr(data + pos, '\n', size - pos);
		size_t take, len;
		bool cut = false;

		if (lf == NULL)
			break; /* no line ending: the conn reports EOF */
		take = (size_t)(lf - (data + pos)) + 1;
		if (take > sizeof(line) - 1) {
			len = sizeof(line) - 1;
			cut = true;
		} else {
			len = take - 1;
			if (len > 0 && data[pos + len - 1] == '\r')
				len--;
		}
		memcpy(line, data + pos, len);
		line[len] = '\0';
		pos += take;

		rc =
		    smtpwire_reply_line(&st, &r, line, len, cut, ehlo_line, &e);
		check_text(&r);
		/* The reference, from the contract. */
		if (nlines == 0)
			first_code = is_code(line, len)
			                 ? atoi((char[4]){
			                       line[0], line[1], line[2], '\0'})
			                 : -1;
		nlines++;
		if (!is_code(line, len) ||
		    (len > 3 && line[3] != ' ' && line[3] != '-') ||
		    memchr(line, '\0', len) != NULL ||
		    atoi((char[4]){line[0], line[1], line[2], '\0'}) !=
		        first_code ||
		    nlines > SMTPWIRE_LINES_MAX) {
			FUZZ_ASSERT(rc == -1 && r.code == 0,
			    "a malformed line makes a malformed reply");
		} else if (len == 3 || line[3] == ' ') {
			FUZZ_ASSERT(rc == 1 && r.code == first_code,
			    "the last line ends the reply with its code");
			FUZZ_ASSERT(
			    r.code >= 200 && r.code <= 559, "code in range");
			FUZZ_ASSERT(r.text[0] == line[0] &&
			                r.text[1] == line[1] &&
			                r.text[2] == line[2],
			    "text starts with the code");
		} else {
			FUZZ_ASSERT(rc == 0, "a '-' line continues the reply");
		}
		if (rc != 0) {
			record(o, rc, &r);
			memset(&st, 0, sizeof(st));
			memset(&r, 0, sizeof(r));
			nlines = 0;
			if (rc < 0)
				return; /* the client gives up on the conn */
		}
	}
}

/* The real path: smtpwire_read_reply on a conn. */
static void
through_conn(const uint8_t *data, size_t size, struct outcome *o)
{
	struct smtp_reply r;
	struct smtp_ehlo e;
	struct conn *c;
	enum smtpwire_status st;
	int sv[2];
	size_t off = 0;
	ssize_t w;

	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
		abort();
	while (off < size) {
		w = write(sv[1], data + off, size - off);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			abort(); /* size is bounded below the socket buffer */
		off += (size_t)w;
	}
	close(sv[1]);
	c = conn_new(sv[0]);
	memset(&e, 0, sizeof(e));
	for (;;) {
		st = smtpwire_read_reply(c, deadline_in(5), &r, ehlo_line, &e);
		check_text(&r);
		if (st == SMTPWIRE_OK) {
			record(o, 1, &r);
		} else {
			FUZZ_ASSERT(
			    r.code == 0, "no code unless a whole reply");
			if (st == SMTPWIRE_MALFORMED)
				record(o, -1, &r);
			else
				FUZZ_ASSERT(st == SMTPWIRE_LOST,
				    "the end of input is a lost conn");
			break;
		}
	}
	conn_free(c);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct outcome a, b;
	int i;

	if (size > 32768)
		return 0;
	memset(&a, 0, sizeof(a));
	memset(&b, 0, sizeof(b));
	pure(data, size, &a);
	through_conn(data, size, &b);
	FUZZ_ASSERT(a.n == b.n, "the conn reads the same replies");
	for (i = 0; i < a.n; i++)
		FUZZ_ASSERT(
		    a.status[i] == b.status[i] && a.code[i] == b.code[i],
		    "the conn reads the same replies");
	FUZZ_ASSERT(fuzz_buf_eq(&a.texts, &b.texts),
	    "the conn reads the same reply texts");
	fuzz_buf_free(&a.texts);
	fuzz_buf_free(&b.texts);
	return 0;
}
