/*
 * test_json.c - JSON string escaping: every output must be valid JSON
 * that decodes to the input (or U+FFFD for bytes that are not UTF-8);
 * and the UTF-8 decoder it shares with the parser and the queue CLI
 * (utf8_seq_len).
 */
#include "json.h"
#include "unit.h"
#include "utf8.h"

#include <stdlib.h>

static const struct {
	const char *in, *out;
} cases[] = {
    {"", "\"\""},
    {"plain", "\"plain\""},
    {"q\"b\\s", "\"q\\\"b\\\\s\""},
    {"a\r\nb\tc", "\"a\\r\\nb\\tc\""},
    {"\x01\x1f\x7f", "\"\\u0001\\u001f\\u007f\""},
    {"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x93\xa7",
        "\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x93\xa7\""},
    {"bad\xff", "\"bad\xef\xbf\xbd\""},
    {"overlong\xc0\xaf", "\"overlong\xef\xbf\xbd\xef\xbf\xbd\""},
    {"surrogate\xed\xa0\x80",
        "\"surrogate\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\""},
    {"cut\xe2\x82", "\"cut\xef\xbf\xbd\xef\xbf\xbd\""},
};

/* utf8_seq_len(in, avail) -> want. */
static const struct {
	const char *in;
	size_t avail;
	int want;
} seqs[] = {
    {"a", 1, 1},                /* ASCII */
    {"", 1, 1},                 /* NUL is ASCII too */
    {"\x7f", 1, 1},             /* DEL */
    {"\xc2\x80", 2, 2},         /* U+0080, the lowest 2-octet */
    {"\xdf\xbf", 2, 2},         /* U+07FF */
    {"\xe0\xa0\x80", 3, 3},     /* U+0800 */
    {"\xed\x9f\xbf", 3, 3},     /* U+D7FF */
    {"\xee\x80\x80", 3, 3},     /* U+E000 */
    {"\xef\xbf\xbf", 3, 3},     /* U+FFFF */
    {"\xf0\x90\x80\x80", 4, 4}, /* U+10000 */
    {"\xf4\x8f\xbf\xbf", 4, 4}, /* U+10FFFF */
    {"\xc3\xa9xyz", 5, 2},      /* only the sequence counts */
    {"\x80", 1, 0},             /* a lone continuation octet */
    {"\xbf", 1, 0},             /* another */
    {"\xc0\xaf", 2, 0},         /* overlong '/' */
    {"\xc1\xbf", 2, 0},         /* overlong U+007F */
    {"\xe0\x9f\xbf", 3, 0},     /* overlong U+07FF */
    {"\xf0\x8f\xbf\xbf", 4, 0}, /* overlong U+FFFF */
    {"\xed\xa0\x80", 3, 0},     /* surrogate U+D800 */
    {"\xed\xbf\xbf", 3, 0},     /* surrogate U+DFFF */
    {"\xf4\x90\x80\x80", 4, 0}, /* U+110000 */
    {"\xf5\x80\x80\x80", 4, 0}, /* F5 never appears */
    {"\xfe", 1, 0},             /* nor FE */
    {"\xff", 1, 0},             /* nor FF */
    {"\xc3\x28", 2, 0},         /* not a continuation octet */
    {"\xe2\x28\xa1", 3, 0},     /* the same, second octet */
    {"\xe2\x82\x28", 3, 0},     /* the same, third octet */
    {"\xc3", 1, -1},            /* cut short: more may follow */
    {"\xe2\x82", 2, -1},        /* cut short after two */
    {"\xe2", 1, -1},            /* cut short after one */
    {"\xf0\x9f\x98", 3, -1},    /* cut short after three */
    {"\xe0\x80", 2, 0},         /* cut short, but already overlong */
    {"\xed\xa0", 2, 0},         /* cut short, but already a surrogate */
    {"\xe2\x82\xac", 2, -1},    /* avail bounds what is read */
};

static void
test_utf8_seq_len(void)
{
	size_t i;

	for (i = 0; i < sizeof(seqs) / sizeof(seqs[0]); i++) {
		int got = utf8_seq_len(
		    (const unsigned char *)seqs[i].in, seqs[i].avail);

		CHECK(got == seqs[i].want,
		    "utf8_seq_len case %zu (%zu octets): %d, want %d", i,
		    seqs[i].avail, got, seqs[i].want);
	}
}

int
main(void)
{
	size_t i;

	test_utf8_seq_len();
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char buf[256], *mem = NULL;
		size_t off = 0, memlen = 0;
		FILE *f;

		json_buf_str(buf, sizeof(buf), &off, cases[i].in);
		CHECK(strcmp(buf, cases[i].out) == 0 && off == strlen(buf),
		    "json_buf_str case %zu: got %s", i, buf);
		f = open_memstream(&mem, &memlen);
		json_fput_str(f, cases[i].in);
		fclose(f);
		CHECK(strcmp(mem, cases[i].out) == 0,
		    "json_fput_str case %zu: got %s", i, mem);
		free(mem);
	}
	{
		/* Too short: still a closed string, never a cut escape. */
		char small[8];
		size_t off = 0;

		json_buf_str(small, sizeof(small), &off, "ab\"cdefgh");
		CHECK(strcmp(small, "\"ab\\\"c\"") == 0 && off == 7,
		    "truncated output stays valid: %s", small);
		off = 0;
		json_buf_str(small, sizeof(small), &off, "\x01xyz");
		CHECK(strcmp(small, "\"\"") == 0,
		    "an escape that does not fit is left out: %s", small);
	}
	UNIT_DONE();
}
