/*
 * bounce.c - delivery status notifications (see bounce.h): a
 * multipart/report (RFC 6522) with report-type=delivery-status whose parts
 * are a plain-words explanation (text/plain), the machine-readable report
 * (message/delivery-status, RFC 3464 section 2) and the original message
 * or its header section (RFC 3461 section 4.3, RET).
 *
 * Threads: pure; any thread may call bounce_format at any time.  No globals,
 * no I/O; every call owns its buffers.
 *
 * Invariants:
 *  1. Every line of the output ends in CRLF and stays under 998 octets
 *     (RFC 5322 section 2.1.1), except inside the returned original, which
 *     is copied exactly as given.
 *  2. Text that came from a peer or a sender (addresses, ORCPT, ENVID,
 *     remote host names and replies) passes through clean() before it
 *     reaches the output: runs of CR, LF, HT and SP become one space, other
 *     controls and DEL are dropped, 8-bit octets become '?', and a value
 *     longer than VALUE_MAX octets is cut and ends in "...".  A hostile
 *     reply therefore can never start a header line or a MIME delimiter
 *     line, and folding only ever happens at those single spaces.
 *  3. The MIME boundary occurs in none of the three parts' contents: it is
 *     chosen after the parts are built (RFC 2046 section 5.1.1).  Candidates
 *     derive from the queue ID, the time and a counter, so the output is a
 *     function of the input; a candidate found in a part is replaced by the
 *     next, which ends because a finite text holds finitely many.
 *  4. xtext (ENVID, ORCPT) is decoded for presentation, then cleaned: a
 *     malformed "+" stays as it is, and "+0D+0A" cannot inject a line.
 */
#include "bounce.h"
#include "strbuf.h"
#include "util.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Longest value taken from a peer: with its field name well under 998. */
#define VALUE_MAX 900
/* Fold header fields and wrap text near this column (RFC 5322 2.1.1). */
#define FOLD_COL 78
#define WRAP_COL 76
/* Characters of the queue ID used in the boundary and the Message-ID. */
#define ID_MAX 32
#define DATE_MAX 64

/* A part's content before the boundary is known. */
struct part {
	const char *p;
	size_t len;
};

/* Malloc'd copy of s[0..n) made safe per invariant 2; "" if nothing left. */
static char *
clean_n(const char *s, size_t n)
{
	char *out = xmalloc(VALUE_MAX + 1);
	size_t o = 0;
	bool space = false, cut = false;

	for (size_t i = 0; s != NULL && i < n; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c == ' ' || c == '\t' || c == '\r' || c == '\n') {
			space = o > 0;
			continue;
		}
		if (c < 0x20 || c == 0x7f)
			continue;
		if (o + (space ? 2 : 1) > VALUE_MAX) {
			cut = true;
			break;
		}
		if (space)
			out[o++] = ' ';
		space = false;
		out[o++] = c >= 0x80 ? '?' : (char)c;
	}
	if (cut) {
		o = o > VALUE_MAX - 3 ? VALUE_MAX - 3 : o;
		memcpy(out + o, "...", 3);
		o += 3;
	}
	out[o] = '\0';
	return out;
}

static char *
clean(const char *s)
{
	return clean_n(s, s ? strlen(s) : 0);
}

/* Value of one hex digit as xtext allows it (upper case), or -1. */
static int
xtext_hex(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* RFC 3461 section 4 xtext decoded ("+XX"); may hold CRLF: clean() it. */
static char *
xtext_dec(const char *s, size_t n)
{
	char *out = xmalloc(n + 1);
	size_t o = 0;

	for (size_t i = 0; i < n; i++) {
		int hi, lo;

		if (s[i] == '+' && n - i >= 3 &&
		    (hi = xtext_hex(s[i + 1])) >= 0 &&
		    (lo = xtext_hex(s[i + 2])) >= 0) {
			out[o++] = (char)(hi * 16 + lo);
			i += 2;
			continue;
		}
		out[o++] = s[i];
	}
	out[o] = '\0';
	return out;
}

/* Token safe in a Message-ID and a MIME boundary: [A-Za-z0-9.-], "_". */
static char *
safe_token(const char *s, const char *dflt)
{
	char *out = xmalloc(ID_MAX + 1);
	size_t o = 0;

	for (size_t i = 0; s != NULL && s[i] != '\0' && o < ID_MAX; i++) {
		unsigned char c = (unsigned char)s[i];
		bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		          (c >= '0' && c <= '9') || c == '.' || c == '-';

		out[o++] = ok ? (char)c : '_';
	}
	out[o] = '\0';
	if (o == 0) {
		free(out);
		out = xstrdup(dflt);
	}
	return out;
}

/* Append "Name: value", folded at spaces (RFC 5322 section 2.2.3). */
static void
put_field(struct strbuf *b, const char *name, const char *value)
{
	size_t col = strlen(name) + 2;
	const char *w = value;
	bool first = true;

	strbuf_str(b, name);
	strbuf_str(b, ": ");
	while (*w != '\0') {
		const char *sp = strchr(w, ' ');
		size_t wl = sp ? (size_t)(sp - w) : strlen(w);

		if (!first && col + 1 + wl > FOLD_COL) {
			strbuf_str(b, "\r\n ");
			col = 1;
		} else if (!first) {
			strbuf_str(b, " ");
			col++;
		}
		strbuf_add(b, w, wl);
		col += wl;
		first = false;
		w += wl;
		if (*w == ' ')
			w++;
	}
	strbuf_str(b, "\r\n");
}

/* Append `text` (single spaces, no controls) wrapped at WRAP_COL. */
static void
put_wrapped(struct strbuf *b, const char *indent, const char *text)
{
	size_t ind = strlen(indent), col = ind;
	const char *w = text;
	bool first = true;

	strbuf_str(b, indent);
	while (*w != '\0') {
		const char *sp = strchr(w, ' ');
		size_t wl = sp ? (size_t)(sp - w) : strlen(w);

		if (wl == 0) {
			w++;
			continue;
		}
		if (!first && col + 1 + wl > WRAP_COL) {
			strbuf_str(b, "\r\n");
			strbuf_str(b, indent);
			col = ind;
		} else if (!first) {
			strbuf_str(b, " ");
			col++;
		}
		strbuf_add(b, w, wl);
		col += wl;
		first = false;
		w += wl;
	}
	strbuf_str(b, "\r\n");
}

static void put_para(struct strbuf *b, const char *indent, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Format a paragraph, then wrap it (the arguments are already clean). */
static void
put_para(struct strbuf *b, const char *indent, const char *fmt, ...)
{
	struct strbuf para = {0};
	va_list ap;

	va_start(ap, fmt);
	strbuf_vfmt(&para, fmt, ap);
	va_end(ap);
	put_wrapped(b, indent, para.p);
	strbuf_free(&para);
}

/* RFC 3464 section 2.3.4 status-code: [245] "." 1*3DIGIT "." 1*3DIGIT. */
static bool
status_ok(const char *s)
{
	int digits;

	if (s == NULL || (s[0] != '2' && s[0] != '4' && s[0] != '5') ||
	    s[1] != '.')
		return false;
	s += 2;
	for (int part = 0; part < 2; part++) {
		for (digits = 0; *s >= '0' && *s <= '9'; s++)
			digits++;
		if (digits < 1 || digits > 3)
			return false;
		if (part == 0 && *s++ != '.')
			return false;
	}
	return *s == '\0';
}

/* RFC 3464 section 2.3.3 action-value, or the one the kind implies. */
static const char *
rcpt_action(const struct bounce_rcpt *r, enum bounce_kind kind)
{
	static const char *const ok[] = {
	    "failed", "delayed", "delivered", "relayed", "expanded"};

	for (size_t i = 0; r->action && i < sizeof(ok) / sizeof(ok[0]); i++)
		if (ascii_casecmp(r->action, ok[i]) == 0)
			return ok[i];
	return kind == BOUNCE_FAILURE ? "failed"
	       : kind == BOUNCE_DELAY ? "delayed"
	                              : "delivered";
}

static const char *
rcpt_status(const struct bounce_rcpt *r, enum bounce_kind kind)
{
	if (status_ok(r->status))
		return r->status;
	return kind == BOUNCE_FAILURE ? "5.0.0"
	       : kind == BOUNCE_DELAY ? "4.0.0"
	                              : "2.0.0";
}

/* True when `s` starts like an SMTP reply ("550 ...", "421-..."). */
static bool
looks_smtp(const char *s)
{
	return s[0] >= '2' && s[0] <= '5' && s[1] >= '0' && s[1] <= '9' &&
	       s[2] >= '0' && s[2] <= '9' &&
	       (s[3] == ' ' || s[3] == '-' || s[3] == '\0');
}

/* Original-Recipient value "type; address" from ORCPT, or NULL. */
static char *
orcpt_value(const char *orcpt)
{
	const char *semi;
	char *type, *raw, *addr, *out = NULL;
	struct strbuf v = {0};

	if (orcpt == NULL || (semi = strchr(orcpt, ';')) == NULL)
		return NULL;
	type = clean_n(orcpt, (size_t)(semi - orcpt));
	raw = xtext_dec(semi + 1, strlen(semi + 1));
	addr = clean(raw);
	if (*type != '\0' && *addr != '\0') {
		strbuf_fmt(&v, "%s; %s", type, addr);
		out = v.p;
	}
	free(addr);
	free(raw);
	free(type);
	return out;
}

/* The message/delivery-status content (RFC 3464 section 2.1). */
static void
build_status(struct strbuf *b, const struct bounce_msg *m,
    enum bounce_kind kind, const char *mta)
{
	char date[DATE_MAX];
	char *qid = clean(m->queue_id);

	put_field(b, "Reporting-MTA", mta);
	if (*qid != '\0')
		put_field(b, "X-Sluice-Queue-ID", qid);
	free(qid);
	if (m->envid != NULL) {
		/* Presented decoded, as Original-Recipient is. */
		char *raw = xtext_dec(m->envid, strlen(m->envid));
		char *envid = clean(raw);

		if (*envid != '\0')
			put_field(b, "Original-Envelope-Id", envid);
		free(envid);
		free(raw);
	}
	if (m->arrival != 0) {
		rfc5322_date(date, sizeof(date), m->arrival);
		put_field(b, "Arrival-Date", date);
	}
	for (int i = 0; i < m->nrcpts; i++) {
		const struct bounce_rcpt *r = &m->rcpts[i];
		char *addr = clean(r->address);
		char *orcpt = orcpt_value(r->orcpt);
		char *rmta = clean(r->remote_mta);
		char *diag = clean(r->diagnostic);
		struct strbuf v = {0};

		strbuf_str(b, "\r\n");
		strbuf_fmt(&v, "rfc822; %s", addr);
		put_field(b, "Final-Recipient", v.p);
		if (orcpt != NULL)
			put_field(b, "Original-Recipient", orcpt);
		put_field(b, "Action", rcpt_action(r, kind));
		put_field(b, "Status", rcpt_status(r, kind));
		if (*rmta != '\0') {
			strbuf_truncate(&v, 0);
			strbuf_fmt(&v, "dns; %s", rmta);
			put_field(b, "Remote-MTA", v.p);
		}
		if (*diag != '\0') {
			strbuf_truncate(&v, 0);
			strbuf_fmt(&v, "%s; %s",
			    looks_smtp(diag) ? "smtp" : "X-Sluice", diag);
			put_field(b, "Diagnostic-Code", v.p);
		}
		if (r->last_attempt != 0) {
			rfc5322_date(date, sizeof(date), r->last_attempt);
			put_field(b, "Last-Attempt-Date", date);
		}
		if (r->will_retry_until != 0) { /* RFC 3464 section 2.3.9 */
			rfc5322_date(date, sizeof(date), r->will_retry_until);
			put_field(b, "Will-Retry-Until", date);
		}
		free(v.p);
		free(diag);
		free(rmta);
		free(orcpt);
		free(addr);
	}
}

/* The readable text/plain part: what happened, per recipient, and why. */
static void
build_text(struct strbuf *b, const struct bounce_msg *m, enum bounce_kind kind,
    const char *mta, int returned, size_t size)
{
	char date[DATE_MAX];

	put_para(b, "", "This is the mail system at host %s.", mta);
	strbuf_str(b, "\r\n");
	switch (kind) {
	case BOUNCE_FAILURE:
		put_para(b, "",
		    "I'm sorry to have to tell you that your message could "
		    "not be delivered to one or more of its recipients. The "
		    "problem is permanent: the message will not be retried.");
		break;
	case BOUNCE_DELAY:
		put_para(b, "",
		    "Your message has not yet been delivered to one or more "
		    "of its recipients, because of a temporary problem. This "
		    "is only a warning: you do not need to send the message "
		    "again. Delivery will be retried, and you will be told "
		    "if it finally fails.");
		break;
	case BOUNCE_SUCCESS:
	default:
		put_para(b, "",
		    "Your message was delivered to the recipients listed "
		    "below, as you asked to be told.");
		break;
	}
	if (m->arrival != 0) {
		char *qid = clean(m->queue_id);

		rfc5322_date(date, sizeof(date), m->arrival);
		strbuf_str(b, "\r\n");
		put_para(b, "", "The message was received on %s%s%s%s.", date,
		    *qid ? " (queue ID " : "", qid, *qid ? ")" : "");
		free(qid);
	}
	for (int i = 0; i < m->nrcpts; i++) {
		const struct bounce_rcpt *r = &m->rcpts[i];
		char *addr = clean(r->address);
		char *rmta = clean(r->remote_mta);
		char *diag = clean(r->diagnostic);

		strbuf_str(b, "\r\n");
		put_para(b, "", "<%s>: %s, status %s", addr,
		    rcpt_action(r, kind), rcpt_status(r, kind));
		if (*diag != '\0' && *rmta != '\0')
			put_para(b, "    ", "The mail server %s said: %s", rmta,
			    diag);
		else if (*diag != '\0')
			put_para(b, "    ", "Reason: %s", diag);
		else if (*rmta != '\0')
			put_para(
			    b, "    ", "Handled by the mail server %s.", rmta);
		if (r->last_attempt != 0) {
			rfc5322_date(date, sizeof(date), r->last_attempt);
			put_para(b, "    ", "Last attempt: %s", date);
		}
		free(diag);
		free(rmta);
		free(addr);
	}
	if (returned == 0)
		return;
	strbuf_str(b, "\r\n");
	if (returned == 2)
		put_para(b, "", "A copy of your message is attached.");
	else if (m->ret_hdrs)
		put_para(b, "",
		    "As you asked, only the header section of your message is "
		    "attached.");
	else
		put_para(b, "",
		    "Your message was %zu octets long, more than the %d that "
		    "are returned whole, so only its header section is "
		    "attached.",
		    size, BOUNCE_RETURN_LIMIT);
}

/* splitmix64: spreads the boundary candidates over 64 bits. */
static uint64_t
mix64(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ULL;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
	return x ^ (x >> 31);
}

/* The first boundary candidate found in none of the parts (invariant 3). */
static void
pick_boundary(char *out, size_t outlen, const char *qid, int64_t now,
    const struct part *parts, int nparts)
{
	uint64_t seed = 14695981039346656037ULL; /* FNV-1a */

	for (const char *s = qid; *s != '\0'; s++)
		seed = (seed ^ (unsigned char)*s) * 1099511628211ULL;
	seed ^= mix64((uint64_t)now);
	for (uint64_t n = 0;; n++) {
		bool found = false;

		snprintf(out, outlen, "=_sluice_%s_%016llx", qid,
		    (unsigned long long)mix64(seed + n));
		for (int i = 0; i < nparts && !found; i++)
			found =
			    parts[i].len > 0 && memmem(parts[i].p, parts[i].len,
			                            out, strlen(out)) != NULL;
		if (!found)
			return;
	}
}

/* A notice being assembled: its words, its parts and its boundary. */
struct dsn {
	const struct bounce_msg *m;
	enum bounce_kind kind;
	char *host, *host_tok, *sender, *qid_tok; /* cleaned for a header */
	size_t size;                              /* of the original message */
	int returned;   /* 0 nothing, 1 header section, 2 whole */
	size_t ret_len; /* octets of m->orig returned */
	bool eightbit;  /* in what is returned */
	struct strbuf text, status;
	char boundary[ID_MAX + 32];
};

static const char *const descs[] = {
    [BOUNCE_FAILURE] = "Undelivered Message",
    [BOUNCE_DELAY] = "Delayed Message",
    [BOUNCE_SUCCESS] = "Delivered Message",
};

/* What to return of the original (RFC 3461 section 4.3; bounce.h). */
static void
dsn_returned(struct dsn *d)
{
	const struct bounce_msg *m = d->m;
	const unsigned char *orig = m->orig, *end;
	size_t orig_len = orig ? m->orig_len : 0;

	d->size = m->orig_size > orig_len ? m->orig_size : orig_len;
	if (orig_len == 0)
		return;
	if (!m->ret_hdrs && d->size <= BOUNCE_RETURN_LIMIT &&
	    orig_len == d->size) {
		d->returned = 2;
		d->ret_len = orig_len;
	} else {
		d->returned = 1;
		if (orig_len >= 2 && orig[0] == '\r' && orig[1] == '\n')
			d->ret_len = 0; /* empty header section */
		else if ((end = memmem(orig, orig_len, "\r\n\r\n", 4)) != NULL)
			d->ret_len = (size_t)(end - orig) + 2;
		else
			d->ret_len = orig_len;
		/* A cut CRLF must not leave a bare CR behind. */
		if (d->ret_len > 0 && orig[d->ret_len - 1] == '\r')
			d->ret_len--;
	}
	d->eightbit = has_8bit(orig, d->ret_len);
}

/* The words, the human-readable and machine-readable parts, the
 * boundary (one that none of the parts holds). */
static void
dsn_begin(struct dsn *d, const struct bounce_msg *m)
{
	struct strbuf v = {0};
	struct part parts[3];

	memset(d, 0, sizeof(*d));
	d->m = m;
	d->kind = m->kind <= BOUNCE_SUCCESS ? m->kind : BOUNCE_FAILURE;
	d->host = clean(m->reporting_mta);
	if (*d->host == '\0') {
		free(d->host);
		d->host = xstrdup("localhost");
	}
	d->host_tok = safe_token(d->host, "localhost");
	d->sender = clean(m->sender);
	d->qid_tok = safe_token(m->queue_id, "noid");
	dsn_returned(d);
	build_text(&d->text, m, d->kind, d->host, d->returned, d->size);
	strbuf_fmt(&v, "dns; %s", d->host);
	build_status(&d->status, m, d->kind, v.p);
	free(v.p);
	parts[0] = (struct part){d->text.p, d->text.len};
	parts[1] = (struct part){d->status.p, d->status.len};
	parts[2] = (struct part){(const char *)m->orig, d->ret_len};
	pick_boundary(d->boundary, sizeof(d->boundary), d->qid_tok, m->now,
	    parts, d->returned ? 3 : 2);
}

/* The top-level header (RFC 5322 section 3.6, RFC 3834 section 5). */
static void
dsn_header(const struct dsn *d, struct strbuf *out)
{
	static const char *const subjects[] = {
	    [BOUNCE_FAILURE] = "Undelivered Mail Returned to Sender",
	    [BOUNCE_DELAY] = "Delayed Mail (still being retried)",
	    [BOUNCE_SUCCESS] = "Successful Mail Delivery Report",
	};
	static const char *const kinds[] = {
	    [BOUNCE_FAILURE] = "bounce",
	    [BOUNCE_DELAY] = "delay",
	    [BOUNCE_SUCCESS] = "success",
	};
	struct strbuf v = {0};
	char date[DATE_MAX];

	rfc5322_date(date, sizeof(date), d->m->now);
	put_field(out, "Date", date);
	strbuf_fmt(&v, "Mail Delivery System <MAILER-DAEMON@%s>", d->host);
	put_field(out, "From", v.p);
	strbuf_truncate(&v, 0);
	strbuf_fmt(&v, "<%s>", d->sender);
	put_field(out, "To", v.p);
	put_field(out, "Subject", subjects[d->kind]);
	put_field(out, "Auto-Submitted", "auto-replied");
	/* The time keeps a second delay notice from reusing the ID. */
	strbuf_fmt(out, "Message-ID: <%s.%s.%lld@%s>\r\n", d->qid_tok,
	    kinds[d->kind], (long long)d->m->now, d->host_tok);
	put_field(out, "MIME-Version", "1.0");
	strbuf_fmt(out,
	    "Content-Type: multipart/report; report-type=delivery-status;\r\n"
	    "\tboundary=\"%s\"\r\n",
	    d->boundary);
	if (d->eightbit)
		put_field(out, "Content-Transfer-Encoding", "8bit");
	strbuf_str(out, "\r\nThis is a MIME-encapsulated message.\r\n");
	free(v.p);
}

/* The returned message or its header section, as the third part. */
static void
dsn_returned_part(const struct dsn *d, struct strbuf *out)
{
	struct strbuf v = {0};

	strbuf_fmt(out, "\r\n--%s\r\n", d->boundary);
	if (d->returned == 2) {
		put_field(out, "Content-Type", "message/rfc822");
		put_field(out, "Content-Description", descs[d->kind]);
	} else {
		put_field(out, "Content-Type", "text/rfc822-headers");
		strbuf_fmt(&v, "%s Headers", descs[d->kind]);
		put_field(out, "Content-Description", v.p);
	}
	if (d->eightbit)
		put_field(out, "Content-Transfer-Encoding", "8bit");
	strbuf_str(out, "\r\n");
	strbuf_add(out, d->m->orig, d->ret_len);
	free(v.p);
}

/* The parts; each delimiter's leading CRLF belongs to it. */
static void
dsn_parts(const struct dsn *d, struct strbuf *out)
{
	strbuf_fmt(out,
	    "\r\n--%s\r\n"
	    "Content-Type: text/plain; charset=us-ascii\r\n"
	    "Content-Description: Notification\r\n\r\n",
	    d->boundary);
	strbuf_add(out, d->text.p, d->text.len);
	strbuf_fmt(out,
	    "\r\n--%s\r\n"
	    "Content-Type: message/delivery-status\r\n"
	    "Content-Description: Delivery report\r\n\r\n",
	    d->boundary);
	strbuf_add(out, d->status.p, d->status.len);
	if (d->returned)
		dsn_returned_part(d, out);
	strbuf_fmt(out, "\r\n--%s--\r\n", d->boundary);
}

static void
dsn_free(struct dsn *d)
{
	free(d->status.p);
	free(d->text.p);
	free(d->host_tok);
	free(d->qid_tok);
	free(d->sender);
	free(d->host);
}

char *
bounce_format(const struct bounce_msg *m, size_t *len)
{
	struct strbuf out = {0};
	struct dsn d;

	dsn_begin(&d, m);
	dsn_header(&d, &out);
	dsn_parts(&d, &out);
	dsn_free(&d);
	*len = out.len;
	return out.p;
}
