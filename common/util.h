/*
 * util.h - small helpers every module uses: result codes, allocation that
 * aborts on failure, string and time helpers.
 *
 * Threads: all functions are reentrant and may be called from any thread.
 */
#ifndef SLUICE_UTIL_H
#define SLUICE_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>
#include <sys/types.h>

/*
 * Result of anything that can fail for a peer (Postfix style): temporary
 * failures map to 4xx replies or a retry, permanent ones to 5xx or a bounce.
 * The callee fills the caller's `why` buffer with a human-readable reason.
 */
enum res {
	RES_OK = 0,
	RES_TEMP = 1,
	RES_PERM = 2,
};

#define WHY_MAX 256

/* Allocation failure aborts the process: there is no sane recovery. */
void *xmalloc(size_t n);
void *xcalloc(size_t nmemb, size_t n);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);

/* snprintf into a fixed buffer, always NUL-terminated, truncating. */
void why_set(char *why, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/*
 * why_set for a failed system call: "WHAT: " and strerror(err) starting
 * with a lower-case letter, as the other reasons do ("127.0.0.1:25:
 * connection refused").
 */
void why_set_errno(char *why, const char *what, int err);

/* ASCII-only case-insensitive helpers (locale-free). */
int ascii_casecmp(const char *a, const char *b);
int ascii_ncasecmp(const char *a, const char *b, size_t n);
char ascii_lower(char c);

/* True when any octet of p[0..n) has the high bit set (8-bit data). */
bool has_8bit(const void *p, size_t n);

/* Monotonic clock in milliseconds, and wall clock in microseconds. */
int64_t now_ms(void);
int64_t wall_us(void);

/* The now_ms() value `seconds` from now: a deadline. */
int64_t deadline_in(int seconds);

/* Milliseconds left before `deadline`, for poll(): 0 to one hour. */
int deadline_left_ms(int64_t deadline);

/*
 * The permissions for a file sluice makes at `path`: `mode`, with the
 * owner's bits given to the group too when the file's folder is one its
 * group may write and is not sticky.  That is a volume shared by the uids
 * of one group (OpenShift runs a container under an arbitrary uid in group
 * 0): a later start under another uid of the group can then use the file.
 */
mode_t shared_file_mode(const char *path, mode_t mode);

/*
 * RFC 5322 date ("Sun, 22 Nov 2026 20:31:32 +0000") for `t`, in UTC.  A
 * time before 1970 or after 9999 (a damaged queue row) is clamped to that
 * range: the result is always a valid date.
 */
void rfc5322_date(char *buf, size_t len, int64_t t_sec);

/*
 * An RFC 1870 size-value, 1*20DIGIT, in the `n` octets at `v` (SIZE= of
 * MAIL, SIZE of EHLO): true with *out set when it is one and fits a long
 * long.
 */
bool size_value_parse(const char *v, size_t n, long long *out);

#endif
