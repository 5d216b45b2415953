/*
 * json.h - writing JSON text (RFC 8259): string escaping for the queue
 * CLI's --json output, the JSON log format and the metrics endpoint.
 * Writing only; sluice never parses JSON.
 */
#ifndef SLUICE_JSON_H
#define SLUICE_JSON_H

#include <stddef.h>
#include <stdio.h>

/*
 * Append `s` as a quoted JSON string to out[*off..len).  Control
 * characters become \uXXXX escapes; bytes that are not valid UTF-8 become
 * U+FFFD, so the result is always valid JSON.  Truncates (keeping the
 * closing quote and a whole escape) when `out` is too short; *off never
 * exceeds len - 1 and out stays NUL-terminated.
 */
void json_buf_str(char *out, size_t len, size_t *off, const char *s);

/* The same, written to a stdio stream. */
void json_fput_str(FILE *f, const char *s);

#endif
