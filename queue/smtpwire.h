/*
 * smtpwire.h - the client side of the SMTP wire, shared by the delivery
 * client (smtpc.c), `sluice sendmail` and `sluice health`: connect with a
 * deadline, read one reply (all its lines, RFC 5321 section 4.2.1), send
 * one command and read its reply, QUIT, and write message data with
 * dot-stuffing (RFC 5321 section 4.5.2).
 *
 * The functions only report what happened (enum smtpwire_status); each
 * caller words its own reasons ("4.4.2 HOST: timeout waiting for reply",
 * "no greeting within 2 s", ...).
 *
 * Threads: reentrant; a conn is used by the one thread that owns it.
 */
#ifndef SLUICE_SMTPWIRE_H
#define SLUICE_SMTPWIRE_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

struct conn;

/* Bounds on what a server may send as one reply (invariant: the remote
 * server is not trusted). */
#define SMTPWIRE_LINE_MAX 1024
#define SMTPWIRE_LINES_MAX 100

/* A reply, as a plain record. */
struct smtp_reply {
	int code; /* 250; 0 when no reply was read */
	/* The first line, sanitized, with a space after the code even when
	 * more lines follow: "250 mx.example.net" for "250-mx.example.net". */
	char text[512];
};

enum smtpwire_status {
	SMTPWIRE_OK,        /* a whole reply was read */
	SMTPWIRE_TIMEOUT,   /* the deadline passed first */
	SMTPWIRE_LOST,      /* closed, an I/O error, or the stop descriptor */
	SMTPWIRE_MALFORMED, /* not a reply; text holds the offending line */
	SMTPWIRE_TOO_LONG,  /* smtpwire_command: the command did not fit */
};

/*
 * Connect a TCP socket to `ss` before `deadline` (a now_ms() value): the
 * non-blocking, close-on-exec socket with TCP_NODELAY, or -1 with errno
 * set (ETIMEDOUT when the deadline passed).
 */
int smtpwire_connect(
    const struct sockaddr_storage *ss, socklen_t len, int64_t deadline);

/*
 * Read one reply, all its lines, before `deadline`.  Lines must start
 * with a code 2yz to 5yz followed by nothing, ' ' or '-'; at most
 * SMTPWIRE_LINES_MAX lines of at most SMTPWIRE_LINE_MAX octets (longer
 * ones are cut).  `each`, when not NULL, is called with the text after
 * the code of every line but the first (EHLO keywords, RFC 5321 section
 * 4.1.1.1).  On anything but SMTPWIRE_OK, r->code is 0.
 */
enum smtpwire_status smtpwire_read_reply(struct conn *c, int64_t deadline,
    struct smtp_reply *r, void (*each)(void *arg, const char *line), void *arg);

/*
 * Format one command, append CRLF, write it and read its reply as
 * smtpwire_read_reply does.  SMTPWIRE_TOO_LONG (nothing sent) when the
 * command with its CRLF exceeds 2048 octets.
 */
enum smtpwire_status smtpwire_command(struct conn *c, int64_t deadline,
    struct smtp_reply *r, void (*each)(void *arg, const char *line), void *arg,
    const char *fmt, ...) __attribute__((format(printf, 6, 7)));
enum smtpwire_status smtpwire_vcommand(struct conn *c, int64_t deadline,
    struct smtp_reply *r, void (*each)(void *arg, const char *line), void *arg,
    const char *fmt, va_list ap) __attribute__((format(printf, 6, 0)));

/*
 * QUIT, best effort, when the outcome is known already: the reply (read
 * before `deadline`) is dropped.  Skip it on a connection that timed out
 * or sent a malformed reply: nothing sensible would answer.
 */
void smtpwire_quit(struct conn *c, int64_t deadline);

/*
 * Message data after "354" (RFC 5321 section 4.5.2): begin, put the
 * message in pieces of any size, end.  A '.' at the start of a line is
 * doubled; end adds CRLF when the message does not end with a line break,
 * then the end-of-data line ".".  The octets are queued on the conn
 * (conn_write); the reply read after end flushes them.
 */
struct smtpwire_data {
	struct conn *conn;
	bool sol;  /* at the start of a line */
	char last; /* the last octet put */
};

void smtpwire_data_begin(struct smtpwire_data *d, struct conn *c);
void smtpwire_data_put(struct smtpwire_data *d, const void *p, size_t len);
void smtpwire_data_end(struct smtpwire_data *d);

#endif
