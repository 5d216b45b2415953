/*
 * auth.c - SMTP AUTH support (see auth.h): the credentials file, password
 * verification with libxcrypt, strict base64 (RFC 4648), SASL PLAIN
 * splitting (RFC 4616).
 *
 * Threads: auth_table_load builds a `struct auth_table` that is never modified
 * afterwards, so any number of worker threads may call auth_table_verify and
 * auth_table_sender_allowed on it at once.  Hashing uses crypt_rn with a
 * `struct crypt_data` allocated per call (about 32 KB: on the heap, to keep
 * worker stacks small), never crypt() or shared state.  The base64 and SASL
 * helpers are pure.
 *
 * Invariants:
 *  1. t->users is sorted by name (strcmp) and names are unique, so a
 *     lookup is a bsearch with an exact, case-sensitive match.
 *  2. Every stored hash has passed hash_check: a supported prefix, the
 *     structure and checksum length of its method, and crypt_checksalt.
 *  3. auth_table_verify does the same hashing work whether or not the user
 *     exists (a dummy yescrypt hash stands in for unknown users), and
 *     compares hashes in constant time.
 *  4. Passwords are never logged or printed, and buffers that held one are
 *     wiped with explicit_bzero before they are released.
 */
#include "auth.h"
#include "base64.h"
#include "util.h"

#include <crypt.h>
#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct auth_user {
	char *name;
	char *hash;
	char **senders; /* NULL: only the user name itself */
	int nsenders;
	int lineno; /* where it was defined, for duplicate reports */
};

struct auth_table {
	struct auth_user *users; /* sorted by name, see invariant 1 */
	int nusers;
};

/*
 * Stands in for the hash of an unknown user: yescrypt at libxcrypt's
 * default cost (the cost auth_hash_password uses), of a random password
 * nobody knows.  auth_table_verify never accepts it anyway.
 */
static const char dummy_hash[] = "$y$j9T$ZihQDvr3vRa.bdHkQEmAa.$"
                                 "dRxZ6JR6ERnLp1iN51O8hv3FaW.BpU8ejXu17G0dKl2";

/* True for the characters of crypt's base64 ("./0-9A-Za-z"). */
static bool
is_crypt64(char c)
{
	return c == '.' || c == '/' || (c >= '0' && c <= '9') ||
	       (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
}

/* True when s[0..n) is made of crypt64 characters only. */
static bool
all_crypt64(const char *s, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (!is_crypt64(s[i]))
			return false;
	return true;
}

/* True when s is non-empty, free of white space and control characters. */
static bool
is_token(const char *s)
{
	const unsigned char *p;

	if (*s == '\0')
		return false;
	for (p = (const unsigned char *)s; *p != '\0'; p++)
		if (*p <= ' ' || *p == 0x7f)
			return false;
	return true;
}

/* Strip spaces and tabs around s, in place. */
static char *
trim(char *s)
{
	char *e;

	while (*s == ' ' || *s == '\t')
		s++;
	e = s + strlen(s);
	while (e > s && (e[-1] == ' ' || e[-1] == '\t'))
		*--e = '\0';
	return s;
}

/*
 * Check that `hash` is a complete hash in a supported method: prefix,
 * field structure and checksum length (a truncated or hand-edited hash
 * would otherwise silently never match), then libxcrypt's own opinion.
 */
static int
hash_check(const char *hash, char *why)
{
	const char *last = strrchr(hash, '$');
	size_t len = strlen(hash), ndollar = 0, sumlen;
	const char *p;

	for (p = hash; *p != '\0'; p++)
		ndollar += *p == '$';
	sumlen = len - (size_t)(last != NULL ? last + 1 - hash : 0);
	if (strncmp(hash, "$y$", 3) == 0) {
		/* $y$PARAMS$SALT$SUM, SUM 43 characters */
		if (ndollar != 4 || sumlen != 43 || !all_crypt64(last + 1, 43))
			goto malformed;
	} else if (strncmp(hash, "$6$", 3) == 0) {
		/* $6$[rounds=N$]SALT$SUM, SUM 86 characters */
		if ((ndollar != 3 && ndollar != 4) || sumlen != 86 ||
		    !all_crypt64(last + 1, 86))
			goto malformed;
	} else if (strncmp(hash, "$2b$", 4) == 0 ||
	           strncmp(hash, "$2y$", 4) == 0) {
		/* $2b$NN$ then 22 characters of salt and 31 of checksum */
		if (len != 60 || ndollar != 3 || hash[6] != '$' ||
		    !all_crypt64(hash + 7, 53))
			goto malformed;
	} else {
		why_set(why, "unsupported hash format (expected yescrypt "
		             "\"$y$\", SHA-512-crypt \"$6$\" or bcrypt "
		             "\"$2b$\"/\"$2y$\")");
		return -1;
	}
	switch (crypt_checksalt(hash)) {
	case CRYPT_SALT_OK:
	case CRYPT_SALT_TOO_CHEAP:
		return 0;
	case CRYPT_SALT_METHOD_DISABLED:
		why_set(why, "hash method disabled in this libcrypt");
		return -1;
	default:
		break;
	}
malformed:
	why_set(why, "malformed or truncated hash");
	return -1;
}

/* A sender entry: "@domain" or "local@domain". */
static bool
sender_entry_ok(const char *s)
{
	const char *at = strrchr(s, '@');

	return is_token(s) && strchr(s, ':') == NULL && at != NULL &&
	       at[1] != '\0';
}

/* Parse "a, b, c" into u->senders; an empty list means "not given". */
static int
parse_senders(struct auth_user *u, char *list, char *why)
{
	char *tok, *save = NULL;

	for (tok = strtok_r(list, ",", &save); tok != NULL;
	     tok = strtok_r(NULL, ",", &save)) {
		tok = trim(tok);
		if (*tok == '\0')
			continue;
		if (!sender_entry_ok(tok)) {
			why_set(why,
			    "bad sender \"%s\" (expected \"@domain\" or "
			    "\"local@domain\")",
			    tok);
			return -1;
		}
		u->senders = xrealloc(u->senders,
		    sizeof(*u->senders) * (size_t)(u->nsenders + 1));
		u->senders[u->nsenders++] = xstrdup(tok);
	}
	return 0;
}

static void
user_clear(struct auth_user *u)
{
	int i;

	for (i = 0; i < u->nsenders; i++)
		free(u->senders[i]);
	free(u->senders);
	free(u->name);
	free(u->hash);
	memset(u, 0, sizeof(*u));
}

/* Parse one non-comment line "user:HASH[:senders]" into u. */
static int
parse_line(char *line, struct auth_user *u, char *why)
{
	char *name = line, *hash, *senders, hwhy[WHY_MAX];

	memset(u, 0, sizeof(*u));
	hash = strchr(line, ':');
	if (hash == NULL) {
		why_set(why, "expected \"user:HASH[:senders]\"");
		return -1;
	}
	*hash++ = '\0';
	senders = strchr(hash, ':');
	if (senders != NULL)
		*senders++ = '\0';
	name = trim(name);
	hash = trim(hash);
	if (!is_token(name) || strlen(name) >= AUTH_FIELD_MAX) {
		why_set(why,
		    "invalid user name (empty, longer than %d octets, or "
		    "with white space or control characters)",
		    AUTH_FIELD_MAX - 1);
		return -1;
	}
	if (*hash == '\0') {
		why_set(why, "user \"%s\" has no password hash", name);
		return -1;
	}
	if (hash_check(hash, hwhy) != 0) {
		why_set(why, "user \"%s\": %s", name, hwhy);
		return -1;
	}
	if (senders != NULL && parse_senders(u, senders, why) != 0) {
		user_clear(u);
		return -1;
	}
	u->name = xstrdup(name);
	u->hash = xstrdup(hash);
	return 0;
}

static int
user_cmp(const void *a, const void *b)
{
	const struct auth_user *ua = a, *ub = b;
	int c = strcmp(ua->name, ub->name);

	if (c != 0)
		return c;
	return (ua->lineno > ub->lineno) - (ua->lineno < ub->lineno);
}

static int
user_key_cmp(const void *key, const void *elem)
{
	return strcmp(key, ((const struct auth_user *)elem)->name);
}

struct auth_table *
auth_table_load(const char *path, FILE *errs, int *nerrors)
{
	struct auth_table *t = xcalloc(1, sizeof(*t));
	char *line = NULL, why[WHY_MAX];
	size_t cap = 0, alloc = 0;
	ssize_t n;
	int lineno = 0, errors = 0, i, first;
	FILE *f;

	f = fopen(path, "r");
	if (f == NULL) {
		fprintf(errs, "%s: cannot open: %s\n", path, strerror(errno));
		errors++;
		goto out;
	}
	while ((n = getline(&line, &cap, f)) != -1) {
		struct auth_user u;
		char *s;

		lineno++;
		while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
			line[--n] = '\0';
		s = trim(line);
		if (*s == '\0' || *s == '#')
			continue;
		if (parse_line(s, &u, why) != 0) {
			fprintf(errs, "%s:%d: %s\n", path, lineno, why);
			errors++;
			continue;
		}
		u.lineno = lineno;
		if ((size_t)t->nusers == alloc) {
			alloc = alloc ? alloc * 2 : 16;
			t->users =
			    xrealloc(t->users, alloc * sizeof(*t->users));
		}
		t->users[t->nusers++] = u;
	}
	if (ferror(f)) {
		fprintf(errs, "%s: read error: %s\n", path, strerror(errno));
		errors++;
	}
	fclose(f);
	if (t->nusers > 0)
		qsort(t->users, (size_t)t->nusers, sizeof(*t->users), user_cmp);
	for (i = 1, first = 0; i < t->nusers; i++) {
		if (strcmp(t->users[i].name, t->users[first].name) != 0) {
			first = i;
			continue;
		}
		fprintf(errs,
		    "%s:%d: duplicate user \"%s\" (first on line %d)\n", path,
		    t->users[i].lineno, t->users[i].name,
		    t->users[first].lineno);
		errors++;
	}
out:
	free(line);
	*nerrors = errors;
	if (errors > 0) {
		auth_table_free(t);
		return NULL;
	}
	return t;
}

void
auth_table_free(struct auth_table *t)
{
	int i;

	if (t == NULL)
		return;
	for (i = 0; i < t->nusers; i++)
		user_clear(&t->users[i]);
	free(t->users);
	free(t);
}

int
auth_table_count(const struct auth_table *t)
{
	return t != NULL ? t->nusers : 0;
}

static const struct auth_user *
user_find(const struct auth_table *t, const char *name)
{
	if (t == NULL || t->nusers == 0)
		return NULL;
	return bsearch(
	    name, t->users, (size_t)t->nusers, sizeof(*t->users), user_key_cmp);
}

/* Constant-time equality of two NUL-terminated strings of public length. */
static bool
ct_streq(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b), i;
	unsigned char diff = 0;

	if (la != lb)
		return false;
	for (i = 0; i < la; i++)
		diff |= (unsigned char)(a[i] ^ b[i]);
	return diff == 0;
}

bool
auth_table_verify(
    const struct auth_table *t, const char *user, const char *password)
{
	const struct auth_user *u;
	struct crypt_data *data;
	const char *hash, *out;
	bool ok;

	/* The same answer for every user, so it reveals nothing. */
	if (user == NULL || password == NULL || *password == '\0')
		return false;
	u = user_find(t, user);
	hash = u != NULL ? u->hash : dummy_hash;
	data = xcalloc(1, sizeof(*data));
	out = crypt_rn(password, hash, data, (int)sizeof(*data));
	ok = out != NULL && out[0] != '*' && ct_streq(out, hash);
	explicit_bzero(data, sizeof(*data));
	free(data);
	return ok && u != NULL;
}

/* "local@domain" vs "local@domain": local part exact, domain ASCII-caseless
 * (RFC 5321 section 2.4). */
static bool
address_eq(const char *a, const char *b)
{
	const char *ata = strrchr(a, '@'), *atb = strrchr(b, '@');

	if (ata == NULL || atb == NULL)
		return strcmp(a, b) == 0;
	return ata - a == atb - b && memcmp(a, b, (size_t)(ata - a)) == 0 &&
	       ascii_casecmp(ata + 1, atb + 1) == 0;
}

bool
auth_table_sender_allowed(
    const struct auth_table *t, const char *user, const char *sender)
{
	const struct auth_user *u;
	const char *at;
	int i;

	if (sender == NULL)
		return false;
	if (*sender == '\0')
		return true;
	u = user != NULL ? user_find(t, user) : NULL;
	if (u == NULL)
		return false;
	if (u->nsenders == 0)
		return address_eq(u->name, sender);
	at = strrchr(sender, '@');
	for (i = 0; i < u->nsenders; i++) {
		const char *s = u->senders[i];

		if (s[0] == '@') {
			/* the domain itself, not its subdomains */
			if (at != NULL && at != sender &&
			    ascii_casecmp(at + 1, s + 1) == 0)
				return true;
		} else if (address_eq(s, sender)) {
			return true;
		}
	}
	return false;
}

char *
auth_hash_password(const char *password, char *why)
{
	char setting[CRYPT_GENSALT_OUTPUT_SIZE];
	struct crypt_data *data = NULL;
	char *result = NULL;
	const char *out;

	if (password == NULL || *password == '\0') {
		why_set(why, "empty password");
		goto out;
	}
	if (crypt_gensalt_rn("$y$", 0, NULL, 0, setting, sizeof(setting)) ==
	    NULL) {
		why_set(
		    why, "cannot make a yescrypt salt: %s", strerror(errno));
		goto out;
	}
	data = xcalloc(1, sizeof(*data));
	out = crypt_rn(password, setting, data, (int)sizeof(*data));
	if (out == NULL || out[0] == '*') {
		why_set(why, "yescrypt hashing failed: %s",
		    out == NULL ? strerror(errno) : "invalid setting");
		goto out;
	}
	result = xstrdup(out);
out:
	if (data != NULL)
		explicit_bzero(data, sizeof(*data));
	free(data);
	return result;
}

int
auth_b64_decode(const char *in, char *out, size_t outlen)
{
	if (outlen == 0)
		return -1;
	out[0] = '\0';
	if (strcmp(in, "=") == 0)
		return 0; /* RFC 4954 section 4: empty initial response */
	return base64_decode(in, out, outlen);
}

/* Copy msg[from..to) into a field of AUTH_FIELD_MAX octets. */
static int
field_copy(char *dst, const char *msg, size_t from, size_t to)
{
	if (to - from >= AUTH_FIELD_MAX)
		return -1;
	memcpy(dst, msg + from, to - from);
	dst[to - from] = '\0';
	return 0;
}

int
sasl_plain_split(
    const char *msg, size_t len, char *authzid, char *authcid, char *passwd)
{
	const char *nul1, *nul2;
	size_t n1, n2;

	authzid[0] = authcid[0] = passwd[0] = '\0';
	nul1 = memchr(msg, '\0', len);
	if (nul1 == NULL)
		return -1;
	n1 = (size_t)(nul1 - msg);
	nul2 = memchr(nul1 + 1, '\0', len - n1 - 1);
	if (nul2 == NULL)
		return -1;
	n2 = (size_t)(nul2 - msg);
	if (memchr(nul2 + 1, '\0', len - n2 - 1) != NULL || n2 == n1 + 1)
		goto bad; /* a third NUL, or an empty authcid */
	if (field_copy(authzid, msg, 0, n1) != 0 ||
	    field_copy(authcid, msg, n1 + 1, n2) != 0 ||
	    field_copy(passwd, msg, n2 + 1, len) != 0)
		goto bad;
	return 0;
bad:
	explicit_bzero(passwd, AUTH_FIELD_MAX);
	authzid[0] = authcid[0] = '\0';
	return -1;
}

bool
auth_user_name_ok(const char *user)
{
	return user != NULL && is_token(user) && strchr(user, ':') == NULL &&
	       strlen(user) < AUTH_FIELD_MAX;
}
