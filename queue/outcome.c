/*
 * outcome.c - what the end of an attempt means for a recipient (see
 * outcome.h).  Pure: no I/O, no clock, no randomness of its own.
 */
#include "outcome.h"

#include <stdio.h>
#include <string.h>

int64_t
retry_delay(const int *schedule, int n, int attempts, uint32_t rnd)
{
	int idx = attempts - 1;
	int64_t base;

	if (n <= 0)
		return 0;
	if (idx < 0)
		idx = 0;
	if (idx >= n)
		idx = n - 1;
	base = schedule[idx];
	return base + (base >= 10 ? (int64_t)(rnd % (uint32_t)(base / 10)) : 0);
}

void
outcome_settle(struct outcome *oc, const struct config *cfg,
    int64_t received_at, const struct attempt_end *e)
{
	snprintf(oc->reply, sizeof(oc->reply), "%s", e->reply);
	oc->result = e->res;
	if (e->res == RES_OK) {
		oc->state = RCPT_DELIVERED;
		oc->relayed = !e->have_dsn;
	} else if (e->res == RES_PERM) {
		oc->state = RCPT_BOUNCED;
	} else if (e->now - received_at >= cfg->queue_lifetime) {
		/* Too old: give up (RFC 5321 section 4.5.4.1). */
		oc->state = RCPT_BOUNCED;
		snprintf(oc->reply, sizeof(oc->reply),
		    "4.4.7 message expired after %lld seconds in the "
		    "queue; last error: %.400s",
		    (long long)(e->now - received_at), e->reply);
	} else {
		oc->state = RCPT_DEFERRED;
		oc->next_at = e->now + retry_delay(cfg->retry_schedule,
		                           cfg->nretry_schedule,
		                           oc->info.attempts + 1, e->rnd);
	}
}

void
reply_status(const char *reply, const char *fallback, char *out, size_t len)
{
	const char *p = reply;
	unsigned a, b, c;
	int used = 0;

	if (p[0] >= '2' && p[0] <= '5' && p[1] >= '0' && p[1] <= '9' &&
	    p[2] >= '0' && p[2] <= '9' && p[3] == ' ')
		p += 4;
	if (sscanf(p, "%1u.%3u.%3u%n", &a, &b, &c, &used) == 3 &&
	    (p[used] == ' ' || p[used] == '\0') && a >= 2 && a <= 5)
		snprintf(out, len, "%u.%u.%u", a, b, c);
	else
		snprintf(out, len, "%s", fallback);
}

bool
notify_has(unsigned notify, unsigned what)
{
	if (notify == 0)
		return what != NOTIFY_SUCCESS;
	return (notify & what) != 0;
}

bool
reply_says_slow_down(const char *reply)
{
	static const char *const words[] = {"rate", "too many", "throttl"};
	char status[16];
	size_t i;

	if (strncmp(reply, "421", 3) == 0 &&
	    (reply[3] == ' ' || reply[3] == '-'))
		return true;
	if (reply[0] != '4')
		return false;
	reply_status(reply, "", status, sizeof(status));
	if (strncmp(status, "4.7.", 4) != 0)
		return false;
	for (i = 0; i < sizeof(words) / sizeof(words[0]); i++)
		if (strcasestr(reply, words[i]) != NULL)
			return true;
	return false;
}

bool
rcpt_pending(enum rcpt_state st)
{
	return st == RCPT_QUEUED || st == RCPT_DEFERRED;
}
