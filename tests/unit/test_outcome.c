/*
 * test_outcome.c - what the end of an attempt means for a recipient
 * (queue/outcome.c): the retry schedule with its jitter, the settling of
 * delivered, bounced, deferred and expired recipients, enhanced status
 * codes read from replies, and NOTIFY.
 */
#include "outcome.h"
#include "unit.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

static void
test_retry_delay(void)
{
	static const int sched[] = {5, 60, 600, 3600};
	static const struct {
		int attempts;
		uint32_t rnd;
		int64_t want;
	} cases[] = {
	    {0, 0, 5},     /* before any attempt: the first */
	    {1, 12345, 5}, /* under 10 s: no jitter */
	    {2, 0, 60},    /* the second value */
	    {2, 5, 65},    /* jitter: rnd mod 6 */
	    {2, 6, 60},    /* ... wraps */
	    {3, 59, 659},  /* at most base / 10 - 1 more */
	    {4, 0, 3600},  /* the last value */
	    {9, 0, 3600},  /* ... repeats */
	    {1000, UINT32_MAX, 3600 + UINT32_MAX % 360},
	};
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		int64_t got =
		    retry_delay(sched, 4, cases[i].attempts, cases[i].rnd);

		CHECK(got == cases[i].want,
		    "retry after %d attempts (rnd %u): %lld s (got %lld)",
		    cases[i].attempts, (unsigned)cases[i].rnd,
		    (long long)cases[i].want, (long long)got);
	}
	/* The jitter stays under 10% whatever the random number. */
	for (i = 0; i < 1000; i++) {
		int64_t got =
		    retry_delay(sched, 4, 3, (uint32_t)(i * 2654435761u));

		if (got < 600 || got >= 660) {
			CHECK(0, "jitter of 600 s out of [600, 660): %lld",
			    (long long)got);
			return;
		}
	}
	CHECK(1, "jitter of 600 s stays in [600, 660) for 1000 draws");
	CHECK(retry_delay(sched, 0, 1, 0) == 0, "an empty schedule: 0");
}

static void
test_settle(void)
{
	int sched[] = {60, 600};
	struct config cfg;
	struct outcome oc;
	struct attempt_end e = {RES_OK, "250 2.0.0 ok", true, 100000, 0};
	const int64_t received = 100000 - 3600;

	memset(&cfg, 0, sizeof(cfg));
	cfg.retry_schedule = sched;
	cfg.nretry_schedule = 2;
	cfg.queue_lifetime = 5 * 86400;

	memset(&oc, 0, sizeof(oc));
	outcome_settle(&oc, &cfg, received, &e);
	CHECK(oc.state == RCPT_DELIVERED && !oc.relayed &&
	          strcmp(oc.reply, "250 2.0.0 ok") == 0,
	    "accepted by a server with DSN: delivered, not relayed");
	e.have_dsn = false;
	outcome_settle(&oc, &cfg, received, &e);
	CHECK(oc.state == RCPT_DELIVERED && oc.relayed,
	    "accepted by a server without DSN: delivered and relayed");

	memset(&oc, 0, sizeof(oc));
	e.res = RES_PERM;
	e.reply = "550 5.1.1 no such user";
	outcome_settle(&oc, &cfg, received, &e);
	CHECK(oc.state == RCPT_BOUNCED && oc.result == RES_PERM &&
	          strcmp(oc.reply, e.reply) == 0,
	    "refused for good: bounced with the server's reply");

	memset(&oc, 0, sizeof(oc));
	oc.info.attempts = 1; /* this is the second */
	e.res = RES_TEMP;
	e.reply = "451 4.3.0 try later";
	e.rnd = 7;
	outcome_settle(&oc, &cfg, received, &e);
	CHECK(oc.state == RCPT_DEFERRED && oc.next_at == e.now + 600 + 7,
	    "refused for now: deferred by the schedule's second value "
	    "(next at %lld)",
	    (long long)(oc.next_at - e.now));

	memset(&oc, 0, sizeof(oc));
	outcome_settle(&oc, &cfg, e.now - cfg.queue_lifetime + 1, &e);
	CHECK(oc.state == RCPT_DEFERRED,
	    "refused for now a second before queue_lifetime: deferred");
	outcome_settle(&oc, &cfg, e.now - cfg.queue_lifetime, &e);
	CHECK(oc.state == RCPT_BOUNCED &&
	          strncmp(oc.reply,
	              "4.4.7 message expired after 432000 seconds in the "
	              "queue; last error: 451 4.3.0 try later",
	              sizeof(oc.reply)) == 0,
	    "refused for now at queue_lifetime: bounced 4.4.7 with the "
	    "last error (%s)",
	    oc.reply);
}

static void
test_reply_status(void)
{
	static const struct {
		const char *reply, *want;
	} cases[] = {
	    {"550 5.1.1 <x@example.net>: user unknown", "5.1.1"},
	    {"4.4.1 connect to mx[192.0.2.1]:25: refused", "4.4.1"},
	    {"250 2.0.0 Ok: queued", "2.0.0"},
	    {"451 4.7.650 rate limited", "4.7.650"},
	    {"550 user unknown", "-"},      /* no enhanced code */
	    {"550 6.1.1 bad class", "-"},   /* classes are 2, 4, 5 */
	    {"550 5.1.1234 too long", "-"}, /* detail is 1-3 digits */
	    {"550 5.1.1x", "-"},            /* not followed by space */
	    {"", "-"},
	    {"5.1.1", "5.1.1"},
	};
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char got[16];

		reply_status(cases[i].reply, "-", got, sizeof(got));
		CHECK(strcmp(got, cases[i].want) == 0,
		    "status of \"%s\" is %s (got %s)", cases[i].reply,
		    cases[i].want, got);
	}
}

static void
test_notify(void)
{
	CHECK(notify_has(0, NOTIFY_FAILURE) && notify_has(0, NOTIFY_DELAY) &&
	          !notify_has(0, NOTIFY_SUCCESS),
	    "without NOTIFY: failures and delays, not successes");
	CHECK(notify_has(NOTIFY_SUCCESS, NOTIFY_SUCCESS) &&
	          !notify_has(NOTIFY_SUCCESS, NOTIFY_FAILURE),
	    "NOTIFY=SUCCESS: only successes");
	CHECK(!notify_has(NOTIFY_NEVER, NOTIFY_FAILURE) &&
	          !notify_has(NOTIFY_NEVER, NOTIFY_DELAY),
	    "NOTIFY=NEVER: nothing");
	CHECK(rcpt_pending(RCPT_QUEUED) && rcpt_pending(RCPT_DEFERRED) &&
	          !rcpt_pending(RCPT_HELD) && !rcpt_pending(RCPT_DELIVERED) &&
	          !rcpt_pending(RCPT_BOUNCED),
	    "pending: queued and deferred only");
}

static void
test_slow_down(void)
{
	static const struct {
		const char *reply;
		bool slow;
	} cases[] = {
	    {"421 4.7.0 Try again later, closing connection", true},
	    {"421-4.7.28 Our system has detected an unusual rate", true},
	    {"451 4.7.1 Too many messages from your IP, slow down", true},
	    {"450 4.7.0 Throttled: too much mail", true},
	    {"451 4.7.1 Greylisted, please try again later", false},
	    {"452 4.5.3 Too many recipients", false}, /* not 4.7 */
	    {"550 5.7.1 rate limited", false},        /* permanent */
	    {"250 2.0.0 Ok", false},
	    {"4219 odd", false},
	};
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		CHECK(reply_says_slow_down(cases[i].reply) == cases[i].slow,
		    "\"%s\" %s slow down", cases[i].reply,
		    cases[i].slow ? "asks to" : "does not ask to");
}

int
main(void)
{
	test_slow_down();
	test_retry_delay();
	test_settle();
	test_reply_status();
	test_notify();
	UNIT_DONE();
}
