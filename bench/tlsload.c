/*
 * tlsload.c - a small SMTP load generator with STARTTLS, for make bench
 * (smtp-source has no TLS).  Not part of sluice.
 *
 *   tlsload -s SESSIONS -m MESSAGES [-t] [-p] HOST PORT
 *     -t  STARTTLS on every connection (certificates are not verified:
 *         this measures cost, not trust)
 *     -p  persistent: each session sends its share of messages over one
 *         connection; otherwise one message per connection
 *
 * Prints "messages=N seconds=S msgs_per_s=R handshakes=H handshakes_per_s=R".
 * Threads: one per session; each owns its socket and TLS session.
 */
#include <arpa/inet.h>
#include <gnutls/gnutls.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static const char *host;
static int port, use_tls, persistent;
static gnutls_certificate_credentials_t xcred;
static atomic_long handshakes, sent;

struct client {
	int fd;
	gnutls_session_t tls;
	char buf[8192];
	size_t len;
};

static void
die(const char *what)
{
	fprintf(stderr, "tlsload: %s\n", what);
	exit(1);
}

static void
c_write(struct client *c, const char *s, size_t n)
{
	while (n > 0) {
		ssize_t w = c->tls ? gnutls_record_send(c->tls, s, n)
		                   : send(c->fd, s, n, MSG_NOSIGNAL);

		if (w <= 0)
			die("write failed");
		s += w;
		n -= (size_t)w;
	}
}

/* Read one reply (all its lines); returns its code. */
static int
c_reply(struct client *c)
{
	for (;;) {
		char *nl;

		while ((nl = memchr(c->buf, '\n', c->len)) != NULL) {
			size_t linelen = (size_t)(nl - c->buf) + 1;
			int code = atoi(c->buf);
			int last = linelen > 3 && c->buf[3] != '-';

			memmove(c->buf, nl + 1, c->len - linelen);
			c->len -= linelen;
			if (last)
				return code;
		}
		ssize_t r = c->tls ? gnutls_record_recv(c->tls, c->buf + c->len,
		                         sizeof(c->buf) - c->len)
		                   : recv(c->fd, c->buf + c->len,
		                         sizeof(c->buf) - c->len, 0);
		if (r <= 0)
			die("read failed");
		c->len += (size_t)r;
	}
}

static void
expect(struct client *c, const char *cmd, int want)
{
	int code;

	if (cmd != NULL)
		c_write(c, cmd, strlen(cmd));
	code = c_reply(c);
	if (code != want) {
		fprintf(stderr, "tlsload: %s-> %d, wanted %d\n",
		    cmd ? cmd : "greeting ", code, want);
		exit(1);
	}
}

static void
c_open(struct client *c)
{
	struct sockaddr_in sin;
	int one = 1;

	memset(c, 0, sizeof(*c));
	c->fd = socket(AF_INET, SOCK_STREAM, 0);
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_port = htons((uint16_t)port);
	inet_pton(AF_INET, host, &sin.sin_addr);
	if (connect(c->fd, (struct sockaddr *)&sin, sizeof(sin)) != 0)
		die("connect failed");
	setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	expect(c, NULL, 220);
	expect(c, "EHLO load.test\r\n", 250);
	if (!use_tls)
		return;
	expect(c, "STARTTLS\r\n", 220);
	gnutls_init(&c->tls, GNUTLS_CLIENT);
	gnutls_set_default_priority(c->tls);
	gnutls_credentials_set(c->tls, GNUTLS_CRD_CERTIFICATE, xcred);
	gnutls_transport_set_int(c->tls, c->fd);
	if (gnutls_handshake(c->tls) < 0)
		die("handshake failed");
	atomic_fetch_add(&handshakes, 1);
	expect(c, "EHLO load.test\r\n", 250);
}

static void
c_close(struct client *c)
{
	expect(c, "QUIT\r\n", 221);
	if (c->tls) {
		gnutls_bye(c->tls, GNUTLS_SHUT_WR);
		gnutls_deinit(c->tls);
	}
	close(c->fd);
}

static void
c_message(struct client *c)
{
	static const char body[] =
	    "From: load@client.test\r\nTo: rcpt@example.net\r\n"
	    "Subject: load\r\n\r\n";
	char msg[2048];
	size_t n = sizeof(body) - 1;
	int i;

	expect(c, "MAIL FROM:<load@client.test>\r\n", 250);
	expect(c, "RCPT TO:<rcpt@example.net>\r\n", 250);
	expect(c, "DATA\r\n", 354);
	/* About 1 KB of text, as smtp-source -l 1024, in one write. */
	memcpy(msg, body, n);
	for (i = 0; i < 12; i++) {
		memset(msg + n, 'x', 76);
		memcpy(msg + n + 76, "\r\n", 2);
		n += 78;
	}
	memcpy(msg + n, ".\r\n", 3);
	c_write(c, msg, n + 3);
	expect(c, NULL, 250);
	atomic_fetch_add(&sent, 1);
}

static void *
session(void *arg)
{
	long n = (long)(intptr_t)arg, i;
	struct client c;

	if (persistent) {
		c_open(&c);
		for (i = 0; i < n; i++)
			c_message(&c);
		c_close(&c);
	} else {
		for (i = 0; i < n; i++) {
			c_open(&c);
			c_message(&c);
			c_close(&c);
		}
	}
	return NULL;
}

int
main(int argc, char **argv)
{
	int sessions = 20, opt, i;
	long messages = 1000;
	pthread_t *t;
	struct timespec t0, t1;
	double secs;

	while ((opt = getopt(argc, argv, "s:m:tp")) != -1) {
		switch (opt) {
		case 's':
			sessions = atoi(optarg);
			break;
		case 'm':
			messages = atol(optarg);
			break;
		case 't':
			use_tls = 1;
			break;
		case 'p':
			persistent = 1;
			break;
		default:
			die("usage: tlsload -s N -m N [-t] [-p] HOST PORT");
		}
	}
	if (argc - optind != 2 || sessions < 1)
		die("usage: tlsload -s N -m N [-t] [-p] HOST PORT");
	host = argv[optind];
	port = atoi(argv[optind + 1]);
	gnutls_certificate_allocate_credentials(&xcred);
	t = calloc((size_t)sessions, sizeof(*t));
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (i = 0; i < sessions; i++) {
		long share = messages / sessions + (i < messages % sessions);

		pthread_create(&t[i], NULL, session, (void *)(intptr_t)share);
	}
	for (i = 0; i < sessions; i++)
		pthread_join(t[i], NULL);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	secs = (double)(t1.tv_sec - t0.tv_sec) +
	       (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
	printf("messages=%ld seconds=%.3f msgs_per_s=%.0f handshakes=%ld "
	       "handshakes_per_s=%.0f\n",
	    atomic_load(&sent), secs, (double)atomic_load(&sent) / secs,
	    atomic_load(&handshakes), (double)atomic_load(&handshakes) / secs);
	free(t);
	gnutls_certificate_free_credentials(xcred);
	return 0;
}
