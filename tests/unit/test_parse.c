/*
 * test_parse.c - table-driven unit tests for server/parse.c: command verbs,
 * MAIL and RCPT paths (RFC 5321 section 4.1.2), the relay tricks an open
 * relay check must see through, RFC 5321 section 4.5.3.1 limits, UTF-8
 * (RFC 6531), ESMTP parameters (RFC 1870, 6152, 3030, 3461, 4954), EHLO
 * arguments, xtext and UTF-8 validation.
 *
 * Every case states the reply code and the start of the reply text
 * (enhanced status code, RFC 3463) it expects, and for successes the parsed
 * fields.
 */
#include "parse.h"
#include "util.h"
#include "unit.h"

#include <limits.h>
#include <stdbool.h>
#include <string.h>

/* Expected smtp_path flags, plus the result of path_is_routed(). */
#define F_NULL 0x01
#define F_QUOTED 0x02
#define F_LITERAL 0x04
#define F_UTF8 0x08
#define F_ROUTED 0x10

struct verb_case {
	const char *line;
	enum smtp_verb verb;
	const char *args;
};

struct path_case {
	const char *args;
	bool esmtp;
	bool smtputf8; /* RCPT only: MAIL had SMTPUTF8 */
	int code;
	const char *why; /* prefix of the reply text on error */
	const char *local;
	const char *domain;
	unsigned flags;
};

struct mail_param_case {
	const char *args;
	bool esmtp;
	int code;
	const char *why;
	long long size;
	enum body_type body;
	bool smtputf8;
	enum dsn_ret ret;
	const char *envid;
	const char *auth;
	bool requiretls;
};

struct rcpt_param_case {
	const char *args;
	bool esmtp;
	int code;
	const char *why;
	unsigned notify;
	const char *orcpt;
};

struct helo_case {
	const char *args;
	int code;
};

struct xtext_case {
	const char *in;
	size_t outlen;
	int ret;
	const char *out;
};

struct utf8_case {
	const char *s;
	size_t len;
	bool valid;
};

static const struct verb_case verb_cases[] = {
    {"MAIL FROM:<>", VERB_MAIL, "FROM:<>"},
    {"mail from:<>", VERB_MAIL, "from:<>"},
    {"MaIl FROM:<a@b>", VERB_MAIL, "FROM:<a@b>"},
    {"RCPT TO:<a@b>", VERB_RCPT, "TO:<a@b>"},
    {"HELO client.example", VERB_HELO, "client.example"},
    {"ehlo client.example", VERB_EHLO, "client.example"},
    {"EHLO", VERB_EHLO, ""},
    {"DATA", VERB_DATA, ""},
    {"DATA ", VERB_DATA, ""},
    {"BDAT 100 LAST", VERB_BDAT, "100 LAST"},
    {"RSET", VERB_RSET, ""},
    {"NOOP hello", VERB_NOOP, "hello"},
    {"QUIT", VERB_QUIT, ""},
    {"VRFY user", VERB_VRFY, "user"},
    {"EXPN list", VERB_EXPN, "list"},
    {"HELP", VERB_HELP, ""},
    {"STARTTLS", VERB_STARTTLS, ""},
    {"starttls", VERB_STARTTLS, ""},
    {"AUTH PLAIN dGVzdA==", VERB_AUTH, "PLAIN dGVzdA=="},
    {"MAIL  FROM:<>", VERB_MAIL, " FROM:<>"},
    {"TURN", VERB_NOTIMPL, ""},
    {"ETRN example.com", VERB_NOTIMPL, "example.com"},
    {"ATRN", VERB_NOTIMPL, ""},
    {"SEND FROM:<a@b>", VERB_NOTIMPL, "FROM:<a@b>"},
    {"soml FROM:<a@b>", VERB_NOTIMPL, "FROM:<a@b>"},
    {"SAML FROM:<a@b>", VERB_NOTIMPL, "FROM:<a@b>"},
    {"MAILX FROM:<>", VERB_UNKNOWN, "FROM:<>"},
    {"MAI", VERB_UNKNOWN, ""},
    {" MAIL FROM:<>", VERB_UNKNOWN, "MAIL FROM:<>"},
    {"", VERB_UNKNOWN, ""},
    {"MAIL\tFROM:<>", VERB_UNKNOWN, ""},
    {"MAIL:FROM:<>", VERB_UNKNOWN, ""},
    {"QUIT\r", VERB_UNKNOWN, ""},
    {"STARTTLSX", VERB_UNKNOWN, ""},
    {"XYZZY", VERB_UNKNOWN, ""},
};

static const struct path_case mail_cases[] = {
    /* Null reverse-path and the FROM: keyword. */
    {"FROM:<>", true, false, 0, NULL, "", "", F_NULL},
    {"from:<>", true, false, 0, NULL, "", "", F_NULL},
    {"FROM: <a@b.example>", true, false, 0, NULL, "a", "b.example", 0},
    {"FROM:  <a@b.example>", true, false, 501, "5.1.7", NULL, NULL, 0},
    {"FROM:a@b.example", true, false, 501, "5.1.7 Bad sender address syntax",
        NULL, NULL, 0},
    {"FROM:<a@b.example", true, false, 501, "5.1.7", NULL, NULL, 0},
    {"FROM:<a@b.example>x", true, false, 501, "5.1.7", NULL, NULL, 0},
    {"FROM:", true, false, 501, "5.1.7", NULL, NULL, 0},
    {"FROM <a@b.example>", true, false, 501, "5.5.4", NULL, NULL, 0},
    {"FROM :<a@b.example>", true, false, 501, "5.5.4", NULL, NULL, 0},
    {"", true, false, 501, "5.5.4", NULL, NULL, 0},
    {"TO:<a@b.example>", true, false, 501, "5.5.4", NULL, NULL, 0},
    /* Dot-string local parts. */
    {"FROM:<a.b@x.example>", true, false, 0, NULL, "a.b", "x.example", 0},
    {"FROM:<!#$&'*+-/=?^_`{|}~@x.example>", true, false, 0, NULL,
        "!#$&'*+-/=?^_`{|}~", "x.example", F_ROUTED},
    {"FROM:<a..b@x.example>", true, false, 501, "5.1.7", NULL, NULL, 0},
    {"FROM:<.a@x.example>", true, false, 501, "5.1.7", NULL, NULL, 0},
    {"FROM:<a.@x.example>", true, false, 501, "5.1.7", NULL, NULL, 0},
    {"FROM:<a b@x.example>", true, false, 501, "5.1.7", NULL, NULL, 0},
    {"FROM:<a(b)@x.example>", true, false, 501, "5.1.7", NULL, NULL, 0},
    {"FROM:<@x.example>", true, false, 501, "5.1.7", NULL, NULL, 0},
    {"FROM:<a@>", true, false, 501, "5.1.7", NULL, NULL, 0},
    {"FROM:<a>", true, false, 501, "5.1.7", NULL, NULL, 0},
    {"FROM:<Postmaster>", true, false, 501, "5.1.7", NULL, NULL, 0},
    /* Quoted local parts (quoted-pairSMTP is %d92 %d32-126). */
    {"FROM:<\"john doe\"@x.example>", true, false, 0, NULL, "\"john doe\"",
        "x.example", F_QUOTED},
    {"FROM:<\"a\\\"b\"@x.example>", true, false, 0, NULL, "\"a\\\"b\"",
        "x.example", F_QUOTED},
    {"FROM:<\"a\\\\b\"@x.example>", true, false, 0, NULL, "\"a\\\\b\"",
        "x.example", F_QUOTED},
    {"FROM:<\"a\\ b\"@x.example>", true, false, 0, NULL, "\"a\\ b\"",
        "x.example", F_QUOTED},
    {"FROM:<\"\"@x.example>", true, false, 0, NULL, "\"\"", "x.example",
        F_QUOTED},
    {"FROM:<\"a>b\"@x.example>", true, false, 0, NULL, "\"a>b\"", "x.example",
        F_QUOTED},
    {"FROM:<\"a\\\x01\"@x.example>", true, false, 501, "5.1.7", NULL, NULL, 0},
    {"FROM:<\"a\x01\"@x.example>", true, false, 501, "5.1.7", NULL, NULL, 0},
    {"FROM:<\"abc@x.example>", true, false, 501, "5.1.7", NULL, NULL, 0},
    {"FROM:<\"abc\\\">", true, false, 501, "5.1.7", NULL, NULL, 0},
    {"FROM:<\"a\"b@x.example>", true, false, 501, "5.1.7", NULL, NULL, 0},
    /* Domains: Let-dig [Ldh-str], no trailing dot, case kept. */
    {"FROM:<user@Example.COM>", true, false, 0, NULL, "user", "Example.COM", 0},
    {"FROM:<a@x-y.example>", true, false, 0, NULL, "a", "x-y.example", 0},
    {"FROM:<a@123.example>", true, false, 0, NULL, "a", "123.example", 0},
    {"FROM:<a@-x.example>", true, false, 501, "5.1.7", NULL, NULL, 0},
    {"FROM:<a@x-.example>", true, false, 501, "5.1.7", NULL, NULL, 0},
    {"FROM:<a@x_y.example>", true, false, 501, "5.1.7", NULL, NULL, 0},
    {"FROM:<a@x..example>", true, false, 501, "5.1.7", NULL, NULL, 0},
    {"FROM:<a@.x.example>", true, false, 501, "5.1.7", NULL, NULL, 0},
    {"FROM:<a@x.example.>", true, false, 501, "5.1.7", NULL, NULL, 0},
    /* Address literals (RFC 5321 section 4.1.3). */
    {"FROM:<a@[192.0.2.1]>", true, false, 0, NULL, "a", "[192.0.2.1]",
        F_LITERAL},
    {"FROM:<a@[0.0.0.0]>", true, false, 0, NULL, "a", "[0.0.0.0]", F_LITERAL},
    {"FROM:<a@[255.255.255.255]>", true, false, 0, NULL, "a",
        "[255.255.255.255]", F_LITERAL},
    {"FROM:<a@[1.2.3.256]>", true, false, 501, "5.1.7", NULL, NULL, 0},
    {"FROM:<a@[1.2.3]>", true, false, 501, "5.1.7", NULL, NULL, 0},
    {"FROM:<a@[1.2.3.4.5]>", true, false, 501, "5.1.7", NULL, NULL, 0},
    {"FROM:<a@[1.2.3.4.]>", true, false, 501, "5.1.7", NULL, NULL, 0},
    {"FROM:<a@[1..2.3]>", true, false, 501, "5.1.7", NULL, NULL, 0},
    {"FROM:<a@[1234.1.1.1]>", true, false, 501, "5.1.7", NULL, NULL, 0},
    {"FROM:<a@[1.2.3.4>", true, false, 501, "5.1.7", NULL, NULL, 0},
    {"FROM:<a@[]>", true, false, 501, "5.1.7", NULL, NULL, 0},
    {"FROM:<a@[IPv6:2001:db8::1]>", true, false, 0, NULL, "a",
        "[IPv6:2001:db8::1]", F_LITERAL},
    {"FROM:<a@[ipv6:::1]>", true, false, 0, NULL, "a", "[ipv6:::1]", F_LITERAL},
    {"FROM:<a@[IPv6:::ffff:192.0.2.1]>", true, false, 0, NULL, "a",
        "[IPv6:::ffff:192.0.2.1]", F_LITERAL},
    {"FROM:<a@[IPv6:2001:db8::g]>", true, false, 501, "5.1.7", NULL, NULL, 0},
    {"FROM:<a@[IPv6:192.0.2.1]>", true, false, 501, "5.1.7", NULL, NULL, 0},
    {"FROM:<a@[IPv6:]>", true, false, 501, "5.1.7", NULL, NULL, 0},
    {"FROM:<a@[IPv6:1:2:3:4:5:6:7:8:9]>", true, false, 501, "5.1.7", NULL, NULL,
        0},
    {"FROM:<a@[x-tag:some.content]>", true, false, 0, NULL, "a",
        "[x-tag:some.content]", F_LITERAL},
    {"FROM:<a@[tag:]>", true, false, 501, "5.1.7", NULL, NULL, 0},
    {"FROM:<a@[tag-:x]>", true, false, 501, "5.1.7", NULL, NULL, 0},
    {"FROM:<a@[:x]>", true, false, 501, "5.1.7", NULL, NULL, 0},
    {"FROM:<a@[x.example]>", true, false, 501, "5.1.7", NULL, NULL, 0},
    {"FROM:<a@[tag:a\\b]>", true, false, 501, "5.1.7", NULL, NULL, 0},
    {"FROM:<a@x.example[1.2.3.4]>", true, false, 501, "5.1.7", NULL, NULL, 0},
    /* Source routes: accepted, the route dropped (RFC 5321 appendix C). */
    {"FROM:<@a.example,@b.example:user@d.example>", true, false, 0, NULL,
        "user", "d.example", 0},
    {"FROM:<@a.example:user@d.example>", true, false, 0, NULL, "user",
        "d.example", 0},
    {"FROM:<@a.example;user@d.example>", true, false, 501, "5.1.7", NULL, NULL,
        0},
    {"FROM:<@a.example,user@d.example>", true, false, 501, "5.1.7", NULL, NULL,
        0},
    {"FROM:<@:user@d.example>", true, false, 501, "5.1.7", NULL, NULL, 0},
    {"FROM:<@a.example:>", true, false, 501, "5.1.7", NULL, NULL, 0},
    {"FROM:<@a.example,:user@d.example>", true, false, 501, "5.1.7", NULL, NULL,
        0},
    /* UTF-8: needs SMTPUTF8 (RFC 6531 section 3.4), must be valid. */
    {"FROM:<\xe7\x94\xa8\xe6\x88\xb7@\xe4\xbe\x8b\xe5\xad\x90.example> "
     "SMTPUTF8",
        true, false, 0, NULL, "\xe7\x94\xa8\xe6\x88\xb7",
        "\xe4\xbe\x8b\xe5\xad\x90.example", F_UTF8},
    {"FROM:<\xe7\x94\xa8\xe6\x88\xb7@\xe4\xbe\x8b\xe5\xad\x90.example>", true,
        false, 553, "5.6.7 Non-ASCII address requires SMTPUTF8", NULL, NULL, 0},
    {"FROM:<user@b\xc3\xbc\x63her.example>", true, false, 553, "5.6.7", NULL,
        NULL, 0},
    {"FROM:<\"j\xc3\xbcrg\"@x.example> SMTPUTF8", true, false, 0, NULL,
        "\"j\xc3\xbcrg\"", "x.example", F_QUOTED | F_UTF8},
    {"FROM:<a\xc0\xaf@x.example> SMTPUTF8", true, false, 501, "5.1.7", NULL,
        NULL, 0},
    {"FROM:<a\xed\xa0\x80@x.example> SMTPUTF8", true, false, 501, "5.1.7", NULL,
        NULL, 0},
    {"FROM:<a\x80@x.example> SMTPUTF8", true, false, 501, "5.1.7", NULL, NULL,
        0},
    {"FROM:<a\xc0\xaf@x.example>", true, false, 553, "5.6.7", NULL, NULL, 0},
    {"FROM:<a@[\xc3\xbc:x]> SMTPUTF8", true, false, 501, "5.1.7", NULL, NULL,
        0},
    {"FROM:<\"a\\\xc3\xbc\"@x.example> SMTPUTF8", true, false, 501, "5.1.7",
        NULL, NULL, 0},
    /* Parameters and HELO. */
    {"FROM:<a@b.example>", false, false, 0, NULL, "a", "b.example", 0},
    {"FROM:<a@b.example> ", false, false, 0, NULL, "a", "b.example", 0},
    {"FROM:<a@b.example> SIZE=10", false, false, 555, "5.5.4", NULL, NULL, 0},
    {"FROM:<a@b.example> X-FOO", true, false, 555,
        "5.5.4 Unknown MAIL parameter", NULL, NULL, 0},
};

static const struct path_case rcpt_cases[] = {
    {"TO:<user@relay.example>", true, false, 0, NULL, "user", "relay.example",
        0},
    {"to:<user@relay.example>", true, false, 0, NULL, "user", "relay.example",
        0},
    {"TO: <user@relay.example>", true, false, 0, NULL, "user", "relay.example",
        0},
    {"TO:<>", true, false, 501, "5.1.3", NULL, NULL, 0},
    {"TO:user@relay.example", true, false, 501,
        "5.1.3 Bad recipient address syntax", NULL, NULL, 0},
    {"FROM:<user@relay.example>", true, false, 501, "5.5.4", NULL, NULL, 0},
    {"TO <user@relay.example>", true, false, 501, "5.5.4", NULL, NULL, 0},
    /* RFC 5321 section 4.1.1.3: "<Postmaster>" without a domain. */
    {"TO:<Postmaster>", true, false, 0, NULL, "Postmaster", "", 0},
    {"TO:<postMASTER>", true, false, 0, NULL, "Postmaster", "", 0},
    {"TO:<postmaster@relay.example>", true, false, 0, NULL, "postmaster",
        "relay.example", 0},
    {"TO:<Postmaster >", true, false, 501, "5.1.3", NULL, NULL, 0},
    {"TO:<Postmasters>", true, false, 501, "5.1.3", NULL, NULL, 0},
    {"TO:<@relay.example:Postmaster>", true, false, 501, "5.1.3", NULL, NULL,
        0},
    /* Relay tricks: routing in the local part is flagged. */
    {"TO:<user%other.example@relay.example>", true, false, 0, NULL,
        "user%other.example", "relay.example", F_ROUTED},
    {"TO:<\"user@other.example\"@relay.example>", true, false, 0, NULL,
        "\"user@other.example\"", "relay.example", F_QUOTED | F_ROUTED},
    {"TO:<\"user\\@other.example\"@relay.example>", true, false, 0, NULL,
        "\"user\\@other.example\"", "relay.example", F_QUOTED | F_ROUTED},
    {"TO:<\"user%other\"@relay.example>", true, false, 0, NULL,
        "\"user%other\"", "relay.example", F_QUOTED | F_ROUTED},
    {"TO:<other.example!user@relay.example>", true, false, 0, NULL,
        "other.example!user", "relay.example", F_ROUTED},
    {"TO:<\"plain user\"@relay.example>", true, false, 0, NULL,
        "\"plain user\"", "relay.example", F_QUOTED},
    {"TO:<@relay.example:user@other.example>", true, false, 0, NULL, "user",
        "other.example", 0},
    {"TO:<@relay.example,@hop.example:user@other.example>", true, false, 0,
        NULL, "user", "other.example", 0},
    {"TO:<user@other.example@relay.example>", true, false, 501, "5.1.3", NULL,
        NULL, 0},
    {"TO:<user@relay.example.>", true, false, 501, "5.1.3", NULL, NULL, 0},
    {"TO:<USER@RELAY.EXAMPLE>", true, false, 0, NULL, "USER", "RELAY.EXAMPLE",
        0},
    {"TO:<user@[192.0.2.1]>", true, false, 0, NULL, "user", "[192.0.2.1]",
        F_LITERAL},
    {"TO:<user@[1.2.3.256]>", true, false, 501, "5.1.3", NULL, NULL, 0},
    {"TO:<user@relay.example> x", true, false, 555,
        "5.5.4 Unknown RCPT parameter", NULL, NULL, 0},
    /* UTF-8 depends on the transaction's SMTPUTF8. */
    {"TO:<j\xc3\xbcrg@relay.example>", true, false, 553,
        "5.6.7 Non-ASCII address requires SMTPUTF8", NULL, NULL, 0},
    {"TO:<j\xc3\xbcrg@relay.example>", true, true, 0, NULL, "j\xc3\xbcrg",
        "relay.example", F_UTF8},
    {"TO:<user@b\xc3\xbc\x63her.example>", true, true, 0, NULL, "user",
        "b\xc3\xbc\x63her.example", F_UTF8},
    {"TO:<user@b\xc3\xbc\x63her.example>", true, false, 553, "5.6.7", NULL,
        NULL, 0},
    {"TO:<j\xe0\x80\xbcrg@relay.example>", true, true, 501, "5.1.3", NULL, NULL,
        0},
    {"TO:<j\xed\xbf\xbfrg@relay.example>", true, true, 501, "5.1.3", NULL, NULL,
        0},
    {"TO:<j\xc3@relay.example>", true, true, 501, "5.1.3", NULL, NULL, 0},
    {"TO:<user@relay.example>", true, true, 0, NULL, "user", "relay.example",
        0},
};

static const struct mail_param_case mail_param_cases[] = {
    {"FROM:<a@b.example>", true, 0, NULL, -1, BODY_7BIT, false, RET_NONE, "",
        "", false},
    {"FROM:<a@b.example> SIZE=1000", true, 0, NULL, 1000, BODY_7BIT, false,
        RET_NONE, "", "", false},
    {"FROM:<> size=0", true, 0, NULL, 0, BODY_7BIT, false, RET_NONE, "", "",
        false},
    {"FROM:<a@b.example> SIZE=9223372036854775807", true, 0, NULL, LLONG_MAX,
        BODY_7BIT, false, RET_NONE, "", "", false},
    {"FROM:<a@b.example> SIZE=00000000000000000001", true, 0, NULL, 1,
        BODY_7BIT, false, RET_NONE, "", "", false},
    {"FROM:<a@b.example> SIZE=9223372036854775808", true, 501, "5.5.4", 0,
        BODY_7BIT, false, RET_NONE, "", "", false},
    {"FROM:<a@b.example> SIZE=000000000000000000001", true, 501, "5.5.4", 0,
        BODY_7BIT, false, RET_NONE, "", "", false},
    {"FROM:<a@b.example> SIZE=99999999999999999999", true, 501, "5.5.4", 0,
        BODY_7BIT, false, RET_NONE, "", "", false},
    {"FROM:<a@b.example> SIZE=", true, 501, "5.5.4", 0, BODY_7BIT, false,
        RET_NONE, "", "", false},
    {"FROM:<a@b.example> SIZE", true, 501, "5.5.4", 0, BODY_7BIT, false,
        RET_NONE, "", "", false},
    {"FROM:<a@b.example> SIZE=-1", true, 501, "5.5.4", 0, BODY_7BIT, false,
        RET_NONE, "", "", false},
    {"FROM:<a@b.example> SIZE=1k", true, 501, "5.5.4", 0, BODY_7BIT, false,
        RET_NONE, "", "", false},
    {"FROM:<a@b.example> SIZE=1 SIZE=2", true, 501, "5.5.4", 0, BODY_7BIT,
        false, RET_NONE, "", "", false},
    {"FROM:<a@b.example> SIZE=1 size=1", true, 501, "5.5.4", 0, BODY_7BIT,
        false, RET_NONE, "", "", false},
    {"FROM:<a@b.example> BODY=8BITMIME", true, 0, NULL, -1, BODY_8BITMIME,
        false, RET_NONE, "", "", false},
    {"FROM:<a@b.example> body=8bitmime", true, 0, NULL, -1, BODY_8BITMIME,
        false, RET_NONE, "", "", false},
    {"FROM:<a@b.example> BODY=7BIT", true, 0, NULL, -1, BODY_7BIT, false,
        RET_NONE, "", "", false},
    {"FROM:<a@b.example> BODY=BinaryMIME", true, 0, NULL, -1, BODY_BINARYMIME,
        false, RET_NONE, "", "", false},
    {"FROM:<a@b.example> BODY=9BIT", true, 501, "5.5.4", 0, BODY_7BIT, false,
        RET_NONE, "", "", false},
    {"FROM:<a@b.example> BODY", true, 501, "5.5.4", 0, BODY_7BIT, false,
        RET_NONE, "", "", false},
    {"FROM:<a@b.example> BODY=7BIT BODY=8BITMIME", true, 501, "5.5.4", 0,
        BODY_7BIT, false, RET_NONE, "", "", false},
    {"FROM:<a@b.example> SMTPUTF8", true, 0, NULL, -1, BODY_7BIT, true,
        RET_NONE, "", "", false},
    {"FROM:<a@b.example> smtputf8", true, 0, NULL, -1, BODY_7BIT, true,
        RET_NONE, "", "", false},
    {"FROM:<a@b.example> SMTPUTF8=yes", true, 501, "5.5.4", 0, BODY_7BIT, false,
        RET_NONE, "", "", false},
    {"FROM:<a@b.example> SMTPUTF8 SMTPUTF8", true, 501, "5.5.4", 0, BODY_7BIT,
        false, RET_NONE, "", "", false},
    {"FROM:<a@b.example> REQUIRETLS", true, 0, NULL, -1, BODY_7BIT, false,
        RET_NONE, "", "", true},
    {"FROM:<a@b.example> requiretls SMTPUTF8", true, 0, NULL, -1, BODY_7BIT,
        true, RET_NONE, "", "", true},
    {"FROM:<a@b.example> REQUIRETLS=yes", true, 501, "5.5.4", 0, BODY_7BIT,
        false, RET_NONE, "", "", false},
    {"FROM:<a@b.example> REQUIRETLS REQUIRETLS", true, 501, "5.5.4", 0,
        BODY_7BIT, false, RET_NONE, "", "", false},
    {"FROM:<a@b.example> REQUIRETLS", false, 555, "5.5.4", 0, BODY_7BIT, false,
        RET_NONE, "", "", false},
    {"FROM:<a@b.example> RET=FULL", true, 0, NULL, -1, BODY_7BIT, false,
        RET_FULL, "", "", false},
    {"FROM:<a@b.example> ret=hdrs", true, 0, NULL, -1, BODY_7BIT, false,
        RET_HDRS, "", "", false},
    {"FROM:<a@b.example> RET=NONE", true, 501, "5.5.4", 0, BODY_7BIT, false,
        RET_NONE, "", "", false},
    {"FROM:<a@b.example> RET", true, 501, "5.5.4", 0, BODY_7BIT, false,
        RET_NONE, "", "", false},
    {"FROM:<a@b.example> RET=FULL RET=HDRS", true, 501, "5.5.4", 0, BODY_7BIT,
        false, RET_NONE, "", "", false},
    {"FROM:<a@b.example> ENVID=QQ314159", true, 0, NULL, -1, BODY_7BIT, false,
        RET_NONE, "QQ314159", "", false},
    {"FROM:<a@b.example> ENVID=a+2Bb", true, 0, NULL, -1, BODY_7BIT, false,
        RET_NONE, "a+2Bb", "", false},
    {"FROM:<a@b.example> ENVID=a+2bb", true, 501, "5.5.4", 0, BODY_7BIT, false,
        RET_NONE, "", "", false},
    {"FROM:<a@b.example> ENVID=a+2", true, 501, "5.5.4", 0, BODY_7BIT, false,
        RET_NONE, "", "", false},
    {"FROM:<a@b.example> ENVID", true, 501, "5.5.4", 0, BODY_7BIT, false,
        RET_NONE, "", "", false},
    {"FROM:<a@b.example> ENVID=a ENVID=b", true, 501, "5.5.4", 0, BODY_7BIT,
        false, RET_NONE, "", "", false},
    {"FROM:<a@b.example> AUTH=<>", true, 0, NULL, -1, BODY_7BIT, false,
        RET_NONE, "", "<>", false},
    {"FROM:<a@b.example> AUTH=e+3Dmc2@example.com", true, 0, NULL, -1,
        BODY_7BIT, false, RET_NONE, "", "e+3Dmc2@example.com", false},
    {"FROM:<a@b.example> AUTH=a+zz", true, 501, "5.5.4", 0, BODY_7BIT, false,
        RET_NONE, "", "", false},
    {"FROM:<a@b.example> AUTH", true, 501, "5.5.4", 0, BODY_7BIT, false,
        RET_NONE, "", "", false},
    {"FROM:<a@b.example> AUTH=<> AUTH=<>", true, 501, "5.5.4", 0, BODY_7BIT,
        false, RET_NONE, "", "", false},
    {"FROM:<a@b.example> AUTH=", true, 501, "5.5.4", 0, BODY_7BIT, false,
        RET_NONE, "", "", false},
    {"FROM:<a@b.example> ENVID=", true, 501, "5.5.4", 0, BODY_7BIT, false,
        RET_NONE, "", "", false},
    {"FROM:<a@b.example> ENVID=\xc3\xbc", true, 501, "5.5.4", 0, BODY_7BIT,
        false, RET_NONE, "", "", false},
    {"FROM:<a@b.example> X-FOO=a=b", true, 501, "5.5.4", 0, BODY_7BIT, false,
        RET_NONE, "", "", false},
    {"FROM:<a@b.example> FOO=bar", true, 555, "5.5.4 Unknown MAIL parameter", 0,
        BODY_7BIT, false, RET_NONE, "", "", false},
    {"FROM:<a@b.example> NOTIFY=NEVER", true, 555, "5.5.4", 0, BODY_7BIT, false,
        RET_NONE, "", "", false},
    {"FROM:<a@b.example> SIZE=10", false, 555, "5.5.4", 0, BODY_7BIT, false,
        RET_NONE, "", "", false},
    {"FROM:<a@b.example> SMTPUTF8", false, 555, "5.5.4", 0, BODY_7BIT, false,
        RET_NONE, "", "", false},
    {"FROM:<a@b.example> =10", true, 501, "5.5.4", 0, BODY_7BIT, false,
        RET_NONE, "", "", false},
    {"FROM:<a@b.example> -X=1", true, 501, "5.5.4", 0, BODY_7BIT, false,
        RET_NONE, "", "", false},
    {"FROM:<a@b.example> SIZE==10", true, 501, "5.5.4", 0, BODY_7BIT, false,
        RET_NONE, "", "", false},
    {"FROM:<a@b.example> SIZE=1=0", true, 501, "5.5.4", 0, BODY_7BIT, false,
        RET_NONE, "", "", false},
    {"FROM:<a@b.example> SIZE=10\tBODY=7BIT", true, 501, "5.5.4", 0, BODY_7BIT,
        false, RET_NONE, "", "", false},
    {"FROM:<a@b.example>  SIZE=10   BODY=8BITMIME ", true, 0, NULL, 10,
        BODY_8BITMIME, false, RET_NONE, "", "", false},
    {"FROM:<a@b.example> SIZE=10 BODY=8BITMIME SMTPUTF8 RET=HDRS "
     "ENVID=env+2B1 AUTH=<>",
        true, 0, NULL, 10, BODY_8BITMIME, true, RET_HDRS, "env+2B1", "<>",
        false},
};

static const struct rcpt_param_case rcpt_param_cases[] = {
    {"TO:<a@b.example>", true, 0, NULL, 0, ""},
    {"TO:<a@b.example> NOTIFY=NEVER", true, 0, NULL, NOTIFY_NEVER, ""},
    {"TO:<a@b.example> NOTIFY=SUCCESS,FAILURE,DELAY", true, 0, NULL,
        NOTIFY_SUCCESS | NOTIFY_FAILURE | NOTIFY_DELAY, ""},
    {"TO:<a@b.example> notify=success,delay", true, 0, NULL,
        NOTIFY_SUCCESS | NOTIFY_DELAY, ""},
    {"TO:<a@b.example> NOTIFY=FAILURE", true, 0, NULL, NOTIFY_FAILURE, ""},
    {"TO:<a@b.example> notify=Never", true, 0, NULL, NOTIFY_NEVER, ""},
    {"TO:<a@b.example> NOTIFY=NEVER,SUCCESS", true, 501, "5.5.4", 0, ""},
    {"TO:<a@b.example> NOTIFY=DELAY,NEVER", true, 501, "5.5.4", 0, ""},
    {"TO:<a@b.example> NOTIFY=SUCCESS,", true, 501, "5.5.4", 0, ""},
    {"TO:<a@b.example> NOTIFY=,SUCCESS", true, 501, "5.5.4", 0, ""},
    {"TO:<a@b.example> NOTIFY=SUCCESS,,DELAY", true, 501, "5.5.4", 0, ""},
    {"TO:<a@b.example> NOTIFY=SOMETIMES", true, 501, "5.5.4", 0, ""},
    {"TO:<a@b.example> NOTIFY", true, 501, "5.5.4", 0, ""},
    {"TO:<a@b.example> NOTIFY=", true, 501, "5.5.4", 0, ""},
    {"TO:<a@b.example> NOTIFY=NEVER NOTIFY=NEVER", true, 501, "5.5.4", 0, ""},
    {"TO:<a@b.example> ORCPT=rfc822;user@example.com", true, 0, NULL, 0,
        "rfc822;user@example.com"},
    {"TO:<a@b.example> ORCPT=rfc822;user+2Bx@example.com", true, 0, NULL, 0,
        "rfc822;user+2Bx@example.com"},
    {"TO:<a@b.example> ORCPT=utf-8;j\\x{FC}rg@example.com", true, 0, NULL, 0,
        "utf-8;j\\x{FC}rg@example.com"},
    {"TO:<a@b.example> ORCPT=rfc822", true, 501, "5.5.4", 0, ""},
    {"TO:<a@b.example> ORCPT=;user@example.com", true, 501, "5.5.4", 0, ""},
    {"TO:<a@b.example> ORCPT=rfc822;a+zz", true, 501, "5.5.4", 0, ""},
    {"TO:<a@b.example> ORCPT=rf(c;a", true, 501, "5.5.4", 0, ""},
    {"TO:<a@b.example> ORCPT", true, 501, "5.5.4", 0, ""},
    {"TO:<a@b.example> ORCPT=rfc822;a ORCPT=rfc822;b", true, 501, "5.5.4", 0,
        ""},
    {"TO:<a@b.example> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;a@b.example", true,
        0, NULL, NOTIFY_SUCCESS | NOTIFY_FAILURE, "rfc822;a@b.example"},
    {"TO:<a@b.example> SIZE=10", true, 555, "5.5.4 Unknown RCPT parameter", 0,
        ""},
    {"TO:<a@b.example> NOTIFY=NEVER", false, 555, "5.5.4", 0, ""},
    {"TO:<a@b.example> N_OTIFY=NEVER", true, 501, "5.5.4", 0, ""},
};

static const struct helo_case helo_cases[] = {
    {"mail.example.com", 0},
    {"MAIL.EXAMPLE.COM", 0},
    {"localhost", 0},
    {"my_pc", 0},
    {"host.example.", 0},
    {"xn--bcher-kva.example", 0},
    {"b\xc3\xbc\x63her.example", 0},
    {"192.0.2.1", 0},
    {"[192.0.2.1]", 0},
    {"[IPv6:2001:db8::1]", 0},
    {"", 501},
    {"foo bar", 501},
    {" foo", 501},
    {"foo ", 501},
    {"foo\tbar", 501},
    {"foo\x7f", 501},
    {"a..b", 501},
    {".a", 501},
    {"a..", 501},
    {".", 501},
    {"foo@bar", 501},
    {"[1.2.3.256]", 501},
    {"[192.0.2.1", 501},
    {"[192.0.2.1]x", 501},
    {"b\xc0\xafx.example", 501},
    {"b\xed\xa0\x80x.example", 501},
};

static const struct xtext_case xtext_cases[] = {
    {"", 16, 0, ""},
    {"abc", 16, 3, "abc"},
    {"a+2Bb", 16, 3, "a+b"},
    {"+2B+3D", 16, 2, "+="},
    {"+41", 16, 1, "A"},
    {"user+40example.com", 32, 16, "user@example.com"},
    {"<>", 16, 2, "<>"},
    {"a+2b", 16, -1, NULL},
    {"a+2", 16, -1, NULL},
    {"a+", 16, -1, NULL},
    {"+G0", 16, -1, NULL},
    {"+0", 16, -1, NULL},
    {"a=b", 16, -1, NULL},
    {"a b", 16, -1, NULL},
    {"a\x7f", 16, -1, NULL},
    {"a\x01", 16, -1, NULL},
    {"\xc3\xbc", 16, -1, NULL},
    {"+00", 16, -1, NULL},
    {"abcd", 5, 4, "abcd"},
    {"abcd", 4, -1, NULL},
    {"abcd", 0, -1, NULL},
    {"+41+42", 3, 2, "AB"},
    {"+41+42", 2, -1, NULL},
};

static const struct utf8_case utf8_cases[] = {
    {"", 0, true},
    {"abc", 3, true},
    {"a\0b", 3, true},
    {"\xc3\xbc", 2, true},
    {"\xe2\x82\xac", 3, true},
    {"\xf0\x9f\x98\x80", 4, true},
    {"\xf4\x8f\xbf\xbf", 4, true},  /* U+10FFFF */
    {"\xed\x9f\xbf", 3, true},      /* U+D7FF */
    {"\xee\x80\x80", 3, true},      /* U+E000 */
    {"\xf4\x90\x80\x80", 4, false}, /* U+110000 */
    {"\xc0\xaf", 2, false},         /* overlong '/' */
    {"\xc1\xbf", 2, false},
    {"\xe0\x80\xaf", 3, false},
    {"\xe0\x9f\xbf", 3, false},
    {"\xf0\x80\x80\xaf", 4, false},
    {"\xf0\x8f\xbf\xbf", 4, false},
    {"\xed\xa0\x80", 3, false}, /* surrogate U+D800 */
    {"\xed\xbf\xbf", 3, false}, /* surrogate U+DFFF */
    {"\x80", 1, false},
    {"\xbf", 1, false},
    {"\xc3", 1, false},
    {"\xc3\xbc", 1, false},
    {"\xe2\x82", 2, false},
    {"\xf0\x9f\x98", 3, false},
    {"\xf5\x80\x80\x80", 4, false},
    {"\xfe", 1, false},
    {"\xff", 1, false},
    {"\xc3\x28", 2, false},
    {"\xe2\x28\xa1", 3, false},
    {"a\xc3\xbc\xc3", 4, false},
};

static unsigned
path_flags(const struct smtp_path *p)
{
	return (p->null_path ? F_NULL : 0) | (p->quoted ? F_QUOTED : 0) |
	       (p->literal ? F_LITERAL : 0) | (p->utf8 ? F_UTF8 : 0) |
	       (path_is_routed(p) ? F_ROUTED : 0);
}

static bool
why_is(const char *why, const char *prefix)
{
	return prefix != NULL && strncmp(why, prefix, strlen(prefix)) == 0;
}

/* Checks one path result: the code and reply, or the parsed fields. */
static void
check_path(const char *cmd, const struct path_case *c, int code,
    const struct smtp_path *p, const char *why)
{
	if (c->code != 0) {
		CHECK(code == c->code && why_is(why, c->why),
		    "%s %s -> %d %s (got %d %s)", cmd, c->args, c->code, c->why,
		    code, why);
		return;
	}
	CHECK(code == 0, "%s %s accepted (got %d %s)", cmd, c->args, code, why);
	if (code != 0)
		return;
	CHECK(strcmp(p->local, c->local) == 0 &&
	          strcmp(p->domain, c->domain) == 0,
	    "%s %s -> local [%s] domain [%s] (got [%s] [%s])", cmd, c->args,
	    c->local, c->domain, p->local, p->domain);
	CHECK(path_flags(p) == c->flags, "%s %s flags 0x%x (got 0x%x)", cmd,
	    c->args, c->flags, path_flags(p));
}

static void
test_verbs(void)
{
	size_t i;

	for (i = 0; i < sizeof(verb_cases) / sizeof(verb_cases[0]); i++) {
		const struct verb_case *c = &verb_cases[i];
		const char *args = NULL;
		enum smtp_verb v = parse_verb(c->line, &args);

		CHECK(v == c->verb, "verb [%s] -> %s (got %s)", c->line,
		    verb_name(c->verb), verb_name(v));
		CHECK(args != NULL && strcmp(args, c->args) == 0,
		    "verb [%s] args [%s] (got [%s])", c->line, c->args,
		    args ? args : "(null)");
	}
	CHECK(strcmp(verb_name(VERB_MAIL), "MAIL") == 0, "verb_name MAIL");
	CHECK(strcmp(verb_name(VERB_STARTTLS), "STARTTLS") == 0,
	    "verb_name STARTTLS");
	CHECK(strcmp(verb_name(VERB_UNKNOWN), "UNKNOWN") == 0,
	    "verb_name UNKNOWN");
	CHECK(strcmp(verb_name((enum smtp_verb)999), "UNKNOWN") == 0,
	    "verb_name out of range");
}

static void
test_mail_paths(void)
{
	size_t i;

	for (i = 0; i < sizeof(mail_cases) / sizeof(mail_cases[0]); i++) {
		const struct path_case *c = &mail_cases[i];
		struct mail_args m;
		char why[WHY_MAX] = "";
		int code = parse_mail(c->args, c->esmtp, &m, why);

		check_path("MAIL", c, code, &m.from, why);
	}
}

static void
test_rcpt_paths(void)
{
	size_t i;

	for (i = 0; i < sizeof(rcpt_cases) / sizeof(rcpt_cases[0]); i++) {
		const struct path_case *c = &rcpt_cases[i];
		struct rcpt_args r;
		char why[WHY_MAX] = "";
		int code = parse_rcpt(c->args, c->esmtp, c->smtputf8, &r, why);

		check_path("RCPT", c, code, &r.to, why);
	}
}

/* Fill `dst` with a valid domain of exactly n octets: labels of 'a'. */
static void
make_domain(char *dst, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		dst[i] = (i % 50 == 49 && i != n - 1) ? '.' : 'a';
	dst[n] = '\0';
}

static void
make_run(char *dst, const char *unit, size_t count)
{
	size_t i;

	dst[0] = '\0';
	for (i = 0; i < count; i++)
		strcat(dst, unit);
}

/* RFC 5321 section 4.5.3.1 limits through both MAIL and RCPT. */
static void
test_limits(void)
{
	char local[512], domain[512], line[1200], why[WHY_MAX];
	struct mail_args m;
	struct rcpt_args r;
	int code;

	make_run(local, "a", 64);
	snprintf(line, sizeof(line), "FROM:<%s@x.example>", local);
	code = parse_mail(line, true, &m, why);
	CHECK(code == 0 && strlen(m.from.local) == 64,
	    "MAIL 64-octet local part accepted (got %d)", code);
	snprintf(line, sizeof(line), "TO:<%s@x.example>", local);
	code = parse_rcpt(line, true, false, &r, why);
	CHECK(code == 0 && strlen(r.to.local) == 64,
	    "RCPT 64-octet local part accepted (got %d)", code);

	make_run(local, "a", 65);
	snprintf(line, sizeof(line), "FROM:<%s@x.example>", local);
	code = parse_mail(line, true, &m, why);
	CHECK(code == 501 && why_is(why, "5.1.7 Sender address too long"),
	    "MAIL 65-octet local part -> 501 5.1.7 (got %d %s)", code, why);
	snprintf(line, sizeof(line), "TO:<%s@x.example>", local);
	code = parse_rcpt(line, true, false, &r, why);
	CHECK(code == 501 && why_is(why, "5.1.3"),
	    "RCPT 65-octet local part -> 501 5.1.3 (got %d %s)", code, why);

	/* Quoted form counts as written, quotes included. */
	make_run(local, "a", 62);
	snprintf(line, sizeof(line), "TO:<\"%s\"@x.example>", local);
	code = parse_rcpt(line, true, false, &r, why);
	CHECK(code == 0, "RCPT 64-octet quoted local part (got %d)", code);
	make_run(local, "a", 63);
	snprintf(line, sizeof(line), "TO:<\"%s\"@x.example>", local);
	code = parse_rcpt(line, true, false, &r, why);
	CHECK(code == 501 && why_is(why, "5.1.3"),
	    "RCPT 65-octet quoted local part -> 501 (got %d)", code);

	/* Octets, not characters: 32 u-umlauts fit, 33 do not. */
	make_run(local, "\xc3\xbc", 32);
	snprintf(line, sizeof(line), "TO:<%s@x.example>", local);
	code = parse_rcpt(line, true, true, &r, why);
	CHECK(
	    code == 0 && r.to.utf8, "RCPT 64-octet UTF-8 local (got %d)", code);
	make_run(local, "\xc3\xbc", 33);
	snprintf(line, sizeof(line), "TO:<%s@x.example>", local);
	code = parse_rcpt(line, true, true, &r, why);
	CHECK(code == 501 && why_is(why, "5.1.3"),
	    "RCPT 66-octet UTF-8 local -> 501 (got %d)", code);

	/* "<" a "@" domain ">" is 256 octets with a 252-octet domain. */
	make_domain(domain, 252);
	snprintf(line, sizeof(line), "FROM:<a@%s>", domain);
	code = parse_mail(line, true, &m, why);
	CHECK(code == 0 && strlen(m.from.domain) == 252,
	    "MAIL 256-octet path accepted (got %d %s)", code, why);
	snprintf(line, sizeof(line), "TO:<a@%s>", domain);
	code = parse_rcpt(line, true, false, &r, why);
	CHECK(code == 0, "RCPT 256-octet path accepted (got %d)", code);
	make_domain(domain, 253);
	snprintf(line, sizeof(line), "FROM:<a@%s>", domain);
	code = parse_mail(line, true, &m, why);
	CHECK(code == 501 && why_is(why, "5.1.7 Sender address too long"),
	    "MAIL 257-octet path -> 501 5.1.7 (got %d %s)", code, why);
	snprintf(line, sizeof(line), "TO:<a@%s>", domain);
	code = parse_rcpt(line, true, false, &r, why);
	CHECK(code == 501 && why_is(why, "5.1.3"),
	    "RCPT 257-octet path -> 501 5.1.3 (got %d %s)", code, why);

	/* A source route counts towards the path. */
	make_domain(domain, 250);
	snprintf(line, sizeof(line), "TO:<@%s:a@b.example>", domain);
	code = parse_rcpt(line, true, false, &r, why);
	CHECK(code == 501 && why_is(why, "5.1.3"),
	    "RCPT route over 256 octets -> 501 (got %d)", code);

	/* Domain 255 and 256 (only reachable through a huge path). */
	make_domain(domain, 255);
	snprintf(line, sizeof(line), "TO:<a@%s>", domain);
	code = parse_rcpt(line, true, false, &r, why);
	CHECK(code == 501 && why_is(why, "5.1.3"),
	    "RCPT 255-octet domain -> 501 (got %d)", code);
	make_domain(domain, 400);
	make_run(local, "a", 300);
	snprintf(line, sizeof(line), "TO:<%s@%s>", local, domain);
	code = parse_rcpt(line, true, false, &r, why);
	CHECK(code == 501 && why_is(why, "5.1.3"),
	    "RCPT 300-octet local, 400-octet domain -> 501 (got %d)", code);

	/* EHLO domain: 255 octets fine, 256 not. */
	make_domain(domain, 255);
	CHECK(parse_helo(domain, why) == 0, "EHLO 255-octet domain");
	snprintf(line, sizeof(line), "%s.", domain);
	CHECK(parse_helo(line, why) == 0, "EHLO 255-octet domain + dot");
	make_domain(domain, 256);
	code = parse_helo(domain, why);
	CHECK(code == 501 && why_is(why, "5.5.4"),
	    "EHLO 256-octet domain -> 501 5.5.4 (got %d)", code);

	/* ENVID at most 100 octets, ORCPT at most 500. */
	make_run(local, "e", 100);
	snprintf(line, sizeof(line), "FROM:<> ENVID=%s", local);
	code = parse_mail(line, true, &m, why);
	CHECK(code == 0 && strcmp(m.envid, local) == 0,
	    "MAIL ENVID of 100 octets (got %d)", code);
	make_run(local, "e", 101);
	snprintf(line, sizeof(line), "FROM:<> ENVID=%s", local);
	code = parse_mail(line, true, &m, why);
	CHECK(code == 501 && why_is(why, "5.5.4"),
	    "MAIL ENVID of 101 octets -> 501 (got %d)", code);
	make_run(local, "o", 493);
	snprintf(line, sizeof(line), "TO:<a@b.example> ORCPT=rfc822;%s", local);
	code = parse_rcpt(line, true, false, &r, why);
	CHECK(code == 0 && strlen(r.orcpt) == 500,
	    "RCPT ORCPT of 500 octets (got %d)", code);
	make_run(local, "o", 494);
	snprintf(line, sizeof(line), "TO:<a@b.example> ORCPT=rfc822;%s", local);
	code = parse_rcpt(line, true, false, &r, why);
	CHECK(code == 501 && why_is(why, "5.5.4"),
	    "RCPT ORCPT of 501 octets -> 501 (got %d)", code);

	/* AUTH= larger than its field is refused, not truncated. */
	make_run(local, "x", 500);
	snprintf(line, sizeof(line), "FROM:<> AUTH=%s%s", local, local);
	code = parse_mail(line, true, &m, why);
	CHECK(code == 501 && m.auth[0] == '\0',
	    "MAIL AUTH of 1000 octets -> 501 (got %d)", code);
}

static void
test_mail_params(void)
{
	size_t i;

	for (i = 0; i < sizeof(mail_param_cases) / sizeof(mail_param_cases[0]);
	     i++) {
		const struct mail_param_case *c = &mail_param_cases[i];
		struct mail_args m;
		char why[WHY_MAX] = "";
		int code = parse_mail(c->args, c->esmtp, &m, why);

		if (c->code != 0) {
			CHECK(code == c->code && why_is(why, c->why),
			    "MAIL %s -> %d %s (got %d %s)", c->args, c->code,
			    c->why, code, why);
			continue;
		}
		CHECK(code == 0 && m.size == c->size && m.body == c->body &&
		          m.smtputf8 == c->smtputf8 && m.ret == c->ret &&
		          strcmp(m.envid, c->envid) == 0 &&
		          strcmp(m.auth, c->auth) == 0 &&
		          m.requiretls == c->requiretls,
		    "MAIL %s -> size %lld body %d utf8 %d ret %d envid [%s] "
		    "auth [%s] (got %d %s: %lld %d %d %d [%s] [%s])",
		    c->args, c->size, c->body, c->smtputf8, c->ret, c->envid,
		    c->auth, code, why, m.size, m.body, m.smtputf8, m.ret,
		    m.envid, m.auth);
	}
}

static void
test_rcpt_params(void)
{
	size_t i;

	for (i = 0; i < sizeof(rcpt_param_cases) / sizeof(rcpt_param_cases[0]);
	     i++) {
		const struct rcpt_param_case *c = &rcpt_param_cases[i];
		struct rcpt_args r;
		char why[WHY_MAX] = "";
		int code = parse_rcpt(c->args, c->esmtp, false, &r, why);

		if (c->code != 0) {
			CHECK(code == c->code && why_is(why, c->why),
			    "RCPT %s -> %d %s (got %d %s)", c->args, c->code,
			    c->why, code, why);
			continue;
		}
		CHECK(code == 0 && r.notify == c->notify &&
		          strcmp(r.orcpt, c->orcpt) == 0,
		    "RCPT %s -> notify 0x%x orcpt [%s] (got %d %s: 0x%x [%s])",
		    c->args, c->notify, c->orcpt, code, why, r.notify, r.orcpt);
	}
}

static void
test_helo(void)
{
	size_t i;

	for (i = 0; i < sizeof(helo_cases) / sizeof(helo_cases[0]); i++) {
		const struct helo_case *c = &helo_cases[i];
		char why[WHY_MAX] = "";
		int code = parse_helo(c->args, why);

		CHECK(code == c->code && (code == 0 || why_is(why, "5.5.4")),
		    "EHLO [%s] -> %d (got %d %s)", c->args, c->code, code, why);
	}
}

static void
test_xtext(void)
{
	size_t i;

	for (i = 0; i < sizeof(xtext_cases) / sizeof(xtext_cases[0]); i++) {
		const struct xtext_case *c = &xtext_cases[i];
		char out[64];
		int ret;

		memset(out, 'Z', sizeof(out));
		ret = xtext_decode(c->in, out, c->outlen);
		CHECK(ret == c->ret &&
		          (c->out == NULL || strcmp(out, c->out) == 0) &&
		          (c->outlen >= sizeof(out) || out[c->outlen] == 'Z'),
		    "xtext [%s] outlen %zu -> %d [%s] (got %d)", c->in,
		    c->outlen, c->ret, c->out ? c->out : "", ret);
	}
}

static void
test_utf8(void)
{
	size_t i;

	for (i = 0; i < sizeof(utf8_cases) / sizeof(utf8_cases[0]); i++) {
		const struct utf8_case *c = &utf8_cases[i];
		bool v = utf8_valid((const unsigned char *)c->s, c->len);

		CHECK(v == c->valid, "utf8_valid case %zu (%zu octets) -> %d",
		    i, c->len, c->valid);
	}
}

static void
test_domain_equal(void)
{
	char why[WHY_MAX];
	struct rcpt_args r;

	CHECK(domain_equal("example.com", "EXAMPLE.COM"),
	    "domain_equal ignores case");
	CHECK(domain_equal("Relay.Example", "rELAY.eXAMPLE"),
	    "domain_equal mixed case");
	CHECK(!domain_equal("example.com", "example.org"),
	    "domain_equal different domains");
	CHECK(!domain_equal("example.com", "example.com."),
	    "domain_equal keeps a trailing dot significant");
	CHECK(!domain_equal("a", "ab"), "domain_equal prefix");
	CHECK(domain_equal("", ""), "domain_equal empty");
	CHECK(!domain_equal("b\xc3\xbc", "B\xc3\x9c"),
	    "domain_equal is ASCII-only");
	/* An upper-case recipient domain still matches the relay's own. */
	CHECK(
	    parse_rcpt("TO:<user@RELAY.EXAMPLE>", true, false, &r, why) == 0 &&
	        domain_equal(r.to.domain, "relay.example"),
	    "upper-case recipient domain matches relay.example");
}

static void
test_bdat(void)
{
	static const struct {
		const char *args;
		int code;
		unsigned long long size;
		bool last;
		const char *why;
	} cases[] = {
	    {"0", 0, 0, false, NULL},
	    {"1000", 0, 1000, false, NULL},
	    {"42 LAST", 0, 42, true, NULL},
	    {"42 last", 0, 42, true, NULL},
	    {"0 LAST", 0, 0, true, NULL},
	    {"007", 0, 7, false, NULL},
	    {"4611686018427387904", 0, 1ULL << 62, false, NULL},
	    {"4611686018427387905", 501, 0, false,
	        "5.5.4 Error: BDAT size too large"},
	    {"46116860184273879040", 501, 0, false,
	        "5.5.4 Error: BDAT size too large"},
	    {"99999999999999999999999999", 501, 0, false,
	        "5.5.4 Error: BDAT size too large"},
	    {"", 501, 0, false, "5.5.4 Syntax: BDAT size [LAST]"},
	    {"LAST", 501, 0, false, "5.5.4 Syntax: BDAT size [LAST]"},
	    {"+5", 501, 0, false, "5.5.4 Syntax: BDAT size [LAST]"},
	    {"-5", 501, 0, false, "5.5.4 Syntax: BDAT size [LAST]"},
	    {" 5", 501, 0, false, "5.5.4 Syntax: BDAT size [LAST]"},
	    {"5 ", 501, 0, false, "5.5.4 Syntax: BDAT size [LAST]"},
	    {"5  LAST", 501, 0, false, "5.5.4 Syntax: BDAT size [LAST]"},
	    {"5 LAST ", 501, 0, false, "5.5.4 Syntax: BDAT size [LAST]"},
	    {"5 LASTX", 501, 0, false, "5.5.4 Syntax: BDAT size [LAST]"},
	    {"5x", 501, 0, false, "5.5.4 Syntax: BDAT size [LAST]"},
	    {"0x10", 501, 0, false, "5.5.4 Syntax: BDAT size [LAST]"},
	};
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		unsigned long long size = 99;
		bool last = false;
		char why[WHY_MAX] = "";
		int code = parse_bdat(cases[i].args, &size, &last, why);

		if (cases[i].code == 0)
			CHECK(code == 0 && size == cases[i].size &&
			          last == cases[i].last,
			    "BDAT \"%s\": size %llu%s", cases[i].args,
			    cases[i].size, cases[i].last ? " LAST" : "");
		else
			CHECK(code == cases[i].code &&
			          strcmp(why, cases[i].why) == 0,
			    "BDAT \"%s\": %d %s (got %d %s)", cases[i].args,
			    cases[i].code, cases[i].why, code, why);
	}
}

int
main(void)
{
	test_verbs();
	test_mail_paths();
	test_rcpt_paths();
	test_limits();
	test_mail_params();
	test_rcpt_params();
	test_helo();
	test_xtext();
	test_utf8();
	test_domain_equal();
	test_bdat();
	UNIT_DONE();
}
