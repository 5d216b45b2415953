/*
 * parse.h - pure parsers for the ESMTP server: command lines, MAIL and RCPT
 * paths and their parameters (RFC 5321 section 4.1, RFC 1870, 6152, 3030,
 * 6531, 3461, 4954).
 *
 * Everything here is pure: no I/O, no globals, no allocation.  Safe from any
 * thread.  Parsers take a NUL-terminated argument string (the command line
 * without its CRLF) and return 0 on success, or an SMTP reply code on error
 * with `why` (WHY_MAX bytes) filled with the rest of the reply line, starting
 * with the enhanced status code, e.g. "5.1.7 Bad sender address syntax".
 */
#ifndef SLUICE_PARSE_H
#define SLUICE_PARSE_H

#include <stdbool.h>
#include <stddef.h>

#include "envelope.h" /* the RFC limits */
#include "utf8.h"     /* utf8_valid, which the parsers use */

/*
 * Extensions raise the limit for MAIL and RCPT: SIZE (RFC 1870: 26), RET
 * and ENVID (RFC 3461: 100), AUTH= (RFC 4954: 500), BODY and SMTPUTF8
 * (some 30); NOTIFY and ORCPT (RFC 3461: 500).
 */
#define SMTP_MAIL_LINE_MAX (SMTP_CMDLINE_MAX + 26 + 100 + 500 + 30)
#define SMTP_RCPT_LINE_MAX (SMTP_CMDLINE_MAX + 500)

enum smtp_verb {
	VERB_UNKNOWN = 0, /* 500 5.5.1 */
	VERB_HELO,
	VERB_EHLO,
	VERB_MAIL,
	VERB_RCPT,
	VERB_DATA,
	VERB_BDAT,
	VERB_RSET,
	VERB_NOOP,
	VERB_QUIT,
	VERB_VRFY,
	VERB_EXPN,
	VERB_HELP,
	VERB_STARTTLS,
	VERB_AUTH,
	VERB_NOTIMPL, /* TURN, ETRN, ATRN, SEND, SOML, SAML: 502 5.5.1 */
};

/*
 * Split a command line (CRLF removed, NUL-terminated) into its verb and
 * arguments.  The verb is matched case-insensitively and ends at a space or
 * the end of the line.  *args points into `line`, after the single space
 * separating it from the verb ("" when there are none).  Never fails: an
 * unknown or malformed verb gives VERB_UNKNOWN.
 */
enum smtp_verb parse_verb(const char *line, const char **args);

/* Verb name for logs ("MAIL"), or "UNKNOWN". */
const char *verb_name(enum smtp_verb v);

/*
 * A mailbox from a reverse- or forward-path.  `local` is the local part as
 * written (a quoted local part keeps its quotes and backslashes), `domain`
 * the domain or address literal as written (brackets kept), both
 * NUL-terminated.  The null path "<>" has local and domain empty and
 * `null_path` set.  RCPT's special "<Postmaster>" (RFC 5321 section 4.1.1.3)
 * has local "Postmaster" and an empty domain.  A source route
 * ("@a,@b:user@d") is accepted and dropped (RFC 5321 section 4.1.2 and
 * appendix C).
 */
struct smtp_path {
	char local[SMTP_LOCAL_MAX * 4 + 1];
	char domain[SMTP_DOMAIN_MAX + 1];
	bool null_path;
	bool quoted;  /* local part is a Quoted-string */
	bool literal; /* domain is an address literal "[...]" */
	bool utf8;    /* contains non-ASCII (valid UTF-8) octets */
};

struct mail_args {
	struct smtp_path from;
	long long size; /* SIZE= value, -1 when absent */
	enum body_type body;
	bool smtputf8;
	bool requiretls; /* REQUIRETLS (RFC 8689 section 4.1): no value */
	enum dsn_ret ret;
	char envid[SMTP_ENVID_MAX + 1]; /* as received (xtext), "" if absent */
	char auth[SMTP_PATH_MAX * 3 + 1]; /* AUTH= as received, "" if absent */
};

struct rcpt_args {
	struct smtp_path to;
	unsigned notify;                /* NOTIFY_* bits, 0 when absent */
	char orcpt[SMTP_ORCPT_MAX + 1]; /* "rfc822;xtext" as received, or "" */
};

/*
 * MAIL: `args` is what follows the verb ("FROM:<a@b> SIZE=10").  `esmtp` is
 * false after HELO: then any parameter is refused (555 5.5.4).
 * Errors: 501 5.5.4 / 5.1.7 syntax (missing "FROM:", bad path, bad parameter
 * value, duplicate parameter), 501 5.1.7 path too long, 553 5.6.7 non-ASCII
 * address without SMTPUTF8, 555 5.5.4 unknown parameter.  "FROM:" is matched
 * case-insensitively, and one space after the colon is tolerated as many
 * clients send it.
 */
int parse_mail(const char *args, bool esmtp, struct mail_args *out, char *why);

/*
 * RCPT: as parse_mail; `smtputf8` is whether the transaction's MAIL had
 * SMTPUTF8 (non-ASCII in the path is 553 5.6.7 otherwise).  NOTIFY is
 * NEVER alone or a comma list of SUCCESS, FAILURE, DELAY (501 5.5.4
 * otherwise); ORCPT is "addr-type;xtext" with a valid xtext, at most
 * SMTP_ORCPT_MAX octets.  A forward-path may not be "<>" (501 5.1.3).
 */
int parse_rcpt(const char *args, bool esmtp, bool smtputf8,
    struct rcpt_args *out, char *why);

/*
 * True when the local part carries sender-specified routing: an unquoted or
 * quoted '@', '%' or '!' ("user%other@relay", "\"user@other\"@relay",
 * "host!user@relay").  Such recipients are never relayed for untrusted
 * clients (Postfix's allow_untrusted_routing = no).
 */
bool path_is_routed(const struct smtp_path *p);

/*
 * Validate an EHLO/HELO argument: a domain name or an address literal,
 * printable ASCII (or UTF-8), no spaces.  Returns 0 or 501 with `why`.
 */
int parse_helo(const char *args, char *why);

/*
 * Decode RFC 3461 xtext ("a+2Bb" -> "a+b").  Returns the decoded length, or
 * -1 for malformed xtext (bad hex, lower-case hex, '+' not followed by two
 * hex digits, characters outside 33..126, '=') or when it does not fit in
 * `outlen - 1` bytes.  The output is NUL-terminated.
 */
int xtext_decode(const char *in, char *out, size_t outlen);

/*
 * BDAT's arguments (RFC 3030 section 2): "size [LAST]", the size a run of
 * digits no larger than BDAT_SIZE_MAX, LAST in any case.  Returns 0 with
 * *size and *last, or 501 with `why` (the chunk's size is then unknown:
 * the session cannot find the next command and must close).
 */
#define BDAT_SIZE_MAX (1ULL << 62)
int parse_bdat(
    const char *args, unsigned long long *size, bool *last, char *why);

/* Case-insensitive domain comparison ignoring nothing else. */
bool domain_equal(const char *a, const char *b);

#endif
