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

#include "envelope.h"

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
	char text[SMTP_REPLY_MAX];
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
 * Read one reply, all its lines, before `deadline`, each line checked by
 * smtpwire_reply_line (below).  `each`, when not NULL, is called with the
 * text after the code of every line but the first (EHLO keywords, RFC
 * 5321 section 4.1.1.1).  On anything but SMTPWIRE_OK, r->code is 0.
 */
enum smtpwire_status smtpwire_read_reply(struct conn *c, int64_t deadline,
    struct smtp_reply *r, void (*each)(void *arg, const char *line), void *arg);

/* Where a reply being read is; zero it before its first line. */
struct smtpwire_reply_state {
	int nlines;
	int code;
};

/*
 * The pure step of smtpwire_read_reply: one line of a reply as read,
 * `len` octets without its line ending (then a NUL), `cut` when it was longer
 * than SMTPWIRE_LINE_MAX and only its start is here.  A line is "NNN",
 * "NNN text" or "NNN-text" where NNN is a reply code (RFC 5321 section
 * 4.2: 2 to 5, then 0 to 5, then 0 to 9), the same code on every line of
 * a multi-line reply (section 4.2.1); at most SMTPWIRE_LINES_MAX lines, no
 * NUL octet.  Returns 1 when the line ends the reply (r->code set), 0 when
 * more lines follow, -1 when the reply is malformed (r->code 0, r->text the
 * offending line, sanitized).  r->text is set from the first line.  `each`
 * gets the text of the lines after the first, except a cut one (a cut
 * keyword line would be misread).
 */
int smtpwire_reply_line(struct smtpwire_reply_state *st, struct smtp_reply *r,
    const char *line, size_t len, bool cut,
    void (*each)(void *arg, const char *line), void *arg);

/*
 * What an EHLO reply advertised (RFC 5321 section 4.1.1.1), gathered by
 * smtpwire_ehlo_keyword from its lines after the first.  Zero it first.
 */
struct smtp_ehlo {
	bool pipelining, eightbit, smtputf8, dsn, chunking, binarymime,
	    starttls, auth_plain, auth_login, requiretls;
	bool size;            /* SIZE advertised (RFC 1870) */
	long long size_limit; /* its value; 0: none given */
};

/*
 * One EHLO keyword line ("SIZE 10240000", "AUTH PLAIN LOGIN"): record
 * what it advertises in `e`.  Keywords are case-insensitive; trailing
 * spaces are ignored.  PIPELINING, 8BITMIME, SMTPUTF8, DSN, CHUNKING,
 * BINARYMIME, STARTTLS and REQUIRETLS take no parameter; SIZE takes none or 1
 * to 20 digits that fit a long long (RFC 1870); AUTH (or the old "AUTH=") lists
 * mechanisms.  A line that is none of these, or has a malformed parameter
 * ("SIZE -1", "SIZE 1e9", "PIPELINING now"), is ignored: the extension
 * counts as not advertised.
 */
void smtpwire_ehlo_keyword(struct smtp_ehlo *e, const char *line);

/* smtpwire_ehlo_keyword as an `each` callback: `arg` is the smtp_ehlo. */
void smtpwire_ehlo_each(void *arg, const char *line);

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
 * message in pieces of any size, end.  Every line break of the message,
 * CRLF or a bare LF or bare CR, is sent as CRLF (section 2.3.8: a client
 * MUST NOT send a bare CR or LF; Postfix also sends a bare LF as CRLF), so
 * that a strict receiver, which finds the end of data only after a CRLF,
 * always finds it.  A '.' at the start of a line is doubled; end adds
 * CRLF when the message does not end with a line break, then the
 * end-of-data line ".".  The octets are queued on the conn (conn_write);
 * the reply read after end flushes them.
 *
 * The same, pure: smtpwire_stuff_init, then smtpwire_stuff writes the
 * stuffed form of `n` octets into `out` (room for SMTPWIRE_STUFF_OUT_MAX(n)
 * octets: a held CR from the last call and a line break or a doubled dot
 * per octet) and returns its length; smtpwire_stuff_end writes the end
 * (at most SMTPWIRE_STUFF_END_MAX octets).
 *
 * What the receiver decodes is the message with every bare CR and bare LF
 * replaced by CRLF, and CRLF appended when the message is not empty and
 * does not end with a line break.
 */
struct smtpwire_data {
	struct conn *conn;
	bool sol; /* at the start of a line */
	bool cr;  /* a CR held until the next octet says if LF follows */
};

#define SMTPWIRE_STUFF_OUT_MAX(n) (2 * (size_t)(n) + 2)
#define SMTPWIRE_STUFF_END_MAX 5

void smtpwire_data_begin(struct smtpwire_data *d, struct conn *c);
void smtpwire_data_put(struct smtpwire_data *d, const void *p, size_t len);
void smtpwire_data_end(struct smtpwire_data *d);

void smtpwire_stuff_init(struct smtpwire_data *d);
size_t smtpwire_stuff(
    struct smtpwire_data *d, const char *in, size_t n, char *out);
size_t smtpwire_stuff_end(struct smtpwire_data *d, char *out);

#endif
