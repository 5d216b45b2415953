/*
 * outcome.h - what the end of a delivery attempt means for a recipient:
 * delivered, bounced or deferred until when.  Pure functions of the
 * reply, the time and the configuration: no I/O, no clock and no
 * randomness of their own (the caller passes the time and a random
 * number), so tests/unit/test_outcome.c checks them on their own.
 *
 * Threads: no state; any thread.
 */
#ifndef SLUICE_OUTCOME_H
#define SLUICE_OUTCOME_H

#include "config.h"
#include "envelope.h"
#include "store.h"
#include "util.h"

#include <stdbool.h>
#include <stdint.h>

/* The outcome of one recipient in an attempt. */
struct outcome {
	struct store_rcpt_info info;
	enum res result;
	char reply[SMTP_REPLY_MAX]; /* the server's reply, or our reason */
	bool relayed;               /* delivered to a server without DSN */
	enum rcpt_state state;      /* delivered, deferred or bounced */
	int64_t next_at;            /* deferred: when it is due again */
};

/* How an attempt ended for one recipient. */
struct attempt_end {
	enum res res;      /* RES_OK delivered, RES_TEMP, RES_PERM */
	const char *reply; /* the server's reply, or our reason */
	bool have_dsn;     /* the server offered DSN (RFC 3461) */
	int64_t now;       /* seconds since the epoch */
	uint32_t rnd;      /* random, for the retry's jitter */
};

/*
 * Seconds until the next attempt after `attempts` attempts: the
 * schedule's value for that attempt (its last value repeats; attempts
 * below 1 count as 1), plus up to 10% of it as jitter taken from `rnd`
 * (none below 10 seconds), so that the retries of a burst spread out.
 */
int64_t retry_delay(const int *schedule, int n, int attempts, uint32_t rnd);

/*
 * Settle oc (its info filled in) for `e`: RES_OK delivered (relayed when
 * the server had no DSN), RES_PERM bounced, RES_TEMP deferred by the
 * retry schedule, or bounced with 4.4.7 once the message, received at
 * `received_at`, has been queued for queue_lifetime (RFC 5321 section
 * 4.5.4.1).
 */
void outcome_settle(struct outcome *oc, const struct config *cfg,
    int64_t received_at, const struct attempt_end *e);

/*
 * The enhanced status code (RFC 3463) of a reply: "550 5.1.1 ..." or our
 * own "4.4.1 ..." gives "5.1.1" / "4.4.1"; `fallback` when it has none.
 */
void reply_status(
    const char *reply, const char *fallback, char *out, size_t len);

/* Does `notify` (NOTIFY_* bits, 0: absent) ask for notice `what`?
 * Without NOTIFY, failures and delays are reported (RFC 3461 4.1). */
bool notify_has(unsigned notify, unsigned what);

/*
 * Does a reply ask us to slow down?  421 (the server closes the channel,
 * RFC 5321 section 3.8), or a 4.7.x reply that speaks of rates or of too
 * many (connections, messages, recipients): the throttling replies of
 * the large providers.
 */
bool reply_says_slow_down(const char *reply);

/* Due for delivery when its time comes (not held, not final). */
bool rcpt_pending(enum rcpt_state st);

#endif
