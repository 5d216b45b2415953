/*
 * log.c - line-at-a-time logging to stderr (see log.h).
 *
 * Shared state: `log_level_cur` (atomic; written at start and on reload).
 */
#include "log.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static atomic_int log_level_cur = LOG_INFO;

static const char *const level_names[] = {"error", "warning", "info", "debug"};

void
log_set_level(enum log_level level)
{
	atomic_store(&log_level_cur, (int)level);
}

void
log_msg(enum log_level level, const char *component, const char *fmt, ...)
{
	char line[2048];
	struct timespec ts;
	struct tm tm;
	va_list ap;
	size_t n;
	int r;

	if ((int)level > atomic_load(&log_level_cur))
		return;
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	r = snprintf(line, sizeof(line),
	    "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ sluice[%ld]: %s %s: ",
	    tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
	    tm.tm_sec, ts.tv_nsec / 1000000, (long)getpid(), level_names[level],
	    component);
	n = r > 0 ? (size_t)r : 0;
	if (n < sizeof(line)) {
		va_start(ap, fmt);
		r = vsnprintf(line + n, sizeof(line) - n, fmt, ap);
		va_end(ap);
		if (r > 0)
			n += (size_t)r;
	}
	if (n > sizeof(line) - 2)
		n = sizeof(line) - 2;
	line[n++] = '\n';
	/* One write per line keeps lines whole across threads. */
	(void)!write(STDERR_FILENO, line, n);
}

void
log_sanitize(char *out, unsigned len, const char *s)
{
	unsigned i = 0;

	if (len == 0)
		return;
	for (; *s != '\0' && i + 1 < len; s++) {
		unsigned char c = (unsigned char)*s;

		out[i++] = (c < 0x20 || c >= 0x7f) ? '?' : (char)c;
	}
	out[i] = '\0';
	if (*s != '\0' && len > 4)
		memcpy(out + len - 4, "...", 4);
}
