/*
 * test_dests.c - sites, their concurrency and their suspension: the life
 * of a site as dests.h draws it, one probe per interval, and MX sets as
 * site names.
 */
#include "dests.h"
#include "unit.h"

#include <stdlib.h>

static void
test_mx_site(void)
{
	static const struct {
		const char *names[4];
		int n;
		const char *want;
	} cases[] = {
	    {{"mx.example.net"}, 1, "mx.example.net"},
	    {{"MX2.Example.NET", "mx1.example.net"}, 2,
	        "mx1.example.net,mx2.example.net"},
	    {{"b", "a", "b", "a"}, 4, "a,b"},
	    {{"mx1.example.net", "mx2.example.net"}, 2,
	        "mx1.example.net,mx2.example.net"},
	};
	char long1[260], long2[260];
	const char *l1[3], *l2[3];
	char site[DESTS_KEY_MAX], other[DESTS_KEY_MAX];
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		dests_mx_site(cases[i].names, cases[i].n, site, sizeof(site));
		CHECK(strcmp(site, cases[i].want) == 0,
		    "MX set %zu is site \"%s\" (got \"%s\")", i, cases[i].want,
		    site);
	}
	/* Names too long for a key: a prefix and a hash of the whole. */
	memset(long1, 'a', 200);
	long1[200] = '\0';
	memset(long2, 'b', 200);
	long2[200] = '\0';
	l1[0] = l2[0] = long1;
	l1[1] = l2[1] = long2;
	l1[2] = "x.example";
	l2[2] = "y.example";
	dests_mx_site(l1, 3, site, sizeof(site));
	dests_mx_site(l2, 3, other, sizeof(other));
	CHECK(strlen(site) < DESTS_KEY_MAX && strlen(other) < DESTS_KEY_MAX,
	    "long MX sets fit in a key (%zu)", strlen(site));
	CHECK(strcmp(site, other) != 0,
	    "long MX sets that differ at the end are different sites");
	l2[2] = "x.example";
	dests_mx_site(l2, 3, other, sizeof(other));
	CHECK(strcmp(site, other) == 0, "the same long set is the same site");
}

static void
test_domains(void)
{
	struct dests *ds = dests_new();

	CHECK(dests_site_of(ds, "a.example", 100) == NULL,
	    "an unknown domain has no site");
	dests_learn(ds, "a.example", "mx.provider", 100);
	dests_learn(ds, "b.example", "mx.provider", 100);
	CHECK(
	    strcmp(dests_site_of(ds, "a.example", 101), "mx.provider") == 0 &&
	        strcmp(dests_site_of(ds, "b.example", 101), "mx.provider") == 0,
	    "two domains learned at one MX set share its site");
	dests_learn(ds, "a.example", "mx.other", 102);
	CHECK(strcmp(dests_site_of(ds, "a.example", 102), "mx.other") == 0,
	    "learning again replaces the site");
	dests_forget(ds, "a.example");
	CHECK(dests_site_of(ds, "a.example", 103) == NULL &&
	          dests_site_of(ds, "b.example", 103) != NULL,
	    "forget drops one domain only");
	dests_expire(ds, 103 + 3599);
	CHECK(dests_site_of(ds, "b.example", 3702) != NULL,
	    "a domain used within the hour is kept");
	dests_expire(ds, 3702 + 3600);
	CHECK(dests_site_of(ds, "b.example", 7302) == NULL,
	    "a domain unused for an hour is forgotten");
	dests_free(ds);
}

static void
test_concurrency(void)
{
	struct dests *ds = dests_new();
	int64_t now = 1000, down = 0;
	int i, go;

	CHECK(dests_admit(ds, "s", 3, 0, false, now, NULL) == DEST_GO,
	    "an unknown site admits one delivery");
	CHECK(dests_admit(ds, "s", 3, 1, false, now, NULL) == DEST_BUSY,
	    "an unknown site admits one at a time in a round");
	dests_start(ds, "s", false, now);
	CHECK(dests_admit(ds, "s", 3, 0, false, now, NULL) == DEST_BUSY,
	    "an unknown site admits one at a time while it connects");
	CHECK(dests_ok(ds, "s", now, &down) == DEST_ALIVE,
	    "a first connection makes it alive (no resumption)");
	CHECK(dests_ok(ds, "s", now, &down) == DEST_SAME,
	    "a second connection changes nothing");
	for (go = 0, i = 0; i < 5; i++)
		if (dests_admit(ds, "s", 3, i, false, now, NULL) == DEST_GO)
			go++;
	CHECK(go == 2, "an alive site admits up to its limit (%d of 2)", go);
	dests_finish(ds, "s", false);
	CHECK(dests_admit(ds, "s", 3, 2, false, now, NULL) == DEST_GO,
	    "a finished delivery frees its place");
	/* Idle for ten minutes: forgotten, one at a time again. */
	dests_expire(ds, now + 600);
	dests_start(ds, "s", false, now + 600);
	CHECK(dests_admit(ds, "s", 3, 0, false, now + 600, NULL) == DEST_BUSY,
	    "a site idle for ten minutes starts again one at a time");
	dests_free(ds);
}

static void
test_suspension(void)
{
	struct dests *ds = dests_new();
	const char *reason = NULL;
	int64_t now = 5000, down = 0;

	dests_start(ds, "dead", false, now);
	dests_start(ds, "dead", false, now);
	CHECK(dests_fail(ds, "dead", false, "4.4.1 connect to x: refused", now,
	          60) == DEST_SUSPENDED,
	    "every address failed: suspended");
	CHECK(dests_nsuspended(ds) == 1, "one site suspended");
	CHECK(dests_suspended(ds, "dead", false, &reason) && reason != NULL &&
	          strcmp(reason, "4.4.1 connect to x: refused") == 0,
	    "a delivery in flight sees the suspension and its reason");
	CHECK(dests_fail(ds, "dead", false, "4.4.1 other", now, 60) ==
	              DEST_SAME &&
	          dests_suspended(ds, "dead", false, &reason) &&
	          strcmp(reason, "4.4.1 connect to x: refused") == 0,
	    "a second failure in flight changes nothing");
	dests_finish(ds, "dead", false);
	dests_finish(ds, "dead", false);
	reason = NULL;
	CHECK(dests_admit(ds, "dead", 20, 0, false, now + 59, &reason) ==
	              DEST_DEFER &&
	          reason != NULL,
	    "suspended: deliveries are deferred before the probe is due");
	CHECK(
	    dests_admit(ds, "dead", 20, 0, false, now + 60, NULL) == DEST_PROBE,
	    "after the interval one delivery is the probe");
	CHECK(
	    dests_admit(ds, "dead", 20, 1, true, now + 60, NULL) == DEST_DEFER,
	    "only one probe per round");
	dests_start(ds, "dead", true, now + 60);
	CHECK(
	    dests_admit(ds, "dead", 20, 0, false, now + 61, NULL) == DEST_DEFER,
	    "only one probe in flight");
	CHECK(!dests_suspended(ds, "dead", true, NULL),
	    "the probe itself may connect");
	CHECK(dests_fail(ds, "dead", true, "4.4.1 connect to x: timed out",
	          now + 62, 60) == DEST_STILL,
	    "a failed probe keeps it suspended");
	dests_finish(ds, "dead", true);
	CHECK(dests_admit(ds, "dead", 20, 0, false, now + 121, &reason) ==
	              DEST_DEFER &&
	          strstr(reason, "timed out") != NULL,
	    "the next probe waits a whole interval from the failed one, with "
	    "the new reason");
	CHECK(dests_admit(ds, "dead", 20, 0, false, now + 122, NULL) ==
	          DEST_PROBE,
	    "one probe per interval");
	dests_start(ds, "dead", true, now + 122);
	CHECK(dests_ok(ds, "dead", now + 123, &down) == DEST_RESUMED &&
	          down == now,
	    "a successful probe resumes it, telling when the outage began");
	dests_finish(ds, "dead", true);
	CHECK(dests_nsuspended(ds) == 0, "nothing suspended any more");
	CHECK(dests_admit(ds, "dead", 2, 1, false, now + 123, NULL) == DEST_GO,
	    "resumed: more than one delivery at a time at once");
	/* A suspended site without mail for a day is forgotten. */
	dests_fail(ds, "dead", false, "4.4.1 again", now + 200, 60);
	dests_expire(ds, now + 200 + 86399);
	CHECK(
	    dests_nsuspended(ds) == 1, "suspended and idle under a day: kept");
	dests_expire(ds, now + 200 + 86400);
	CHECK(dests_nsuspended(ds) == 0 && dests_admit(ds, "dead", 20, 0, false,
	                                       now + 90000, NULL) == DEST_GO,
	    "suspended and idle for a day: forgotten");
	dests_free(ds);
	dests_free(NULL);
}

static void
test_cohorts(void)
{
	struct dests *ds = dests_new();
	int64_t now = 7000;
	int i;

	dests_start(ds, "busy", false, now);
	dests_ok(ds, "busy", now, NULL);
	for (i = 1; i < 4; i++)
		dests_start(ds, "busy", false, now);
	/* 4 in flight: each failure is a quarter of a cohort. */
	CHECK(
	    dests_fail(ds, "busy", false, "4.3.2 busy", now, 60) == DEST_SAME &&
	        dests_fail(ds, "busy", false, "4.3.2 busy", now, 60) ==
	            DEST_SAME &&
	        dests_fail(ds, "busy", false, "4.3.2 busy", now, 60) ==
	            DEST_SAME,
	    "an alive site is not suspended for part of a cohort");
	CHECK(dests_admit(ds, "busy", 8, 0, false, now, NULL) == DEST_GO,
	    "nor throttled to one at a time");
	CHECK(dests_ok(ds, "busy", now, NULL) == DEST_SAME,
	    "a success in between starts the count over");
	for (i = 0; i < 3; i++)
		dests_fail(ds, "busy", false, "4.3.2 busy", now, 60);
	CHECK(dests_nsuspended(ds) == 0, "still 3 of 4 since the success");
	CHECK(dests_fail(ds, "busy", false, "4.4.1 refused", now, 60) ==
	          DEST_SUSPENDED,
	    "a whole cohort in a row suspends it");
	dests_free(ds);
}

static void
test_probes_due(void)
{
	struct dests *ds = dests_new();
	struct dests_probe p[4];
	char name[32];
	int i, n;

	dests_fail(ds, "dead", false, "4.4.1 refused", 100, 60);
	CHECK(dests_probes_due(ds, 200, p, 4) == 0,
	    "no probe without mail waiting for the site");
	for (i = 0; i < DESTS_RECENT + 3; i++) {
		snprintf(name, sizeof(name), "d%d.example", i);
		dests_note(ds, "dead", name);
		dests_note(ds, "dead", name);
	}
	CHECK(dests_probes_due(ds, 159, p, 4) == 0,
	    "no probe before the interval");
	n = dests_probes_due(ds, 160, p, 4);
	CHECK(n == 1 && strcmp(p[0].site, "dead") == 0 &&
	          p[0].ndomains == DESTS_RECENT,
	    "a probe is due with the %d most recent domains (%d, %d)",
	    DESTS_RECENT, n, n ? p[0].ndomains : -1);
	for (n = 0, i = 0; i < p[0].ndomains; i++)
		n += strcmp(p[0].domains[i], "d0.example") == 0 ||
		     strcmp(p[0].domains[i], "d10.example") == 0;
	CHECK(n == 1, "the oldest domains make room for new ones, no repeats");
	dests_start(ds, "dead", true, 160);
	CHECK(dests_probes_due(ds, 161, p, 4) == 0,
	    "no second probe while one is in flight");
	dests_ok(ds, "dead", 162, NULL);
	dests_finish(ds, "dead", true);
	dests_fail(ds, "dead", false, "4.4.1 refused", 300, 60);
	CHECK(dests_probes_due(ds, 400, p, 4) == 0,
	    "a resumed site forgets the domains that waited");
	dests_note(ds, "alive", "x.example");
	CHECK(dests_probes_due(ds, 400, p, 4) == 0,
	    "a site that is not suspended is not probed");
	dests_free(ds);
}

static void
test_rates(void)
{
	struct dests *ds = dests_new();
	struct rate r = {2, 1000}, none = {0, 0};
	int64_t t = 1000000, w;
	int i, started = 0;

	/* 2/1s: a burst of two, then one every 500 ms. */
	for (i = 0; i < 2; i++) {
		CHECK(dests_rate_wait(ds, "s", &r, t) == 0,
		    "rate 2/1s: start %d of the burst goes at once", i + 1);
		dests_rate_take(ds, "s", &r, t);
	}
	w = dests_rate_wait(ds, "s", &r, t);
	CHECK(w == 500, "rate 2/1s: the third waits 500 ms (got %lld)",
	    (long long)w);
	CHECK(dests_rate_wait(ds, "s", &r, t + 499) == 1 &&
	          dests_rate_wait(ds, "s", &r, t + 500) == 0,
	    "rate 2/1s: ... and goes at 500 ms");
	/* Over 10 s of steady demand: at most 2 + 20 starts. */
	for (i = 0; i <= 10000; i += 10)
		if (dests_rate_wait(ds, "t", &r, t + i) == 0) {
			dests_rate_take(ds, "t", &r, t + i);
			started++;
		}
	CHECK(started == 2 + 20, "rate 2/1s: 22 starts in 10 s (got %d)",
	    started);
	CHECK(dests_rate_wait(ds, "u", &none, t) == 0, "no rate: never waits");
	/* Slowed: half the rate, no burst; without a rate, one per 10 s. */
	CHECK(dests_slow(ds, "v", t) && !dests_slow(ds, "v", t + 1),
	    "slowing down is news once");
	dests_rate_take(ds, "v", &r, t);
	CHECK(dests_rate_wait(ds, "v", &r, t) == 1000,
	    "slowed 2/1s: 1 s between starts");
	dests_slow(ds, "x", t);
	dests_rate_take(ds, "x", &none, t);
	CHECK(dests_rate_wait(ds, "x", &none, t) == DESTS_SLOW_RATE_MS,
	    "slowed without a rate: one per DESTS_SLOW_RATE_MS");
	CHECK(dests_rate_wait(ds, "x", &none, t + DESTS_SLOW_MS) == 0,
	    "the slowdown ends");
	dests_free(ds);
}

int
main(void)
{
	test_rates();
	test_mx_site();
	test_domains();
	test_concurrency();
	test_suspension();
	test_cohorts();
	test_probes_due();
	UNIT_DONE();
}
