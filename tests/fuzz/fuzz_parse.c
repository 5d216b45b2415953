/*
 * fuzz_parse.c - the command-line parsers (server/parse.c): parse_verb,
 * parse_helo, parse_mail and parse_rcpt with every ESMTP parameter,
 * parse_bdat, and xtext_decode.  The input is one command line without its CRLF
 * (the parsers take C strings: the session refuses a line with a NUL before
 * they see it); it is parsed whole, and its arguments after parse_verb.
 *
 * Properties:
 *  - every output string is NUL-terminated within its field and within
 *    the RFC 5321 section 4.5.3.1 limits; errors are 5xx with a "5.x.y"
 *    reason free of control characters;
 *  - nothing is ignored: an accepted line holds no control octet, its
 *    path appears verbatim followed by ' ' or the end, every parameter
 *    value is what was stored, and the same line with one more octet
 *    (a control character, or an unknown parameter) is refused;
 *  - 8-bit octets are accepted only with SMTPUTF8 and valid UTF-8;
 *  - parsing is pure: the same line parses to the same result twice.
 */
#include "fuzz.h"
#include "parse.h"
#include "util.h"

#include <limits.h>

#define LINE_MAX_FUZZ 8192

static bool
ascii_caseeq(const char *a, const char *b, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++) {
		char x = a[i], y = b[i];

		if (x >= 'a' && x <= 'z')
			x = (char)(x - 32);
		if (y >= 'a' && y <= 'z')
			y = (char)(y - 32);
		if (x != y)
			return false;
	}
	return true;
}

static void
check_why(int code, const char *why)
{
	size_t i, n = strnlen(why, WHY_MAX);

	FUZZ_ASSERT(code >= 500 && code <= 555, "errors are 5xx");
	FUZZ_ASSERT(n < WHY_MAX, "why is NUL-terminated");
	FUZZ_ASSERT(n >= 6 && why[0] == '5' && why[1] == '.',
	    "why starts with an enhanced status code");
	for (i = 0; i < n; i++)
		FUZZ_ASSERT(
		    (unsigned char)why[i] >= 32 && (unsigned char)why[i] < 127,
		    "why is printable ASCII");
}

/* An accepted argument string: no controls; 8-bit only as UTF-8. */
static void
check_octets(const char *s, bool utf8_ok)
{
	size_t i, n = strlen(s);
	bool eight = false;

	for (i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];

		FUZZ_ASSERT(c >= 32 && c != 127, "no control octet accepted");
		if (c >= 0x80)
			eight = true;
	}
	if (eight) {
		FUZZ_ASSERT(utf8_ok, "8-bit accepted only with SMTPUTF8");
		FUZZ_ASSERT(utf8_valid((const unsigned char *)s, n),
		    "8-bit accepted only as valid UTF-8");
	}
}

/* `s` with `tail` appended, malloc'd. */
static char *
with_tail(const char *s, const char *tail)
{
	size_t a = strlen(s), b = strlen(tail);
	char *p = malloc(a + b + 1);

	if (p == NULL)
		abort();
	memcpy(p, s, a);
	memcpy(p + a, tail, b + 1);
	return p;
}

/*
 * The path of an accepted MAIL or RCPT: after the keyword and an optional
 * space, "<", an optional source route, local "@" domain, ">" and then a
 * space or the end.  Returns what follows the '>'.
 */
static const char *
check_path(const char *p, const struct smtp_path *sp, bool postmaster_ok)
{
	size_t ll = strlen(sp->local), dl = strlen(sp->domain);
	const char *gt;

	FUZZ_ASSERT(*p == '<', "path starts with '<'");
	if (sp->null_path) {
		FUZZ_ASSERT(p[1] == '>', "null path is <>");
		FUZZ_ASSERT(ll == 0 && dl == 0, "null path has no parts");
		gt = p + 1;
	} else if (dl == 0) {
		FUZZ_ASSERT(postmaster_ok, "only RCPT takes <Postmaster>");
		FUZZ_ASSERT(strcmp(sp->local, "Postmaster") == 0,
		    "domainless path is Postmaster");
		FUZZ_ASSERT(ascii_caseeq(p + 1, "postmaster>", 11),
		    "<Postmaster> as written");
		gt = p + 11;
	} else {
		/*
		 * The mailbox follows '<', or the ':' ending a source route
		 * (whose domains hold no ':'), and '>' follows it.
		 */
		const char *mb = p + 1;

		if (*mb == '@') {
			mb = strchr(mb, ':');
			FUZZ_ASSERT(mb != NULL, "a source route ends with ':'");
			mb++;
		}
		FUZZ_ASSERT(strncmp(mb, sp->local, ll) == 0 && mb[ll] == '@' &&
		                strncmp(mb + ll + 1, sp->domain, dl) == 0 &&
		                mb[ll + 1 + dl] == '>',
		    "local@domain> is the path's end, verbatim");
		gt = mb + ll + 1 + dl;
		FUZZ_ASSERT(ll <= SMTP_LOCAL_MAX, "local part <= 64");
		FUZZ_ASSERT(dl <= SMTP_DOMAIN_MAX, "domain <= 255");
		FUZZ_ASSERT(
		    (size_t)(gt - p) + 1 <= SMTP_PATH_MAX, "path <= 256");
		FUZZ_ASSERT(sp->quoted == (sp->local[0] == '"'), "quoted flag");
		FUZZ_ASSERT(
		    sp->literal == (sp->domain[0] == '['), "literal flag");
	}
	FUZZ_ASSERT(gt[1] == ' ' || gt[1] == '\0',
	    "nothing but a space or the end follows '>'");
	return gt + 1;
}

/* The next "KEY[=VALUE]" token of the parameters, as spans. */
static bool
next_param(const char **pp, const char **kw, size_t *kwlen, const char **val,
    size_t *vallen)
{
	const char *p = *pp, *eq;

	while (*p == ' ')
		p++;
	if (*p == '\0')
		return false;
	*kw = p;
	while (*p != ' ' && *p != '\0')
		p++;
	*pp = p;
	eq = memchr(*kw, '=', (size_t)(p - *kw));
	*kwlen = eq ? (size_t)(eq - *kw) : (size_t)(p - *kw);
	*val = eq ? eq + 1 : NULL;
	*vallen = eq ? (size_t)(p - eq - 1) : 0;
	return true;
}

static bool
span_eq(const char *s, size_t n, const char *word)
{
	return strlen(word) == n && ascii_caseeq(s, word, n);
}

static bool
span_is_str(const char *s, size_t n, const char *str)
{
	return strlen(str) == n && memcmp(s, str, n) == 0;
}

static void
check_mail(const char *args, bool esmtp)
{
	struct mail_args m, again;
	const char *p, *kw, *val;
	size_t kwlen, vallen;
	char why[WHY_MAX], *longer;
	int code;

	memset(why, 'x', sizeof(why));
	code = parse_mail(args, esmtp, &m, why);
	FUZZ_ASSERT(parse_mail(args, esmtp, &again, why) == code &&
	                (code != 0 || memcmp(&m, &again, sizeof(m)) == 0),
	    "parse_mail is pure");
	if (code != 0) {
		check_why(code, why);
		return;
	}
	check_octets(args, m.smtputf8);
	FUZZ_ASSERT(strnlen(m.from.local, sizeof(m.from.local)) <
	                    sizeof(m.from.local) &&
	                strnlen(m.from.domain, sizeof(m.from.domain)) <
	                    sizeof(m.from.domain) &&
	                strnlen(m.envid, sizeof(m.envid)) < sizeof(m.envid) &&
	                strnlen(m.auth, sizeof(m.auth)) < sizeof(m.auth),
	    "MAIL outputs are NUL-terminated");
	FUZZ_ASSERT(ascii_caseeq(args, "FROM:", 5), "MAIL starts FROM:");
	p = args + 5;
	if (*p == ' ')
		p++;
	p = check_path(p, &m.from, false);
	if (!esmtp) {
		const char *q = p;

		FUZZ_ASSERT(!next_param(&q, &kw, &kwlen, &val, &vallen),
		    "no parameters without EHLO");
	}
	FUZZ_ASSERT(
	    m.from.utf8 == (has_8bit(m.from.local, strlen(m.from.local)) ||
	                       has_8bit(m.from.domain, strlen(m.from.domain))),
	    "utf8 flag");
	/* Every parameter is known and stored as written. */
	while (next_param(&p, &kw, &kwlen, &val, &vallen)) {
		if (span_eq(kw, kwlen, "SIZE")) {
			long long v = 0;
			size_t i;

			FUZZ_ASSERT(val != NULL && vallen >= 1 && vallen <= 20,
			    "SIZE value");
			for (i = 0; i < vallen; i++) {
				FUZZ_ASSERT(val[i] >= '0' && val[i] <= '9',
				    "SIZE digits");
				FUZZ_ASSERT(
				    v <= (LLONG_MAX - (val[i] - '0')) / 10,
				    "SIZE fits");
				v = v * 10 + (val[i] - '0');
			}
			FUZZ_ASSERT(m.size == v, "SIZE stored exactly");
		} else if (span_eq(kw, kwlen, "BODY")) {
			FUZZ_ASSERT(val != NULL, "BODY value");
			FUZZ_ASSERT((m.body == BODY_7BIT &&
			                span_eq(val, vallen, "7BIT")) ||
			                (m.body == BODY_8BITMIME &&
			                    span_eq(val, vallen, "8BITMIME")) ||
			                (m.body == BODY_BINARYMIME &&
			                    span_eq(val, vallen, "BINARYMIME")),
			    "BODY stored");
		} else if (span_eq(kw, kwlen, "SMTPUTF8")) {
			FUZZ_ASSERT(val == NULL && m.smtputf8, "SMTPUTF8");
		} else if (span_eq(kw, kwlen, "RET")) {
			FUZZ_ASSERT(val != NULL &&
			                ((m.ret == RET_FULL &&
			                     span_eq(val, vallen, "FULL")) ||
			                    (m.ret == RET_HDRS &&
			                        span_eq(val, vallen, "HDRS"))),
			    "RET stored");
		} else if (span_eq(kw, kwlen, "ENVID")) {
			char dec[SMTP_ENVID_MAX + 1];

			FUZZ_ASSERT(
			    val != NULL && span_is_str(val, vallen, m.envid),
			    "ENVID stored verbatim");
			FUZZ_ASSERT(vallen <= SMTP_ENVID_MAX, "ENVID <= 100");
			FUZZ_ASSERT(
			    xtext_decode(m.envid, dec, sizeof(dec)) >= 0,
			    "ENVID is xtext");
		} else if (span_eq(kw, kwlen, "AUTH")) {
			FUZZ_ASSERT(
			    val != NULL && span_is_str(val, vallen, m.auth),
			    "AUTH stored verbatim");
		} else {
			FUZZ_ASSERT(false, "only known MAIL parameters");
		}
	}
	/* One octet more is never ignored. */
	longer = with_tail(args, "\x01");
	FUZZ_ASSERT(parse_mail(longer, esmtp, &again, why) != 0,
	    "a control octet after an accepted MAIL is refused");
	free(longer);
	longer = with_tail(args, " X-UNKNOWN");
	FUZZ_ASSERT(parse_mail(longer, esmtp, &again, why) != 0,
	    "an unknown parameter is refused");
	free(longer);
}

static void
check_rcpt(const char *args, bool esmtp, bool smtputf8)
{
	struct rcpt_args r, again;
	const char *p, *kw, *val;
	size_t kwlen, vallen;
	char why[WHY_MAX], *longer;
	int code;

	memset(why, 'x', sizeof(why));
	code = parse_rcpt(args, esmtp, smtputf8, &r, why);
	FUZZ_ASSERT(parse_rcpt(args, esmtp, smtputf8, &again, why) == code &&
	                (code != 0 || memcmp(&r, &again, sizeof(r)) == 0),
	    "parse_rcpt is pure");
	if (code != 0) {
		check_why(code, why);
		return;
	}
	check_octets(args, smtputf8);
	FUZZ_ASSERT(!r.to.null_path, "no null recipient");
	FUZZ_ASSERT(
	    strnlen(r.to.local, sizeof(r.to.local)) < sizeof(r.to.local) &&
	        strnlen(r.to.domain, sizeof(r.to.domain)) <
	            sizeof(r.to.domain) &&
	        strnlen(r.orcpt, sizeof(r.orcpt)) < sizeof(r.orcpt),
	    "RCPT outputs are NUL-terminated");
	FUZZ_ASSERT(ascii_caseeq(args, "TO:", 3), "RCPT starts TO:");
	p = args + 3;
	if (*p == ' ')
		p++;
	p = check_path(p, &r.to, true);
	if (!esmtp) {
		const char *q = p;

		FUZZ_ASSERT(!next_param(&q, &kw, &kwlen, &val, &vallen),
		    "no parameters without EHLO");
	}
	FUZZ_ASSERT(
	    r.to.utf8 == (has_8bit(r.to.local, strlen(r.to.local)) ||
	                     has_8bit(r.to.domain, strlen(r.to.domain))),
	    "utf8 flag");
	if (r.notify & NOTIFY_NEVER)
		FUZZ_ASSERT(r.notify == NOTIFY_NEVER, "NEVER stands alone");
	while (next_param(&p, &kw, &kwlen, &val, &vallen)) {
		if (span_eq(kw, kwlen, "NOTIFY")) {
			FUZZ_ASSERT(val != NULL && r.notify != 0, "NOTIFY");
		} else if (span_eq(kw, kwlen, "ORCPT")) {
			FUZZ_ASSERT(
			    val != NULL && span_is_str(val, vallen, r.orcpt),
			    "ORCPT stored verbatim");
			FUZZ_ASSERT(
			    strchr(r.orcpt, ';') != NULL && r.orcpt[0] != ';',
			    "ORCPT has an address type");
			FUZZ_ASSERT(vallen <= SMTP_ORCPT_MAX, "ORCPT <= 500");
		} else {
			FUZZ_ASSERT(false, "only known RCPT parameters");
		}
	}
	longer = with_tail(args, "\x01");
	FUZZ_ASSERT(parse_rcpt(longer, esmtp, smtputf8, &again, why) != 0,
	    "a control octet after an accepted RCPT is refused");
	free(longer);
	longer = with_tail(args, " X-UNKNOWN");
	FUZZ_ASSERT(parse_rcpt(longer, esmtp, smtputf8, &again, why) != 0,
	    "an unknown parameter is refused");
	free(longer);
}

static void
check_helo(const char *args)
{
	char why[WHY_MAX], *longer;
	size_t n = strlen(args);
	int code;

	memset(why, 'x', sizeof(why));
	code = parse_helo(args, why);
	if (code != 0) {
		check_why(code, why);
		return;
	}
	check_octets(args, true);
	FUZZ_ASSERT(strchr(args, ' ') == NULL, "no space in an EHLO name");
	if (args[0] == '[')
		FUZZ_ASSERT(args[n - 1] == ']', "literal ends with ']'");
	else
		FUZZ_ASSERT(n <= SMTP_DOMAIN_MAX + 1, "EHLO name <= 255");
	longer = with_tail(args, "\x01");
	FUZZ_ASSERT(parse_helo(longer, why) != 0,
	    "a control octet after an accepted EHLO name is refused");
	free(longer);
}

static void
check_verb(const char *line)
{
	const char *args = NULL;
	enum smtp_verb v = parse_verb(line, &args);
	size_t n = strlen(line), w;

	FUZZ_ASSERT(v >= VERB_UNKNOWN && v <= VERB_NOTIMPL, "verb in range");
	FUZZ_ASSERT(args >= line && args <= line + n, "args inside the line");
	w = strcspn(line, " ");
	FUZZ_ASSERT(args == line + w + (line[w] == ' '),
	    "args follow the verb and one space");
	if (v != VERB_UNKNOWN && v != VERB_NOTIMPL)
		FUZZ_ASSERT(strlen(verb_name(v)) == w &&
		                ascii_caseeq(line, verb_name(v), w),
		    "the verb is its name, in any case");
	FUZZ_ASSERT(parse_verb(line, NULL) == v, "parse_verb is pure");
}

static void
check_xtext(const char *s, size_t outlen)
{
	char out[LINE_MAX_FUZZ + 1];
	int n;

	memset(out, 'x', sizeof(out));
	n = xtext_decode(s, out, outlen);
	FUZZ_ASSERT(n >= -1, "xtext result");
	if (n < 0)
		return;
	FUZZ_ASSERT(
	    (size_t)n < outlen && out[n] == '\0' && strlen(out) == (size_t)n,
	    "xtext output NUL-terminated, no NUL inside");
	FUZZ_ASSERT((size_t)n <= strlen(s), "xtext never grows");
}

/* BDAT's arguments: accepted only as digits and an optional " LAST". */
static void
check_bdat(const char *args)
{
	unsigned long long size = 0, again = 0;
	bool last = false, last2 = false;
	char why[WHY_MAX];
	size_t digits = strspn(args, "0123456789");
	int code = parse_bdat(args, &size, &last, why);

	if (code != 0) {
		check_why(code, why);
		return;
	}
	FUZZ_ASSERT(digits > 0, "a size is digits");
	FUZZ_ASSERT(size <= BDAT_SIZE_MAX, "the size is bounded");
	FUZZ_ASSERT(args[digits] == '\0' ||
	                (last && ascii_caseeq(args + digits, " LAST", 6)),
	    "nothing but LAST follows the size");
	FUZZ_ASSERT(parse_bdat(args, &again, &last2, why) == 0 &&
	                again == size && last2 == last,
	    "parse_bdat is pure");
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *line;
	const char *args;
	int e, u;

	if (size > LINE_MAX_FUZZ)
		return 0;
	line = malloc(size + 1);
	if (line == NULL)
		abort();
	memcpy(line, data, size);
	line[size] = '\0';

	check_verb(line);
	parse_verb(line, &args);
	check_helo(line);
	check_helo(args);
	check_bdat(args);
	check_bdat(line);
	for (e = 0; e < 2; e++) {
		check_mail(line, e);
		check_mail(args, e);
		for (u = 0; u < 2; u++) {
			check_rcpt(line, e, u);
			check_rcpt(args, e, u);
		}
	}
	check_xtext(line, 1 + (size > 0 ? data[0] % (LINE_MAX_FUZZ) : 0));
	check_xtext(line, LINE_MAX_FUZZ + 1);
	free(line);
	return 0;
}
