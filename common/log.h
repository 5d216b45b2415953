/*
 * log.h - one event, one whole line on stderr (container friendly).
 *
 * Each call formats the complete line into a local buffer and writes it with
 * a single write(2), so lines from different threads never interleave.
 * Format: "2026-11-22T20:31:32.123Z sluice[PID]: LEVEL COMPONENT: message"
 * (or JSON: log_set_json).
 * Safe from any thread.  Never pass message bodies or secrets.
 */
#ifndef SLUICE_LOG_H
#define SLUICE_LOG_H

#include <stdbool.h>

enum log_level {
	LOG_ERR = 0,
	LOG_WARN,
	LOG_INFO,
	LOG_DEBUG,
};

void log_set_level(enum log_level level);

/*
 * log_format = json: one JSON object per line instead, with the members
 * time, level, component, pid, msg, and every key=value pair of the
 * message as a member of its own (id, from, to, client, status, ...).
 */
void log_set_json(bool json);
void log_msg(enum log_level level, const char *component, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define log_err(comp, ...) log_msg(LOG_ERR, comp, __VA_ARGS__)
#define log_warn(comp, ...) log_msg(LOG_WARN, comp, __VA_ARGS__)
#define log_info(comp, ...) log_msg(LOG_INFO, comp, __VA_ARGS__)
#define log_debug(comp, ...) log_msg(LOG_DEBUG, comp, __VA_ARGS__)

/* Copy `s` into `out` (size `len`) making it safe for one log line:
 * control characters and non-ASCII become '?', truncated with "...". */
void log_sanitize(char *out, unsigned len, const char *s);

#endif
