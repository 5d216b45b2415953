/*
 * conn.h - the session I/O object: one buffered connection that reads
 * lines and raw octets and writes replies, with deadlines, over plain TCP
 * (and TLS, in the TLS issue) alike.
 *
 * Reads: input is buffered; when the buffer holds no complete line the
 * pending output is flushed first, then the socket is polled until the
 * deadline.  That single rule gives RFC 2920 pipelining: replies to a batch
 * of commands leave in one write, in order, before the server blocks.
 *
 * Threads: a conn belongs to the one session thread that owns it.
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
 * Read one line ending in LF into `buf` (capacity `max`, which bounds the
 * line including its CRLF).  On CONN_OK, `*len` is the line length without
 * the line ending and buf is NUL-terminated; `*too_long` is set when the
 * line exceeded `max` (its excess was read and discarded, buf holds the
 * start).  `*bare_lf` is set when the line ended in LF without CR.
 * `deadline` is a now_ms() value.
 */
enum conn_status conn_read_line(struct conn *c, char *buf, size_t max,
    size_t *len, bool *too_long, bool *bare_lf, int64_t deadline);

/*
 * Make buffered input available without consuming it: on CONN_OK, *p and
 * *n describe at least one buffered octet (reading from the socket first
 * if nothing is buffered).  Consume what was used with conn_consume; the
 * rest stays for the next read (octets pipelined after the end of data
 * belong to the next command).
 */
enum conn_status conn_peek(
    struct conn *c, const char **p, size_t *n, int64_t deadline);
void conn_consume(struct conn *c, size_t n);

/* Drop all buffered input (after STARTTLS: RFC 3207 section 4.2). */
void conn_discard_input(struct conn *c);

/* Queue output; flushed when the buffer fills or before a blocking read. */
void conn_write(struct conn *c, const void *data, size_t len);
void conn_printf(struct conn *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Write out everything queued.  CONN_OK, CONN_TIMEOUT or CONN_ERROR. */
enum conn_status conn_flush(struct conn *c, int64_t deadline);

struct tls_creds;

/*
 * Start TLS as the server (after "220 Ready to start TLS", or at once on
 * an implicit-TLS port) with a handshake bounded by `deadline`.  The conn
 * takes its own reference to `creds`.  The stop descriptor (see
 * conn_set_stop_fd) ends a handshake too, with CONN_STOPPED.  After CONN_OK
 * every read and write goes through TLS with the same buffering, timeouts and
 * line limits.  On failure `why` says what went wrong; the session must end.
 */
enum conn_status conn_tls_accept(
    struct conn *c, struct tls_creds *creds, int64_t deadline, char *why);
bool conn_tls_active(const struct conn *c);

/*
 * Start TLS as the client (after "220 Ready to start TLS", or at once for
 * implicit TLS) with `creds` from tls_client_creds_new.  `name` is sent as
 * SNI; when `verify` is set, the handshake fails unless the peer's
 * certificate chains to the trust store and matches `name`.
 */
enum conn_status conn_tls_connect(struct conn *c, struct tls_creds *creds,
    const char *name, bool verify, int64_t deadline, char *why);

/* The negotiated protocol ("TLS1.3") and cipher suite
 * ("TLS_AES_256_GCM_SHA384") with its key bits, or "" without TLS. */
void conn_tls_info(const struct conn *c, char *version, size_t vlen,
    char *cipher, size_t clen, int *bits);

/* Octets read and written so far. */
uint64_t conn_bytes_in(const struct conn *c);
uint64_t conn_bytes_out(const struct conn *c);

#endif
