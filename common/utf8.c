/*
 * utf8.c - UTF-8 sequences (see utf8.h).
 *
 * Threads: no state; any thread.
 */
#include "utf8.h"

int
utf8_seq_len(const unsigned char *p, size_t avail)
{
	unsigned char c = p[0], lo = 0x80, hi = 0xbf;
	size_t n, i;

	if (c < 0x80)
		return 1;
	/*
	 * RFC 3629 section 4: UTF8-2, UTF8-3 and UTF8-4.  The range of the
	 * second octet excludes the overlong forms, the surrogates
	 * (U+D800..U+DFFF) and code points above U+10FFFF.
	 */
	if (c >= 0xc2 && c <= 0xdf) {
		n = 2;
	} else if (c >= 0xe0 && c <= 0xef) {
		n = 3;
		if (c == 0xe0)
			lo = 0xa0;
		else if (c == 0xed)
			hi = 0x9f;
	} else if (c >= 0xf0 && c <= 0xf4) {
		n = 4;
		if (c == 0xf0)
			lo = 0x90;
		else if (c == 0xf4)
			hi = 0x8f;
	} else {
		return 0;
	}
	for (i = 1; i < n; i++) {
		if (i >= avail)
			return -1;
		if (p[i] < lo || p[i] > hi)
			return 0;
		lo = 0x80;
		hi = 0xbf;
	}
	return (int)n;
}

bool
utf8_valid(const unsigned char *s, size_t len)
{
	size_t i = 0;

	while (i < len) {
		int n = utf8_seq_len(s + i, len - i);

		if (n <= 0)
			return false;
		i += (size_t)n;
	}
	return true;
}
