/*
 * log.c - line-at-a-time logging to stderr (see log.h).
 *
 * Shared state: `log_level_cur` and `log_json` (atomic; written at start
 * and on reload).
 */
#include "log.h"
#include "json.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static atomic_int log_level_cur = LOG_INFO;
static atomic_bool log_json;

static const char *const level_names[] = {"error", "warning", "info", "debug"};

void
log_set_level(enum log_level level)
{
	atomic_store(&log_level_cur, (int)level);
}

void
log_set_json(bool json)
{
	atomic_store(&log_json, json);
}

/*
 * Copy the key=value pairs of `msg` as JSON members into out[*off..len):
 * keys are [a-z_]+, values run to the next space or are "quoted".  Keys
 * that would clash with the fixed members are left out.
 */
static void
json_pairs(char *out, size_t len, size_t *off, const char *msg)
{
	static const char *const fixed[] = {
	    "time", "level", "component", "pid", "msg", NULL};
	const char *p = msg;

	while (*p != '\0') {
		const char *k = p, *v, *e;
		char key[32], val[512];
		size_t kl, vl, i;

		while (*k == ' ')
			k++;
		for (v = k; (*v >= 'a' && *v <= 'z') || *v == '_'; v++)
			;
		e = strchr(k, ' ');
		p = e != NULL ? e : k + strlen(k);
		kl = (size_t)(v - k);
		if (*v != '=' || kl == 0 || kl >= sizeof(key))
			continue;
		v++;
		if (*v == '"' && (e = strchr(v + 1, '"')) != NULL) {
			v++;
			p = e + 1;
		} else {
			e = p;
		}
		memcpy(key, k, kl);
		key[kl] = '\0';
		for (i = 0; fixed[i] != NULL; i++)
			if (strcmp(fixed[i], key) == 0)
				break;
		if (fixed[i] != NULL)
			continue;
		vl = (size_t)(e - v) < sizeof(val) ? (size_t)(e - v)
		                                   : sizeof(val) - 1;
		memcpy(val, v, vl);
		val[vl] = '\0';
		if (*off + kl + 8 >= len)
			return;
		out[(*off)++] = ',';
		json_buf_str(out, len, off, key);
		out[(*off)++] = ':';
		json_buf_str(out, len, off, val);
	}
}

/* {"time":...,"level":...,"component":...,"pid":...,"msg":...,k:v...} */
static size_t
format_json(char *line, size_t len, const char *stamp, enum log_level level,
    const char *component, const char *msg)
{
	size_t n = 0;
	int r;

	r = snprintf(line, len,
	    "{\"time\":\"%s\",\"level\":\"%s\","
	    "\"component\":",
	    stamp, level_names[level]);
	n = r > 0 ? (size_t)r : 0;
	json_buf_str(line, len - 2, &n, component);
	r = snprintf(
	    line + n, len - n, ",\"pid\":%ld,\"msg\":", (long)getpid());
	n += r > 0 ? (size_t)r : 0;
	json_buf_str(line, len - 2, &n, msg);
	json_pairs(line, len - 2, &n, msg);
	line[n++] = '}';
	return n;
}

void
log_msg(enum log_level level, const char *component, const char *fmt, ...)
{
	char line[4096], stamp[64];
	struct timespec ts;
	struct tm tm;
	va_list ap;
	size_t n;
	int r;

	if ((int)level > atomic_load(&log_level_cur))
		return;
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	snprintf(stamp, sizeof(stamp), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ",
	    tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
	    tm.tm_sec, ts.tv_nsec / 1000000);
	if (atomic_load(&log_json)) {
		char msg[1536];

		va_start(ap, fmt);
		vsnprintf(msg, sizeof(msg), fmt, ap);
		va_end(ap);
		n = format_json(
		    line, sizeof(line) - 1, stamp, level, component, msg);
		line[n++] = '\n';
		(void)!write(STDERR_FILENO, line, n);
		return;
	}
	r = snprintf(line, sizeof(line), "%s sluice[%ld]: %s %s: ", stamp,
	    (long)getpid(), level_names[level], component);
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
