/*
 * dkim.c - DKIM signing (see dkim.h): keys, relaxed/relaxed
 * canonicalization while the message streams in, the signature field.
 *
 * Invariants:
 *  1. The body is canonicalized as it comes (RFC 6376 section 3.4.4):
 *     a run of WSP is one SP, WSP at a line's end goes, empty lines at the
 *     end go; the state (a CR waiting for its LF, pending WSP, pending
 *     line ends) crosses put() boundaries, so any cut gives the same hash.
 *  2. A body that is empty or only empty lines hashes as the empty string
 *     (RFC 6376 section 3.4.4); a non-empty one ends in CRLF.
 *  3. Key tables are never changed after dkim_keys_load.
 */
#include "dkim.h"
#include "base64.h"
#include "strbuf.h"
#include "sync.h"

#include <errno.h>
#include <fcntl.h>
#include <gnutls/abstract.h>
#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct dkim_key {
	char *domain, *selector;
	enum dkim_alg alg;
	gnutls_privkey_t pk;
};

struct dkim_keys {
	struct dkim_key *v;
	int n;
};

/* ---- keys ---- */

static int
load_key(const char *path, gnutls_privkey_t *pk, enum dkim_alg *alg,
    unsigned *bits, char *why)
{
	gnutls_datum_t pem = {NULL, 0};
	int rc;

	*pk = NULL;
	rc = gnutls_load_file(path, &pem);
	if (rc < 0) {
		why_set(why, "DKIM key %s: cannot read it: %s", path,
		    gnutls_strerror(rc));
		return -1;
	}
	gnutls_privkey_init(pk);
	rc = gnutls_privkey_import_x509_raw(
	    *pk, &pem, GNUTLS_X509_FMT_PEM, NULL, 0);
	gnutls_memset(pem.data, 0, pem.size);
	gnutls_free(pem.data);
	if (rc < 0) {
		why_set(why, "DKIM key %s: not a private key in PEM: %s", path,
		    gnutls_strerror(rc));
		goto fail;
	}
	switch (gnutls_privkey_get_pk_algorithm(*pk, bits)) {
	case GNUTLS_PK_RSA:
		*alg = DKIM_RSA_SHA256;
		if (*bits < 1024) {
			why_set(why,
			    "DKIM key %s: RSA of %u bits; at least 1024 "
			    "(RFC 8301), better 2048",
			    path, *bits);
			goto fail;
		}
		return 0;
	case GNUTLS_PK_EDDSA_ED25519:
		*alg = DKIM_ED25519_SHA256;
		return 0;
	default:
		why_set(why, "DKIM key %s: neither RSA nor Ed25519", path);
		goto fail;
	}
fail:
	gnutls_privkey_deinit(*pk);
	*pk = NULL;
	return -1;
}

struct dkim_keys *
dkim_keys_load(const struct dkim_key_conf *conf, int n, char *warn, char *why)
{
	struct dkim_keys *k = xcalloc(1, sizeof(*k));
	int i;

	warn[0] = '\0';
	k->v = xcalloc((size_t)(n > 0 ? n : 1), sizeof(*k->v));
	for (i = 0; i < n; i++) {
		struct dkim_key *key = &k->v[i];
		unsigned bits = 0;

		if (load_key(conf[i].path, &key->pk, &key->alg, &bits, why) !=
		    0) {
			dkim_keys_free(k);
			return NULL;
		}
		key->domain = xstrdup(conf[i].domain);
		key->selector = xstrdup(conf[i].selector);
		k->n++;
		if (key->alg == DKIM_RSA_SHA256 && bits < 2048)
			why_set(warn,
			    "DKIM key %s: RSA of %u bits; 2048 or more is "
			    "recommended (RFC 8301)",
			    conf[i].path, bits);
	}
	return k;
}

void
dkim_keys_free(struct dkim_keys *k)
{
	int i;

	if (k == NULL)
		return;
	for (i = 0; i < k->n; i++) {
		gnutls_privkey_deinit(k->v[i].pk);
		free(k->v[i].domain);
		free(k->v[i].selector);
	}
	free(k->v);
	free(k);
}

int
dkim_keys_count(const struct dkim_keys *k, const char *domain)
{
	int i, n = 0;

	for (i = 0; k != NULL && i < k->n; i++)
		if (ascii_casecmp(k->v[i].domain, domain) == 0)
			n++;
	return n;
}

int
dkim_keys_total(const struct dkim_keys *k)
{
	return k != NULL ? k->n : 0;
}

/* ---- the signer: header held, body canonicalized and hashed ---- */

/* SHA-256 fails to start only without memory: as xmalloc, abort. */
static void
sha256_init(gnutls_hash_hd_t *h)
{
	if (gnutls_hash_init(h, GNUTLS_DIG_SHA256) < 0) {
		fprintf(stderr, "sluice: fatal: cannot start SHA-256\n");
		abort();
	}
}

struct dkim_signer {
	struct strbuf head; /* the header, without the empty line */
	size_t line_len;    /* octets of the current header line so far */
	unsigned char last; /* the header's last octet */
	bool head_done;     /* the empty line was seen */
	bool head_over;     /* longer than DKIM_HEADER_MAX */
	gnutls_hash_hd_t body;
	/* body canonicalization (invariant 1) */
	bool cr;      /* a CR waits for its LF */
	bool wsp;     /* WSP seen since the last other octet of the line */
	bool any;     /* some content was emitted */
	size_t crlfs; /* line ends not emitted yet */
	unsigned char out[4096];
	size_t olen;
	bool finished;
	unsigned char bh[32];
};

struct dkim_signer *
dkim_signer_new(void)
{
	struct dkim_signer *s = xcalloc(1, sizeof(*s));

	sha256_init(&s->body);
	return s;
}

void
dkim_signer_free(struct dkim_signer *s)
{
	if (s == NULL)
		return;
	if (!s->finished)
		gnutls_hash_deinit(s->body, NULL);
	strbuf_free(&s->head);
	free(s);
}

static void
emit(struct dkim_signer *s, const void *p, size_t n)
{
	if (s->olen + n > sizeof(s->out)) {
		gnutls_hash(s->body, s->out, s->olen);
		s->olen = 0;
	}
	if (n > sizeof(s->out)) {
		gnutls_hash(s->body, p, n);
		return;
	}
	memcpy(s->out + s->olen, p, n);
	s->olen += n;
}

/* One octet of content (not WSP, not a line end) of the body. */
static void
body_content(struct dkim_signer *s, unsigned char c)
{
	for (; s->crlfs > 0; s->crlfs--)
		emit(s, "\r\n", 2);
	if (s->wsp)
		emit(s, " ", 1);
	s->wsp = false;
	emit(s, &c, 1);
	s->any = true;
}

static void
body_octet(struct dkim_signer *s, unsigned char c)
{
	if (s->cr) {
		s->cr = false;
		if (c == '\n') {
			s->wsp = false; /* WSP at the end of a line goes */
			s->crlfs++;
			return;
		}
		body_content(s, '\r'); /* a bare CR is content */
	}
	if (c == '\r')
		s->cr = true;
	else if (c == ' ' || c == '\t')
		s->wsp = true;
	else
		body_content(s, c);
}

/*
 * Header octets up to and including the empty line, a line at a time;
 * returns the octets taken.
 */
static size_t
head_put(struct dkim_signer *s, const unsigned char *p, size_t len)
{
	size_t i = 0;

	while (i < len && !s->head_done) {
		const unsigned char *nl = memchr(p + i, '\n', len - i);
		size_t n = nl != NULL ? (size_t)(nl - p) - i : len - i;
		size_t room = DKIM_HEADER_MAX - s->head.len;
		size_t line = s->line_len + n;
		unsigned char last = n > 0 ? p[i + n - 1] : s->last;

		if (n > room) {
			strbuf_add(&s->head, p + i, room);
			s->head_over = true;
		} else {
			strbuf_add(&s->head, p + i, n);
		}
		i += n;
		if (nl == NULL) {
			s->line_len = line;
			s->last = last;
			break;
		}
		i++; /* the LF */
		if (line == 1 && last == '\r') {
			/* The empty line: the header ends before it. */
			s->head_done = true;
			if (!s->head_over)
				strbuf_truncate(&s->head, s->head.len - 1);
			break;
		}
		if (s->head.len < DKIM_HEADER_MAX)
			strbuf_add(&s->head, "\n", 1);
		else
			s->head_over = true;
		s->line_len = 0;
		s->last = '\n';
	}
	return i;
}

void
dkim_signer_put(struct dkim_signer *s, const void *data, size_t len)
{
	const unsigned char *p = data;
	size_t i, j;

	BUG_ON(s->finished);
	i = head_put(s, p, len);
	while (i < len) {
		/* With nothing pending, a run that canonicalization leaves
		 * as it is goes through at once: content, and one SP or a
		 * CRLF followed by content.  Anything else an octet at a
		 * time. */
		if (!s->cr && !s->wsp && s->crlfs == 0) {
			for (j = i; j < len; j++) {
				if (p[j] > ' ')
					continue;
				if (p[j] == ' ' && j + 1 < len &&
				    p[j + 1] > ' ')
					continue;
				if (p[j] == '\r' && j + 2 < len &&
				    p[j + 1] == '\n' && p[j + 2] > ' ') {
					j++;
					continue;
				}
				break;
			}
			if (j > i) {
				emit(s, p + i, j - i);
				s->any = true;
				i = j;
				continue;
			}
		}
		body_octet(s, p[i++]);
	}
}

/* The body hash (once): the pending state settled (invariant 2). */
static void
body_finish(struct dkim_signer *s)
{
	if (s->finished)
		return;
	if (s->cr) {
		s->cr = false;
		body_content(s, '\r');
	}
	if (s->any)
		emit(s, "\r\n", 2);
	gnutls_hash(s->body, s->out, s->olen);
	s->olen = 0;
	gnutls_hash_deinit(s->body, s->bh);
	s->finished = true;
}

/* ---- header fields ---- */

struct field {
	const char *p; /* "Name: value\r\n continued\r\n" */
	size_t len;
	size_t name_len; /* without WSP before the colon */
};

/* Split the header into its fields; a line without a colon is skipped. */
static int
split_fields(const struct strbuf *h, struct field **out)
{
	struct field *v = NULL;
	size_t i = 0, cap = 0;
	int n = 0;

	while (i < h->len) {
		size_t start = i, colon = 0, nl;
		bool has_colon = false;

		/* The field runs to a line end not followed by WSP. */
		for (;;) {
			const char *e = memchr(h->p + i, '\n', h->len - i);

			nl = e != NULL ? (size_t)(e - h->p) + 1 : h->len;
			i = nl;
			if (i >= h->len || (h->p[i] != ' ' && h->p[i] != '\t'))
				break;
		}
		for (colon = start; colon < i; colon++)
			if (h->p[colon] == ':') {
				has_colon = true;
				break;
			}
		if (!has_colon || colon == start)
			continue;
		if ((size_t)n == cap) {
			cap = cap ? cap * 2 : 32;
			v = xrealloc(v, cap * sizeof(*v));
		}
		v[n].p = h->p + start;
		v[n].len = i - start;
		v[n].name_len = colon - start;
		while (
		    v[n].name_len > 0 && (v[n].p[v[n].name_len - 1] == ' ' ||
		                             v[n].p[v[n].name_len - 1] == '\t'))
			v[n].name_len--;
		n++;
	}
	*out = v;
	return n;
}

static bool
field_is(const struct field *f, const char *name)
{
	return f->name_len == strlen(name) &&
	       ascii_ncasecmp(f->p, name, f->name_len) == 0;
}

/* Relaxed header canonicalization (RFC 6376 section 3.4.2). */
static void
canon_field(const char *p, size_t len, struct strbuf *out)
{
	size_t i, name_end = 0, colon;
	bool wsp = false, started = false;

	for (colon = 0; colon < len && p[colon] != ':'; colon++)
		;
	name_end = colon;
	while (
	    name_end > 0 && (p[name_end - 1] == ' ' || p[name_end - 1] == '\t'))
		name_end--;
	for (i = 0; i < name_end; i++) {
		char c = ascii_lower(p[i]);

		strbuf_add(out, &c, 1);
	}
	strbuf_add(out, ":", 1);
	for (i = colon + 1; i < len; i++) {
		char c = p[i];

		if (c == '\r' || c == '\n')
			continue; /* unfolded */
		if (c == ' ' || c == '\t') {
			wsp = true;
			continue;
		}
		if (wsp && started)
			strbuf_add(out, " ", 1);
		wsp = false;
		started = true;
		strbuf_add(out, &c, 1);
	}
	strbuf_add(out, "\r\n", 2);
}

/*
 * The single address of a From value: 1 with its domain lower-cased in
 * out, 0 when there is none or more than one (a list, a group).
 */
static int
from_address_domain(const char *p, size_t len, char *out, size_t outlen)
{
	char addr[1024];
	size_t i, n = 0, at = 0, j;
	int depth = 0;
	bool quoted = false, angle = false, had_angle = false, has_at = false;

	for (i = 0; i < len; i++) {
		char c = p[i];

		if (quoted) {
			if (c == '\\' && i + 1 < len)
				i++;
			else if (c == '"')
				quoted = false;
			if (angle && n < sizeof(addr) - 1)
				addr[n++] = c;
			continue;
		}
		if (depth > 0) {
			if (c == '\\' && i + 1 < len)
				i++;
			else if (c == '(')
				depth++;
			else if (c == ')')
				depth--;
			continue;
		}
		if (c == '(') {
			depth++;
		} else if (c == '"') {
			quoted = true;
			if (angle && n < sizeof(addr) - 1)
				addr[n++] = c;
		} else if (c == '<') {
			if (had_angle)
				return 0;
			angle = had_angle = true;
			n = 0;
		} else if (c == '>') {
			angle = false;
		} else if (c == ',' || c == ':' || c == ';') {
			return 0; /* a list or a group */
		} else if (c == '\r' || c == '\n' || c == ' ' || c == '\t') {
			continue;
		} else if (angle || !had_angle) {
			if (n < sizeof(addr) - 1)
				addr[n++] = c;
		}
	}
	addr[n] = '\0';
	for (j = 0; j < n; j++)
		if (addr[j] == '@') {
			at = j;
			has_at = true;
		}
	if (!has_at || at + 1 >= n || n - at > outlen)
		return 0;
	for (j = at + 1; j < n; j++) {
		unsigned char c = (unsigned char)addr[j];

		if (!(c >= 0x80 || c == '-' || c == '.' ||
		        (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') ||
		        (c >= 'A' && c <= 'Z')))
			return 0;
		out[j - at - 1] = ascii_lower((char)c);
	}
	out[n - at - 1] = '\0';
	return 1;
}

int
dkim_signer_from_domain(struct dkim_signer *s, char *out, size_t len)
{
	struct field *f = NULL;
	int n, i, found = -1, rc = 0;

	out[0] = '\0';
	if (s->head_over)
		return -1;
	n = split_fields(&s->head, &f);
	for (i = 0; i < n; i++) {
		if (!field_is(&f[i], "from"))
			continue;
		if (found >= 0) {
			found = -2; /* several */
			break;
		}
		found = i;
	}
	if (found >= 0) {
		const char *colon = memchr(f[found].p, ':', f[found].len);
		size_t off = (size_t)(colon - f[found].p) + 1;

		rc = from_address_domain(
		    colon + 1, f[found].len - off, out, len);
	}
	free(f);
	return rc;
}

/* ---- signing ---- */

/* Signed, each listed once more than it occurs (oversigned). */
static const char *const signed_fields[] = {"from", "to", "cc", "subject",
    "date", "reply-to", "message-id", "in-reply-to", "references",
    "mime-version", "content-type", "content-transfer-encoding"};

/*
 * Signed, the same way, only when present: a TLS-RPT report's fields
 * (RFC 8460's mail transport asks for them in h=) and RFC 8689's TLS-Required,
 * which relaxes a message's transport security and so must not be
 * addable in transit.  Listing them for every message would only lengthen
 * h=.
 */
static const char *const signed_if_present[] = {
    "tls-report-domain", "tls-report-submitter", "tls-required"};

enum {
	NSIGNED = sizeof(signed_fields) / sizeof(signed_fields[0]),
	NPRESENT = sizeof(signed_if_present) / sizeof(signed_if_present[0])
};

/*
 * The h= list (folded) into *hlist, and the canonical fields it selects
 * into *data: a name listed k times takes its instances from the bottom
 * up, and one listed more often than it occurs selects nothing more.
 */
static void
select_fields(
    const struct field *f, int n, struct strbuf *hlist, struct strbuf *data)
{
	size_t line = 0;
	int i, j, k;

	for (i = 0; i < NSIGNED + NPRESENT; i++) {
		const char *name = i < NSIGNED ? signed_fields[i]
		                               : signed_if_present[i - NSIGNED];
		int count = 0, taken = 0;

		for (j = 0; j < n; j++)
			count += field_is(&f[j], name);
		if (count == 0 && i >= NSIGNED)
			continue;
		for (k = 0; k <= count; k++) {
			size_t w = strlen(name) + 1;

			if (hlist->len > 0) {
				strbuf_add(hlist, ":", 1);
				if (line + w > 60) {
					strbuf_add(hlist, "\r\n\t", 3);
					line = 0;
				}
			}
			strbuf_str(hlist, name);
			line += w;
		}
		/* The instances, bottom up. */
		for (j = n - 1; j >= 0 && taken < count; j--) {
			if (!field_is(&f[j], name))
				continue;
			canon_field(f[j].p, f[j].len, data);
			taken++;
		}
	}
}

static enum res
sign_digest(const struct dkim_key *key, const unsigned char d[32], char *b64,
    size_t b64len, char *why)
{
	gnutls_datum_t dig = {(unsigned char *)d, 32}, sig = {NULL, 0};
	int rc;

	if (key->alg == DKIM_RSA_SHA256)
		rc = gnutls_privkey_sign_hash2(
		    key->pk, GNUTLS_SIGN_RSA_SHA256, 0, &dig, &sig);
	else /* RFC 8463: PureEdDSA over the SHA-256 digest */
		rc = gnutls_privkey_sign_data2(
		    key->pk, GNUTLS_SIGN_EDDSA_ED25519, 0, &dig, &sig);
	if (rc < 0) {
		why_set(why, "4.3.0 DKIM signing failed (d=%s s=%s): %s",
		    key->domain, key->selector, gnutls_strerror(rc));
		return RES_TEMP;
	}
	rc = base64_encode(sig.data, sig.size, b64, b64len);
	gnutls_free(sig.data);
	if (rc < 0) {
		why_set(why, "4.3.0 DKIM signature too long");
		return RES_TEMP;
	}
	return RES_OK;
}

/* One DKIM-Signature field for `key`, appended to `out`. */
static enum res
sign_one(const struct dkim_key *key, const struct strbuf *data,
    const char *hlist, const char *bh, int64_t now, struct strbuf *out,
    char *why)
{
	struct strbuf field = {NULL, 0, 0}, canon = {NULL, 0, 0};
	unsigned char d[32];
	char b64[1400];
	gnutls_hash_hd_t h;
	enum res r;
	size_t i;

	strbuf_fmt(&field,
	    "DKIM-Signature: v=1; a=%s; c=relaxed/relaxed;\r\n"
	    "\td=%s; s=%s; t=%lld;\r\n"
	    "\th=%s;\r\n"
	    "\tbh=%s;\r\n"
	    "\tb=",
	    key->alg == DKIM_RSA_SHA256 ? "rsa-sha256" : "ed25519-sha256",
	    key->domain, key->selector, (long long)now, hlist, bh);
	/* The field with b= empty, canonical, without its CRLF. */
	canon_field(field.p, field.len, &canon);
	strbuf_truncate(&canon, canon.len - 2);
	sha256_init(&h);
	gnutls_hash(h, data->p, data->len);
	gnutls_hash(h, canon.p, canon.len);
	gnutls_hash_deinit(h, d);
	r = sign_digest(key, d, b64, sizeof(b64), why);
	if (r == RES_OK) {
		strbuf_add(out, field.p, field.len);
		size_t blen = strlen(b64);

		for (i = 0; i < blen; i += 72) {
			if (i > 0)
				strbuf_add(out, "\r\n\t ", 4);
			strbuf_add(out, b64 + i, blen - i < 72 ? blen - i : 72);
		}
		strbuf_add(out, "\r\n", 2);
	}
	strbuf_free(&field);
	strbuf_free(&canon);
	return r;
}

enum res
dkim_signer_sign(struct dkim_signer *s, const struct dkim_keys *k,
    const char *domain, int64_t now, char **out, size_t *out_len, char *why)
{
	struct strbuf hlist = {NULL, 0, 0}, data = {NULL, 0, 0};
	struct strbuf sigs = {NULL, 0, 0};
	struct field *f = NULL;
	char bh[64];
	enum res r = RES_OK;
	int n, i;

	*out = NULL;
	*out_len = 0;
	body_finish(s);
	if (dkim_keys_count(k, domain) == 0)
		return RES_OK;
	if (s->head_over) {
		why_set(why,
		    "5.3.4 message header too large to sign (over %d "
		    "octets)",
		    DKIM_HEADER_MAX);
		return RES_PERM;
	}
	(void)base64_encode(s->bh, sizeof(s->bh), bh, sizeof(bh));
	n = split_fields(&s->head, &f);
	select_fields(f, n, &hlist, &data);
	for (i = 0; i < k->n && r == RES_OK; i++)
		if (ascii_casecmp(k->v[i].domain, domain) == 0)
			r = sign_one(
			    &k->v[i], &data, hlist.p, bh, now, &sigs, why);
	free(f);
	strbuf_free(&hlist);
	strbuf_free(&data);
	if (r != RES_OK) {
		strbuf_free(&sigs);
		return r;
	}
	*out = sigs.p;
	*out_len = sigs.len;
	return RES_OK;
}

enum res
dkim_sign_message(const struct dkim_keys *k, const char *domain,
    const void *msg, size_t len, int64_t now, char **out, size_t *out_len,
    char *why)
{
	struct dkim_signer *s;
	enum res r;

	*out = NULL;
	*out_len = 0;
	if (dkim_keys_count(k, domain) == 0)
		return RES_OK;
	s = dkim_signer_new();
	dkim_signer_put(s, msg, len);
	r = dkim_signer_sign(s, k, domain, now, out, out_len, why);
	dkim_signer_free(s);
	return r;
}

enum res
dkim_sign_as_host(const struct dkim_keys *k, const char *hostname,
    const void *msg, size_t len, int64_t now, char **out, size_t *out_len,
    char *why)
{
	const char *d = hostname;

	*out = NULL;
	*out_len = 0;
	while (d != NULL && dkim_keys_count(k, d) == 0) {
		d = strchr(d, '.');
		d = d != NULL && strchr(d + 1, '.') != NULL ? d + 1 : NULL;
	}
	if (d == NULL)
		return RES_OK;
	return dkim_sign_message(k, d, msg, len, now, out, out_len, why);
}

/* ---- keys for `sluice dkim` ---- */

int
dkim_keygen(const char *path, enum dkim_alg alg, unsigned bits, char *why)
{
	gnutls_privkey_t pk = NULL;
	gnutls_x509_privkey_t xk = NULL;
	gnutls_datum_t pem = {NULL, 0};
	int rc, fd = -1, ret = -1;

	gnutls_privkey_init(&pk);
	rc = alg == DKIM_RSA_SHA256
	         ? gnutls_privkey_generate2(pk, GNUTLS_PK_RSA, bits, 0, NULL, 0)
	         : gnutls_privkey_generate2(
	               pk, GNUTLS_PK_EDDSA_ED25519, 256, 0, NULL, 0);
	if (rc >= 0)
		rc = gnutls_privkey_export_x509(pk, &xk);
	if (rc >= 0)
		rc = gnutls_x509_privkey_export2_pkcs8(
		    xk, GNUTLS_X509_FMT_PEM, NULL, GNUTLS_PKCS_PLAIN, &pem);
	if (rc < 0) {
		why_set(why, "cannot make the key: %s", gnutls_strerror(rc));
		goto out;
	}
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0) {
		why_set(why, "%s: %s%s", path, strerror(errno),
		    errno == EEXIST ? " (an existing key is never replaced)"
		                    : "");
		goto out;
	}
	if (write(fd, pem.data, pem.size) != (ssize_t)pem.size ||
	    fsync(fd) != 0) {
		why_set(why, "cannot write %s: %s", path, strerror(errno));
		(void)unlink(path);
		goto out;
	}
	ret = 0;
out:
	if (fd >= 0)
		close(fd);
	if (pem.data != NULL) {
		gnutls_memset(pem.data, 0, pem.size);
		gnutls_free(pem.data);
	}
	gnutls_x509_privkey_deinit(xk);
	gnutls_privkey_deinit(pk);
	return ret;
}

int
dkim_print_record(FILE *f, const char *domain, const char *selector,
    const char *path, char *why)
{
	gnutls_privkey_t pk = NULL;
	gnutls_pubkey_t pub = NULL;
	gnutls_datum_t der = {NULL, 0}, x = {NULL, 0};
	gnutls_ecc_curve_t curve;
	enum dkim_alg alg;
	unsigned bits;
	char p[2048], txt[2200];
	size_t len, i;
	int rc, ret = -1;

	if (load_key(path, &pk, &alg, &bits, why) != 0)
		return -1;
	gnutls_pubkey_init(&pub);
	rc = gnutls_pubkey_import_privkey(pub, pk, 0, 0);
	if (rc >= 0 && alg == DKIM_RSA_SHA256)
		/* p= is the SubjectPublicKeyInfo (RFC 6376 section 3.6.1) */
		rc = gnutls_pubkey_export2(pub, GNUTLS_X509_FMT_DER, &der);
	else if (rc >= 0)
		/* p= is the raw 32-octet key (RFC 8463 section 4.2) */
		rc = gnutls_pubkey_export_ecc_raw2(
		    pub, &curve, &x, NULL, GNUTLS_EXPORT_FLAG_NO_LZ);
	if (rc < 0) {
		why_set(why, "DKIM key %s: cannot export its public key: %s",
		    path, gnutls_strerror(rc));
		goto out;
	}
	if (alg == DKIM_RSA_SHA256)
		rc = base64_encode(der.data, der.size, p, sizeof(p));
	else
		rc = base64_encode(x.data, x.size, p, sizeof(p));
	if (rc < 0) {
		why_set(why, "DKIM key %s: public key too large", path);
		goto out;
	}
	snprintf(txt, sizeof(txt), "v=DKIM1; k=%s; p=%s",
	    alg == DKIM_RSA_SHA256 ? "rsa" : "ed25519", p);
	/* Character strings of at most 255 octets (RFC 1035 3.3.14). */
	fprintf(f, "%s._domainkey.%s. IN TXT (", selector, domain);
	len = strlen(txt);
	for (i = 0; i < len; i += 255)
		fprintf(f, " \"%.*s\"", (int)(len - i < 255 ? len - i : 255),
		    txt + i);
	fprintf(f, " )\n");
	ret = 0;
out:
	gnutls_free(der.data);
	gnutls_free(x.data);
	gnutls_pubkey_deinit(pub);
	gnutls_privkey_deinit(pk);
	return ret;
}
