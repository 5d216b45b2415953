/*
 * fuzz_dkim.c - the DKIM signer (tls/dkim.c) on hostile messages: the
 * header split into fields, the From address read, the body
 * canonicalized and hashed, an Ed25519 signature made (deterministic, at
 * a fixed time).  Input: four octets seeding where the message is cut
 * into dkim_signer_put calls, then the message.
 *
 * Properties:
 *  - cutting the message anywhere changes nothing: the From domain found
 *    and the signature field made are those of the message put whole;
 *  - bh= is the hash of the body as a plain reference canonicalizes it
 *    (RFC 6376 section 3.4.4, a line at a time), so the signer's runs
 *    taken at once canonicalize as octets taken one by one;
 *  - a From domain found is lower case, of letters, digits, '-', '.' and
 *    8-bit octets only;
 *  - the signature field is ASCII header text: "DKIM-Signature: " then
 *    printable octets and CRLF + WSP folds, lines under 100 octets, and
 *    it ends in CRLF.
 */
#include "base64.h"
#include "dkim.h"
#include "fuzz.h"

#include <gnutls/crypto.h>
#include <unistd.h>

static struct dkim_keys *keys;

/* One Ed25519 key, made once in a temporary folder. */
static void
init_keys(void)
{
	struct dkim_key_conf kc;
	char dir[] = "/tmp/sluice-fuzz-dkim-XXXXXX", path[64], why[WHY_MAX],
	     warn[WHY_MAX];

	if (keys != NULL)
		return;
	if (mkdtemp(dir) == NULL)
		abort();
	snprintf(path, sizeof(path), "%s/k.pem", dir);
	if (dkim_keygen(path, DKIM_ED25519_SHA256, 0, why) != 0)
		abort();
	kc.domain = "example.com";
	kc.selector = "f";
	kc.path = path;
	keys = dkim_keys_load(&kc, 1, warn, why);
	unlink(path);
	rmdir(dir);
	if (keys == NULL)
		abort();
}

struct result {
	int got;
	char domain[300];
	char *sig;
	size_t len;
};

static void
run(const uint8_t *m, size_t n, struct fuzz_rng *rng, struct result *r)
{
	struct dkim_signer *s = dkim_signer_new();
	size_t pos = 0, piece;
	char why[WHY_MAX];
	enum res res;

	while (pos < n) {
		piece = rng ? fuzz_piece(rng, n - pos) : n - pos;
		dkim_signer_put(s, m + pos, piece);
		pos += piece;
	}
	r->got = dkim_signer_from_domain(s, r->domain, sizeof(r->domain));
	res = dkim_signer_sign(
	    s, keys, "example.com", 1700000000, &r->sig, &r->len, why);
	FUZZ_ASSERT(res == RES_OK, "an Ed25519 signature is always made");
	dkim_signer_free(s);
}

/* Where the body starts: after the first CRLF that begins a line. */
static size_t
body_start(const uint8_t *m, size_t n)
{
	size_t i;

	for (i = 0; i + 1 < n; i++)
		if (m[i] == '\r' && m[i + 1] == '\n' &&
		    (i == 0 || m[i - 1] == '\n'))
			return i + 2;
	return n;
}

/*
 * The relaxed body, the plain way: split at CRLF, each line's WSP runs
 * made one SP and its trailing WSP dropped, empty lines at the end
 * dropped, a CRLF after the last line.
 */
static void
reference_body(const uint8_t *m, size_t n, uint8_t *out, size_t *olen)
{
	size_t i = 0, o = 0, keep = 0, end, line;

	while (i < n) {
		line = o;
		for (end = i; end < n; end++)
			if (m[end] == '\r' && end + 1 < n && m[end + 1] == '\n')
				break;
		for (; i < end; i++) {
			bool wsp = m[i] == ' ' || m[i] == '\t';

			if (wsp && o > line && out[o - 1] == ' ')
				continue; /* a run of WSP is one SP */
			out[o++] = wsp ? ' ' : m[i];
		}
		if (o > line && out[o - 1] == ' ')
			o--; /* WSP at the line's end goes */
		out[o++] = '\r';
		out[o++] = '\n';
		if (o > line + 2)
			keep = o; /* the end of the last non-empty line */
		i = end + 2;
	}
	*olen = keep;
}

/* bh= of a signature field, folds taken out. */
static void
field_bh(const char *sig, size_t len, char *out, size_t outlen)
{
	const char *p = memmem(sig, len, "bh=", 3);
	size_t o = 0;

	FUZZ_ASSERT(p != NULL, "the field has bh=");
	for (p += 3; p < sig + len && *p != ';' && o + 1 < outlen; p++)
		if (*p != ' ' && *p != '\t' && *p != '\r' && *p != '\n')
			out[o++] = *p;
	out[o] = '\0';
}

static void
check_body_hash(const uint8_t *m, size_t n, const struct result *r)
{
	size_t b = body_start(m, n), blen;
	uint8_t *canon = malloc(2 * (n - b) + 2), digest[32];
	char want[64], got[64];

	FUZZ_ASSERT(canon != NULL, "memory");
	reference_body(m + b, n - b, canon, &blen);
	gnutls_hash_fast(GNUTLS_DIG_SHA256, canon, blen, digest);
	FUZZ_ASSERT(
	    base64_encode(digest, sizeof(digest), want, sizeof(want)) > 0,
	    "base64 of a digest fits");
	field_bh(r->sig, r->len, got, sizeof(got));
	FUZZ_ASSERT(strcmp(want, got) == 0,
	    "bh= is the reference canonicalization's hash");
	free(canon);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct result whole, cut;
	struct fuzz_rng rng;
	size_t i, line = 0;

	if (size < 4 || size > 65536)
		return 0;
	init_keys();
	fuzz_rng_seed(&rng, data, 4);
	data += 4;
	size -= 4;
	memset(&whole, 0, sizeof(whole));
	memset(&cut, 0, sizeof(cut));
	run(data, size, NULL, &whole);
	run(data, size, &rng, &cut);
	FUZZ_ASSERT(
	    whole.got == cut.got && strcmp(whole.domain, cut.domain) == 0,
	    "the From domain does not depend on the cuts");
	FUZZ_ASSERT(
	    whole.len == cut.len && memcmp(whole.sig, cut.sig, whole.len) == 0,
	    "the signature does not depend on the cuts");
	if (whole.got == 1) {
		FUZZ_ASSERT(whole.domain[0] != '\0', "a domain was found");
		for (i = 0; whole.domain[i] != '\0'; i++) {
			unsigned char c = (unsigned char)whole.domain[i];

			FUZZ_ASSERT(c >= 0x80 || c == '-' || c == '.' ||
			                (c >= '0' && c <= '9') ||
			                (c >= 'a' && c <= 'z'),
			    "the domain is lower case, of domain octets");
		}
	}
	FUZZ_ASSERT(
	    whole.len > 16 && memcmp(whole.sig, "DKIM-Signature: ", 16) == 0,
	    "a DKIM-Signature field");
	check_body_hash(data, size, &whole);
	FUZZ_ASSERT(whole.sig[whole.len - 2] == '\r' &&
	                whole.sig[whole.len - 1] == '\n',
	    "it ends in CRLF");
	for (i = 0; i < whole.len; i++) {
		unsigned char c = (unsigned char)whole.sig[i];

		if (c == '\r') {
			FUZZ_ASSERT(
			    i + 1 < whole.len && whole.sig[i + 1] == '\n',
			    "CR only before LF");
			FUZZ_ASSERT(
			    i + 2 == whole.len || whole.sig[i + 2] == '\t',
			    "a line break is a fold (or the end)");
			line = 0;
			i++;
			continue;
		}
		FUZZ_ASSERT(c == '\t' || (c >= 0x20 && c < 0x7f),
		    "printable ASCII only");
		FUZZ_ASSERT(++line < 100, "lines under 100 octets");
	}
	free(whole.sig);
	free(cut.sig);
	return 0;
}
