/*
 * json.c - JSON string escaping (see json.h).
 *
 * Threads: no state; any thread.
 */
#include "json.h"
#include "utf8.h"

#include <string.h>

/* The escaped form of the character at `p` (`left` octets remain) into
 * esc; returns the input length consumed and sets *elen. */
static size_t
escape_one(const unsigned char *p, size_t left, char *esc, size_t *elen)
{
	const char *two = *p == '"'    ? "\\\""
	                  : *p == '\\' ? "\\\\"
	                  : *p == '\n' ? "\\n"
	                  : *p == '\r' ? "\\r"
	                  : *p == '\t' ? "\\t"
	                               : NULL;
	int n;

	if (two != NULL) {
		memcpy(esc, two, 2);
		*elen = 2;
		return 1;
	}
	if (*p < 0x20 || *p == 0x7f) {
		static const char hex[] = "0123456789abcdef";

		memcpy(esc, "\\u00", 4);
		esc[4] = hex[*p >> 4];
		esc[5] = hex[*p & 15];
		*elen = 6;
		return 1;
	}
	n = utf8_seq_len(p, left);
	if (n <= 0) {
		memcpy(esc, "\xef\xbf\xbd", 3); /* U+FFFD */
		*elen = 3;
		return 1;
	}
	memcpy(esc, p, (size_t)n);
	*elen = (size_t)n;
	return (size_t)n;
}

void
json_buf_str(char *out, size_t len, size_t *off, const char *s)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t o = *off, left = strlen(s);

	if (len == 0)
		return;
	if (o + 3 > len) { /* no room even for "" */
		out[o < len ? o : len - 1] = '\0';
		return;
	}
	out[o++] = '"';
	while (left > 0) {
		char esc[8];
		size_t elen, used = escape_one(p, left, esc, &elen);

		if (o + elen + 2 > len)
			break;
		memcpy(out + o, esc, elen);
		o += elen;
		p += used;
		left -= used;
	}
	out[o++] = '"';
	out[o] = '\0';
	*off = o;
}

void
json_fput_str(FILE *f, const char *s)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t left = strlen(s);

	putc('"', f);
	while (left > 0) {
		char esc[8];
		size_t elen, used = escape_one(p, left, esc, &elen);

		fwrite(esc, 1, elen, f);
		p += used;
		left -= used;
	}
	putc('"', f);
}
