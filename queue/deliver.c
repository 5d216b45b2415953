/*
 * deliver.c - the dispatcher and the delivery threads (see deliver.h).
 *
 * Threads and shared state:
 *  - d->mu guards the job list (d->jobs), d->busy, d->blocked and
 *    d->dests (sites: their concurrency and suspension, queue/dests.h);
 *    d->cv wakes delivery threads (new jobs, stop), d->done_cv wakes the
 *    dispatcher (a job finished, stop).  A delivery thread waits on d->cv
 *    without a timeout, or until the connection it keeps has been idle
 *    CONNCACHE_IDLE_MS; the dispatcher waits on done_cv without one, and
 *    for new mail (queue_wait_mail) at most a second: retries coming due
 *    and changes made by `sluice queue` in another process cannot be
 *    signalled.
 *  - d->stop is atomic: set once by delivery_stop.  d->wake is atomic:
 *    set when the dispatcher should look for work before its next
 *    second (a site became alive or was resumed, a job of a busy site
 *    finished, stop).
 *  - Each delivery thread owns its store connection, its ldns resolver
 *    and its SMTP connections (the one it keeps between messages:
 *    conncache.h).  Writes (claims, results) go through queue_run, so
 *    they are serialised with the intake by the queue's writer thread;
 *    on a shared (PostgreSQL) queue a delivery thread writes its results
 *    on its own connection instead (run_txn), in parallel with the
 *    others, and claims take a round's worth of jobs ahead.
 *
 * Recipient life cycle:
 *
 *   queued/deferred --claim (lease)--> in a job --attempt--> delivered
 *        ^   |                             |                   bounced
 *        |   +--site suspended: deferred without a connection (claim)
 *        +------------ deferred <----------+ (next_attempt_at = schedule)
 *
 * Sites (dests.h): the recipients of a domain go to the site of its MX
 * host set (or the smarthost, or a route's host); destination_concurrency
 * counts per site.  When every address of a site fails at the connection
 * level (connect, greeting, EHLO, TLS, AUTH) for a whole cohort of
 * deliveries in a row (dests_fail), the site is suspended: the
 * claim defers its due recipients at once ("delivery temporarily
 * suspended", with the failure), except one probe per retry interval (the
 * first value of retry_schedule).  When a connection succeeds again, the
 * recipients deferred during the outage become due at once.  A failed MX
 * lookup suspends its domain the same way.
 *
 * Invariants:
 *  1. A recipient is in at most one job: claiming sets its lease in the
 *     same transaction that found it unleased.
 *  2. Every attempt ends in store_record_attempt (which clears the lease) or,
 *     if sluice stops first, the lease is cleared at the next start.  A
 *     recipient deferred for a suspended site is recorded in the claim's
 *     own transaction, without a lease.
 *  3. A message from the null sender never produces a bounce.
 *  4. A job counted on a site (j->counted) is uncounted once, when it
 *     ends or moves to another site.
 */
#include "deliver.h"
#include "sync.h"
#include "bounce.h"
#include "conncache.h"
#include "dane.h"
#include "store.h"
#include "sts.h"
#include "tlsrpt.h"
#include "dests.h"
#include "dkim.h"
#include "relays.h"
#include "holder.h"
#include "log.h"
#include "metrics.h"
#include "outcome.h"
#include "smtpc.h"
#include "tls.h"
#include "vocab.h"

#include <errno.h>
#include <stdarg.h>
#include <gnutls/crypto.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* An SQLite queue's lease: one node, whose leases are cleared at start. */
#define LEASE_SECONDS (2 * 3600)
#define CLAIM_ROWS 256
#define JOB_RCPTS_MAX 100
#define RETURNED_MAX 16 /* returned messages handled per look */
#define PRUNE_EVERY_MS (10 * 60 * 1000)
#define EXPIRE_EVERY_MS (60 * 1000)
#define RECORD_RETRY_MAX_MS (30 * 1000)
#define STS_BUSY_MAX 16 /* MTA-STS fetches in flight at once */
#define PROBES_MAX 16   /* probes of mail not due yet, per round */

struct delivery_job {
	char msg_id[QUEUE_ID_LEN + 1];
	char dest[DESTS_KEY_MAX]; /* its site (dests.h) */
	char domain[256];
	bool static_dest; /* smarthost or route: one site for any domain */
	bool probe;       /* the probe of its suspended site */
	bool counted;     /* started on d->dests (invariant 4) */
	int rcpt_nos[JOB_RCPTS_MAX];
	int nrcpts;
	struct delivery_job *next;
};

/*
 * What delivery takes from the configuration, swapped whole on SIGHUP
 * (d->conf): each job and each claiming round use the version current
 * when they start.
 */
struct delivery_conf {
	const struct config *cfg;
	struct held *cfg_ref; /* keeps cfg alive */
	unsigned gen;         /* a new one per version */
	char *self_name;
	struct sockaddr_storage *self_addrs;
	int nself;
	struct tls_creds *client_creds; /* NULL: no outbound TLS */
	struct dkim_keys *dkim;         /* signs notices (hostname's domain) */
	struct relays *relays;          /* sender_relays */
	char *smarthost_pass;
};

struct delivery {
	struct queue *q;
	struct holder *conf; /* struct delivery_conf * */
	int stop_fd;
	int64_t
	    next_admin_ms; /* dispatcher only: next look for returned mail */
	int64_t next_prune_ms; /* dispatcher only */
	int64_t next_beat_ms;  /* dispatcher only: the next heartbeat */
	bool shared;        /* a PostgreSQL queue: threads write on their own */
	atomic_int nodes;   /* nodes sharing the queue's delivery (heartbeat):
	                     * the per-destination limits are split among them */
	bool leases_unsure; /* dispatcher only: a shared queue's claim failed,
	                     * its commit perhaps not (clear_stale_leases) */
	int64_t next_expire_ms; /* dispatcher only */
	pthread_t dispatcher;
	bool dispatcher_started;
	pthread_t *threads;
	int nthreads;
	atomic_bool stop;
	atomic_bool wake;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	pthread_cond_t done_cv;
	struct delivery_job *jobs; /* guarded by mu */
	int busy;                  /* guarded by mu: jobs queued or running */
	bool blocked;        /* guarded by mu: due mail waits for a site */
	struct dests *dests; /* guarded by mu */
	/* MTA-STS policies being fetched (one fetch per domain at a time),
	 * guarded by mu; sts_cv tells when one ends. */
	char sts_busy[STS_BUSY_MAX][DNS_NAME_MAX];
	int nsts_busy;
	pthread_cond_t sts_cv;
	pthread_t sts_thread; /* refreshes cached policies before they expire */
	bool sts_started;
};

/* Have the dispatcher look for work now rather than at its next second. */
static void
wake(struct delivery *d)
{
	atomic_store(&d->wake, true);
	queue_wake(d->q);
}

/* ---- destinations ---- */

static const struct route *
route_for(const struct config *cfg, const char *domain)
{
	int i;

	for (i = 0; i < cfg->nroutes; i++) {
		char *const one[1] = {(char *)cfg->routes[i].domain};

		if (config_domain_listed(one, 1, domain))
			return &cfg->routes[i];
	}
	return NULL;
}

/*
 * The site of `domain`'s mail from `sender` (NULL: not known), as far as
 * it is known: a route's host, the sender's relay (its host and user: a
 * connection is never shared between credentials), the smarthost, the MX
 * host set last found for it, or the domain itself.  *is_static: the
 * first three (no lookup decides it).  Caller holds d->mu.
 */
static void
site_for(struct delivery *d, const struct config *cfg,
    const struct relays *relays, const char *domain, const char *sender,
    int64_t now, char *key, size_t len, bool *is_static)
{
	const struct route *r = route_for(cfg, domain);
	const struct relay *rl =
	    sender != NULL ? relays_for(relays, sender) : NULL;
	const char *site;

	*is_static = true;
	if (r != NULL) {
		snprintf(key, len, "[%s]:%d", r->to.host, r->to.port);
	} else if (rl != NULL) {
		snprintf(key, len, "%s", rl->key);
	} else if (cfg->smarthost.host[0] != '\0') {
		snprintf(key, len, "[%s]", cfg->smarthost.host);
	} else {
		*is_static = false;
		site = dests_site_of(d->dests, domain, now);
		snprintf(key, len, "%s", site != NULL ? site : domain);
	}
}

/*
 * This node's share of destination_concurrency when `nodes` share the
 * queue (at least 1): together they never open more.
 */
static int
site_concurrency(struct delivery *d, const struct config *cfg)
{
	int k = atomic_load(&d->nodes), n = cfg->destination_concurrency;

	return k > 1 ? (n / k > 0 ? n / k : 1) : n;
}

/*
 * This node's share of a rate of N per PERIOD when k nodes share the
 * queue: N/k (at least 1) per PERIOD * (N/k) * k / N, so that together
 * they keep to N per PERIOD, bursts included.
 */
static struct rate
node_rate(struct delivery *d, const struct rate *r)
{
	struct rate s = *r;
	int k = atomic_load(&d->nodes);

	if (k > 1 && r->n > 0) {
		s.n = r->n / k > 0 ? r->n / k : 1;
		s.period_ms = r->period_ms * k * s.n / r->n;
	}
	return s;
}

/*
 * The rate deliveries to `site` (for mail to `domain`) start at: a
 * destination_rates entry "[host]" naming the smarthost or a route's
 * host, else one for the recipient domain, else destination_rate.
 * Domains that share an MX host set share its site's pace.
 */
static const struct rate *
rate_for(const struct config *cfg, const char *site, const char *domain)
{
	int i;

	for (i = 0; i < cfg->ndestination_rates; i++) {
		const struct dest_rate *r = &cfg->destination_rates[i];
		size_t n = strlen(r->key);

		if (r->key[0] == '[' && ascii_ncasecmp(site, r->key, n) == 0 &&
		    (site[n] == '\0' || site[n] == ':'))
			return &r->rate;
	}
	for (i = 0; i < cfg->ndestination_rates; i++)
		if (ascii_casecmp(cfg->destination_rates[i].key, domain) == 0)
			return &cfg->destination_rates[i].rate;
	return &cfg->destination_rate;
}

/* The interval between probes of a suspended site. */
static int
probe_interval(const struct config *cfg)
{
	return cfg->retry_schedule[0];
}

/*
 * The reason given to recipients deferred for a suspended site:
 * "4.4.1 connect to ...: refused" gives "4.4.1 delivery temporarily
 * suspended: connect to ...: refused" (always a 4.x.x code).
 */
static void
suspended_reason(const char *reason, char *out, size_t len)
{
	unsigned a, b, c;
	int used = 0;

	if (sscanf(reason, "%1u.%3u.%3u%n", &a, &b, &c, &used) == 3 && a == 4 &&
	    reason[used] == ' ')
		snprintf(out, len, "%.*s delivery temporarily suspended: %s",
		    used, reason, reason + used + 1);
	else
		snprintf(out, len, "4.4.1 delivery temporarily suspended: %s",
		    reason);
}

/* Caller holds d->mu. */
static void
note_suspended_count(struct delivery *d)
{
	metrics_gauge_set(G_DESTS_SUSPENDED, dests_nsuspended(d->dests));
}

/* Log what a connection result changed for a site. */
static void
log_site_change(
    const char *site, enum dest_change ch, const char *why, int interval)
{
	if (ch == DEST_SUSPENDED) {
		metrics_inc(M_DEST_SUSPENDED);
		log_warn("deliver",
		    "site=%s delivery temporarily suspended: %s "
		    "(one probe every %ds until it answers)",
		    site, why, interval);
	} else if (ch == DEST_STILL) {
		log_info("deliver",
		    "site=%s probe failed, delivery still suspended: %s "
		    "(next probe in %ds)",
		    site, why, interval);
	}
}

/* ---- one delivery ---- */

struct delivery_thread {
	struct delivery *d;
	struct store *store; /* read-only */
	struct dns_resolver *dns;
	struct conncache cache; /* the connection kept after a message */
	unsigned gen; /* the delivery_conf that w->dns and w->cache belong to */
};

struct body_ctx {
	struct delivery_thread *w;
	const char *msg_id;
};

static enum res
read_body(void *arg, int (*put)(void *, const void *, size_t), void *put_arg,
    char *why)
{
	struct body_ctx *b = arg;

	return store_read_body(b->w->store, b->msg_id, put, put_arg, why);
}

/* Collect the start of the message for a bounce. */
struct head_buf {
	unsigned char *p;
	size_t len;
};

static int
collect_head(void *arg, const void *data, size_t len)
{
	struct head_buf *h = arg;
	size_t room = BOUNCE_RETURN_LIMIT + 1 - h->len;

	if (len > room)
		len = room;
	memcpy(h->p + h->len, data, len);
	h->len += len;
	return h->len > BOUNCE_RETURN_LIMIT ? 1 : 0;
}

/* One TLS session attempt, for TLS-RPT (RFC 8460). */
#define TLSRPT_NOTES_MAX 8
struct tlsrpt_note {
	const char *policy_type; /* "sts", "tlsa", "no-policy-found" */
	char policy[1024];       /* the policy, lines joined by LF */
	char mx[DNS_NAME_MAX];
	char result[32]; /* "" for a success */
	char local[64], ip[64];
};

struct record {
	const char *msg_id;
	const struct store_msg_info *m;
	const char *hostname;
	const struct dkim_keys *dkim; /* signs its notices */
	int delay_warning;            /* seconds, 0: no delay notices */
	int queue_lifetime; /* seconds: Will-Retry-Until of delay notices */
	struct outcome *out;
	int n;
	int64_t at, duration_ms;
	const char *mx_host, *ip, *tls;
	const char *security, *security_why; /* NULL: no host reached */
	const struct tlsrpt_note *tr; /* TLS-RPT results of its sessions */
	int ntr;
	const char *tr_domain;
	int port;
	char dsn_id[QUEUE_ID_LEN + 1];     /* out: the failure notice queued */
	char success_id[QUEUE_ID_LEN + 1]; /* out: the success notice */
	char delay_id[QUEUE_ID_LEN + 1];   /* out: the delay notice */
	int dsn_rcpts;                     /* out: recipients it reports */
};

/*
 * Sign a notice (From: MAILER-DAEMON@hostname) with the keys of hostname's
 * domain: hostname itself or the nearest parent with keys.  Nothing when
 * none has any.  A failure is RES_TEMP: the attempt is recorded later.
 */
static enum res
sign_notice(const struct record *r, const char *text, size_t len, char **sig,
    size_t *siglen, char *why)
{
	return dkim_sign_as_host(
	    r->dkim, r->hostname, text, len, r->at, sig, siglen, why);
}

/*
 * Queue a notice (RFC 3464) about `br` to the sender of r->msg_id, inside
 * the transaction that records the attempt: either both happen or
 * neither, so a notice is never lost, nor sent twice.  `r->dsn_id` gets
 * its queue ID.
 */
static enum res
queue_notice(struct store *store, struct record *r, enum bounce_kind kind,
    const struct bounce_rcpt *br, int k, char *why)
{
	const struct store_msg_info *m = r->m;
	struct head_buf head = {xmalloc(BOUNCE_RETURN_LIMIT + 1), 0};
	struct envelope env;
	struct envelope_rcpt er;
	struct bounce_msg b;
	char domain[256];
	const char *at;
	char *text, *sig = NULL;
	size_t len = 0, siglen = 0;
	enum res res;

	(void)store_read_body(store, r->msg_id, collect_head, &head, why);
	if (head.len > BOUNCE_RETURN_LIMIT)
		head.len = BOUNCE_RETURN_LIMIT;
	memset(&b, 0, sizeof(b));
	b.reporting_mta = r->hostname;
	b.queue_id = r->msg_id;
	b.envid = m->envid[0] ? m->envid : NULL;
	b.sender = m->sender;
	b.arrival = m->received_at;
	b.now = r->at;
	b.kind = kind;
	/* RFC 8689 section 4.3: a REQUIRETLS message's notices carry its
	 * header only, and go with REQUIRETLS themselves. */
	b.ret_hdrs = m->dsn_ret == RET_HDRS || m->requiretls;
	b.rcpts = br;
	b.nrcpts = k;
	b.orig = head.p;
	b.orig_len = head.len;
	b.orig_size = (size_t)m->stored_size;
	text = bounce_format(&b, &len);
	res = sign_notice(r, text, len, &sig, &siglen, why);
	if (res != RES_OK) {
		free(text);
		free(head.p);
		return res;
	}
	at = strrchr(m->sender, '@');
	snprintf(domain, sizeof(domain), "%s", at ? at + 1 : "");
	for (char *c = domain; *c != '\0'; c++)
		*c = ascii_lower(*c);
	memset(&er, 0, sizeof(er));
	er.address = m->sender;
	er.domain = domain;
	memset(&env, 0, sizeof(env));
	queue_new_id(env.id);
	env.received_at = r->at;
	env.sender = ""; /* notices are never answered (RFC 3461) */
	env.rcpts = &er;
	env.nrcpts = 1;
	env.size = (int64_t)len;
	env.stored_size = (int64_t)(len + siglen);
	env.prepend = sig;
	env.prepend_len = siglen;
	env.body_type = BODY_7BIT;
	env.requiretls = m->requiretls;
	env.client_ip = "127.0.0.1";
	env.helo = r->hostname;
	env.protocol = "local";
	res = store_put_mail(
	    store, &env, 0, &(struct store_part){text, len}, 1, why);
	if (res == RES_OK)
		snprintf(r->dsn_id, sizeof(r->dsn_id), "%s", env.id);
	free(sig);
	free(text);
	free(head.p);
	return res;
}

/*
 * The failure notice: all bounced, unreported recipients of the message
 * in one notice, sent once none is pending any more.
 */
static enum res
failure_notice(struct store *store, struct record *r, char *why)
{
	struct store_bounced *bl = NULL;
	struct bounce_rcpt *br;
	char(*status)[16];
	int nb, i, k = 0;
	enum res res = RES_OK;

	nb = store_unreported_bounces(store, r->msg_id, &bl, why);
	if (nb <= 0)
		return nb < 0 ? RES_TEMP : RES_OK;
	br = xcalloc((size_t)nb, sizeof(*br));
	status = xcalloc((size_t)nb, sizeof(*status));
	for (i = 0; i < nb; i++) {
		if (!notify_has(bl[i].notify, NOTIFY_FAILURE))
			continue; /* NOTIFY=NEVER or without FAILURE */
		br[k].address = bl[i].address;
		br[k].orcpt = bl[i].orcpt[0] ? bl[i].orcpt : NULL;
		br[k].action = "failed";
		reply_status(
		    bl[i].last_reply, "5.0.0", status[k], sizeof(status[k]));
		br[k].status = status[k];
		br[k].remote_mta = bl[i].mx_host[0] ? bl[i].mx_host : NULL;
		br[k].diagnostic = bl[i].last_reply;
		br[k].last_attempt = bl[i].last_attempt_at;
		k++;
	}
	/* Never answer the null sender (RFC 3461 section 6.1). */
	if (k > 0 && r->m->sender[0] != '\0' &&
	    (res = queue_notice(store, r, BOUNCE_FAILURE, br, k, why)) ==
	        RES_OK)
		r->dsn_rcpts = k;
	if (res == RES_OK)
		res = store_mark_reported(store, r->msg_id, why);
	free(status);
	free(br);
	free(bl);
	return res;
}

/*
 * The success notice, for recipients that asked with NOTIFY=SUCCESS and
 * went to a next hop without DSN ("relayed"): when the next hop does DSN
 * it got NOTIFY and reports itself (RFC 3461 section 5.2).
 */
static enum res
success_notice(struct store *store, struct record *r, char *why)
{
	struct bounce_rcpt *br = xcalloc((size_t)r->n + 1, sizeof(*br));
	int i, k = 0;
	enum res res = RES_OK;

	for (i = 0; i < r->n; i++) {
		const struct outcome *o = &r->out[i];

		if (o->state != RCPT_DELIVERED || !o->relayed ||
		    !notify_has(o->info.notify, NOTIFY_SUCCESS))
			continue;
		br[k].address = o->info.address;
		br[k].orcpt = o->info.orcpt[0] ? o->info.orcpt : NULL;
		br[k].action = "relayed";
		br[k].status = "2.0.0";
		br[k].remote_mta = r->mx_host;
		br[k].diagnostic = o->reply;
		br[k].last_attempt = r->at;
		k++;
	}
	if (k > 0 && r->m->sender[0] != '\0')
		res = queue_notice(store, r, BOUNCE_SUCCESS, br, k, why);
	free(br);
	return res;
}

/*
 * The delay notice (delay_warning_time): recipients of this job still
 * deferred that long after arrival, told once (RFC 3464 "delayed").
 */
static enum res
delay_notice(struct store *store, struct record *r, char *why)
{
	struct bounce_rcpt *br;
	char(*status)[16];
	int i, k = 0;
	enum res res = RES_OK;

	if (r->delay_warning <= 0 ||
	    r->at - r->m->received_at < r->delay_warning)
		return RES_OK;
	br = xcalloc((size_t)r->n + 1, sizeof(*br));
	status = xcalloc((size_t)r->n + 1, sizeof(*status));
	for (i = 0; i < r->n && res == RES_OK; i++) {
		const struct outcome *o = &r->out[i];

		if (o->state != RCPT_DEFERRED ||
		    (o->info.notified & NOTIFIED_DELAY) ||
		    !notify_has(o->info.notify, NOTIFY_DELAY))
			continue;
		br[k].address = o->info.address;
		br[k].orcpt = o->info.orcpt[0] ? o->info.orcpt : NULL;
		br[k].action = "delayed";
		reply_status(o->reply, "4.0.0", status[k], sizeof(status[k]));
		br[k].status = status[k];
		br[k].remote_mta = r->mx_host;
		br[k].diagnostic = o->reply;
		br[k].last_attempt = r->at;
		br[k].will_retry_until = r->m->received_at + r->queue_lifetime;
		k++;
		res = store_mark_delay_reported(
		    store, r->msg_id, o->info.rcpt_no, why);
	}
	if (res == RES_OK && k > 0 && r->m->sender[0] != '\0')
		res = queue_notice(store, r, BOUNCE_DELAY, br, k, why);
	free(status);
	free(br);
	return res;
}

static enum res
record_fn(struct store *store, void *arg, char *why)
{
	struct record *r = arg;
	int i;

	for (i = 0; i < r->n; i++) {
		struct outcome *o = &r->out[i];
		struct store_attempt a;

		memset(&a, 0, sizeof(a));
		a.msg_id = r->msg_id;
		a.rcpt_no = o->info.rcpt_no;
		a.at = r->at;
		a.mx_host = r->mx_host;
		a.ip = r->ip;
		a.port = r->port;
		a.tls = r->tls;
		a.security = r->security;
		a.security_why = r->security_why;
		a.reply = o->reply;
		a.duration_ms = r->duration_ms;
		a.state = o->state;
		a.next_at = o->next_at;
		a.lease_token = o->info.lease_token;
		if (store_record_attempt(store, &a, why) != RES_OK)
			return RES_TEMP;
	}
	for (i = 0; i < r->ntr; i++) {
		const struct tlsrpt_note *n = &r->tr[i];
		struct store_tlsrpt t = {r->at - r->at % 86400, r->tr_domain,
		    n->policy_type, n->policy, n->mx, n->result, n->local,
		    n->ip};

		if (store_tlsrpt_add(store, &t, why) != RES_OK)
			return RES_TEMP;
	}
	/* queue_run may run us twice: start the outputs afresh. */
	r->dsn_id[0] = r->success_id[0] = r->delay_id[0] = '\0';
	r->dsn_rcpts = 0;
	if (success_notice(store, r, why) != RES_OK)
		return RES_TEMP;
	snprintf(r->success_id, sizeof(r->success_id), "%s", r->dsn_id);
	r->dsn_id[0] = '\0';
	if (delay_notice(store, r, why) != RES_OK)
		return RES_TEMP;
	snprintf(r->delay_id, sizeof(r->delay_id), "%s", r->dsn_id);
	r->dsn_id[0] = '\0';
	if (failure_notice(store, r, why) != RES_OK)
		return RES_TEMP;
	return store_release_finished(store, r->msg_id, why);
}

/*
 * Where to connect for a job: route, smarthost, or MX.  A route or
 * smarthost whose name does not resolve is a configuration problem, not
 * the sender's: it defers, it never bounces.
 */
static enum res
targets(struct delivery_thread *w, const struct delivery_conf *dc,
    const struct delivery_job *j, const char *sender, struct mx_host **hosts,
    int *n, bool *smarthost, const struct relay **relay, char *why)
{
	const struct config *cfg = dc->cfg;
	const struct route *r = route_for(cfg, j->domain);
	const struct relay *rl =
	    r == NULL ? relays_for(dc->relays, sender) : NULL;
	struct dns_self self;
	enum res res;

	*smarthost = false;
	*relay = rl;
	if (r != NULL || rl != NULL || cfg->smarthost.host[0] != '\0') {
		const struct hostport *hp = r    ? &r->to
		                            : rl ? &rl->to
		                                 : &cfg->smarthost;
		int port = hp->port;

		*smarthost = (r == NULL && rl == NULL);
		if (port == 0)
			port = r ? 25
			       : cfg->smarthost_tls == SMARTHOST_TLS_SMTPS
			           ? 465
			           : 587;
		res = dns_resolve_host(w->dns, hp->host, port, hosts, n, why);
		if (res == RES_PERM) {
			char tmp[WHY_MAX];

			snprintf(tmp, sizeof(tmp), "%s", why);
			why_set(why, "4.4.4 %s %s: %.200s",
			    r    ? "route"
			    : rl ? "sender relay"
			         : "smarthost",
			    hp->host, tmp);
			res = RES_TEMP;
		}
		return res;
	}
	self.hostname = dc->self_name;
	self.addrs = dc->self_addrs;
	self.naddrs = dc->nself;
	return dns_resolve_mx(w->dns, j->domain, cfg->delivery_port, &self,
	    cfg->max_mx_hosts, hosts, n, why);
}

/* outcome_settle with the time and a random number for the jitter. */
static void
settle(const struct config *cfg, const struct store_msg_info *m,
    struct outcome *oc, enum res rr, const char *reply, bool have_dsn,
    int64_t now)
{
	struct attempt_end e = {rr, reply, have_dsn, now, 0};

	(void)gnutls_rnd(GNUTLS_RND_NONCE, &e.rnd, sizeof(e.rnd));
	outcome_settle(oc, cfg, m->received_at, &e);
}

/* One log line per recipient of a recorded attempt, its notices, and the
 * delivery metrics. */
static void
log_outcomes(const char *msg_id, const struct store_msg_info *m,
    const struct record *rec, const char *relay)
{
	char tls[200] = "";
	int i;

	if (rec->security != NULL)
		snprintf(tls, sizeof(tls), " tls=%s%s%s%s", rec->security,
		    rec->security_why ? " (" : "",
		    rec->security_why ? rec->security_why : "",
		    rec->security_why ? ")" : "");

	for (i = 0; i < rec->n; i++) {
		const struct outcome *oc = &rec->out[i];
		char dsn[16] = "";

		reply_status(oc->reply, "-", dsn, sizeof(dsn));
		if (oc->state == RCPT_DELIVERED) {
			metrics_inc(M_DELIVERY_SENT);
			metrics_observe(H_DELIVERY_LATENCY,
			    (double)(rec->at - m->received_at));
		} else {
			metrics_inc(oc->state == RCPT_BOUNCED
			                ? M_DELIVERY_BOUNCED
			                : M_DELIVERY_DEFERRED);
		}
		log_info("deliver",
		    "id=%s rcpt=<%s> relay=%s%s delay=%llds "
		    "dsn=%s status=%s (%s)",
		    msg_id, oc->info.address, relay, tls,
		    (long long)(rec->at - m->received_at), dsn,
		    attempt_status_name(oc->state), oc->reply);
	}
	metrics_add(M_NOTICES, (rec->dsn_id[0] != '\0') +
	                           (rec->delay_id[0] != '\0') +
	                           (rec->success_id[0] != '\0'));
	if (rec->dsn_id[0] != '\0')
		log_info("deliver",
		    "id=%s sender notice: id=%s to=<%s> (delivery failure, "
		    "%d recipient%s)",
		    msg_id, rec->dsn_id, m->sender, rec->dsn_rcpts,
		    rec->dsn_rcpts == 1 ? "" : "s");
	if (rec->delay_id[0] != '\0')
		log_info("deliver",
		    "id=%s sender notice: id=%s to=<%s> (delayed)", msg_id,
		    rec->delay_id, m->sender);
	if (rec->success_id[0] != '\0')
		log_info("deliver",
		    "id=%s sender notice: id=%s to=<%s> (relayed)", msg_id,
		    rec->success_id, m->sender);
}

/* Sleep up to `ms`, less when delivery stops (delivery_stop signals
 * d->cv; a new job's signal only makes the loop look again). */
static void
nap(struct delivery *d, int64_t ms)
{
	int64_t until = now_ms() + ms;

	mutex_lock(&d->mu);
	while (!atomic_load(&d->stop) && now_ms() < until)
		cond_wait_until(&d->cv, &d->mu, until);
	mutex_unlock(&d->mu);
}

/*
 * Run fn in a transaction of its own.  SQLite has one writer, the
 * queue's writer thread, which batches everyone's work; a shared queue's
 * database takes writes from many connections at once, so a delivery
 * thread (`own`: its connection) records its results itself, in
 * parallel with the others, rather than one after another on the writer.
 */
static enum res
run_txn(struct delivery *d, struct store *own,
    enum res (*fn)(struct store *, void *, char *), void *arg, char *why)
{
	enum res r;

	if (own == NULL || !d->shared)
		return queue_run(d->q, fn, arg, why);
	r = store_begin(own, why);
	if (r == RES_OK)
		r = fn(own, arg, why);
	if (r == RES_OK)
		r = store_commit(own, why);
	else
		store_rollback(own);
	return r;
}

/*
 * Run `fn` in a queue transaction until it commits.  What a delivery
 * learned (delivered, deferred, bounced) must not be lost because the
 * queue cannot be written for a while (a full disk): the thread keeps it
 * and tries again, waiting 1 s, 2 s, ... up to 30 s, while the leases
 * keep other threads off these recipients.  False only when delivery
 * stops first: the leases are then cleared at the next start and the
 * recipients tried again.
 */
static bool
run_durably(struct delivery *d, struct store *own,
    enum res (*fn)(struct store *, void *, char *), void *arg,
    const char *msg_id, const char *what)
{
	char why[WHY_MAX];
	int64_t wait = 1000;
	int tries = 0;

	for (;;) {
		if (run_txn(d, own, fn, arg, why) == RES_OK) {
			if (tries > 0)
				log_info("deliver",
				    "id=%s %s recorded after %d failed "
				    "tr%s",
				    msg_id, what, tries,
				    tries == 1 ? "y" : "ies");
			return true;
		}
		if (tries++ == 0)
			log_err("deliver",
			    "id=%s cannot record the %s: %s (kept in memory; "
			    "trying again)",
			    msg_id, what, why);
		if (atomic_load(&d->stop)) {
			log_err("deliver",
			    "id=%s %s not recorded before shutdown: %s (the "
			    "recipients are tried again at the next start)",
			    msg_id, what, why);
			return false;
		}
		nap(d, wait);
		wait = wait * 2 > RECORD_RETRY_MAX_MS ? RECORD_RETRY_MAX_MS
		                                      : wait * 2;
	}
}

/* Give a job's recipients back to the queue, unattempted (lease 0). */
struct unlease {
	const struct delivery_job *j;
};

static enum res
unlease_fn(struct store *store, void *arg, char *why)
{
	const struct delivery_job *j = ((struct unlease *)arg)->j;
	int i;

	for (i = 0; i < j->nrcpts; i++)
		if (store_lease(store, j->msg_id, j->rcpt_nos[i], 0, why) !=
		    RES_OK)
			return RES_TEMP;
	return RES_OK;
}

/* Making the recipients deferred during an outage due again. */
struct resume {
	struct delivery *d;
	const struct config *cfg;
	const char *site;
	bool domain_only; /* `site` is a domain whose lookups failed */
	int64_t since, now;
	int n;
};

static bool
resume_match(void *arg, const char *domain)
{
	struct resume *rs = arg;
	char key[DESTS_KEY_MAX];
	bool is_static;

	if (rs->domain_only)
		return strcmp(domain, rs->site) == 0;
	mutex_lock(&rs->d->mu);
	site_for(rs->d, rs->cfg, NULL, domain, NULL, rs->now, key, sizeof(key),
	    &is_static);
	mutex_unlock(&rs->d->mu);
	return strcmp(key, rs->site) == 0;
}

static enum res
resume_fn(struct store *store, void *arg, char *why)
{
	struct resume *rs = arg;

	rs->n = store_resume_deferred(
	    store, rs->since, rs->now, resume_match, rs, why);
	return rs->n < 0 ? RES_TEMP : RES_OK;
}

/*
 * A suspended site (or domain) answers again: what was deferred for it
 * since the outage began goes now, not at each recipient's next retry.
 */
static void
resume_site(struct delivery *d, const struct config *cfg, const char *site,
    bool domain_only, int64_t since, const char *msg_id)
{
	struct resume rs = {d, cfg, site, domain_only, since, time(NULL), 0};

	if (!run_durably(d, NULL, resume_fn, &rs, msg_id, "resumption"))
		rs.n = 0;
	log_info("deliver",
	    "site=%s delivery resumed after %llds suspended; %d deferred "
	    "recipient%s due now",
	    site, (long long)(rs.now - since), rs.n, rs.n == 1 ? "" : "s");
	wake(d);
}

/* What a job does after looking up its domain's MX hosts. */
enum plan {
	PLAN_CONNECT,   /* try the hosts */
	PLAN_SUSPENDED, /* its site is suspended: defer (why says so) */
	PLAN_PUT_BACK,  /* its site is busy: give the recipients back */
};

/*
 * After the MX lookup of a job's domain: a failed lookup (RES_TEMP)
 * suspends the domain as a site of its own; a successful one tells its
 * site (the MX host set), which the job moves to, and ends a suspension
 * of the domain.  On the move the job is admitted again, as the claim
 * would have: it may become the probe of the site, or find it suspended
 * or busy.
 */
static enum plan
site_learn(struct delivery *d, const struct config *cfg, struct delivery_job *j,
    enum res r, const struct mx_host *hosts, int nhosts, char *why)
{
	const struct rate *rate;
	struct rate share;
	const char **names = NULL;
	char site[DESTS_KEY_MAX];
	const char *reason = NULL;
	int64_t now = (int64_t)time(NULL), down = 0;
	enum dest_change ch = DEST_SAME;
	enum dest_admit v;
	enum plan plan = PLAN_CONNECT;
	int i;

	if (r == RES_TEMP) {
		mutex_lock(&d->mu);
		dests_forget(d->dests, j->domain);
		if (!atomic_load(&d->stop))
			ch = dests_fail(d->dests, j->domain,
			    j->probe && strcmp(j->dest, j->domain) == 0, why,
			    now, probe_interval(cfg));
		dests_note(d->dests, j->domain, j->domain);
		note_suspended_count(d);
		mutex_unlock(&d->mu);
		log_site_change(j->domain, ch, why, probe_interval(cfg));
		return PLAN_CONNECT; /* nothing to connect to: deferred */
	}
	if (r != RES_OK || nhosts == 0)
		return PLAN_CONNECT;
	names = xcalloc((size_t)nhosts, sizeof(*names));
	for (i = 0; i < nhosts; i++)
		names[i] = hosts[i].name;
	dests_mx_site(names, nhosts, site, sizeof(site));
	free(names);
	mutex_lock(&d->mu);
	if (dests_suspended(d->dests, j->domain, false, NULL))
		ch = dests_ok(d->dests, j->domain, now, &down);
	dests_learn(d->dests, j->domain, site, now);
	if (strcmp(site, j->dest) != 0) {
		if (j->counted)
			dests_finish(d->dests, j->dest, j->probe);
		j->counted = j->probe = false;
		snprintf(j->dest, sizeof(j->dest), "%s", site);
		v = dests_admit(d->dests, site, site_concurrency(d, cfg), 0,
		    false, now, &reason);
		share = node_rate(d, rate_for(cfg, site, j->domain));
		rate = &share;
		if ((v == DEST_GO || v == DEST_PROBE) &&
		    dests_rate_wait(d->dests, site, rate, now_ms()) > 0) {
			/* Its rate: back to the queue; the claim paces it. */
			metrics_inc(M_RATE_WAITS);
			v = DEST_BUSY;
		}
		switch (v) {
		case DEST_GO:
		case DEST_PROBE:
			j->probe = v == DEST_PROBE;
			dests_start(d->dests, site, j->probe, now);
			dests_rate_take(d->dests, site, rate, now_ms());
			j->counted = true;
			break;
		case DEST_DEFER:
			suspended_reason(reason, why, WHY_MAX);
			plan = PLAN_SUSPENDED;
			break;
		case DEST_BUSY:
			d->blocked = true;
			plan = PLAN_PUT_BACK;
			break;
		}
	}
	note_suspended_count(d);
	mutex_unlock(&d->mu);
	if (ch == DEST_RESUMED)
		resume_site(d, cfg, j->domain, true, down, j->msg_id);
	return plan;
}

/*
 * Just before a connection: is the job's site suspended (since the claim,
 * or by another job's failure) and this job not its probe?  Then `why`
 * holds the reason to defer with.
 */
static bool
site_suspended(struct delivery *d, const struct delivery_job *j, char *why)
{
	const char *reason = NULL;
	bool s;

	mutex_lock(&d->mu);
	s = dests_suspended(d->dests, j->dest, j->probe, &reason);
	if (s)
		suspended_reason(reason, why, WHY_MAX);
	mutex_unlock(&d->mu);
	return s;
}

/* A connection to the job's site succeeded (ok) or every one failed. */
static void
site_result(struct delivery *d, const struct config *cfg,
    const struct delivery_job *j, bool ok, const char *why)
{
	int64_t now = (int64_t)time(NULL), down = 0;
	enum dest_change ch = DEST_SAME;

	mutex_lock(&d->mu);
	if (ok)
		ch = dests_ok(d->dests, j->dest, now, &down);
	else if (!atomic_load(&d->stop)) {
		ch = dests_fail(
		    d->dests, j->dest, j->probe, why, now, probe_interval(cfg));
		dests_note(d->dests, j->dest, j->domain);
	}
	note_suspended_count(d);
	mutex_unlock(&d->mu);
	if (ch == DEST_ALIVE)
		wake(d); /* more may start now */
	else if (ch == DEST_RESUMED)
		resume_site(d, cfg, j->dest, false, down, j->msg_id);
	else
		log_site_change(j->dest, ch, why, probe_interval(cfg));
}

/* One attempt at a job: what it works on and what it found. */
struct attempt {
	struct store_msg_info m;
	struct outcome *out; /* the recipients still pending, n of them */
	struct smtpc_rcpt *sr;
	int n;
	struct mx_host *hosts;
	int nhosts;
	struct held_conn h;    /* the connection, once there is one */
	struct conn_peer peer; /* where the message went, for the record */
	char why[WHY_MAX];     /* why it ended before a transaction */
	char tlsdesc[128];
	char security[16];      /* smtpc_security of the session used */
	char security_why[128]; /* the TLSA record used, or the plan's note */
	struct tlsrpt_note tr[TLSRPT_NOTES_MAX]; /* this attempt's sessions */
	int ntr;
	const char *tr_domain; /* the domain reported to, NULL: none */
	bool have_dsn;
	bool put_back; /* its site was busy: the recipients were given back */
	int64_t t0;    /* now_ms() at its start */
};

/*
 * The message and its recipients still pending (held or finished ones
 * are left out).  False when there is nothing to do: the message was
 * deleted meanwhile (sluice queue delete), or no recipient is left.
 */
static bool
attempt_load(
    struct delivery_thread *w, const struct delivery_job *j, struct attempt *a)
{
	int i;

	a->out = xcalloc((size_t)j->nrcpts, sizeof(*a->out));
	a->sr = xcalloc((size_t)j->nrcpts, sizeof(*a->sr));
	if (store_load_message(w->store, j->msg_id, &a->m, a->why) != RES_OK) {
		log_info("deliver", "id=%s skipped: %s", j->msg_id, a->why);
		return false;
	}
	for (i = 0; i < j->nrcpts; i++) {
		struct outcome *oc = &a->out[a->n];

		if (store_load_rcpt(w->store, j->msg_id, j->rcpt_nos[i],
		        &oc->info, a->why) != RES_OK)
			continue;
		if (!rcpt_pending(oc->info.state))
			continue;
		a->sr[a->n].address = oc->info.address;
		a->sr[a->n].notify = oc->info.notify;
		a->sr[a->n].orcpt = oc->info.orcpt[0] ? oc->info.orcpt : NULL;
		a->n++;
	}
	a->why[0] = '\0';
	return a->n > 0;
}

/*
 * The tls_policy level for mail to `domain` through `host` (a smarthost,
 * route or sender relay host; NULL for MX delivery): "[host]" first, then
 * the domain, then ".parent" entries for its subdomains, nearest first;
 * -1 when none applies (outbound_tls does).
 */
static int
policy_level(const struct config *cfg, const char *domain, const char *host)
{
	const char *d;
	int i;

	for (i = 0; host != NULL && i < cfg->ntls_policies; i++) {
		const char *k = cfg->tls_policies[i].key;
		size_t n = strlen(host);

		if (k[0] == '[' && strlen(k) == n + 2 &&
		    ascii_ncasecmp(k + 1, host, n) == 0)
			return cfg->tls_policies[i].level;
	}
	for (i = 0; i < cfg->ntls_policies; i++)
		if (ascii_casecmp(cfg->tls_policies[i].key, domain) == 0)
			return cfg->tls_policies[i].level;
	for (d = strchr(domain, '.'); d != NULL; d = strchr(d + 1, '.'))
		for (i = 0; i < cfg->ntls_policies; i++)
			if (ascii_casecmp(cfg->tls_policies[i].key, d) == 0)
				return cfg->tls_policies[i].level;
	return -1;
}

/*
 * TLS to a relay (the smarthost, a sender's relay): required unless its
 * tls is none; verified when outbound_tls = verify.
 */
static int
relay_tls(int relay, int outbound)
{
	if (relay == SMARTHOST_TLS_NONE)
		return OUTBOUND_TLS_NONE;
	return outbound == OUTBOUND_TLS_VERIFY ? OUTBOUND_TLS_VERIFY
	                                       : OUTBOUND_TLS_ENCRYPT;
}

/* The options by outbound_tls, the smarthost's and the relays' settings. */
static void
client_tls(const struct delivery_conf *dc, int stop_fd, bool smarthost,
    const struct relay *relay, struct smtpc_opts *o)
{
	const struct config *cfg = dc->cfg;

	memset(o, 0, sizeof(*o));
	o->helo = cfg->hostname;
	o->connect_timeout = cfg->connect_timeout;
	o->command_timeout = cfg->delivery_command_timeout;
	o->data_timeout = cfg->delivery_data_timeout;
	o->tls = dc->client_creds ? cfg->outbound_tls : OUTBOUND_TLS_NONE;
	o->tls_creds = dc->client_creds;
	o->stop_fd = stop_fd;
	if (relay != NULL) { /* as the smarthost, without AUTH in clear */
		o->implicit_tls = relay->tls == SMARTHOST_TLS_SMTPS;
		o->tls = relay_tls(relay->tls, cfg->outbound_tls);
		o->auth_user = relay->user;
		o->auth_pass = relay->password;
		return;
	}
	if (!smarthost)
		return;
	o->implicit_tls = cfg->smarthost_tls == SMARTHOST_TLS_SMTPS;
	o->tls = relay_tls(cfg->smarthost_tls, cfg->outbound_tls);
	o->auth_user = cfg->smarthost_user;
	o->auth_pass = dc->smarthost_pass;
	o->auth_without_tls = cfg->smarthost_auth_without_tls;
}

/*
 * The SMTP client's options for the job's hosts (mail to `domain`);
 * tls_policy overrides the TLS level outbound_tls and the relay's tls set.
 */
static void
client_options(const struct delivery_conf *dc, int stop_fd, bool smarthost,
    const struct relay *relay, const char *domain, struct smtpc_opts *o)
{
	const struct config *cfg = dc->cfg;
	const struct route *rt = route_for(cfg, domain);
	const char *host = relay       ? relay->to.host
	                   : smarthost ? cfg->smarthost.host
	                   : rt        ? rt->to.host
	                               : NULL;
	int level = policy_level(cfg, domain, host);

	client_tls(dc, stop_fd, smarthost, relay, o);
	if (level >= 0 && dc->client_creds != NULL)
		o->tls = level;
}

/* ---- MTA-STS (RFC 8461) ---- */

/* How long the first delivery to a domain waits for its policy. */
#define STS_FETCH_MS 20000

struct sts_put_arg {
	struct store_sts_row row;
};

static enum res
sts_put_fn(struct store *s, void *arg, char *why)
{
	return store_sts_put(s, &((struct sts_put_arg *)arg)->row, why);
}

/* The policy as the cache row holds it (0), or -1. */
static int
sts_cached(struct delivery_thread *w, const char *domain, struct sts_policy *p,
    int64_t *expires_at)
{
	struct store_sts c;
	char why[WHY_MAX];
	int rc = -1;

	if (store_sts_get(w->store, domain, &c, why) != 1)
		return -1;
	if (sts_parse_policy(c.text, strlen(c.text), p, why) == 0) {
		snprintf(p->id, sizeof(p->id), "%s", c.id);
		*expires_at = c.expires_at;
		rc = 0;
	}
	free(c.text);
	return rc;
}

/* Fetch and cache `domain`'s policy under `id`; one thread at a time per
 * domain (the others wait for it, then read the cache).  0 with *p. */
static int
sts_refresh(struct delivery_thread *w, const struct delivery_conf *dc,
    const char *domain, const char *id, struct sts_policy *p, char *why)
{
	struct delivery *d = w->d;
	struct sts_put_arg put;
	char *text = NULL, mx[STS_MX_MAX * DNS_NAME_MAX], qwhy[WHY_MAX];
	int64_t until = now_ms() + STS_FETCH_MS, exp;
	int i, slot = -1, rc;
	bool waited = false;

	mutex_lock(&d->mu);
	for (;;) {
		bool busy = false;

		for (i = 0; i < d->nsts_busy; i++)
			busy |= strcmp(d->sts_busy[i], domain) == 0;
		if (!busy || now_ms() >= until)
			break;
		waited = true;
		cond_wait_until(&d->sts_cv, &d->mu, until);
	}
	if (!waited && d->nsts_busy < STS_BUSY_MAX) {
		slot = d->nsts_busy++;
		snprintf(
		    d->sts_busy[slot], sizeof(d->sts_busy[slot]), "%s", domain);
	}
	mutex_unlock(&d->mu);
	if (slot < 0) {
		/* Another thread fetched it (or all slots are taken). */
		if (sts_cached(w, domain, p, &exp) == 0 &&
		    exp > (int64_t)time(NULL) && strcmp(p->id, id) == 0)
			return 0;
		why_set(why,
		    "4.7.5 MTA-STS policy of %s: fetched by another "
		    "delivery, not cached",
		    domain);
		return -1;
	}
	rc = sts_fetch(w->dns, domain, dc->cfg->mta_sts_port, dc->client_creds,
	    until, d->stop_fd, p, &text, why);
	memset(&put, 0, sizeof(put));
	put.row.domain = domain;
	if (rc == 0) {
		mx[0] = '\0';
		for (i = 0; i < p->nmx; i++)
			snprintf(mx + strlen(mx), sizeof(mx) - strlen(mx),
			    "%s%s", i ? "\n" : "", p->mx[i]);
		snprintf(p->id, sizeof(p->id), "%s", id);
		put.row.id = id;
		put.row.mode = sts_mode_name(p->mode);
		put.row.mx = mx;
		put.row.text = text;
		put.row.max_age = p->max_age;
		put.row.fetched_at = (int64_t)time(NULL);
		log_info("deliver",
		    "MTA-STS policy of %s: mode %s, id %s, "
		    "max_age %llds, %d mx",
		    domain, put.row.mode, id, (long long)p->max_age, p->nmx);
	} else {
		put.row.error = why;
		log_warn("deliver", "%s", why);
	}
	if (queue_run(d->q, sts_put_fn, &put, qwhy) != RES_OK)
		log_warn("deliver", "MTA-STS policy of %s not cached: %s",
		    domain, qwhy);
	free(text);
	mutex_lock(&d->mu);
	d->nsts_busy--;
	if (slot != d->nsts_busy)
		memcpy(d->sts_busy[slot], d->sts_busy[d->nsts_busy],
		    sizeof(d->sts_busy[slot]));
	pthread_cond_broadcast(&d->sts_cv);
	mutex_unlock(&d->mu);
	return rc;
}

/*
 * The MTA-STS policy for mail to `domain` (RFC 8461 section 5): a cached
 * one is used while it is valid and its id is what the TXT record says,
 * and kept when the TXT record is gone or its lookup fails (so that an
 * attacker who strips the record does not strip the policy); a new id,
 * or none cached, fetches it (the delivery waits, bounded).  True with *p
 * when a testing or enforce policy applies.
 */
static bool
sts_policy(struct delivery_thread *w, const struct delivery_conf *dc,
    const char *domain, struct sts_policy *p)
{
	struct sts_policy cached = {.mode = STS_MODE_NONE};
	char name[DNS_NAME_MAX + 16], id[STS_ID_MAX + 1] = "", why[WHY_MAX];
	char tid[STS_ID_MAX + 1], **txt = NULL;
	int64_t exp = 0;
	bool have, secure;
	int i, ntxt = 0, valid = 0;

	have = sts_cached(w, domain, &cached, &exp) == 0 &&
	       exp > (int64_t)time(NULL);
	snprintf(name, sizeof(name), "_mta-sts.%s", domain);
	if (dns_lookup_txt(w->dns, name, &txt, &ntxt, &secure, why) == RES_OK) {
		for (i = 0; i < ntxt; i++)
			if (sts_parse_txt(txt[i], tid) == 1) {
				valid++;
				snprintf(id, sizeof(id), "%s", tid);
			}
		dns_txt_free(txt, ntxt);
	}
	if (valid != 1 || (have && strcmp(id, cached.id) == 0)) {
		/* No record (or a failed lookup): the cached policy, if any. */
		*p = cached;
		return have && cached.mode != STS_MODE_NONE;
	}
	if (sts_refresh(w, dc, domain, id, p, why) == 0)
		return p->mode != STS_MODE_NONE;
	*p = cached;
	return have && cached.mode != STS_MODE_NONE;
}

/* What DANE decided for one MX host: the TLS level and its records. */
struct dane_plan {
	int tls;               /* OUTBOUND_TLS_* for smtpc */
	struct dns_tlsa *tlsa; /* tls = DANE: the records (free them) */
	int ntlsa;
	const char *names[3]; /* DANE-TA's reference identifiers */
	const char *base;     /* the TLSA base domain, sent as SNI */
	int nnames;
	char note[128]; /* why this level, for the attempt's record */
};

/*
 * The TLS level for MX host `h` of `domain` under outbound_tls = dane or
 * dane-only (RFC 7672 section 2.2): TLSA is asked only for a host whose
 * address answer was secure; a failed lookup skips the host (RES_TEMP,
 * never plaintext); secure usable records require STARTTLS and DANE
 * authentication, secure records none of which is usable require
 * encryption, and no secure records leave `may` (dane) or skip the host
 * (dane-only).  An insecure MX answer still uses its hosts' secure TLSA
 * records, as Postfix's default does, but then only the host name (not
 * the domain) is a reference identifier for DANE-TA.
 */
static enum res
dane_plan(struct dns_resolver *dns, int level, const struct mx_host *h,
    const char *domain, int port, struct dane_plan *p, char *why)
{
	bool only = level == OUTBOUND_TLS_DANE_ONLY, secure;
	int i, usable = 0;

	memset(p, 0, sizeof(*p));
	p->tls = OUTBOUND_TLS_MAY;
	if (!h->addr_secure) {
		snprintf(p->note, sizeof(p->note),
		    "address not DNSSEC-secure: no TLSA lookup");
		goto weak;
	}
	/* RFC 7672 section 2.2.2: through a secure CNAME chain, the TLSA
	 * records of the name it leads to first, then of the MX name. */
	p->base = h->name;
	if (h->cname_target[0] != '\0') {
		if (dns_lookup_tlsa(dns, h->cname_target, port, &p->tlsa,
		        &p->ntlsa, &secure, why) != RES_OK)
			return RES_TEMP;
		if (p->ntlsa > 0 && secure)
			p->base = h->cname_target;
		else {
			dns_tlsa_free(p->tlsa, p->ntlsa);
			p->tlsa = NULL;
			p->ntlsa = 0;
		}
	}
	if (p->base == h->name && dns_lookup_tlsa(dns, h->name, port, &p->tlsa,
	                              &p->ntlsa, &secure, why) != RES_OK)
		return RES_TEMP;
	if (p->ntlsa == 0 || !secure) {
		snprintf(p->note, sizeof(p->note), "no secure TLSA records");
		goto weak;
	}
	for (i = 0; i < p->ntlsa; i++)
		usable += dane_usable(&p->tlsa[i]);
	if (usable == 0) {
		snprintf(p->note, sizeof(p->note),
		    "TLSA records, none usable: encryption required");
		p->tls = OUTBOUND_TLS_ENCRYPT;
		goto weak;
	}
	p->tls = OUTBOUND_TLS_DANE;
	if (p->base != h->name)
		p->names[p->nnames++] = p->base;
	p->names[p->nnames++] = h->name;
	if (h->mx_secure)
		p->names[p->nnames++] = domain;
	if (!h->mx_secure)
		snprintf(p->note, sizeof(p->note), "MX answer not secure");
	return RES_OK;
weak:
	if (!only)
		return RES_OK;
	why_set(why, "4.7.5 %s: %s, and outbound_tls is dane-only", h->name,
	    p->note);
	dns_tlsa_free(p->tlsa, p->ntlsa);
	p->tlsa = NULL;
	p->ntlsa = 0;
	return RES_TEMP;
}

/* Does `domain` publish TLS-RPT (a "v=TLSRPTv1" record at _smtp._tls)? */
static bool
tlsrpt_published(struct delivery_thread *w, const char *domain)
{
	char name[DNS_NAME_MAX + 16], why[WHY_MAX], **txt;
	bool secure, yes = false;
	int i, n;

	snprintf(name, sizeof(name), "_smtp._tls.%.250s", domain);
	if (dns_lookup_txt(w->dns, name, &txt, &n, &secure, why) != RES_OK)
		return false;
	for (i = 0; i < n; i++)
		yes |= strncmp(txt[i], "v=TLSRPTv1", 10) == 0 &&
		       (txt[i][10] == ';' || txt[i][10] == ' ' ||
		           txt[i][10] == '\0');
	dns_txt_free(txt, n);
	return yes;
}

/* Note one TLS session attempt of `a` (at most TLSRPT_NOTES_MAX). */
static void
tlsrpt_note(struct attempt *a, const char *type, const char *policy,
    const struct mx_host *h, const char *result, const char *local)
{
	struct tlsrpt_note *n;

	if (a->tr_domain == NULL || a->ntr == TLSRPT_NOTES_MAX)
		return;
	n = &a->tr[a->ntr++];
	n->policy_type = type;
	snprintf(n->policy, sizeof(n->policy), "%s", policy);
	snprintf(n->mx, sizeof(n->mx), "%s", h->name);
	snprintf(n->result, sizeof(n->result), "%s", result);
	snprintf(n->local, sizeof(n->local), "%s", local);
	snprintf(n->ip, sizeof(n->ip), "%s", h->ip);
}

/* The policy-string of a DANE host: its TLSA records, one per line. */
static void
tlsa_policy_string(const struct dane_plan *dp, char *out, size_t len)
{
	size_t o = 0, k;
	int i;

	out[0] = '\0';
	for (i = 0; i < dp->ntlsa && o + 16 < len; i++) {
		o += (size_t)snprintf(out + o, len - o, "%s%u %u %u ",
		    i ? "\n" : "", dp->tlsa[i].usage, dp->tlsa[i].selector,
		    dp->tlsa[i].mtype);
		for (k = 0; k < dp->tlsa[i].len && o + 3 < len; k++)
			o += (size_t)snprintf(
			    out + o, len - o, "%02x", dp->tlsa[i].data[k]);
	}
}

/* The policy-string of an MTA-STS policy: its lines. */
static void
sts_policy_string(const struct sts_policy *p, char *out, size_t len)
{
	size_t o;
	int i;

	o = (size_t)snprintf(
	    out, len, "version: STSv1\nmode: %s", sts_mode_name(p->mode));
	for (i = 0; i < p->nmx && o < len; i++)
		o += (size_t)snprintf(out + o, len - o, "\nmx: %s", p->mx[i]);
	if (o < len)
		snprintf(
		    out + o, len - o, "\nmax_age: %lld", (long long)p->max_age);
}

/*
 * A new connection for the job: its hosts (route, smarthost or MX, which
 * also tells its site), then each in turn until one gives a session.
 * RES_OK with a->h open; otherwise a->why says why (and a->put_back when
 * the site the job moved to was busy).
 */
static enum res
connect_fresh(struct delivery_thread *w, const struct delivery_conf *dc,
    struct delivery_job *j, struct attempt *a)
{
	struct delivery *d = w->d;
	const struct config *cfg = dc->cfg;
	struct smtpc_opts o;
	const struct relay *relay = NULL;
	bool smarthost = false, tried = false;
	enum plan plan = PLAN_CONNECT;
	struct dane_plan dp;
	struct sts_policy sts;
	bool dane, mx, sts_on = false, req = a->m.requiretls != 0;
	bool lax = a->m.tls_required_no && !req, only_perm = true;
	struct smtpc_tls_result tres;
	char stsstr[1024] = "", trpol[1024];
	const char *tr_type;
	enum res r;
	int i, level;

	free(a->hosts);
	a->hosts = NULL;
	a->nhosts = 0;
	r = targets(w, dc, j, a->m.sender, &a->hosts, &a->nhosts, &smarthost,
	    &relay, a->why);
	if (!j->static_dest)
		plan = site_learn(d, cfg, j, r, a->hosts, a->nhosts, a->why);
	else if (r == RES_TEMP)
		site_result(
		    d, cfg, j, false, a->why); /* its name: the site's */
	if (plan == PLAN_PUT_BACK) {
		struct unlease u = {j};

		(void)run_durably(
		    d, w->store, unlease_fn, &u, j->msg_id, "put-back");
		a->put_back = true;
		return RES_TEMP;
	}
	if (plan == PLAN_SUSPENDED)
		return RES_TEMP;
	if (r != RES_OK)
		return r;
	client_options(dc, d->stop_fd, smarthost, relay, j->domain, &o);
	/* DANE is for MX hosts: a smarthost, relay or route has its own. */
	mx = !smarthost && relay == NULL && route_for(cfg, j->domain) == NULL &&
	     j->domain[0] != '[';
	dane = o.tls >= OUTBOUND_TLS_DANE && mx && !lax;
	/* MTA-STS for MX delivery with TLS, unless tls_policy names the
	 * domain (an explicit level wins). */
	if (mx && !lax && cfg->mta_sts && o.tls != OUTBOUND_TLS_NONE &&
	    dc->client_creds != NULL && policy_level(cfg, j->domain, NULL) < 0)
		sts_on = sts_policy(w, dc, j->domain, &sts);
	/* "TLS-Required: No" (RFC 8689 section 5): no DANE or MTA-STS, and
	 * at most opportunistic TLS to MX hosts. */
	if (lax && mx && o.tls > OUTBOUND_TLS_MAY)
		o.tls = OUTBOUND_TLS_MAY;
	/* REQUIRETLS (RFC 8689 section 4.2.1): the next hop must be found
	 * securely (a DNSSEC-secure MX answer, or an MTA-STS enforce
	 * policy; a relay or route is configured) and authenticated. */
	if (req && mx && !(a->nhosts > 0 && a->hosts[0].mx_secure) &&
	    !(sts_on && sts.mode == STS_MODE_ENFORCE)) {
		why_set(a->why,
		    "5.7.10 REQUIRETLS: the MX records of %s are not "
		    "DNSSEC-secure, and it has no MTA-STS policy in force",
		    j->domain);
		return RES_PERM;
	}
	if (req && (o.tls == OUTBOUND_TLS_NONE || dc->client_creds == NULL)) {
		why_set(a->why, "5.7.10 REQUIRETLS: TLS is off towards %s",
		    j->domain);
		return RES_PERM;
	}
	if (!dane && o.tls == OUTBOUND_TLS_DANE)
		o.tls = OUTBOUND_TLS_MAY; /* not an MX host */
	else if (!dane && o.tls == OUTBOUND_TLS_DANE_ONLY)
		o.tls = OUTBOUND_TLS_ENCRYPT;
	level = o.tls;
	/* TLS-RPT: this attempt's sessions, for a domain that wants them. */
	a->ntr = 0;
	a->tr_domain = cfg->tlsrpt && mx && !lax &&
	                       level != OUTBOUND_TLS_NONE &&
	                       tlsrpt_published(w, j->domain)
	                   ? j->domain
	                   : NULL;
	if (sts_on && a->tr_domain != NULL)
		sts_policy_string(&sts, stsstr, sizeof(stsstr));
	for (i = 0; i < a->nhosts; i++) {
		const struct mx_host *host = &a->hosts[i];
		struct conn_peer *p = &a->h.peer;

		if (site_suspended(d, j, a->why))
			return RES_TEMP; /* not this job's failure to report */
		tried = true;
		o.tls_name = host->name;
		memset(&dp, 0, sizeof(dp));
		if (dane) {
			if (dane_plan(w->dns, level, host, j->domain,
			        cfg->delivery_port, &dp, a->why) != RES_OK) {
				only_perm = false;
				tlsrpt_note(a, "tlsa", "", host,
				    strstr(a->why, "TLSA lookup error")
				        ? "dnssec-invalid"
				        : "dane-required",
				    "");
				log_info(
				    "deliver", "id=%s %s", j->msg_id, a->why);
				continue;
			}
			o.tls = dp.tls;
			o.tlsa = dp.tlsa;
			o.ntlsa = dp.ntlsa;
			o.dane_names = dp.names;
			o.ndane_names = dp.nnames;
			if (dp.tls == OUTBOUND_TLS_DANE)
				o.tls_name = dp.base; /* SNI: RFC 7672 8.1 */
		} else {
			o.tls = level;
		}
		o.sts = false;
		/* DANE takes precedence for the hosts it covers (RFC 8461
		 * section 2). */
		if (sts_on && o.tls != OUTBOUND_TLS_DANE) {
			if (sts.mode == STS_MODE_ENFORCE &&
			    !sts_mx_matches(&sts, host->name)) {
				why_set(a->why,
				    "4.7.5 %s is not an MX host of the MTA-STS "
				    "policy of %s (id %s)",
				    host->name, j->domain, sts.id);
				log_info(
				    "deliver", "id=%s %s", j->msg_id, a->why);
				dns_tlsa_free(dp.tlsa, dp.ntlsa);
				only_perm = false;
				tlsrpt_note(a, "sts", stsstr, host,
				    "validation-failure", "");
				continue;
			}
			if (sts.mode == STS_MODE_ENFORCE) {
				o.tls = OUTBOUND_TLS_VERIFY;
				o.sts = true;
			}
			snprintf(dp.note, sizeof(dp.note),
			    "MTA-STS %s, policy id %s", sts_mode_name(sts.mode),
			    sts.id);
		}
		if (req && o.tls != OUTBOUND_TLS_DANE)
			o.tls = OUTBOUND_TLS_VERIFY; /* PKIX, the host's name */
		/* TLS-RPT: the policy this session is under, when reported. */
		tr_type = "no-policy-found";
		trpol[0] = '\0';
		memset(&tres, 0, sizeof(tres));
		if (a->tr_domain != NULL && o.tls == OUTBOUND_TLS_DANE) {
			tr_type = "tlsa";
			tlsa_policy_string(&dp, trpol, sizeof(trpol));
		} else if (a->tr_domain != NULL && sts_on) {
			tr_type = "sts";
			snprintf(trpol, sizeof(trpol), "%s", stsstr);
		}
		o.tls_result = a->tr_domain != NULL ? &tres : NULL;
		r = smtpc_open(host, &o, &a->h.c, a->why);
		if (tres.tried)
			tlsrpt_note(
			    a, tr_type, trpol, host, tres.type, tres.local);
		else if (r == RES_OK) /* a session without TLS */
			tlsrpt_note(a, tr_type, trpol, host,
			    "starttls-not-supported", tres.local);
		dns_tlsa_free(dp.tlsa, dp.ntlsa);
		o.tlsa = NULL;
		o.ntlsa = 0;
		if (r == RES_OK && req && !smtpc_has_requiretls(a->h.c)) {
			/* RFC 8689 section 4.2.1: not this host; another
			 * may do it, else the message is returned. */
			why_set(a->why,
			    "5.7.30 REQUIRETLS support required: %s does not "
			    "offer it",
			    host->name);
			held_conn_close(&a->h);
			log_info("deliver", "id=%s %s", j->msg_id, a->why);
			continue;
		}
		if (r != RES_OK) {
			only_perm = false;
			log_info("deliver", "id=%s %s", j->msg_id, a->why);
			continue;
		}
		snprintf(
		    p->security_why, sizeof(p->security_why), "%s", dp.note);
		snprintf(p->mx, sizeof(p->mx), "%s", host->name);
		snprintf(p->ip, sizeof(p->ip), "%s", host->ip);
		p->port = sockaddr_port((const struct sockaddr *)&host->addr);
		snprintf(p->relay, sizeof(p->relay), "%s[%s]:%d", p->mx, p->ip,
		    p->port);
		return RES_OK;
	}
	/* Every address failed to give a session. */
	if (req && tried && only_perm)
		return RES_PERM; /* none offers REQUIRETLS: returned */
	if (tried)
		site_result(d, cfg, j, false, a->why);
	return RES_TEMP;
}

/* The transaction on a->h: each recipient's verdict lands in a->sr. */
static enum res
transact(
    struct delivery_thread *w, const struct delivery_job *j, struct attempt *a)
{
	struct body_ctx bc = {w, j->msg_id};
	struct smtpc_msg sm;
	enum res r;

	memset(&sm, 0, sizeof(sm));
	sm.sender = a->m.sender;
	sm.size = a->m.stored_size;
	sm.body_type = a->m.body_type;
	sm.smtputf8 = a->m.smtputf8 != 0;
	sm.dsn_ret = a->m.dsn_ret;
	sm.requiretls = a->m.requiretls != 0;
	sm.envid = a->m.envid[0] ? a->m.envid : NULL;
	sm.body = read_body;
	sm.body_arg = &bc;
	r = smtpc_send(a->h.c, &sm, a->sr, a->n);
	a->have_dsn = smtpc_has_dsn(a->h.c);
	snprintf(a->tlsdesc, sizeof(a->tlsdesc), "%s", smtpc_tls_desc(a->h.c));
	snprintf(
	    a->security, sizeof(a->security), "%s", smtpc_security(a->h.c));
	snprintf(a->security_why, sizeof(a->security_why), "%s",
	    smtpc_security_detail(a->h.c)[0] ? smtpc_security_detail(a->h.c)
	                                     : a->h.peer.security_why);
	return r;
}

/*
 * What the job's mail asks of a connection, the part of a kept
 * connection's key beside its site: its tls_policy level (domains of one
 * site may have different levels), its message's own TLS demands
 * (REQUIRETLS, "TLS-Required: No"), and its domain when that has an
 * MTA-STS policy.  A kept connection serves only mail that asks what the
 * mail it was opened for asked.
 */
static void
tls_demands(struct delivery_thread *w, const struct config *cfg,
    const struct delivery_job *j, const struct attempt *a, char *out,
    size_t len)
{
	struct sts_policy p;
	int64_t exp;
	bool sts = cfg->mta_sts && sts_cached(w, j->domain, &p, &exp) == 0 &&
	           exp > (int64_t)time(NULL) && p.mode != STS_MODE_NONE;

	snprintf(out, len, " tls=%d%s%s%s%.200s",
	    policy_level(cfg, j->domain, NULL),
	    a->m.requiretls ? " requiretls" : "",
	    a->m.tls_required_no ? " lax" : "", sts ? " sts=" : "",
	    sts ? j->domain : "");
}

/*
 * Deliver the job's message: on the kept connection to its site, else a
 * new one.  A kept connection found stale (closed by the server meanwhile,
 * before it answered anything) is replaced by a new one once.  RES_OK
 * when the transaction took place (the verdicts are in a->sr), else why
 * not in a->why.
 */
static enum res
attempt_run(struct delivery_thread *w, const struct delivery_conf *dc,
    struct delivery_job *j, struct attempt *a)
{
	const struct config *cfg = dc->cfg;
	char key[DESTS_KEY_MAX + 256], demands[240];
	bool reused;
	enum res r;

	/* Suspended since the claim (another job's connection failed)? */
	if (site_suspended(w->d, j, a->why))
		return RES_TEMP;
	tls_demands(w, cfg, j, a, demands, sizeof(demands));
	snprintf(key, sizeof(key), "%s%s", j->dest, demands);
	reused = conncache_take(&w->cache, key, now_ms(), &a->h);
	for (;;) {
		if (!reused && (r = connect_fresh(w, dc, j, a)) != RES_OK)
			return r;
		a->peer = a->h.peer;
		site_result(w->d, cfg, j, true, NULL);
		r = transact(w, j, a);
		if (reused && r != RES_OK && smtpc_stale(a->h.c)) {
			held_conn_close(&a->h);
			a->peer = a->h.peer;
			reused = false;
			continue;
		}
		if (r == RES_OK) {
			/* Connecting may have learnt the job's site. */
			snprintf(key, sizeof(key), "%s%s", j->dest, demands);
			conncache_put(&w->cache, &a->h, key,
			    cfg->max_messages_per_connection, now_ms());
		} else
			held_conn_close(&a->h);
		return RES_OK;
	}
}

/* The next hop asked us to slow down: its site goes slower for a while. */
static void
slow_down(struct delivery *d, const char *site, const char *reply)
{
	bool first;

	mutex_lock(&d->mu);
	first = dests_slow(d->dests, site, now_ms());
	mutex_unlock(&d->mu);
	if (!first)
		return;
	metrics_inc(M_DEST_SLOWDOWNS);
	log_warn("deliver",
	    "site=%s slowing down for %ds (half its rate, or one message "
	    "per %ds): %.200s",
	    site, DESTS_SLOW_MS / 1000, DESTS_SLOW_RATE_MS / 1000, reply);
}

/* Settle every recipient by how the attempt ended (`r`), record it with
 * its notices in one transaction, and log it. */
static void
attempt_record(struct delivery_thread *w, const struct delivery_conf *dc,
    const struct delivery_job *j, struct attempt *a, enum res r)
{
	const struct config *cfg = dc->cfg;
	struct record rec;
	int64_t now = (int64_t)time(NULL);
	int i;

	for (i = 0; i < a->n; i++)
		settle(cfg, &a->m, &a->out[i],
		    r == RES_OK ? a->sr[i].result : r,
		    r == RES_OK ? a->sr[i].reply : a->why, a->have_dsn, now);
	for (i = 0; r == RES_OK && i < a->n; i++)
		if (a->sr[i].result == RES_TEMP &&
		    reply_says_slow_down(a->sr[i].reply)) {
			slow_down(w->d, j->dest, a->sr[i].reply);
			break;
		}
	memset(&rec, 0, sizeof(rec));
	rec.msg_id = j->msg_id;
	rec.m = &a->m;
	rec.hostname = cfg->hostname;
	rec.dkim = dc->dkim;
	rec.delay_warning = cfg->delay_warning_time;
	rec.queue_lifetime = cfg->queue_lifetime;
	rec.out = a->out;
	rec.n = a->n;
	rec.at = now;
	rec.duration_ms = now_ms() - a->t0;
	rec.mx_host = a->peer.mx[0] ? a->peer.mx : NULL;
	rec.ip = a->peer.ip[0] ? a->peer.ip : NULL;
	rec.port = a->peer.port;
	rec.tls = a->tlsdesc[0] ? a->tlsdesc : NULL;
	rec.security = a->security[0] ? a->security : NULL;
	rec.tr = a->tr;
	rec.ntr = a->tr_domain != NULL ? a->ntr : 0;
	rec.tr_domain = a->tr_domain;
	rec.security_why = a->security_why[0] ? a->security_why : NULL;
	if (run_durably(w->d, w->store, record_fn, &rec, j->msg_id, "attempt"))
		log_outcomes(j->msg_id, &a->m, &rec, a->peer.relay);
}

static void
deliver_job(struct delivery_thread *w, const struct delivery_conf *dc,
    struct delivery_job *j)
{
	struct attempt a;
	enum res r;

	memset(&a, 0, sizeof(a));
	a.t0 = now_ms();
	held_conn_init(&a.h);
	a.peer = a.h.peer;
	if (attempt_load(w, j, &a)) {
		r = attempt_run(w, dc, j, &a);
		if (!a.put_back)
			attempt_record(w, dc, j, &a, r);
	}
	BUG_ON(a.h.c != NULL); /* kept or closed by attempt_run */
	free(a.hosts);
	free(a.sr);
	free(a.out);
}

/* ---- claiming (runs on the queue's writer thread) ---- */

/*
 * Due recipients of one message whose site is suspended: deferred in the
 * claim's own transaction, without a connection or a delivery thread.
 */
struct deferral {
	char msg_id[QUEUE_ID_LEN + 1];
	char dest[DESTS_KEY_MAX];
	char domain[256];
	bool static_dest;
	char reason[WHY_MAX]; /* "4.4.1 delivery temporarily suspended: ..." */
	int rcpt_nos[JOB_RCPTS_MAX];
	int nrcpts;
	/* Filled when recorded, for the log: */
	struct store_msg_info m;
	struct outcome *out;
	struct record rec;
	struct deferral *next;
};

struct claim {
	struct delivery *d;
	const struct config *cfg;
	const struct dkim_keys *dkim; /* signs the notices of deferrals */
	const struct relays *relays;  /* sender_relays */
	int max_jobs;
	int njobs;
	struct delivery_job *jobs, *tail; /* out */
	struct deferral *deferred;        /* out: recorded, to log */
	bool blocked;      /* out: due mail waits for a busy site */
	int64_t next_due;  /* out: when to look again */
	int64_t rate_wake; /* out: now_ms() when a site's rate lets one more
	                      go, 0: none waits for its rate */
};

static void
jobs_free(struct delivery_job *j)
{
	while (j != NULL) {
		struct delivery_job *next = j->next;

		free(j);
		j = next;
	}
}

static void
deferrals_free(struct deferral *f)
{
	while (f != NULL) {
		struct deferral *next = f->next;

		free(f->out);
		free(f);
		f = next;
	}
}

static void
claim_reset(struct claim *c)
{
	struct delivery_job *j;

	/* Jobs not handed over give back their places (place()). */
	if (c->jobs != NULL) {
		mutex_lock(&c->d->mu);
		for (j = c->jobs; j != NULL; j = j->next)
			if (j->counted)
				dests_finish(c->d->dests, j->dest, j->probe);
		mutex_unlock(&c->d->mu);
	}
	jobs_free(c->jobs);
	deferrals_free(c->deferred);
	c->jobs = c->tail = NULL;
	c->deferred = NULL;
	c->njobs = 0;
	c->blocked = false;
	c->next_due = 0;
}

/*
 * A new job of this round for `due` at `site`, its place taken on the
 * site at once (dests_start).  Caller holds d->mu.
 */
static void
add_job(struct claim *c, const struct store_due *due, const char *site,
    bool static_dest, bool probe, int64_t now)
{
	struct delivery_job *j = xcalloc(1, sizeof(*j));

	snprintf(j->msg_id, sizeof(j->msg_id), "%s", due->msg_id);
	snprintf(j->dest, sizeof(j->dest), "%s", site);
	snprintf(j->domain, sizeof(j->domain), "%s", due->domain);
	j->static_dest = static_dest;
	j->probe = probe;
	j->rcpt_nos[j->nrcpts++] = due->rcpt_no;
	dests_start(c->d->dests, site, probe, now);
	j->counted = true;
	if (c->tail != NULL)
		c->tail->next = j;
	else
		c->jobs = j;
	c->tail = j;
	c->njobs++;
}

/*
 * Put one due recipient in a job of this round (a new one if the site
 * admits it), or in a deferral when its site is suspended, or leave it
 * when its site is busy.  A new job takes its place on the site at once
 * (dests_start), so that a job a delivery thread moves to the site
 * meanwhile (site_learn) counts against the same limit; claim_reset gives
 * the places back if the round is dropped.  Caller holds d->mu.
 */
static void
place(struct claim *c, const struct store_due *due, int64_t now)
{
	char key[DESTS_KEY_MAX];
	const char *reason = NULL;
	struct delivery_job *j;
	struct deferral *f;
	const struct rate *rate;
	struct rate share;
	int64_t wait, t;
	bool st;
	enum dest_admit v;

	site_for(c->d, c->cfg, c->relays, due->domain, due->sender, now, key,
	    sizeof(key), &st);
	/* Join a job or deferral of this round for the same message and
	 * site (and domain: MX sites are looked up per domain). */
	for (j = c->jobs; j != NULL; j = j->next) {
		if (strcmp(j->dest, key) != 0)
			continue;
		if (strcmp(j->msg_id, due->msg_id) == 0 &&
		    (st || strcmp(j->domain, due->domain) == 0) &&
		    j->nrcpts < JOB_RCPTS_MAX) {
			j->rcpt_nos[j->nrcpts++] = due->rcpt_no;
			return;
		}
	}
	for (f = c->deferred; f != NULL; f = f->next)
		if (strcmp(f->dest, key) == 0 &&
		    strcmp(f->msg_id, due->msg_id) == 0 &&
		    (st || strcmp(f->domain, due->domain) == 0) &&
		    f->nrcpts < JOB_RCPTS_MAX) {
			f->rcpt_nos[f->nrcpts++] = due->rcpt_no;
			return;
		}
	v = dests_admit(c->d->dests, key, site_concurrency(c->d, c->cfg), 0,
	    false, now, &reason);
	if (v == DEST_BUSY) {
		c->blocked = true;
		return;
	}
	if (v == DEST_DEFER) {
		f = xcalloc(1, sizeof(*f));
		snprintf(f->msg_id, sizeof(f->msg_id), "%s", due->msg_id);
		snprintf(f->dest, sizeof(f->dest), "%s", key);
		snprintf(f->domain, sizeof(f->domain), "%s", due->domain);
		f->static_dest = st;
		suspended_reason(reason, f->reason, sizeof(f->reason));
		dests_note(c->d->dests, key, due->domain);
		f->rcpt_nos[f->nrcpts++] = due->rcpt_no;
		f->next = c->deferred;
		c->deferred = f;
		return;
	}
	if (c->njobs >= c->max_jobs)
		return; /* every thread has work: later */
	share = node_rate(c->d, rate_for(c->cfg, key, due->domain));
	rate = &share;
	t = now_ms();
	wait = dests_rate_wait(c->d->dests, key, rate, t);
	if (wait > 0) { /* its rate: the dispatcher looks again then */
		if (c->rate_wake == 0 || t + wait < c->rate_wake)
			c->rate_wake = t + wait;
		metrics_inc(M_RATE_WAITS);
		return;
	}
	add_job(c, due, key, st, v == DEST_PROBE, now);
	dests_rate_take(c->d->dests, key, rate, t);
}

/*
 * Record the recipients of a deferral as deferred (or bounced, when
 * they are too old) in the claim's transaction, with the notices that
 * go with that, as a delivery thread would after a failed connection.
 */
static enum res
defer_now(struct store *store, const struct config *cfg,
    const struct dkim_keys *dkim, struct deferral *f, int64_t now, char *why)
{
	enum res r = store_load_message(store, f->msg_id, &f->m, why);
	int i, n = 0;

	if (r == RES_PERM)
		return RES_OK; /* deleted meanwhile */
	if (r != RES_OK)
		return r;
	f->out = xcalloc((size_t)f->nrcpts, sizeof(*f->out));
	for (i = 0; i < f->nrcpts; i++) {
		struct outcome *oc = &f->out[n];

		r = store_load_rcpt(
		    store, f->msg_id, f->rcpt_nos[i], &oc->info, why);
		if (r == RES_TEMP)
			return r;
		if (r != RES_OK || !rcpt_pending(oc->info.state))
			continue;
		settle(cfg, &f->m, oc, RES_TEMP, f->reason, false, now);
		n++;
	}
	f->rec.msg_id = f->msg_id;
	f->rec.m = &f->m;
	f->rec.hostname = cfg->hostname;
	f->rec.dkim = dkim;
	f->rec.delay_warning = cfg->delay_warning_time;
	f->rec.queue_lifetime = cfg->queue_lifetime;
	f->rec.out = f->out;
	f->rec.n = n;
	f->rec.at = now;
	return n > 0 ? record_fn(store, &f->rec, why) : RES_OK;
}

/* Is this recipient in a job or deferral of the round already? */
static bool
in_round(const struct claim *c, const struct store_due *due)
{
	const struct delivery_job *j;
	const struct deferral *f;
	int i;

	for (j = c->jobs; j != NULL; j = j->next)
		for (i = 0; i < j->nrcpts; i++)
			if (j->rcpt_nos[i] == due->rcpt_no &&
			    strcmp(j->msg_id, due->msg_id) == 0)
				return true;
	for (f = c->deferred; f != NULL; f = f->next)
		for (i = 0; i < f->nrcpts; i++)
			if (f->rcpt_nos[i] == due->rcpt_no &&
			    strcmp(f->msg_id, due->msg_id) == 0)
				return true;
	return false;
}

/*
 * A job probing suspended `site` with a recipient not due yet, when the
 * site still admits its probe.  Caller holds d->mu.
 */
static bool
place_probe(
    struct claim *c, const char *site, const struct store_due *due, int64_t now)
{
	char key[DESTS_KEY_MAX];
	struct delivery_job *j;
	bool st;

	site_for(c->d, c->cfg, c->relays, due->domain, due->sender, now, key,
	    sizeof(key), &st);
	if (strcmp(key, site) != 0 || c->njobs >= c->max_jobs)
		return false;
	for (j = c->jobs; j != NULL; j = j->next)
		if (strcmp(j->dest, key) == 0)
			return false; /* the round has its probe already */
	if (dests_admit(c->d->dests, key, site_concurrency(c->d, c->cfg), 0,
	        false, now, NULL) != DEST_PROBE)
		return false;
	add_job(c, due, key, st, true, now);
	return true;
}

/*
 * Suspended sites whose probe is due but got none in this round (none
 * of their recipients is due: they wait for their own next retry):
 * probe each with its recipient due soonest, so that a site is probed
 * once per interval while it has mail, and its mail goes as soon as it
 * answers, not at each recipient's next retry.
 */
static enum res
find_probes(struct store *store, struct claim *c, int64_t now, char *why)
{
	struct dests_probe *pr = xcalloc(PROBES_MAX, sizeof(*pr));
	int np, k, i;
	enum res r = RES_OK;

	mutex_lock(&c->d->mu);
	np = dests_probes_due(c->d->dests, now, pr, PROBES_MAX);
	mutex_unlock(&c->d->mu);
	for (k = 0; k < np && r == RES_OK; k++) {
		bool placed = false;

		for (i = 0; i < pr[k].ndomains && !placed && r == RES_OK; i++) {
			struct store_due one;
			int got = store_first_pending(
			    store, now, pr[k].domains[i], &one, why);

			if (got < 0)
				r = RES_TEMP;
			if (got <= 0 || in_round(c, &one))
				continue;
			mutex_lock(&c->d->mu);
			placed = place_probe(c, pr[k].site, &one, now);
			mutex_unlock(&c->d->mu);
		}
	}
	free(pr);
	return r;
}

/*
 * How long a claimed recipient is held.  With SQLite, one node's queue,
 * two hours (leases are cleared at every start); with a shared queue,
 * delivery_lease, renewed by the heartbeat (housekeeping) while the node
 * runs, so that the recipients of a node that stopped come due again for
 * the others soon.
 */
static int
lease_seconds(const struct delivery *d, const struct config *cfg)
{
	return d->shared ? cfg->delivery_lease : LEASE_SECONDS;
}

struct beat {
	int lease;
	int live; /* out */
};

static enum res
heartbeat_fn(struct store *store, void *arg, char *why)
{
	struct beat *b = arg;

	return store_heartbeat(store, b->lease, &b->live, why);
}

static enum res
claim_fn(struct store *store, void *arg, char *why)
{
	struct claim *c = arg;
	struct store_due *due = xcalloc(CLAIM_ROWS, sizeof(*due));
	int64_t now = (int64_t)time(NULL);
	struct deferral *f;
	struct delivery_job *j;
	int n, i;
	enum res r = RES_OK;

	/* queue_run may call us twice: start from scratch. */
	claim_reset(c);
	n = store_list_due(store, now, due, CLAIM_ROWS, why);
	if (n < 0) {
		r = RES_TEMP;
		goto out;
	}
	mutex_lock(&c->d->mu);
	for (i = 0; i < n; i++)
		place(c, &due[i], now);
	mutex_unlock(&c->d->mu);
	if ((r = find_probes(store, c, now, why)) != RES_OK)
		goto out;
	for (j = c->jobs; j != NULL && r == RES_OK; j = j->next)
		for (i = 0; i < j->nrcpts && r == RES_OK; i++)
			r = store_lease(store, j->msg_id, j->rcpt_nos[i],
			    now + lease_seconds(c->d, c->cfg), why);
	for (f = c->deferred; f != NULL && r == RES_OK; f = f->next)
		r = defer_now(store, c->cfg, c->dkim, f, now, why);
	if (r == RES_OK && c->jobs == NULL && c->deferred == NULL)
		c->next_due = store_next_due(store);
out:
	if (r != RES_OK)
		claim_reset(c);
	free(due);
	return r;
}

static void housekeeping(struct delivery *d, const struct delivery_conf *dc);

static enum res
clear_leases_fn(struct store *store, void *arg, char *why)
{
	(void)arg;
	return store_clear_leases(store, why);
}

/*
 * A claim on a shared queue that failed may have committed all the same
 * (the connection lost after the COMMIT left, before its answer came):
 * its leases would hold those recipients for delivery_lease with no job
 * behind them.  Once no job of this node is queued or running, none of
 * its leases is in use: give them all back.
 */
static void
clear_stale_leases(struct delivery *d, int free_threads)
{
	char why[WHY_MAX];

	if (!d->leases_unsure || free_threads < d->nthreads)
		return;
	if (queue_run(d->q, clear_leases_fn, NULL, why) != RES_OK)
		return;
	d->leases_unsure = false;
	log_info("deliver", "gave back the leases of a claim whose commit "
	                    "was not confirmed");
}

/*
 * Until new mail arrives, a second passes, or d->wake is set (wake()
 * signals it; delivery_stop sets it too).
 */
static void
dispatcher_wait(struct delivery *d, uint64_t seen, int64_t rate_wake)
{
	int64_t until = now_ms() + 1000;

	if (rate_wake > 0 && rate_wake < until)
		until = rate_wake; /* a site's rate lets one more go then */
	queue_wait_mail(d->q, seen, until, &d->wake);
}

static void *
dispatcher_main(void *arg)
{
	struct delivery *d = arg;
	char why[WHY_MAX];

	while (!atomic_load(&d->stop)) {
		const struct delivery_conf *dc;
		struct held *ref;
		struct claim c;
		struct deferral *f;
		uint64_t seen;
		int free_threads;
		bool progress;

		atomic_store(&d->wake, false);
		memset(&c, 0, sizeof(c));
		c.d = d;
		mutex_lock(&d->mu);
		/* Every thread busy: wait for one to finish (or stop). */
		while (d->busy >= d->nthreads && !atomic_load(&d->stop))
			cond_wait(&d->done_cv, &d->mu);
		free_threads = d->nthreads - d->busy;
		mutex_unlock(&d->mu);
		if (atomic_load(&d->stop))
			break;
		/* A claim on a shared queue is a round trip to the database
		 * and a commit: take a round's worth more than the idle
		 * threads, queued for them (their leases renewed meanwhile). */
		c.max_jobs = free_threads + (d->shared ? d->nthreads : 0);

		seen = queue_mail_seq(d->q);
		dc = holder_get(d->conf, &ref);
		c.cfg = dc->cfg;
		c.dkim = dc->dkim;
		c.relays = dc->relays;
		housekeeping(d, dc);
		clear_stale_leases(d, free_threads);
		if (queue_run(d->q, claim_fn, &c, why) != RES_OK) {
			log_warn(
			    "deliver", "claiming due mail failed: %s", why);
			claim_reset(&c);
			d->leases_unsure = d->shared;
		}
		for (f = c.deferred; f != NULL; f = f->next)
			if (f->rec.n > 0)
				log_outcomes(f->msg_id, &f->m, &f->rec, "none");
		holder_put(ref);
		progress = c.jobs != NULL || c.deferred != NULL;
		mutex_lock(&d->mu);
		d->blocked = c.blocked;
		if (c.jobs != NULL) {
			struct delivery_job *j, *next;

			for (j = c.jobs; j != NULL; j = next) {
				next = j->next;
				j->next = d->jobs;
				d->jobs = j;
				d->busy++;
			}
			c.jobs = c.tail = NULL;
			pthread_cond_broadcast(&d->cv);
		}
		mutex_unlock(&d->mu);
		claim_reset(&c);
		if (progress)
			continue;
		/* Nothing to start: look again when new mail arrives, a site
		 * opens up, or after a second (retries come due, held mail
		 * is released). */
		dispatcher_wait(d, seen, c.rate_wake);
	}
	return NULL;
}

/* ---- housekeeping (the dispatcher, between claims) ---- */

struct returned {
	int64_t at;
	const char *hostname;
	const struct dkim_keys *dkim;
	char ids[RETURNED_MAX][QUEUE_ID_LEN + 1];
	char dsn[RETURNED_MAX][QUEUE_ID_LEN + 1];
	char sender[RETURNED_MAX][ADDRESS_MAX + 1];
	int n;
};

/*
 * Failure notices for mail returned with `sluice queue bounce`: the CLI
 * marks the recipients bounced and unreported in its own transaction;
 * this sends the notice and marks them reported in ours.
 */
static enum res
returned_fn(struct store *store, void *arg, char *why)
{
	struct returned *rt = arg;
	int i;

	rt->n = store_list_unreported(store, rt->ids, RETURNED_MAX, why);
	if (rt->n < 0)
		return RES_TEMP;
	for (i = 0; i < rt->n; i++) {
		struct store_msg_info m;
		struct record r;
		enum res res;

		rt->dsn[i][0] = rt->sender[i][0] = '\0';
		res = store_load_message(store, rt->ids[i], &m, why);
		if (res == RES_TEMP)
			return RES_TEMP;
		if (res != RES_OK) { /* recipients without a message */
			if (store_mark_reported(store, rt->ids[i], why) !=
			    RES_OK)
				return RES_TEMP;
			continue;
		}
		memset(&r, 0, sizeof(r));
		r.msg_id = rt->ids[i];
		r.m = &m;
		r.hostname = rt->hostname;
		r.dkim = rt->dkim;
		r.at = rt->at;
		if (failure_notice(store, &r, why) != RES_OK ||
		    store_release_finished(store, r.msg_id, why) != RES_OK)
			return RES_TEMP;
		snprintf(rt->dsn[i], sizeof(rt->dsn[i]), "%s", r.dsn_id);
		snprintf(rt->sender[i], sizeof(rt->sender[i]), "%s", m.sender);
	}
	return RES_OK;
}

struct prune {
	int64_t before;
	int n;
};

static enum res
prune_fn(struct store *store, void *arg, char *why)
{
	struct prune *p = arg;

	p->n = store_prune_finished(store, p->before, why);
	return p->n < 0 ? RES_TEMP : RES_OK;
}

/*
 * Once a second, notices for returned mail; every minute, sites and
 * domains not used for a while are forgotten; every ten minutes (a quarter
 * of finished_retention when that is shorter; every second while there is
 * a backlog), finished messages older than finished_retention are pruned.
 */
static void
housekeeping(struct delivery *d, const struct delivery_conf *dc)
{
	const struct config *cfg = dc->cfg;
	int64_t t = now_ms();
	char why[WHY_MAX];
	int i;

	if (t >= d->next_admin_ms) {
		struct returned *rt = xcalloc(1, sizeof(*rt));

		d->next_admin_ms = t + 1000;
		rt->at = (int64_t)time(NULL);
		rt->hostname = cfg->hostname;
		rt->dkim = dc->dkim;
		if (queue_run(d->q, returned_fn, rt, why) != RES_OK)
			log_warn("deliver", "returned mail: %s", why);
		else
			for (i = 0; i < rt->n; i++) {
				if (rt->dsn[i][0] != '\0')
					metrics_inc(M_NOTICES);
				log_info("deliver",
				    "id=%s returned to sender: notice id=%s "
				    "to=<%s>",
				    rt->ids[i],
				    rt->dsn[i][0] ? rt->dsn[i] : "none",
				    rt->sender[i]);
			}
		free(rt);
	}
	if (d->shared && t >= d->next_beat_ms) {
		struct beat b = {cfg->delivery_lease, 1};

		/* Three beats a lease: one late beat loses nothing. */
		d->next_beat_ms = t + (int64_t)b.lease * 1000 / 3;
		if (queue_run(d->q, heartbeat_fn, &b, why) != RES_OK) {
			log_warn("deliver", "heartbeat: %s", why);
		} else if (b.live != atomic_load(&d->nodes)) {
			log_info("deliver",
			    "%d node%s from the queue: each takes 1/%d of "
			    "every destination's concurrency and rate",
			    b.live, b.live == 1 ? " delivers" : "s deliver",
			    b.live);
			atomic_store(&d->nodes, b.live);
		}
	}
	if (t >= d->next_expire_ms) {
		d->next_expire_ms = t + EXPIRE_EVERY_MS;
		mutex_lock(&d->mu);
		dests_expire(d->dests, (int64_t)time(NULL));
		note_suspended_count(d);
		mutex_unlock(&d->mu);
	}
	if (cfg->finished_retention > 0 && t >= d->next_prune_ms) {
		struct prune p = {
		    (int64_t)time(NULL) - cfg->finished_retention, 0};
		int64_t every = (int64_t)cfg->finished_retention * 1000 / 4;

		d->next_prune_ms =
		    t + (every < 1000                ? 1000
		            : every > PRUNE_EVERY_MS ? PRUNE_EVERY_MS
		                                     : every);
		if (queue_run(d->q, prune_fn, &p, why) != RES_OK) {
			log_warn("deliver", "pruning finished mail: %s", why);
		} else if (p.n > 0) {
			log_info("deliver",
			    "pruned %d finished message%s older than "
			    "finished_retention",
			    p.n, p.n == 1 ? "" : "s");
			if (p.n >= STORE_PRUNE_MAX)
				d->next_prune_ms = t + 1000;
		}
	}
}

/*
 * After a reload: a new resolver when the DNS settings may have changed
 * (the old one is kept if the new one cannot be made), and no reuse of a
 * connection opened under the old settings.
 */
static void
delivery_thread_refresh(
    struct delivery_thread *w, const struct delivery_conf *dc)
{
	char why[WHY_MAX];
	struct dns_resolver *r;

	if (w->gen == dc->gen)
		return;
	w->gen = dc->gen;
	conncache_drop(&w->cache);
	r = dns_resolver_new(dc->cfg, why);
	if (r == NULL) {
		log_err(
		    "deliver", "new DNS settings: %s (keeping the old)", why);
		return;
	}
	dns_resolver_free(w->dns);
	w->dns = r;
}

/*
 * Refresh the cached policies that are near their end (RFC 8461 section
 * 5.1: "proactively"), so that a domain's mail never finds its policy
 * lapsed: the id of the TXT record if there is one, else the cached one.
 */
static void
sts_refresh_due(struct delivery_thread *w, const struct delivery_conf *dc)
{
	char domains[16][256], why[WHY_MAX], name[DNS_NAME_MAX + 16], **txt;
	char id[STS_ID_MAX + 1], tid[STS_ID_MAX + 1];
	struct sts_policy p;
	int64_t exp;
	bool secure;
	int i, k, n, ntxt;

	n = store_sts_due(w->store, (int64_t)time(NULL), domains, 16, why);
	for (i = 0; i < n && !atomic_load(&w->d->stop); i++) {
		if (sts_cached(w, domains[i], &p, &exp) != 0)
			continue;
		snprintf(id, sizeof(id), "%s", p.id);
		snprintf(name, sizeof(name), "_mta-sts.%.250s", domains[i]);
		if (dns_lookup_txt(w->dns, name, &txt, &ntxt, &secure, why) ==
		    RES_OK) {
			for (k = 0; k < ntxt; k++)
				if (sts_parse_txt(txt[k], tid) == 1)
					snprintf(id, sizeof(id), "%s", tid);
			dns_txt_free(txt, ntxt);
		}
		(void)sts_refresh(w, dc, domains[i], id, &p, why);
	}
}

/* ---- the daily TLS-RPT reports ---- */

struct report_put {
	const struct envelope *env;
	const char *text;
	size_t len;
};

static enum res
report_put_fn(struct store *s, void *arg, char *why)
{
	struct report_put *p = arg;

	return store_put_mail(
	    s, p->env, 0, &(struct store_part){p->text, p->len}, 1, why);
}

static enum res
report_enqueue(void *arg, const struct envelope *env, const char *text,
    size_t len, char *why)
{
	struct delivery *d = arg;
	struct report_put p = {env, text, len};

	return queue_run(d->q, report_put_fn, &p, why);
}

static void __attribute__((format(printf, 3, 4)))
report_say(void *arg, bool ok, const char *fmt, ...)
{
	char msg[WHY_MAX];
	va_list ap;

	(void)arg;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (ok)
		log_info("tlsrpt", "%s", msg);
	else
		log_warn("tlsrpt", "%s", msg);
}

struct sent_mark {
	int64_t day, at;
};

static enum res
report_mark_fn(struct store *s, void *arg, char *why)
{
	struct sent_mark *m = arg;

	return store_tlsrpt_sent(s, m->day, m->at, why) == 1 ? RES_OK
	                                                     : RES_TEMP;
}

/*
 * Once a day, tlsrpt_send_after past midnight UTC, send yesterday's
 * reports (the path of `sluice tlsrpt send`), once: the day is noted sent
 * in tlsrpt_sent, whatever a destination did (RFC 8460 asks for no
 * retries beyond a day).
 */
static void
tlsrpt_daily(struct delivery_thread *w, const struct delivery_conf *dc)
{
	const struct config *cfg = dc->cfg;
	int64_t now = (int64_t)time(NULL), today = now - now % 86400;
	struct sent_mark mark = {today - 86400, now};
	struct tlsrpt_report *reps = NULL;
	struct tlsrpt_send snd = {cfg, w->dns, dc->client_creds, w->d->stop_fd,
	    dc->dkim, report_enqueue, report_say, w->d};
	char why[WHY_MAX];
	int i, n = 0;

	if (now < today + cfg->tlsrpt_send_after ||
	    store_tlsrpt_sent(w->store, mark.day, 0, why) != 0)
		return;
	if (tlsrpt_build(w->store, cfg, mark.day, &reps, &n, why) != 0) {
		log_warn("tlsrpt", "the reports cannot be built: %s", why);
		return;
	}
	for (i = 0; i < n && !atomic_load(&w->d->stop); i++)
		(void)tlsrpt_send_one(&snd, mark.day, &reps[i]);
	tlsrpt_free(reps, n);
	if (queue_run(w->d->q, report_mark_fn, &mark, why) != RES_OK)
		log_warn("tlsrpt", "the day's send not noted: %s", why);
	else
		log_info("tlsrpt", "the reports of %lld (%d domain%s) sent",
		    (long long)mark.day, n, n == 1 ? "" : "s");
	wake(w->d);
}

static void *
sts_thread_main(void *arg)
{
	struct delivery_thread *w = arg;
	struct delivery *d = w->d;

	while (!atomic_load(&d->stop)) {
		struct held *ref;
		const struct delivery_conf *dc = holder_get(d->conf, &ref);
		int64_t every = (int64_t)dc->cfg->mta_sts_refresh * 1000;

		delivery_thread_refresh(w, dc);
		if (dc->cfg->mta_sts && dc->client_creds != NULL)
			sts_refresh_due(w, dc);
		if (dc->cfg->tlsrpt && dc->client_creds != NULL)
			tlsrpt_daily(w, dc);
		holder_put(ref);
		nap(d, every);
	}
	store_close(w->store);
	dns_resolver_free(w->dns);
	free(w);
	return NULL;
}

static void *
delivery_thread_main(void *arg)
{
	struct delivery_thread *w = arg;
	struct delivery *d = w->d;

	for (;;) {
		struct delivery_job *j;

		mutex_lock(&d->mu);
		while (d->jobs == NULL && !atomic_load(&d->stop)) {
			int64_t idle_end = conncache_expiry(&w->cache);

			if (idle_end < 0) {
				cond_wait(&d->cv, &d->mu);
			} else if (now_ms() >= idle_end) {
				/* Close a kept connection that stays idle. */
				mutex_unlock(&d->mu);
				conncache_drop(&w->cache);
				mutex_lock(&d->mu);
			} else {
				cond_wait_until(&d->cv, &d->mu, idle_end);
			}
		}
		j = d->jobs;
		if (j == NULL) {
			mutex_unlock(&d->mu);
			break;
		}
		d->jobs = j->next;
		mutex_unlock(&d->mu);

		if (!atomic_load(&d->stop)) {
			struct held *ref;
			const struct delivery_conf *dc =
			    holder_get(d->conf, &ref);

			delivery_thread_refresh(w, dc);
			deliver_job(w, dc, j);
			holder_put(ref);
		}

		mutex_lock(&d->mu);
		if (j->counted)
			dests_finish(d->dests, j->dest, j->probe);
		d->busy--;
		if (d->blocked)
			wake(d); /* a site has room */
		pthread_cond_signal(&d->done_cv);
		mutex_unlock(&d->mu);
		free(j);
	}
	conncache_drop(&w->cache);
	store_close(w->store);
	dns_resolver_free(w->dns);
	free(w);
	return NULL;
}

static char *
read_secret(const char *path, char *why)
{
	char buf[512];
	FILE *f;
	size_t n;

	if (path == NULL || path[0] == '\0')
		return xstrdup("");
	f = fopen(path, "r");
	if (f == NULL) {
		why_set(why, "cannot read smarthost_password_file %s: %s", path,
		    strerror(errno));
		return NULL;
	}
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	buf[strcspn(buf, "\r\n")] = '\0';
	explicit_bzero(buf + strlen(buf), sizeof(buf) - strlen(buf));
	return xstrdup(buf);
}

void
delivery_conf_free(struct delivery_conf *c)
{
	if (c == NULL)
		return;
	tls_creds_unref(c->client_creds);
	dkim_keys_free(c->dkim);
	relays_free(c->relays);
	if (c->smarthost_pass != NULL)
		explicit_bzero(c->smarthost_pass, strlen(c->smarthost_pass));
	free(c->smarthost_pass);
	free(c->self_addrs);
	free(c->self_name);
	holder_put(c->cfg_ref);
	free(c);
}

void
delivery_conf_keep(struct delivery_conf *c, struct held *cfg_ref)
{
	c->cfg_ref = cfg_ref;
}

struct delivery_conf *
delivery_conf_new(const struct config *cfg, char *why)
{
	static atomic_uint gens;
	struct delivery_conf *c = xcalloc(1, sizeof(*c));
	char warn[WHY_MAX]; /* logged by whoever loaded the keys first */
	int i;

	c->cfg = cfg;
	c->gen = atomic_fetch_add(&gens, 1) + 1;
	c->self_name = xstrdup(cfg->hostname);
	c->nself = cfg->nlisten;
	c->self_addrs =
	    xcalloc((size_t)cfg->nlisten + 1, sizeof(*c->self_addrs));
	for (i = 0; i < cfg->nlisten; i++)
		c->self_addrs[i] = cfg->listen[i].ss;
	c->smarthost_pass = read_secret(cfg->smarthost_password_file, why);
	if (c->smarthost_pass == NULL)
		goto fail;
	if (cfg->outbound_tls != OUTBOUND_TLS_NONE ||
	    cfg->smarthost_tls != SMARTHOST_TLS_NONE) {
		c->client_creds = tls_client_creds_new(cfg->tls_ca_file, why);
		if (c->client_creds == NULL)
			goto fail;
	}
	c->dkim = dkim_keys_load(cfg->dkim_keys, cfg->ndkim_keys, warn, why);
	if (c->dkim == NULL)
		goto fail;
	c->relays = relays_load(cfg->sender_relays, why);
	if (c->relays == NULL)
		goto fail;
	return c;
fail:
	delivery_conf_free(c);
	return NULL;
}

void
delivery_reconfigure(struct delivery *d, struct delivery_conf *c)
{
	holder_set(d->conf, c);
}

/* A thread with its own read-only queue connection and resolver, running
 * fn on its struct delivery_thread (which it frees).  False with `why`. */
static bool
start_thread(struct delivery *d, const struct delivery_conf *conf, pthread_t *t,
    void *(*fn)(void *), char *why)
{
	struct delivery_thread *w = xcalloc(1, sizeof(*w));

	w->d = d;
	/* A shared queue: the thread writes its results itself (run_txn). */
	if (d->shared) {
		w->store = store_open_helper(conf->cfg->queue_path, why);
		if (w->store != NULL &&
		    store_helper_writer(w->store, why) != RES_OK) {
			store_close(w->store);
			w->store = NULL;
		}
	} else {
		w->store = store_open_readonly(conf->cfg->queue_path, why);
	}
	w->dns = w->store ? dns_resolver_new(conf->cfg, why) : NULL;
	w->gen = conf->gen;
	if (w->store == NULL || w->dns == NULL ||
	    pthread_create(t, NULL, fn, w) != 0) {
		if (w->store != NULL && w->dns != NULL)
			why_set(why, "cannot start a delivery thread");
		store_close(w->store);
		dns_resolver_free(w->dns);
		free(w);
		return false;
	}
	return true;
}

struct delivery *
delivery_start(
    struct queue *q, struct delivery_conf *conf, int stop_fd, char *why)
{
	struct delivery *d = xcalloc(1, sizeof(*d));
	const struct config *cfg = conf->cfg;
	int i;

	d->q = q;
	d->shared = store_path_is_database(cfg->queue_path);
	d->stop_fd = stop_fd;
	d->conf = holder_new((void (*)(void *))delivery_conf_free);
	holder_set(d->conf, conf);
	atomic_init(&d->stop, false);
	atomic_init(&d->wake, false);
	atomic_init(&d->nodes, 1);
	d->dests = dests_new();
	mutex_init(&d->mu);
	cond_init(&d->cv);
	cond_init(&d->done_cv);
	cond_init(&d->sts_cv);
	d->threads = xcalloc((size_t)cfg->delivery_threads, sizeof(pthread_t));
	for (i = 0; i < cfg->delivery_threads; i++) {
		if (!start_thread(
		        d, conf, &d->threads[i], delivery_thread_main, why))
			goto fail;
		d->nthreads++;
	}
	if (pthread_create(&d->dispatcher, NULL, dispatcher_main, d) != 0) {
		why_set(why, "cannot start the delivery dispatcher");
		goto fail;
	}
	d->dispatcher_started = true;
	if (cfg->delivery_threads > 0) {
		queue_listen_others(q);
		if (!start_thread(
		        d, conf, &d->sts_thread, sts_thread_main, why))
			goto fail;
		d->sts_started = true;
	}
	log_info("deliver",
	    "%d delivery threads, destination_concurrency=%d%s%s", d->nthreads,
	    cfg->destination_concurrency,
	    cfg->smarthost.host[0] ? ", smarthost " : "", cfg->smarthost.host);
	return d;
fail:
	atomic_store(&d->stop, true);
	mutex_lock(&d->mu);
	pthread_cond_broadcast(&d->cv);
	mutex_unlock(&d->mu);
	for (i = 0; i < d->nthreads; i++)
		pthread_join(d->threads[i], NULL);
	d->nthreads = 0;
	delivery_stop(d);
	return NULL;
}

void
delivery_stop(struct delivery *d)
{
	int i;

	if (d == NULL)
		return;
	atomic_store(&d->stop, true);
	wake(d);
	mutex_lock(&d->mu);
	pthread_cond_broadcast(&d->done_cv); /* the dispatcher */
	pthread_cond_broadcast(&d->cv);      /* delivery threads, naps */
	mutex_unlock(&d->mu);
	if (d->dispatcher_started)
		pthread_join(d->dispatcher, NULL);
	if (d->sts_started)
		pthread_join(d->sts_thread, NULL);
	mutex_lock(&d->mu);
	pthread_cond_broadcast(&d->cv);
	mutex_unlock(&d->mu);
	for (i = 0; i < d->nthreads; i++)
		pthread_join(d->threads[i], NULL);
	jobs_free(d->jobs);
	holder_free(d->conf);
	free(d->threads);
	dests_free(d->dests);
	mutex_destroy(&d->mu);
	cond_destroy(&d->cv);
	cond_destroy(&d->done_cv);
	cond_destroy(&d->sts_cv);
	free(d);
}
