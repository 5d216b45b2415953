/*
 * json.c - JSON string escaping (see json.h).
 */
#include "json.h"

#include <string.h>

/*
 * Length of the valid UTF-8 sequence at `p` (1..4), or 0 when it is not
 * one (overlong forms, surrogates and code points above U+10FFFF are not).
 */
static size_t
utf8_len(const unsigned char *p)
{
	unsigned c = p[0];
	size_t n, i;
	unsigned cp;

	if (c < 0x80)
		return 1;
	if (c >= 0xc2 && c <= 0xdf) {
		n = 2;
		cp = c & 0x1f;
	} else if (c >= 0xe0 && c <= 0xef) {
		n = 3;
		cp = c & 0x0f;
	} else if (c >= 0xf0 && c <= 0xf4) {
		n = 4;
		cp = c & 0x07;
	} else {
		return 0;
	}
	for (i = 1; i < n; i++) {
		if ((p[i] & 0xc0) != 0x80)
			return 0;
		cp = (cp << 6) | (p[i] & 0x3f);
	}
	if ((n == 3 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) ||
	    (n == 4 && (cp < 0x10000 || cp > 0x10ffff)))
		return 0;
	return n;
}

/* The escaped form of the character at `p` into esc; returns the input
 * length consumed and sets *elen. */
static size_t
escape_one(const unsigned char *p, char *esc, size_t *elen)
{
	const char *two = *p == '"'    ? "\\\""
	                  : *p == '\\' ? "\\\\"
	                  : *p == '\n' ? "\\n"
	                  : *p == '\r' ? "\\r"
	                  : *p == '\t' ? "\\t"
	                               : NULL;
	size_t n;

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
	n = utf8_len(p);
	if (n == 0) {
		memcpy(esc, "\xef\xbf\xbd", 3); /* U+FFFD */
		*elen = 3;
		return 1;
	}
	memcpy(esc, p, n);
	*elen = n;
	return n;
}

void
json_buf_str(char *out, size_t len, size_t *off, const char *s)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t o = *off;

	if (len == 0)
		return;
	if (o + 3 > len) { /* no room even for "" */
		out[o < len ? o : len - 1] = '\0';
		return;
	}
	out[o++] = '"';
	while (*p != '\0') {
		char esc[8];
		size_t elen, used = escape_one(p, esc, &elen);

		if (o + elen + 2 > len)
			break;
		memcpy(out + o, esc, elen);
		o += elen;
		p += used;
	}
	out[o++] = '"';
	out[o] = '\0';
	*off = o;
}

void
json_fput_str(FILE *f, const char *s)
{
	const unsigned char *p = (const unsigned char *)s;

	putc('"', f);
	while (*p != '\0') {
		char esc[8];
		size_t elen, used = escape_one(p, esc, &elen);

		fwrite(esc, 1, elen, f);
		p += used;
	}
	putc('"', f);
}
