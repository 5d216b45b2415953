/*
 * conn.c - buffered session I/O with deadlines (see conn.h).
 *
 * Threads: one owner thread per conn; no shared state.
 * Invariant: output is flushed before every blocking read, so a client
 * that pipelines never waits for replies the server already has.
 */
#include "conn.h"
#include "util.h"

#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

struct conn {
	int fd;
	int stop_fd;
	bool write_failed;
	unsigned char in[CONN_INBUF];
	size_t in_off, in_len; /* unread input is in[in_off..in_len) */
	unsigned char out[CONN_OUTBUF];
	size_t out_len;
	int64_t out_deadline; /* for flushes forced by a full buffer */
	uint64_t bytes_in, bytes_out;
};

struct conn *
conn_new(int fd)
{
	struct conn *c = xmalloc(sizeof(*c));

	c->fd = fd;
	c->stop_fd = -1;
	c->write_failed = false;
	c->in_off = c->in_len = 0;
	c->out_len = 0;
	c->out_deadline = 0;
	c->bytes_in = c->bytes_out = 0;
	return c;
}

void
conn_free(struct conn *c)
{
	if (c == NULL)
		return;
	close(c->fd);
	free(c);
}

int
conn_fd(const struct conn *c)
{
	return c->fd;
}

void
conn_set_stop_fd(struct conn *c, int fd)
{
	c->stop_fd = fd;
}

size_t
conn_pending(const struct conn *c)
{
	return c->in_len - c->in_off;
}

void
conn_discard_input(struct conn *c)
{
	c->in_off = c->in_len = 0;
}

uint64_t
conn_bytes_in(const struct conn *c)
{
	return c->bytes_in;
}

uint64_t
conn_bytes_out(const struct conn *c)
{
	return c->bytes_out;
}

/* Wait until `fd` is ready for `events` or the deadline passes. */
static enum conn_status
wait_fd(struct conn *c, short events, int64_t deadline, bool stoppable)
{
	struct pollfd p[2];
	int n = 1, rc;

	p[0].fd = c->fd;
	p[0].events = events;
	if (stoppable && c->stop_fd >= 0) {
		p[1].fd = c->stop_fd;
		p[1].events = POLLIN;
		n = 2;
	}
	for (;;) {
		int64_t left = deadline - now_ms();

		if (left <= 0)
			return CONN_TIMEOUT;
		rc = poll(p, (nfds_t)n, left > 60000 ? 60000 : (int)left);
		if (rc < 0 && errno == EINTR)
			continue;
		if (rc < 0)
			return CONN_ERROR;
		if (rc == 0)
			continue;
		if (n == 2 && (p[1].revents & POLLIN))
			return CONN_STOPPED;
		if (p[0].revents != 0)
			return CONN_OK;
	}
}

enum conn_status
conn_flush(struct conn *c, int64_t deadline)
{
	size_t off = 0;
	enum conn_status st;

	if (c->write_failed)
		return CONN_ERROR;
	while (off < c->out_len) {
		ssize_t n = send(c->fd, c->out + off, c->out_len - off,
		    MSG_NOSIGNAL | MSG_DONTWAIT);

		if (n > 0) {
			off += (size_t)n;
			c->bytes_out += (uint64_t)n;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			st = wait_fd(c, POLLOUT, deadline, false);
			if (st != CONN_OK) {
				c->write_failed = true;
				return st;
			}
			continue;
		}
		c->write_failed = true;
		c->out_len = 0;
		return CONN_ERROR;
	}
	c->out_len = 0;
	return CONN_OK;
}

void
conn_write(struct conn *c, const void *data, size_t len)
{
	const unsigned char *p = data;

	while (len > 0) {
		size_t n = sizeof(c->out) - c->out_len;

		if (n == 0) {
			/* A full buffer: flush with a generous deadline. */
			if (conn_flush(c, now_ms() + 60000) != CONN_OK) {
				c->out_len = 0;
				return;
			}
			continue;
		}
		if (n > len)
			n = len;
		memcpy(c->out + c->out_len, p, n);
		c->out_len += n;
		p += n;
		len -= n;
	}
}

void
conn_printf(struct conn *c, const char *fmt, ...)
{
	char buf[1024];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n >= sizeof(buf))
		n = sizeof(buf) - 1;
	conn_write(c, buf, (size_t)n);
}

/* Refill the input buffer: flush output first, then read what arrives. */
static enum conn_status
fill(struct conn *c, int64_t deadline)
{
	enum conn_status st;
	bool replied = c->out_len > 0;
	ssize_t n;

	if (replied && (st = conn_flush(c, deadline)) != CONN_OK)
		return st;
	if (c->in_off > 0) {
		memmove(c->in, c->in + c->in_off, c->in_len - c->in_off);
		c->in_len -= c->in_off;
		c->in_off = 0;
	}
	/*
	 * Having just replied, the peer has usually not answered yet: wait
	 * first rather than try a read bound to fail (one system call less
	 * per command).
	 */
	if (replied && (st = wait_fd(c, POLLIN, deadline, true)) != CONN_OK)
		return st;
	for (;;) {
		n = recv(c->fd, c->in + c->in_len, sizeof(c->in) - c->in_len,
		    MSG_DONTWAIT);
		if (n > 0) {
			c->in_len += (size_t)n;
			c->bytes_in += (uint64_t)n;
			return CONN_OK;
		}
		if (n == 0)
			return CONN_EOF;
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN && errno != EWOULDBLOCK)
			return CONN_ERROR;
		st = wait_fd(c, POLLIN, deadline, true);
		if (st != CONN_OK)
			return st;
	}
}

enum conn_status
conn_read_line(struct conn *c, char *buf, size_t max, size_t *len,
    bool *too_long, bool *bare_lf, int64_t deadline)
{
	size_t got = 0;
	enum conn_status st;

	*too_long = false;
	*bare_lf = false;
	for (;;) {
		unsigned char *start = c->in + c->in_off;
		size_t avail = c->in_len - c->in_off;
		unsigned char *lf = memchr(start, '\n', avail);
		size_t take = lf ? (size_t)(lf - start) + 1 : avail;

		/* Copy what fits (max - 1 leaves room for the NUL). */
		if (got + take <= max - 1) {
			memcpy(buf + got, start, take);
			got += take;
		} else {
			if (got < max - 1) {
				memcpy(buf + got, start, max - 1 - got);
				got = max - 1;
			}
			*too_long = true;
		}
		c->in_off += take;
		if (lf != NULL)
			break;
		st = fill(c, deadline);
		if (st != CONN_OK)
			return st;
	}
	/* Strip the line ending from what we kept. */
	if (!*too_long) {
		got--; /* LF */
		if (got > 0 && buf[got - 1] == '\r')
			got--;
		else
			*bare_lf = true;
	}
	buf[got] = '\0';
	*len = got;
	return CONN_OK;
}

enum conn_status
conn_read(struct conn *c, void *buf, size_t max, size_t *n, int64_t deadline)
{
	enum conn_status st;
	size_t avail;

	if (c->in_off == c->in_len) {
		st = fill(c, deadline);
		if (st != CONN_OK)
			return st;
	}
	avail = c->in_len - c->in_off;
	if (avail > max)
		avail = max;
	memcpy(buf, c->in + c->in_off, avail);
	c->in_off += avail;
	*n = avail;
	return CONN_OK;
}

enum conn_status
conn_peek(struct conn *c, const char **p, size_t *n, int64_t deadline)
{
	enum conn_status st;

	if (c->in_off == c->in_len) {
		st = fill(c, deadline);
		if (st != CONN_OK)
			return st;
	}
	*p = (const char *)c->in + c->in_off;
	*n = c->in_len - c->in_off;
	return CONN_OK;
}

void
conn_consume(struct conn *c, size_t n)
{
	if (n > c->in_len - c->in_off)
		n = c->in_len - c->in_off;
	c->in_off += n;
}
