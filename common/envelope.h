/*
 * envelope.h - the plain record describing one accepted message: who sent
 * it, to whom, and the facts of the session that handed it over.  Filled by
 * the SMTP session, stored by the queue.  No functions; no ownership tricks:
 * the strings belong to whoever filled the record.
 */
#ifndef SLUICE_ENVELOPE_H
#define SLUICE_ENVELOPE_H

#include <stdint.h>

#define QUEUE_ID_LEN 16 /* characters, without the NUL */

/* RFC 5321 section 4.5.3.1 limits. */
#define SMTP_LOCAL_MAX 64
#define SMTP_DOMAIN_MAX 255
#define SMTP_PATH_MAX 256    /* including the angle brackets */
#define SMTP_CMDLINE_MAX 512 /* including CRLF */
#define SMTP_REPLY_MAX 512   /* a reply line, including CRLF */
#define SMTP_ENVID_MAX 100   /* RFC 3461 section 4.4, xtext-encoded */
#define SMTP_ORCPT_MAX 500   /* RFC 3461 section 4.2, whole value */

/*
 * An address as a session accepted and stored it: a path's octets, each
 * of which the session may have to keep as up to four (a quoted local
 * part, UTF-8 under SMTPUTF8).
 */
#define ADDRESS_MAX (SMTP_PATH_MAX * 4)

struct envelope_rcpt {
	const char *address; /* "local@domain" as received */
	const char *domain;  /* lower case, "" for <Postmaster> */
	const char *notify;  /* "NEVER", "SUCCESS,FAILURE" or NULL */
	const char *orcpt;   /* "rfc822;xtext" as received, or NULL */
};

struct envelope {
	char id[QUEUE_ID_LEN + 1];
	int64_t received_at; /* Unix seconds */
	const char *sender;  /* "" for the null reverse-path */
	const struct envelope_rcpt *rcpts;
	int nrcpts;
	int64_t size;          /* octets as received, before our header */
	int64_t stored_size;   /* octets stored, Received header included */
	const char *body_type; /* "7BIT", "8BITMIME" or "BINARYMIME" */
	int smtputf8;
	const char *dsn_ret;   /* "FULL", "HDRS" or NULL */
	const char *dsn_envid; /* xtext as received, or NULL */
	const char *client_ip;
	int client_port;
	const char *helo;
	const char *protocol;    /* ESMTP, ESMTPS, ESMTPA, ESMTPSA, SMTP */
	const char *tls_version; /* NULL without TLS */
	const char *tls_cipher;
	const char *auth_user; /* NULL when not authenticated */
};

#endif
