/*
 * session.c - the ESMTP server state machine (RFC 5321 and its extensions),
 * run as an event-driven task: a worker runs a session while it has input,
 * and when it would wait (for the next command, a slow DATA read, a stalled
 * TLS handshake, the client to read our replies, or auth_failure_delay)
 * session_run returns what it waits for and the session is parked, costing
 * no thread (see server.h and waiter.c).
 *
 * Threads: one worker at a time runs a session (server.h's invariant); the
 * only shared things it touches are the read-only config, the queue
 * (through queue.h), anvil, and the server's atomic counters.
 *
 * Each verb has a check step (order and syntax: may it run now?) and a do
 * step, as in OpenSMTPD.  The SMTP state:
 *
 *   connect ─> 220 ─> [INIT] ─EHLO/HELO─> [READY] ─MAIL─> [MAIL]
 *                                            ^              │ RCPT
 *                                            │              v
 *                       250 queued / RSET ───┴──────────  [RCPT] ─DATA/BDAT─>
 *
 * and what the session is doing (its phase), each phase a step function:
 *
 *   START ─(465)─> HANDSHAKE ─────────┐
 *     └──(220)──────────────────> COMMAND <──┬── DATA   (do_data: 354)
 *                 STARTTLS: 220 ──> HANDSHAKE├── BDAT   (do_bdat)
 *                                            ├── SASL   (do_auth: 334)
 *                                            └── DELAY  (a failed AUTH)
 *     QUIT, 421, errors ──> CLOSE (flush the last replies) ──> end
 *
 * Invariants:
 *  1. "250 ... queued as" is sent only after queue_msg_commit returned
 *     RES_OK, that is after the message is durable.
 *  2. The end of DATA is only <CRLF>.<CRLF> (data.c); a message with bare
 *     CR or LF is refused unless bare_newline = normalize.
 *  3. Memory is bounded: command lines by SMTP_MAIL_LINE_MAX, recipients by
 *     max_recipients, message data by QUEUE_CHUNK-sized buffers, pending
 *     replies by CONN_OUTBUF (no command is read while more than half of it
 *     waits to be sent).
 *  4. A transaction whose data does not end cleanly (timeout, disconnect,
 *     shutdown) is dropped with its partial data: queue_msg_free.
 *  5. Every wait has a deadline: command_timeout (stress_command_timeout
 *     for untrusted clients in stress mode) for a command, a SASL line, a
 *     TLS handshake, and replies the client does not read; the DATA budget
 *     (data_timeout, min_data_rate) for message data.
 *  6. Replies leave in order, and all at once before the session waits for
 *     input, so pipelined commands are answered in one write (RFC 2920).
 */
#include "server.h"
#include "auth.h"
#include "cidr.h"
#include "conn.h"
#include "data.h"
#include "dkim.h"
#include "log.h"
#include "metrics.h"
#include "parse.h"
#include "proxy.h"
#include "tls.h"
#include "util.h"

#include <errno.h>
#include <poll.h>
#include <sys/socket.h>
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

enum phase {
	PH_PROXY,     /* reading the PROXY header (a /proxy listener) */
	PH_START,     /* not greeted yet */
	PH_HANDSHAKE, /* TLS handshake (port 465, or after STARTTLS) */
	PH_COMMAND,   /* reading commands */
	PH_DATA,      /* reading message data after 354 */
	PH_BDAT,      /* reading a BDAT chunk */
	PH_SASL,      /* reading a SASL response after 334 */
	PH_DELAY,     /* auth_failure_delay before the 535 */
	PH_CLOSE,     /* sending the last replies */
};

/* What one step did. */
enum step {
	STEP_NEXT, /* run the (new) phase's step again */
	STEP_WAIT, /* the wait record is filled: park */
	STEP_END,  /* the session is over */
};

struct rcpt {
	char *address;
	char *domain;
	unsigned notify; /* NOTIFY_* bits */
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
	/* DKIM: a signer when the message may be signed (relayed for a
	 * trusted or authenticated client, keys configured), and the keys
	 * in force when it began (held until it ends). */
	struct dkim_signer *dkim;
	const struct dkim_keys *dkim_keys;
	struct held *dkim_ref;
};

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

/* An AUTH exchange waiting for the client's next SASL line. */
enum sasl_step { SASL_PLAIN, SASL_LOGIN_USER, SASL_LOGIN_PASS };

struct session {
	struct server *srv;
	const struct config *cfg; /* the version this session started with */
	struct held *cfg_ref;
	struct conn *conn;
	struct sess_wait wait;
	struct anvil_key client;      /* counted in srv->anvil until the end */
	bool counted;                 /* ... when it was (always, but behind a
	                                 balancer only after the PROXY header) */
	struct sockaddr_storage peer; /* the TCP peer (maybe a balancer) */
	unsigned char *proxy_buf;     /* PH_PROXY: the header so far */
	size_t proxy_len;
	char proxy_from[64]; /* the balancer's address, or "" */
	enum phase phase;
	int64_t started;
	int64_t deadline;  /* of the wait for input in progress, 0: none */
	int64_t wdeadline; /* for replies the client does not read, 0: none */
	bool writing;      /* parked until the client reads our replies */
	char ip[64];
	char iplit[80]; /* "[192.0.2.1]" or "[IPv6:2001:db8::1]" */
	int port;
	char listener[80];
	bool trusted; /* client is in relay_networks */
	enum listen_kind kind;
	char tls_version[32]; /* "" without TLS */
	char tls_cipher[64];
	int tls_bits;
	char auth_user[AUTH_FIELD_MAX]; /* "" until AUTH succeeds */
	int auth_failures;
	enum sasl_step sasl;
	char sasl_user[AUTH_FIELD_MAX]; /* LOGIN: the name, until PASS */
	enum sess_state state;
	bool esmtp;
	bool quit;
	char helo[SMTP_DOMAIN_MAX + 1];
	int errors;
	int ncommands, nmails, nrcpts_total;
	/* The transaction (reset by RSET, HELO/EHLO, and after DATA). */
	struct mail_args mail;
	char sender[ADDRESS_MAX + 1];
	struct rcpt *rcpts;
	int nrcpts;
	int rcpt_attempts;
	/* DATA (RFC 5321 section 4.1.1.4): the message being received. */
	struct intake data;
	struct budget budget; /* DATA and BDAT */
	bool budget_waiting;  /* charge the wait that ends now */
	char *decoded;        /* DATA_DEC_OUT_MAX(CONN_INBUF), while reading */
	/* BDAT (RFC 3030): the message being received in chunks. */
	struct intake bdat;
	bool bdat_failed; /* a chunk failed: refuse until RSET/LAST */
	unsigned long long bdat_left, bdat_chunk;
	bool bdat_last, bdat_ok;
	char line[SMTP_MAIL_LINE_MAX + 1];
};

#define AUTH_MAX_FAILURES 3

/* Send a reply; 4xx/5xx replies count as errors and are logged. */
static void reply(struct session *s, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
reply(struct session *s, int code, const char *fmt, ...)
{
	char text[SMTP_REPLY_MAX];
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
	intake_end(&s->data);
	intake_end(&s->bdat);
	s->bdat_failed = false;
	free(s->decoded);
	s->decoded = NULL;
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
	/* RFC 8689 section 4.1: only once the session is under TLS. */
	if (s->tls_version[0] != '\0')
		conn_printf(s->conn, "250-REQUIRETLS\r\n");
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
	if (s->mail.requiretls && s->tls_version[0] == '\0') {
		/* Not advertised without TLS: as any unknown parameter. */
		reply(s, 555,
		    "5.5.4 REQUIRETLS parameter not recognized (only under "
		    "TLS)");
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
		struct auth_table *users = holder_get(s->srv->auth, &ref);
		bool ok = users != NULL && auth_table_sender_allowed(
		                               users, s->auth_user, s->sender);

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
	char why[WHY_MAX], addr[ADDRESS_MAX + 1];
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
	r->notify = ra.notify;
	r->orcpt = ra.orcpt[0] != '\0' ? xstrdup(ra.orcpt) : NULL;
	s->state = SS_RCPT;
	s->nrcpts_total++;
	reply(s, 250, "2.1.5 Ok");
}

/* -------- message intake shared by DATA and BDAT -------- */

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
	    forc[ADDRESS_MAX + 16];
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
	if (s->trusted || authenticated(s)) {
		in->dkim_keys = holder_get(s->srv->dkim, &in->dkim_ref);
		if (dkim_keys_total(in->dkim_keys) > 0)
			in->dkim = dkim_signer_new();
	}
}

static void
intake_end(struct intake *in)
{
	queue_msg_free(in->msg);
	in->msg = NULL;
	dkim_signer_free(in->dkim);
	in->dkim = NULL;
	if (in->dkim_ref != NULL)
		holder_put(in->dkim_ref);
	in->dkim_ref = NULL;
	in->dkim_keys = NULL;
}

/*
 * Sign the message when its domain (From's, or MAIL FROM's with
 * dkim_sign_by = sender) has keys: the signatures go in front of it
 * (env->prepend, *sig to free).  False when a reply refused the message:
 * mail that should be signed is never queued unsigned.
 */
static bool
message_sign(struct session *s, struct intake *in, struct envelope *env,
    char **sig, char *domain, size_t dlen)
{
	char why[WHY_MAX];
	size_t len = 0, i;
	enum res r;
	int got = 0;

	*sig = NULL;
	domain[0] = '\0';
	if (in->dkim == NULL)
		return true;
	if (s->cfg->dkim_sign_by == DKIM_BY_SENDER) {
		const char *at = strrchr(s->sender, '@');

		if (at != NULL && strlen(at + 1) < dlen) {
			for (i = 0; at[i + 1] != '\0'; i++)
				domain[i] = ascii_lower(at[i + 1]);
			domain[i] = '\0';
			got = 1;
		}
	} else {
		got = dkim_signer_from_domain(in->dkim, domain, dlen);
	}
	if (got < 0) {
		reply(s, 552,
		    "5.3.4 Error: message header too large to sign (over %d "
		    "octets)",
		    DKIM_HEADER_MAX);
		return false;
	}
	if (got == 0)
		return true; /* no single From domain: not signed */
	r = dkim_signer_sign(
	    in->dkim, in->dkim_keys, domain, env->received_at, sig, &len, why);
	if (r != RES_OK) {
		log_warn("smtpd", "id=%s %s", env->id, why);
		reply(s, r == RES_PERM ? 552 : 451, "%s", why);
		return false;
	}
	if (*sig == NULL)
		domain[0] = '\0'; /* no key for it */
	env->prepend = *sig;
	env->prepend_len = len;
	env->stored_size += (int64_t)len;
	return true;
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
	char why[WHY_MAX], from[128], *sig = NULL;
	char signed_by[SMTP_DOMAIN_MAX + 1];
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
		reply(s, queue_msg_reply_code(in->msg), "%s", in->store_why);
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
	env.body_type = s->mail.body;
	env.smtputf8 = s->mail.smtputf8;
	env.requiretls = s->mail.requiretls;
	/* RFC 8689 section 4.1: with REQUIRETLS the header is ignored. */
	env.tls_required_no = !s->mail.requiretls && in->hdr.tls_required_no;
	env.dsn_ret = s->mail.ret;
	env.dsn_envid = s->mail.envid[0] != '\0' ? s->mail.envid : NULL;
	env.client_ip = s->ip;
	env.client_port = s->port;
	env.helo = s->helo;
	env.protocol = protocol_name(s);
	env.tls_version = s->tls_version[0] ? s->tls_version : NULL;
	env.tls_cipher = s->tls_cipher[0] ? s->tls_cipher : NULL;
	env.auth_user = authenticated(s) ? s->auth_user : NULL;
	if (!message_sign(s, in, &env, &sig, signed_by, sizeof(signed_by))) {
		free(er);
		return;
	}
	if (queue_msg_commit(in->msg, &env, why) != RES_OK) {
		free(er);
		free(sig);
		reply(s, queue_msg_reply_code(in->msg), "%s", why);
		return;
	}
	free(er);
	free(sig);
	s->nmails++;
	atomic_fetch_add(&s->srv->messages_accepted, 1);
	metrics_inc(M_MESSAGES_ACCEPTED);
	metrics_add(M_BYTES_ACCEPTED, in->size);
	log_sanitize(from, sizeof(from), s->sender);
	log_info("smtpd",
	    "id=%s from=<%s> size=%lld nrcpt=%d client=%s "
	    "proto=%s%s%s",
	    env.id, from, in->size, s->nrcpts, s->iplit, env.protocol,
	    signed_by[0] ? " dkim=" : "", signed_by);
	reply(s, 250, "2.0.0 Ok: queued as %s", env.id);
}

static void
budget_init(struct budget *b, const struct config *cfg)
{
	b->cap_ms = (int64_t)cfg->data_timeout * 1000;
	b->left_ms = b->cap_ms;
	b->rate = cfg->min_data_rate;
}

/* Consume `n` octets of input and earn their time back; false when the
 * budget is spent (the client is too slow). */
static bool
budget_consume(struct session *s, struct budget *b, size_t n)
{
	conn_consume(s->conn, n);
	if (b->rate > 0) {
		b->left_ms += (int64_t)n * 1000 / b->rate;
		if (b->left_ms > b->cap_ms)
			b->left_ms = b->cap_ms;
		return b->left_ms > 0;
	}
	b->left_ms = b->cap_ms;
	return true;
}

/* Take the time the session waited for data out of its budget. */
static void
budget_charge(struct session *s)
{
	if (s->budget_waiting) {
		s->budget.left_ms -= now_ms() - s->wait.since;
		s->budget_waiting = false;
	}
}

/* -------- waiting -------- */

/* Where shutdown ends this session: idle ones at once, others after the
 * grace period. */
static enum sess_stop
stop_stage(const struct session *s)
{
	if (s->phase == PH_DATA || s->phase == PH_BDAT || s->state > SS_READY)
		return STOP_LATE;
	return STOP_EARLY;
}

/* Fill the wait record and park. */
static enum step
park(struct session *s, short events, int64_t deadline)
{
	struct sess_wait *w = &s->wait;

	w->fd = conn_fd(s->conn);
	w->events = events;
	w->deadline = deadline;
	w->since = now_ms();
	w->stop = stop_stage(s);
	w->trusted = s->trusted;
	/* Waiting for the client under command_timeout (stress mode may
	 * shorten it): a command outside a transaction, a handshake, a SASL
	 * line. */
	w->idle = (s->phase == PH_COMMAND && s->state <= SS_READY) ||
	          (s->phase == PH_HANDSHAKE && !s->writing) ||
	          s->phase == PH_SASL;
	return STEP_WAIT;
}

/*
 * Send what is queued; STEP_NEXT when all of it left, else wait for the
 * client to read (command_timeout at most), or STEP_END when the
 * connection is broken.
 */
static enum step
flush_or_wait(struct session *s)
{
	enum conn_status st = conn_try_flush(s->conn);

	if (st == CONN_OK) {
		s->writing = false;
		s->wdeadline = 0;
		return STEP_NEXT;
	}
	if (st != CONN_AGAIN)
		return STEP_END;
	if (s->wdeadline == 0)
		s->wdeadline =
		    now_ms() + (int64_t)s->cfg->command_timeout * 1000;
	s->writing = true;
	return park(s, POLLOUT, s->wdeadline);
}

/*
 * Wait for input (what conn_want says) until `deadline`, after sending
 * every reply queued (invariant 6).
 */
static enum step
wait_input(struct session *s, int64_t deadline)
{
	/* What the read wants (POLLIN, or POLLOUT for TLS), before the
	 * flush makes conn_want() about the write. */
	short events = conn_want(s->conn);
	enum step r = flush_or_wait(s);

	if (r != STEP_NEXT)
		return r;
	return park(s, events, deadline);
}

/*
 * The deadline for the next command, SASL line or handshake: stress mode
 * (listener.c) gives untrusted clients stress_command_timeout instead.
 */
static int64_t
command_deadline(struct session *s)
{
	int t = s->cfg->command_timeout;

	if (!s->trusted && atomic_load(&s->srv->stress) &&
	    s->cfg->stress_command_timeout < t)
		t = s->cfg->stress_command_timeout;
	return now_ms() + (int64_t)t * 1000;
}

/* Wait for a line of input, with one deadline for the whole line. */
static enum step
wait_line(struct session *s)
{
	if (s->deadline == 0)
		s->deadline = command_deadline(s);
	return wait_input(s, s->deadline);
}

static enum step
close_session(struct session *s)
{
	s->phase = PH_CLOSE;
	return STEP_NEXT;
}

/*
 * End the session because waiting for the client failed: a timeout or a
 * shutdown gets its 421 (the transaction, and any partial message, is
 * dropped); a connection lost in the middle of message data is logged.
 */
static enum step
give_up(struct session *s, enum conn_status st)
{
	reset_transaction(s);
	if (st == CONN_TIMEOUT) {
		metrics_inc(M_REJECT_TIMEOUT);
		reply(s, 421, "4.4.2 %s Error: timeout exceeded",
		    s->cfg->hostname);
	} else if (st == CONN_STOPPED) {
		metrics_inc(M_REJECT_SHUTDOWN);
		reply(
		    s, 421, "4.3.2 %s Service shutting down", s->cfg->hostname);
	} else {
		log_info(
		    "smtpd", "client=%s lost connection during data", s->iplit);
		return STEP_END;
	}
	return close_session(s);
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
	if (in->dkim != NULL && in->size <= s->cfg->max_message_size)
		dkim_signer_put(in->dkim, p, n);
}

/* The buffer decoded data goes into, while data is read (freed when the
 * session parks). */
static char *
decode_buffer(struct session *s)
{
	if (s->decoded == NULL)
		s->decoded = xmalloc(DATA_DEC_OUT_MAX(CONN_INBUF));
	return s->decoded;
}

/*
 * Look at the message data buffered, reading what has arrived; on
 * CONN_AGAIN the session waits for more within its budget.
 */
static enum conn_status
data_peek(struct session *s, const char **p, size_t *n, enum step *r)
{
	enum conn_status st;

	budget_charge(s);
	if (s->budget.left_ms <= 0)
		return CONN_TIMEOUT;
	st = conn_try_peek(s->conn, p, n);
	if (st == CONN_AGAIN) {
		*r = wait_input(s, now_ms() + s->budget.left_ms);
		/* The wait began now (or, when replies must drain first, the
		 * client gets their time as a bonus). */
		s->budget_waiting = *r == STEP_WAIT && !s->writing;
	}
	return st;
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
	if (!check_data(s, args))
		return;
	reply(s, 354, "End data with <CR><LF>.<CR><LF>");
	intake_begin(s, &s->data, false);
	budget_init(&s->budget, s->cfg);
	s->phase = PH_DATA;
}

static enum step
step_data(struct session *s)
{
	struct intake *in = &s->data;
	enum step r = STEP_NEXT;
	const char *p;
	size_t n, used, outlen;
	enum conn_status st = data_peek(s, &p, &n, &r);

	if (st == CONN_AGAIN)
		return r;
	if (st != CONN_OK)
		return give_up(s, st);
	/* Octets after the terminator stay buffered: they are the next
	 * pipelined command (RFC 2920). */
	used = data_dec_feed(&in->dec, p, n, decode_buffer(s), &outlen);
	message_take(s, in, s->decoded, outlen);
	if (!budget_consume(s, &s->budget, used) && !in->dec.done)
		return give_up(s, CONN_TIMEOUT);
	if (!in->dec.done)
		return STEP_NEXT;
	message_end(s, in, in->dec.flags);
	reset_transaction(s);
	s->phase = PH_COMMAND;
	return STEP_NEXT;
}

/* -------- BDAT (RFC 3030) -------- */

static void
do_bdat(struct session *s, const char *args)
{
	unsigned long long want;
	char why[WHY_MAX];
	int code;

	/* Parse "size [LAST]" first: the chunk must be consumed whatever
	 * happens, or its octets would be read as commands. */
	code = parse_bdat(args, &want, &s->bdat_last, why);
	if (code != 0) {
		reply(s, code, "%s", why);
		s->quit = true; /* the chunk size is unknown: cannot resync */
		return;
	}
	s->bdat_chunk = s->bdat_left = want;
	s->bdat_ok = (s->state == SS_RCPT && !s->bdat_failed);
	if (s->bdat_ok && s->bdat.msg == NULL)
		intake_begin(s, &s->bdat, true);
	budget_init(&s->budget, s->cfg);
	s->phase = PH_BDAT;
}

/* The whole chunk was read: answer it. */
static void
bdat_end(struct session *s)
{
	bool last = s->bdat_last;

	if (s->bdat_ok && last && s->mail.body != BODY_BINARYMIME) {
		char fin[2];
		size_t outlen = data_dec_finish(&s->bdat.dec, fin);

		message_take(s, &s->bdat, fin, outlen);
	}
	free(s->decoded);
	s->decoded = NULL;
	s->phase = PH_COMMAND;
	if (!s->bdat_ok) {
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
		reply(s, 250, "2.0.0 Ok: %llu octets received", s->bdat_chunk);
		return;
	}
	message_end(s, &s->bdat,
	    s->mail.body == BODY_BINARYMIME ? 0 : s->bdat.dec.flags);
	reset_transaction(s);
}

static enum step
step_bdat(struct session *s)
{
	enum step r = STEP_NEXT;
	const char *q;
	size_t n, outlen;
	enum conn_status st;

	if (s->bdat_left == 0) {
		bdat_end(s);
		return STEP_NEXT;
	}
	st = data_peek(s, &q, &n, &r);
	if (st == CONN_AGAIN)
		return r;
	if (st != CONN_OK)
		return give_up(s, st);
	if (n > s->bdat_left)
		n = (size_t)s->bdat_left;
	if (s->bdat_ok && s->mail.body == BODY_BINARYMIME) {
		message_take(s, &s->bdat, q, n);
	} else if (s->bdat_ok) {
		/* The same line-ending rules as DATA, minus dots. */
		(void)data_dec_feed(
		    &s->bdat.dec, q, n, decode_buffer(s), &outlen);
		message_take(s, &s->bdat, s->decoded, outlen);
	}
	s->bdat_left -= n;
	if (!budget_consume(s, &s->budget, n) && s->bdat_left > 0)
		return give_up(s, CONN_TIMEOUT);
	return STEP_NEXT;
}

/* -------- STARTTLS (RFC 3207) and implicit TLS (RFC 8314) -------- */

static void
tls_failed(struct session *s, const char *why)
{
	metrics_inc(M_REJECT_TLS);
	log_info("smtpd", "client=%s TLS handshake failed: %s", s->iplit, why);
}

/*
 * The handshake: first the "220 Ready to start TLS" must leave, then TLS
 * is set up with the current credentials, then it runs until done.
 */
static enum step
step_handshake(struct session *s)
{
	char why[WHY_MAX];
	enum conn_status st;
	enum step r = flush_or_wait(s);

	if (r != STEP_NEXT)
		return r;
	if (!conn_tls_active(s->conn)) {
		struct held *ref;
		struct tls_creds *creds = holder_get(s->srv->tls, &ref);

		if (creds == NULL) {
			holder_put(ref);
			log_warn("smtpd",
			    "client=%s TLS requested but no certificate "
			    "is loaded",
			    s->iplit);
			return STEP_END;
		}
		why[0] = '\0';
		st = conn_tls_server(s->conn, creds, why);
		holder_put(ref);
		if (st != CONN_OK) {
			tls_failed(s, why);
			return STEP_END;
		}
		s->deadline = command_deadline(s);
	}
	why[0] = '\0';
	st = conn_tls_handshake(s->conn, why);
	if (st == CONN_AGAIN)
		return park(s, conn_want(s->conn), s->deadline);
	if (st != CONN_OK) {
		tls_failed(s, why);
		return STEP_END;
	}
	s->deadline = 0;
	conn_tls_info(s->conn, s->tls_version, sizeof(s->tls_version),
	    s->tls_cipher, sizeof(s->tls_cipher), &s->tls_bits);
	log_info("smtpd", "client=%s TLS established: %s %s (%d bits)",
	    s->iplit, s->tls_version, s->tls_cipher, s->tls_bits);
	s->phase = PH_COMMAND;
	/* RFC 8314: port 465's handshake comes before the greeting (STARTTLS
	 * is never offered there). */
	if (s->kind == LISTEN_SMTPS) {
		conn_printf(
		    s->conn, "220 %s ESMTP sluice\r\n", s->cfg->hostname);
		return STEP_NEXT;
	}
	/* The client must start over with EHLO (RFC 3207 section 4.2). */
	reset_transaction(s);
	s->state = SS_INIT;
	s->esmtp = false;
	s->helo[0] = '\0';
	return STEP_NEXT;
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
	/*
	 * RFC 3207 section 4.2 and CVE-2011-0411: anything the client sent
	 * after STARTTLS in plaintext is discarded, never executed.  What is
	 * buffered now was sent before it saw our 220; nothing more is read
	 * before the handshake.
	 */
	conn_discard_input(s->conn);
	s->phase = PH_HANDSHAKE;
}

/* -------- AUTH (RFC 4954) -------- */

/* The 535 for a failed AUTH (after auth_failure_delay). */
static void
auth_refused(struct session *s)
{
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
auth_verdict(struct session *s, const char *user, const char *pass)
{
	struct held *ref;
	struct auth_table *users = holder_get(s->srv->auth, &ref);
	bool ok = users != NULL && auth_table_verify(users, user, pass);
	char safe[AUTH_FIELD_MAX];
	int rate;

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
	rate = anvil_auth_failed(s->srv->anvil, &s->client,
	    (int64_t)s->cfg->client_rate_time_unit * 1000, now_ms());
	log_info("smtpd",
	    "client=%s authentication failed for user=%s "
	    "(%d of %d; %d from this client in %ds)",
	    s->iplit, safe, s->auth_failures, AUTH_MAX_FAILURES, rate,
	    s->cfg->client_rate_time_unit);
	/* Slow down password guessing: a parked wait, not a sleeping
	 * worker. */
	if (s->cfg->auth_failure_delay > 0) {
		s->deadline = 0;
		s->phase = PH_DELAY;
		return;
	}
	auth_refused(s);
}

static enum step
step_delay(struct session *s)
{
	enum step r;

	if (s->deadline == 0) {
		/* Earlier replies leave first; then the delay starts. */
		if ((r = flush_or_wait(s)) != STEP_NEXT)
			return r;
		s->deadline =
		    now_ms() + (int64_t)s->cfg->auth_failure_delay * 1000;
	}
	if (now_ms() < s->deadline)
		return park(s, 0, s->deadline);
	s->deadline = 0;
	s->phase = PH_COMMAND;
	auth_refused(s);
	return s->quit ? close_session(s) : STEP_NEXT;
}

/*
 * Decode one base64 SASL field into `out`; false (having replied) when it
 * is malformed or, for a user name or password, holds a NUL octet (a C
 * string would silently end there).
 */
static bool
sasl_decode(struct session *s, const char *b64, char *out, size_t outlen,
    int *len, const char *what)
{
	*len = auth_b64_decode(b64, out, outlen);
	if (*len < 0) {
		reply(s, 501, "5.5.2 Error: invalid base64 data");
		return false;
	}
	if (what != NULL && memchr(out, '\0', (size_t)*len) != NULL) {
		reply(s, 501, "5.5.2 Error: NUL octet in the %s", what);
		return false;
	}
	return true;
}

/* A PLAIN response (RFC 4616); an empty initial response is "=". */
static void
sasl_plain(struct session *s, const char *resp)
{
	char dec[3 * AUTH_FIELD_MAX + 8], user[AUTH_FIELD_MAX];
	char pass[AUTH_FIELD_MAX], authz[AUTH_FIELD_MAX];
	int n;

	if (!sasl_decode(s, resp, dec, sizeof(dec), &n, NULL))
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
	auth_verdict(s, user, pass);
out:
	explicit_bzero(dec, sizeof(dec));
	explicit_bzero(pass, sizeof(pass));
}

/* LOGIN: the user name, then ask for the password. */
static void
sasl_login_user(struct session *s, const char *resp)
{
	int n;

	if (!sasl_decode(
	        s, resp, s->sasl_user, sizeof(s->sasl_user), &n, "user name"))
		return;
	conn_printf(s->conn, "334 UGFzc3dvcmQ6\r\n");
	s->sasl = SASL_LOGIN_PASS;
	s->phase = PH_SASL;
}

static void
sasl_login_pass(struct session *s, const char *resp)
{
	char pass[AUTH_FIELD_MAX];
	int n;

	if (sasl_decode(s, resp, pass, sizeof(pass), &n, "password"))
		auth_verdict(s, s->sasl_user, pass);
	explicit_bzero(pass, sizeof(pass));
}

/* Read one SASL response line after a 334 challenge. */
static enum step
step_sasl(struct session *s)
{
	char resp[sizeof(s->line)];
	bool too_long, bare_lf;
	size_t len;
	enum conn_status st;

	st = conn_try_line(
	    s->conn, s->line, sizeof(s->line), &len, &too_long, &bare_lf);
	if (st == CONN_AGAIN)
		return wait_line(s);
	if (st != CONN_OK)
		return STEP_END;
	s->deadline = 0;
	s->phase = PH_COMMAND;
	/* Never log credentials: the line logged with a reply is the
	 * command's name only. */
	memcpy(resp, s->line, len + 1);
	snprintf(s->line, sizeof(s->line), "AUTH %s",
	    s->sasl == SASL_PLAIN ? "PLAIN" : "LOGIN");
	if (too_long) {
		reply(s, 500, "5.5.6 Authentication exchange line is too long");
	} else if (memchr(resp, '\0', len) != NULL) {
		reply(s, 501, "5.5.2 Error: invalid base64 data");
	} else if (strcmp(resp, "*") == 0) {
		reply(s, 501, "5.7.0 Authentication aborted");
	} else if (s->sasl == SASL_PLAIN) {
		sasl_plain(s, resp);
	} else if (s->sasl == SASL_LOGIN_USER) {
		sasl_login_user(s, resp);
	} else {
		sasl_login_pass(s, resp);
	}
	explicit_bzero(resp, sizeof(resp));
	return s->quit ? close_session(s) : STEP_NEXT;
}

/* Refuse AUTH from a client that failed too often lately (anvil). */
static bool
auth_rate_exceeded(struct session *s)
{
	int limit = s->cfg->max_auth_failure_rate, rate;

	if (limit <= 0)
		return false;
	rate = anvil_auth_rate(s->srv->anvil, &s->client,
	    (int64_t)s->cfg->client_rate_time_unit * 1000, now_ms());
	if (rate < limit)
		return false;
	metrics_inc(M_AUTH_RATE_LIMITED);
	reply(s, 454,
	    "4.7.0 Error: too many failed authentications from %s; try "
	    "again later",
	    s->iplit);
	return true;
}

static void
do_auth(struct session *s, const char *args)
{
	char mech[32];
	const char *sp = strchr(args, ' ');
	const char *initial = sp ? sp + 1 : "";
	size_t mlen = sp ? (size_t)(sp - args) : strlen(args);

	if (mlen == 0 || mlen >= sizeof(mech)) {
		reply(
		    s, 501, "5.5.4 Syntax: AUTH mechanism [initial-response]");
		goto out;
	}
	memcpy(mech, args, mlen);
	mech[mlen] = '\0';
	/* Never log credentials: keep only "AUTH MECH" of the line. */
	if (sp != NULL)
		s->line[(size_t)(sp - s->line)] = '\0';
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
	if (auth_rate_exceeded(s))
		goto out;
	if (ascii_casecmp(mech, "PLAIN") == 0) {
		s->sasl = SASL_PLAIN;
		if (initial[0] != '\0') {
			sasl_plain(s, initial);
		} else {
			conn_printf(s->conn, "334 \r\n");
			s->phase = PH_SASL;
		}
	} else if (ascii_casecmp(mech, "LOGIN") == 0) {
		s->sasl = SASL_LOGIN_USER;
		if (initial[0] != '\0') {
			sasl_login_user(s, initial);
		} else {
			conn_printf(s->conn, "334 VXNlcm5hbWU6\r\n");
			s->phase = PH_SASL;
		}
	} else {
		reply(s, 504, "5.5.4 Error: unrecognized authentication type");
	}
out:
	/* The initial response is in the line after the NUL put there. */
	explicit_bzero(
	    s->line + strlen(s->line), sizeof(s->line) - strlen(s->line));
}

/* -------- the command loop -------- */

/*
 * The first octet that has no place in a command line, or -1.  Commands
 * are text (RFC 5321 sections 2.3.1 and 4.1.1: SP-separated printable
 * ASCII; SMTPUTF8 allows UTF-8 in addresses, which the parsers check): NUL,
 * CR, the other controls and DEL are refused, never cut at or ignored.
 */
static int
forbidden_octet(const char *line, size_t len)
{
	size_t i;

	for (i = 0; i < len; i++) {
		unsigned char c = (unsigned char)line[i];

		if (c < 0x20 || c == 0x7f)
			return c;
	}
	return -1;
}

static void
do_command(struct session *s, size_t len)
{
	const char *args;
	enum smtp_verb verb;
	size_t limit = SMTP_CMDLINE_MAX;
	int bad = forbidden_octet(s->line, len);

	s->ncommands++;
	if (bad >= 0) {
		char *at = memchr(s->line, bad, len);

		/* Log what can be logged: the line up to the octet. */
		*at = '\0';
		reply(s, 500,
		    "5.5.2 Error: command contains a forbidden octet "
		    "(0x%02x)",
		    bad);
		return;
	}
	verb = parse_verb(s->line, &args);
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

static enum step
step_command(struct session *s)
{
	bool too_long, bare_lf;
	size_t len;
	enum conn_status st;
	enum step r;

	if (s->errors >= s->cfg->max_errors) {
		metrics_inc(M_REJECT_ERRORS);
		reply(s, 421, "4.7.0 %s Error: too many errors",
		    s->cfg->hostname);
		return close_session(s);
	}
	/* Invariant 3: a client that does not read its replies gets no
	 * more of them. */
	if (conn_out_pending(s->conn) > CONN_OUTBUF / 2 &&
	    (r = flush_or_wait(s)) != STEP_NEXT)
		return r;
	st = conn_try_line(
	    s->conn, s->line, sizeof(s->line), &len, &too_long, &bare_lf);
	if (st == CONN_AGAIN)
		return wait_line(s);
	if (st != CONN_OK)
		return STEP_END;
	s->deadline = 0;
	if (too_long) {
		s->line[0] = '\0';
		s->ncommands++;
		reply(s, 500, "5.5.2 Error: line too long");
	} else {
		do_command(s, len);
	}
	return s->quit ? close_session(s) : STEP_NEXT;
}

/* Send the last replies (5 seconds at most), then end. */
static enum step
step_close(struct session *s)
{
	int64_t limit = now_ms() + 5000;

	if (s->wdeadline == 0 || s->wdeadline > limit)
		s->wdeadline = limit;
	return flush_or_wait(s) == STEP_WAIT ? STEP_WAIT : STEP_END;
}

/* -------- events and the life cycle -------- */

/* The client's address as text: ip, port, and the address literal. */
static void
set_client_address(struct session *s, const struct sockaddr *sa)
{
	sockaddr_ntop(sa, s->ip, sizeof(s->ip));
	s->port = sockaddr_port(sa);
	if (strchr(s->ip, ':') != NULL)
		snprintf(s->iplit, sizeof(s->iplit), "[IPv6:%s]", s->ip);
	else
		snprintf(s->iplit, sizeof(s->iplit), "[%s]", s->ip);
}

/*
 * The client as the balancer's PROXY header names it: its address is the
 * one relay_networks, limits, logs, the Received header and the queue
 * see.  LOCAL (a balancer's health check) keeps the balancer's own.  The
 * client is admitted here, as the acceptor admits others.  False after a
 * 421 when it may not be served.
 */
static bool
proxy_apply(struct session *s, const struct proxy_hdr *h)
{
	const struct config *cfg = s->cfg;
	const struct sockaddr *sa = h->local ? (const struct sockaddr *)&s->peer
	                                     : (const struct sockaddr *)&h->src;
	char text[256];

	snprintf(s->proxy_from, sizeof(s->proxy_from), "%s", s->ip);
	set_client_address(s, sa);
	s->trusted = cidr_match(cfg->relay_networks, cfg->nrelay_networks, sa);
	anvil_key(
	    sa, cfg->client_ipv4_prefix, cfg->client_ipv6_prefix, &s->client);
	if (client_admit(s->srv, cfg, &s->client, s->trusted, s->ip, "smtpd",
	        text, sizeof(text))) {
		s->counted = true;
		return true;
	}
	conn_write(s->conn, text, strlen(text));
	return false;
}

/*
 * The PROXY header, before anything else (a /proxy listener): read with
 * MSG_PEEK so that not one octet after it is taken from the connection
 * (the client's TLS hello may follow at once), at most PROXY_MAX octets,
 * within command_timeout and 10 s.  Without a valid one: 421, never 220.
 */
static enum step
step_proxy(struct session *s)
{
	int fd = conn_fd(s->conn);
	struct proxy_hdr h;
	char why[WHY_MAX];
	enum proxy_status st;
	ssize_t n;

	if (s->deadline == 0) {
		int t =
		    s->cfg->command_timeout < 10 ? s->cfg->command_timeout : 10;

		s->deadline = now_ms() + (int64_t)t * 1000;
	}
	if (s->proxy_buf == NULL)
		s->proxy_buf = xmalloc(PROXY_MAX);
	n = recv(fd, s->proxy_buf + s->proxy_len, PROXY_MAX - s->proxy_len,
	    MSG_PEEK | MSG_DONTWAIT);
	if (n < 0 &&
	    (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
		return park(s, POLLIN, s->deadline);
	if (n <= 0)
		return STEP_END; /* gone before a word */
	st = proxy_parse(s->proxy_buf, s->proxy_len + (size_t)n, &h, why);
	if (st == PROXY_MORE && s->proxy_len + (size_t)n < PROXY_MAX) {
		/* Every octet so far is the header's: take them. */
		if (recv(fd, s->proxy_buf + s->proxy_len, (size_t)n,
		        MSG_DONTWAIT) != n)
			return STEP_END;
		s->proxy_len += (size_t)n;
		return park(s, POLLIN, s->deadline);
	}
	if (st != PROXY_OK) {
		metrics_inc(M_REJECT_PROXY);
		log_warn("smtpd", "reject: proxy=%s listener=%s: %s", s->ip,
		    s->listener,
		    st == PROXY_MORE ? "PROXY header too long" : why);
		reply(s, 421, "4.7.0 %s Error: no valid PROXY header",
		    s->cfg->hostname);
		return close_session(s);
	}
	/* Take the rest of the header, and nothing after it. */
	n = (ssize_t)(h.used - s->proxy_len);
	if (n > 0 &&
	    recv(fd, s->proxy_buf + s->proxy_len, (size_t)n, MSG_DONTWAIT) != n)
		return STEP_END;
	free(s->proxy_buf);
	s->proxy_buf = NULL;
	s->deadline = 0;
	if (!proxy_apply(s, &h))
		return close_session(s);
	s->phase = PH_START;
	return STEP_NEXT;
}

static enum step
on_start(struct session *s)
{
	log_info("smtpd", "connect from %s:%d listener=%s%s%s%s", s->iplit,
	    s->port, s->listener, s->trusted ? " trusted" : "",
	    s->proxy_from[0] ? " proxy=" : "", s->proxy_from);
	/* RFC 8314: on an implicit-TLS port the handshake comes first. */
	if (s->kind == LISTEN_SMTPS) {
		s->phase = PH_HANDSHAKE;
	} else {
		conn_printf(
		    s->conn, "220 %s ESMTP sluice\r\n", s->cfg->hostname);
		s->phase = PH_COMMAND;
	}
	return STEP_NEXT;
}

static enum step
on_timeout(struct session *s)
{
	if (s->writing || s->phase == PH_CLOSE) {
		if (s->phase != PH_CLOSE)
			log_info("smtpd",
			    "client=%s timeout: it does not read our "
			    "replies",
			    s->iplit);
		metrics_inc(M_REJECT_TIMEOUT);
		return STEP_END;
	}
	switch (s->phase) {
	case PH_HANDSHAKE:
		tls_failed(s, "timeout");
		return STEP_END;
	case PH_DELAY:
		return STEP_NEXT; /* the delay is over */
	default:
		return give_up(s, CONN_TIMEOUT);
	}
}

static enum step
on_stop(struct session *s)
{
	if (s->writing || s->phase == PH_CLOSE)
		return STEP_END;
	switch (s->phase) {
	case PH_HANDSHAKE:
		tls_failed(s, "shutting down");
		return STEP_END;
	default:
		return give_up(s, CONN_STOPPED);
	}
}

static enum step
step(struct session *s)
{
	switch (s->phase) {
	case PH_PROXY:
		return step_proxy(s);
	case PH_START:
		return on_start(s);
	case PH_HANDSHAKE:
		return step_handshake(s);
	case PH_COMMAND:
		return step_command(s);
	case PH_DATA:
		return step_data(s);
	case PH_BDAT:
		return step_bdat(s);
	case PH_SASL:
		return step_sasl(s);
	case PH_DELAY:
		return step_delay(s);
	case PH_CLOSE:
		return step_close(s);
	}
	return STEP_END;
}

struct session *
session_new(struct server *srv, int fd, const struct sockaddr_storage *peer,
    const struct listen_addr *la, bool trusted, const struct anvil_key *key)
{
	struct session *s = xcalloc(1, sizeof(*s));
	const struct sockaddr *sa = (const struct sockaddr *)peer;

	s->srv = srv;
	s->cfg = holder_get(srv->config, &s->cfg_ref);
	s->conn = conn_new(fd);
	s->wait.s = s;
	s->wait.fd = fd;
	s->client = *key;
	s->started = now_ms();
	s->phase = la->proxy ? PH_PROXY : PH_START;
	s->counted = !la->proxy;
	s->peer = *peer;
	set_client_address(s, sa);
	snprintf(s->listener, sizeof(s->listener), "%s", la->text);
	s->trusted = trusted;
	s->kind = la->kind;
	s->state = SS_INIT;
	atomic_fetch_add(&srv->sessions, 1);
	return s;
}

struct sess_wait *
session_wait(struct session *s)
{
	return &s->wait;
}

void
session_shrink(struct session *s)
{
	free(s->decoded);
	s->decoded = NULL;
	/* A message being received holds at most QUEUE_PARK_MIN octets
	 * while the session waits (a BDAT one also between chunks). */
	if (s->phase == PH_DATA)
		queue_msg_park(s->data.msg);
	queue_msg_park(s->bdat.msg);
	conn_shrink(s->conn);
}

static void
session_end(struct session *s)
{
	struct server *srv = s->srv;

	reset_transaction(s);
	log_info("smtpd",
	    "disconnect from %s commands=%d mails=%d rcpts=%d "
	    "errors=%d in=%llu out=%llu duration_ms=%lld",
	    s->iplit, s->ncommands, s->nmails, s->nrcpts_total, s->errors,
	    (unsigned long long)conn_bytes_in(s->conn),
	    (unsigned long long)conn_bytes_out(s->conn),
	    (long long)(now_ms() - s->started));
	conn_free(s->conn);
	if (s->counted)
		anvil_disconnect(srv->anvil, &s->client, now_ms());
	free(s->proxy_buf);
	holder_put(s->cfg_ref);
	free(s->decoded);
	explicit_bzero(s, sizeof(*s));
	free(s);
	atomic_fetch_sub(&srv->sessions, 1);
}

bool
session_run(struct session *s, enum sess_event ev)
{
	enum step r = STEP_NEXT;

	switch (ev) {
	case EV_START:
		break;
	case EV_READY:
		conn_mark_ready(s->conn);
		break;
	case EV_TIMEOUT:
		r = on_timeout(s);
		break;
	case EV_STOP:
		r = on_stop(s);
		break;
	}
	while (r == STEP_NEXT)
		r = step(s);
	if (r == STEP_END) {
		session_end(s);
		return false;
	}
	return true;
}
