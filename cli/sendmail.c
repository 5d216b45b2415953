/*
 * sendmail.c - `sluice sendmail`, the sendmail(8) command line for cron
 * jobs and scripts: read one message on standard input, give it the
 * headers every message needs (From, Date, Message-ID), and submit it
 *
 *   1. over SMTP to the running relay's first /smtp listener (a local
 *      client relays by IP: relay_networks includes 127.0.0.0/8), with
 *      the SMTP client of delivery (queue/smtpc.h), all recipients or
 *      none (a recipient refused for now stops the message: the caller
 *      tries again later, and nobody gets it twice), or,
 *   2. when no relay answers, straight into the queue file, as Postfix's
 *      maildrop does, for the relay to deliver when it runs.  Only the
 *      user who owns the queue may do that: SQLite creates its -wal and
 *      -shm files as the caller, and the relay must be able to open them.
 *
 * Options follow sendmail and Postfix (-t, -i/-oi, -f, -F, -C); the ones
 * that only tune sendmail itself are accepted and ignored, and the modes
 * other than -bm are refused.  Exit status per sysexits.h: 0 sent (or
 * queued), 64 usage, 65 bad input, 67 a recipient refused, 69 refused
 * for good, 75 try again later (also: a reply that is not SMTP), 78
 * configuration.
 *
 * Threads: single-threaded command; no shared state.
 */
#include "cli.h"
#include "loadcfg.h"
#include "conn.h"
#include "store.h"
#include "envelope.h"
#include "log.h"
#include "parse.h"
#include "queue.h"
#include "smtpc.h"
#include "smtpwire.h"
#include "strbuf.h"
#include "util.h"

#include <errno.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sysexits.h>
#include <time.h>
#include <unistd.h>

#define LINE_MAX_OCTETS 998 /* RFC 5322 section 2.1.1, without CRLF */
#define FULLNAME_MAX 256
#define SHOWN_MAX 100 /* octets of a bad address quoted in a message */

struct opts {
	bool from_headers;    /* -t */
	bool dot_ends;        /* no -i: a line "." ends the message */
	const char *sender;   /* -f, or NULL */
	const char *fullname; /* -F, or NULL */
	const char *config;   /* -C / -c, or NULL */
	char **rcpts;         /* the arguments after the options */
	int nrcpts;
};

/* A piece of the message as sent: the message is the pieces in order. */
struct piece {
	const char *p;
	size_t n;
};

/* An envelope address as the SMTP parser (parse.h) accepted it. */
struct address {
	char text[SMTP_LOCAL_MAX * 4 + SMTP_DOMAIN_MAX + 2]; /* "" for <> */
	char domain[SMTP_DOMAIN_MAX + 1];                    /* lower-cased */
	bool utf8; /* not ASCII: needs SMTPUTF8 */
};

/* An envelope recipient, owned. */
struct rcpt {
	char *addr;
	char *domain; /* lower-cased, for the queue */
};

/* Envelope recipients, without duplicates. */
struct addrs {
	struct rcpt *v;
	int n, cap;
	bool utf8; /* one of them needs SMTPUTF8 */
};

/* One message on its way in: its envelope, the input and what we add. */
struct submission {
	const struct config *cfg;
	char *sender; /* "" for the null reverse-path */
	struct addrs rcpts;
	bool smtputf8;        /* the envelope is not ASCII */
	struct strbuf raw;    /* the input, every line ending in CRLF */
	struct strbuf added;  /* the headers we add */
	struct piece *pieces; /* the message as sent (see assemble) */
	int npieces, cap;
	int64_t size; /* octets of all pieces */
	bool eightbit;
};

static void
usage(FILE *f)
{
	fprintf(f,
	    "usage: sendmail [-t] [-i] [-f SENDER] [-F NAME] [-C FILE] "
	    "[--] [RECIPIENT...]\n"
	    "  reads a message on standard input and submits it to sluice\n"
	    "  -t       recipients from the To, Cc and Bcc headers too\n"
	    "  -i, -oi  a line with a single \".\" does not end the message\n"
	    "  -f ADDR  envelope sender ('<>' for the null sender)\n"
	    "  -F NAME  full name for the From header, when one is added\n"
	    "  -C FILE  sluice configuration (also -c, $SLUICE_CONFIG)\n");
}

/* ---- options ---- */

/* Options that take a value but only tune sendmail itself. */
static bool
ignored_with_value(char c)
{
	return strchr("BNRVXhL", c) != NULL;
}

/* Flags accepted and ignored (verbose, no aliasing, me too, ...). */
static bool
ignored_flag(char c)
{
	return strchr("vmnUG", c) != NULL;
}

/*
 * The value of option `c` in argv[*i] at `rest`: the rest of the argument,
 * else the next argument.  NULL (after a message) when there is none.
 */
static const char *
option_value(int argc, char **argv, int *i, const char *rest, char c)
{
	if (*rest != '\0')
		return rest;
	if (*i + 1 < argc)
		return argv[++*i];
	fprintf(stderr, "sendmail: option -%c needs a value\n", c);
	return NULL;
}

/* One option cluster ("-ti", "-fuser", "-oi"); 0 or an exit status. */
static int
parse_cluster(int argc, char **argv, int *i, struct opts *o)
{
	const char *a = argv[*i], *v;
	size_t k;

	for (k = 1; a[k] != '\0'; k++) {
		char c = a[k];

		if (c == 't') {
			o->from_headers = true;
		} else if (c == 'i') {
			o->dot_ends = false;
		} else if (ignored_flag(c)) {
			continue;
		} else if (c == 'o') {
			/* -oi is -i; -odi, -oem, ... are sendmail's own. */
			if (strcmp(a + k + 1, "i") == 0)
				o->dot_ends = false;
			else if (a[k + 1] == '\0' && *i + 1 < argc)
				(*i)++;
			return 0;
		} else if (c == 'b') {
			if (strcmp(a + k + 1, "m") == 0)
				return 0;
			fprintf(stderr,
			    "sendmail: -b%s is not supported: sluice "
			    "sendmail only submits mail (-bm)\n",
			    a + k + 1);
			return EX_USAGE;
		} else if (c == 'e' || c == 'O' || c == 'd') {
			return 0; /* -eX, -Ooption=value, -dX: ignored */
		} else if (strchr("frFCc", c) != NULL ||
		           ignored_with_value(c)) {
			v = option_value(argc, argv, i, a + k + 1, c);
			if (v == NULL)
				return EX_USAGE;
			if (c == 'f' || c == 'r')
				o->sender = v;
			else if (c == 'F')
				o->fullname = v;
			else if (c == 'C' || c == 'c')
				o->config = v;
			return 0;
		} else {
			fprintf(stderr,
			    "sendmail: option -%c is not supported\n", c);
			usage(stderr);
			return EX_USAGE;
		}
	}
	return 0;
}

/* Parse the command line; 0, or the exit status (-1: --help). */
static int
parse_options(int argc, char **argv, struct opts *o)
{
	int i, rc;

	memset(o, 0, sizeof(*o));
	o->dot_ends = true;
	for (i = 1; i < argc; i++) {
		const char *a = argv[i];

		if (strcmp(a, "--") == 0) {
			i++;
			break;
		}
		if (strcmp(a, "--help") == 0)
			return -1;
		if (a[0] != '-' || a[1] == '\0')
			break; /* the recipients (POSIX: options first) */
		if ((rc = parse_cluster(argc, argv, &i, o)) != 0)
			return rc;
	}
	o->rcpts = argv + i;
	o->nrcpts = argc - i;
	if (o->fullname != NULL && (strpbrk(o->fullname, "\r\n") != NULL ||
	                               strlen(o->fullname) > FULLNAME_MAX)) {
		fprintf(stderr, "sendmail: bad full name (-F)\n");
		return EX_USAGE;
	}
	if (o->nrcpts == 0 && !o->from_headers) {
		fprintf(stderr, "sendmail: no recipients\n");
		usage(stderr);
		return EX_USAGE;
	}
	return 0;
}

/* ---- addresses ---- */

static bool
is_wsp(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/*
 * Whether `in` has an '@' outside a quoted string (else it is a bare local
 * name).  False when it has a '<' or '>' outside one: it goes between the
 * <> of a MAIL or RCPT command for the parser, and must not end the path
 * early ("a@b> SIZE=1").
 */
static bool
scan_unquoted(const char *in, size_t len, bool *has_at)
{
	bool quoted = false;
	size_t k;

	*has_at = false;
	for (k = 0; k < len; k++) {
		if (quoted && in[k] == '\\')
			k++;
		else if (in[k] == '"')
			quoted = !quoted;
		else if (!quoted && (in[k] == '<' || in[k] == '>'))
			return false;
		else if (!quoted && in[k] == '@')
			*has_at = true;
	}
	return true;
}

/*
 * Parse "FROM:<path> SMTPUTF8" (the sender) or "TO:<path>" (a recipient:
 * no parameter allowed) as the server does.  0, or the reply code with
 * `why` ("5.1.3 Bad recipient address syntax").
 */
static int
parse_path(const char *cmd, bool sender, struct address *out, char *why)
{
	struct mail_args ma;
	struct rcpt_args ra;
	const struct smtp_path *p;
	int code;
	char *c;

	if (sender) {
		code = parse_mail(cmd, true, &ma, why);
		p = &ma.from;
	} else {
		code = parse_rcpt(cmd, false, true, &ra, why);
		p = &ra.to;
	}
	if (code != 0)
		return code;
	memset(out, 0, sizeof(*out));
	if (!p->null_path) {
		snprintf(
		    out->text, sizeof(out->text), "%s@%s", p->local, p->domain);
		snprintf(out->domain, sizeof(out->domain), "%s", p->domain);
		for (c = out->domain; *c != '\0'; c++)
			*c = ascii_lower(*c);
	}
	out->utf8 = p->utf8;
	return 0;
}

/*
 * Complete and check one envelope address ("user@example.com",
 * "<user@example.com>", or a bare local name, which gets @hostname): the
 * sender (where "<>" and "" are the null sender) or a recipient.  The
 * SMTP parser checks it (grammar, lengths, UTF-8); a source route is
 * dropped.  0, or -1 with `why`.
 */
static int
make_address(const char *in, size_t len, bool sender, const char *hostname,
    struct address *out, char *why)
{
	struct strbuf cmd = {0};
	char err[WHY_MAX];
	size_t start, shown;
	bool has_at;
	int rc = -1;

	while (len > 0 && is_wsp(*in))
		in++, len--;
	while (len > 0 && is_wsp(in[len - 1]))
		len--;
	if (len >= 2 && in[0] == '<' && in[len - 1] == '>')
		in++, len -= 2;
	if (!scan_unquoted(in, len, &has_at)) {
		why_set(why, "bad address \"%.*s\"",
		    (int)(len > SHOWN_MAX ? SHOWN_MAX : len), in);
		return -1;
	}
	strbuf_str(&cmd, sender ? "FROM:<" : "TO:<");
	start = cmd.len;
	strbuf_add(&cmd, in, len);
	if (!has_at && len > 0)
		strbuf_fmt(&cmd, "@%s", hostname);
	shown = cmd.len - start;
	strbuf_str(&cmd, sender ? "> SMTPUTF8" : ">");
	if (parse_path(cmd.p, sender, out, err) != 0) {
		/* The parser's reason, without its enhanced status code. */
		const char *reason = strchr(err, ' ');

		why_set(why, "bad address \"%.*s\" (%s)",
		    (int)(shown > SHOWN_MAX ? SHOWN_MAX : shown), cmd.p + start,
		    reason ? reason + 1 : err);
		goto out;
	}
	rc = 0;
out:
	strbuf_free(&cmd);
	return rc;
}

/* Add a recipient unless it is listed already. */
static void
addrs_add(struct addrs *a, const struct address *ad)
{
	int i;

	for (i = 0; i < a->n; i++)
		if (ascii_casecmp(a->v[i].addr, ad->text) == 0)
			return;
	if (a->n == a->cap) {
		a->cap = a->cap ? a->cap * 2 : 8;
		a->v = xrealloc(a->v, sizeof(*a->v) * (size_t)a->cap);
	}
	a->v[a->n].addr = xstrdup(ad->text);
	a->v[a->n].domain = xstrdup(ad->domain);
	a->n++;
	a->utf8 = a->utf8 || ad->utf8;
}

static void
addrs_free(struct addrs *a)
{
	int i;

	for (i = 0; i < a->n; i++) {
		free(a->v[i].addr);
		free(a->v[i].domain);
	}
	free(a->v);
}

/* One parsed element of an address list: its bare or <angle> address. */
struct element {
	struct strbuf bare;  /* outside quotes and <>, whitespace dropped */
	struct strbuf angle; /* inside <> */
	bool has_angle;
};

/* Finish an element: add its address (if any) to `a`.  0 or -1 + why. */
static int
element_end(struct element *e, const char *hostname, struct addrs *a, char *why)
{
	const struct strbuf *b = e->has_angle ? &e->angle : &e->bare;
	struct address ad;
	int rc = 0;

	if (b->len > 0) {
		rc = make_address(b->p, b->len, false, hostname, &ad, why);
		if (rc == 0)
			addrs_add(a, &ad);
	}
	strbuf_free(&e->bare);
	strbuf_free(&e->angle);
	e->has_angle = false;
	return rc;
}

/* Skip a comment starting at s[*i] == '(' (nested, with quoted pairs). */
static bool
skip_comment(const char *s, size_t n, size_t *i)
{
	int depth = 0;

	for (; *i < n; (*i)++) {
		if (s[*i] == '\\')
			(*i)++;
		else if (s[*i] == '(')
			depth++;
		else if (s[*i] == ')' && --depth == 0)
			return true;
	}
	return false;
}

/*
 * Copy a quoted string starting at s[*i] == '"' into `b`, quotes kept;
 * false when it does not end.
 */
static bool
copy_quoted(const char *s, size_t n, size_t *i, struct strbuf *b)
{
	strbuf_add(b, "\"", 1);
	for ((*i)++; *i < n && s[*i] != '"'; (*i)++) {
		if (s[*i] == '\\' && *i + 1 < n) {
			strbuf_add(b, s + *i, 2);
			(*i)++;
		} else if (s[*i] != '\r' && s[*i] != '\n') {
			strbuf_add(b, s + *i, 1);
		}
	}
	strbuf_add(b, "\"", 1);
	return *i < n;
}

/*
 * Add the addresses of an RFC 5322 address list (the value of To, Cc or
 * Bcc): "A <a@x>, b@y (B), Group: c@z, d@z;".  0 or -1 with `why`.
 */
static int
parse_address_list(
    const char *s, size_t n, const char *hostname, struct addrs *a, char *why)
{
	struct element e;
	size_t i;
	int rc = 0;

	memset(&e, 0, sizeof(e));
	for (i = 0; i < n && rc == 0; i++) {
		char c = s[i];
		bool closed = true;

		if (c == '(') {
			closed = skip_comment(s, n, &i);
		} else if (c == '"') {
			closed = copy_quoted(s, n, &i, &e.bare);
		} else if (c == '<') {
			/* The angle address, up to '>'. */
			e.has_angle = true;
			strbuf_truncate(&e.angle, 0);
			for (i++; i < n && s[i] != '>' && closed; i++) {
				if (s[i] == '"')
					closed =
					    copy_quoted(s, n, &i, &e.angle);
				else if (!is_wsp(s[i]))
					strbuf_add(&e.angle, s + i, 1);
			}
			closed = closed && i < n;
		} else if (c == ',' || c == ';') {
			rc = element_end(&e, hostname, a, why);
		} else if (c == ':') {
			/* "Group:" - what came before is the group's name. */
			strbuf_truncate(&e.bare, 0);
		} else if (!is_wsp(c)) {
			strbuf_add(&e.bare, &c, 1);
		}
		if (!closed) {
			why_set(why, "unterminated %s",
			    c == '('   ? "comment"
			    : c == '"' ? "quoted string"
			               : "<address>");
			rc = -1;
		}
	}
	if (rc == 0)
		rc = element_end(&e, hostname, a, why);
	strbuf_free(&e.bare);
	strbuf_free(&e.angle);
	return rc;
}

/* ---- the message ---- */

/*
 * Append one input line (without its line ending) to the message, with
 * CRLF; a lone CR inside it is a line break too.  0 or an exit status.
 */
static int
add_line(struct submission *sub, const char *line, size_t len, int lineno,
    long long limit)
{
	const char *p = line, *end = line + len;

	if (memchr(line, '\0', len) != NULL) {
		fprintf(
		    stderr, "sendmail: line %d contains a NUL octet\n", lineno);
		return EX_DATAERR;
	}
	for (;;) {
		const char *cr = memchr(p, '\r', (size_t)(end - p));
		const char *stop = cr ? cr : end;

		if (stop - p > LINE_MAX_OCTETS) {
			fprintf(stderr,
			    "sendmail: line %d is longer than %d octets (RFC "
			    "5322 section 2.1.1)\n",
			    lineno, LINE_MAX_OCTETS);
			return EX_DATAERR;
		}
		strbuf_add(&sub->raw, p, (size_t)(stop - p));
		strbuf_add(&sub->raw, "\r\n", 2);
		if (cr == NULL)
			break;
		p = cr + 1;
	}
	if ((long long)sub->raw.len > limit) {
		fprintf(stderr,
		    "sendmail: the message is larger than max_message_size "
		    "(%lld octets)\n",
		    limit);
		return EX_DATAERR;
	}
	return 0;
}

/* Read the message on `in`.  0 or an exit status (message printed). */
static int
read_message(FILE *in, bool dot_ends, struct submission *sub)
{
	char *line = NULL;
	size_t cap = 0, len;
	ssize_t n;
	int lineno = 0, rc = 0;

	strbuf_add(&sub->raw, "", 0);
	while ((n = getline(&line, &cap, in)) > 0) {
		len = (size_t)n;
		lineno++;
		if (line[len - 1] == '\n')
			len--;
		if (len > 0 && line[len - 1] == '\r')
			len--;
		/* An mbox "From " line in front is not part of the message. */
		if (lineno == 1 && len >= 5 && memcmp(line, "From ", 5) == 0)
			continue;
		if (dot_ends && len == 1 && line[0] == '.')
			break;
		rc = add_line(
		    sub, line, len, lineno, sub->cfg->max_message_size);
		if (rc != 0)
			break;
	}
	if (rc == 0 && ferror(in)) {
		fprintf(stderr, "sendmail: cannot read the message: %s\n",
		    strerror(errno));
		rc = EX_IOERR;
	}
	free(line);
	return rc;
}

/*
 * Length of the header field at raw[off] with its continuation lines
 * (CRLFs included), or 0 when the line there is not a header field.
 * Every line of raw ends in CRLF.
 */
static size_t
field_len(const struct strbuf *raw, size_t off)
{
	const char *p = raw->p + off, *end = raw->p + raw->len, *nl;
	size_t k = 0;

	while (p + k < end && p[k] > 32 && p[k] < 127 && p[k] != ':')
		k++;
	if (k == 0)
		return 0;
	while (p + k < end && (p[k] == ' ' || p[k] == '\t'))
		k++;
	if (p + k >= end || p[k] != ':')
		return 0;
	for (nl = memchr(p, '\n', (size_t)(end - p));
	     nl != NULL && nl + 1 < end;
	     nl = memchr(nl + 1, '\n', (size_t)(end - nl - 1))) {
		if (nl[1] != ' ' && nl[1] != '\t')
			break;
	}
	return nl ? (size_t)(nl + 1 - p) : (size_t)(end - p);
}

/* Is the field `f` named `name` (any case)?  Its value is after the ':'. */
static bool
field_is(const char *f, const char *name, const char **value)
{
	size_t n = strlen(name), k = n;

	if (ascii_ncasecmp(f, name, n) != 0)
		return false;
	while (f[k] == ' ' || f[k] == '\t')
		k++;
	if (f[k] != ':')
		return false;
	*value = f + k + 1;
	return true;
}

static void
add_piece(struct submission *sub, const char *p, size_t n)
{
	if (n == 0)
		return;
	if (sub->npieces == sub->cap) {
		sub->cap = sub->cap ? sub->cap * 2 : 8;
		sub->pieces = xrealloc(
		    sub->pieces, sizeof(*sub->pieces) * (size_t)sub->cap);
	}
	sub->pieces[sub->npieces].p = p;
	sub->pieces[sub->npieces].n = n;
	sub->npieces++;
	sub->size += (int64_t)n;
}

/* The From header we add: "Full Name" <sender>, or the bare address. */
static void
add_from(struct submission *sub, const char *fullname, const char *addr)
{
	const char *c;
	bool plain = true;

	if (fullname == NULL || fullname[0] == '\0') {
		strbuf_fmt(&sub->added, "From: %s\r\n", addr);
		return;
	}
	for (c = fullname; *c != '\0'; c++)
		if (!(*c == ' ' || (*c >= 'A' && *c <= 'Z') ||
		        (*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') ||
		        strchr("!#$%&'*+-/=?^_`{|}~", *c) != NULL ||
		        (unsigned char)*c >= 0x80))
			plain = false;
	if (plain) {
		strbuf_fmt(&sub->added, "From: %s <%s>\r\n", fullname, addr);
		return;
	}
	strbuf_add(&sub->added, "From: \"", 7);
	for (c = fullname; *c != '\0'; c++) {
		if (*c == '"' || *c == '\\')
			strbuf_add(&sub->added, "\\", 1);
		strbuf_add(&sub->added, c, 1);
	}
	strbuf_fmt(&sub->added, "\" <%s>\r\n", addr);
}

/* What the header section of the input holds. */
struct headers {
	size_t end; /* offset of the empty line, or of the first body line */
	bool blank; /* the section ends with an empty line */
	bool has_from, has_date, has_msgid;
};

/*
 * Scan the header section: note which of From, Date and Message-ID are
 * there and, with -t, collect the To, Cc and Bcc recipients.  0 or an
 * exit status.
 */
static int
scan_headers(struct submission *sub, bool from_headers, struct headers *h)
{
	const char *f, *value;
	size_t off = 0, flen;
	char why[WHY_MAX];

	memset(h, 0, sizeof(*h));
	while (off < sub->raw.len && sub->raw.p[off] != '\r' &&
	       (flen = field_len(&sub->raw, off)) > 0) {
		f = sub->raw.p + off;
		if (field_is(f, "From", &value))
			h->has_from = true;
		else if (field_is(f, "Date", &value))
			h->has_date = true;
		else if (field_is(f, "Message-ID", &value))
			h->has_msgid = true;
		else if (from_headers &&
		         (field_is(f, "To", &value) ||
		             field_is(f, "Cc", &value) ||
		             field_is(f, "Bcc", &value)) &&
		         parse_address_list(value, flen - (size_t)(value - f),
		             sub->cfg->hostname, &sub->rcpts, why) != 0) {
			fprintf(stderr, "sendmail: %.*s header: %s\n",
			    (int)(strcspn(f, " \t:")), f, why);
			return EX_DATAERR;
		}
		off += flen;
	}
	h->end = off;
	h->blank = off < sub->raw.len && sub->raw.p[off] == '\r';
	return 0;
}

/* The headers the message lacks: From, Date, Message-ID. */
static void
add_missing(struct submission *sub, const struct headers *h,
    const char *fullname, const char *login_addr)
{
	char date[64], id[QUEUE_ID_LEN + 1];

	if (!h->has_from)
		add_from(
		    sub, fullname, sub->sender[0] ? sub->sender : login_addr);
	if (!h->has_date) {
		rfc5322_date(date, sizeof(date), (int64_t)time(NULL));
		strbuf_fmt(&sub->added, "Date: %s\r\n", date);
	}
	if (!h->has_msgid) {
		queue_new_id(id);
		strbuf_fmt(&sub->added, "Message-ID: <%s@%s>\r\n", id,
		    sub->cfg->hostname);
	}
}

/*
 * The message as sent, as pieces: the headers we add, the input's headers
 * without Bcc (the other recipients must not see it), an empty line when
 * the body follows the headers without one, the body.
 */
static void
assemble(struct submission *sub, const struct headers *h)
{
	const char *value;
	size_t off = 0, span = 0, flen;

	add_piece(sub, sub->added.p, sub->added.len);
	while (off < h->end) {
		flen = field_len(&sub->raw, off);
		if (field_is(sub->raw.p + off, "Bcc", &value)) {
			add_piece(sub, sub->raw.p + span, off - span);
			span = off + flen;
		}
		off += flen;
	}
	add_piece(sub, sub->raw.p + span, h->end - span);
	if (!h->blank && h->end < sub->raw.len)
		add_piece(sub, "\r\n", 2);
	add_piece(sub, sub->raw.p + h->end, sub->raw.len - h->end);
	sub->eightbit = has_8bit(sub->raw.p, sub->raw.len) ||
	                has_8bit(sub->added.p, sub->added.len);
}

/* Headers, recipients from them (-t), pieces.  0 or an exit status. */
static int
build_message(
    struct submission *sub, const struct opts *o, const char *login_addr)
{
	struct headers h;
	int rc;

	if ((rc = scan_headers(sub, o->from_headers, &h)) != 0)
		return rc;
	add_missing(sub, &h, o->fullname, login_addr);
	assemble(sub, &h);
	return 0;
}

/* ---- submission over SMTP, with the SMTP client of queue/smtpc.h ---- */

/* smtpc_msg's body: the pieces in order. */
static enum res
put_pieces(void *arg, int (*put)(void *, const void *, size_t), void *put_arg,
    char *why)
{
	const struct submission *sub = arg;
	int i;

	for (i = 0; i < sub->npieces; i++)
		if (put(put_arg, sub->pieces[i].p, sub->pieces[i].n) != 0) {
			why_set(why, "4.4.2 the message could not be sent");
			return RES_TEMP;
		}
	return RES_OK;
}

/*
 * The exit status of a transaction, its refusals printed: each
 * recipient's, then the sender's, the message's or why it was not sent
 * (once).  A recipient refused for now means nobody got the message
 * (all_or_none), so the caller may send it all again.
 */
static int
transaction_status(const struct submission *sub, const struct smtpc_rcpt *sr)
{
	int i, accepted = 0, rc = EX_OK;

	for (i = 0; i < sub->rcpts.n; i++) {
		if (sr[i].result == RES_OK) {
			accepted++;
		} else if (sr[i].at == SMTPC_AT_RCPT) {
			fprintf(stderr,
			    "sendmail: recipient <%s> refused: %s\n",
			    sr[i].address, sr[i].reply);
			if (sr[i].result == RES_TEMP)
				rc = EX_TEMPFAIL;
			else if (rc == EX_OK)
				rc = EX_NOUSER;
		}
	}
	for (i = 0; i < sub->rcpts.n; i++) {
		if (sr[i].result == RES_OK || sr[i].at == SMTPC_AT_RCPT)
			continue;
		if (sr[i].at == SMTPC_AT_MAIL)
			fprintf(stderr, "sendmail: sender <%s> refused: %s\n",
			    sub->sender, sr[i].reply);
		else if (sr[i].at == SMTPC_AT_DATA)
			fprintf(stderr, "sendmail: message refused: %s\n",
			    sr[i].reply);
		else
			fprintf(stderr, "sendmail: %s\n", sr[i].reply);
		return sr[i].result == RES_PERM ? EX_UNAVAILABLE : EX_TEMPFAIL;
	}
	return accepted == 0 && rc == EX_OK ? EX_NOUSER : rc;
}

/* Why no relay answered, for the messages of the queue path. */
struct no_relay {
	const char *state;        /* "sluice is not running", ... */
	char detail[WHY_MAX + 2]; /* "; 127.0.0.1:25: connection refused", "" */
};

/*
 * Submit over SMTP to the first /smtp listener.  Returns the exit status;
 * when no relay answers, nothing was sent, *nr says why and the return
 * value is -1.
 */
static int
submit_smtp(const struct submission *sub, struct no_relay *nr)
{
	const struct config *cfg = sub->cfg;
	const struct listen_addr *l = NULL;
	struct smtpc_opts so = {
	    .helo = cfg->hostname,
	    .connect_timeout = cfg->connect_timeout,
	    .command_timeout = cfg->delivery_command_timeout,
	    .data_timeout = cfg->delivery_data_timeout,
	    .tls = OUTBOUND_TLS_NONE,
	    .stop_fd = -1,
	};
	struct smtpc_msg m = {
	    .sender = sub->sender,
	    .size = sub->size,
	    .body_type = sub->eightbit ? BODY_8BITMIME : BODY_7BIT,
	    .smtputf8 = sub->smtputf8,
	    .dsn_ret = RET_NONE,
	    .all_or_none = true,
	    .body = put_pieces,
	    .body_arg = (void *)sub,
	};
	struct sockaddr_storage ss;
	struct smtpc_rcpt *sr;
	struct smtpc *c;
	socklen_t sslen;
	char peer[80], why[WHY_MAX];
	int i, fd, rc;

	for (i = 0; i < cfg->nlisten && l == NULL; i++)
		if (cfg->listen[i].kind == LISTEN_SMTP)
			l = &cfg->listen[i];
	if (l == NULL) {
		nr->state = "sluice has no /smtp listener";
		nr->detail[0] = '\0';
		return -1;
	}
	listener_target(l, &ss, &sslen, peer, sizeof(peer));
	fd = smtpwire_connect(&ss, sslen, deadline_in(cfg->connect_timeout));
	if (fd < 0) {
		nr->state = "sluice is not running";
		why_set_errno(why, peer, errno);
		snprintf(nr->detail, sizeof(nr->detail), "; %s", why);
		return -1;
	}
	if (smtpc_start(fd, peer, &so, &c, why) != RES_OK) {
		fprintf(stderr, "sendmail: %s\n", why);
		return EX_TEMPFAIL;
	}
	sr = xcalloc((size_t)sub->rcpts.n, sizeof(*sr));
	for (i = 0; i < sub->rcpts.n; i++)
		sr[i].address = sub->rcpts.v[i].addr;
	smtpc_send(c, &m, sr, sub->rcpts.n);
	rc = transaction_status(sub, sr);
	smtpc_close(c);
	free(sr);
	return rc;
}

/* ---- submission into the queue file ---- */

/* The message, its envelope and recipients, in one transaction. */
static enum res
store_message(struct store *store, const struct submission *sub, char *why)
{
	struct envelope env;
	struct envelope_rcpt *er;
	struct store_part *parts;
	struct strbuf trace = {0};
	char date[64];
	enum res r;
	int i;

	memset(&env, 0, sizeof(env));
	queue_new_id(env.id);
	env.received_at = (int64_t)time(NULL);
	rfc5322_date(date, sizeof(date), env.received_at);
	strbuf_fmt(&trace,
	    "Received: from local (uid %u)\r\n\tby %s (sluice) with local "
	    "id %s;\r\n\t%s\r\n",
	    (unsigned)geteuid(), sub->cfg->hostname, env.id, date);
	er = xcalloc((size_t)sub->rcpts.n, sizeof(*er));
	for (i = 0; i < sub->rcpts.n; i++) {
		er[i].address = sub->rcpts.v[i].addr;
		er[i].domain = sub->rcpts.v[i].domain;
	}
	env.sender = sub->sender;
	env.rcpts = er;
	env.nrcpts = sub->rcpts.n;
	env.size = sub->size;
	env.stored_size = sub->size + (int64_t)trace.len;
	env.body_type = sub->eightbit ? BODY_8BITMIME : BODY_7BIT;
	env.smtputf8 = sub->smtputf8;
	env.client_ip = "127.0.0.1";
	env.helo = "local";
	env.protocol = "local";
	/* Our Received header, then the message. */
	parts = xcalloc((size_t)sub->npieces + 1, sizeof(*parts));
	parts[0] = (struct store_part){trace.p, trace.len};
	for (i = 0; i < sub->npieces; i++)
		parts[i + 1] =
		    (struct store_part){sub->pieces[i].p, sub->pieces[i].n};
	r = store_begin(store, why);
	if (r == RES_OK)
		r = store_put_mail(
		    store, &env, 0, parts, sub->npieces + 1, why);
	if (r == RES_OK)
		r = store_commit(store, why);
	else
		store_rollback(store);
	free(parts);
	free(er);
	strbuf_free(&trace);
	return r;
}

/*
 * No relay answered: put the message straight into the queue, if it is
 * ours to write.  Returns the exit status.
 */
static int
submit_queue(struct submission *sub, const struct no_relay *nr)
{
	const char *path = sub->cfg->queue_path;
	struct store *store = NULL;
	struct stat st;
	char why[WHY_MAX], shown[512];
	int rc = EX_TEMPFAIL;

	/* A PostgreSQL queue: its own authentication decides who writes. */
	if (store_path_is_database(path)) {
		store_path_shown(path, shown, sizeof(shown));
		path = shown;
		goto open;
	}
	if (stat(path, &st) != 0) {
		if (errno == ENOENT)
			fprintf(stderr,
			    "sendmail: %s and has no queue yet (%s does not "
			    "exist)%s\n",
			    nr->state, path, nr->detail);
		else
			fprintf(stderr,
			    "sendmail: %s and the queue at %s cannot be used: "
			    "%s%s\n",
			    nr->state, path, strerror(errno), nr->detail);
		return EX_TEMPFAIL;
	}
	if (st.st_uid != geteuid()) {
		fprintf(stderr,
		    "sendmail: %s and the queue at %s belongs to another "
		    "user (uid %u)%s\n",
		    nr->state, path, (unsigned)st.st_uid, nr->detail);
		return EX_TEMPFAIL;
	}
open:
	store = store_open_helper(sub->cfg->queue_path, why);
	if (store == NULL || store_helper_writer(store, why) != RES_OK ||
	    store_message(store, sub, why) != RES_OK) {
		fprintf(stderr,
		    "sendmail: %s and the message could not be put into "
		    "the queue at %s: %s%s\n",
		    nr->state, path, why, nr->detail);
		goto out;
	}
	rc = EX_OK;
out:
	store_close(store);
	return rc;
}

/* ---- the command ---- */

/* login@hostname for the user running us. */
static char *
login_address(const char *hostname)
{
	struct passwd *pw = getpwuid(geteuid());
	struct strbuf b = {0};

	if (pw != NULL && pw->pw_name != NULL && pw->pw_name[0] != '\0')
		strbuf_fmt(&b, "%s@%s", pw->pw_name, hostname);
	else
		strbuf_fmt(&b, "%u@%s", (unsigned)geteuid(), hostname);
	return b.p;
}

/*
 * The envelope from the options (the -t part comes with the headers):
 * the sender is -f, else the user's login address.
 */
static int
make_envelope(
    struct submission *sub, const struct opts *o, const char *login_addr)
{
	const char *from = o->sender ? o->sender : login_addr;
	const char *host = sub->cfg->hostname;
	struct address ad;
	char why[WHY_MAX];
	int i;

	if (make_address(from, strlen(from), true, host, &ad, why) != 0) {
		fprintf(stderr, "sendmail: sender: %s%s\n", why,
		    o->sender ? "" : "; give one with -f");
		return EX_USAGE;
	}
	sub->sender = xstrdup(ad.text);
	sub->smtputf8 = ad.utf8;
	for (i = 0; i < o->nrcpts; i++) {
		if (make_address(o->rcpts[i], strlen(o->rcpts[i]), false, host,
		        &ad, why) != 0) {
			fprintf(stderr, "sendmail: recipient: %s\n", why);
			return EX_USAGE;
		}
		addrs_add(&sub->rcpts, &ad);
	}
	return 0;
}

/* After the headers: the recipients are known; check them all. */
static int
check_envelope(struct submission *sub)
{
	if (sub->rcpts.n == 0) {
		fprintf(stderr, "sendmail: no recipients\n");
		return EX_USAGE;
	}
	if (sub->rcpts.n > sub->cfg->max_recipients) {
		fprintf(stderr,
		    "sendmail: %d recipients; the relay takes at most %d "
		    "(max_recipients)\n",
		    sub->rcpts.n, sub->cfg->max_recipients);
		return EX_USAGE;
	}
	sub->smtputf8 = sub->smtputf8 || sub->rcpts.utf8;
	return 0;
}

int
sendmail_cmd(int argc, char **argv)
{
	struct opts o;
	struct config *cfg = NULL;
	struct submission sub;
	const char *source;
	struct no_relay nr;
	char *login_addr = NULL;
	int rc;

	memset(&sub, 0, sizeof(sub));
	rc = parse_options(argc, argv, &o);
	if (rc != 0) {
		if (rc < 0)
			usage(stdout);
		return rc < 0 ? EX_OK : rc;
	}
	cfg = load_config(o.config, &source);
	if (cfg == NULL)
		return EX_CONFIG;
	signal(SIGPIPE, SIG_IGN);
	sub.cfg = cfg;
	login_addr = login_address(cfg->hostname);
	if ((rc = make_envelope(&sub, &o, login_addr)) != 0 ||
	    (rc = read_message(stdin, o.dot_ends, &sub)) != 0 ||
	    (rc = build_message(&sub, &o, login_addr)) != 0 ||
	    (rc = check_envelope(&sub)) != 0)
		goto out;
	if (sub.size > cfg->max_message_size) {
		fprintf(stderr,
		    "sendmail: the message is larger than max_message_size "
		    "(%lld octets)\n",
		    cfg->max_message_size);
		rc = EX_DATAERR;
		goto out;
	}
	rc = submit_smtp(&sub, &nr);
	if (rc < 0)
		rc = submit_queue(&sub, &nr);
out:
	free(sub.sender);
	addrs_free(&sub.rcpts);
	strbuf_free(&sub.raw);
	strbuf_free(&sub.added);
	free(sub.pieces);
	free(login_addr);
	config_free(cfg);
	return rc;
}
