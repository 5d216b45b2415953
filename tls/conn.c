/*
 * conn.c - buffered connection I/O over TCP and TLS (see conn.h).
 *
 * Threads: one thread at a time per conn; no shared state.
 *
 * Invariants:
 *  1. The blocking calls flush output before every wait for input, so a
 *     client that pipelines never waits for replies the server already has.
 *  2. CONN_AGAIN from a read is returned only when the socket is empty as
 *     far as we know: no whole line (or, for peek, no octet) is buffered,
 *     GnuTLS holds no decrypted record and no raw record is read ahead.
 *     So a caller may sleep on the descriptor without missing input.
 *  3. `may_read` is only a hint to save a recv() that would fail; a wrong
 *     "false" costs one poll() that returns at once, never a lost octet.
 */
#include "conn.h"
#include "dane.h"
#include "tls.h"
#include "util.h"

#include <fcntl.h>
#include <gnutls/gnutls.h>

#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define CONN_RAWBUF (CONN_INBUF + 64)

struct conn {
	int fd;
	gnutls_session_t tls;    /* NULL until TLS is on */
	struct tls_creds *creds; /* a reference while tls is set */
	int stop_fd;
	bool write_failed;
	bool may_read;     /* a recv() might find data (invariant 3) */
	bool skipping;     /* discarding the rest of an over-long line */
	short want;        /* POLLIN or POLLOUT: what CONN_AGAIN waits for */
	unsigned char *in; /* CONN_INBUF octets, or NULL */
	size_t in_off, in_len; /* unread input is in[in_off..in_len) */
	unsigned char *out;    /* CONN_OUTBUF octets, or NULL */
	size_t out_len;
	uint64_t bytes_in, bytes_out;
	/* TLS records read ahead from the socket (see tls_pull). */
	unsigned char *raw; /* CONN_RAWBUF octets, or NULL */
	size_t raw_off, raw_len;
};

struct conn *
conn_new(int fd)
{
	struct conn *c = xcalloc(1, sizeof(*c));

	c->fd = fd;
	/* Non-blocking: every wait is a poll() or an epoll set. */
	(void)fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
	c->stop_fd = -1;
	c->may_read = true;
	c->want = POLLIN;
	return c;
}

void
conn_free(struct conn *c)
{
	if (c == NULL)
		return;
	if (c->tls != NULL) {
		/* Best effort close_notify; never wait for the peer's. */
		(void)gnutls_bye(c->tls, GNUTLS_SHUT_WR);
		gnutls_deinit(c->tls);
		tls_creds_unref(c->creds);
	}
	close(c->fd);
	free(c->in);
	free(c->out);
	free(c->raw);
	free(c);
}

void
conn_set_stop_fd(struct conn *c, int fd)
{
	c->stop_fd = fd;
}

void
conn_discard_input(struct conn *c)
{
	c->in_off = c->in_len = 0;
	c->skipping = false;
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

short
conn_want(const struct conn *c)
{
	return c->want;
}

void
conn_mark_ready(struct conn *c)
{
	c->may_read = true;
}

int
conn_fd(const struct conn *c)
{
	return c->fd;
}

size_t
conn_out_pending(const struct conn *c)
{
	return c->out_len;
}

/* Octets that TLS has decrypted or read ahead but we have not taken. */
static bool
tls_pending(const struct conn *c)
{
	return c->tls != NULL && (gnutls_record_check_pending(c->tls) > 0 ||
	                             c->raw_off < c->raw_len);
}

bool
conn_in_pending(const struct conn *c)
{
	return c->in_off < c->in_len || tls_pending(c);
}

void
conn_shrink(struct conn *c)
{
	if (c->in != NULL && c->in_off == c->in_len) {
		free(c->in);
		c->in = NULL;
		c->in_off = c->in_len = 0;
	}
	if (c->out != NULL && c->out_len == 0) {
		free(c->out);
		c->out = NULL;
	}
	if (c->raw != NULL && c->raw_off == c->raw_len) {
		free(c->raw);
		c->raw = NULL;
		c->raw_off = c->raw_len = 0;
	}
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
		if (p[0].revents != 0) {
			c->may_read = true;
			return CONN_OK;
		}
	}
}

/*
 * One non-blocking read or write over TCP or TLS.  Returns the octets
 * moved, 0 for end of file (reads), -1 when it would block (c->want says
 * what to wait for), -2 on error.
 */
static ssize_t
io_recv(struct conn *c, void *buf, size_t n)
{
	ssize_t r;

	c->want = POLLIN;
	if (c->tls == NULL) {
		r = recv(c->fd, buf, n, 0);
		if (r >= 0)
			return r;
		if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
			return -1;
		return -2;
	}
	r = gnutls_record_recv(c->tls, buf, n);
	if (r >= 0)
		return r;
	if (r == GNUTLS_E_AGAIN || r == GNUTLS_E_INTERRUPTED) {
		if (gnutls_record_get_direction(c->tls))
			c->want = POLLOUT;
		return -1;
	}
	/* A peer that closes without close_notify has still closed. */
	if (r == GNUTLS_E_PREMATURE_TERMINATION)
		return 0;
	return -2;
}

static ssize_t
io_send(struct conn *c, const void *buf, size_t n)
{
	ssize_t r;

	c->want = POLLOUT;
	if (c->tls == NULL) {
		r = send(c->fd, buf, n, MSG_NOSIGNAL);
		if (r >= 0)
			return r;
		if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
			return -1;
		return -2;
	}
	r = gnutls_record_send(c->tls, buf, n);
	if (r >= 0)
		return r;
	if (r == GNUTLS_E_AGAIN || r == GNUTLS_E_INTERRUPTED)
		return -1;
	return -2;
}

enum conn_status
conn_try_flush(struct conn *c)
{
	size_t off = 0;
	enum conn_status st = CONN_OK;

	if (c->write_failed)
		return CONN_ERROR;
	while (off < c->out_len) {
		ssize_t n = io_send(c, c->out + off, c->out_len - off);

		if (n > 0) {
			off += (size_t)n;
			c->bytes_out += (uint64_t)n;
			/* Replies just went out: the peer has not answered. */
			c->may_read = false;
			continue;
		}
		if (n == -1) {
			/* TLS wants the same octets again after this. */
			st = CONN_AGAIN;
			break;
		}
		c->write_failed = true;
		c->out_len = 0;
		return CONN_ERROR;
	}
	if (off > 0) {
		memmove(c->out, c->out + off, c->out_len - off);
		c->out_len -= off;
	}
	return st;
}

enum conn_status
conn_flush(struct conn *c, int64_t deadline)
{
	enum conn_status st;

	while ((st = conn_try_flush(c)) == CONN_AGAIN) {
		st = wait_fd(c, c->want, deadline, false);
		if (st != CONN_OK) {
			c->write_failed = true;
			return st;
		}
	}
	return st;
}

void
conn_write(struct conn *c, const void *data, size_t len)
{
	const unsigned char *p = data;

	if (c->out == NULL)
		c->out = xmalloc(CONN_OUTBUF);
	while (len > 0) {
		size_t n = CONN_OUTBUF - c->out_len;

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

/*
 * Read what has arrived into the input buffer, without waiting: CONN_OK
 * when octets were added, CONN_AGAIN, CONN_EOF or CONN_ERROR.  The caller
 * has room (the buffer is never full when it asks).
 */
static enum conn_status
read_some(struct conn *c)
{
	if (c->in == NULL)
		c->in = xmalloc(CONN_INBUF);
	if (c->in_off > 0) {
		memmove(c->in, c->in + c->in_off, c->in_len - c->in_off);
		c->in_len -= c->in_off;
		c->in_off = 0;
	}
	if (!c->may_read && !tls_pending(c)) {
		c->want = POLLIN;
		return CONN_AGAIN;
	}
	for (;;) {
		ssize_t n =
		    io_recv(c, c->in + c->in_len, CONN_INBUF - c->in_len);

		if (n > 0) {
			c->in_len += (size_t)n;
			c->bytes_in += (uint64_t)n;
			return CONN_OK;
		}
		if (n == 0)
			return CONN_EOF;
		if (n == -2)
			return CONN_ERROR;
		/* TLS may have used a record of its own (a TLS 1.3 session
		 * ticket) while more is already buffered: read on. */
		if (tls_pending(c))
			continue;
		c->may_read = false;
		return CONN_AGAIN;
	}
}

/* Copy the line of `take` octets at the read position into buf. */
static void
take_line(struct conn *c, size_t take, char *buf, size_t max, size_t *len,
    bool *too_long, bool *bare_lf)
{
	const unsigned char *start = c->in + c->in_off;
	size_t got;

	c->in_off += take;
	if (c->skipping || take > max - 1) {
		/* Over-long: buf keeps (or got, at skipping's start) the
		 * first max - 1 octets. */
		if (!c->skipping)
			memcpy(buf, start, max - 1);
		c->skipping = false;
		buf[max - 1] = '\0';
		*len = max - 1;
		*too_long = true;
		return;
	}
	memcpy(buf, start, take);
	got = take - 1; /* LF */
	if (got > 0 && buf[got - 1] == '\r')
		got--;
	else
		*bare_lf = true;
	buf[got] = '\0';
	*len = got;
}

enum conn_status
conn_try_line(struct conn *c, char *buf, size_t max, size_t *len,
    bool *too_long, bool *bare_lf)
{
	enum conn_status st;

	*too_long = false;
	*bare_lf = false;
	for (;;) {
		const unsigned char *start = c->in ? c->in + c->in_off : NULL;
		size_t avail = c->in_len - c->in_off;
		const unsigned char *lf =
		    avail > 0 ? memchr(start, '\n', avail) : NULL;

		if (lf != NULL) {
			take_line(c, (size_t)(lf - start) + 1, buf, max, len,
			    too_long, bare_lf);
			return CONN_OK;
		}
		/* No line end and more than fits: keep the start, drop
		 * the rest until the line ends. */
		if (!c->skipping && avail >= max - 1) {
			memcpy(buf, start, max - 1);
			c->skipping = true;
		}
		if (c->skipping)
			c->in_off = c->in_len;
		st = read_some(c);
		if (st != CONN_OK)
			return st;
	}
}

/*
 * A blocking read found no input: flush what is queued (invariant 1), or
 * else wait for the socket, until `deadline`.
 */
static enum conn_status
block(struct conn *c, int64_t deadline)
{
	if (c->out_len > 0)
		return conn_flush(c, deadline);
	return wait_fd(c, c->want, deadline, true);
}

enum conn_status
conn_read_line(struct conn *c, char *buf, size_t max, size_t *len,
    bool *too_long, bool *bare_lf, int64_t deadline)
{
	enum conn_status st;

	while ((st = conn_try_line(c, buf, max, len, too_long, bare_lf)) ==
	       CONN_AGAIN)
		if ((st = block(c, deadline)) != CONN_OK)
			return st;
	return st;
}

enum conn_status
conn_try_peek(struct conn *c, const char **p, size_t *n)
{
	enum conn_status st;

	if (c->in_off == c->in_len) {
		st = read_some(c);
		if (st != CONN_OK)
			return st;
	}
	*p = (const char *)c->in + c->in_off;
	*n = c->in_len - c->in_off;
	return CONN_OK;
}

enum conn_status
conn_peek(struct conn *c, const char **p, size_t *n, int64_t deadline)
{
	enum conn_status st;

	while ((st = conn_try_peek(c, p, n)) == CONN_AGAIN)
		if ((st = block(c, deadline)) != CONN_OK)
			return st;
	return st;
}

void
conn_consume(struct conn *c, size_t n)
{
	if (n > c->in_len - c->in_off)
		n = c->in_len - c->in_off;
	c->in_off += n;
}

/*
 * GnuTLS's transport read: one recv() fills a buffer with as many records
 * as have arrived, instead of the two reads (header, then body) per record
 * that GnuTLS would otherwise make.
 */
static ssize_t
tls_pull(gnutls_transport_ptr_t ptr, void *data, size_t len)
{
	struct conn *c = ptr;
	size_t n;

	if (c->raw_off == c->raw_len) {
		ssize_t r;

		if (c->raw == NULL)
			c->raw = xmalloc(CONN_RAWBUF);
		r = recv(c->fd, c->raw, CONN_RAWBUF, 0);
		if (r < 0) {
			gnutls_transport_set_errno(c->tls, errno);
			return -1;
		}
		if (r == 0)
			return 0;
		c->raw_off = 0;
		c->raw_len = (size_t)r;
	}
	n = c->raw_len - c->raw_off;
	if (n > len)
		n = len;
	memcpy(data, c->raw + c->raw_off, n);
	c->raw_off += n;
	return (ssize_t)n;
}

static ssize_t
tls_push(gnutls_transport_ptr_t ptr, const void *data, size_t len)
{
	struct conn *c = ptr;
	ssize_t r = send(c->fd, data, len, MSG_NOSIGNAL);

	if (r < 0)
		gnutls_transport_set_errno(c->tls, errno);
	return r;
}

/* Is a record readable within `ms` milliseconds?  (GnuTLS asks.) */
static int
tls_pull_timeout(gnutls_transport_ptr_t ptr, unsigned ms)
{
	struct conn *c = ptr;
	struct pollfd p = {c->fd, POLLIN, 0};

	if (c->raw_off < c->raw_len)
		return 1;
	return poll(&p, 1, (int)ms);
}

/* Set up c->tls on the conn's socket with our buffered transport. */
static int
tls_setup(struct conn *c, struct tls_creds *creds, unsigned flags, char *why)
{
	int rc = gnutls_init(&c->tls, flags | GNUTLS_NONBLOCK);

	if (rc != GNUTLS_E_SUCCESS) {
		c->tls = NULL;
		why_set(why, "%s", gnutls_strerror(rc));
		return -1;
	}
	c->creds = creds;
	tls_creds_ref(creds);
	gnutls_priority_set(c->tls, tls_creds_priority(creds));
	gnutls_credentials_set(
	    c->tls, GNUTLS_CRD_CERTIFICATE, tls_creds_x509(creds));
	gnutls_transport_set_ptr(c->tls, c);
	gnutls_transport_set_pull_function(c->tls, tls_pull);
	gnutls_transport_set_push_function(c->tls, tls_push);
	gnutls_transport_set_pull_timeout_function(c->tls, tls_pull_timeout);
	return 0;
}

enum conn_status
conn_tls_handshake(struct conn *c, char *why)
{
	int rc, tries;

	/* A warning alert is not fatal: ask again (a few times at most). */
	for (tries = 0; tries < 8; tries++) {
		rc = gnutls_handshake(c->tls);
		if (rc == GNUTLS_E_SUCCESS)
			return CONN_OK;
		if (rc == GNUTLS_E_AGAIN || rc == GNUTLS_E_INTERRUPTED) {
			c->want = gnutls_record_get_direction(c->tls) ? POLLOUT
			                                              : POLLIN;
			/* Records read ahead are there to take now. */
			if (c->want == POLLIN && c->raw_off < c->raw_len)
				continue;
			return CONN_AGAIN;
		}
		if (gnutls_error_is_fatal(rc))
			break;
	}
	why_set(why, "%s", gnutls_strerror(rc));
	/* Tell the peer why (protocol_version, ...); best effort, the socket
	 * is non-blocking. */
	(void)gnutls_alert_send_appropriate(c->tls, rc);
	return CONN_ERROR;
}

/* The handshake, waiting until `deadline`. */
static enum conn_status
tls_handshake_wait(struct conn *c, int64_t deadline, char *why)
{
	enum conn_status st;

	while ((st = conn_tls_handshake(c, why)) == CONN_AGAIN) {
		st = wait_fd(c, c->want, deadline, true);
		if (st != CONN_OK) {
			why_set(why, "%s",
			    st == CONN_TIMEOUT   ? "timeout"
			    : st == CONN_STOPPED ? "shutting down"
			                         : "connection lost");
			return st;
		}
	}
	return st;
}

enum conn_status
conn_tls_server(struct conn *c, struct tls_creds *creds, char *why)
{
	if (tls_setup(c, creds, GNUTLS_SERVER, why) != 0)
		return CONN_ERROR;
	gnutls_certificate_server_set_request(c->tls, GNUTLS_CERT_IGNORE);
	return CONN_OK;
}

enum conn_status
conn_tls_connect(struct conn *c, struct tls_creds *creds, const char *name,
    bool verify, int64_t deadline, char *why)
{
	if (tls_setup(c, creds, GNUTLS_CLIENT, why) != 0)
		return CONN_ERROR;
	if (name != NULL && name[0] != '\0')
		gnutls_server_name_set(
		    c->tls, GNUTLS_NAME_DNS, name, strlen(name));
	if (verify)
		gnutls_session_set_verify_cert(c->tls, name, 0);
	return tls_handshake_wait(c, deadline, why);
}

int
conn_tls_dane(const struct conn *c, const struct dns_tlsa *recs, int n,
    const char *const *names, int nnames, char *what, size_t wlen, char *why)
{
	struct dane_cert chain[16];
	const gnutls_datum_t *peers;
	unsigned np = 0, i;

	if (c->tls == NULL) {
		why_set(why, "no TLS session");
		return -1;
	}
	peers = gnutls_certificate_get_peers(c->tls, &np);
	if (peers == NULL || np == 0) {
		why_set(why, "the server sent no certificate");
		return -1;
	}
	if (np > sizeof(chain) / sizeof(chain[0]))
		np = sizeof(chain) / sizeof(chain[0]);
	for (i = 0; i < np; i++) {
		chain[i].der = peers[i].data;
		chain[i].len = peers[i].size;
	}
	return dane_verify(
	    chain, (int)np, recs, n, names, nnames, what, wlen, why);
}

const char *
conn_tls_verify_result(const struct conn *c)
{
	unsigned st =
	    c->tls != NULL ? gnutls_session_get_verify_cert_status(c->tls) : 0;

	if (st & GNUTLS_CERT_UNEXPECTED_OWNER)
		return "certificate-host-mismatch";
	if (st & GNUTLS_CERT_EXPIRED)
		return "certificate-expired";
	if (st & (GNUTLS_CERT_SIGNER_NOT_FOUND | GNUTLS_CERT_SIGNER_NOT_CA |
	             GNUTLS_CERT_INVALID))
		return "certificate-not-trusted";
	return "validation-failure";
}

bool
conn_tls_active(const struct conn *c)
{
	return c->tls != NULL;
}

void
conn_tls_info(const struct conn *c, char *version, size_t vlen, char *cipher,
    size_t clen, int *bits)
{
	const char *v, *cs;

	*bits = 0;
	if (c->tls == NULL) {
		snprintf(version, vlen, "%s", "");
		snprintf(cipher, clen, "%s", "");
		return;
	}
	v = gnutls_protocol_get_name(gnutls_protocol_get_version(c->tls));
	cs = gnutls_ciphersuite_get(c->tls);
	snprintf(version, vlen, "%s", v ? v : "unknown");
	snprintf(cipher, clen, "%s", cs ? cs : "unknown");
	*bits = (int)gnutls_cipher_get_key_size(gnutls_cipher_get(c->tls)) * 8;
}
