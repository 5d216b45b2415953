/*
 * parse.c - pure parsers for the ESMTP server: the command verb, MAIL and
 * RCPT paths with their parameters, EHLO/HELO arguments, xtext and UTF-8
 * (contracts in parse.h).
 *
 * Threads: any; there is no state at all, not even a static buffer.
 *
 * Invariants:
 * 1. Input is only ever read up to its terminating NUL: every scanner stops
 *    on a character class that excludes '\0', and only looks one octet
 *    ahead of an octet it has already seen to be non-NUL.
 * 2. Scanning records spans (pointer and length); nothing is copied into a
 *    fixed-size field before its length has been checked against that
 *    field.  Too long is an error, never a truncation.
 * 3. Paths are first checked against the RFC 5321 section 4.1.2 grammar
 *    with non-ASCII octets allowed wherever RFC 6531 section 3.3 allows
 *    them; whether non-ASCII is acceptable (SMTPUTF8) and well-formed UTF-8
 *    is decided afterwards, once MAIL's own SMTPUTF8 parameter is known.
 *
 * Order of checks for MAIL and RCPT, so that replies are predictable: verb
 * argument ("FROM:" / "TO:", 5.5.4), path grammar (5.1.7 / 5.1.3), path
 * lengths (5.1.7 / 5.1.3), parameters left to right (5.5.4), then non-ASCII
 * (553 5.6.7 without SMTPUTF8, 501 for malformed UTF-8).
 */
#include "parse.h"
#include "util.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <limits.h>
#include <string.h>

/* Which command a path belongs to: selects the enhanced status codes. */
struct path_ctx {
	const char *esc;     /* RFC 3463: 5.1.7 sender, 5.1.3 recipient */
	const char *who;     /* "sender" or "recipient" */
	const char *who_cap; /* the same, capitalised */
};

/* Spans of a path found by scan_path(); nothing copied yet. */
struct path_scan {
	const char *start; /* the '<' */
	size_t len;        /* whole path, angle brackets included */
	const char *local;
	size_t local_len;
	const char *domain;
	size_t domain_len;
	bool null_path;
	bool postmaster;
	bool quoted;
	bool literal;
};

/* One esmtp-param (RFC 5321 section 4.1.2), as spans into the line. */
struct param {
	const char *kw;
	size_t kwlen;
	const char *val; /* NULL when there is no "=" */
	size_t vallen;
};

static bool
is_alpha(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
}

static bool
is_digit(unsigned char c)
{
	return c >= '0' && c <= '9';
}

static bool
is_alnum(unsigned char c)
{
	return is_alpha(c) || is_digit(c);
}

/* RFC 5322 section 3.2.3 atext, plus UTF8-non-ascii (RFC 6531 3.3). */
static bool
is_atext(unsigned char c)
{
	if (is_alnum(c) || c >= 0x80)
		return true;
	return c != '\0' && strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL;
}

/* RFC 5321 qtextSMTP, plus UTF8-non-ascii (RFC 6531 section 3.3). */
static bool
is_qtext(unsigned char c)
{
	return (c >= 32 && c <= 126 && c != '"' && c != '\\') || c >= 0x80;
}

/* RFC 5321 section 4.1.3 dcontent: printable ASCII except "[\]". */
static bool
is_dcontent(unsigned char c)
{
	return (c >= 33 && c <= 90) || (c >= 94 && c <= 126);
}

/* Label octet: Ldh (RFC 5321 4.1.2), U-label octets, '_' when lenient. */
static bool
is_label(unsigned char c, bool lenient)
{
	return is_alnum(c) || c == '-' || c >= 0x80 || (lenient && c == '_');
}

/*
 * Domain = sub-domain *("." sub-domain), sub-domain = Let-dig [Ldh-str]:
 * returns the end of the domain, or NULL.  `lenient` (for EHLO, where
 * real clients send "my_pc" and "host.example.") also allows '_', leading
 * or trailing '-' and one trailing dot.
 */
static const char *
scan_domain(const char *p, bool lenient)
{
	for (;;) {
		const char *label = p;

		while (is_label((unsigned char)*p, lenient))
			p++;
		if (p == label)
			return NULL;
		if (!lenient && (label[0] == '-' || p[-1] == '-'))
			return NULL;
		if (*p != '.')
			return p;
		p++;
		if (lenient && !is_label((unsigned char)*p, lenient))
			return p;
	}
}

/* IPv4-address-literal = Snum 3("." Snum), Snum 0..255 (RFC 5321 4.1.3). */
static bool
ipv4_valid(const char *s, size_t n)
{
	size_t i = 0;
	int parts;

	for (parts = 0; parts < 4; parts++) {
		size_t ndig = 0;
		int v = 0;

		if (parts > 0) {
			if (i >= n || s[i] != '.')
				return false;
			i++;
		}
		while (i < n && is_digit((unsigned char)s[i]) && ndig < 3) {
			v = v * 10 + (s[i] - '0');
			i++;
			ndig++;
		}
		if (ndig == 0 || v > 255)
			return false;
	}
	return i == n;
}

/* IPv6-address-literal body, checked by the C library (RFC 4291). */
static bool
ipv6_valid(const char *s, size_t n)
{
	char buf[INET6_ADDRSTRLEN];
	struct in6_addr a;

	if (n == 0 || n >= sizeof(buf))
		return false;
	memcpy(buf, s, n);
	buf[n] = '\0';
	return inet_pton(AF_INET6, buf, &a) == 1;
}

/* Ldh-str = *( ALPHA / DIGIT / "-" ) Let-dig (RFC 5321 section 4.1.2). */
static bool
ldh_valid(const char *s, size_t n)
{
	size_t i;

	if (n == 0 || !is_alnum((unsigned char)s[n - 1]))
		return false;
	for (i = 0; i < n; i++)
		if (!is_alnum((unsigned char)s[i]) && s[i] != '-')
			return false;
	return true;
}

/*
 * The inside of an address literal (RFC 5321 section 4.1.3), already known
 * to be dcontent: IPv4, "IPv6:" address, or Standardized-tag ":" dcontent.
 * A literal that looks like IPv4 or carries the IPv6 tag must be a valid
 * one; it does not fall back to the general form.
 */
static bool
literal_valid(const char *s, size_t n)
{
	const char *colon;
	size_t i;

	if (n >= 5 && ascii_ncasecmp(s, "IPv6:", 5) == 0)
		return ipv6_valid(s + 5, n - 5);
	for (i = 0; i < n; i++)
		if (!is_digit((unsigned char)s[i]) && s[i] != '.')
			break;
	if (i == n)
		return ipv4_valid(s, n);
	if ((colon = memchr(s, ':', n)) == NULL)
		return false;
	return ldh_valid(s, (size_t)(colon - s)) && colon + 1 < s + n;
}

/* address-literal = "[" ... "]": returns the end past ']' or NULL. */
static const char *
scan_literal(const char *p)
{
	const char *c, *q;

	if (*p != '[')
		return NULL;
	c = q = p + 1;
	while (is_dcontent((unsigned char)*q))
		q++;
	if (*q != ']' || !literal_valid(c, (size_t)(q - c)))
		return NULL;
	return q + 1;
}

/* Local-part = Dot-string / Quoted-string: returns its end or NULL. */
static const char *
scan_local(const char *p)
{
	if (*p == '"') {
		for (p++;;) {
			unsigned char c = (unsigned char)*p;

			if (c == '"')
				return p + 1;
			if (c == '\\') {
				/* quoted-pairSMTP: %d92 %d32-126. */
				c = (unsigned char)p[1];
				if (c < 32 || c > 126)
					return NULL;
				p += 2;
			} else if (is_qtext(c))
				p++;
			else
				return NULL;
		}
	}
	for (;;) {
		const char *atom = p;

		while (is_atext((unsigned char)*p))
			p++;
		if (p == atom)
			return NULL;
		if (*p != '.')
			return p;
		p++;
	}
}

/*
 * Path = "<" [ A-d-l ":" ] Mailbox ">" / "<>" (RFC 5321 section 4.1.2).
 * The source route is checked and skipped (appendix C: "SHOULD be
 * ignored").  RCPT also takes "<Postmaster>" (section 4.1.1.3).  Returns
 * the end past '>', or NULL for a syntax error.
 */
static const char *
scan_path(const char *p, bool rcpt, struct path_scan *ps)
{
	memset(ps, 0, sizeof(*ps));
	ps->start = p;
	if (*p++ != '<')
		return NULL;
	if (*p == '>') {
		ps->null_path = true;
	} else if (rcpt && ascii_ncasecmp(p, "postmaster>", 11) == 0) {
		ps->postmaster = true;
		p += 10;
	} else {
		if (*p == '@') {
			/* A-d-l = At-domain *( "," At-domain ) */
			for (;;) {
				if (*p++ != '@')
					return NULL;
				if ((p = scan_domain(p, false)) == NULL)
					return NULL;
				if (*p == ':')
					break;
				if (*p++ != ',')
					return NULL;
			}
			p++;
		}
		ps->local = p;
		ps->quoted = *p == '"';
		if ((p = scan_local(p)) == NULL || *p != '@')
			return NULL;
		ps->local_len = (size_t)(p - ps->local);
		ps->domain = ++p;
		ps->literal = *p == '[';
		p = ps->literal ? scan_literal(p) : scan_domain(p, false);
		if (p == NULL || *p != '>')
			return NULL;
		ps->domain_len = (size_t)(p - ps->domain);
	}
	p++;
	ps->len = (size_t)(p - ps->start);
	return p;
}

/* RFC 5321 section 4.5.3.1: local part 64, domain 255, path 256 octets. */
static int
path_check_len(
    const struct path_scan *ps, const struct path_ctx *ctx, char *why)
{
	if (ps->len > SMTP_PATH_MAX || ps->local_len > SMTP_LOCAL_MAX ||
	    ps->domain_len > SMTP_DOMAIN_MAX) {
		why_set(why, "%s %s address too long", ctx->esc, ctx->who_cap);
		return 501;
	}
	return 0;
}

/*
 * Non-ASCII needs SMTPUTF8 (RFC 6531 section 3.4) and must be valid UTF-8;
 * then the spans are copied into `out`, each length checked again against
 * its field.
 */
static int
path_take(const struct path_scan *ps, bool smtputf8, const struct path_ctx *ctx,
    struct smtp_path *out, char *why)
{
	bool eight = false;
	size_t i;

	memset(out, 0, sizeof(*out));
	for (i = 0; i < ps->len; i++)
		if ((unsigned char)ps->start[i] >= 0x80)
			eight = true;
	if (eight && !smtputf8) {
		why_set(why, "5.6.7 Non-ASCII address requires SMTPUTF8");
		return 553;
	}
	if (eight && !utf8_valid((const unsigned char *)ps->start, ps->len)) {
		why_set(why, "%s Bad %s address syntax", ctx->esc, ctx->who);
		return 501;
	}
	if (ps->local_len >= sizeof(out->local) ||
	    ps->domain_len >= sizeof(out->domain)) {
		why_set(why, "%s %s address too long", ctx->esc, ctx->who_cap);
		return 501;
	}
	if (ps->null_path) {
		out->null_path = true;
		return 0;
	}
	if (ps->postmaster) {
		/* Canonical spelling, as promised in parse.h. */
		memcpy(out->local, "Postmaster", sizeof("Postmaster"));
		return 0;
	}
	memcpy(out->local, ps->local, ps->local_len);
	out->local[ps->local_len] = '\0';
	memcpy(out->domain, ps->domain, ps->domain_len);
	out->domain[ps->domain_len] = '\0';
	out->quoted = ps->quoted;
	out->literal = ps->literal;
	for (i = 0; out->local[i] != '\0'; i++)
		if ((unsigned char)out->local[i] >= 0x80)
			out->utf8 = true;
	for (i = 0; out->domain[i] != '\0'; i++)
		if ((unsigned char)out->domain[i] >= 0x80)
			out->utf8 = true;
	return 0;
}

/* Split the next space-separated token off *pp; false at end of line. */
static bool
param_next(const char **pp, struct param *prm)
{
	const char *p = *pp, *eq;

	while (*p == ' ')
		p++;
	if (*p == '\0')
		return false;
	prm->kw = p;
	while (*p != ' ' && *p != '\0')
		p++;
	*pp = p;
	eq = memchr(prm->kw, '=', (size_t)(p - prm->kw));
	if (eq == NULL) {
		prm->kwlen = (size_t)(p - prm->kw);
		prm->val = NULL;
		prm->vallen = 0;
	} else {
		prm->kwlen = (size_t)(eq - prm->kw);
		prm->val = eq + 1;
		prm->vallen = (size_t)(p - prm->val);
	}
	return true;
}

/*
 * esmtp-keyword = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-") and
 * esmtp-value = 1*(%d33-60 / %d62-126) (RFC 5321 section 4.1.2).
 */
static bool
param_syntax_ok(const struct param *prm)
{
	size_t i;

	if (prm->kwlen == 0 || !is_alnum((unsigned char)prm->kw[0]))
		return false;
	for (i = 1; i < prm->kwlen; i++)
		if (!is_alnum((unsigned char)prm->kw[i]) && prm->kw[i] != '-')
			return false;
	if (prm->val == NULL)
		return true;
	if (prm->vallen == 0)
		return false;
	for (i = 0; i < prm->vallen; i++) {
		unsigned char c = (unsigned char)prm->val[i];

		if (c < 33 || c > 126 || c == '=')
			return false;
	}
	return true;
}

/* Index of the keyword in `names` (case-insensitive), or -1. */
static int
param_lookup(const struct param *prm, const char *const *names, int n)
{
	int i;

	for (i = 0; i < n; i++)
		if (strlen(names[i]) == prm->kwlen &&
		    ascii_ncasecmp(prm->kw, names[i], prm->kwlen) == 0)
			return i;
	return -1;
}

/* Case-insensitive comparison of a span with a keyword. */
static bool
span_is(const char *s, size_t n, const char *word)
{
	return strlen(word) == n && ascii_ncasecmp(s, word, n) == 0;
}

/*
 * Shared checks before a parameter's own: RFC 1869 parameters only after
 * EHLO (555), well-formed (501), known (555), not repeated (501).  Returns
 * the parameter's index in `names` in *idx.
 */
static int
param_common(const struct param *prm, bool esmtp, const char *cmd,
    const char *const *names, int n, unsigned *seen, int *idx, char *why)
{
	if (!esmtp) {
		why_set(why, "5.5.4 %s parameters require EHLO", cmd);
		return 555;
	}
	if (!param_syntax_ok(prm)) {
		why_set(why, "5.5.4 Bad %s parameter syntax", cmd);
		return 501;
	}
	if ((*idx = param_lookup(prm, names, n)) < 0) {
		why_set(why, "5.5.4 Unknown %s parameter", cmd);
		return 555;
	}
	if (*seen & (1u << *idx)) {
		why_set(why, "5.5.4 Duplicate %s parameter", names[*idx]);
		return 501;
	}
	*seen |= 1u << *idx;
	return 0;
}

/* Value of an upper-case hex digit (RFC 3461 section 4), or -1. */
static int
hexval(char h)
{
	if (h >= '0' && h <= '9')
		return h - '0';
	if (h >= 'A' && h <= 'F')
		return h - 'A' + 10;
	return -1;
}

/*
 * RFC 3461 xtext over a span: decodes into `out` when it is not NULL.
 * Returns the decoded length or -1.  "+00" is refused: the decoded value is
 * a C string, and an embedded NUL would silently cut it short.
 */
static int
xtext_span(const char *in, size_t inlen, char *out, size_t outlen)
{
	size_t i, n = 0;

	for (i = 0; i < inlen; i++) {
		unsigned char c = (unsigned char)in[i];

		if (c == '+') {
			int hi, lo;

			/* hexchar = "+" 2(%x30-39 / %x41-46): upper case. */
			if (inlen - i < 3 || (hi = hexval(in[i + 1])) < 0 ||
			    (lo = hexval(in[i + 2])) < 0)
				return -1;
			c = (unsigned char)(hi * 16 + lo);
			if (c == '\0')
				return -1;
			i += 2;
		} else if (c < 33 || c > 126 || c == '=') {
			return -1;
		}
		if (out != NULL) {
			if (n + 1 >= outlen)
				return -1;
			out[n] = (char)c;
		}
		n++;
	}
	if (out != NULL)
		out[n] = '\0';
	return n > INT_MAX ? -1 : (int)n;
}

/* Copy a span into a fixed field; false (no copy) when it does not fit. */
static bool
span_copy(char *dst, size_t dstlen, const char *s, size_t n)
{
	if (n >= dstlen)
		return false;
	memcpy(dst, s, n);
	dst[n] = '\0';
	return true;
}

enum {
	MP_SIZE,
	MP_BODY,
	MP_SMTPUTF8,
	MP_RET,
	MP_ENVID,
	MP_AUTH,
	MP_REQUIRETLS,
	MP_COUNT,
};

/* One MAIL parameter's value: true when valid, stored into `out`. */
static bool
mail_param_value(int idx, const struct param *prm, struct mail_args *out)
{
	const char *v = prm->val;
	size_t n = prm->vallen;

	if (idx == MP_SMTPUTF8) {
		/* RFC 6531 section 3.4: SMTPUTF8 takes no value. */
		out->smtputf8 = true;
		return v == NULL;
	}
	if (idx == MP_REQUIRETLS) {
		/* RFC 8689 section 4.1: no value either. */
		out->requiretls = true;
		return v == NULL;
	}
	if (v == NULL)
		return false;
	switch (idx) {
	case MP_SIZE:
		return size_value_parse(v, n, &out->size);
	case MP_BODY:
		/* RFC 6152 section 2, RFC 3030 section 3. */
		if (span_is(v, n, "7BIT"))
			out->body = BODY_7BIT;
		else if (span_is(v, n, "8BITMIME"))
			out->body = BODY_8BITMIME;
		else if (span_is(v, n, "BINARYMIME"))
			out->body = BODY_BINARYMIME;
		else
			return false;
		return true;
	case MP_RET:
		/* RFC 3461 section 4.3. */
		if (span_is(v, n, "FULL"))
			out->ret = RET_FULL;
		else if (span_is(v, n, "HDRS"))
			out->ret = RET_HDRS;
		else
			return false;
		return true;
	case MP_ENVID:
		/* RFC 3461 section 4.4: xtext, at most 100 octets. */
		return n <= SMTP_ENVID_MAX && xtext_span(v, n, NULL, 0) >= 0 &&
		       span_copy(out->envid, sizeof(out->envid), v, n);
	case MP_AUTH:
		/* RFC 4954 section 5: xtext mailbox or "<>", kept verbatim. */
		return xtext_span(v, n, NULL, 0) >= 0 &&
		       span_copy(out->auth, sizeof(out->auth), v, n);
	}
	return false;
}

static int
mail_params(const char *p, bool esmtp, struct mail_args *out, char *why)
{
	static const char *const names[MP_COUNT] = {
	    "SIZE", "BODY", "SMTPUTF8", "RET", "ENVID", "AUTH", "REQUIRETLS"};
	struct param prm;
	unsigned seen = 0;
	int code, idx;

	while (param_next(&p, &prm)) {
		code = param_common(
		    &prm, esmtp, "MAIL", names, MP_COUNT, &seen, &idx, why);
		if (code != 0)
			return code;
		if (!mail_param_value(idx, &prm, out)) {
			why_set(why, "5.5.4 Invalid %s parameter value",
			    names[idx]);
			return 501;
		}
	}
	return 0;
}

/* RFC 3461 section 4.1: "NEVER" / 1#( "SUCCESS" / "FAILURE" / "DELAY" ). */
static bool
notify_parse(const char *v, size_t n, unsigned *out)
{
	unsigned bits = 0;
	size_t i = 0;

	while (i <= n) {
		size_t j = i;

		while (j < n && v[j] != ',')
			j++;
		if (span_is(v + i, j - i, "NEVER"))
			bits |= NOTIFY_NEVER;
		else if (span_is(v + i, j - i, "SUCCESS"))
			bits |= NOTIFY_SUCCESS;
		else if (span_is(v + i, j - i, "FAILURE"))
			bits |= NOTIFY_FAILURE;
		else if (span_is(v + i, j - i, "DELAY"))
			bits |= NOTIFY_DELAY;
		else
			return false;
		i = j + 1;
	}
	if ((bits & NOTIFY_NEVER) && bits != NOTIFY_NEVER)
		return false;
	*out = bits;
	return true;
}

/* RFC 3461 section 4.2: addr-type ";" xtext, addr-type an atom. */
static bool
orcpt_valid(const char *v, size_t n)
{
	const char *semi = memchr(v, ';', n);
	size_t i, tlen;

	if (n > SMTP_ORCPT_MAX || semi == NULL || semi == v)
		return false;
	tlen = (size_t)(semi - v);
	for (i = 0; i < tlen; i++)
		if (!is_atext((unsigned char)v[i]) ||
		    (unsigned char)v[i] >= 0x80)
			return false;
	return xtext_span(semi + 1, n - tlen - 1, NULL, 0) >= 0;
}

enum {
	RP_NOTIFY,
	RP_ORCPT,
	RP_COUNT,
};

static int
rcpt_params(const char *p, bool esmtp, struct rcpt_args *out, char *why)
{
	static const char *const names[RP_COUNT] = {"NOTIFY", "ORCPT"};
	struct param prm;
	unsigned seen = 0;
	int code, idx;
	bool ok;

	while (param_next(&p, &prm)) {
		code = param_common(
		    &prm, esmtp, "RCPT", names, RP_COUNT, &seen, &idx, why);
		if (code != 0)
			return code;
		if (prm.val == NULL)
			ok = false;
		else if (idx == RP_NOTIFY)
			ok = notify_parse(prm.val, prm.vallen, &out->notify);
		else
			ok = orcpt_valid(prm.val, prm.vallen) &&
			     span_copy(out->orcpt, sizeof(out->orcpt), prm.val,
			         prm.vallen);
		if (!ok) {
			why_set(why, "5.5.4 Invalid %s parameter value",
			    names[idx]);
			return 501;
		}
	}
	return 0;
}

enum smtp_verb
parse_verb(const char *line, const char **args)
{
	static const struct {
		const char *name;
		enum smtp_verb verb;
	} verbs[] = {
	    {"HELO", VERB_HELO},
	    {"EHLO", VERB_EHLO},
	    {"MAIL", VERB_MAIL},
	    {"RCPT", VERB_RCPT},
	    {"DATA", VERB_DATA},
	    {"BDAT", VERB_BDAT},
	    {"RSET", VERB_RSET},
	    {"NOOP", VERB_NOOP},
	    {"QUIT", VERB_QUIT},
	    {"VRFY", VERB_VRFY},
	    {"EXPN", VERB_EXPN},
	    {"HELP", VERB_HELP},
	    {"STARTTLS", VERB_STARTTLS},
	    {"AUTH", VERB_AUTH},
	    /* Obsolete or unsafe: answered 502 (RFC 5321 section 4.2.4). */
	    {"TURN", VERB_NOTIMPL},
	    {"ETRN", VERB_NOTIMPL},
	    {"ATRN", VERB_NOTIMPL},
	    {"SEND", VERB_NOTIMPL},
	    {"SOML", VERB_NOTIMPL},
	    {"SAML", VERB_NOTIMPL},
	};
	enum smtp_verb v = VERB_UNKNOWN;
	size_t i, n = 0;

	while (line[n] != ' ' && line[n] != '\0')
		n++;
	for (i = 0; i < sizeof(verbs) / sizeof(verbs[0]); i++) {
		if (span_is(line, n, verbs[i].name)) {
			v = verbs[i].verb;
			break;
		}
	}
	if (args != NULL)
		*args = line + n + (line[n] == ' ');
	return v;
}

const char *
verb_name(enum smtp_verb v)
{
	switch (v) {
	case VERB_HELO:
		return "HELO";
	case VERB_EHLO:
		return "EHLO";
	case VERB_MAIL:
		return "MAIL";
	case VERB_RCPT:
		return "RCPT";
	case VERB_DATA:
		return "DATA";
	case VERB_BDAT:
		return "BDAT";
	case VERB_RSET:
		return "RSET";
	case VERB_NOOP:
		return "NOOP";
	case VERB_QUIT:
		return "QUIT";
	case VERB_VRFY:
		return "VRFY";
	case VERB_EXPN:
		return "EXPN";
	case VERB_HELP:
		return "HELP";
	case VERB_STARTTLS:
		return "STARTTLS";
	case VERB_AUTH:
		return "AUTH";
	case VERB_NOTIMPL:
		return "NOTIMPL";
	case VERB_UNKNOWN:
		break;
	}
	return "UNKNOWN";
}

/* "FROM:" or "TO:" then one optional space (RFC 5321 section 4.1.1.2). */
static const char *
skip_keyword(const char *args, const char *kw)
{
	size_t n = strlen(kw);

	if (ascii_ncasecmp(args, kw, n) != 0)
		return NULL;
	args += n;
	if (*args == ' ')
		args++;
	return args;
}

int
parse_mail(const char *args, bool esmtp, struct mail_args *out, char *why)
{
	static const struct path_ctx mail_ctx = {"5.1.7", "sender", "Sender"};
	struct path_scan ps;
	const char *p;
	int code;

	memset(out, 0, sizeof(*out));
	out->size = -1;
	if ((p = skip_keyword(args, "FROM:")) == NULL) {
		why_set(why, "5.5.4 Syntax: MAIL FROM:<address>");
		return 501;
	}
	if ((p = scan_path(p, false, &ps)) == NULL ||
	    (*p != ' ' && *p != '\0')) {
		why_set(why, "%s Bad %s address syntax", mail_ctx.esc,
		    mail_ctx.who);
		return 501;
	}
	if ((code = path_check_len(&ps, &mail_ctx, why)) != 0)
		return code;
	if ((code = mail_params(p, esmtp, out, why)) != 0)
		return code;
	return path_take(&ps, out->smtputf8, &mail_ctx, &out->from, why);
}

int
parse_rcpt(const char *args, bool esmtp, bool smtputf8, struct rcpt_args *out,
    char *why)
{
	static const struct path_ctx rcpt_ctx = {
	    "5.1.3", "recipient", "Recipient"};
	struct path_scan ps;
	const char *p;
	int code;

	memset(out, 0, sizeof(*out));
	if ((p = skip_keyword(args, "TO:")) == NULL) {
		why_set(why, "5.5.4 Syntax: RCPT TO:<address>");
		return 501;
	}
	if ((p = scan_path(p, true, &ps)) == NULL ||
	    (*p != ' ' && *p != '\0')) {
		why_set(why, "%s Bad %s address syntax", rcpt_ctx.esc,
		    rcpt_ctx.who);
		return 501;
	}
	if (ps.null_path) {
		/* Forward-path = Path: "<>" is only a Reverse-path. */
		why_set(
		    why, "%s Null recipient address not allowed", rcpt_ctx.esc);
		return 501;
	}
	if ((code = path_check_len(&ps, &rcpt_ctx, why)) != 0)
		return code;
	if ((code = rcpt_params(p, esmtp, out, why)) != 0)
		return code;
	return path_take(&ps, smtputf8, &rcpt_ctx, &out->to, why);
}

bool
path_is_routed(const struct smtp_path *p)
{
	return strpbrk(p->local, "@%!") != NULL;
}

int
parse_helo(const char *args, char *why)
{
	const char *end;
	size_t i, len;
	bool eight = false;

	len = strlen(args);
	if (len == 0) {
		why_set(why, "5.5.4 Syntax: EHLO hostname");
		return 501;
	}
	for (i = 0; i < len; i++) {
		unsigned char c = (unsigned char)args[i];

		if (c <= ' ' || c == 127)
			goto bad;
		if (c >= 0x80)
			eight = true;
	}
	if (eight && !utf8_valid((const unsigned char *)args, len))
		goto bad;
	if (args[0] == '[') {
		end = scan_literal(args);
	} else {
		/* A tolerated trailing dot does not count towards 255. */
		if (len - (args[len - 1] == '.') > SMTP_DOMAIN_MAX)
			goto bad;
		end = scan_domain(args, true);
	}
	if (end == NULL || *end != '\0')
		goto bad;
	return 0;
bad:
	why_set(why, "5.5.4 Invalid EHLO/HELO domain");
	return 501;
}

int
xtext_decode(const char *in, char *out, size_t outlen)
{
	if (outlen == 0)
		return -1;
	out[0] = '\0';
	return xtext_span(in, strlen(in), out, outlen);
}

int
parse_bdat(const char *args, unsigned long long *size, bool *last, char *why)
{
	unsigned long long want = 0;
	const char *p = args;

	if (*p < '0' || *p > '9') {
		why_set(why, "5.5.4 Syntax: BDAT size [LAST]");
		return 501;
	}
	for (; *p >= '0' && *p <= '9'; p++) {
		unsigned d = (unsigned)(*p - '0');

		if (want > (BDAT_SIZE_MAX - d) / 10) {
			why_set(why, "5.5.4 Error: BDAT size too large");
			return 501;
		}
		want = want * 10 + d;
	}
	*last = false;
	if (*p == ' ' && ascii_casecmp(p + 1, "LAST") == 0) {
		*last = true;
	} else if (*p != '\0') {
		why_set(why, "5.5.4 Syntax: BDAT size [LAST]");
		return 501;
	}
	*size = want;
	return 0;
}

bool
domain_equal(const char *a, const char *b)
{
	return ascii_casecmp(a, b) == 0;
}
