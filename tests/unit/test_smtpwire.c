/*
 * test_smtpwire.c - the client side of the wire (queue/smtpwire.c): the
 * reply checks (codes, multi-line replies whose lines disagree, NUL,
 * line limits), EHLO keywords, and the dot-stuffer, alone and as the
 * server's DATA decoder reads it.  Replies are also read through a real
 * conn over a socketpair.
 */
#include "conn.h"
#include "data.h"
#include "smtpwire.h"
#include "util.h"
#include "unit.h"

#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

/* -- replies ---------------------------------------------------------- */

struct rcase {
	const char *name;
	const char *lines[4]; /* NULL-terminated */
	int result;           /* of the last line fed: 1, 0 or -1 */
	int code;
	const char *text;
};

static const struct rcase rcases[] = {
    {"one line", {"250 ok", NULL}, 1, 250, "250 ok"},
    {"code only", {"354", NULL}, 1, 354, "354"},
    {"multi-line", {"250-mx.example", "250-SIZE 10", "250 8BITMIME", NULL}, 1,
        250, "250 mx.example"},
    {"continues", {"250-mx.example", NULL}, 0, 0, "250 mx.example"},
    {"5-x is not a code", {"5-x", NULL}, -1, 0, "5-x"},
    {"2xx is not a code", {"2xx", NULL}, -1, 0, "2xx"},
    {"25 is not a code", {"25", NULL}, -1, 0, "25"},
    {"2.. is not a code", {"2.. ok", NULL}, -1, 0, "2.. ok"},
    {"160 second digit", {"160 x", NULL}, -1, 0, "160 x"},
    {"600 first digit", {"600 x", NULL}, -1, 0, "600 x"},
    {"no separator", {"250ok", NULL}, -1, 0, "250ok"},
    {"codes differ", {"250-a", "550 b", NULL}, -1, 0, "550 b"},
    {"codes differ late", {"250-a", "250-b", "251 c", NULL}, -1, 0, "251 c"},
    {"control sanitized", {"550 a\tb\x01", NULL}, 1, 550, "550 a?b?"},
    {"empty text", {"250-", "250 ", NULL}, 1, 250, "250 "},
};

/* Feed a case's lines; the result of the last one fed. */
static int
feed_lines(const struct rcase *c, struct smtp_reply *r)
{
	struct smtpwire_reply_state st = {0, 0};
	int i, rc = 0;

	r->code = 0;
	r->text[0] = '\0';
	for (i = 0; c->lines[i] != NULL; i++) {
		rc = smtpwire_reply_line(&st, r, c->lines[i],
		    strlen(c->lines[i]), false, NULL, NULL);
		if (rc != 0)
			break;
	}
	return rc;
}

static void
test_reply_lines(void)
{
	size_t i;

	for (i = 0; i < sizeof(rcases) / sizeof(rcases[0]); i++) {
		const struct rcase *c = &rcases[i];
		struct smtp_reply r;
		int rc = feed_lines(c, &r);

		CHECK(rc == c->result && r.code == c->code &&
		          strcmp(r.text, c->text) == 0,
		    "reply %s: result %d code %d text \"%s\"", c->name, rc,
		    r.code, r.text);
	}
}

static void
collect(void *arg, const char *line)
{
	char *buf = arg;

	strcat(buf, line);
	strcat(buf, "|");
}

static void
test_reply_limits(void)
{
	struct smtpwire_reply_state st = {0, 0};
	struct smtp_reply r;
	char seen[256] = "", line[] = "250-x";
	int i, rc = 0;

	/* A NUL inside a line is not a reply line. */
	rc = smtpwire_reply_line(&st, &r, "250 a\0b", 7, false, NULL, NULL);
	CHECK(rc == -1 && r.code == 0, "reply with a NUL is malformed");

	/* SMTPWIRE_LINES_MAX lines, then one more. */
	memset(&st, 0, sizeof(st));
	rc = 0;
	for (i = 0; i < SMTPWIRE_LINES_MAX && rc == 0; i++)
		rc = smtpwire_reply_line(
		    &st, &r, line, strlen(line), false, NULL, NULL);
	CHECK(rc == 0 && i == SMTPWIRE_LINES_MAX, "100 lines are fine");
	rc = smtpwire_reply_line(&st, &r, "250 x", 5, false, NULL, NULL);
	CHECK(rc == -1, "line 101 is malformed");

	/* `each` sees the lines after the first, never a cut one. */
	memset(&st, 0, sizeof(st));
	smtpwire_reply_line(&st, &r, "250-mx", 6, false, collect, seen);
	smtpwire_reply_line(&st, &r, "250-SIZE 99", 11, true, collect, seen);
	smtpwire_reply_line(&st, &r, "250-DSN", 7, false, collect, seen);
	rc = smtpwire_reply_line(
	    &st, &r, "250 AUTH PLAIN", 14, false, collect, seen);
	CHECK(rc == 1 && strcmp(seen, "DSN|AUTH PLAIN|") == 0, "each: \"%s\"",
	    seen);
}

/* Write `text` into one end of a socketpair and read a reply off the
 * other through a conn. */
static enum smtpwire_status
read_through_conn(const char *text, struct smtp_reply *r)
{
	enum smtpwire_status st;
	struct conn *c;
	int sv[2];

	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0)
		return SMTPWIRE_LOST;
	(void)!write(sv[1], text, strlen(text));
	close(sv[1]);
	c = conn_new(sv[0]);
	st = smtpwire_read_reply(c, deadline_in(5), r, NULL, NULL);
	conn_free(c);
	return st;
}

static void
test_reply_conn(void)
{
	struct smtp_reply r;
	enum smtpwire_status st;

	st = read_through_conn("250-mx.example\r\n250 PIPELINING\r\n", &r);
	CHECK(st == SMTPWIRE_OK && r.code == 250 &&
	          strcmp(r.text, "250 mx.example") == 0,
	    "conn: multi-line reply");
	st = read_through_conn("250-mx.example\r\n550 no\r\n", &r);
	CHECK(st == SMTPWIRE_MALFORMED && r.code == 0,
	    "conn: 250- then 550 is malformed (status %d, code %d)", st,
	    r.code);
	st = read_through_conn("5-x\r\n", &r);
	CHECK(st == SMTPWIRE_MALFORMED && r.code == 0, "conn: 5-x");
	st = read_through_conn("250-mx.example\r\n", &r);
	CHECK(st == SMTPWIRE_LOST && r.code == 0,
	    "conn: closed mid-reply has no code");
}

/* -- EHLO keywords ---------------------------------------------------- */

static void
test_ehlo(void)
{
	static const char *const lines[] = {"PIPELINING", "8bitmime",
	    "SMTPUTF8 ", "DSN", "CHUNKING", "BINARYMIME", "STARTTLS",
	    "AUTH=LOGIN", "AUTH CRAM-MD5 PLAIN", NULL};
	struct smtp_ehlo e;
	int i;

	memset(&e, 0, sizeof(e));
	for (i = 0; lines[i] != NULL; i++)
		smtpwire_ehlo_keyword(&e, lines[i]);
	CHECK(e.pipelining && e.eightbit && e.smtputf8 && e.dsn && e.chunking &&
	          e.binarymime && e.starttls && e.auth_plain && e.auth_login &&
	          !e.size,
	    "ehlo: every keyword");

	memset(&e, 0, sizeof(e));
	smtpwire_ehlo_keyword(&e, "SIZE 10240000");
	CHECK(e.size && e.size_limit == 10240000, "ehlo: SIZE 10240000");
	memset(&e, 0, sizeof(e));
	smtpwire_ehlo_keyword(&e, "size");
	CHECK(e.size && e.size_limit == 0, "ehlo: SIZE without a value");
	memset(&e, 0, sizeof(e));
	smtpwire_ehlo_keyword(&e, "SIZE 9223372036854775807");
	CHECK(e.size && e.size_limit == 9223372036854775807LL,
	    "ehlo: SIZE at LLONG_MAX");

	static const char *const bad[] = {"SIZE -1", "SIZE 1e9", "SIZE abc",
	    "SIZE 9223372036854775808", "SIZE 123456789012345678901", "SIZE  5",
	    "SIZES", "PIPELINING now", "PIPELININGX", "AUTHPLAIN", "AUTH",
	    "DSN=1", "", NULL};
	for (i = 0; bad[i] != NULL; i++) {
		struct smtp_ehlo zero;

		memset(&e, 0, sizeof(e));
		memset(&zero, 0, sizeof(zero));
		smtpwire_ehlo_keyword(&e, bad[i]);
		CHECK(memcmp(&e, &zero, sizeof(e)) == 0,
		    "ehlo: \"%s\" is ignored", bad[i]);
	}
}

/* -- dot-stuffing ----------------------------------------------------- */

struct scase {
	const char *name;
	const char *msg;
	const char *wire;    /* what is sent, end of data included */
	const char *decoded; /* what a strict receiver stores */
};

static const struct scase scases[] = {
    {"empty", "", ".\r\n", ""},
    {"one line", "a\r\n", "a\r\n.\r\n", "a\r\n"},
    {"no final break", "a", "a\r\n.\r\n", "a\r\n"},
    {"dots", ".a\r\n..\r\n.", "..a\r\n...\r\n..\r\n.\r\n", ".a\r\n..\r\n.\r\n"},
    {"bare lf at the end", "a\n", "a\r\n.\r\n", "a\r\n"},
    {"bare lf then dot", "a\n.\nb", "a\r\n..\r\nb\r\n.\r\n", "a\r\n.\r\nb\r\n"},
    {"bare cr", "a\rb\r", "a\r\nb\r\n.\r\n", "a\r\nb\r\n"},
    {"cr cr lf", "a\r\r\n.", "a\r\n\r\n..\r\n.\r\n", "a\r\n\r\n.\r\n"},
    {"dot mid line", "a.b\r\n", "a.b\r\n.\r\n", "a.b\r\n"},
};

/* Stuff `msg` in pieces of `step` octets (0: whole). */
static char *
stuff(const char *msg, size_t step, size_t *len)
{
	struct smtpwire_data d;
	size_t n = strlen(msg), pos = 0, piece, o = 0;
	char *out = malloc(SMTPWIRE_STUFF_OUT_MAX(n) + SMTPWIRE_STUFF_END_MAX);

	smtpwire_stuff_init(&d);
	while (pos < n) {
		piece = step == 0 || step > n - pos ? n - pos : step;
		o += smtpwire_stuff(&d, msg + pos, piece, out + o);
		pos += piece;
	}
	o += smtpwire_stuff_end(&d, out + o);
	*len = o;
	return out;
}

static void
test_stuff(void)
{
	size_t i, step;

	for (i = 0; i < sizeof(scases) / sizeof(scases[0]); i++) {
		const struct scase *c = &scases[i];

		for (step = 0; step <= 3; step++) {
			struct data_dec dec;
			size_t len, used, outlen;
			char *wire = stuff(c->msg, step, &len);
			char *out = malloc(DATA_DEC_OUT_MAX(len));

			CHECK(len == strlen(c->wire) &&
			          memcmp(wire, c->wire, len) == 0,
			    "stuff %s (pieces of %zu)", c->name, step);
			data_dec_init(&dec, false);
			used = data_dec_feed(&dec, wire, len, out, &outlen);
			CHECK(dec.done && used == len && dec.flags == 0 &&
			          outlen == strlen(c->decoded) &&
			          memcmp(out, c->decoded, outlen) == 0,
			    "stuff %s (pieces of %zu): a strict receiver ends "
			    "the data at its end",
			    c->name, step);
			free(out);
			free(wire);
		}
	}
}

int
main(void)
{
	test_reply_lines();
	test_reply_limits();
	test_reply_conn();
	test_ehlo();
	test_stuff();
	UNIT_DONE();
}
