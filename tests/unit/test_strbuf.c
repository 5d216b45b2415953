/*
 * test_strbuf.c - the growable string buffer: every append lands whole
 * and NUL-terminated, across growth, after reuse and with NUL octets.
 */
#include "strbuf.h"
#include "unit.h"

#include <stdlib.h>

/* len and text are `want` (of `n` octets), with a NUL after them. */
static int
holds(const struct strbuf *b, const char *want, size_t n)
{
	return b->p != NULL && b->len == n && memcmp(b->p, want, n) == 0 &&
	       b->p[n] == '\0' && b->len < b->cap;
}

static void
test_empty(void)
{
	struct strbuf b = {0};

	CHECK(b.p == NULL && b.len == 0, "a new buffer holds nothing");
	strbuf_add(&b, "", 0);
	CHECK(holds(&b, "", 0), "an empty append gives the empty string");
	strbuf_str(&b, "");
	strbuf_fmt(&b, "%s", "");
	CHECK(holds(&b, "", 0), "empty string and empty format add nothing");
	strbuf_free(&b);
	CHECK(
	    b.p == NULL && b.len == 0 && b.cap == 0, "free zeroes the record");
	strbuf_free(&b);
	strbuf_free(NULL);
	CHECK(b.p == NULL && b.len == 0 && b.cap == 0,
	    "free twice and free(NULL) are no-ops");
}

static void
test_appends(void)
{
	struct strbuf b = {0};

	strbuf_str(&b, "Date: ");
	strbuf_fmt(&b, "%s, %d %s", "Sun", 22, "Nov");
	strbuf_add(&b, "\r\n", 2);
	CHECK(holds(&b, "Date: Sun, 22 Nov\r\n", 19),
	    "str, fmt and add in order");
	strbuf_add(&b, "a\0b", 3);
	CHECK(holds(&b, "Date: Sun, 22 Nov\r\na\0b", 22),
	    "NUL octets are kept and counted");
	strbuf_truncate(&b, 4);
	CHECK(holds(&b, "Date", 4), "truncate keeps the start, NUL-terminated");
	strbuf_truncate(&b, 10);
	CHECK(
	    holds(&b, "Date", 4), "truncate to more than it holds is a no-op");
	strbuf_truncate(&b, 0);
	strbuf_fmt(&b, "<%s>", "x@y");
	CHECK(holds(&b, "<x@y>", 5), "truncate to 0 reuses the buffer");
	strbuf_free(&b);
}

/* Appends that cross the capacity, one octet at a time and in bulk. */
static void
test_growth(void)
{
	struct strbuf b = {0}, c = {0};
	size_t i, n = 100000;
	char *want = malloc(n + 1), *big = malloc(5001);
	int ok = 1;

	for (i = 0; i < n; i++)
		want[i] = (char)('a' + i % 26);
	for (i = 0; i < n; i++) {
		strbuf_add(&b, want + i, 1);
		ok = ok && b.len == i + 1 && b.p[b.len] == '\0';
	}
	CHECK(ok && holds(&b, want, n), "%zu one-octet appends", n);

	memset(big, 'z', 5000);
	big[5000] = '\0';
	for (i = 0; i < 3; i++)
		strbuf_fmt(&c, "%zu:%s;", i, big);
	ok = c.len == 3 * 5003;
	for (i = 0; ok && i < 3; i++)
		ok = c.p[i * 5003] == (char)('0' + i) &&
		     c.p[i * 5003 + 1] == ':' &&
		     memcmp(c.p + i * 5003 + 2, big, 5000) == 0 &&
		     c.p[i * 5003 + 5002] == ';';
	CHECK(ok && c.p[c.len] == '\0', "formats larger than the buffer");

	/* Exactly full, then one more formatted octet. */
	strbuf_free(&c);
	strbuf_add(&c, "", 0);
	while (c.len + 1 < c.cap)
		strbuf_add(&c, "x", 1);
	i = c.len;
	strbuf_fmt(&c, "%c", 'y');
	CHECK(c.len == i + 1 && c.p[i] == 'y' && c.p[i + 1] == '\0' &&
	          c.len < c.cap,
	    "a format that just overflows grows the buffer");
	strbuf_free(&b);
	strbuf_free(&c);
	free(want);
	free(big);
}

int
main(void)
{
	test_empty();
	test_appends();
	test_growth();
	UNIT_DONE();
}
