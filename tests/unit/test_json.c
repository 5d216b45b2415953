/*
 * test_json.c - JSON string escaping: every output must be valid JSON
 * that decodes to the input (or U+FFFD for bytes that are not UTF-8).
 */
#include "json.h"
#include "unit.h"

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

int
main(void)
{
	size_t i;

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
