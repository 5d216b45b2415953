/*
 * smtpc.c - the outbound SMTP client (see smtpc.h).
 *
 * Threads: one delivery thread per struct smtpc; no shared state.
 * Invariants:
 *  1. The remote server is not trusted: replies are read by smtpwire.c,
 *     which bounds every line and copies only the first, sanitized, into
 *     a fixed buffer.
 *  2. Message data is streamed from the queue a chunk at a time, with
 *     dot-stuffing (DATA) or as BDAT chunks; it is never whole in memory.
 */
#include "smtpc.h"
#include "base64.h"
#include "config.h"
#include "conn.h"
#include "log.h"
#include "smtpwire.h"
#include "tls.h"
#include "vocab.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct smtpc {
	struct conn *conn;
	struct smtpc_opts o; /* a copy: the caller's may not outlive us */
	char host[DNS_NAME_MAX + 80]; /* "name[ip]:port" for messages */
	bool esmtp;
	struct smtp_ehlo ext; /* what EHLO advertised (smtpwire.h) */
	char tls_desc[128];
	const char *security; /* smtpc_security */
	char dane_what[64];   /* the TLSA record that authenticated it */
	bool broken;
	bool stale;    /* the last transaction broke before any reply */
	bool rset_due; /* the last one ended early: RSET before the next */
};

/*
 * Turn what the wire reported into `why`; false when it failed.  `r` is
 * the reply read (its text the offending line when it is malformed).
 */
static bool
wire_ok(struct smtpc *c, enum smtpwire_status st, const struct smtp_reply *r,
    char *why)
{
	switch (st) {
	case SMTPWIRE_OK:
		return true;
	case SMTPWIRE_TOO_LONG:
		why_set(why, "5.5.0 command too long");
		return false;
	case SMTPWIRE_MALFORMED:
		/* A well-formed continuation line here means the reply went
		 * on past SMTPWIRE_LINES_MAX lines, or changed its code. */
		if (r->text[0] >= '2' && r->text[0] <= '5' &&
		    r->text[1] >= '0' && r->text[1] <= '9' &&
		    r->text[2] >= '0' && r->text[2] <= '9' && r->text[3] == '-')
			why_set(why,
			    "4.5.0 %s: malformed reply: more than %d lines, or "
			    "lines with different codes (%.60s...)",
			    c->host, SMTPWIRE_LINES_MAX, r->text);
		else
			why_set(why, "4.5.0 %s: malformed reply: %.80s",
			    c->host, r->text);
		break;
	case SMTPWIRE_TIMEOUT:
	case SMTPWIRE_LOST:
		why_set(why, "4.4.2 %s: %s", c->host,
		    st == SMTPWIRE_TIMEOUT ? "timeout waiting for reply"
		                           : "connection lost");
		break;
	}
	c->broken = true;
	return false;
}

/* Read one reply (all its lines); false when the connection failed. */
static bool
read_reply(struct smtpc *c, int timeout, struct smtp_reply *r, char *why)
{
	return wire_ok(c,
	    smtpwire_read_reply(c->conn, deadline_in(timeout), r, NULL, NULL),
	    r, why);
}

static bool command(struct smtpc *c, struct smtp_reply *r, char *why,
    const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* Send one command and read its reply. */
static bool
command(struct smtpc *c, struct smtp_reply *r, char *why, const char *fmt, ...)
{
	enum smtpwire_status st;
	va_list ap;

	va_start(ap, fmt);
	st = smtpwire_vcommand(
	    c->conn, deadline_in(c->o.command_timeout), r, NULL, NULL, fmt, ap);
	va_end(ap);
	return wire_ok(c, st, r, why);
}

static bool
ehlo(struct smtpc *c, struct smtp_reply *r, char *why)
{
	c->esmtp = false;
	memset(&c->ext, 0, sizeof(c->ext));
	if (!wire_ok(c,
	        smtpwire_command(c->conn, deadline_in(c->o.command_timeout), r,
	            smtpwire_ehlo_each, &c->ext, "EHLO %s", c->o.helo),
	        r, why))
		return false;
	if (r->code == 250) {
		c->esmtp = true;
		return true;
	}
	/* RFC 5321 section 3.2: fall back to HELO. */
	return command(c, r, why, "HELO %s", c->o.helo);
}

static int
connect_to(const struct mx_host *h, int timeout, char *why)
{
	int fd = smtpwire_connect(&h->addr, h->addrlen, deadline_in(timeout));

	if (fd < 0)
		why_set(why, "4.4.1 connect to %s[%s]:%d: %s", h->name, h->ip,
		    sockaddr_port((const struct sockaddr *)&h->addr),
		    strerror(errno));
	return fd;
}

/* Note the TLS-RPT result of this session's TLS (smtpc_opts.tls_result). */
static void
tls_note(struct smtpc *c, const char *type)
{
	struct smtpc_tls_result *t = c->o.tls_result;

	if (t == NULL)
		return;
	t->tried = true;
	snprintf(t->type, sizeof(t->type), "%s", type);
}

static bool
start_tls(struct smtpc *c, char *why)
{
	char err[WHY_MAX], v[32], cipher[64];
	int bits;
	enum conn_status st;

	st = conn_tls_connect(c->conn, c->o.tls_creds, c->o.tls_name,
	    c->o.tls == OUTBOUND_TLS_VERIFY, deadline_in(c->o.command_timeout),
	    err);
	if (st != CONN_OK) {
		why_set(
		    why, "4.7.5 %s: TLS handshake failed: %s", c->host, err);
		tls_note(c, c->o.tls == OUTBOUND_TLS_VERIFY
		                ? conn_tls_verify_result(c->conn)
		                : "validation-failure");
		c->broken = true;
		return false;
	}
	if (c->o.tls == OUTBOUND_TLS_DANE &&
	    conn_tls_dane(c->conn, c->o.tlsa, c->o.ntlsa, c->o.dane_names,
	        c->o.ndane_names, c->dane_what, sizeof(c->dane_what),
	        err) != 0) {
		why_set(why, "4.7.5 %s: DANE authentication failed: %s",
		    c->host, err);
		tls_note(c, "tlsa-invalid");
		c->broken = true;
		return false;
	}
	tls_note(c, "");
	conn_tls_info(c->conn, v, sizeof(v), cipher, sizeof(cipher), &bits);
	snprintf(c->tls_desc, sizeof(c->tls_desc), "%s %s", v, cipher);
	c->security = c->o.tls == OUTBOUND_TLS_DANE ? "dane"
	              : c->o.tls == OUTBOUND_TLS_VERIFY
	                  ? (c->o.sts ? "sts" : "verified")
	                  : "encrypted";
	return true;
}

static enum res
authenticate(struct smtpc *c, struct smtp_reply *r, char *why)
{
	const char *u = c->o.auth_user,
	           *p = c->o.auth_pass ? c->o.auth_pass : "";
	unsigned char plain[600];
	char enc[900];
	size_t ul = strlen(u), pl = strlen(p);
	bool ok;

	if (!conn_tls_active(c->conn) && !c->o.auth_without_tls) {
		why_set(why, "4.7.0 %s: not sending the password without TLS",
		    c->host);
		return RES_TEMP;
	}
	if (ul + pl + 2 > sizeof(plain)) {
		why_set(why, "4.7.0 smarthost credentials too long");
		return RES_TEMP;
	}
	if (c->ext.auth_plain) {
		plain[0] = '\0';
		memcpy(plain + 1, u, ul);
		plain[1 + ul] = '\0';
		memcpy(plain + 2 + ul, p, pl);
		ok = base64_encode(plain, ul + pl + 2, enc, sizeof(enc)) >= 0 &&
		     command(c, r, why, "AUTH PLAIN %s", enc);
	} else if (c->ext.auth_login) {
		ok = base64_encode(u, ul, enc, sizeof(enc)) >= 0 &&
		     command(c, r, why, "AUTH LOGIN") && r->code == 334 &&
		     command(c, r, why, "%s", enc) && r->code == 334;
		if (ok)
			ok = base64_encode(p, pl, enc, sizeof(enc)) >= 0 &&
			     command(c, r, why, "%s", enc);
	} else {
		why_set(why, "4.7.0 %s offers no AUTH PLAIN or LOGIN", c->host);
		return RES_TEMP;
	}
	explicit_bzero(plain, sizeof(plain));
	explicit_bzero(enc, sizeof(enc));
	if (!ok && c->broken)
		return RES_TEMP;
	if (r->code != 235) {
		/* A rejected password defers: the admin can fix it. */
		why_set(why, "4.7.0 %s: authentication failed: %s", c->host,
		    r->text);
		return RES_TEMP;
	}
	return RES_OK;
}

enum res
smtpc_open(const struct mx_host *h, const struct smtpc_opts *o,
    struct smtpc **out, char *why)
{
	char label[sizeof(((struct smtpc *)0)->host)];
	int fd;

	*out = NULL;
	fd = connect_to(h, o->connect_timeout, why);
	if (fd < 0)
		return RES_TEMP;
	snprintf(label, sizeof(label), "%s[%s]:%d", h->name, h->ip,
	    sockaddr_port((const struct sockaddr *)&h->addr));
	return smtpc_start(fd, label, o, out, why);
}

enum res
smtpc_start(int fd, const char *label, const struct smtpc_opts *o,
    struct smtpc **out, char *why)
{
	struct smtpc *c = xcalloc(1, sizeof(*c));
	struct smtp_reply r;
	enum res res = RES_TEMP;

	*out = NULL;
	c->o = *o;
	c->security = "none";
	snprintf(c->host, sizeof(c->host), "%s", label);
	c->conn = conn_new(fd);
	conn_set_stop_fd(c->conn, o->stop_fd);
	if (o->tls_result != NULL) {
		struct sockaddr_storage ss;
		socklen_t sl = sizeof(ss);

		memset(o->tls_result, 0, sizeof(*o->tls_result));
		if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0)
			sockaddr_ntop((struct sockaddr *)&ss,
			    o->tls_result->local,
			    (unsigned)sizeof(o->tls_result->local));
	}
	if (o->implicit_tls && !start_tls(c, why))
		goto fail;
	if (!read_reply(c, o->command_timeout, &r, why))
		goto fail;
	if (r.code != 220) {
		why_set(
		    why, "4.4.1 %s refused the session: %s", c->host, r.text);
		goto fail;
	}
	if (!ehlo(c, &r, why))
		goto fail;
	if (r.code != 250) {
		why_set(
		    why, "4.4.1 %s refused EHLO and HELO: %s", c->host, r.text);
		goto fail;
	}
	if (!conn_tls_active(c->conn) && o->tls != OUTBOUND_TLS_NONE) {
		if (c->ext.starttls) {
			if (!command(c, &r, why, "STARTTLS"))
				goto fail;
			if (r.code == 220) {
				if (!start_tls(c, why) || !ehlo(c, &r, why))
					goto fail;
				if (r.code != 250) {
					why_set(why,
					    "4.4.1 %s refused EHLO "
					    "after STARTTLS: %s",
					    c->host, r.text);
					goto fail;
				}
			} else if (o->tls != OUTBOUND_TLS_MAY) {
				why_set(why, "4.7.5 %s refused STARTTLS: %s",
				    c->host, r.text);
				tls_note(c, "starttls-not-supported");
				goto fail;
			}
		} else if (o->tls != OUTBOUND_TLS_MAY) {
			tls_note(c, "starttls-not-supported");
			why_set(why,
			    "4.7.5 %s does not offer STARTTLS, "
			    "which %s requires",
			    c->host,
			    o->tls == OUTBOUND_TLS_DANE
			        ? "its TLSA records (DANE)"
			        : "the TLS policy");
			goto fail;
		}
	}
	if (o->auth_user != NULL && o->auth_user[0] != '\0' &&
	    (res = authenticate(c, &r, why)) != RES_OK)
		goto fail;
	/* Only needed during the handshake: */
	c->o.tls_name = NULL;
	c->o.tlsa = NULL;
	c->o.ntlsa = 0;
	c->o.dane_names = NULL;
	c->o.ndane_names = 0;
	c->o.tls_result = NULL; /* the caller's, for this open only */
	*out = c;
	return RES_OK;
fail:
	smtpc_close(c);
	return RES_TEMP;
}

enum res
smtpc_reset(struct smtpc *c)
{
	struct smtp_reply r;
	char why[WHY_MAX];

	c->rset_due = false;
	if (c->broken || !command(c, &r, why, "RSET") || r.code != 250) {
		c->broken = true;
		return RES_TEMP;
	}
	return RES_OK;
}

bool
smtpc_stale(const struct smtpc *c)
{
	return c->stale;
}

bool
smtpc_has_dsn(const struct smtpc *c)
{
	return c->ext.dsn;
}

bool
smtpc_has_requiretls(const struct smtpc *c)
{
	return c->ext.requiretls;
}

const char *
smtpc_security(const struct smtpc *c)
{
	return c->security;
}

const char *
smtpc_security_detail(const struct smtpc *c)
{
	return c->dane_what;
}

const char *
smtpc_tls_desc(const struct smtpc *c)
{
	return c->tls_desc;
}

void
smtpc_close(struct smtpc *c)
{
	if (c == NULL)
		return;
	if (c->conn != NULL && !c->broken)
		smtpwire_quit(c->conn, deadline_in(2));
	conn_free(c->conn);
	free(c);
}

/* ---- the transaction ---- */

/* DATA writer: the body callback's `put` for smtpwire_data_put. */
static int
put_stuffed(void *arg, const void *data, size_t len)
{
	smtpwire_data_put(arg, data, len);
	return 0;
}

/* BDAT writer: each piece becomes one chunk (RFC 3030). */
struct chunker {
	struct smtpc *c;
	int64_t left; /* octets still to send */
	bool failed;  /* a chunk was not accepted: res and why say how */
	enum res res;
	char why[sizeof(((struct smtp_reply *)0)->text)];
	struct smtp_reply r;
};

static enum res code_res(int code);

/*
 * Each chunk but the last must be answered 250 (RFC 3030 section 2): any
 * other reply ends the transaction.  A 4xx or 5xx is the server's verdict
 * on the message; any other reply (a 2xx that is not 250, such as 252 or
 * 221, or one we cannot read) means the server did not take the chunk as
 * it should, so the message was not delivered: k->res is then RES_TEMP
 * and the connection is not used again.
 */
static int
put_chunk(void *arg, const void *data, size_t len)
{
	struct chunker *k = arg;

	k->left -= (int64_t)len;
	conn_printf(
	    k->c->conn, "BDAT %zu%s\r\n", len, k->left <= 0 ? " LAST" : "");
	conn_write(k->c->conn, data, len);
	if (k->left <= 0)
		return 0; /* the caller reads the LAST reply */
	if (!read_reply(k->c, k->c->o.data_timeout, &k->r, k->why)) {
		char wire[sizeof(k->why)];

		snprintf(wire, sizeof(wire), "%s", k->why);
		snprintf(k->why, sizeof(k->why),
		    "%.400s (the reply to a BDAT chunk)", wire);
		k->res = RES_TEMP;
		k->failed = true;
		return 1;
	}
	if (k->r.code == 250)
		return 0;
	k->failed = true;
	if (k->r.code >= 400 && k->r.code <= 599) {
		k->res = code_res(k->r.code);
		snprintf(k->why, sizeof(k->why), "%s", k->r.text);
	} else {
		k->res = RES_TEMP;
		k->c->broken = true;
		why_set(k->why,
		    "4.5.0 %s: unexpected reply to a BDAT chunk: %s",
		    k->c->host, k->r.text);
	}
	return 1;
}

/* The verdict `r`, `text` on every recipient (`only_ok`: still accepted). */
static void
set_all(struct smtpc_rcpt *rcpts, int n, bool only_ok, enum smtpc_at at,
    enum res r, const char *text)
{
	int i;

	for (i = 0; i < n; i++) {
		if (only_ok && rcpts[i].result != RES_OK)
			continue;
		rcpts[i].result = r;
		rcpts[i].at = at;
		snprintf(rcpts[i].reply, sizeof(rcpts[i].reply), "%s", text);
	}
}

static enum res
code_res(int code)
{
	return code >= 500 ? RES_PERM : code >= 400 ? RES_TEMP : RES_OK;
}

/* Read the reply to one RCPT into its recipient. */
static bool
rcpt_reply(struct smtpc *c, struct smtpc_rcpt *rc, char *why)
{
	struct smtp_reply rr;

	if (!read_reply(c, c->o.command_timeout, &rr, why))
		return false;
	rc->result = code_res(rr.code);
	rc->at = SMTPC_AT_RCPT;
	snprintf(rc->reply, sizeof(rc->reply), "%s", rr.text);
	return true;
}

/*
 * One transaction of smtpc_send, phase by phase: each phase returns how
 * the transaction goes on.
 */
enum txn_step {
	TXN_NEXT,   /* on to the next phase */
	TXN_RSET,   /* over, the connection usable after RSET */
	TXN_BROKEN, /* the connection failed; t->why says how */
	TXN_DONE,   /* over: RES_OK, the verdicts are in the recipients */
	TXN_FAILED, /* over: RES_TEMP, the verdicts set, the connection gone */
};

struct txn {
	struct smtpc *c;
	const struct smtpc_msg *m;
	struct smtpc_rcpt *rcpts;
	int n;
	struct smtp_reply r; /* the last reply read */
	char why[WHY_MAX];
	bool use_bdat;   /* BDAT rather than DATA (CHUNKING) */
	bool data_piped; /* DATA goes with the RCPTs (PIPELINING) */
	bool answered;   /* the server answered something */
	int accepted;    /* recipients the server took */
};

/*
 * What the message needs that the server must offer (SMTPUTF8,
 * BINARYMIME, its SIZE): false, with every recipient refused, when the
 * server does not.
 */
static bool
txn_fits(struct txn *t)
{
	const struct smtp_ehlo *x = &t->c->ext;
	const struct smtpc_msg *m = t->m;

	if (m->smtputf8 && !x->smtputf8) {
		set_all(t->rcpts, t->n, false, SMTPC_AT_NONE, RES_PERM,
		    "5.6.7 the message needs SMTPUTF8, which the server "
		    "does not offer");
		return false;
	}
	if (m->requiretls && strcmp(t->c->security, "verified") != 0 &&
	    strcmp(t->c->security, "sts") != 0 &&
	    strcmp(t->c->security, "dane") != 0) {
		snprintf(t->why, sizeof(t->why),
		    "5.7.10 REQUIRETLS: the session with %.150s is not "
		    "authenticated TLS (%s)",
		    t->c->host, t->c->security);
		set_all(t->rcpts, t->n, false, SMTPC_AT_NONE, RES_PERM, t->why);
		return false;
	}
	if (m->requiretls && !x->requiretls) {
		snprintf(t->why, sizeof(t->why),
		    "5.7.30 REQUIRETLS support required: %.150s does not "
		    "offer it",
		    t->c->host);
		set_all(t->rcpts, t->n, false, SMTPC_AT_NONE, RES_PERM, t->why);
		return false;
	}
	if (m->body_type == BODY_BINARYMIME &&
	    !(x->chunking && x->binarymime)) {
		set_all(t->rcpts, t->n, false, SMTPC_AT_NONE, RES_PERM,
		    "5.6.3 the message is BINARYMIME, which the server does "
		    "not accept");
		return false;
	}
	if (x->size_limit > 0 && m->size > x->size_limit) {
		snprintf(t->why, sizeof(t->why),
		    "5.3.4 message size %lld exceeds the server's limit %lld",
		    (long long)m->size, x->size_limit);
		set_all(t->rcpts, t->n, false, SMTPC_AT_NONE, RES_PERM, t->why);
		return false;
	}
	return true;
}

/* MAIL's parameters: only those of extensions the server offered. */
static void
mail_params(
    const struct smtpc *c, const struct smtpc_msg *m, char *p, size_t len)
{
	size_t o = 0;

	p[0] = '\0';
	if (!c->esmtp)
		return;
	if (c->ext.size)
		o += (size_t)snprintf(
		    p + o, len - o, " SIZE=%lld", (long long)m->size);
	if (m->body_type == BODY_BINARYMIME)
		o += (size_t)snprintf(p + o, len - o, " BODY=BINARYMIME");
	else if (m->body_type == BODY_8BITMIME && c->ext.eightbit)
		o += (size_t)snprintf(p + o, len - o, " BODY=8BITMIME");
	if (m->smtputf8)
		o += (size_t)snprintf(p + o, len - o, " SMTPUTF8");
	if (c->ext.dsn && m->dsn_ret != RET_NONE)
		o += (size_t)snprintf(
		    p + o, len - o, " RET=%s", dsn_ret_name(m->dsn_ret));
	if (c->ext.dsn && m->envid != NULL && m->envid[0] != '\0')
		o += (size_t)snprintf(p + o, len - o, " ENVID=%s", m->envid);
	if (m->requiretls && c->ext.requiretls)
		snprintf(p + o, len - o, " REQUIRETLS");
}

/* RCPT's parameters (DSN: NOTIFY, ORCPT). */
static void
rcpt_params(
    const struct smtpc *c, const struct smtpc_rcpt *rc, char *p, size_t len)
{
	p[0] = '\0';
	if (!c->ext.dsn)
		return;
	if (rc->notify != 0) {
		char nt[NOTIFY_TEXT_MAX];

		notify_text(rc->notify, nt, sizeof(nt));
		snprintf(p, len, " NOTIFY=%s", nt);
	}
	if (rc->orcpt != NULL)
		snprintf(
		    p + strlen(p), len - strlen(p), " ORCPT=%s", rc->orcpt);
}

/* MAIL FROM; without PIPELINING, its reply. */
static enum txn_step
txn_mail(struct txn *t)
{
	struct smtpc *c = t->c;
	/* SIZE, BODY, SMTPUTF8, RET, ENVID, REQUIRETLS */
	char params[SMTP_ENVID_MAX + 180];

	mail_params(c, t->m, params, sizeof(params));
	conn_printf(c->conn, "MAIL FROM:<%s>%s\r\n", t->m->sender, params);
	if (c->ext.pipelining)
		return TXN_NEXT;
	if (!read_reply(c, c->o.command_timeout, &t->r, t->why))
		return TXN_BROKEN;
	t->answered = true;
	return TXN_NEXT;
}

/*
 * With m->all_or_none, a recipient refused for now stops the message for
 * all: the accepted ones are not sent it either (the caller tries the
 * whole message again later, so nobody gets it twice).
 */
static enum txn_step
txn_all_or_none(struct txn *t)
{
	int i;

	if (!t->m->all_or_none)
		return TXN_NEXT;
	for (i = 0; i < t->n; i++)
		if (t->rcpts[i].result == RES_TEMP)
			break;
	if (i == t->n)
		return TXN_NEXT;
	set_all(t->rcpts, t->n, true, SMTPC_AT_NONE, RES_TEMP,
	    "4.5.3 not sent: another recipient was refused for now");
	t->accepted = 0;
	return TXN_RSET;
}

/*
 * The RCPTs (and, pipelined, DATA after them) and their replies: with
 * PIPELINING they come now, in order (RFC 2920), MAIL's first.  On to
 * the data when MAIL was accepted.
 */
static enum txn_step
txn_rcpts(struct txn *t)
{
	struct smtpc *c = t->c;
	bool piped = c->ext.pipelining;
	int i;

	for (i = 0; i < t->n; i++) {
		char rp[SMTP_ORCPT_MAX + NOTIFY_TEXT_MAX + 32];

		if (!piped && code_res(t->r.code) != RES_OK)
			break; /* MAIL refused */
		rcpt_params(c, &t->rcpts[i], rp, sizeof(rp));
		conn_printf(
		    c->conn, "RCPT TO:<%s>%s\r\n", t->rcpts[i].address, rp);
		if (!piped && !rcpt_reply(c, &t->rcpts[i], t->why))
			return TXN_BROKEN;
	}
	if (t->data_piped)
		conn_printf(c->conn, "DATA\r\n");
	if (piped) {
		if (!read_reply(c, c->o.command_timeout, &t->r, t->why))
			return TXN_BROKEN;
		t->answered = true;
		for (i = 0; i < t->n; i++)
			if (!rcpt_reply(c, &t->rcpts[i], t->why))
				return TXN_BROKEN;
	}
	if (code_res(t->r.code) != RES_OK) {
		set_all(t->rcpts, t->n, false, SMTPC_AT_MAIL,
		    code_res(t->r.code), t->r.text);
		/* DATA was sent too: read its (failing) reply. */
		if (t->data_piped &&
		    !read_reply(c, c->o.command_timeout, &t->r, t->why))
			return TXN_BROKEN;
		return TXN_RSET;
	}
	for (i = 0; i < t->n; i++)
		if (t->rcpts[i].result == RES_OK)
			t->accepted++;
	return txn_all_or_none(t);
}

/* DATA (unless pipelined already), its 354, the dot-stuffed body. */
static enum txn_step
txn_data(struct txn *t)
{
	struct smtpc *c = t->c;
	struct smtpwire_data d;

	if (!t->data_piped) {
		if (t->accepted == 0)
			return TXN_RSET;
		conn_printf(c->conn, "DATA\r\n");
	}
	if (!read_reply(c, c->o.command_timeout, &t->r, t->why))
		return TXN_BROKEN;
	if (t->accepted == 0)
		return TXN_RSET; /* RFC 2920: DATA after all RCPTs failed */
	if (t->r.code != 354) {
		set_all(t->rcpts, t->n, true, SMTPC_AT_DATA,
		    code_res(t->r.code) == RES_OK ? RES_TEMP
		                                  : code_res(t->r.code),
		    t->r.text);
		return TXN_RSET;
	}
	smtpwire_data_begin(&d, c->conn);
	if (t->m->body(t->m->body_arg, put_stuffed, &d, t->why) != RES_OK) {
		set_all(t->rcpts, t->n, true, SMTPC_AT_DATA, RES_TEMP, t->why);
		c->broken = true;
		return TXN_FAILED;
	}
	smtpwire_data_end(&d);
	return TXN_NEXT;
}

/* The body as BDAT chunks (RFC 3030), the last one LAST. */
static enum txn_step
txn_bdat(struct txn *t)
{
	struct smtpc *c = t->c;
	struct chunker k;

	if (t->accepted == 0)
		return TXN_RSET;
	memset(&k, 0, sizeof(k));
	k.c = c;
	k.left = t->m->size;
	if (t->m->size == 0) {
		conn_printf(c->conn, "BDAT 0 LAST\r\n");
	} else if (t->m->body(t->m->body_arg, put_chunk, &k, t->why) !=
	           RES_OK) {
		if (k.failed) {
			set_all(
			    t->rcpts, t->n, true, SMTPC_AT_DATA, k.res, k.why);
			return c->broken ? TXN_FAILED : TXN_RSET;
		}
		set_all(t->rcpts, t->n, true, SMTPC_AT_DATA, RES_TEMP, t->why);
		c->broken = true;
		return TXN_FAILED;
	}
	return TXN_NEXT;
}

/* The verdict on the message: the reply to its end. */
static enum txn_step
txn_verdict(struct txn *t)
{
	struct smtpc *c = t->c;

	if (!read_reply(c, c->o.data_timeout, &t->r, t->why))
		return TXN_BROKEN;
	if (t->r.code < 400 && t->r.code != 250 && t->r.code != 251) {
		/* Not a verdict we know: the message is not delivered. */
		why_set(t->why,
		    "4.5.0 %s: unexpected reply to the end of data: %s",
		    c->host, t->r.text);
		set_all(t->rcpts, t->n, true, SMTPC_AT_DATA, RES_TEMP, t->why);
		c->broken = true;
		return TXN_FAILED;
	}
	set_all(t->rcpts, t->n, true, SMTPC_AT_DATA, code_res(t->r.code),
	    t->r.text);
	return TXN_DONE;
}

/* How the transaction ended, as smtpc_send returns it. */
static enum res
txn_end(struct txn *t, enum txn_step step)
{
	struct smtpc *c = t->c;
	int i;

	switch (step) {
	case TXN_NEXT:
	case TXN_DONE:
		return RES_OK;
	case TXN_RSET:
		/* Sent before the next transaction, if one comes: not before
		 * QUIT (RFC 5321 section 4.1.1.5 needs none). */
		c->rset_due = true;
		return RES_OK;
	case TXN_BROKEN:
		/* No reply to MAIL: the connection was gone before we used
		 * it.  Whatever was accepted is not delivered until the final
		 * reply. */
		c->stale = !t->answered;
		for (i = 0; i < t->n; i++)
			if (t->rcpts[i].result != RES_PERM) {
				t->rcpts[i].result = RES_TEMP;
				t->rcpts[i].at = SMTPC_AT_NONE;
				snprintf(t->rcpts[i].reply,
				    sizeof(t->rcpts[i].reply), "%s", t->why);
			}
		c->broken = true;
		return RES_TEMP;
	case TXN_FAILED:
		break;
	}
	return RES_TEMP;
}

enum res
smtpc_send(
    struct smtpc *c, const struct smtpc_msg *m, struct smtpc_rcpt *rcpts, int n)
{
	struct txn t = {.c = c, .m = m, .rcpts = rcpts, .n = n};
	enum txn_step step;

	t.use_bdat = c->ext.chunking;
	t.data_piped = c->ext.pipelining && !t.use_bdat && !m->all_or_none;
	c->stale = false;
	set_all(
	    rcpts, n, false, SMTPC_AT_NONE, RES_TEMP, "4.4.2 not attempted");
	if (c->rset_due && smtpc_reset(c) != RES_OK) {
		/* Nothing of this message was sent: it may go again at once
		 * on a new connection. */
		c->stale = true;
		return RES_TEMP;
	}
	if (!txn_fits(&t))
		return RES_OK;
	step = txn_mail(&t);
	if (step == TXN_NEXT)
		step = txn_rcpts(&t);
	if (step == TXN_NEXT)
		step = t.use_bdat ? txn_bdat(&t) : txn_data(&t);
	if (step == TXN_NEXT)
		step = txn_verdict(&t);
	return txn_end(&t, step);
}
