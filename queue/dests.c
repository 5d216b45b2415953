/*
 * dests.c - sites, their concurrency and their suspension (see dests.h).
 *
 * Threads: none; the caller serialises every call (deliver.c's mutex).
 * Two hash tables of string keys: domains (domain -> site name) and
 * sites (name -> state).  Entries are allocated once and freed by
 * dests_expire or dests_free, so pointers into them stay valid until a
 * call that may remove entries.
 *
 * Invariants:
 *  1. A suspended site has a reason, a down_since and a probe_at.
 *  2. At most one probe of a site is in flight (probing).
 *  3. active counts deliveries started (dests_start) and not finished.
 */
#include "dests.h"
#include "sync.h"
#include "config.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NBUCKETS 1024 /* per table; chains grow beyond that */
#define DOMAIN_IDLE (3600)
#define SITE_IDLE (600)
#define SUSPENDED_IDLE (86400)
#define REASON_MAX 512

struct domain {
	char *name;
	char site[DESTS_KEY_MAX];
	int64_t used;
	struct domain *next;
};

struct site {
	char name[DESTS_KEY_MAX];
	int active;
	bool alive;     /* a connection succeeded since known or resumed */
	bool suspended; /* invariant 1 */
	bool probing;   /* invariant 2 */
	double failed;  /* cohorts failed in a row (alive sites) */
	int64_t down_since, probe_at, used;
	int64_t tat_ms;     /* GCRA: the theoretical arrival time */
	int64_t slow_until; /* ms: a next hop asked to slow down */
	char reason[REASON_MAX];
	char recent[DESTS_RECENT][256]; /* domains with mail waiting */
	int nrecent, next_recent;
	struct site *next;
};

struct dests {
	struct domain *domains[NBUCKETS];
	struct site *sites[NBUCKETS];
	int nsuspended;
};

/* FNV-1a, 64 bits. */
static uint64_t
hash(const char *s)
{
	uint64_t h = 1469598103934665603ULL;

	for (; *s != '\0'; s++) {
		h ^= (unsigned char)*s;
		h *= 1099511628211ULL;
	}
	return h;
}

struct dests *
dests_new(void)
{
	return xcalloc(1, sizeof(struct dests));
}

void
dests_free(struct dests *ds)
{
	int i;

	if (ds == NULL)
		return;
	for (i = 0; i < NBUCKETS; i++) {
		while (ds->domains[i] != NULL) {
			struct domain *d = ds->domains[i];

			ds->domains[i] = d->next;
			free(d->name);
			free(d);
		}
		while (ds->sites[i] != NULL) {
			struct site *s = ds->sites[i];

			ds->sites[i] = s->next;
			free(s);
		}
	}
	free(ds);
}

static int
cmp_names(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

void
dests_mx_site(const char *const *names, int n, char *site, size_t len)
{
	char **v = xcalloc((size_t)n + 1, sizeof(char *));
	char *all;
	size_t total = 1, off = 0;
	int i;

	for (i = 0; i < n; i++) {
		v[i] = xstrdup(names[i]);
		for (char *p = v[i]; *p != '\0'; p++)
			*p = ascii_lower(*p);
		total += strlen(v[i]) + 1;
	}
	qsort(v, (size_t)n, sizeof(char *), cmp_names);
	all = xmalloc(total);
	all[0] = '\0';
	for (i = 0; i < n; i++) {
		size_t l = strlen(v[i]);

		if (i > 0 && strcmp(v[i], v[i - 1]) == 0)
			continue;
		if (off > 0)
			all[off++] = ',';
		memcpy(all + off, v[i], l + 1);
		off += l;
	}
	if (off < len && off < DESTS_KEY_MAX) {
		snprintf(site, len, "%s", all);
	} else {
		/* Too long to be a key: a prefix and the hash of the whole. */
		size_t keep = (len < DESTS_KEY_MAX ? len : DESTS_KEY_MAX) - 18;

		snprintf(site, len, "%.*s~%016llx", (int)keep, all,
		    (unsigned long long)hash(all));
	}
	for (i = 0; i < n; i++)
		free(v[i]);
	free(v);
	free(all);
}

static struct domain **
domain_slot(struct dests *ds, const char *name)
{
	struct domain **p = &ds->domains[hash(name) % NBUCKETS];

	while (*p != NULL && strcmp((*p)->name, name) != 0)
		p = &(*p)->next;
	return p;
}

static struct site *
site_get(struct dests *ds, const char *name, bool create)
{
	struct site **p = &ds->sites[hash(name) % NBUCKETS];

	while (*p != NULL && strcmp((*p)->name, name) != 0)
		p = &(*p)->next;
	if (*p == NULL && create) {
		*p = xcalloc(1, sizeof(struct site));
		snprintf((*p)->name, sizeof((*p)->name), "%s", name);
	}
	return *p;
}

const char *
dests_site_of(struct dests *ds, const char *domain, int64_t now)
{
	struct domain *d = *domain_slot(ds, domain);

	if (d == NULL)
		return NULL;
	d->used = now;
	return d->site;
}

void
dests_learn(struct dests *ds, const char *domain, const char *site, int64_t now)
{
	struct domain **p = domain_slot(ds, domain);

	if (*p == NULL) {
		*p = xcalloc(1, sizeof(struct domain));
		(*p)->name = xstrdup(domain);
	}
	snprintf((*p)->site, sizeof((*p)->site), "%s", site);
	(*p)->used = now;
}

void
dests_forget(struct dests *ds, const char *domain)
{
	struct domain **p = domain_slot(ds, domain);
	struct domain *d = *p;

	if (d == NULL)
		return;
	*p = d->next;
	free(d->name);
	free(d);
}

enum dest_admit
dests_admit(struct dests *ds, const char *site, int limit, int pending,
    bool probe_pending, int64_t now, const char **reason)
{
	struct site *s = site_get(ds, site, false);

	if (s == NULL)
		return pending == 0 ? DEST_GO : DEST_BUSY;
	s->used = now;
	if (s->suspended) {
		if (!s->probing && !probe_pending && now >= s->probe_at &&
		    s->active + pending < limit)
			return DEST_PROBE;
		if (reason != NULL)
			*reason = s->reason;
		return DEST_DEFER;
	}
	if (!s->alive)
		limit = 1; /* one at a time until a connection succeeds */
	return s->active + pending < limit ? DEST_GO : DEST_BUSY;
}

/*
 * The site's effective rate: the configured one, at half speed and with
 * no burst while it is slowed (DESTS_SLOW_RATE when none is configured).
 * False: no limit.
 */
static bool
effective_rate(const struct site *s, const struct rate *r, int64_t now_ms,
    int64_t *t, int64_t *tau)
{
	bool slowed = s != NULL && now_ms < s->slow_until;

	if (r->n > 0) {
		*t = r->period_ms / r->n;
		*tau = (int64_t)(r->n - 1) * *t;
		if (slowed) {
			*t *= 2;
			*tau = 0;
		}
		return true;
	}
	if (slowed) {
		*t = DESTS_SLOW_RATE_MS;
		*tau = 0;
		return true;
	}
	return false;
}

int64_t
dests_rate_wait(
    struct dests *ds, const char *site, const struct rate *r, int64_t now_ms)
{
	struct site *s = site_get(ds, site, false);
	int64_t t, tau, tat;

	if (!effective_rate(s, r, now_ms, &t, &tau))
		return 0;
	tat = s != NULL ? s->tat_ms : 0;
	return tat - tau > now_ms ? tat - tau - now_ms : 0;
}

void
dests_rate_take(
    struct dests *ds, const char *site, const struct rate *r, int64_t now_ms)
{
	struct site *s = site_get(ds, site, false);
	int64_t t, tau;

	if (!effective_rate(s, r, now_ms, &t, &tau))
		return;
	s = site_get(ds, site, true);
	s->tat_ms = (s->tat_ms > now_ms ? s->tat_ms : now_ms) + t;
}

bool
dests_slow(struct dests *ds, const char *site, int64_t now_ms)
{
	struct site *s = site_get(ds, site, true);
	bool first = now_ms >= s->slow_until;

	s->slow_until = now_ms + DESTS_SLOW_MS;
	return first;
}

void
dests_start(struct dests *ds, const char *site, bool probe, int64_t now)
{
	struct site *s = site_get(ds, site, true);

	BUG_ON(probe && s->probing); /* invariant 2 */
	s->active++;
	s->used = now;
	if (probe)
		s->probing = true;
}

void
dests_finish(struct dests *ds, const char *site, bool probe)
{
	struct site *s = site_get(ds, site, false);

	/* Invariant 3: finished once, after its start; a site with active
	 * deliveries is never pruned. */
	BUG_ON(s == NULL || s->active <= 0);
	if (s == NULL)
		return;
	if (s->active > 0)
		s->active--;
	if (probe)
		s->probing = false;
}

bool
dests_suspended(
    struct dests *ds, const char *site, bool probe, const char **reason)
{
	struct site *s = site_get(ds, site, false);

	if (s == NULL || !s->suspended || probe)
		return false;
	if (reason != NULL)
		*reason = s->reason;
	return true;
}

enum dest_change
dests_fail(struct dests *ds, const char *site, bool probe, const char *reason,
    int64_t now, int interval)
{
	struct site *s = site_get(ds, site, true);

	s->used = now;
	if (s->suspended && !probe)
		return DEST_SAME;
	if (!s->suspended && s->alive) {
		/* Each failure is 1/active of a cohort (this delivery is one
		 * of the active ones); a whole cohort in a row is needed. */
		s->failed += 1.0 / (s->active > 1 ? s->active : 1);
		if (s->failed < 1.0 - 1e-9)
			return DEST_SAME;
	}
	s->alive = false;
	s->failed = 0;
	snprintf(s->reason, sizeof(s->reason), "%s", reason);
	s->probe_at = now + interval;
	if (s->suspended)
		return DEST_STILL;
	s->suspended = true;
	s->down_since = now;
	ds->nsuspended++;
	return DEST_SUSPENDED;
}

enum dest_change
dests_ok(struct dests *ds, const char *site, int64_t now, int64_t *down_since)
{
	struct site *s = site_get(ds, site, true);

	s->used = now;
	s->failed = 0;
	if (!s->suspended) {
		if (s->alive)
			return DEST_SAME;
		s->alive = true;
		return DEST_ALIVE;
	}
	s->alive = true;
	s->suspended = false;
	s->reason[0] = '\0';
	s->nrecent = s->next_recent = 0;
	ds->nsuspended--;
	if (down_since != NULL)
		*down_since = s->down_since;
	return DEST_RESUMED;
}

void
dests_note(struct dests *ds, const char *site, const char *domain)
{
	struct site *s = site_get(ds, site, false);
	int i;

	if (s == NULL)
		return;
	for (i = 0; i < s->nrecent; i++)
		if (strcmp(s->recent[i], domain) == 0)
			return;
	snprintf(s->recent[s->next_recent], sizeof(s->recent[0]), "%s", domain);
	s->next_recent = (s->next_recent + 1) % DESTS_RECENT;
	if (s->nrecent < DESTS_RECENT)
		s->nrecent++;
}

int
dests_probes_due(
    struct dests *ds, int64_t now, struct dests_probe *out, int max)
{
	int i, k, n = 0;

	for (i = 0; i < NBUCKETS && n < max; i++) {
		struct site *s;

		for (s = ds->sites[i]; s != NULL && n < max; s = s->next) {
			if (!s->suspended || s->probing || now < s->probe_at ||
			    s->nrecent == 0)
				continue;
			snprintf(
			    out[n].site, sizeof(out[n].site), "%s", s->name);
			for (k = 0; k < s->nrecent; k++)
				snprintf(out[n].domains[k],
				    sizeof(out[n].domains[k]), "%s",
				    s->recent[k]);
			out[n].ndomains = s->nrecent;
			n++;
		}
	}
	return n;
}

int
dests_nsuspended(const struct dests *ds)
{
	return ds->nsuspended;
}

void
dests_expire(struct dests *ds, int64_t now)
{
	int i;

	for (i = 0; i < NBUCKETS; i++) {
		struct domain **dp = &ds->domains[i];
		struct site **sp = &ds->sites[i];

		while (*dp != NULL) {
			struct domain *d = *dp;

			if (now - d->used < DOMAIN_IDLE) {
				dp = &d->next;
				continue;
			}
			*dp = d->next;
			free(d->name);
			free(d);
		}
		while (*sp != NULL) {
			struct site *s = *sp;

			if (s->active > 0 || s->probing ||
			    s->tat_ms > now * 1000 ||
			    s->slow_until > now * 1000 ||
			    now - s->used <
			        (s->suspended ? SUSPENDED_IDLE : SITE_IDLE)) {
				sp = &s->next;
				continue;
			}
			if (s->suspended)
				ds->nsuspended--;
			*sp = s->next;
			free(s);
		}
	}
}
