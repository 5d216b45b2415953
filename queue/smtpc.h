/*
 * smtpc.h - the outbound SMTP client: one connection to one remote host,
 * one transaction at a time (RFC 5321, with PIPELINING, SIZE, 8BITMIME,
 * SMTPUTF8, DSN, CHUNKING/BINARYMIME, STARTTLS and AUTH PLAIN/LOGIN).
 *
 * Threads: a `struct smtpc` belongs to the delivery thread that opened it.
 *
 * Results: RES_OK, RES_TEMP or RES_PERM with `why` holding the enhanced
 * status code and a reason, or the remote reply itself
 * ("550 5.1.1 <x@example.net>: user unknown").
 */
#ifndef SLUICE_SMTPC_H
#define SLUICE_SMTPC_H

#include <stdbool.h>
#include <stdint.h>

#include "dns.h"
#include "envelope.h"
#include "util.h"

struct tls_creds;

struct smtpc_tls_result {
	bool tried;     /* TLS was tried, or required and not offered */
	char type[32];  /* RFC 8460 result type, "" for success */
	char local[64]; /* the address we connected from */
};

struct smtpc_opts {
	const char *helo;            /* our hostname */
	int connect_timeout;         /* seconds */
	int command_timeout;         /* seconds */
	int data_timeout;            /* seconds, for the reply to the data */
	int tls;                     /* OUTBOUND_TLS_* */
	bool implicit_tls;           /* smtps: TLS before the greeting */
	struct tls_creds *tls_creds; /* client credentials (trust store) */
	const char *tls_name;        /* name to verify (MX host) */
	/*
	 * tls = OUTBOUND_TLS_DANE: STARTTLS required and the server's chain
	 * authenticated by these TLSA records (only the usable ones count),
	 * with dane_names as DANE-TA's reference identifiers (tls/dane.h).
	 */
	const struct dns_tlsa *tlsa;
	int ntlsa;
	const char *const *dane_names;
	int ndane_names;
	bool sts; /* tls = VERIFY for an MTA-STS enforce policy: "sts" */
	/*
	 * Filled by smtpc_open when set (TLS-RPT, RFC 8460): whether TLS was
	 * tried, its result ("" for a session under TLS, else a result type
	 * such as "starttls-not-supported", "certificate-expired",
	 * "tlsa-invalid") and our address.
	 */
	struct smtpc_tls_result *tls_result;
	const char *auth_user; /* AUTH when set (smarthost) */
	const char *auth_pass;
	bool auth_without_tls;
	int stop_fd; /* readable: give up waiting (shutdown) */
};

/* Where in the transaction a recipient's verdict was given. */
enum smtpc_at {
	SMTPC_AT_NONE, /* not by a reply: not attempted, not sent (the server
	                  lacks what the message needs, all_or_none), or the
	                  connection broke */
	SMTPC_AT_MAIL, /* MAIL FROM was refused */
	SMTPC_AT_RCPT, /* the reply to its RCPT TO */
	SMTPC_AT_DATA, /* the reply to DATA or to the message */
};

/* One recipient of a transaction, and what the server said of it. */
struct smtpc_rcpt {
	const char *address;
	unsigned notify;            /* NOTIFY_* bits, 0: none */
	const char *orcpt;          /* "rfc822;xtext", or NULL */
	enum res result;            /* filled in by smtpc_send */
	enum smtpc_at at;           /* filled in by smtpc_send */
	char reply[SMTP_REPLY_MAX]; /* the server's reply, or our reason */
};

struct smtpc_msg {
	const char *sender; /* "" for <> */
	int64_t size;       /* octets of the stored message */
	enum body_type body_type;
	bool smtputf8;
	enum dsn_ret dsn_ret;
	const char *envid; /* or NULL */
	/*
	 * REQUIRETLS (RFC 8689): sent only over an authenticated TLS
	 * session (verified, sts or dane) to a server that advertises
	 * REQUIRETLS, with the parameter; else every recipient is refused
	 * with 5.7.10 or 5.7.30.
	 */
	bool requiretls;
	/*
	 * A recipient refused for now stops the message for all (DATA is not
	 * sent): for a submitter that retries the whole message, as
	 * `sluice sendmail` does.  Delivery sends to those accepted.
	 */
	bool all_or_none;
	/*
	 * Produce the message octets: calls `put(put_arg, data, len)` for
	 * each piece in order (stops at a non-zero return).
	 */
	enum res (*body)(void *arg, int (*put)(void *, const void *, size_t),
	    void *put_arg, char *why);
	void *body_arg;
};

struct smtpc;

/*
 * Connect to `h`, read the greeting, EHLO (HELO when EHLO is refused),
 * STARTTLS as opts->tls says (may: when offered; encrypt/verify: required)
 * and AUTH when opts->auth_user is set.  RES_TEMP means "try the next
 * host".  On success *out is the open connection.
 */
enum res smtpc_open(const struct mx_host *h, const struct smtpc_opts *o,
    struct smtpc **out, char *why);

/*
 * The same on a socket already connected (`fd`, which it takes), named
 * `label` ("127.0.0.1:2525") in messages.
 */
enum res smtpc_start(int fd, const char *label, const struct smtpc_opts *o,
    struct smtpc **out, char *why);

/*
 * One transaction.  Each recipient's result is set: RES_OK (accepted and
 * the data accepted), RES_TEMP (try again later), RES_PERM (bounce).  The
 * return value is RES_OK when the connection can carry another
 * transaction, RES_TEMP when it broke.  A transaction that ended early
 * leaves its RSET to the next one (none before QUIT); when that RSET
 * fails, nothing was sent and smtpc_stale says so.
 */
enum res smtpc_send(struct smtpc *c, const struct smtpc_msg *m,
    struct smtpc_rcpt *rcpts, int n);

/*
 * Make a used connection ready for another transaction (RSET).  RES_OK
 * when it is; otherwise close it and open a new one.
 */
enum res smtpc_reset(struct smtpc *c);

/*
 * Did the last smtpc_send fail before the server answered anything (a
 * kept connection the server had closed meanwhile)?  Then nothing of the
 * message was taken and it may go again at once on a new connection;
 * after any reply, a broken transaction is retried only later.
 */
bool smtpc_stale(const struct smtpc *c);

/* Does the server advertise REQUIRETLS (RFC 8689)? */
bool smtpc_has_requiretls(const struct smtpc *c);

/* Does the server do DSN (RFC 3461)?  (For "relayed" notices.) */
bool smtpc_has_dsn(const struct smtpc *c);

/* "TLS1.3 TLS_AES_256_GCM_SHA384", or "" without TLS. */
const char *smtpc_tls_desc(const struct smtpc *c);

/*
 * What the session's TLS proved: "none" (plaintext), "encrypted" (not
 * authenticated), "verified" (PKIX, the name checked), "sts" (verified
 * under an MTA-STS enforce policy) or "dane"; and for
 * dane the record that matched ("DANE-EE 3 1 1"), else "".
 */
const char *smtpc_security(const struct smtpc *c);
const char *smtpc_security_detail(const struct smtpc *c);

/* QUIT (best effort) and close.  NULL is a no-op. */
void smtpc_close(struct smtpc *c);

#endif
