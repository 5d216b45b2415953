/*
 * queue.c - sluice queue: list, show, export and change queued mail
 * while the server runs (through sql/store.h; the SQLite side, with its
 * transactions, is sql/sqlite_admin.c).
 *
 *   sluice queue list [--status S] [--domain D] [--older-than DUR] [--json]
 *   sluice queue show ID [--body]        sluice queue export ID
 *   sluice queue retry ID...|--all|--domain D
 *   sluice queue hold|release|delete|bounce ID...
 *   sluice queue stats [--json]          sluice queue purge [--older-than DUR]
 *
 * Threads: runs alone in the CLI process; nothing is shared.
 *
 * Output is for a terminal: every string that came from the network or
 * the queue (addresses, replies, HELO names, headers) goes through
 * put_safe or struct tty, which show control characters and broken
 * UTF-8 as '?'.  --json output is escaped by json_fput_str.  Exit status:
 * 0 done, 1 failed (unknown ID, database error), 2 usage error.
 */
#include "cli.h"
#include "loadcfg.h"

#include "queueid.h"
#include "store.h"
#include "vocab.h"
#include "config.h"
#include "json.h"
#include "log.h"
#include "utf8.h"
#include "util.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum {
	OPT_CONFIG = 1 << 0,
	OPT_STATUS = 1 << 1,
	OPT_DOMAIN = 1 << 2,
	OPT_OLDER = 1 << 3,
	OPT_JSON = 1 << 4,
	OPT_ALL = 1 << 5,
	OPT_BODY = 1 << 6,
	OPT_HELP = 1 << 7,
};

static const struct option {
	const char *name;
	unsigned bit;
	bool value;
} options[] = {
    {"-c", OPT_CONFIG, true},
    {"--status", OPT_STATUS, true},
    {"--domain", OPT_DOMAIN, true},
    {"--older-than", OPT_OLDER, true},
    {"--json", OPT_JSON, false},
    {"--all", OPT_ALL, false},
    {"--body", OPT_BODY, false},
    {"--help", OPT_HELP, false},
    {"-h", OPT_HELP, false},
};

#define NOPTIONS (sizeof(options) / sizeof(options[0]))

/* The command line, parsed. */
struct args {
	const char *cmd; /* the subcommand, NULL when none */
	const char *config, *status, *domain, *older_than;
	long long older;       /* older_than in seconds (checked) */
	enum rcpt_state state; /* status, parsed (checked) */
	unsigned seen;         /* OPT_* given */
	const char **pos;      /* positional arguments after the subcommand */
	int npos;
	char (*ids)[QUEUE_ID_LEN + 1]; /* pos[] as queue IDs */
};

/* What a subcommand runs with. */
struct ctx {
	const struct args *a;
	const struct config *cfg;
	struct store *store;
	int64_t now;
};

static const char usage_text[] =
    "usage: sluice queue COMMAND [-c FILE] ...\n"
    "\n"
    "  list [--status S] [--domain D] [--older-than DUR] [--json]\n"
    "        messages with a recipient still pending (queued, deferred or\n"
    "        held); --status S: with a recipient in state S (queued,\n"
    "        deferred, held, delivered, bounced); --domain D: with such a\n"
    "        recipient at D; --older-than DUR: received more than DUR ago\n"
    "  show ID [--body]\n"
    "        envelope, recipients, attempts and header section (--body:\n"
    "        the whole stored message)\n"
    "  export ID\n"
    "        the stored message, exactly as it will be sent, to stdout\n"
    "  retry ID... | --all | --domain D\n"
    "        make queued and deferred recipients due now\n"
    "  hold ID...      stop delivering (queued/deferred -> held)\n"
    "  release ID...   deliver held recipients again, now\n"
    "  delete ID...    remove messages from the queue, without a notice\n"
    "  bounce ID...    return pending recipients to the sender (the\n"
    "                  running server sends the failure notice)\n"
    "  stats [--json]  counts by state and by domain, and the rates\n"
    "  nodes [--json]  the nodes sharing a PostgreSQL queue: their last\n"
    "                  heartbeat and the recipients each holds now\n"
    "  migrate postgresql://USER@HOST/DB\n"
    "        copy this SQLite queue into an empty PostgreSQL queue (stop\n"
    "        sluice first); then point queue_path at it\n"
    "  purge [--older-than DUR]\n"
    "        delete finished messages (every recipient delivered or\n"
    "        bounced) older than DUR (default: finished_retention)\n"
    "  help            this text\n"
    "\n"
    "DUR is like 30s, 15m, 2h, 7d.  ID is the queue ID of the logs.\n"
    "The queue is queue_path of the configuration (-c FILE, else\n"
    "$SLUICE_CONFIG, else the default file).\n";

/* ---- terminal-safe output ---- */

/*
 * Length of the UTF-8 sequence at p (avail octets) that a terminal may be
 * given: 0 when it is not well-formed or encodes a C1 control
 * (U+0080..U+009F: C2 80..C2 9F, which some terminals obey), -1 when it
 * may be one but is cut short.
 */
static int
utf8_shown(const unsigned char *p, size_t avail)
{
	int n = utf8_seq_len(p, avail);

	if (n == 2 && p[0] == 0xc2 && p[1] < 0xa0)
		return 0;
	return n;
}

/* Write one line's worth of `s`: controls and broken UTF-8 become '?'. */
static void
put_safe(FILE *f, const char *s)
{
	const unsigned char *p = (const unsigned char *)(s ? s : "");
	size_t left = strlen((const char *)p);

	while (left > 0) {
		int k = 1;

		if (*p < 0x20 || *p == 0x7f)
			putc('?', f);
		else if (*p < 0x80)
			putc(*p, f);
		else if ((k = utf8_shown(p, left)) > 0)
			fwrite(p, 1, (size_t)k, f);
		else {
			putc('?', f);
			k = 1;
		}
		p += k;
		left -= (size_t)k;
	}
}

/* A stored message shown on a terminal: CRLF lines as lines. */
struct tty {
	FILE *f;
	bool headers_only; /* stop at the empty line ending the header */
	bool done;         /* that line was seen */
	bool line_start;
	unsigned char carry[4]; /* a CR or UTF-8 sequence cut by a chunk end */
	size_t ncarry;
};

/* One octet sequence of b[i..n): returns how far it went, 0 to carry. */
static size_t
tty_one(struct tty *t, const unsigned char *b, size_t i, size_t n)
{
	unsigned c = b[i];
	int k;

	if (c == '\r' && i + 1 == n)
		return 0;
	if (c == '\n' || (c == '\r' && b[i + 1] == '\n')) {
		if (t->headers_only && t->line_start) {
			t->done = true;
			return n - i;
		}
		putc('\n', t->f);
		t->line_start = true;
		return c == '\r' ? 2 : 1;
	}
	t->line_start = false;
	if (c == '\t' || (c >= 0x20 && c < 0x7f)) {
		putc((int)c, t->f);
		return 1;
	}
	if (c >= 0x80 && (k = utf8_shown(b + i, n - i)) != 0) {
		if (k < 0)
			return 0;
		fwrite(b + i, 1, (size_t)k, t->f);
		return (size_t)k;
	}
	putc('?', t->f);
	return 1;
}

static int
tty_write(void *arg, const void *data, size_t len)
{
	struct tty *t = arg;
	unsigned char *b = xmalloc(t->ncarry + len);
	size_t n = t->ncarry + len, i = 0, k;

	memcpy(b, t->carry, t->ncarry);
	memcpy(b + t->ncarry, data, len);
	t->ncarry = 0;
	while (i < n && !t->done) {
		k = tty_one(t, b, i, n);
		if (k == 0) {
			/* At most 3 octets: a CR or a cut UTF-8 sequence. */
			t->ncarry = n - i;
			memcpy(t->carry, b + i, t->ncarry);
			break;
		}
		i += k;
	}
	free(b);
	return t->done;
}

static void
tty_finish(struct tty *t)
{
	size_t i;

	for (i = 0; i < t->ncarry && !t->done; i++)
		putc('?', t->f);
	if (!t->line_start)
		putc('\n', t->f);
}

/* ---- formatting ---- */

/* RFC 3339 UTC: "2026-11-22T23:05:01Z". */
static void
fmt_time(char *buf, size_t len, int64_t t)
{
	time_t tt = (time_t)t;
	struct tm tm;

	if (gmtime_r(&tt, &tm) == NULL ||
	    strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
		snprintf(buf, len, "@%lld", (long long)t);
}

/* A duration for people: 45s, 12m, 3h, 3h05m, 2d, 2d04h. */
static void
fmt_age(char *buf, size_t len, int64_t s)
{
	long long big, small;
	const char *bu, *su;

	if (s < 0)
		s = 0;
	if (s < 3600) {
		snprintf(buf, len, s < 60 ? "%llds" : "%lldm",
		    (long long)(s < 60 ? s : s / 60));
		return;
	}
	big = s < 86400 ? s / 3600 : s / 86400;
	small = s < 86400 ? s % 3600 / 60 : s % 86400 / 3600;
	bu = s < 86400 ? "h" : "d";
	su = s < 86400 ? "m" : "h";
	if (small == 0)
		snprintf(buf, len, "%lld%s", big, bu);
	else
		snprintf(buf, len, "%lld%s%02lld%s", big, bu, small, su);
}

static void
fmt_size(char *buf, size_t len, int64_t n)
{
	static const char *const unit[] = {"KiB", "MiB", "GiB", "TiB"};
	double v = (double)n;
	int u = -1;

	if (n < 1024) {
		snprintf(buf, len, "%lld bytes", (long long)n);
		return;
	}
	while (v >= 1024 && u < 3) {
		v /= 1024;
		u++;
	}
	snprintf(buf, len, "%.1f %s", v, unit[u]);
}

static const char *
plural(int64_t n)
{
	return n == 1 ? "" : "s";
}

/* "<addr>" (or "<>"), safe for the terminal. */
static void
put_path(FILE *f, const char *addr)
{
	putc('<', f);
	put_safe(f, addr);
	putc('>', f);
}

static void
json_str_or_null(FILE *f, const char *s)
{
	if (s == NULL)
		fputs("null", f);
	else
		json_fput_str(f, s);
}

static void
json_time_or_null(FILE *f, int64_t t, bool present)
{
	char buf[40];

	if (!present) {
		fputs("null", f);
		return;
	}
	fmt_time(buf, sizeof(buf), t);
	json_fput_str(f, buf);
}

static bool
state_final(enum rcpt_state st)
{
	return st == RCPT_DELIVERED || st == RCPT_BOUNCED;
}

/* ---- list ---- */

struct list_acc {
	const struct ctx *c;
	bool json;
	int64_t messages, size;
	int64_t by_state[RCPT_NSTATES];
};

static void
list_json_rcpt(FILE *f, const struct store_rcpt *r)
{
	fputs("{\"address\":", f);
	json_fput_str(f, r->address);
	fputs(",\"domain\":", f);
	json_str_or_null(f, r->domain);
	fputs(",\"state\":", f);
	json_fput_str(f, rcpt_state_name(r->state));
	fprintf(f, ",\"attempts\":%d,\"next_attempt_at\":", r->attempts);
	json_time_or_null(f, r->next_attempt_at, !state_final(r->state));
	fputs(",\"last_attempt_at\":", f);
	json_time_or_null(f, r->last_attempt_at, r->last_attempt_at > 0);
	fputs(",\"last_reply\":", f);
	json_str_or_null(f, r->last_reply);
	fprintf(f, ",\"in_flight\":%s}", r->in_flight ? "true" : "false");
}

static void
list_json(const struct list_acc *acc, const struct store_msg *m)
{
	FILE *f = stdout;
	char t[40];
	int i;

	fputs(acc->messages == 1 ? "[\n" : ",\n", f);
	fmt_time(t, sizeof(t), m->received_at);
	fputs("{\"id\":", f);
	json_fput_str(f, m->id);
	fputs(",\"received_at\":", f);
	json_fput_str(f, t);
	fprintf(f, ",\"age_seconds\":%lld,\"size\":%lld,\"stored_size\":%lld",
	    (long long)(acc->c->now - m->received_at), (long long)m->size,
	    (long long)m->stored_size);
	fputs(",\"sender\":", f);
	json_fput_str(f, m->sender);
	fputs(",\"client_ip\":", f);
	json_str_or_null(f, m->client_ip);
	fputs(",\"helo\":", f);
	json_str_or_null(f, m->helo);
	fputs(",\"protocol\":", f);
	json_str_or_null(f, m->protocol);
	fputs(",\"auth_user\":", f);
	json_str_or_null(f, m->auth_user);
	fputs(",\"recipients\":[", f);
	for (i = 0; i < m->nrcpts; i++) {
		if (i > 0)
			putc(',', f);
		list_json_rcpt(f, &m->rcpts[i]);
	}
	fputs("]}", f);
}

static void
list_text_rcpt(const struct ctx *c, const struct store_rcpt *r)
{
	FILE *f = stdout;
	char buf[40];

	printf("  %-9s ", rcpt_state_name(r->state));
	put_path(f, r->address);
	printf("  %d attempt%s", r->attempts, plural(r->attempts));
	if (r->state == RCPT_QUEUED || r->state == RCPT_DEFERRED) {
		if (r->in_flight) {
			fputs(", being delivered", f);
		} else if (r->next_attempt_at > c->now) {
			fmt_age(buf, sizeof(buf), r->next_attempt_at - c->now);
			printf(", next in %s", buf);
		}
	}
	putc('\n', f);
	if (r->last_reply != NULL && r->last_reply[0] != '\0') {
		fputs("            (", f);
		put_safe(f, r->last_reply);
		fputs(")\n", f);
	}
}

static void
list_text(const struct list_acc *acc, const struct store_msg *m)
{
	char age[40];
	int i;

	if (acc->messages == 1)
		printf("%-16s  %7s  %10s  %s\n", "ID", "AGE", "SIZE",
		    "SENDER / RECIPIENTS");
	fmt_age(age, sizeof(age), acc->c->now - m->received_at);
	printf("%-16s  %7s  %10lld  ", m->id, age, (long long)m->size);
	put_path(stdout, m->sender);
	putc('\n', stdout);
	for (i = 0; i < m->nrcpts; i++)
		list_text_rcpt(acc->c, &m->rcpts[i]);
}

static int
list_one(void *arg, const struct store_msg *m)
{
	struct list_acc *acc = arg;
	int i;

	acc->messages++;
	acc->size += m->size;
	for (i = 0; i < m->nrcpts; i++)
		acc->by_state[m->rcpts[i].state]++;
	if (acc->json)
		list_json(acc, m);
	else
		list_text(acc, m);
	return 0;
}

static void
list_summary(const struct list_acc *acc, bool filtered)
{
	int64_t total = 0;
	char size[40];
	int s, k = 0;

	if (acc->messages == 0) {
		puts(
		    filtered ? "-- no message matches" : "Mail queue is empty");
		return;
	}
	for (s = 0; s < RCPT_NSTATES; s++)
		total += acc->by_state[s];
	printf("-- %lld message%s, %lld recipient%s (",
	    (long long)acc->messages, plural(acc->messages), (long long)total,
	    plural(total));
	for (s = 0; s < RCPT_NSTATES; s++)
		if (acc->by_state[s] > 0)
			printf("%s%lld %s", k++ ? ", " : "",
			    (long long)acc->by_state[s], rcpt_state_name(s));
	fmt_size(size, sizeof(size), acc->size);
	printf("), %s\n", size);
}

static int
cmd_list(struct ctx *c)
{
	const struct args *a = c->a;
	struct store_filter f = {a->status ? &a->state : NULL, a->domain, 0};
	struct list_acc acc;
	char why[WHY_MAX];
	int n;

	memset(&acc, 0, sizeof(acc));
	acc.c = c;
	acc.json = (a->seen & OPT_JSON) != 0;
	if (a->older_than != NULL) {
		f.received_before = c->now - a->older;
		if (f.received_before < 1)
			f.received_before = 1; /* before 1970: nothing */
	}
	if (store_read_begin(c->store, why) != RES_OK)
		goto fail;
	n = store_list(c->store, &f, c->now, list_one, &acc, why);
	store_read_end(c->store);
	if (n < 0)
		goto fail;
	if (acc.json)
		fputs(n == 0 ? "[]\n" : "\n]\n", stdout);
	else
		list_summary(
		    &acc, a->seen & (OPT_STATUS | OPT_DOMAIN | OPT_OLDER));
	return 0;
fail:
	fflush(stdout);
	fprintf(stderr, "sluice: %s\n", why);
	return 1;
}

/* ---- show ---- */

static void
field(const char *name)
{
	printf("  %-13s ", name);
}

static void
show_envelope(const struct ctx *c, const struct store_msg *m)
{
	char t[40], age[40];

	printf("Message %s\n", m->id);
	field("sender:");
	put_path(stdout, m->sender);
	fmt_time(t, sizeof(t), m->received_at);
	fmt_age(age, sizeof(age), c->now - m->received_at);
	printf("\n");
	field("received:");
	printf("%s (%s ago)\n", t, age);
	field("size:");
	printf("%lld octets as received, %lld stored\n", (long long)m->size,
	    (long long)m->stored_size);
	field("client:");
	put_safe(stdout, m->client_ip);
	if (m->client_port > 0)
		printf(" port %d", m->client_port);
	fputs(", HELO ", stdout);
	put_safe(stdout, m->helo ? m->helo : "(none)");
	putc('\n', stdout);
	field("protocol:");
	put_safe(stdout, m->protocol);
	putc('\n', stdout);
	field("TLS:");
	if (m->tls_version != NULL) {
		put_safe(stdout, m->tls_version);
		putc(' ', stdout);
		put_safe(stdout, m->tls_cipher);
	} else {
		fputs("none", stdout);
	}
	putc('\n', stdout);
	field("auth user:");
	put_safe(stdout, m->auth_user ? m->auth_user : "(none)");
	putc('\n', stdout);
	field("body type:");
	put_safe(stdout, body_type_name(m->body_type));
	fputs(m->smtputf8 ? ", SMTPUTF8\n" : "\n", stdout);
	field("DSN:");
	printf("RET=");
	put_safe(stdout,
	    m->dsn_ret != RET_NONE ? dsn_ret_name(m->dsn_ret) : "(none)");
	printf(" ENVID=");
	put_safe(stdout, m->dsn_envid ? m->dsn_envid : "(none)");
	putc('\n', stdout);
}

static void
show_rcpt(const struct ctx *c, const struct store_rcpt *r)
{
	char t[40], age[40];

	printf("  #%d ", r->rcpt_no);
	put_path(stdout, r->address);
	printf("\n    %-13s %s, %d attempt%s%s\n",
	    "state:", rcpt_state_name(r->state), r->attempts,
	    plural(r->attempts), r->in_flight ? ", being delivered now" : "");
	if (!state_final(r->state)) {
		fmt_time(t, sizeof(t), r->next_attempt_at);
		if (r->next_attempt_at > c->now) {
			fmt_age(age, sizeof(age), r->next_attempt_at - c->now);
			printf("    %-13s %s (in %s)%s\n", "next attempt:", t,
			    age,
			    r->state == RCPT_HELD ? ", once released" : "");
		} else {
			printf("    %-13s %s (due)%s\n", "next attempt:", t,
			    r->state == RCPT_HELD ? ", once released" : "");
		}
	}
	if (r->last_attempt_at > 0) {
		fmt_time(t, sizeof(t), r->last_attempt_at);
		printf("    %-13s %s\n", "last attempt:", t);
	}
	printf("    %-13s ", "last reply:");
	put_safe(stdout, r->last_reply ? r->last_reply : "(none)");
	printf("\n    %-13s ", "notify:");
	if (r->notify != 0) {
		char notify[NOTIFY_TEXT_MAX];

		notify_text(r->notify, notify, sizeof(notify));
		put_safe(stdout, notify);
	} else {
		fputs("(default: FAILURE,DELAY)", stdout);
	}
	if (r->orcpt != NULL) {
		fputs(", ORCPT ", stdout);
		put_safe(stdout, r->orcpt);
	}
	if (r->state == RCPT_BOUNCED)
		fputs((r->notified & NOTIFIED_FAILURE)
		          ? ", failure reported"
		          : ", failure not reported yet",
		    stdout);
	putc('\n', stdout);
}

static int
show_attempt(void *arg, const struct store_attempt_row *a)
{
	char t[40];

	(void)arg;
	fmt_time(t, sizeof(t), a->at);
	printf("  %s  ", t);
	if (a->address != NULL)
		put_path(stdout, a->address);
	else
		printf("#%d (gone)", a->rcpt_no);
	fputs("  ", stdout);
	if (a->mx_host != NULL) {
		put_safe(stdout, a->mx_host);
		if (a->ip != NULL) {
			fputs(" [", stdout);
			put_safe(stdout, a->ip);
			printf("]:%d", a->port);
		}
	} else {
		fputs("(no host)", stdout);
	}
	printf("  %s", a->status);
	if (a->duration_ms >= 0)
		printf("  %lld ms", (long long)a->duration_ms);
	if (a->tls != NULL) {
		fputs("  ", stdout);
		put_safe(stdout, a->tls);
	}
	if (a->security != NULL) {
		fputs("  security=", stdout);
		put_safe(stdout, a->security);
		if (a->security_why != NULL) {
			fputs(" (", stdout);
			put_safe(stdout, a->security_why);
			fputc(')', stdout);
		}
	}
	fputs("\n      ", stdout);
	put_safe(stdout, a->reply ? a->reply : "(no reply)");
	putc('\n', stdout);
	return 0;
}

static int
show_body(const struct ctx *c, const char *id, bool whole, char *why)
{
	struct tty t = {stdout, !whole, false, true, {0}, 0};
	int n;

	printf("\n%s\n", whole ? "Message:" : "Header section:");
	n = store_body(c->store, id, tty_write, &t, why);
	if (n < 0)
		return -1;
	if (n == 0)
		printf("  (the message itself is gone: sluice deletes it once "
		       "every recipient is delivered or bounced)\n");
	else
		tty_finish(&t);
	return 0;
}

static int
cmd_show(struct ctx *c)
{
	const char *id = c->a->ids[0];
	struct store_msg m;
	char why[WHY_MAX];
	enum res r;
	int i, n, rc = 1;

	if (store_read_begin(c->store, why) != RES_OK)
		goto fail;
	r = store_load(c->store, id, c->now, &m, why);
	if (r == RES_PERM) {
		fprintf(stderr, "sluice: no message %s in the queue\n", id);
		goto out;
	}
	if (r != RES_OK)
		goto fail;
	show_envelope(c, &m);
	printf("\nRecipients (%d):\n", m.nrcpts);
	for (i = 0; i < m.nrcpts; i++)
		show_rcpt(c, &m.rcpts[i]);
	store_msg_clear(&m);
	printf("\nAttempts:\n");
	n = store_attempts(c->store, id, show_attempt, NULL, why);
	if (n < 0)
		goto fail;
	if (n == 0)
		printf("  (none)\n");
	if (show_body(c, id, (c->a->seen & OPT_BODY) != 0, why) != 0)
		goto fail;
	rc = 0;
	goto out;
fail:
	fflush(stdout);
	fprintf(stderr, "sluice: %s\n", why);
out:
	store_read_end(c->store);
	return rc;
}

/* ---- export ---- */

static int
export_write(void *arg, const void *data, size_t len)
{
	int *err = arg;

	if (fwrite(data, 1, len, stdout) != len) {
		*err = errno ? errno : EIO;
		return 1;
	}
	return 0;
}

static int
cmd_export(struct ctx *c)
{
	const char *id = c->a->ids[0];
	char why[WHY_MAX];
	int n, err = 0, rc = 1;

	if (store_read_begin(c->store, why) != RES_OK)
		goto fail;
	n = store_exists(c->store, id, why);
	if (n == 0) {
		fprintf(stderr, "sluice: no message %s in the queue\n", id);
		goto out;
	}
	if (n < 0)
		goto fail;
	n = store_body(c->store, id, export_write, &err, why);
	if (n < 0)
		goto fail;
	if (err != 0) {
		fprintf(stderr, "sluice: cannot write the message: %s\n",
		    strerror(err));
	} else if (n == 0) {
		fprintf(stderr,
		    "sluice: message %s: its body is gone (deleted once "
		    "every recipient was delivered or bounced)\n",
		    id);
	} else {
		rc = 0;
	}
	goto out;
fail:
	fprintf(stderr, "sluice: %s\n", why);
out:
	store_read_end(c->store);
	return rc;
}

/* ---- changes ---- */

static void
report_change(enum store_op op, const struct store_change *v)
{
	static const char *const verb[] = {
	    [STORE_RETRY] = "due now",
	    [STORE_HOLD] = "held",
	    [STORE_RELEASE] = "released, due now",
	};

	printf("%s: ", v->id);
	switch (op) {
	case STORE_DELETE:
		printf("deleted, with its %d recipient%s\n", v->rcpts,
		    plural(v->rcpts));
		return;
	case STORE_BOUNCE:
		if (v->changed == 0) {
			printf("nothing to bounce (no recipient pending)\n");
			return;
		}
		printf(
		    "%d recipient%s bounced; ", v->changed, plural(v->changed));
		if (v->sender[0] == '\0')
			printf("no notice (the sender is <>)\n");
		else if (v->notice == 0)
			printf("no notice (NOTIFY without FAILURE)\n");
		else {
			printf("the notice goes to ");
			put_path(stdout, v->sender);
			putc('\n', stdout);
		}
		return;
	default:
		break;
	}
	printf("%d recipient%s %s\n", v->changed, plural(v->changed), verb[op]);
}

static int
run_change(struct ctx *c, enum store_op op)
{
	const struct args *a = c->a;
	struct store_change *v = xcalloc((size_t)a->npos, sizeof(*v));
	char why[WHY_MAX];
	enum res r;
	int i;

	for (i = 0; i < a->npos; i++)
		v[i].id = a->ids[i];
	r = store_change(c->store, op, v, a->npos, c->now, why);
	if (r == RES_PERM) {
		for (i = 0; i < a->npos; i++)
			if (!v[i].found)
				fprintf(stderr,
				    "sluice: no message %s in the queue\n",
				    v[i].id);
		fprintf(stderr, "sluice: nothing was changed\n");
	} else if (r != RES_OK) {
		fprintf(stderr, "sluice: %s\n", why);
	} else {
		for (i = 0; i < a->npos; i++)
			report_change(op, &v[i]);
	}
	free(v);
	return r == RES_OK ? 0 : 1;
}

static int
cmd_retry(struct ctx *c)
{
	char why[WHY_MAX];
	int64_t n;

	if (c->a->npos > 0)
		return run_change(c, STORE_RETRY);
	n = store_retry_all(c->store, c->a->domain, c->now, why);
	if (n < 0) {
		fprintf(stderr, "sluice: %s\n", why);
		return 1;
	}
	printf("%lld recipient%s due now", (long long)n, plural(n));
	if (c->a->domain != NULL) {
		fputs(" at ", stdout);
		put_safe(stdout, c->a->domain);
	}
	putc('\n', stdout);
	return 0;
}

static int
cmd_purge(struct ctx *c)
{
	long long dur = c->cfg->finished_retention;
	char why[WHY_MAX], age[40];
	int n, k;

	if (c->a->older_than != NULL)
		dur = c->a->older;
	/* In batches (each its own transaction), not to hold the write
	 * lock long while the server runs. */
	n = 0;
	do {
		k = store_purge(c->store, c->now - dur, why);
		n += k > 0 ? k : 0;
	} while (k >= STORE_PRUNE_MAX);
	if (k < 0) {
		fprintf(stderr, "sluice: %s\n", why);
		return 1;
	}
	fmt_age(age, sizeof(age), dur);
	printf("%d finished message%s purged (last activity more than %s "
	       "ago)\n",
	    n, plural(n), age);
	return 0;
}

/* ---- stats ---- */

/* "30/1m"; "" for no rate. */
static void
fmt_rate(char *out, size_t len, const struct rate *r)
{
	static const struct {
		int64_t ms;
		char unit;
	} units[] = {
	    {86400000, 'd'}, {3600000, 'h'}, {60000, 'm'}, {1000, 's'}};
	size_t i;

	out[0] = '\0';
	if (r->n == 0)
		return;
	for (i = 0; i < sizeof(units) / sizeof(units[0]); i++)
		if (r->period_ms % units[i].ms == 0) {
			snprintf(out, len, "%d/%lld%c", r->n,
			    (long long)(r->period_ms / units[i].ms),
			    units[i].unit);
			return;
		}
}

/* The configured outbound rates: delivery paces destinations by them. */
static void
rates_text(const struct config *cfg)
{
	char r[48];
	int i;

	fmt_rate(r, sizeof(r), &cfg->destination_rate);
	printf("rates:          %s%s", r[0] ? r : "none",
	    r[0] ? " per destination" : " by default");
	for (i = 0; i < cfg->ndestination_rates; i++) {
		fmt_rate(r, sizeof(r), &cfg->destination_rates[i].rate);
		printf("%s%s %s", i ? ", " : "; ",
		    cfg->destination_rates[i].key, r[0] ? r : "none");
	}
	printf("\n");
}

static void
rates_json(FILE *f, const struct config *cfg)
{
	char r[48];
	int i;

	fmt_rate(r, sizeof(r), &cfg->destination_rate);
	fputs(",\"destination_rate\":", f);
	json_str_or_null(f, r[0] ? r : NULL);
	fputs(",\"destination_rates\":{", f);
	for (i = 0; i < cfg->ndestination_rates; i++) {
		fmt_rate(r, sizeof(r), &cfg->destination_rates[i].rate);
		fputs(i ? "," : "", f);
		json_fput_str(f, cfg->destination_rates[i].key);
		fputc(':', f);
		json_str_or_null(f, r[0] ? r : NULL);
	}
	fputc('}', f);
}

static void
stats_json(const struct ctx *c, const struct store_stats *s,
    const struct store_domain *d, int nd)
{
	const struct store_counts *k = &s->counts;
	FILE *f = stdout;
	int i;

	fprintf(f,
	    "{\"recipients\":{\"queued\":%lld,\"deferred\":%lld,"
	    "\"held\":%lld,\"delivered\":%lld,\"bounced\":%lld},"
	    "\"messages\":%lld,\"pending_messages\":%lld,"
	    "\"pending_size\":%lld,\"oldest_pending_id\":",
	    (long long)k->queued, (long long)k->deferred, (long long)k->held,
	    (long long)k->delivered, (long long)k->bounced,
	    (long long)s->messages, (long long)s->pending_messages,
	    (long long)s->pending_size);
	json_str_or_null(f, s->oldest_id[0] ? s->oldest_id : NULL);
	fputs(",\"oldest_pending_at\":", f);
	json_time_or_null(f, k->oldest_pending, k->oldest_pending > 0);
	if (k->oldest_pending > 0)
		fprintf(f, ",\"oldest_pending_seconds\":%lld",
		    (long long)(c->now - k->oldest_pending));
	else
		fputs(",\"oldest_pending_seconds\":null", f);
	rates_json(f, c->cfg);
	fputs(",\"domains\":[", f);
	for (i = 0; i < nd; i++) {
		fputs(i ? ",\n{\"domain\":" : "\n{\"domain\":", f);
		json_fput_str(f, d[i].domain);
		fprintf(f,
		    ",\"recipients\":%lld,\"queued\":%lld,\"deferred\":%lld,"
		    "\"held\":%lld,\"delivered\":%lld,\"bounced\":%lld,"
		    "\"oldest_pending_seconds\":",
		    (long long)d[i].recipients, (long long)d[i].queued,
		    (long long)d[i].deferred, (long long)d[i].held,
		    (long long)d[i].delivered, (long long)d[i].bounced);
		if (d[i].oldest_pending_seconds >= 0)
			fprintf(
			    f, "%lld}", (long long)d[i].oldest_pending_seconds);
		else
			fputs("null}", f);
	}
	fputs("]}\n", f);
}

static void
stats_text(const struct ctx *c, const struct store_stats *s,
    const struct store_domain *d, int nd)
{
	const struct store_counts *k = &s->counts;
	char size[40], age[40];
	int i, w = 6;

	printf("recipients:     %lld queued, %lld deferred, %lld held, "
	       "%lld delivered, %lld bounced\n",
	    (long long)k->queued, (long long)k->deferred, (long long)k->held,
	    (long long)k->delivered, (long long)k->bounced);
	fmt_size(size, sizeof(size), s->pending_size);
	printf("messages:       %lld, %lld pending (%s)\n",
	    (long long)s->messages, (long long)s->pending_messages, size);
	if (k->oldest_pending > 0) {
		fmt_age(age, sizeof(age), c->now - k->oldest_pending);
		printf(
		    "oldest pending: %s, received %s ago\n", s->oldest_id, age);
	} else {
		printf("oldest pending: (nothing pending)\n");
	}
	rates_text(c->cfg);
	if (nd == 0)
		return;
	for (i = 0; i < nd; i++)
		if ((int)strlen(d[i].domain) > w)
			w = (int)strlen(d[i].domain);
	if (w > 40)
		w = 40;
	printf("\n%-*s  %7s  %8s  %5s  %9s  %7s  %s\n", w, "DOMAIN", "QUEUED",
	    "DEFERRED", "HELD", "DELIVERED", "BOUNCED", "OLDEST PENDING");
	for (i = 0; i < nd; i++) {
		int len = (int)strlen(d[i].domain);

		put_safe(stdout, d[i].domain);
		printf("%*s  %7lld  %8lld  %5lld  %9lld  %7lld  ",
		    len < w ? w - len : 0, "", (long long)d[i].queued,
		    (long long)d[i].deferred, (long long)d[i].held,
		    (long long)d[i].delivered, (long long)d[i].bounced);
		if (d[i].oldest_pending_seconds >= 0) {
			fmt_age(age, sizeof(age), d[i].oldest_pending_seconds);
			printf("%s\n", age);
		} else {
			printf("-\n");
		}
	}
}

static int
cmd_stats(struct ctx *c)
{
	struct store_domain *d = NULL;
	struct store_stats s;
	char why[WHY_MAX];
	enum res r;
	int nd = 0;

	if (store_read_begin(c->store, why) != RES_OK) {
		fprintf(stderr, "sluice: %s\n", why);
		return 1;
	}
	r = store_get_stats(c->store, &s, &d, &nd, why);
	store_read_end(c->store);
	if (r != RES_OK) {
		fprintf(stderr, "sluice: %s\n", why);
		return 1;
	}
	if (c->a->seen & OPT_JSON)
		stats_json(c, &s, d, nd);
	else
		stats_text(c, &s, d, nd);
	store_domains_free(d, nd);
	return 0;
}

/* ---- nodes ---- */

struct nodes_out {
	bool json;
	int n;
};

static int
node_line(void *arg, const struct store_node *nd)
{
	struct nodes_out *o = arg;
	char started[40], beat[40], age[32];

	fmt_time(started, sizeof(started), nd->started_at);
	fmt_time(beat, sizeof(beat), nd->heartbeat_at);
	fmt_age(age, sizeof(age), nd->heartbeat_age);
	if (o->json) {
		fputs(o->n++ ? "," : "", stdout);
		fputs("{\"name\":", stdout);
		json_fput_str(stdout, nd->name);
		fputs(",\"version\":", stdout);
		json_fput_str(stdout, nd->version);
		printf(",\"started_at\":\"%s\",\"heartbeat_at\":\"%s\","
		       "\"heartbeat_age_seconds\":%lld,\"leases\":%lld}",
		    started, beat, (long long)nd->heartbeat_age,
		    (long long)nd->leases);
		return 0;
	}
	if (o->n++ == 0)
		printf("%-24s  %-20s  %-20s  %8s  %6s  %s\n", "NODE", "STARTED",
		    "HEARTBEAT", "AGO", "LEASES", "VERSION");
	put_safe(stdout, nd->name);
	printf("%*s  %-20s  %-20s  %8s  %6lld  ",
	    (int)strlen(nd->name) < 24 ? 24 - (int)strlen(nd->name) : 0, "",
	    started, beat, age, (long long)nd->leases);
	put_safe(stdout, nd->version);
	putchar('\n');
	return 0;
}

static int
cmd_nodes(struct ctx *c)
{
	struct nodes_out o = {(c->a->seen & OPT_JSON) != 0, 0};
	char why[WHY_MAX];

	if (o.json)
		fputs("[", stdout);
	if (store_nodes(c->store, node_line, &o, why) < 0) {
		if (o.json)
			fputs("]\n", stdout);
		fprintf(stderr, "sluice: %s\n", why);
		return 1;
	}
	if (o.json)
		fputs("]\n", stdout);
	else if (o.n == 0)
		printf("no node has started on this queue yet\n");
	return 0;
}

/* ---- migrate ---- */

static int
cmd_migrate(struct ctx *c)
{
	const char *to = c->a->pos[0];
	int64_t counts[16];
	const char *names[16];
	char why[WHY_MAX], shown_to[512];
	int n, i;

	/* The source is read in a transaction of its own: let this
	 * command's read connection go first. */
	store_close(c->store);
	c->store = NULL;
	n = store_migrate(c->cfg->queue_path, to, counts, names, 16, why);
	if (n < 0) {
		fprintf(stderr, "sluice: nothing was migrated: %s\n", why);
		return 1;
	}
	store_path_shown(to, shown_to, sizeof(shown_to));
	printf("migrated %s to %s:\n", c->cfg->queue_path, shown_to);
	for (i = 0; i < n; i++)
		printf("  %lld %s\n", (long long)counts[i], names[i]);
	printf("now set queue_path = %s (with its password, if any) and "
	       "start sluice\n",
	    shown_to);
	return 0;
}

/* ---- the command line ---- */

enum {
	ARGS_IDS = -1,   /* one or more queue IDs */
	ARGS_TARGET = -2 /* one argument that is not a queue ID */
};

static const struct subcmd {
	const char *name;
	unsigned allowed; /* OPT_* besides -c */
	int npos;         /* positional arguments: 0, 1 or ARGS_IDS */
	bool write;
	int (*run)(struct ctx *); /* NULL: run_change(op) */
	enum store_op op;
} subcmds[] = {
    {"list", OPT_STATUS | OPT_DOMAIN | OPT_OLDER | OPT_JSON, 0, false, cmd_list,
        0},
    {"show", OPT_BODY, 1, false, cmd_show, 0},
    {"export", 0, 1, false, cmd_export, 0},
    {"retry", OPT_ALL | OPT_DOMAIN, ARGS_IDS, true, cmd_retry, 0},
    {"hold", 0, ARGS_IDS, true, NULL, STORE_HOLD},
    {"release", 0, ARGS_IDS, true, NULL, STORE_RELEASE},
    {"delete", 0, ARGS_IDS, true, NULL, STORE_DELETE},
    {"bounce", 0, ARGS_IDS, true, NULL, STORE_BOUNCE},
    {"stats", OPT_JSON, 0, false, cmd_stats, 0},
    {"nodes", OPT_JSON, 0, false, cmd_nodes, 0},
    {"migrate", 0, ARGS_TARGET, false, cmd_migrate, 0},
    {"purge", OPT_OLDER, 0, true, cmd_purge, 0},
};

/* An argument from the command line, made safe to show (one at a time). */
static const char *
shown(const char *arg)
{
	static char safe[80];

	log_sanitize(safe, sizeof(safe), arg);
	return safe;
}

/* A usage error: exit status 2. */
static int usage_error(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));

static int
usage_error(const char *fmt, ...)
{
	va_list ap;

	fputs("sluice queue: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputs("\n(sluice queue help shows the commands)\n", stderr);
	return 2;
}

static const char **
opt_slot(struct args *a, unsigned bit)
{
	switch (bit) {
	case OPT_CONFIG:
		return &a->config;
	case OPT_STATUS:
		return &a->status;
	case OPT_DOMAIN:
		return &a->domain;
	case OPT_OLDER:
		return &a->older_than;
	default:
		return NULL;
	}
}

/* Parse one option at argv[*i]; 0, or the exit status of an error. */
static int
parse_option(struct args *a, int argc, char **argv, int *i)
{
	const char *arg = argv[*i], *eq = strchr(arg, '=');
	size_t nlen = eq ? (size_t)(eq - arg) : strlen(arg);
	const struct option *o = NULL;
	size_t k;

	for (k = 0; k < NOPTIONS; k++)
		if (strlen(options[k].name) == nlen &&
		    strncmp(options[k].name, arg, nlen) == 0)
			o = &options[k];
	if (o == NULL || (eq != NULL && !o->value))
		return usage_error("unknown option %s", shown(arg));
	if (a->seen & o->bit)
		return usage_error("%s given twice", o->name);
	a->seen |= o->bit;
	if (!o->value)
		return 0;
	if (eq == NULL && *i + 1 >= argc)
		return usage_error("%s needs a value", o->name);
	*opt_slot(a, o->bit) = eq ? eq + 1 : argv[++*i];
	return 0;
}

static int
parse_args(struct args *a, int argc, char **argv)
{
	bool options_end = false;
	int i, rc;

	memset(a, 0, sizeof(*a));
	a->pos = xcalloc((size_t)argc + 1, sizeof(*a->pos));
	for (i = 1; i < argc; i++) {
		if (!options_end && strcmp(argv[i], "--") == 0) {
			options_end = true;
		} else if (!options_end && argv[i][0] == '-' &&
		           argv[i][1] != '\0') {
			if ((rc = parse_option(a, argc, argv, &i)) != 0)
				return rc;
		} else if (a->cmd == NULL) {
			a->cmd = argv[i];
		} else {
			a->pos[a->npos++] = argv[i];
		}
	}
	return 0;
}

/* Queue IDs are case-insensitive base 32: accept lower case. */
static int
check_ids(struct args *a)
{
	int i, k;

	a->ids = xcalloc((size_t)a->npos + 1, sizeof(*a->ids));
	for (i = 0; i < a->npos; i++) {
		const char *s = a->pos[i];

		for (k = 0; k < QUEUE_ID_LEN && s[k] != '\0'; k++)
			a->ids[i][k] = (s[k] >= 'a' && s[k] <= 'z')
			                   ? (char)(s[k] - 'a' + 'A')
			                   : s[k];
		a->ids[i][k] = '\0';
		if (s[k] != '\0' || !queue_id_valid(a->ids[i]))
			return usage_error("\"%s\" is not a queue ID (16 "
			                   "characters 0-9 and A-Z)",
			    shown(s));
	}
	return 0;
}

/* Whether the arguments fit the subcommand; 0, or the exit status. */
static int
check_args(const struct subcmd *sc, struct args *a)
{
	unsigned extra = a->seen & ~(sc->allowed | OPT_CONFIG);

	if (extra != 0) {
		size_t k;

		for (k = 0; k + 1 < NOPTIONS; k++)
			if (extra & options[k].bit)
				break;
		return usage_error("%s does not apply here", options[k].name);
	}
	if (sc->npos >= 0 && a->npos > sc->npos)
		return usage_error(
		    "unexpected argument %s", shown(a->pos[sc->npos]));
	if (sc->npos == 1 && a->npos == 0)
		return usage_error("%s needs a queue ID", sc->name);
	if (sc->npos == ARGS_TARGET) {
		if (a->npos != 1)
			return usage_error("%s needs one PostgreSQL queue "
			                   "(postgresql://...)",
			    sc->name);
		if (!store_path_is_database(a->pos[0]))
			return usage_error("%s goes to a PostgreSQL queue "
			                   "(postgresql://...), not \"%s\"",
			    sc->name, shown(a->pos[0]));
		return 0;
	}
	if (strcmp(sc->name, "retry") == 0) {
		int modes = (a->npos > 0) + !!(a->seen & OPT_ALL) +
		            !!(a->seen & OPT_DOMAIN);

		if (modes != 1)
			return usage_error("%s takes IDs, --all or --domain "
			                   "D (one of them)",
			    sc->name);
	} else if (sc->npos == ARGS_IDS && a->npos == 0) {
		return usage_error("%s needs at least one queue ID", sc->name);
	}
	if (a->status != NULL && !rcpt_state_parse(a->status, &a->state))
		return usage_error("unknown state \"%s\" (queued, deferred, "
		                   "held, delivered or bounced)",
		    shown(a->status));
	if (a->older_than != NULL &&
	    (a->older = config_parse_duration(a->older_than)) < 0)
		return usage_error("bad duration \"%s\" (like 30s, 15m, 2h, "
		                   "7d)",
		    shown(a->older_than));
	if (a->domain != NULL &&
	    (a->domain[0] == '\0' || strlen(a->domain) > 255))
		return usage_error("bad domain \"%s\"", shown(a->domain));
	return check_ids(a);
}

static int
run(const struct subcmd *sc, const struct args *a)
{
	struct ctx c = {a, NULL, NULL, (int64_t)time(NULL)};
	struct config *cfg;
	const char *source;
	char why[WHY_MAX];
	int rc;

	cfg = load_config(a->config, &source);
	if (cfg == NULL)
		return 1;
	c.cfg = cfg;
	c.store = store_open_admin(cfg->queue_path, sc->write, why);
	if (c.store == NULL) {
		fprintf(stderr, "sluice: %s\n", why);
		config_free(cfg);
		return 1;
	}
	rc = sc->run != NULL ? sc->run(&c) : run_change(&c, sc->op);
	store_close(c.store);
	config_free(cfg);
	if (fflush(stdout) != 0 || ferror(stdout)) {
		fprintf(stderr, "sluice: cannot write the output: %s\n",
		    strerror(errno));
		rc = 1;
	}
	return rc;
}

int
queue_cmd(int argc, char **argv)
{
	const struct subcmd *sc = NULL;
	struct args a;
	size_t k;
	int rc;

	rc = parse_args(&a, argc, argv);
	if (rc != 0)
		goto out;
	if (a.cmd == NULL && (a.seen & OPT_HELP) == 0) {
		fputs(usage_text, stderr);
		rc = 2;
		goto out;
	}
	if (a.cmd == NULL || strcmp(a.cmd, "help") == 0 ||
	    (a.seen & OPT_HELP)) {
		fputs(usage_text, stdout);
		goto out;
	}
	for (k = 0; k < sizeof(subcmds) / sizeof(subcmds[0]); k++)
		if (strcmp(a.cmd, subcmds[k].name) == 0)
			sc = &subcmds[k];
	if (sc == NULL) {
		rc = usage_error("unknown command \"%s\"", shown(a.cmd));
		goto out;
	}
	if ((rc = check_args(sc, &a)) != 0)
		goto out;
	rc = run(sc, &a);
out:
	free(a.pos);
	free(a.ids);
	return rc;
}
