/*
 * smtpwire.c - the client side of the SMTP wire (see smtpwire.h).
 *
 * Threads: reentrant, no shared state.
 * Invariant: the remote server is not trusted: every reply line is bounded
 * (SMTPWIRE_LINE_MAX, SMTPWIRE_LINES_MAX) and its text is only copied,
 * sanitized, into the caller's fixed buffer.
 */
#include "smtpwire.h"
#include "conn.h"
#include "log.h"
#include "util.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
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

/* A reply line: "NNN", "NNN text" or "NNN-text" with N from 2 to 5. */
static bool
reply_line_ok(const char *line, size_t len)
{
	return len >= 3 && line[0] >= '2' && line[0] <= '5' &&
	       (len == 3 || line[3] == ' ' || line[3] == '-');
}

enum smtpwire_status
smtpwire_read_reply(struct conn *c, int64_t deadline, struct smtp_reply *r,
    void (*each)(void *arg, const char *line), void *arg)
{
	char line[SMTPWIRE_LINE_MAX];
	int nlines = 0, code = 0;

	r->code = 0;
	r->text[0] = '\0';
	for (;;) {
		bool too_long, bare_lf;
		size_t len;
		enum conn_status st = conn_read_line(
		    c, line, sizeof(line), &len, &too_long, &bare_lf, deadline);

		if (st != CONN_OK)
			return st == CONN_TIMEOUT ? SMTPWIRE_TIMEOUT
			                          : SMTPWIRE_LOST;
		if (!reply_line_ok(line, len) ||
		    ++nlines > SMTPWIRE_LINES_MAX) {
			log_sanitize(r->text, sizeof(r->text), line);
			return SMTPWIRE_MALFORMED;
		}
		if (nlines == 1) {
			code = atoi(line);
			log_sanitize(r->text, sizeof(r->text), line);
			/* "250-a" and "250 a" alike: the text is one line. */
			if (strlen(r->text) > 3)
				r->text[3] = ' ';
		} else if (each != NULL && len > 4) {
			each(arg, line + 4);
		}
		if (len == 3 || line[3] == ' ') {
			r->code = code; /* only a whole reply has a code */
			return SMTPWIRE_OK;
		}
	}
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
smtpwire_data_begin(struct smtpwire_data *d, struct conn *c)
{
	d->conn = c;
	d->sol = true;
	d->last = '\n';
}

void
smtpwire_data_put(struct smtpwire_data *d, const void *data, size_t len)
{
	const char *p = data, *end = p + len;

	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		const char *stop = nl ? nl + 1 : end;

		if (d->sol && *p == '.')
			conn_write(d->conn, ".", 1);
		conn_write(d->conn, p, (size_t)(stop - p));
		d->last = stop[-1];
		d->sol = nl != NULL;
		p = stop;
	}
}

void
smtpwire_data_end(struct smtpwire_data *d)
{
	if (d->last != '\n')
		conn_write(d->conn, "\r\n", 2);
	conn_write(d->conn, ".\r\n", 3);
}
