/*
 * vocab.c - the one table of the words of mail (see vocab.h).
 */
#include "vocab.h"

#include <stdio.h>
#include <string.h>

static const char *const state_names[RCPT_NSTATES] = {
    [RCPT_QUEUED] = "queued",
    [RCPT_DEFERRED] = "deferred",
    [RCPT_HELD] = "held",
    [RCPT_DELIVERED] = "delivered",
    [RCPT_BOUNCED] = "bounced",
};

static const char *const body_names[] = {
    [BODY_7BIT] = "7BIT",
    [BODY_8BITMIME] = "8BITMIME",
    [BODY_BINARYMIME] = "BINARYMIME",
};

static const char *const ret_names[] = {
    [RET_NONE] = NULL,
    [RET_FULL] = "FULL",
    [RET_HDRS] = "HDRS",
};

/* In the order the session wrote them before they were bits. */
static const struct {
	unsigned bit;
	const char *name;
} notify_names[] = {
    {NOTIFY_NEVER, "NEVER"},
    {NOTIFY_SUCCESS, "SUCCESS"},
    {NOTIFY_FAILURE, "FAILURE"},
    {NOTIFY_DELAY, "DELAY"},
};

#define NELEMS(a) (sizeof(a) / sizeof((a)[0]))

/* The index of `name` in names[n], or -1. */
static int
lookup(const char *const *names, size_t n, const char *name)
{
	size_t i;

	for (i = 0; name != NULL && i < n; i++)
		if (names[i] != NULL && strcmp(names[i], name) == 0)
			return (int)i;
	return -1;
}

const char *
rcpt_state_name(enum rcpt_state st)
{
	return state_names[st];
}

bool
rcpt_state_parse(const char *name, enum rcpt_state *st)
{
	int i = lookup(state_names, NELEMS(state_names), name);

	if (i >= 0)
		*st = (enum rcpt_state)i;
	return i >= 0;
}

const char *
body_type_name(enum body_type b)
{
	return body_names[b];
}

bool
body_type_parse(const char *name, enum body_type *b)
{
	int i = lookup(body_names, NELEMS(body_names), name);

	if (i >= 0)
		*b = (enum body_type)i;
	return i >= 0;
}

const char *
dsn_ret_name(enum dsn_ret r)
{
	return ret_names[r];
}

const char *
attempt_status_name(enum rcpt_state st)
{
	return st == RCPT_DELIVERED ? "sent"
	       : st == RCPT_BOUNCED ? "bounced"
	                            : "deferred";
}

enum dsn_ret
dsn_ret_parse(const char *name)
{
	int i = lookup(ret_names, NELEMS(ret_names), name);

	return i >= 0 ? (enum dsn_ret)i : RET_NONE;
}

void
notify_text(unsigned bits, char *buf, size_t len)
{
	size_t i, n = 0;

	buf[0] = '\0';
	for (i = 0; i < NELEMS(notify_names) && n < len; i++)
		if (bits & notify_names[i].bit)
			n += (size_t)snprintf(buf + n, len - n, "%s%s",
			    n > 0 ? "," : "", notify_names[i].name);
}

unsigned
notify_parse(const char *text)
{
	unsigned bits = 0;
	size_t i;

	for (i = 0; i < NELEMS(notify_names); i++) {
		const char *p = text;
		size_t k = strlen(notify_names[i].name);

		/* A whole item of the comma-separated list. */
		while (p != NULL && (p = strstr(p, notify_names[i].name))) {
			if ((p == text || p[-1] == ',') &&
			    (p[k] == '\0' || p[k] == ',')) {
				bits |= notify_names[i].bit;
				break;
			}
			p += k;
		}
	}
	return bits;
}
