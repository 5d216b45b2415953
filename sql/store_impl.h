/*
 * store_impl.h - what a queue backend provides behind store.h: a table of
 * operations, one per store_* function that needs the database (the
 * contracts are store.h's), and a `struct store` at the start of its own
 * connection record.  sql/store.c picks the backend from the queue's path
 * and dispatches; only files in sql/ include this.
 *
 * Threads: as store.h: a connection belongs to one thread at a time.
 */
#ifndef SLUICE_STORE_IMPL_H
#define SLUICE_STORE_IMPL_H

#include "store.h"

struct store_ops {
	const char *name; /* "sqlite" */
	struct store *(*open)(const char *path, char *why);
	struct store *(*open_helper)(const char *path, char *why);
	struct store *(*open_readonly)(const char *path, char *why);
	struct store *(*open_admin)(const char *path, bool write, char *why);
	/* put_envelope: store_put_mail's last step, after the chunks: the
	 * message row and its recipients, and the `incoming` row cleared. */
	enum res (*put_envelope)(
	    struct store *s, const struct envelope *env, char *why);
	void (*close)(struct store *s);
	enum res (*begin)(struct store *s, char *why);
	enum res (*commit)(struct store *s, char *why);
	void (*rollback)(struct store *s);
	enum res (*put_chunk)(struct store *s, const char *id, int seq,
	    const void *data, size_t len, char *why);
	enum res (*put_incoming)(
	    struct store *s, const char *id, int64_t started_at, char *why);
	enum res (*drop_incoming)(struct store *s, const char *id, char *why);
	int (*reclaim_incoming)(struct store *s,
	    int (*fn)(void *, const char *), void *arg, char *why);
	enum res (*checkpoint)(struct store *s, enum store_ckpt_mode mode,
	    int busy_ms, struct store_ckpt *out, char *why);
	enum res (*watch_wal)(struct store *s, int64_t limit, char *why);
	int64_t (*wal_bytes)(const struct store *s);
	enum store_error (*last_error)(const struct store *s);
	int (*list_due)(struct store *s, int64_t now, struct store_due *out,
	    int max, char *why);
	int64_t (*next_due)(struct store *s);
	enum res (*lease)(struct store *s, const char *msg_id, int rcpt_no,
	    int64_t until, char *why);
	enum res (*clear_leases)(struct store *s, char *why);
	enum res (*heartbeat)(struct store *s, int lease, int *live, char *why);
	enum res (*listen)(struct store *s, char *why);
	int (*wait_notify)(struct store *s, int ms, char *why);
	int (*nodes)(struct store *s,
	    int (*fn)(void *, const struct store_node *), void *arg, char *why);
	enum res (*load_message)(struct store *s, const char *msg_id,
	    struct store_msg_info *m, char *why);
	enum res (*load_rcpt)(struct store *s, const char *msg_id, int rcpt_no,
	    struct store_rcpt_info *r, char *why);
	enum res (*read_body)(struct store *s, const char *msg_id,
	    int (*fn)(void *, const void *, size_t), void *arg, char *why);
	enum res (*record_attempt)(
	    struct store *s, const struct store_attempt *a, char *why);
	int (*sts_get)(struct store *s, const char *domain,
	    struct store_sts *out, char *why);
	enum res (*sts_put)(
	    struct store *s, const struct store_sts_row *r, char *why);
	int (*sts_due)(struct store *s, int64_t now, char (*domains)[256],
	    int max, char *why);
	enum res (*tlsrpt_add)(
	    struct store *s, const struct store_tlsrpt *t, char *why);
	int (*tlsrpt_sent)(
	    struct store *s, int64_t day, int64_t sent_at, char *why);
	int (*tlsrpt_day)(struct store *s, int64_t day,
	    int (*fn)(void *, const struct store_tlsrpt *, int64_t), void *arg,
	    char *why);
	int (*unreported_bounces)(struct store *s, const char *msg_id,
	    struct store_bounced **out, char *why);
	int (*list_unreported)(
	    struct store *s, char (*ids)[QUEUE_ID_LEN + 1], int max, char *why);
	enum res (*mark_delay_reported)(
	    struct store *s, const char *msg_id, int rcpt_no, char *why);
	enum res (*mark_reported)(
	    struct store *s, const char *msg_id, char *why);
	enum res (*release_finished)(
	    struct store *s, const char *msg_id, char *why);
	enum res (*queue_counts)(
	    struct store *s, struct store_counts *c, char *why);
	enum res (*probe_write)(struct store *s, char *why);
	int (*prune_finished)(struct store *s, int64_t before, char *why);
	enum res (*helper_writer)(struct store *s, char *why);
	void (*set_busy_timeout)(struct store *s, int ms);
	int (*resume_deferred)(struct store *s, int64_t since, int64_t now,
	    bool (*match)(void *arg, const char *domain), void *arg, char *why);
	int (*first_pending)(struct store *s, int64_t now, const char *domain,
	    struct store_due *out, char *why);
	enum res (*read_begin)(struct store *s, char *why);
	void (*read_end)(struct store *s);
	int (*list)(struct store *s, const struct store_filter *f, int64_t now,
	    int (*fn)(void *, const struct store_msg *), void *arg, char *why);
	enum res (*load)(struct store *s, const char *id, int64_t now,
	    struct store_msg *m, char *why);
	int (*exists)(struct store *s, const char *id, char *why);
	int (*attempts)(struct store *s, const char *id,
	    int (*fn)(void *, const struct store_attempt_row *), void *arg,
	    char *why);
	int (*body)(struct store *s, const char *id,
	    int (*fn)(void *, const void *, size_t), void *arg, char *why);
	enum res (*change)(struct store *s, enum store_op op,
	    struct store_change *v, int n, int64_t now, char *why);
	int64_t (*retry_all)(
	    struct store *s, const char *domain, int64_t now, char *why);
	int (*purge)(struct store *s, int64_t before, char *why);
	enum res (*get_stats)(struct store *s, struct store_stats *st,
	    struct store_domain **doms, int *ndoms, char *why);
};

/* The first member of every backend's connection record. */
struct store {
	const struct store_ops *ops;
};

/* The SQLite backend (sql/sqlite.c). */
extern const struct store_ops sqlite_store_ops;

/* The PostgreSQL backend (sql/pg.c), for postgresql:// and postgres://
 * queue paths (libpq connection URIs). */
extern const struct store_ops pg_store_ops;

/* What store_configure set. */
extern bool store_allow_unsafe;

#endif
