/*
 * conn.h - the session I/O object: one buffered connection that reads
 * lines and raw octets and writes replies, over plain TCP and TLS alike.
 *
 * Two ways to use it:
 *  - non-blocking (the server's sessions): conn_try_line, conn_try_peek,
 *    conn_try_flush and conn_tls_handshake never wait.  CONN_AGAIN says
 *    that nothing more can be done until the socket is ready for
 *    conn_want(); the caller waits (or parks the session) and calls again.
 *    Input GnuTLS has already decrypted, or records already read ahead, are
 *    always used before CONN_AGAIN is returned: CONN_AGAIN means the socket
 *    itself must become ready.
 *  - blocking with a deadline (the SMTP client, sendmail, health):
 *    conn_read_line, conn_peek, conn_flush, conn_tls_connect.  Before
 *    waiting for input they flush the pending output, so that replies to a
 *    batch of pipelined commands leave in one write (RFC 2920).
 *
 * Buffers are allocated when first needed and released by conn_shrink, so
 * that an idle connection costs only this struct (and TLS state).
 *
 * Threads: a conn is used by one thread at a time (a session's conn moves
 * between worker threads, handed over through the pool's lock).
 */
#ifndef SLUICE_CONN_H
#define SLUICE_CONN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define CONN_INBUF (16 * 1024)
#define CONN_OUTBUF (8 * 1024)

enum conn_status {
	CONN_OK = 1,       /* data or a line was returned */
	CONN_EOF = 0,      /* the peer closed the connection */
	CONN_TIMEOUT = -1, /* the deadline passed */
	CONN_ERROR = -2,   /* I/O error (reset, broken pipe) */
	CONN_STOPPED = -3, /* the stop descriptor became readable */
	CONN_AGAIN = -4,   /* non-blocking calls: wait for conn_want() */
};

struct conn;

/* Take over `fd` (closed by conn_free).  Never fails. */
struct conn *conn_new(int fd);
void conn_free(struct conn *c);

/*
 * While set (>= 0), waits for input also wake up, with CONN_STOPPED, when
 * `fd` becomes readable.  Used to end idle sessions at shutdown.
 */
void conn_set_stop_fd(struct conn *c, int fd);

/*
 * Take one line ending in LF into `buf` (capacity `max`, which bounds the
 * line including its CRLF; max <= CONN_INBUF).  On CONN_OK, `*len` is the
 * line length without the line ending and buf is NUL-terminated (it may
 * hold NUL octets before *len: check them); `*too_long` is set when the
 * line exceeded `max` (its excess was read and discarded, buf holds the
 * start).  `*bare_lf` is set when the line ended in LF without CR.
 * conn_try_line never waits: CONN_AGAIN when no whole line has arrived
 * yet.  Pass the same `buf` again after CONN_AGAIN: the start of an
 * over-long line is kept there while the rest is discarded.  conn_read_line
 * waits until `deadline` (a now_ms() value), flushing output first.
 */
enum conn_status conn_try_line(struct conn *c, char *buf, size_t max,
    size_t *len, bool *too_long, bool *bare_lf);
enum conn_status conn_read_line(struct conn *c, char *buf, size_t max,
    size_t *len, bool *too_long, bool *bare_lf, int64_t deadline);

/* What the last CONN_AGAIN waits for: POLLIN or POLLOUT. */
short conn_want(const struct conn *c);

/*
 * The socket was reported ready (by poll or epoll): the next non-blocking
 * call reads or writes at once.  Without it, a conn that has just sent
 * replies assumes the peer has not answered yet and returns CONN_AGAIN
 * without a system call; that is only ever a wasted wait, never a missed
 * octet.
 */
void conn_mark_ready(struct conn *c);

/* The descriptor, for poll and epoll (the conn still owns it). */
int conn_fd(const struct conn *c);

/* Octets of output queued and not yet sent. */
size_t conn_out_pending(const struct conn *c);

/* Input buffered and not yet consumed (plain or decrypted TLS). */
bool conn_in_pending(const struct conn *c);

/*
 * Release the I/O buffers that hold nothing, for a connection about to
 * wait a long time.  They are allocated again when needed.
 */
void conn_shrink(struct conn *c);

/*
 * Make buffered input available without consuming it: on CONN_OK, *p and
 * *n describe at least one buffered octet (reading from the socket first
 * if nothing is buffered).  Consume what was used with conn_consume; the
 * rest stays for the next read (octets pipelined after the end of data
 * belong to the next command).
 */
enum conn_status conn_peek(
    struct conn *c, const char **p, size_t *n, int64_t deadline);
enum conn_status conn_try_peek(struct conn *c, const char **p, size_t *n);
void conn_consume(struct conn *c, size_t n);

/* Drop all buffered input (after STARTTLS: RFC 3207 section 4.2). */
void conn_discard_input(struct conn *c);

/*
 * Queue output; flushed when the buffer fills (waiting up to a minute) or
 * before a blocking read.  Non-blocking users keep conn_out_pending below
 * CONN_OUTBUF by flushing first, so that this never waits.
 */
void conn_write(struct conn *c, const void *data, size_t len);
void conn_printf(struct conn *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Write out everything queued.  CONN_OK, CONN_TIMEOUT or CONN_ERROR;
 * conn_try_flush returns CONN_AGAIN instead of waiting. */
enum conn_status conn_flush(struct conn *c, int64_t deadline);
enum conn_status conn_try_flush(struct conn *c);

struct tls_creds;

/*
 * Start TLS as the server (after "220 Ready to start TLS", or at once on
 * an implicit-TLS port): conn_tls_server sets TLS up (the conn takes its
 * own reference to `creds`), giving CONN_OK or CONN_ERROR with `why`; then
 * conn_tls_handshake advances the handshake without waiting: CONN_OK when
 * it is done, CONN_AGAIN to wait for conn_want(), CONN_ERROR with `why`
 * (the session must end).  After CONN_OK every read and write goes through
 * TLS with the same buffering and line limits.
 */
enum conn_status conn_tls_server(
    struct conn *c, struct tls_creds *creds, char *why);
enum conn_status conn_tls_handshake(struct conn *c, char *why);
bool conn_tls_active(const struct conn *c);

/*
 * Start TLS as the client (after "220 Ready to start TLS", or at once for
 * implicit TLS) with `creds` from tls_client_creds_new.  `name` is sent as
 * SNI; when `verify` is set, the handshake fails unless the peer's
 * certificate chains to the trust store and matches `name`.
 */
enum conn_status conn_tls_connect(struct conn *c, struct tls_creds *creds,
    const char *name, bool verify, int64_t deadline, char *why);

struct dns_tlsa;

/*
 * After conn_tls_connect without `verify`: authenticate the server's chain
 * by DANE (tls/dane.h) against `recs`, with `names` as the reference
 * identifiers for DANE-TA.  0 with the record used in `what`; -1 with
 * `why`.
 */
int conn_tls_dane(const struct conn *c, const struct dns_tlsa *recs, int n,
    const char *const *names, int nnames, char *what, size_t wlen, char *why);

/* After a failed conn_tls_connect with `verify`: why the certificate was
 * refused, as a TLS-RPT result type (RFC 8460 section 4.3.2):
 * "certificate-host-mismatch", "certificate-expired",
 * "certificate-not-trusted" or "validation-failure". */
const char *conn_tls_verify_result(const struct conn *c);

/* The negotiated protocol ("TLS1.3") and cipher suite
 * ("TLS_AES_256_GCM_SHA384") with its key bits, or "" without TLS. */
void conn_tls_info(const struct conn *c, char *version, size_t vlen,
    char *cipher, size_t clen, int *bits);

/* Octets read and written so far. */
uint64_t conn_bytes_in(const struct conn *c);
uint64_t conn_bytes_out(const struct conn *c);

#endif
