/*
 * utf8.h - UTF-8 sequences (RFC 3629 section 4): the one decoder behind
 * the SMTP parser's validation (server/parse.c), JSON escaping
 * (common/json.c) and the queue CLI's terminal output
 * (cli/queue.c).
 *
 * Threads: pure functions on the caller's memory; any thread.
 */
#ifndef SLUICE_UTF8_H
#define SLUICE_UTF8_H

#include <stdbool.h>
#include <stddef.h>

/*
 * The length (1 to 4) of the well-formed UTF-8 sequence that starts at
 * `p`, looking at no more than `avail` octets (at least 1): 1 for an
 * ASCII octet (NUL included); 0 when it is not one (a lone continuation
 * octet, an overlong form, a surrogate, a code point above U+10FFFF, an
 * octet that never appears in UTF-8); -1 when the `avail` octets are the
 * start of a well-formed sequence cut short.
 */
int utf8_seq_len(const unsigned char *p, size_t avail);

/* True when the `len` octets at `s` are well-formed UTF-8 (NULs allowed). */
bool utf8_valid(const unsigned char *s, size_t len);

#endif
