/*
 * smtpwire.c - the client side of the SMTP wire (see smtpwire.h).
 *
 * Threads: reentrant, no shared state.
 * Invariants:
 *  1. The remote server is not trusted: every reply line is bounded
 *     (SMTPWIRE_LINE_MAX, SMTPWIRE_LINES_MAX), must carry the reply's one
 *     code, and its text is only copied, sanitized, into the caller's
 *     fixed buffer.  Anything else is a malformed reply, never a guess.
 *  2. The reply checks (smtpwire_reply_line, smtpwire_ehlo_keyword) and
 *     the dot-stuffer (smtpwire_stuff) are pure, so that they can be fed
 *     bytes without a socket (tests/fuzz/fuzz_reply.c, fuzz_stuff.c).
 */
#include "smtpwire.h"
#include "conn.h"
#include "log.h"
#include "util.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define COMMAND_MAX 2048 /* with its CRLF */

/* Poll `fd` for writability until the deadline: 1, or 0 when it passed. */
static int
wait_writable(int fd, int64_t deadline)
{
	struct pollfd p;
	int n;

	p.fd = fd;
	p.events = POLLOUT;
	while (
	    (n = poll(&p, 1, deadline_left_ms(deadline))) < 0 && errno == EINTR)
		;
	return n == 1;
}

int
smtpwire_connect(
    const struct sockaddr_storage *ss, socklen_t len, int64_t deadline)
{
	int fd = socket(
	    ss->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	int err = 0, one = 1;
	socklen_t elen = sizeof(err);

	if (fd < 0)
		return -1;
	if (connect(fd, (const struct sockaddr *)ss, len) != 0 &&
	    errno != EINPROGRESS) {
		err = errno;
		goto fail;
	}
	if (!wait_writable(fd, deadline)) {
		err = ETIMEDOUT;
		goto fail;
	}
	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &elen) != 0) {
		err = errno;
		goto fail;
	}
	if (err != 0)
		goto fail;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	return fd;
fail:
	close(fd);
	errno = err;
	return -1;
}

/* RFC 5321 section 4.2 Reply-code: %x32-35 %x30-35 %x30-39; or -1. */
static int
reply_code(const char *line, size_t len)
{
	if (len < 3 || line[0] < '2' || line[0] > '5' || line[1] < '0' ||
	    line[1] > '5' || line[2] < '0' || line[2] > '9')
		return -1;
	return (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0');
}

int
smtpwire_reply_line(struct smtpwire_reply_state *st, struct smtp_reply *r,
    const char *line, size_t len, bool cut,
    void (*each)(void *arg, const char *line), void *arg)
{
	int code = reply_code(line, len);

	/* A NUL would cut the text short: not a reply line either. */
	if (code < 0 || (len > 3 && line[3] != ' ' && line[3] != '-') ||
	    memchr(line, '\0', len) != NULL ||
	    (st->nlines > 0 && code != st->code) ||
	    ++st->nlines > SMTPWIRE_LINES_MAX) {
		r->code = 0;
		log_sanitize(r->text, sizeof(r->text), line);
		return -1;
	}
	if (st->nlines == 1) {
		st->code = code;
		log_sanitize(r->text, sizeof(r->text), line);
		/* "250-a" and "250 a" alike: the text is one line. */
		if (len > 3)
			r->text[3] = ' ';
	} else if (each != NULL && len > 4 && !cut) {
		each(arg, line + 4);
	}
	if (len == 3 || line[3] == ' ') {
		r->code = code; /* only a whole reply has a code */
		return 1;
	}
	return 0;
}

enum smtpwire_status
smtpwire_read_reply(struct conn *c, int64_t deadline, struct smtp_reply *r,
    void (*each)(void *arg, const char *line), void *arg)
{
	struct smtpwire_reply_state st = {0, 0};
	char line[SMTPWIRE_LINE_MAX];
	int done;

	r->code = 0;
	r->text[0] = '\0';
	for (;;) {
		bool too_long, bare_lf;
		size_t len;
		enum conn_status cs = conn_read_line(
		    c, line, sizeof(line), &len, &too_long, &bare_lf, deadline);

		if (cs != CONN_OK)
			return cs == CONN_TIMEOUT ? SMTPWIRE_TIMEOUT
			                          : SMTPWIRE_LOST;
		done =
		    smtpwire_reply_line(&st, r, line, len, too_long, each, arg);
		if (done < 0)
			return SMTPWIRE_MALFORMED;
		if (done > 0)
			return SMTPWIRE_OK;
	}
}

/* A keyword without parameters: `kw` exactly, in any case. */
static bool
keyword_is(const char *line, size_t n, const char *kw)
{
	return strlen(kw) == n && ascii_ncasecmp(line, kw, n) == 0;
}

void
smtpwire_ehlo_keyword(struct smtp_ehlo *e, const char *line)
{
	static const struct {
		const char *kw;
		size_t off;
	} flags[] = {
	    {"PIPELINING", offsetof(struct smtp_ehlo, pipelining)},
	    {"8BITMIME", offsetof(struct smtp_ehlo, eightbit)},
	    {"SMTPUTF8", offsetof(struct smtp_ehlo, smtputf8)},
	    {"DSN", offsetof(struct smtp_ehlo, dsn)},
	    {"CHUNKING", offsetof(struct smtp_ehlo, chunking)},
	    {"BINARYMIME", offsetof(struct smtp_ehlo, binarymime)},
	    {"STARTTLS", offsetof(struct smtp_ehlo, starttls)},
	    {"REQUIRETLS", offsetof(struct smtp_ehlo, requiretls)},
	};
	size_t n = strlen(line), i;
	long long size;

	while (n > 0 && line[n - 1] == ' ')
		n--;
	for (i = 0; i < sizeof(flags) / sizeof(flags[0]); i++) {
		if (keyword_is(line, n, flags[i].kw)) {
			*(bool *)((char *)e + flags[i].off) = true;
			return;
		}
	}
	if (keyword_is(line, n, "SIZE")) {
		e->size = true;
		e->size_limit = 0;
	} else if (n > 5 && ascii_ncasecmp(line, "SIZE ", 5) == 0) {
		if (size_value_parse(line + 5, n - 5, &size)) {
			e->size = true;
			e->size_limit = size;
		}
	} else if (n > 5 && ascii_ncasecmp(line, "AUTH", 4) == 0 &&
	           (line[4] == ' ' || line[4] == '=')) {
		/* "AUTH PLAIN LOGIN", or "AUTH=PLAIN LOGIN" (pre-RFC 4954) */
		const char *p = line + 5, *end = line + n;

		while (p < end) {
			size_t w = strcspn(p, " ");

			if (w > (size_t)(end - p))
				w = (size_t)(end - p);
			if (keyword_is(p, w, "PLAIN"))
				e->auth_plain = true;
			if (keyword_is(p, w, "LOGIN"))
				e->auth_login = true;
			p += w;
			while (p < end && *p == ' ')
				p++;
		}
	}
}

void
smtpwire_ehlo_each(void *arg, const char *line)
{
	smtpwire_ehlo_keyword(arg, line);
}

enum smtpwire_status
smtpwire_vcommand(struct conn *c, int64_t deadline, struct smtp_reply *r,
    void (*each)(void *arg, const char *line), void *arg, const char *fmt,
    va_list ap)
{
	char buf[COMMAND_MAX];
	int n = vsnprintf(buf, sizeof(buf), fmt, ap);

	if (n < 0 || (size_t)n >= sizeof(buf) - 2) {
		r->code = 0;
		r->text[0] = '\0';
		return SMTPWIRE_TOO_LONG;
	}
	memcpy(buf + n, "\r\n", 2);
	conn_write(c, buf, (size_t)n + 2);
	return smtpwire_read_reply(c, deadline, r, each, arg);
}

enum smtpwire_status
smtpwire_command(struct conn *c, int64_t deadline, struct smtp_reply *r,
    void (*each)(void *arg, const char *line), void *arg, const char *fmt, ...)
{
	enum smtpwire_status st;
	va_list ap;

	va_start(ap, fmt);
	st = smtpwire_vcommand(c, deadline, r, each, arg, fmt, ap);
	va_end(ap);
	return st;
}

void
smtpwire_quit(struct conn *c, int64_t deadline)
{
	struct smtp_reply r;

	(void)smtpwire_command(c, deadline, &r, NULL, NULL, "QUIT");
}

void
smtpwire_stuff_init(struct smtpwire_data *d)
{
	d->sol = true;
	d->cr = false;
}

size_t
smtpwire_stuff(struct smtpwire_data *d, const char *in, size_t n, char *out)
{
	size_t i, o = 0;

	for (i = 0; i < n; i++) {
		char c = in[i];

		if (d->cr) {
			/* The CR held: CRLF, or a bare CR; a line break both.
			 */
			d->cr = false;
			out[o++] = '\r';
			out[o++] = '\n';
			d->sol = true;
			if (c == '\n')
				continue;
		}
		if (c == '\r') {
			d->cr = true;
		} else if (c == '\n') {
			out[o++] = '\r'; /* a bare LF */
			out[o++] = '\n';
			d->sol = true;
		} else {
			if (d->sol && c == '.')
				out[o++] = '.';
			out[o++] = c;
			d->sol = false;
		}
	}
	return o;
}

size_t
smtpwire_stuff_end(struct smtpwire_data *d, char *out)
{
	size_t o = 0;

	if (d->cr || !d->sol) {
		out[o++] = '\r';
		out[o++] = '\n';
	}
	memcpy(out + o, ".\r\n", 3);
	d->cr = false;
	d->sol = true;
	return o + 3;
}

void
smtpwire_data_begin(struct smtpwire_data *d, struct conn *c)
{
	d->conn = c;
	smtpwire_stuff_init(d);
}

void
smtpwire_data_put(struct smtpwire_data *d, const void *data, size_t len)
{
	enum { SLICE = 4096 };
	char buf[SMTPWIRE_STUFF_OUT_MAX(SLICE)];
	const char *p = data;
	size_t n;

	while (len > 0) {
		n = len < SLICE ? len : SLICE;
		conn_write(d->conn, buf, smtpwire_stuff(d, p, n, buf));
		p += n;
		len -= n;
	}
}

void
smtpwire_data_end(struct smtpwire_data *d)
{
	char buf[SMTPWIRE_STUFF_END_MAX];

	conn_write(d->conn, buf, smtpwire_stuff_end(d, buf));
}
