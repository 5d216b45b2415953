/*
 * store.c - the storage interface (see store.h): choosing the backend,
 * what every backend shares (writing new mail, freeing the CLI's
 * records), and the dispatch of everything else to the backend's
 * operations (store_impl.h).
 *
 * Threads: nothing here is shared; a connection belongs to one thread.
 */
#include "store_impl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char node_name[256];
bool store_allow_unsafe;

void
store_configure(const char *name, bool allow_unsafe_database)
{
	snprintf(node_name, sizeof(node_name), "%s", name ? name : "");
	store_allow_unsafe = allow_unsafe_database;
}

const char *
store_node_name(void)
{
	return node_name;
}

void
store_path_shown(const char *path, char *out, size_t len)
{
	const char *scheme = strstr(path, "://");
	const char *at = scheme != NULL ? strchr(scheme + 3, '@') : NULL;
	const char *colon =
	    at != NULL ? memchr(scheme + 3, ':', (size_t)(at - scheme - 3))
	               : NULL;

	if (store_path_is_database(path) && colon != NULL)
		snprintf(out, len, "%.*s:***%s", (int)(colon - path), path, at);
	else
		snprintf(out, len, "%s", path);
}

bool
store_path_is_database(const char *path)
{
	return strncmp(path, "postgresql://", 13) == 0 ||
	       strncmp(path, "postgres://", 11) == 0;
}

/* The backend for a queue path: PostgreSQL for a connection URI,
 * SQLite for a file. */
static const struct store_ops *
backend(const char *path, char *why)
{
	(void)why;
	return store_path_is_database(path) ? &pg_store_ops : &sqlite_store_ops;
}

struct store *
store_open(const char *path, char *why)
{
	const struct store_ops *b = backend(path, why);

	return b != NULL ? b->open(path, why) : NULL;
}

struct store *
store_open_helper(const char *path, char *why)
{
	const struct store_ops *b = backend(path, why);

	return b != NULL ? b->open_helper(path, why) : NULL;
}

struct store *
store_open_readonly(const char *path, char *why)
{
	const struct store_ops *b = backend(path, why);

	return b != NULL ? b->open_readonly(path, why) : NULL;
}

struct store *
store_open_admin(const char *path, bool write, char *why)
{
	const struct store_ops *b = backend(path, why);

	return b != NULL ? b->open_admin(path, write, why) : NULL;
}

/* ---- storage errors ---- */

static const struct {
	int code;
	const char *text; /* enhanced status code and words */
	bool detail;      /* followed by the backend's words */
} errors[] = {
    [STORE_E_NONE] = {451, "4.3.0 Queue error", true},
    [STORE_E_FULL] = {452, "4.3.1 Insufficient system storage", false},
    [STORE_E_WRITE] = {451, "4.3.0 Queue write error", true},
    [STORE_E_READ] = {451, "4.3.0 queue read error", true},
};

int
store_error_code(enum store_error e)
{
	return errors[e].code;
}

void
store_error_why(enum store_error e, const char *detail, char *why)
{
	if (errors[e].detail)
		why_set(why, "%s (%s)", errors[e].text, detail);
	else
		why_set(why, "%s", errors[e].text);
}

/* ---- writing new mail ---- */

/* Cuts the parts of a message into chunks of STORE_CHUNK octets. */
struct chunker {
	struct store *s;
	const char *id;
	int seq;
	unsigned char *buf; /* NULL until a chunk spans two parts */
	size_t fill;
	char *why;
};

static enum res
chunk_flush(struct chunker *k)
{
	enum res r = RES_OK;

	if (k->fill > 0)
		r = k->s->ops->put_chunk(
		    k->s, k->id, k->seq++, k->buf, k->fill, k->why);
	k->fill = 0;
	return r;
}

/* Whole chunks straight from the part; what is left over is buffered. */
static enum res
chunk_add(struct chunker *k, const unsigned char *p, size_t n)
{
	enum res r = RES_OK;

	while (n > 0 && r == RES_OK) {
		size_t take =
		    STORE_CHUNK - k->fill < n ? STORE_CHUNK - k->fill : n;

		if (k->fill == 0 && take == STORE_CHUNK) {
			r = k->s->ops->put_chunk(
			    k->s, k->id, k->seq++, p, take, k->why);
		} else {
			if (k->buf == NULL)
				k->buf = xmalloc(STORE_CHUNK);
			memcpy(k->buf + k->fill, p, take);
			k->fill += take;
			if (k->fill == STORE_CHUNK)
				r = chunk_flush(k);
		}
		p += take;
		n -= take;
	}
	return r;
}

enum res
store_put_mail(struct store *s, const struct envelope *env, int first_seq,
    const struct store_part *parts, int nparts, char *why)
{
	struct chunker k = {s, env->id, first_seq, NULL, 0, why};
	enum res r = RES_OK;
	int i;

	/*
	 * What goes in front, known only at the end: at the start of chunk 0
	 * when no chunk is stored yet (no extra row), else chunk -1 (read
	 * first).
	 */
	if (env->prepend_len > 0 && first_seq > 0)
		r = s->ops->put_chunk(
		    s, env->id, -1, env->prepend, env->prepend_len, why);
	else if (env->prepend_len > 0)
		r = chunk_add(
		    &k, (const unsigned char *)env->prepend, env->prepend_len);
	for (i = 0; i < nparts && r == RES_OK; i++) {
		/* A single part that fits is stored as it is, uncopied. */
		if (k.fill == 0 && parts[i].len <= STORE_CHUNK &&
		    i == nparts - 1) {
			if (parts[i].len > 0)
				r = s->ops->put_chunk(s, env->id, k.seq++,
				    parts[i].data, parts[i].len, why);
		} else {
			r = chunk_add(&k, parts[i].data, parts[i].len);
		}
	}
	if (r == RES_OK)
		r = chunk_flush(&k);
	free(k.buf);
	if (r == RES_OK)
		r = s->ops->put_envelope(s, env, why);
	return r;
}

/* ---- the CLI's records ---- */

void
store_msg_clear(struct store_msg *m)
{
	int i;

	if (m == NULL)
		return;
	for (i = 0; i < m->nrcpts; i++) {
		struct store_rcpt *r = &m->rcpts[i];

		free(r->address);
		free(r->domain);
		free(r->last_reply);
		free(r->orcpt);
	}
	free(m->rcpts);
	free(m->sender);
	free(m->dsn_envid);
	free(m->client_ip);
	free(m->helo);
	free(m->protocol);
	free(m->tls_version);
	free(m->tls_cipher);
	free(m->auth_user);
	memset(m, 0, sizeof(*m));
}

void
store_domains_free(struct store_domain *doms, int n)
{
	int i;

	for (i = 0; i < n; i++)
		free(doms[i].domain);
	free(doms);
}

/* ---- dispatch to the backend ---- */

void
store_close(struct store *s)
{
	if (s != NULL)
		s->ops->close(s);
}

enum res
store_begin(struct store *s, char *why)
{
	return s->ops->begin(s, why);
}

enum res
store_commit(struct store *s, char *why)
{
	return s->ops->commit(s, why);
}

void
store_rollback(struct store *s)
{
	s->ops->rollback(s);
}

enum res
store_put_chunk(struct store *s, const char *id, int seq, const void *data,
    size_t len, char *why)
{
	return s->ops->put_chunk(s, id, seq, data, len, why);
}

enum res
store_put_incoming(
    struct store *s, const char *id, int64_t started_at, char *why)
{
	return s->ops->put_incoming(s, id, started_at, why);
}

enum res
store_drop_incoming(struct store *s, const char *id, char *why)
{
	return s->ops->drop_incoming(s, id, why);
}

int
store_reclaim_incoming(
    struct store *s, int (*fn)(void *, const char *), void *arg, char *why)
{
	return s->ops->reclaim_incoming(s, fn, arg, why);
}

enum res
store_checkpoint(struct store *s, enum store_ckpt_mode mode, int busy_ms,
    struct store_ckpt *out, char *why)
{
	return s->ops->checkpoint(s, mode, busy_ms, out, why);
}

enum res
store_watch_wal(struct store *s, int64_t limit, char *why)
{
	return s->ops->watch_wal(s, limit, why);
}

enum store_error
store_last_error(const struct store *s)
{
	return s->ops->last_error(s);
}

int64_t
store_wal_bytes(const struct store *s)
{
	return s->ops->wal_bytes(s);
}

int
store_list_due(
    struct store *s, int64_t now, struct store_due *out, int max, char *why)
{
	return s->ops->list_due(s, now, out, max, why);
}

int64_t
store_next_due(struct store *s)
{
	return s->ops->next_due(s);
}

enum res
store_lease(
    struct store *s, const char *msg_id, int rcpt_no, int64_t until, char *why)
{
	return s->ops->lease(s, msg_id, rcpt_no, until, why);
}

enum res
store_clear_leases(struct store *s, char *why)
{
	return s->ops->clear_leases(s, why);
}

int
store_nodes(struct store *s, int (*fn)(void *, const struct store_node *),
    void *arg, char *why)
{
	if (s->ops->nodes == NULL) {
		why_set(why,
		    "an SQLite queue belongs to one node: only a PostgreSQL "
		    "queue has nodes");
		return -1;
	}
	return s->ops->nodes(s, fn, arg, why);
}

enum res
store_listen(struct store *s, char *why)
{
	if (s->ops->listen == NULL) {
		why_set(why, "the %s queue has no notifications", s->ops->name);
		return RES_PERM;
	}
	return s->ops->listen(s, why);
}

int
store_wait_notify(struct store *s, int ms, char *why)
{
	return s->ops->wait_notify(s, ms, why);
}

enum res
store_heartbeat(struct store *s, int lease, int *live, char *why)
{
	*live = 1;
	return s->ops->heartbeat != NULL
	           ? s->ops->heartbeat(s, lease, live, why)
	           : RES_OK;
}

enum res
store_load_message(
    struct store *s, const char *msg_id, struct store_msg_info *m, char *why)
{
	return s->ops->load_message(s, msg_id, m, why);
}

enum res
store_load_rcpt(struct store *s, const char *msg_id, int rcpt_no,
    struct store_rcpt_info *r, char *why)
{
	return s->ops->load_rcpt(s, msg_id, rcpt_no, r, why);
}

enum res
store_read_body(struct store *s, const char *msg_id,
    int (*fn)(void *, const void *, size_t), void *arg, char *why)
{
	return s->ops->read_body(s, msg_id, fn, arg, why);
}

enum res
store_record_attempt(struct store *s, const struct store_attempt *a, char *why)
{
	return s->ops->record_attempt(s, a, why);
}

int
store_sts_get(
    struct store *s, const char *domain, struct store_sts *out, char *why)
{
	return s->ops->sts_get(s, domain, out, why);
}

enum res
store_sts_put(struct store *s, const struct store_sts_row *r, char *why)
{
	return s->ops->sts_put(s, r, why);
}

int
store_sts_due(
    struct store *s, int64_t now, char (*domains)[256], int max, char *why)
{
	return s->ops->sts_due(s, now, domains, max, why);
}

int
store_unreported_bounces(
    struct store *s, const char *msg_id, struct store_bounced **out, char *why)
{
	return s->ops->unreported_bounces(s, msg_id, out, why);
}

int
store_list_unreported(
    struct store *s, char (*ids)[QUEUE_ID_LEN + 1], int max, char *why)
{
	return s->ops->list_unreported(s, ids, max, why);
}

enum res
store_mark_delay_reported(
    struct store *s, const char *msg_id, int rcpt_no, char *why)
{
	return s->ops->mark_delay_reported(s, msg_id, rcpt_no, why);
}

enum res
store_mark_reported(struct store *s, const char *msg_id, char *why)
{
	return s->ops->mark_reported(s, msg_id, why);
}

enum res
store_release_finished(struct store *s, const char *msg_id, char *why)
{
	return s->ops->release_finished(s, msg_id, why);
}

enum res
store_queue_counts(struct store *s, struct store_counts *c, char *why)
{
	return s->ops->queue_counts(s, c, why);
}

enum res
store_probe_write(struct store *s, char *why)
{
	return s->ops->probe_write(s, why);
}

int
store_prune_finished(struct store *s, int64_t before, char *why)
{
	return s->ops->prune_finished(s, before, why);
}

enum res
store_helper_writer(struct store *s, char *why)
{
	return s->ops->helper_writer(s, why);
}

void
store_set_busy_timeout(struct store *s, int ms)
{
	s->ops->set_busy_timeout(s, ms);
}

int
store_resume_deferred(struct store *s, int64_t since, int64_t now,
    bool (*match)(void *arg, const char *domain), void *arg, char *why)
{
	return s->ops->resume_deferred(s, since, now, match, arg, why);
}

int
store_first_pending(struct store *s, int64_t now, const char *domain,
    struct store_due *out, char *why)
{
	return s->ops->first_pending(s, now, domain, out, why);
}

enum res
store_read_begin(struct store *s, char *why)
{
	return s->ops->read_begin(s, why);
}

void
store_read_end(struct store *s)
{
	s->ops->read_end(s);
}

int
store_list(struct store *s, const struct store_filter *f, int64_t now,
    int (*fn)(void *, const struct store_msg *), void *arg, char *why)
{
	return s->ops->list(s, f, now, fn, arg, why);
}

enum res
store_load(struct store *s, const char *id, int64_t now, struct store_msg *m,
    char *why)
{
	return s->ops->load(s, id, now, m, why);
}

int
store_exists(struct store *s, const char *id, char *why)
{
	return s->ops->exists(s, id, why);
}

int
store_attempts(struct store *s, const char *id,
    int (*fn)(void *, const struct store_attempt_row *), void *arg, char *why)
{
	return s->ops->attempts(s, id, fn, arg, why);
}

int
store_body(struct store *s, const char *id,
    int (*fn)(void *, const void *, size_t), void *arg, char *why)
{
	return s->ops->body(s, id, fn, arg, why);
}

enum res
store_change(struct store *s, enum store_op op, struct store_change *v, int n,
    int64_t now, char *why)
{
	return s->ops->change(s, op, v, n, now, why);
}

int64_t
store_retry_all(struct store *s, const char *domain, int64_t now, char *why)
{
	return s->ops->retry_all(s, domain, now, why);
}

int
store_purge(struct store *s, int64_t before, char *why)
{
	return s->ops->purge(s, before, why);
}

enum res
store_get_stats(struct store *s, struct store_stats *st,
    struct store_domain **doms, int *ndoms, char *why)
{
	return s->ops->get_stats(s, st, doms, ndoms, why);
}

enum res
store_tlsrpt_add(struct store *s, const struct store_tlsrpt *t, char *why)
{
	return s->ops->tlsrpt_add(s, t, why);
}

int
store_tlsrpt_day(struct store *s, int64_t day,
    int (*fn)(void *, const struct store_tlsrpt *, int64_t), void *arg,
    char *why)
{
	return s->ops->tlsrpt_day(s, day, fn, arg, why);
}

int
store_tlsrpt_sent(struct store *s, int64_t day, int64_t sent_at, char *why)
{
	return s->ops->tlsrpt_sent(s, day, sent_at, why);
}
