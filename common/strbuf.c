/*
 * strbuf.c - the growable string buffer (see strbuf.h).
 *
 * Threads: no shared state.
 * Invariant: once p is set, p[len] == '\0' and len < cap.
 */
#include "strbuf.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define STRBUF_FIRST 1024

/* Room for n more octets and the NUL. */
static void
reserve(struct strbuf *b, size_t n)
{
	size_t cap;

	if (b->p != NULL && b->len + n < b->cap)
		return;
	cap = b->cap ? b->cap : STRBUF_FIRST;
	while (b->len + n + 1 > cap)
		cap *= 2;
	b->p = xrealloc(b->p, cap);
	b->cap = cap;
}

void
strbuf_add(struct strbuf *b, const void *data, size_t n)
{
	reserve(b, n);
	if (n > 0)
		memcpy(b->p + b->len, data, n);
	b->len += n;
	b->p[b->len] = '\0';
}

void
strbuf_str(struct strbuf *b, const char *s)
{
	strbuf_add(b, s, strlen(s));
}

void
strbuf_vfmt(struct strbuf *b, const char *fmt, va_list ap)
{
	va_list again;
	int n;

	reserve(b, 0);
	va_copy(again, ap);
	n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
	if (n < 0)
		abort(); /* only an invalid format can do this */
	if ((size_t)n >= b->cap - b->len) {
		/* It did not fit: grow, then format again in place. */
		reserve(b, (size_t)n);
		vsnprintf(b->p + b->len, b->cap - b->len, fmt, again);
	}
	va_end(again);
	b->len += (size_t)n;
}

void
strbuf_fmt(struct strbuf *b, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	strbuf_vfmt(b, fmt, ap);
	va_end(ap);
}

void
strbuf_truncate(struct strbuf *b, size_t len)
{
	if (len < b->len) {
		b->len = len;
		b->p[len] = '\0';
	}
}

void
strbuf_free(struct strbuf *b)
{
	if (b == NULL)
		return;
	free(b->p);
	b->p = NULL;
	b->len = b->cap = 0;
}
