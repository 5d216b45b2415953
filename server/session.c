/*
 * session.c - the ESMTP server state machine (RFC 5321 and its extensions).
 *
 * Threads: each session runs to its end on one worker thread; the only
 * shared things it touches are the read-only config, the queue (through
 * queue.h) and the server's atomic counters.
 *
 * Each verb has a check step (order and syntax: may it run now?) and a do
 * step, as in OpenSMTPD.  Session life cycle:
 *
 *   connect ─> 220 ─> [INIT] ─EHLO/HELO─> [READY] ─MAIL─> [MAIL]
 *                                            ^              │ RCPT
 *                                            │              v
 *                       250 queued / RSET ───┴──────────  [RCPT] ─DATA/BDAT─>
 *
 * Invariants:
 *  1. "250 ... queued as" is sent only after queue_msg_commit returned
 *     RES_OK, that is after the message is durable.
 *  2. The end of DATA is only <CRLF>.<CRLF> (data.c); a message with bare
 *     CR or LF is refused unless bare_newline = normalize.
 *  3. Memory is bounded: command lines by SMTP_MAIL_LINE_MAX, recipients by
 *     max_recipients, message data by QUEUE_CHUNK-sized buffers.
 *  4. A transaction whose data does not end cleanly (timeout, disconnect,
 *     shutdown) is dropped with its partial data: queue_msg_free.
 */
#include "server.h"
#include "auth.h"
#include "cidr.h"
#include "conn.h"
#include "data.h"
#include "log.h"
#include "metrics.h"
#include "parse.h"
#include "tls.h"
#include "util.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

enum sess_state {
	SS_INIT,  /* before HELO/EHLO */
	SS_READY, /* after HELO/EHLO, no transaction */
	SS_MAIL,  /* after MAIL */
	SS_RCPT,  /* at least one recipient accepted */
};

struct rcpt {
	char *address;
	char *domain;
	char *notify;
	char *orcpt;
};

/* A message being received (by DATA, or by BDAT across chunks). */
struct intake {
	struct queue_msg *msg;
	struct data_dec dec;
	struct hdr_scan hdr;
	long long size;          /* decoded octets, without our header */
	size_t hdrlen;           /* our Received header */
	char store_why[WHY_MAX]; /* why storing failed, or "" */
};

struct session {
	struct server *srv;
	const struct config *cfg; /* the version this session started with */
	struct held *cfg_ref;
	struct conn *conn;
	char ip[64];
	char iplit[80]; /* "[192.0.2.1]" or "[IPv6:2001:db8::1]" */
	int port;
	bool trusted; /* client is in relay_networks */
	enum listen_kind kind;
	char tls_version[32]; /* "" without TLS */
	char tls_cipher[64];
	int tls_bits;
	char auth_user[AUTH_FIELD_MAX]; /* "" until AUTH succeeds */
	int auth_failures;
	enum sess_state state;
	bool esmtp;
	bool quit;
	char helo[256];
	int errors;
	int ncommands, nmails, nrcpts_total;
	/* The transaction (reset by RSET, HELO/EHLO, and after DATA). */
	struct mail_args mail;
	char sender[SMTP_PATH_MAX * 4 + 1];
	struct rcpt *rcpts;
	int nrcpts;
	int rcpt_attempts;
	/* BDAT (RFC 3030): the message being received in chunks. */
	struct intake bdat;
	bool bdat_failed; /* a chunk failed: refuse until RSET/LAST */
	char line[SMTP_MAIL_LINE_MAX + 1];
};

#define AUTH_MAX_FAILURES 3

/* Send a reply; 4xx/5xx replies count as errors and are logged. */
static void reply(struct session *s, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
reply(struct session *s, int code, const char *fmt, ...)
{
	char text[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	conn_printf(s->conn, "%d %s\r\n", code, text);
	if (code >= 400) {
		char cmd[64];

		s->errors++;
		log_sanitize(cmd, sizeof(cmd), s->line);
		log_info("smtpd", "reject: client=%s command=\"%s\": %d %s",
		    s->iplit, cmd, code, text);
	}
}

static void intake_end(struct intake *in);

static void
rcpts_free(struct session *s)
{
	int i;

	for (i = 0; i < s->nrcpts; i++) {
		free(s->rcpts[i].address);
		free(s->rcpts[i].domain);
		free(s->rcpts[i].notify);
		free(s->rcpts[i].orcpt);
	}
	free(s->rcpts);
	s->rcpts = NULL;
	s->nrcpts = 0;
}

static void
reset_transaction(struct session *s)
{
	rcpts_free(s);
	s->rcpt_attempts = 0;
	memset(&s->mail, 0, sizeof(s->mail));
	s->sender[0] = '\0';
	intake_end(&s->bdat);
	s->bdat_failed = false;
	if (s->state > SS_READY)
		s->state = SS_READY;
}

/* Format "local@domain" (or "" / "Postmaster") into `buf`. */
static void
path_format(const struct smtp_path *p, char *buf, size_t len)
{
	if (p->null_path)
		buf[0] = '\0';
	else if (p->domain[0] == '\0')
		snprintf(buf, len, "%s", p->local);
	else
		snprintf(buf, len, "%s@%s", p->local, p->domain);
}

static bool
auth_configured(struct session *s)
{
	struct held *ref;
	bool on = holder_get(s->srv->auth, &ref) != NULL;

	holder_put(ref);
	return on;
}

static bool
starttls_available(struct session *s)
{
	struct held *ref;
	bool on;

	if (s->tls_version[0] != '\0' || s->kind == LISTEN_SMTPS)
		return false;
	on = holder_get(s->srv->tls, &ref) != NULL;
	holder_put(ref);
	return on;
}

static bool
authenticated(const struct session *s)
{
	return s->auth_user[0] != '\0';
}

/* -------- HELO / EHLO -------- */

static void
do_helo(struct session *s, const char *args, bool esmtp)
{
	char why[WHY_MAX];
	const struct config *cfg = s->cfg;

	if (parse_helo(args, why) != 0) {
		reply(s, 501, "%s", why);
		return;
	}
	reset_transaction(s);
	snprintf(s->helo, sizeof(s->helo), "%s", args);
	s->esmtp = esmtp;
	s->state = SS_READY;
	if (!esmtp) {
		reply(s, 250, "%s", cfg->hostname);
		return;
	}
	conn_printf(s->conn, "250-%s\r\n", cfg->hostname);
	conn_printf(s->conn, "250-PIPELINING\r\n");
	conn_printf(s->conn, "250-SIZE %lld\r\n", cfg->max_message_size);
	conn_printf(s->conn, "250-8BITMIME\r\n");
	conn_printf(s->conn, "250-BINARYMIME\r\n");
	conn_printf(s->conn, "250-CHUNKING\r\n");
	conn_printf(s->conn, "250-ENHANCEDSTATUSCODES\r\n");
	conn_printf(s->conn, "250-DSN\r\n");
	if (starttls_available(s))
		conn_printf(s->conn, "250-STARTTLS\r\n");
	/* RFC 4954 section 4: no plaintext passwords on the wire. */
	if (s->tls_version[0] != '\0' && auth_configured(s))
		conn_printf(s->conn, "250-AUTH PLAIN LOGIN\r\n");
	conn_printf(s->conn, "250 SMTPUTF8\r\n");
}

/* -------- MAIL -------- */

static bool
check_mail(struct session *s)
{
	if (s->state == SS_INIT) {
		reply(s, 503, "5.5.1 Error: send HELO/EHLO first");
		return false;
	}
	if (s->state != SS_READY) {
		reply(s, 503, "5.5.1 Error: nested MAIL command");
		return false;
	}
	/* Submission ports take mail from authenticated users only. */
	if (s->kind != LISTEN_SMTP && !authenticated(s) &&
	    !(s->trusted && s->cfg->submission_trust_networks)) {
		reply(s, 530, "5.7.0 Authentication required");
		return false;
	}
	return true;
}

static void
do_mail(struct session *s, const char *args)
{
	char why[WHY_MAX];
	int code;

	if (!check_mail(s))
		return;
	code = parse_mail(args, s->esmtp, &s->mail, why);
	if (code != 0) {
		reply(s, code, "%s", why);
		return;
	}
	if (s->mail.size > s->cfg->max_message_size) {
		reply(s, 552,
		    "5.3.4 Message size exceeds fixed maximum "
		    "message size (%lld)",
		    s->cfg->max_message_size);
		return;
	}
	path_format(&s->mail.from, s->sender, sizeof(s->sender));
	if (authenticated(s) && s->cfg->sender_login_match) {
		struct held *ref;
		struct auth_db *db = holder_get(s->srv->auth, &ref);
		bool ok = db != NULL &&
		          auth_db_sender_allowed(db, s->auth_user, s->sender);

		holder_put(ref);
		if (!ok) {
			reply(s, 553,
			    "5.7.1 <%s>: Sender address rejected: "
			    "not owned by user %s",
			    s->sender, s->auth_user);
			return;
		}
	}
	s->state = SS_MAIL;
	reply(s, 250, "2.1.0 Ok");
}

/* -------- RCPT -------- */

static bool
check_rcpt(struct session *s)
{
	if (s->state == SS_INIT) {
		reply(s, 503, "5.5.1 Error: send HELO/EHLO first");
		return false;
	}
	if (s->state < SS_MAIL) {
		reply(s, 503, "5.5.1 Error: need MAIL command");
		return false;
	}
	if (s->bdat.msg != NULL || s->bdat_failed) {
		reply(s, 503, "5.5.1 Error: RCPT after BDAT");
		return false;
	}
	return true;
}

/*
 * Relay control: anyone may send to relay_domains (we are their MX);
 * trusted clients may send anywhere.  Sender-specified routing and address
 * literals are never relayed for untrusted clients.
 */
static bool
relay_allowed(struct session *s, const struct smtp_path *to)
{
	if (s->trusted || authenticated(s))
		return true;
	if (to->domain[0] == '\0')
		return true; /* <Postmaster>: RFC 5321 section 4.5.1 */
	if (to->literal || path_is_routed(to))
		return false;
	return config_domain_listed(
	    s->cfg->relay_domains, s->cfg->nrelay_domains, to->domain);
}

static void
do_rcpt(struct session *s, const char *args)
{
	char why[WHY_MAX], addr[SMTP_PATH_MAX * 4 + 1];
	struct rcpt_args ra;
	struct rcpt *r;
	int code;

	if (!check_rcpt(s))
		return;
	s->rcpt_attempts++;
	code = parse_rcpt(args, s->esmtp, s->mail.smtputf8, &ra, why);
	if (code != 0) {
		metrics_inc(M_RCPT_REJECTED);
		reply(s, code, "%s", why);
		return;
	}
	if (s->nrcpts >= s->cfg->max_recipients) {
		metrics_inc(M_RCPT_REJECTED);
		reply(s, 452, "4.5.3 Error: too many recipients");
		return;
	}
	if (!relay_allowed(s, &ra.to)) {
		metrics_inc(M_RCPT_REJECTED);
		reply(s, 554, "5.7.1 <%s@%s>: Relay access denied", ra.to.local,
		    ra.to.domain);
		return;
	}
	path_format(&ra.to, addr, sizeof(addr));
	s->rcpts =
	    xrealloc(s->rcpts, sizeof(*s->rcpts) * (size_t)(s->nrcpts + 1));
	r = &s->rcpts[s->nrcpts++];
	r->address = xstrdup(addr);
	r->domain = xstrdup(ra.to.domain);
	for (char *c = r->domain; *c != '\0'; c++)
		*c = ascii_lower(*c);
	r->notify = NULL;
	if (ra.notify != 0) {
		char n[64] = "";

		if (ra.notify & NOTIFY_NEVER)
			strcat(n, ",NEVER");
		if (ra.notify & NOTIFY_SUCCESS)
			strcat(n, ",SUCCESS");
		if (ra.notify & NOTIFY_FAILURE)
			strcat(n, ",FAILURE");
		if (ra.notify & NOTIFY_DELAY)
			strcat(n, ",DELAY");
		r->notify = xstrdup(n + 1);
	}
	r->orcpt = ra.orcpt[0] != '\0' ? xstrdup(ra.orcpt) : NULL;
	s->state = SS_RCPT;
	s->nrcpts_total++;
	reply(s, 250, "2.1.5 Ok");
}

/* -------- message intake shared by DATA and BDAT -------- */

static const char *
body_name(enum body_type b)
{
	switch (b) {
	case BODY_8BITMIME:
		return "8BITMIME";
	case BODY_BINARYMIME:
		return "BINARYMIME";
	default:
		return "7BIT";
	}
}

static const char *
protocol_name(const struct session *s)
{
	/* RFC 3848 and RFC 6531 section 3.7.3. */
	static const char *const names[2][2][2] = {
	    {{"ESMTP", "ESMTPA"}, {"ESMTPS", "ESMTPSA"}},
	    {{"UTF8SMTP", "UTF8SMTPA"}, {"UTF8SMTPS", "UTF8SMTPSA"}},
	};

	if (!s->esmtp)
		return "SMTP";
	return names[s->mail.smtputf8 ? 1 : 0][s->tls_version[0] ? 1 : 0]
	            [authenticated(s) ? 1 : 0];
}

/* Start a message: a new queue entry with our Received header in front. */
static void
intake_begin(struct session *s, struct intake *in, bool chunked)
{
	char tlsc[160], authc[AUTH_FIELD_MAX + 32];
	char hdr[2048], date[64], helo[sizeof(s->helo) + 4],
	    forc[SMTP_PATH_MAX * 4 + 16];
	char why[WHY_MAX];
	int n;

	memset(in, 0, sizeof(*in));
	in->msg = queue_msg_new(s->srv->queue);
	if (chunked)
		data_dec_init_chunked(&in->dec, s->cfg->bare_newline_normalize);
	else
		data_dec_init(&in->dec, s->cfg->bare_newline_normalize);
	hdr_scan_init(&in->hdr);
	rfc5322_date(date, sizeof(date), (int64_t)time(NULL));
	log_sanitize(helo, sizeof(helo), s->helo);
	forc[0] = '\0';
	if (s->nrcpts == 1)
		snprintf(
		    forc, sizeof(forc), "\r\n\tfor <%s>", s->rcpts[0].address);
	tlsc[0] = authc[0] = '\0';
	if (s->tls_version[0] != '\0')
		snprintf(tlsc, sizeof(tlsc),
		    "\r\n\t(using %s with cipher %s (%d bits))", s->tls_version,
		    s->tls_cipher, s->tls_bits);
	if (authenticated(s)) {
		char user[AUTH_FIELD_MAX];

		log_sanitize(user, sizeof(user), s->auth_user);
		snprintf(authc, sizeof(authc), "\r\n\t(authenticated user %s)",
		    user);
	}
	/* RFC 5321 section 4.4, RFC 3848 (with), RFC 6531 (UTF8SMTP). */
	n = snprintf(hdr, sizeof(hdr),
	    "Received: from %s (%s)%s%s\r\n\tby %s (sluice) with %s id %s%s;"
	    "\r\n\t%s\r\n",
	    helo, s->iplit, tlsc, authc, s->cfg->hostname, protocol_name(s),
	    queue_msg_id(in->msg), forc, date);
	if (n < 0 || (size_t)n >= sizeof(hdr))
		n = (int)strlen(hdr);
	in->hdrlen = (size_t)n;
	(void)queue_msg_write(in->msg, hdr, (size_t)n, why);
}

static void
intake_end(struct intake *in)
{
	queue_msg_free(in->msg);
	in->msg = NULL;
}

/*
 * The reply for a message that was received completely: the first problem
 * found, or the queue's verdict.  Logs the accepted message.
 */
static void
message_end(struct session *s, struct intake *in, unsigned flags)
{
	struct envelope env;
	struct envelope_rcpt *er;
	char why[WHY_MAX], from[128];
	int i;

	if (in->size > s->cfg->max_message_size) {
		reply(s, 552,
		    "5.3.4 Error: message too big (limit %lld "
		    "octets)",
		    s->cfg->max_message_size);
		return;
	}
	if (in->hdr.received > s->cfg->max_received_headers) {
		reply(s, 554,
		    "5.4.6 Error: too many Received headers (%d): "
		    "mail loop",
		    in->hdr.received);
		return;
	}
	if ((flags & (DD_BARE_LF | DD_BARE_CR)) &&
	    !s->cfg->bare_newline_normalize) {
		reply(s, 550,
		    "5.5.2 Error: bare %s received; lines must end "
		    "with CRLF (RFC 5321 section 2.3.8)",
		    (flags & DD_BARE_LF) ? "<LF>" : "<CR>");
		return;
	}
	if (flags & DD_NUL) {
		reply(s, 554, "5.6.0 Error: message contains NUL octets");
		return;
	}
	if (flags & DD_LONG_LINE) {
		reply(s, 554,
		    "5.6.0 Error: message has a line longer than "
		    "998 octets (RFC 5322 section 2.1.1)");
		return;
	}
	if (in->store_why[0] != '\0') {
		reply(s, strncmp(in->store_why, "4.3.1", 5) == 0 ? 452 : 451,
		    "%s", in->store_why);
		return;
	}
	memset(&env, 0, sizeof(env));
	snprintf(env.id, sizeof(env.id), "%s", queue_msg_id(in->msg));
	env.received_at = (int64_t)time(NULL);
	env.sender = s->sender;
	er = xcalloc((size_t)s->nrcpts, sizeof(*er));
	for (i = 0; i < s->nrcpts; i++) {
		er[i].address = s->rcpts[i].address;
		er[i].domain = s->rcpts[i].domain;
		er[i].notify = s->rcpts[i].notify;
		er[i].orcpt = s->rcpts[i].orcpt;
	}
	env.rcpts = er;
	env.nrcpts = s->nrcpts;
	env.size = in->size;
	env.stored_size = in->size + (int64_t)in->hdrlen;
	env.body_type = body_name(s->mail.body);
	env.smtputf8 = s->mail.smtputf8;
	env.dsn_ret = s->mail.ret == RET_FULL   ? "FULL"
	              : s->mail.ret == RET_HDRS ? "HDRS"
	                                        : NULL;
	env.dsn_envid = s->mail.envid[0] != '\0' ? s->mail.envid : NULL;
	env.client_ip = s->ip;
	env.client_port = s->port;
	env.helo = s->helo;
	env.protocol = protocol_name(s);
	env.tls_version = s->tls_version[0] ? s->tls_version : NULL;
	env.tls_cipher = s->tls_cipher[0] ? s->tls_cipher : NULL;
	env.auth_user = authenticated(s) ? s->auth_user : NULL;
	if (queue_msg_commit(in->msg, &env, why) != RES_OK) {
		free(er);
		reply(s, strncmp(why, "4.3.1", 5) == 0 ? 452 : 451, "%s", why);
		return;
	}
	free(er);
	s->nmails++;
	atomic_fetch_add(&s->srv->messages_accepted, 1);
	metrics_inc(M_MESSAGES_ACCEPTED);
	metrics_add(M_BYTES_ACCEPTED, in->size);
	log_sanitize(from, sizeof(from), s->sender);
	log_info("smtpd",
	    "id=%s from=<%s> size=%lld nrcpt=%d client=%s "
	    "proto=%s",
	    env.id, from, in->size, s->nrcpts, s->iplit, env.protocol);
	reply(s, 250, "2.0.0 Ok: queued as %s", env.id);
}

/*
 * Read-time budget for message data (Postfix's min_data_rate): each wait
 * may last up to data_timeout, but time spent waiting is charged and every
 * octet received earns 1/min_data_rate seconds back, so a client that
 * trickles data runs out of budget and is disconnected.
 */
struct budget {
	int64_t left_ms;
	int64_t cap_ms;
	int rate;
};

static void
budget_init(struct budget *b, const struct config *cfg)
{
	b->cap_ms = (int64_t)cfg->data_timeout * 1000;
	b->left_ms = b->cap_ms;
	b->rate = cfg->min_data_rate;
}

/*
 * Look at buffered data within the budget (see conn_peek); the caller
 * consumes what it uses with budget_consume, which charges the budget.
 */
static enum conn_status
budget_peek(struct session *s, struct budget *b, const char **p, size_t *n)
{
	int64_t t0 = now_ms();
	enum conn_status st;

	st = conn_peek(s->conn, p, n, t0 + b->left_ms);
	if (st != CONN_OK)
		return st;
	b->left_ms -= now_ms() - t0;
	return CONN_OK;
}

static enum conn_status
budget_consume(struct session *s, struct budget *b, size_t n)
{
	conn_consume(s->conn, n);
	if (b->rate > 0) {
		b->left_ms += (int64_t)n * 1000 / b->rate;
		if (b->left_ms > b->cap_ms)
			b->left_ms = b->cap_ms;
		if (b->left_ms <= 0)
			return CONN_TIMEOUT;
	} else {
		b->left_ms = b->cap_ms;
	}
	return CONN_OK;
}

/* End the session because reading data failed. */
static void
data_read_failed(struct session *s, enum conn_status st)
{
	if (st == CONN_TIMEOUT) {
		metrics_inc(M_REJECT_TIMEOUT);
		reply(s, 421, "4.4.2 %s Error: timeout exceeded",
		    s->cfg->hostname);
	} else if (st == CONN_STOPPED) {
		metrics_inc(M_REJECT_SHUTDOWN);
		reply(
		    s, 421, "4.3.2 %s Service shutting down", s->cfg->hostname);
	} else
		log_info(
		    "smtpd", "client=%s lost connection during data", s->iplit);
	s->quit = true;
}

/*
 * Take decoded message octets: count them, scan the header, and store them
 * while the message is within the size limit and storing has not failed.
 */
static void
message_take(struct session *s, struct intake *in, const char *p, size_t n)
{
	char why[WHY_MAX];

	in->size += (long long)n;
	hdr_scan_feed(&in->hdr, p, n);
	if (in->size <= s->cfg->max_message_size && in->store_why[0] == '\0' &&
	    queue_msg_write(in->msg, p, n, why) != RES_OK)
		snprintf(in->store_why, sizeof(in->store_why), "%s", why);
}

/* -------- DATA -------- */

static bool
check_data(struct session *s, const char *args)
{
	if (s->state == SS_INIT) {
		reply(s, 503, "5.5.1 Error: send HELO/EHLO first");
		return false;
	}
	if (s->state == SS_READY) {
		reply(s, 503, "5.5.1 Error: need MAIL command");
		return false;
	}
	if (s->state == SS_MAIL) {
		if (s->rcpt_attempts > 0)
			reply(s, 554, "5.5.1 Error: no valid recipients");
		else
			reply(s, 503, "5.5.1 Error: need RCPT command");
		return false;
	}
	if (s->bdat.msg != NULL || s->bdat_failed) {
		reply(s, 503, "5.5.1 Error: DATA after BDAT");
		return false;
	}
	if (s->mail.body == BODY_BINARYMIME) {
		reply(s, 503,
		    "5.5.1 Error: BODY=BINARYMIME requires BDAT "
		    "(RFC 3030)");
		return false;
	}
	if (*args != '\0') {
		reply(s, 501, "5.5.4 Error: DATA takes no arguments");
		return false;
	}
	return true;
}

static void
do_data(struct session *s, const char *args)
{
	struct intake in;
	struct budget b;
	char *out;
	enum conn_status st = CONN_OK;

	if (!check_data(s, args))
		return;
	reply(s, 354, "End data with <CR><LF>.<CR><LF>");
	intake_begin(s, &in, false);
	budget_init(&b, s->cfg);
	out = xmalloc(DATA_DEC_OUT_MAX(CONN_INBUF));
	while (!in.dec.done) {
		const char *p;
		size_t n, used, outlen;

		st = budget_peek(s, &b, &p, &n);
		if (st != CONN_OK)
			break;
		/* Octets after the terminator stay buffered: they are the
		 * next pipelined command (RFC 2920). */
		used = data_dec_feed(&in.dec, p, n, out, &outlen);
		message_take(s, &in, out, outlen);
		st = budget_consume(s, &b, used);
		if (st != CONN_OK && !in.dec.done)
			break;
		st = CONN_OK;
	}
	free(out);
	if (st != CONN_OK) {
		intake_end(&in);
		reset_transaction(s);
		data_read_failed(s, st);
		return;
	}
	message_end(s, &in, in.dec.flags);
	intake_end(&in);
	reset_transaction(s);
}

/* -------- BDAT (RFC 3030) -------- */

static void
do_bdat(struct session *s, const char *args)
{
	unsigned long long want = 0, chunk;
	const char *p = args;
	struct budget b;
	bool last = false, ok;
	char *out;
	enum conn_status st = CONN_OK;

	/* Parse "size [LAST]" first: the chunk must be consumed whatever
	 * happens, or its octets would be read as commands. */
	if (*p < '0' || *p > '9') {
		reply(s, 501, "5.5.4 Syntax: BDAT size [LAST]");
		s->quit = true; /* the chunk size is unknown: cannot resync */
		return;
	}
	for (; *p >= '0' && *p <= '9'; p++) {
		if (want > (1ULL << 62) / 10) {
			reply(s, 501, "5.5.4 Error: BDAT size too large");
			s->quit = true;
			return;
		}
		want = want * 10 + (unsigned)(*p - '0');
	}
	if (*p == ' ' && ascii_casecmp(p + 1, "LAST") == 0)
		last = true;
	else if (*p != '\0') {
		reply(s, 501, "5.5.4 Syntax: BDAT size [LAST]");
		s->quit = true;
		return;
	}
	chunk = want;
	ok = (s->state == SS_RCPT && !s->bdat_failed);
	if (ok && s->bdat.msg == NULL)
		intake_begin(s, &s->bdat, true);
	budget_init(&b, s->cfg);
	out = xmalloc(DATA_DEC_OUT_MAX(CONN_INBUF));
	while (want > 0) {
		const char *q;
		size_t n, outlen;

		st = budget_peek(s, &b, &q, &n);
		if (st != CONN_OK)
			break;
		if (n > want)
			n = (size_t)want;
		if (ok && s->mail.body == BODY_BINARYMIME) {
			message_take(s, &s->bdat, q, n);
		} else if (ok) {
			/* The same line-ending rules as DATA, minus dots. */
			(void)data_dec_feed(&s->bdat.dec, q, n, out, &outlen);
			message_take(s, &s->bdat, out, outlen);
		}
		want -= n;
		st = budget_consume(s, &b, n);
		if (st != CONN_OK && want > 0)
			break;
		st = CONN_OK;
	}
	if (ok && last && s->mail.body != BODY_BINARYMIME) {
		size_t outlen = data_dec_finish(&s->bdat.dec, out);

		message_take(s, &s->bdat, out, outlen);
	}
	free(out);
	if (st != CONN_OK) {
		reset_transaction(s);
		data_read_failed(s, st);
		return;
	}
	if (!ok) {
		if (s->state == SS_INIT)
			reply(s, 503, "5.5.1 Error: send HELO/EHLO first");
		else if (s->state == SS_READY)
			reply(s, 503, "5.5.1 Error: need MAIL command");
		else if (s->bdat_failed)
			reply(s, 503,
			    "5.5.1 Error: an earlier BDAT failed; "
			    "send RSET");
		else if (s->rcpt_attempts > 0)
			reply(s, 554, "5.5.1 Error: no valid recipients");
		else
			reply(s, 503, "5.5.1 Error: need RCPT command");
		if (last && s->state > SS_READY)
			reset_transaction(s);
		return;
	}
	if (s->bdat.size > s->cfg->max_message_size) {
		/* RFC 3030: the transaction has failed; later chunks of it
		 * are consumed and refused until RSET or the LAST chunk. */
		reply(s, 552,
		    "5.3.4 Error: message too big (limit %lld "
		    "octets)",
		    s->cfg->max_message_size);
		intake_end(&s->bdat);
		s->bdat_failed = !last;
		if (last)
			reset_transaction(s);
		return;
	}
	if (!last) {
		reply(s, 250, "2.0.0 Ok: %llu octets received", chunk);
		return;
	}
	message_end(s, &s->bdat,
	    s->mail.body == BODY_BINARYMIME ? 0 : s->bdat.dec.flags);
	reset_transaction(s);
}

/* -------- STARTTLS (RFC 3207) and implicit TLS (RFC 8314) -------- */

/* Handshake with the current credentials; false ends the session. */
static bool
start_tls(struct session *s)
{
	struct held *ref;
	struct tls_creds *creds = holder_get(s->srv->tls, &ref);
	char why[WHY_MAX];
	enum conn_status st = CONN_ERROR;

	if (creds == NULL) {
		log_warn("smtpd",
		    "client=%s TLS requested but no certificate "
		    "is loaded",
		    s->iplit);
		holder_put(ref);
		return false;
	}
	why[0] = '\0';
	st = conn_tls_accept(s->conn, creds,
	    now_ms() + (int64_t)s->cfg->command_timeout * 1000, why);
	holder_put(ref);
	if (st != CONN_OK) {
		metrics_inc(M_REJECT_TLS);
		log_info("smtpd", "client=%s TLS handshake failed: %s",
		    s->iplit, why);
		return false;
	}
	conn_tls_info(s->conn, s->tls_version, sizeof(s->tls_version),
	    s->tls_cipher, sizeof(s->tls_cipher), &s->tls_bits);
	log_info("smtpd", "client=%s TLS established: %s %s (%d bits)",
	    s->iplit, s->tls_version, s->tls_cipher, s->tls_bits);
	return true;
}

static void
do_starttls(struct session *s, const char *args)
{
	if (s->tls_version[0] != '\0') {
		reply(s, 503, "5.5.1 Error: TLS already active");
		return;
	}
	if (!starttls_available(s)) {
		reply(s, 502, "5.5.1 Error: STARTTLS not available");
		return;
	}
	if (*args != '\0') {
		reply(s, 501, "5.5.4 Syntax: STARTTLS");
		return;
	}
	reply(s, 220, "2.0.0 Ready to start TLS");
	if (conn_flush(s->conn, now_ms() + 10000) != CONN_OK) {
		s->quit = true;
		return;
	}
	/*
	 * RFC 3207 section 4.2 and CVE-2011-0411: anything the client sent
	 * after STARTTLS in plaintext is discarded, never executed.
	 */
	conn_discard_input(s->conn);
	if (!start_tls(s)) {
		s->quit = true;
		return;
	}
	/* The client must start over with EHLO (RFC 3207 section 4.2). */
	reset_transaction(s);
	s->state = SS_INIT;
	s->esmtp = false;
	s->helo[0] = '\0';
}

/* -------- AUTH (RFC 4954) -------- */

/*
 * Read one SASL response line after a 334 challenge into `buf`.  Returns
 * false, having replied, when the exchange cannot go on.
 */
static bool
sasl_read(struct session *s, char *buf, size_t max)
{
	bool too_long, bare_lf;
	size_t len;
	enum conn_status st;

	st = conn_read_line(s->conn, buf, max, &len, &too_long, &bare_lf,
	    now_ms() + (int64_t)s->cfg->command_timeout * 1000);
	if (st == CONN_TIMEOUT) {
		reply(s, 421, "4.4.2 %s Error: timeout exceeded",
		    s->cfg->hostname);
		s->quit = true;
		return false;
	}
	if (st != CONN_OK) {
		s->quit = true;
		return false;
	}
	if (too_long) {
		reply(s, 500, "5.5.6 Authentication exchange line is too long");
		return false;
	}
	if (strcmp(buf, "*") == 0) {
		reply(s, 501, "5.7.0 Authentication aborted");
		return false;
	}
	return true;
}

/* Decode one base64 SASL field; false (having replied) when malformed. */
static bool
sasl_decode(
    struct session *s, const char *b64, char *out, size_t outlen, int *len)
{
	*len = auth_b64_decode(b64, out, outlen);
	if (*len < 0) {
		reply(s, 501, "5.5.2 Error: invalid base64 data");
		return false;
	}
	return true;
}

static void
auth_verdict(struct session *s, const char *user, const char *pass)
{
	struct held *ref;
	struct auth_db *db = holder_get(s->srv->auth, &ref);
	bool ok = db != NULL && auth_db_verify(db, user, pass);
	char safe[AUTH_FIELD_MAX];

	holder_put(ref);
	log_sanitize(safe, sizeof(safe), user);
	if (ok) {
		snprintf(s->auth_user, sizeof(s->auth_user), "%s", user);
		log_info(
		    "smtpd", "client=%s authenticated user=%s", s->iplit, safe);
		reply(s, 235, "2.7.0 Authentication successful");
		return;
	}
	s->auth_failures++;
	metrics_inc(M_AUTH_FAILED);
	log_info("smtpd",
	    "client=%s authentication failed for user=%s "
	    "(%d of %d)",
	    s->iplit, safe, s->auth_failures, AUTH_MAX_FAILURES);
	/* Slow down password guessing. */
	if (s->cfg->auth_failure_delay > 0) {
		(void)conn_flush(s->conn, now_ms() + 10000);
		sleep((unsigned)s->cfg->auth_failure_delay);
	}
	reply(s, 535, "5.7.8 Error: authentication credentials invalid");
	if (s->auth_failures >= AUTH_MAX_FAILURES) {
		reply(s, 421,
		    "4.7.0 %s Error: too many authentication "
		    "failures",
		    s->cfg->hostname);
		s->quit = true;
	}
}

static void
do_auth(struct session *s, const char *args)
{
	char mech[32], initial[SMTP_MAIL_LINE_MAX + 1], resp[2048];
	char dec[3 * AUTH_FIELD_MAX + 8], user[AUTH_FIELD_MAX];
	char pass[AUTH_FIELD_MAX], authz[AUTH_FIELD_MAX];
	const char *sp = strchr(args, ' ');
	size_t mlen = sp ? (size_t)(sp - args) : strlen(args);
	int n;

	snprintf(initial, sizeof(initial), "%s", sp ? sp + 1 : "");
	/* Never log credentials: keep only "AUTH MECH" of the line. */
	if (sp != NULL)
		s->line[(size_t)(sp - s->line)] = '\0';
	if (mlen == 0 || mlen >= sizeof(mech)) {
		reply(
		    s, 501, "5.5.4 Syntax: AUTH mechanism [initial-response]");
		goto out;
	}
	memcpy(mech, args, mlen);
	mech[mlen] = '\0';
	if (s->state == SS_INIT || !s->esmtp) {
		reply(s, 503, "5.5.1 Error: send EHLO first");
		goto out;
	}
	if (!auth_configured(s)) {
		reply(s, 502, "5.5.1 Error: authentication not enabled");
		goto out;
	}
	if (s->tls_version[0] == '\0') {
		reply(s, 538,
		    "5.7.11 Encryption required for requested "
		    "authentication mechanism");
		goto out;
	}
	if (authenticated(s)) {
		reply(s, 503, "5.5.1 Error: already authenticated");
		goto out;
	}
	if (s->state != SS_READY) {
		reply(s, 503,
		    "5.5.1 Error: AUTH not allowed during a mail "
		    "transaction");
		goto out;
	}
	if (ascii_casecmp(mech, "PLAIN") == 0) {
		/* RFC 4616; an empty initial response is "=". */
		if (initial[0] == '\0') {
			conn_printf(s->conn, "334 \r\n");
			if (!sasl_read(s, resp, sizeof(resp)))
				goto out;
		} else {
			snprintf(resp, sizeof(resp), "%s", initial);
		}
		if (!sasl_decode(s, resp, dec, sizeof(dec), &n))
			goto out;
		if (sasl_plain_split(dec, (size_t)n, authz, user, pass) != 0) {
			reply(s, 501, "5.5.2 Error: malformed PLAIN response");
			goto out;
		}
		/* No proxy authorisation: authzid empty or the user. */
		if (authz[0] != '\0' && strcmp(authz, user) != 0) {
			reply(s, 535,
			    "5.7.8 Error: authorization identity "
			    "not permitted");
			goto out;
		}
	} else if (ascii_casecmp(mech, "LOGIN") == 0) {
		if (initial[0] != '\0') {
			snprintf(resp, sizeof(resp), "%s", initial);
		} else {
			conn_printf(s->conn, "334 VXNlcm5hbWU6\r\n");
			if (!sasl_read(s, resp, sizeof(resp)))
				goto out;
		}
		if (!sasl_decode(s, resp, user, sizeof(user), &n))
			goto out;
		conn_printf(s->conn, "334 UGFzc3dvcmQ6\r\n");
		if (!sasl_read(s, resp, sizeof(resp)))
			goto out;
		if (!sasl_decode(s, resp, pass, sizeof(pass), &n))
			goto out;
	} else {
		reply(s, 504, "5.5.4 Error: unrecognized authentication type");
		goto out;
	}
	auth_verdict(s, user, pass);
out:
	explicit_bzero(initial, sizeof(initial));
	explicit_bzero(resp, sizeof(resp));
	explicit_bzero(dec, sizeof(dec));
	explicit_bzero(pass, sizeof(pass));
}

/* -------- the command loop -------- */

static void
do_command(struct session *s, size_t len)
{
	const char *args;
	enum smtp_verb verb = parse_verb(s->line, &args);
	size_t limit = SMTP_CMDLINE_MAX;

	s->ncommands++;
	if (verb == VERB_MAIL || verb == VERB_AUTH)
		limit = SMTP_MAIL_LINE_MAX;
	else if (verb == VERB_RCPT)
		limit = SMTP_RCPT_LINE_MAX;
	if (len + 2 > limit) {
		reply(s, 500, "5.5.2 Error: line too long");
		return;
	}
	switch (verb) {
	case VERB_HELO:
	case VERB_EHLO:
		do_helo(s, args, verb == VERB_EHLO);
		break;
	case VERB_MAIL:
		do_mail(s, args);
		break;
	case VERB_RCPT:
		do_rcpt(s, args);
		break;
	case VERB_DATA:
		do_data(s, args);
		break;
	case VERB_BDAT:
		do_bdat(s, args);
		break;
	case VERB_RSET:
		if (*args != '\0') {
			reply(s, 501, "5.5.4 Error: RSET takes no arguments");
			break;
		}
		reset_transaction(s);
		reply(s, 250, "2.0.0 Ok");
		break;
	case VERB_NOOP:
		reply(s, 250, "2.0.0 Ok");
		break;
	case VERB_QUIT:
		reply(s, 221, "2.0.0 Bye");
		s->quit = true;
		break;
	case VERB_VRFY:
		if (*args == '\0')
			reply(s, 501, "5.5.4 Syntax: VRFY address");
		else
			reply(s, 252,
			    "2.5.0 Cannot VRFY user, but will accept "
			    "message and attempt delivery");
		break;
	case VERB_EXPN:
		reply(s, 502, "5.5.1 Error: EXPN not supported");
		break;
	case VERB_HELP:
		reply(s, 214,
		    "2.0.0 Commands: HELO EHLO MAIL RCPT DATA BDAT "
		    "RSET NOOP QUIT VRFY HELP");
		break;
	case VERB_STARTTLS:
		do_starttls(s, args);
		break;
	case VERB_AUTH:
		do_auth(s, args);
		break;
	case VERB_NOTIMPL:
		reply(s, 502, "5.5.1 Error: command not implemented");
		break;
	case VERB_UNKNOWN:
		reply(s, 500, "5.5.1 Error: command not recognized");
		break;
	}
}

void
session_run(struct server *srv, const struct job *job)
{
	struct session *s = xcalloc(1, sizeof(*s));
	const struct config *cfg;
	const struct sockaddr *peer = (const struct sockaddr *)&job->peer;
	int64_t started = now_ms();

	cfg = holder_get(srv->config, &s->cfg_ref);
	s->srv = srv;
	s->cfg = cfg;
	s->conn = conn_new(job->fd);
	sockaddr_ntop(peer, s->ip, sizeof(s->ip));
	s->port = sockaddr_port(peer);
	if (strchr(s->ip, ':') != NULL)
		snprintf(s->iplit, sizeof(s->iplit), "[IPv6:%s]", s->ip);
	else
		snprintf(s->iplit, sizeof(s->iplit), "[%s]", s->ip);
	s->trusted =
	    cidr_match(cfg->relay_networks, cfg->nrelay_networks, peer);
	s->state = SS_INIT;
	s->kind = job->listener.kind;
	log_info("smtpd", "connect from %s:%d listener=%s%s", s->iplit, s->port,
	    job->listener.text, s->trusted ? " trusted" : "");
	/* RFC 8314: on an implicit-TLS port the handshake comes first; like
	 * an idle session, it ends at once at shutdown. */
	conn_set_stop_fd(s->conn, srv->stop_fd);
	if (s->kind == LISTEN_SMTPS && !start_tls(s))
		s->quit = true;
	else
		conn_printf(s->conn, "220 %s ESMTP sluice\r\n", cfg->hostname);
	while (!s->quit) {
		bool too_long, bare_lf;
		size_t len;
		enum conn_status st;

		/* Idle sessions end at shutdown; transactions get the grace
		 * period. */
		conn_set_stop_fd(s->conn,
		    s->state <= SS_READY ? srv->stop_fd : srv->kill_fd);
		s->line[0] = '\0';
		st = conn_read_line(s->conn, s->line, sizeof(s->line), &len,
		    &too_long, &bare_lf,
		    now_ms() + cfg->command_timeout * 1000);
		if (st == CONN_TIMEOUT) {
			metrics_inc(M_REJECT_TIMEOUT);
			reply(s, 421, "4.4.2 %s Error: timeout exceeded",
			    cfg->hostname);
			break;
		}
		if (st == CONN_STOPPED) {
			metrics_inc(M_REJECT_SHUTDOWN);
			reply(s, 421, "4.3.2 %s Service shutting down",
			    cfg->hostname);
			break;
		}
		if (st != CONN_OK)
			break;
		if (too_long) {
			s->line[0] = '\0';
			reply(s, 500, "5.5.2 Error: line too long");
		} else {
			do_command(s, len);
		}
		if (!s->quit && s->errors >= cfg->max_errors) {
			metrics_inc(M_REJECT_ERRORS);
			reply(s, 421, "4.7.0 %s Error: too many errors",
			    cfg->hostname);
			break;
		}
	}
	(void)conn_flush(s->conn, now_ms() + 5000);
	reset_transaction(s);
	log_info("smtpd",
	    "disconnect from %s commands=%d mails=%d rcpts=%d "
	    "errors=%d in=%llu out=%llu duration_ms=%lld",
	    s->iplit, s->ncommands, s->nmails, s->nrcpts_total, s->errors,
	    (unsigned long long)conn_bytes_in(s->conn),
	    (unsigned long long)conn_bytes_out(s->conn),
	    (long long)(now_ms() - started));
	conn_free(s->conn);
	holder_put(s->cfg_ref);
	free(s);
}
