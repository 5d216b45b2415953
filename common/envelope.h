/*
 * envelope.h - the plain record describing one accepted message: who sent
 * it, to whom, and the facts of the session that handed it over; and the
 * words it is made of (RFC limits, body types, RET, NOTIFY, recipient
 * states).  Filled by the SMTP session, stored by the queue.  No
 * functions; no ownership tricks: the strings belong to whoever filled
 * the record.
 */
#ifndef SLUICE_ENVELOPE_H
#define SLUICE_ENVELOPE_H

#include <stddef.h>
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

/*
 * The words of mail, as types.  They travel as these values from the
 * session's parser to the delivery client; the queue stores them as the
 * text of its schema; common/vocab.c holds the one table that spells
 * them, for SMTP and the queue alike (sql/schema.sql's CHECK lists name
 * the same words).
 */

/* BODY= (RFC 6152, RFC 3030). */
enum body_type {
	BODY_7BIT = 0, /* default when BODY= is absent */
	BODY_8BITMIME,
	BODY_BINARYMIME,
};

/* RET= (RFC 3461 section 4.3): what a DSN returns. */
enum dsn_ret {
	RET_NONE = 0, /* absent: the receiver's choice (ours: FULL) */
	RET_FULL,
	RET_HDRS,
};

/* NOTIFY= (RFC 3461 section 4.1), as bits; 0 when absent. */
#define NOTIFY_NEVER 0x1
#define NOTIFY_SUCCESS 0x2
#define NOTIFY_FAILURE 0x4
#define NOTIFY_DELAY 0x8

/*
 * Where a recipient is.  The state machine, with the function that makes
 * each move, is drawn in docs/queue.md ("The life of a recipient").
 */
enum rcpt_state {
	RCPT_QUEUED = 0, /* accepted, never attempted */
	RCPT_DEFERRED,   /* attempted, to be tried again */
	RCPT_HELD,       /* set aside by the administrator */
	RCPT_DELIVERED,  /* accepted by the next hop (final) */
	RCPT_BOUNCED,    /* failed for good (final) */
};
#define RCPT_NSTATES 5

/* The notices sent about a recipient (recipients.notified), as bits. */
#define NOTIFIED_FAILURE 0x1 /* its failure was reported to the sender */
#define NOTIFIED_DELAY 0x2   /* its delay was (delay_warning_time) */

struct envelope_rcpt {
	const char *address; /* "local@domain" as received */
	const char *domain;  /* lower case, "" for <Postmaster> */
	unsigned notify;     /* NOTIFY_* bits, 0 when absent */
	const char *orcpt;   /* "rfc822;xtext" as received, or NULL */
};

struct envelope {
	char id[QUEUE_ID_LEN + 1];
	int64_t received_at; /* Unix seconds */
	const char *sender;  /* "" for the null reverse-path */
	const struct envelope_rcpt *rcpts;
	int nrcpts;
	int64_t size;        /* octets as received, before our header */
	int64_t stored_size; /* octets stored, Received header included */
	enum body_type body_type;
	int smtputf8;
	int requiretls;      /* MAIL FROM ... REQUIRETLS (RFC 8689) */
	int tls_required_no; /* "TLS-Required: No" in the header */
	enum dsn_ret dsn_ret;
	const char *dsn_envid; /* xtext as received, or NULL */
	const char *client_ip;
	int client_port;
	const char *helo;
	const char *protocol;    /* ESMTP, ESMTPS, ESMTPA, ESMTPSA, SMTP */
	const char *tls_version; /* NULL without TLS */
	const char *tls_cipher;
	const char *auth_user; /* NULL when not authenticated */
	/* Fields put in front of the message at the end of its data (DKIM
	 * signatures), counted in stored_size; NULL: none. */
	const char *prepend;
	size_t prepend_len;
};

#endif
