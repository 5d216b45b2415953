/*
 * strbuf.h - a growable string buffer: append octets, strings and
 * printf-formatted text; the text is always NUL-terminated.  Used where
 * output is built whole before it is sent or stored (DSNs, the metrics
 * exposition, `sluice sendmail`'s message).
 *
 * Threads: a strbuf belongs to its caller; the functions are reentrant.
 * Allocation failure aborts (xrealloc), so appending never fails.
 */
#ifndef SLUICE_STRBUF_H
#define SLUICE_STRBUF_H

#include <stdarg.h>
#include <stddef.h>

/*
 * A plain record: `p` holds `len` octets and a NUL after them, or is NULL
 * while nothing was ever appended.  Zero-initialise it (= {0}) to
 * start; strbuf_free (or free(p)) to end.  Read p and len freely; change
 * them only through the functions below.
 */
struct strbuf {
	char *p;
	size_t len;
	size_t cap;
};

/* Append n octets (may include NULs).  Afterwards p is never NULL. */
void strbuf_add(struct strbuf *b, const void *data, size_t n);

/* Append a NUL-terminated string. */
void strbuf_str(struct strbuf *b, const char *s);

/* Append printf-formatted text. */
void strbuf_fmt(struct strbuf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void strbuf_vfmt(struct strbuf *b, const char *fmt, va_list ap)
    __attribute__((format(printf, 2, 0)));

/* Keep only the first `len` octets (no-op when it holds fewer). */
void strbuf_truncate(struct strbuf *b, size_t len);

/* Free the text and zero the record (reusable).  NULL is a no-op. */
void strbuf_free(struct strbuf *b);

#endif
