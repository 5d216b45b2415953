/*
 * deliver.c - the dispatcher and the delivery threads (see deliver.h).
 *
 * Threads and shared state:
 *  - d->mu guards the job list (d->jobs), d->busy, the per-destination
 *    counts (d->dests) and d->nidle; d->cv wakes delivery threads (new
 *    jobs, stop), d->done_cv wakes the dispatcher (a job finished).
 *  - d->stop is atomic: set once by delivery_stop.
 *  - Each delivery thread owns its read-only SQLite connection, its ldns
 *    resolver and its SMTP connections.  Writes (claims, results) go
 *    through queue_run, so they are serialised with the intake by the
 *    queue's writer thread.
 *
 * Recipient life cycle:
 *
 *   queued/deferred --claim (lease)--> in a job --attempt--> delivered
 *        ^                                 |                   bounced
 *        +------------ deferred <----------+ (next_attempt_at = schedule)
 *
 * Invariants:
 *  1. A recipient is in at most one job: claiming sets its lease in the
 *     same transaction that found it unleased.
 *  2. Every attempt ends in db_record_attempt (which clears the lease) or,
 *     if sluice stops first, the lease is cleared at the next start.
 *  3. A message from the null sender never produces a bounce.
 */
#include "deliver.h"
#include "bounce.h"
#include "db.h"
#include "holder.h"
#include "log.h"
#include "metrics.h"
#include "smtpc.h"
#include "tls.h"

#include <errno.h>
#include <gnutls/crypto.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define LEASE_SECONDS (2 * 3600)
#define CLAIM_ROWS 256
#define JOB_RCPTS_MAX 100
#define RETURNED_MAX 16 /* returned messages handled per look */
#define PRUNE_EVERY_MS (10 * 60 * 1000)

struct job {
	char msg_id[QUEUE_ID_LEN + 1];
	char dest[300]; /* destination key: domain, or "[smarthost]" */
	char domain[256];
	int rcpt_nos[JOB_RCPTS_MAX];
	int nrcpts;
	struct job *next;
};

struct dest {
	char key[300];
	int active;
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
	char *smarthost_pass;
};

struct delivery {
	struct queue *q;
	struct holder *conf; /* struct delivery_conf * */
	int stop_fd;
	int64_t
	    next_admin_ms; /* dispatcher only: next look for returned mail */
	int64_t next_prune_ms; /* dispatcher only */
	pthread_t dispatcher;
	bool dispatcher_started;
	pthread_t *threads;
	int nthreads;
	atomic_bool stop;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	pthread_cond_t done_cv;
	struct job *jobs;   /* guarded by mu */
	int busy;           /* guarded by mu: jobs queued or running */
	struct dest *dests; /* guarded by mu */
	int ndests;         /* guarded by mu */
};

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

/* The key that groups recipients and counts concurrency. */
static void
dest_key(const struct config *cfg, const char *domain, char *key, size_t len)
{
	const struct route *r = route_for(cfg, domain);

	if (r != NULL)
		snprintf(key, len, "[%s]:%d", r->to.host, r->to.port);
	else if (cfg->smarthost.host[0] != '\0')
		snprintf(key, len, "[%s]", cfg->smarthost.host);
	else
		snprintf(key, len, "%s", domain);
}

/* Caller holds d->mu. */
static struct dest *
dest_find(struct delivery *d, const char *key, bool create)
{
	int i;

	for (i = 0; i < d->ndests; i++)
		if (strcmp(d->dests[i].key, key) == 0)
			return &d->dests[i];
	if (!create)
		return NULL;
	for (i = 0; i < d->ndests; i++)
		if (d->dests[i].active == 0)
			break;
	if (i == d->ndests) {
		d->dests = xrealloc(
		    d->dests, sizeof(*d->dests) * (size_t)(d->ndests + 1));
		d->ndests++;
	}
	snprintf(d->dests[i].key, sizeof(d->dests[i].key), "%s", key);
	d->dests[i].active = 0;
	return &d->dests[i];
}

/* ---- claiming (runs on the queue's writer thread) ---- */

struct claim {
	struct delivery *d;
	const struct config *cfg;
	int max_jobs;
	struct dest *busy; /* snapshot of active destinations */
	int nbusy;
	struct job *jobs; /* out */
	int64_t next_due; /* out: when to look again */
};

static void
jobs_free(struct job *j)
{
	while (j != NULL) {
		struct job *next = j->next;

		free(j);
		j = next;
	}
}

static int
busy_count(const struct claim *c, const char *key)
{
	int i;

	for (i = 0; i < c->nbusy; i++)
		if (strcmp(c->busy[i].key, key) == 0)
			return c->busy[i].active;
	return 0;
}

static enum res
claim_fn(struct db *db, void *arg, char *why)
{
	struct claim *c = arg;
	const struct config *cfg = c->cfg;
	struct db_due *due = xcalloc(CLAIM_ROWS, sizeof(*due));
	int64_t now = (int64_t)time(NULL);
	struct job *tail = NULL, *j;
	int n, i, njobs = 0;
	enum res r = RES_OK;

	/* queue_run may call us twice: start from scratch. */
	jobs_free(c->jobs);
	c->jobs = NULL;
	c->next_due = 0;
	n = db_list_due(db, now, due, CLAIM_ROWS, why);
	if (n < 0) {
		r = RES_TEMP;
		goto out;
	}
	for (i = 0; i < n; i++) {
		char key[300];
		int active;

		dest_key(cfg, due[i].domain, key, sizeof(key));
		/* Join a job of this run for the same message and place. */
		for (j = c->jobs; j != NULL; j = j->next)
			if (strcmp(j->msg_id, due[i].msg_id) == 0 &&
			    strcmp(j->dest, key) == 0 &&
			    j->nrcpts < JOB_RCPTS_MAX)
				break;
		if (j == NULL) {
			if (njobs >= c->max_jobs)
				continue;
			active = busy_count(c, key);
			for (j = c->jobs; j != NULL; j = j->next)
				if (strcmp(j->dest, key) == 0)
					active++;
			if (active >= cfg->destination_concurrency)
				continue;
			j = xcalloc(1, sizeof(*j));
			snprintf(
			    j->msg_id, sizeof(j->msg_id), "%s", due[i].msg_id);
			snprintf(j->dest, sizeof(j->dest), "%s", key);
			snprintf(
			    j->domain, sizeof(j->domain), "%s", due[i].domain);
			if (tail != NULL)
				tail->next = j;
			else
				c->jobs = j;
			tail = j;
			njobs++;
		}
		if (db_lease(db, due[i].msg_id, due[i].rcpt_no,
		        now + LEASE_SECONDS, why) != RES_OK) {
			r = RES_TEMP;
			goto out;
		}
		j->rcpt_nos[j->nrcpts++] = due[i].rcpt_no;
	}
	if (njobs == 0)
		c->next_due = db_next_due(db);
out:
	if (r != RES_OK) {
		jobs_free(c->jobs);
		c->jobs = NULL;
	}
	free(due);
	return r;
}

static void housekeeping(struct delivery *d, const struct config *cfg);

static void *
dispatcher_main(void *arg)
{
	struct delivery *d = arg;
	char why[WHY_MAX];

	while (!atomic_load(&d->stop)) {
		const struct delivery_conf *dc;
		struct held *ref;
		struct claim c;
		uint64_t seen;
		int free_threads;

		memset(&c, 0, sizeof(c));
		c.d = d;
		pthread_mutex_lock(&d->mu);
		free_threads = d->nthreads - d->busy;
		if (free_threads <= 0) {
			struct timespec ts;

			clock_gettime(CLOCK_REALTIME, &ts);
			ts.tv_sec += 1;
			pthread_cond_timedwait(&d->done_cv, &d->mu, &ts);
			pthread_mutex_unlock(&d->mu);
			continue;
		}
		c.max_jobs = free_threads;
		c.nbusy = d->ndests;
		c.busy = xcalloc((size_t)c.nbusy + 1, sizeof(*c.busy));
		if (c.nbusy > 0)
			memcpy(c.busy, d->dests,
			    sizeof(*c.busy) * (size_t)c.nbusy);
		pthread_mutex_unlock(&d->mu);

		seen = queue_mail_seq(d->q);
		dc = holder_get(d->conf, &ref);
		c.cfg = dc->cfg;
		housekeeping(d, dc->cfg);
		if (queue_run(d->q, claim_fn, &c, why) != RES_OK)
			log_warn(
			    "deliver", "claiming due mail failed: %s", why);
		holder_put(ref);
		free(c.busy);
		if (c.jobs != NULL) {
			struct job *j, *next;

			pthread_mutex_lock(&d->mu);
			for (j = c.jobs; j != NULL; j = next) {
				next = j->next;
				dest_find(d, j->dest, true)->active++;
				j->next = d->jobs;
				d->jobs = j;
				d->busy++;
			}
			pthread_cond_broadcast(&d->cv);
			pthread_mutex_unlock(&d->mu);
			continue;
		}
		/* Nothing to start: look again when new mail arrives, or
		 * after a second (retries come due, held mail is released,
		 * a busy destination frees up). */
		queue_wait_mail(d->q, seen, now_ms() + 1000, &d->stop);
	}
	return NULL;
}

/* ---- one delivery ---- */

struct worker {
	struct delivery *d;
	struct db *db; /* read-only */
	struct dns_resolver *dns;
	/* The connection kept open after a job, for the next job to the
	 * same destination (max_messages_per_connection). */
	struct smtpc *kept;
	unsigned gen; /* the delivery_conf that w->dns and w->kept belong to */
	char kept_dest[300];
	char kept_relay[400], kept_mx[DNS_NAME_MAX], kept_ip[64];
	int kept_port;
	int kept_uses;
	int64_t kept_since; /* now_ms() of its last use */
};

#define KEEP_IDLE_MS 5000

static void
drop_kept(struct worker *w)
{
	smtpc_close(w->kept);
	w->kept = NULL;
	w->kept_dest[0] = '\0';
	w->kept_uses = 0;
}

struct body_ctx {
	struct worker *w;
	const char *msg_id;
};

static enum res
read_body(void *arg, int (*put)(void *, const void *, size_t), void *put_arg,
    char *why)
{
	struct body_ctx *b = arg;

	return db_read_body(b->w->db, b->msg_id, put, put_arg, why);
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

/* The outcome of one recipient in a job. */
struct outcome {
	struct db_rcpt_info info;
	enum res result;
	char reply[512];
	bool relayed; /* delivered to a server without DSN */
	char state[16];
	int64_t next_at;
};

static void reply_status(
    const char *reply, const char *fallback, char *out, size_t len);
static bool notify_has(const char *notify, const char *what);

struct record {
	const char *msg_id;
	const struct db_msg_info *m;
	const char *hostname;
	int delay_warning; /* seconds, 0: no delay notices */
	struct outcome *out;
	int n;
	int64_t at, duration_ms;
	const char *mx_host, *ip, *tls;
	int port;
	char dsn_id[QUEUE_ID_LEN + 1];     /* out: the failure notice queued */
	char success_id[QUEUE_ID_LEN + 1]; /* out: the success notice */
	char delay_id[QUEUE_ID_LEN + 1];   /* out: the delay notice */
	int dsn_rcpts;                     /* out: recipients it reports */
};

/*
 * Queue a notice (RFC 3464) about `br` to the sender of r->msg_id, inside
 * the transaction that records the attempt: either both happen or
 * neither, so a notice is never lost, nor sent twice.  `r->dsn_id` gets
 * its queue ID.
 */
static enum res
queue_notice(struct db *db, struct record *r, enum bounce_kind kind,
    const struct bounce_rcpt *br, int k, char *why)
{
	const struct db_msg_info *m = r->m;
	struct head_buf head = {xmalloc(BOUNCE_RETURN_LIMIT + 1), 0};
	struct envelope env;
	struct envelope_rcpt er;
	struct bounce_msg b;
	char domain[256];
	const char *at;
	char *text;
	size_t len = 0, off;
	int seq = 0;
	enum res res = RES_OK;

	(void)db_read_body(db, r->msg_id, collect_head, &head, why);
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
	b.ret_hdrs = strcmp(m->dsn_ret, "HDRS") == 0;
	b.rcpts = br;
	b.nrcpts = k;
	b.orig = head.p;
	b.orig_len = head.len;
	b.orig_size = (size_t)m->stored_size;
	text = bounce_format(&b, &len);
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
	env.stored_size = (int64_t)len;
	env.body_type = "7BIT";
	env.client_ip = "127.0.0.1";
	env.helo = r->hostname;
	env.protocol = "local";
	for (off = 0; off < len && res == RES_OK; off += QUEUE_CHUNK) {
		size_t piece =
		    len - off < QUEUE_CHUNK ? len - off : QUEUE_CHUNK;

		res = db_put_chunk(db, env.id, seq++, text + off, piece, why);
	}
	if (res == RES_OK)
		res = db_put_message(db, &env, why);
	if (res == RES_OK)
		snprintf(r->dsn_id, sizeof(r->dsn_id), "%s", env.id);
	free(text);
	free(head.p);
	return res;
}

/*
 * The failure notice: all bounced, unreported recipients of the message
 * in one notice, sent once none is pending any more.
 */
static enum res
failure_notice(struct db *db, struct record *r, char *why)
{
	struct db_bounced *bl = NULL;
	struct bounce_rcpt *br;
	char(*status)[16];
	int nb, i, k = 0;
	enum res res = RES_OK;

	nb = db_unreported_bounces(db, r->msg_id, &bl, why);
	if (nb <= 0)
		return nb < 0 ? RES_TEMP : RES_OK;
	br = xcalloc((size_t)nb, sizeof(*br));
	status = xcalloc((size_t)nb, sizeof(*status));
	for (i = 0; i < nb; i++) {
		if (!notify_has(bl[i].notify, "FAILURE"))
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
	    (res = queue_notice(db, r, BOUNCE_FAILURE, br, k, why)) == RES_OK)
		r->dsn_rcpts = k;
	if (res == RES_OK)
		res = db_mark_reported(db, r->msg_id, why);
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
success_notice(struct db *db, struct record *r, char *why)
{
	struct bounce_rcpt *br = xcalloc((size_t)r->n + 1, sizeof(*br));
	int i, k = 0;
	enum res res = RES_OK;

	for (i = 0; i < r->n; i++) {
		const struct outcome *o = &r->out[i];

		if (strcmp(o->state, "delivered") != 0 || !o->relayed ||
		    !notify_has(o->info.notify, "SUCCESS"))
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
		res = queue_notice(db, r, BOUNCE_SUCCESS, br, k, why);
	free(br);
	return res;
}

/*
 * The delay notice (delay_warning_time): recipients of this job still
 * deferred that long after arrival, told once (RFC 3464 "delayed").
 */
static enum res
delay_notice(struct db *db, struct record *r, char *why)
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

		if (strcmp(o->state, "deferred") != 0 ||
		    (o->info.notified & 2) ||
		    !notify_has(o->info.notify, "DELAY"))
			continue;
		br[k].address = o->info.address;
		br[k].orcpt = o->info.orcpt[0] ? o->info.orcpt : NULL;
		br[k].action = "delayed";
		reply_status(o->reply, "4.0.0", status[k], sizeof(status[k]));
		br[k].status = status[k];
		br[k].remote_mta = r->mx_host;
		br[k].diagnostic = o->reply;
		br[k].last_attempt = r->at;
		k++;
		res =
		    db_mark_delay_reported(db, r->msg_id, o->info.rcpt_no, why);
	}
	if (res == RES_OK && k > 0 && r->m->sender[0] != '\0')
		res = queue_notice(db, r, BOUNCE_DELAY, br, k, why);
	free(status);
	free(br);
	return res;
}

static enum res
record_fn(struct db *db, void *arg, char *why)
{
	struct record *r = arg;
	int i;

	for (i = 0; i < r->n; i++) {
		struct outcome *o = &r->out[i];
		struct db_attempt a;

		memset(&a, 0, sizeof(a));
		a.msg_id = r->msg_id;
		a.rcpt_no = o->info.rcpt_no;
		a.at = r->at;
		a.mx_host = r->mx_host;
		a.ip = r->ip;
		a.port = r->port;
		a.tls = r->tls;
		a.status = strcmp(o->state, "delivered") == 0 ? "sent"
		           : strcmp(o->state, "bounced") == 0 ? "bounced"
		                                              : "deferred";
		a.reply = o->reply;
		a.duration_ms = r->duration_ms;
		a.state = o->state;
		a.next_at = o->next_at;
		if (db_record_attempt(db, &a, why) != RES_OK)
			return RES_TEMP;
	}
	/* queue_run may run us twice: start the outputs afresh. */
	r->dsn_id[0] = r->success_id[0] = r->delay_id[0] = '\0';
	r->dsn_rcpts = 0;
	if (success_notice(db, r, why) != RES_OK)
		return RES_TEMP;
	snprintf(r->success_id, sizeof(r->success_id), "%s", r->dsn_id);
	r->dsn_id[0] = '\0';
	if (delay_notice(db, r, why) != RES_OK)
		return RES_TEMP;
	snprintf(r->delay_id, sizeof(r->delay_id), "%s", r->dsn_id);
	r->dsn_id[0] = '\0';
	if (failure_notice(db, r, why) != RES_OK)
		return RES_TEMP;
	return db_release_finished(db, r->msg_id, why);
}

/*
 * The enhanced status code of a reply: "550 5.1.1 ..." or our own
 * "4.4.1 ..." gives "5.1.1" / "4.4.1"; `fallback` when there is none.
 */
static void
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

/* Seconds until the next attempt after `attempts` attempts, with jitter. */
static int64_t
retry_delay(const struct config *cfg, int attempts)
{
	int idx = attempts - 1;
	uint32_t rnd = 0;
	int64_t base;

	if (idx < 0)
		idx = 0;
	if (idx >= cfg->nretry_schedule)
		idx = cfg->nretry_schedule - 1;
	base = cfg->retry_schedule[idx];
	/* Up to 10% jitter so that retries of a burst spread out. */
	(void)gnutls_rnd(GNUTLS_RND_NONCE, &rnd, sizeof(rnd));
	return base + (base >= 10 ? (int64_t)(rnd % (uint32_t)(base / 10)) : 0);
}

static bool
notify_has(const char *notify, const char *what)
{
	/* Without NOTIFY, failures and delays are reported (RFC 3461 4.1). */
	if (notify[0] == '\0')
		return strcmp(what, "SUCCESS") != 0;
	return strstr(notify, what) != NULL;
}

/*
 * Where to connect for a job: route, smarthost, or MX.  A route or
 * smarthost whose name does not resolve is a configuration problem, not
 * the sender's: it defers, it never bounces.
 */
static enum res
targets(struct worker *w, const struct delivery_conf *dc, const struct job *j,
    struct mx_host **hosts, int *n, bool *smarthost, char *why)
{
	const struct config *cfg = dc->cfg;
	const struct route *r = route_for(cfg, j->domain);
	struct dns_self self;
	enum res res;

	*smarthost = false;
	if (r != NULL || cfg->smarthost.host[0] != '\0') {
		const struct hostport *hp = r ? &r->to : &cfg->smarthost;
		int port = hp->port;

		*smarthost = (r == NULL);
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
			    r ? "route" : "smarthost", hp->host, tmp);
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

/* True when the server answered none of the recipients. */
static bool
no_answers(const struct smtpc_rcpt *sr, int n)
{
	int i;

	for (i = 0; i < n; i++)
		if (sr[i].reply[0] >= '2' && sr[i].reply[0] <= '5' &&
		    sr[i].reply[1] >= '0' && sr[i].reply[1] <= '9')
			return false;
	return true;
}

static void
deliver_job(
    struct worker *w, const struct delivery_conf *dc, const struct job *j)
{
	struct delivery *d = w->d;
	const struct config *cfg = dc->cfg;
	struct outcome *out = xcalloc((size_t)j->nrcpts, sizeof(*out));
	struct smtpc_rcpt *sr = xcalloc((size_t)j->nrcpts, sizeof(*sr));
	struct mx_host *hosts = NULL;
	struct db_msg_info m;
	struct record rec;
	struct smtpc *c = NULL;
	struct smtpc_opts o;
	char why[WHY_MAX], tlsdesc[128] = "", relay[400] = "none";
	char mxname[DNS_NAME_MAX] = "", ip[64] = "";
	int64_t t0 = now_ms(), now;
	int i, n = 0, nhosts = 0, port = 0;
	bool smarthost = false, have_dsn = false, reused = false;
	enum res r;

	why[0] = '\0';
	if (db_load_message(w->db, j->msg_id, &m, why) != RES_OK) {
		/* Deleted meanwhile (sluice queue delete): nothing to do. */
		log_info("deliver", "id=%s skipped: %s", j->msg_id, why);
		goto out;
	}
	for (i = 0; i < j->nrcpts; i++) {
		struct outcome *oc = &out[n];

		if (db_load_rcpt(w->db, j->msg_id, j->rcpt_nos[i], &oc->info,
		        why) != RES_OK)
			continue;
		if (strcmp(oc->info.state, "queued") != 0 &&
		    strcmp(oc->info.state, "deferred") != 0)
			continue; /* held or finished meanwhile */
		sr[n].address = oc->info.address;
		sr[n].notify = oc->info.notify[0] ? oc->info.notify : NULL;
		sr[n].orcpt = oc->info.orcpt[0] ? oc->info.orcpt : NULL;
		n++;
	}
	if (n == 0)
		goto out;
	/*
	 * Reuse the kept connection for the same destination.  Right after
	 * a completed transaction the server is ready for MAIL (RFC 5321
	 * section 4.1.4); after a pause, RSET first checks it is still
	 * there.
	 */
	if (w->kept != NULL && strcmp(w->kept_dest, j->dest) == 0 &&
	    (now_ms() - w->kept_since < 1000 ||
	        smtpc_reset(w->kept) == RES_OK)) {
		c = w->kept;
		w->kept = NULL;
		snprintf(mxname, sizeof(mxname), "%s", w->kept_mx);
		snprintf(ip, sizeof(ip), "%s", w->kept_ip);
		snprintf(relay, sizeof(relay), "%s", w->kept_relay);
		port = w->kept_port;
		r = RES_OK;
		reused = true;
		goto send;
	}
fresh:
	drop_kept(w);
	reused = false;
	r = targets(w, dc, j, &hosts, &nhosts, &smarthost, why);
	if (r == RES_OK) {
		memset(&o, 0, sizeof(o));
		o.helo = cfg->hostname;
		o.connect_timeout = cfg->connect_timeout;
		o.command_timeout = cfg->delivery_command_timeout;
		o.data_timeout = cfg->delivery_data_timeout;
		o.tls =
		    dc->client_creds ? cfg->outbound_tls : OUTBOUND_TLS_NONE;
		o.tls_creds = dc->client_creds;
		o.stop_fd = d->stop_fd;
		if (smarthost) {
			/* TLS is required to a smarthost unless "none";
			 * verified when outbound_tls = verify. */
			o.implicit_tls =
			    cfg->smarthost_tls == SMARTHOST_TLS_SMTPS;
			o.tls = cfg->smarthost_tls == SMARTHOST_TLS_NONE
			            ? OUTBOUND_TLS_NONE
			        : cfg->outbound_tls == OUTBOUND_TLS_VERIFY
			            ? OUTBOUND_TLS_VERIFY
			            : OUTBOUND_TLS_ENCRYPT;
			o.auth_user = cfg->smarthost_user;
			o.auth_pass = dc->smarthost_pass;
			o.auth_without_tls = cfg->smarthost_auth_without_tls;
		}
		r = RES_TEMP;
		for (i = 0; i < nhosts && c == NULL; i++) {
			o.tls_name = hosts[i].name;
			if (smtpc_open(&hosts[i], &o, &c, why) != RES_OK) {
				log_info("deliver", "id=%s %s", j->msg_id, why);
				continue;
			}
			snprintf(mxname, sizeof(mxname), "%s", hosts[i].name);
			snprintf(ip, sizeof(ip), "%s", hosts[i].ip);
			port = sockaddr_port(
			    (const struct sockaddr *)&hosts[i].addr);
			snprintf(relay, sizeof(relay), "%s[%s]:%d", mxname, ip,
			    port);
		}
	send:
		if (c != NULL) {
			struct smtpc_msg sm;
			struct body_ctx bc = {w, j->msg_id};
			enum res cr;

			memset(&sm, 0, sizeof(sm));
			sm.sender = m.sender;
			sm.size = m.stored_size;
			sm.body_type = m.body_type;
			sm.smtputf8 = m.smtputf8 != 0;
			sm.dsn_ret = m.dsn_ret[0] ? m.dsn_ret : NULL;
			sm.envid = m.envid[0] ? m.envid : NULL;
			sm.body = read_body;
			sm.body_arg = &bc;
			cr = smtpc_send(c, &sm, sr, n);
			if (reused && cr != RES_OK && no_answers(sr, n)) {
				/* The kept connection had gone stale: start
				 * over on a new one. */
				smtpc_close(c);
				c = NULL;
				w->kept_uses = 0;
				goto fresh;
			}
			have_dsn = smtpc_has_dsn(c);
			snprintf(
			    tlsdesc, sizeof(tlsdesc), "%s", smtpc_tls_desc(c));
			/* Keep it for the next message to this destination. */
			if (cr == RES_OK &&
			    ++w->kept_uses < cfg->max_messages_per_connection) {
				w->kept = c;
				snprintf(w->kept_dest, sizeof(w->kept_dest),
				    "%s", j->dest);
				snprintf(w->kept_mx, sizeof(w->kept_mx), "%s",
				    mxname);
				snprintf(
				    w->kept_ip, sizeof(w->kept_ip), "%s", ip);
				snprintf(w->kept_relay, sizeof(w->kept_relay),
				    "%s", relay);
				w->kept_port = port;
				w->kept_since = now_ms();
			} else {
				smtpc_close(c);
				w->kept_uses = 0;
			}
			r = RES_OK;
		}
	}
	now = (int64_t)time(NULL);
	for (i = 0; i < n; i++) {
		struct outcome *oc = &out[i];
		enum res rr = r == RES_OK ? sr[i].result : r;

		snprintf(oc->reply, sizeof(oc->reply), "%s",
		    r == RES_OK ? sr[i].reply : why);
		oc->result = rr;
		if (rr == RES_OK) {
			snprintf(oc->state, sizeof(oc->state), "delivered");
			oc->relayed = !have_dsn;
		} else if (rr == RES_PERM) {
			snprintf(oc->state, sizeof(oc->state), "bounced");
		} else if (now - m.received_at >= cfg->queue_lifetime) {
			/* Too old: give up (RFC 5321 section 4.5.4.1). */
			snprintf(oc->state, sizeof(oc->state), "bounced");
			snprintf(oc->reply, sizeof(oc->reply),
			    "4.4.7 message expired after %lld seconds in the "
			    "queue; last error: %.400s",
			    (long long)(now - m.received_at),
			    r == RES_OK ? sr[i].reply : why);
		} else {
			snprintf(oc->state, sizeof(oc->state), "deferred");
			oc->next_at =
			    now + retry_delay(cfg, oc->info.attempts + 1);
		}
	}
	memset(&rec, 0, sizeof(rec));
	rec.msg_id = j->msg_id;
	rec.m = &m;
	rec.hostname = cfg->hostname;
	rec.delay_warning = cfg->delay_warning_time;
	rec.out = out;
	rec.n = n;
	rec.at = now;
	rec.duration_ms = now_ms() - t0;
	rec.mx_host = mxname[0] ? mxname : NULL;
	rec.ip = ip[0] ? ip : NULL;
	rec.port = port;
	rec.tls = tlsdesc[0] ? tlsdesc : NULL;
	if (queue_run(d->q, record_fn, &rec, why) != RES_OK) {
		log_err("deliver",
		    "id=%s cannot record the attempt: %s "
		    "(retried after the lease expires)",
		    j->msg_id, why);
		goto out;
	}
	for (i = 0; i < n; i++) {
		struct outcome *oc = &out[i];
		char dsn[16] = "";

		reply_status(oc->reply, "-", dsn, sizeof(dsn));
		if (strcmp(oc->state, "delivered") == 0) {
			metrics_inc(M_DELIVERY_SENT);
			metrics_observe(
			    H_DELIVERY_LATENCY, (double)(now - m.received_at));
		} else {
			metrics_inc(strcmp(oc->state, "bounced") == 0
			                ? M_DELIVERY_BOUNCED
			                : M_DELIVERY_DEFERRED);
		}
		log_info("deliver",
		    "id=%s rcpt=<%s> relay=%s delay=%llds "
		    "dsn=%s status=%s (%s)",
		    j->msg_id, oc->info.address, relay,
		    (long long)(now - m.received_at), dsn,
		    strcmp(oc->state, "delivered") == 0 ? "sent" : oc->state,
		    oc->reply);
	}
	metrics_add(M_NOTICES, (rec.dsn_id[0] != '\0') +
	                           (rec.delay_id[0] != '\0') +
	                           (rec.success_id[0] != '\0'));
	if (rec.dsn_id[0] != '\0')
		log_info("deliver",
		    "id=%s sender notice: id=%s to=<%s> (delivery failure, "
		    "%d recipient%s)",
		    j->msg_id, rec.dsn_id, m.sender, rec.dsn_rcpts,
		    rec.dsn_rcpts == 1 ? "" : "s");
	if (rec.delay_id[0] != '\0')
		log_info("deliver",
		    "id=%s sender notice: id=%s to=<%s> (delayed)", j->msg_id,
		    rec.delay_id, m.sender);
	if (rec.success_id[0] != '\0')
		log_info("deliver",
		    "id=%s sender notice: id=%s to=<%s> (relayed)", j->msg_id,
		    rec.success_id, m.sender);
out:
	free(hosts);
	free(sr);
	free(out);
}

/* ---- housekeeping (the dispatcher, between claims) ---- */

struct returned {
	int64_t at;
	const char *hostname;
	char ids[RETURNED_MAX][QUEUE_ID_LEN + 1];
	char dsn[RETURNED_MAX][QUEUE_ID_LEN + 1];
	char sender[RETURNED_MAX][1100];
	int n;
};

/*
 * Failure notices for mail returned with `sluice queue bounce`: the CLI
 * marks the recipients bounced and unreported in its own transaction;
 * this sends the notice and marks them reported in ours.
 */
static enum res
returned_fn(struct db *db, void *arg, char *why)
{
	struct returned *rt = arg;
	int i;

	rt->n = db_list_unreported(db, rt->ids, RETURNED_MAX, why);
	if (rt->n < 0)
		return RES_TEMP;
	for (i = 0; i < rt->n; i++) {
		struct db_msg_info m;
		struct record r;
		enum res res;

		rt->dsn[i][0] = rt->sender[i][0] = '\0';
		res = db_load_message(db, rt->ids[i], &m, why);
		if (res == RES_TEMP)
			return RES_TEMP;
		if (res != RES_OK) { /* recipients without a message */
			if (db_mark_reported(db, rt->ids[i], why) != RES_OK)
				return RES_TEMP;
			continue;
		}
		memset(&r, 0, sizeof(r));
		r.msg_id = rt->ids[i];
		r.m = &m;
		r.hostname = rt->hostname;
		r.at = rt->at;
		if (failure_notice(db, &r, why) != RES_OK ||
		    db_release_finished(db, r.msg_id, why) != RES_OK)
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
prune_fn(struct db *db, void *arg, char *why)
{
	struct prune *p = arg;

	p->n = db_prune_finished(db, p->before, why);
	return p->n < 0 ? RES_TEMP : RES_OK;
}

/*
 * Once a second, notices for returned mail; every ten minutes (a quarter
 * of finished_retention when that is shorter; every second while there is
 * a backlog), finished messages older than finished_retention are pruned.
 */
static void
housekeeping(struct delivery *d, const struct config *cfg)
{
	int64_t t = now_ms();
	char why[WHY_MAX];
	int i;

	if (t >= d->next_admin_ms) {
		struct returned *rt = xcalloc(1, sizeof(*rt));

		d->next_admin_ms = t + 1000;
		rt->at = (int64_t)time(NULL);
		rt->hostname = cfg->hostname;
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
			if (p.n >= DB_PRUNE_MAX)
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
worker_refresh(struct worker *w, const struct delivery_conf *dc)
{
	char why[WHY_MAX];
	struct dns_resolver *r;

	if (w->gen == dc->gen)
		return;
	w->gen = dc->gen;
	drop_kept(w);
	r = dns_resolver_new(dc->cfg, why);
	if (r == NULL) {
		log_err(
		    "deliver", "new DNS settings: %s (keeping the old)", why);
		return;
	}
	dns_resolver_free(w->dns);
	w->dns = r;
}

static void *
worker_main(void *arg)
{
	struct worker *w = arg;
	struct delivery *d = w->d;

	for (;;) {
		struct job *j;
		struct dest *ds;

		pthread_mutex_lock(&d->mu);
		while (d->jobs == NULL && !atomic_load(&d->stop)) {
			struct timespec ts;

			if (w->kept == NULL) {
				pthread_cond_wait(&d->cv, &d->mu);
				continue;
			}
			/* Close a kept connection that stays idle. */
			if (now_ms() - w->kept_since >= KEEP_IDLE_MS) {
				pthread_mutex_unlock(&d->mu);
				drop_kept(w);
				pthread_mutex_lock(&d->mu);
				continue;
			}
			clock_gettime(CLOCK_REALTIME, &ts);
			ts.tv_sec += 1;
			pthread_cond_timedwait(&d->cv, &d->mu, &ts);
		}
		j = d->jobs;
		if (j == NULL) {
			pthread_mutex_unlock(&d->mu);
			break;
		}
		d->jobs = j->next;
		pthread_mutex_unlock(&d->mu);

		if (!atomic_load(&d->stop)) {
			struct held *ref;
			const struct delivery_conf *dc =
			    holder_get(d->conf, &ref);

			worker_refresh(w, dc);
			deliver_job(w, dc, j);
			holder_put(ref);
		}

		pthread_mutex_lock(&d->mu);
		ds = dest_find(d, j->dest, false);
		if (ds != NULL)
			ds->active--;
		d->busy--;
		pthread_cond_signal(&d->done_cv);
		pthread_mutex_unlock(&d->mu);
		free(j);
	}
	drop_kept(w);
	db_close(w->db);
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

struct delivery *
delivery_start(
    struct queue *q, struct delivery_conf *conf, int stop_fd, char *why)
{
	struct delivery *d = xcalloc(1, sizeof(*d));
	const struct config *cfg = conf->cfg;
	int i;

	d->q = q;
	d->stop_fd = stop_fd;
	d->conf = holder_new((void (*)(void *))delivery_conf_free);
	holder_set(d->conf, conf);
	atomic_init(&d->stop, false);
	pthread_mutex_init(&d->mu, NULL);
	pthread_cond_init(&d->cv, NULL);
	pthread_cond_init(&d->done_cv, NULL);
	d->threads = xcalloc((size_t)cfg->delivery_threads, sizeof(pthread_t));
	for (i = 0; i < cfg->delivery_threads; i++) {
		struct worker *w = xcalloc(1, sizeof(*w));

		w->d = d;
		w->db = db_open_readonly(cfg->queue_path, why);
		w->dns = w->db ? dns_resolver_new(cfg, why) : NULL;
		w->gen = conf->gen;
		if (w->db == NULL || w->dns == NULL ||
		    pthread_create(&d->threads[i], NULL, worker_main, w) != 0) {
			db_close(w->db);
			dns_resolver_free(w->dns);
			free(w);
			goto fail;
		}
		d->nthreads++;
	}
	if (pthread_create(&d->dispatcher, NULL, dispatcher_main, d) != 0) {
		why_set(why, "cannot start the delivery dispatcher");
		goto fail;
	}
	d->dispatcher_started = true;
	log_info("deliver",
	    "%d delivery threads, destination_concurrency=%d%s%s", d->nthreads,
	    cfg->destination_concurrency,
	    cfg->smarthost.host[0] ? ", smarthost " : "", cfg->smarthost.host);
	return d;
fail:
	atomic_store(&d->stop, true);
	pthread_mutex_lock(&d->mu);
	pthread_cond_broadcast(&d->cv);
	pthread_mutex_unlock(&d->mu);
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
	if (d->dispatcher_started)
		pthread_join(d->dispatcher, NULL);
	pthread_mutex_lock(&d->mu);
	pthread_cond_broadcast(&d->cv);
	pthread_mutex_unlock(&d->mu);
	for (i = 0; i < d->nthreads; i++)
		pthread_join(d->threads[i], NULL);
	jobs_free(d->jobs);
	holder_free(d->conf);
	free(d->threads);
	free(d->dests);
	pthread_mutex_destroy(&d->mu);
	pthread_cond_destroy(&d->cv);
	pthread_cond_destroy(&d->done_cv);
	free(d);
}
