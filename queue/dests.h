/*
 * dests.h - what delivery knows about where mail goes, as plain data:
 * which site each recipient domain's mail goes to, how many deliveries are
 * in flight to each site, and which sites are suspended after a
 * connection-level failure ("delivery temporarily suspended", as Postfix's
 * queue manager does for a dead destination).
 *
 * A site is where mail physically goes: the set of MX hosts of a domain
 * (KumoMTA's "site": a thousand domains hosted at one provider are one
 * site), a smarthost, or a route's host.  A domain whose MX hosts are not
 * known (not looked up yet, or its last lookup failed) is a site of its
 * own, named by the domain.  destination_concurrency counts per site.
 *
 * Life of a site:
 *
 *   unknown --connection ok--> alive --a cohort failed in a row--> suspended
 *      |  (one delivery at a time)                                      |  ^
 *      +-----------every address failed---------------------------------+  |
 *   suspended --probe due: one delivery tries--> ok: alive (resumed)   |
 *                                                fails: suspended -----+
 *
 * While a site is suspended, its deliveries are deferred without a
 * connection, with the reason of the failure, except one probe per
 * `interval` (dests_fail).  A site unknown or idle for a while lets one
 * delivery at a time through, so that a dead site costs one connection,
 * not one per delivery thread.
 *
 * Threads: none of its own, and not thread-safe: deliver.c calls every
 * function with its mutex held.  Nothing here blocks, logs or does I/O.
 * Times are Unix seconds.
 */
#ifndef SLUICE_DESTS_H
#define SLUICE_DESTS_H

#include "config.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define DESTS_KEY_MAX 300 /* a site's name, with its NUL */

/* After a "slow down" reply, for this long (ms) a site goes at half its
 * rate, or one message per DESTS_SLOW_RATE_MS without a configured one. */
#define DESTS_SLOW_MS (5 * 60 * 1000)
#define DESTS_SLOW_RATE_MS 10000

struct dests;

/*
 * Outbound rates (GCRA, as KumoMTA: `r->n` per `r->period_ms`, a burst of
 * at most r->n).  dests_rate_wait: 0 when a delivery to `site` may start
 * at now_ms, else how many ms until it may; dests_rate_take counts one
 * start.  dests_slow: a next hop asked to slow down (dests.h's
 * DESTS_SLOW_*); true when the site was not slowed already.  Times here
 * are milliseconds (now_ms()).
 */
int64_t dests_rate_wait(
    struct dests *ds, const char *site, const struct rate *r, int64_t now_ms);
void dests_rate_take(
    struct dests *ds, const char *site, const struct rate *r, int64_t now_ms);
bool dests_slow(struct dests *ds, const char *site, int64_t now_ms);

struct dests *dests_new(void);
void dests_free(struct dests *ds); /* NULL: no-op */

/*
 * The site's name for a set of MX host names (any order, repeats
 * allowed): the names sorted, lower case, without repeats, joined with
 * ','; a name longer than DESTS_KEY_MAX - 1 ends in a hash of the whole.
 */
void dests_mx_site(const char *const *names, int n, char *site, size_t len);

/*
 * The site `domain` was last found to go to (dests_learn), or NULL when
 * it is not known.  The string stays valid until the next call that
 * changes `ds`.
 */
const char *dests_site_of(struct dests *ds, const char *domain, int64_t now);
void dests_learn(
    struct dests *ds, const char *domain, const char *site, int64_t now);
void dests_forget(struct dests *ds, const char *domain);

enum dest_admit {
	DEST_GO,    /* start it: connect */
	DEST_PROBE, /* start it as the probe of a suspended site */
	DEST_DEFER, /* suspended: defer it without connecting */
	DEST_BUSY,  /* not now: the site has as many as it may */
};

/*
 * May one more delivery to `site` start now?  `limit` is
 * destination_concurrency; `pending` deliveries to the site and
 * `probe_pending` (one of them is a probe) were decided since the last
 * dests_start, in the same round.  A site without a successful connection
 * since it became known (or since it was suspended) gets one delivery at
 * a time.  On DEST_DEFER, *reason (when not NULL) is the failure that
 * suspended the site, valid until the next call that changes `ds`.
 */
enum dest_admit dests_admit(struct dests *ds, const char *site, int limit,
    int pending, bool probe_pending, int64_t now, const char **reason);

/* A delivery admitted GO or PROBE started; then it finished. */
void dests_start(struct dests *ds, const char *site, bool probe, int64_t now);
void dests_finish(struct dests *ds, const char *site, bool probe);

/*
 * Is `site` suspended for a delivery that is not its probe?  (Checked
 * again just before each connection: the site may have been suspended
 * since the delivery started.)  *reason as for dests_admit.
 */
bool dests_suspended(
    struct dests *ds, const char *site, bool probe, const char **reason);

enum dest_change {
	DEST_SAME,      /* nothing changed */
	DEST_ALIVE,     /* the first connection since it became known */
	DEST_SUSPENDED, /* the site was just suspended */
	DEST_RESUMED,   /* the site was suspended and is resumed */
	DEST_STILL,     /* a probe failed: still suspended */
};

/*
 * A connection-level failure of every address of `site` for a delivery
 * that was started on it (`reason` starts with an enhanced status code):
 * suspend it, or keep it suspended, with the next probe due `interval`
 * seconds from `now`.  A site not known to answer is suspended at its
 * first failure.  An alive site is suspended only when a whole cohort
 * failed in a row: each failure counts 1/N with N the deliveries in
 * flight, and a success starts over (Postfix's failed cohort limit of
 * 1), so that one refused connection among many good ones does not stop
 * a busy site.  Returns DEST_SUSPENDED, DEST_STILL (the probe failed) or
 * DEST_SAME (not yet, or suspended already and this was not the probe).
 */
enum dest_change dests_fail(struct dests *ds, const char *site, bool probe,
    const char *reason, int64_t now, int interval);

/*
 * A connection to `site` succeeded: it is alive.  DEST_RESUMED (with
 * *down_since, when the outage began) when it was suspended, DEST_ALIVE
 * when it was not known to be alive (more deliveries may start now), else
 * DEST_SAME.
 */
enum dest_change dests_ok(
    struct dests *ds, const char *site, int64_t now, int64_t *down_since);

/*
 * Remember that `domain` has mail waiting for the suspended `site` (its
 * recipients were deferred for it): where to find a recipient to probe
 * with.  A site remembers its DESTS_RECENT most recent such domains.
 */
#define DESTS_RECENT 8
void dests_note(struct dests *ds, const char *site, const char *domain);

/* A suspended site whose probe is due, and where its mail waits. */
struct dests_probe {
	char site[DESTS_KEY_MAX];
	char domains[DESTS_RECENT][256];
	int ndomains;
};

/*
 * Up to `max` suspended sites whose probe is due at `now` and not in
 * flight, into `out`; returns how many.  (A probe need not wait for a
 * recipient to come due: the site is probed once per interval while it
 * has mail, and its mail goes as soon as it answers.)
 */
int dests_probes_due(
    struct dests *ds, int64_t now, struct dests_probe *out, int max);

/* Sites suspended now (for the metrics gauge). */
int dests_nsuspended(const struct dests *ds);

/*
 * Forget what has not been used for a while: domains after an hour, idle
 * sites after ten minutes (so an idle site starts again one delivery at a
 * time), suspended ones after a day without mail.
 */
void dests_expire(struct dests *ds, int64_t now);

#endif
