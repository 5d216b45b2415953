/*
 * bounce.h - delivery status notifications (RFC 3464, RFC 3461, RFC 3834):
 * the message sluice sends back to a sender when recipients failed for
 * good, were delayed, or (NOTIFY=SUCCESS) were delivered.
 *
 * Pure: formats a complete message (header and MIME body, CRLF line
 * endings) from the facts it is given; no I/O, no globals.  Safe from any
 * thread.
 */
#ifndef SLUICE_BOUNCE_H
#define SLUICE_BOUNCE_H

#include <stddef.h>
#include <stdint.h>

/* The original message is returned whole only up to this size. */
#define BOUNCE_RETURN_LIMIT (100 * 1024)

enum bounce_kind {
	BOUNCE_FAILURE, /* Action: failed */
	BOUNCE_DELAY,   /* Action: delayed */
	BOUNCE_SUCCESS, /* Action: delivered (or relayed) */
};

struct bounce_rcpt {
	const char *address; /* Final-Recipient (rfc822) */
	const char *orcpt;   /* ORCPT as received ("rfc822;a+40b"), NULL */
	const char *action;  /* "failed", "delayed", "delivered", "relayed" */
	const char *status;  /* "5.1.1" */
	const char *remote_mta;   /* host name that answered, or NULL */
	const char *diagnostic;   /* the remote reply ("550 5.1.1 ..."), NULL */
	int64_t last_attempt;     /* Unix seconds, 0 if none */
	int64_t will_retry_until; /* delayed: Unix seconds, 0 if none */
};

struct bounce_msg {
	const char *reporting_mta; /* our hostname */
	const char *queue_id;      /* the original's queue ID */
	const char *envid;         /* ENVID as received (xtext), or NULL */
	const char *sender;        /* original sender: the DSN goes there */
	int64_t arrival;           /* Arrival-Date, Unix seconds */
	int64_t now;               /* Date of the DSN, Unix seconds */
	enum bounce_kind kind;
	int ret_hdrs; /* RET=HDRS: headers only */
	const struct bounce_rcpt *rcpts;
	int nrcpts;
	/*
	 * The start of the original message as stored (our Received header
	 * included): `orig_len` octets of a message of `orig_size` octets in
	 * all.  When RET=HDRS, or when the message is larger than
	 * BOUNCE_RETURN_LIMIT, only its header section is returned
	 * (text/rfc822-headers); otherwise all of it (message/rfc822).
	 */
	const unsigned char *orig;
	size_t orig_len;
	size_t orig_size;
};

/*
 * Format the DSN.  Returns a malloc'd buffer of *len octets: a complete
 * message with Date, From ("Mail Delivery System <MAILER-DAEMON@host>"),
 * To (<sender>), Subject, Auto-Submitted: auto-replied, Message-ID,
 * MIME-Version, and a multipart/report; report-type=delivery-status body
 * with a readable text/plain part, the message/delivery-status part
 * (Reporting-MTA, Original-Envelope-Id, Arrival-Date; per recipient
 * Final-Recipient, Original-Recipient, Action, Status, Remote-MTA,
 * Diagnostic-Code, Last-Attempt-Date), and the returned original.
 * Header field values taken from the peer are sanitised (no CR/LF, no
 * control characters) so a hostile reply cannot inject header lines.
 */
char *bounce_format(const struct bounce_msg *b, size_t *len);

#endif
