/*
 * test_auth.c - SMTP AUTH: the credentials file (yescrypt, SHA-512-crypt
 * and bcrypt users, comments, errors with line numbers), password
 * verification, sender_login_match lists, strict base64, SASL PLAIN
 * splitting and `sluice passwd` on a non-terminal standard input.
 *
 * Hashing is slow by design, so the hashes are made once and the number of
 * hash operations stays small (about 30).
 */
#include "auth.h"
#include "cli.h"
#include "util.h"
#include "unit.h"

#include <crypt.h>
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

/* Hashes made once in make_hashes(): password "ypass", "sixpass", "bcpass". */
static char hash_y[CRYPT_OUTPUT_SIZE];
static char hash_6[CRYPT_OUTPUT_SIZE];
static char hash_2b[CRYPT_OUTPUT_SIZE];

/* True when `hash` is the crypt hash of `password`. */
static bool
hash_matches(const char *password, const char *hash)
{
	struct crypt_data *data = xcalloc(1, sizeof(*data));
	const char *out = crypt_rn(password, hash, data, (int)sizeof(*data));
	bool ok = out != NULL && strcmp(out, hash) == 0;

	free(data);
	return ok;
}

static void
make_hash(const char *prefix, unsigned long cost, const char *pw, char *dst)
{
	char setting[CRYPT_GENSALT_OUTPUT_SIZE];
	struct crypt_data *data = xcalloc(1, sizeof(*data));
	const char *out = NULL;

	if (crypt_gensalt_rn(prefix, cost, NULL, 0, setting, sizeof(setting)))
		out = crypt_rn(pw, setting, data, (int)sizeof(*data));
	snprintf(dst, CRYPT_OUTPUT_SIZE, "%s", out != NULL ? out : "*");
	free(data);
}

static void
make_hashes(void)
{
	char *y = auth_hash_password("ypass", NULL);

	snprintf(hash_y, sizeof(hash_y), "%s", y != NULL ? y : "*");
	free(y);
	make_hash("$6$", 0, "sixpass", hash_6);
	make_hash("$2b$", 4, "bcpass", hash_2b); /* cost 4: the cheapest */
	CHECK(strncmp(hash_y, "$y$", 3) == 0, "made a yescrypt hash");
	CHECK(strncmp(hash_6, "$6$", 3) == 0, "made a SHA-512-crypt hash");
	CHECK(strncmp(hash_2b, "$2b$04$", 7) == 0, "made a bcrypt hash");
}

/* `s` with control characters escaped, for one-line check names. */
static const char *
show(const char *s)
{
	static char bufs[4][1024];
	static int next;
	char *b = bufs[next++ % 4];
	size_t n = 0;

	for (; *s != '\0' && n + 5 < sizeof(bufs[0]); s++) {
		unsigned char ch = (unsigned char)*s;

		if (ch < ' ' || ch == 0x7f)
			n += (size_t)snprintf(b + n, 5, "\\x%02x", ch);
		else
			b[n++] = (char)ch;
	}
	b[n] = '\0';
	return b;
}

/* Write `len` octets to a new temporary file; its path goes to `path`. */
static void
write_temp(char *path, const char *text, size_t len)
{
	int fd;

	strcpy(path, "/tmp/sluice-test-auth-XXXXXX");
	fd = mkstemp(path);
	if (fd < 0) {
		perror("mkstemp");
		exit(2);
	}
	(void)!write(fd, text, len);
	close(fd);
}

static char *
read_all(const char *path)
{
	FILE *f = fopen(path, "r");
	char *buf = xcalloc(1, 4096);

	if (f != NULL) {
		(void)!fread(buf, 1, 4095, f);
		fclose(f);
	}
	return buf;
}

static struct auth_table *
load_text(const char *text, char *errs, size_t errlen, int *nerr)
{
	char path[64];
	FILE *e = fmemopen(errs, errlen, "w");
	struct auth_table *users;

	write_temp(path, text, strlen(text));
	memset(errs, 0, errlen);
	users = auth_table_load(path, e, nerr);
	fclose(e);
	unlink(path);
	return users;
}

/* The users file most tests share, with a CRLF line on purpose. */
static struct auth_table *
load_users(void)
{
	char text[2048], errs[1024];
	struct auth_table *users;
	int nerr = -1;

	snprintf(text, sizeof(text),
	    "# sluice users\n"
	    "\n"
	    "   \n"
	    "  # an indented comment\n"
	    "alice@example.org:%s\n"
	    "bob:%s:@example.com, carol@Other.example\n"
	    "carol : %s :\r\n",
	    hash_y, hash_6, hash_2b);
	users = load_text(text, errs, sizeof(errs), &nerr);
	CHECK(users != NULL && nerr == 0, "load: three methods (errors: %s)",
	    show(errs));
	CHECK(auth_table_count(users) == 3, "load: count is 3 (got %d)",
	    auth_table_count(users));
	return users;
}

struct vcase {
	const char *user, *password;
	bool ok;
};

static const struct vcase vcases[] = {
    {"alice@example.org", "ypass", true},
    {"alice@example.org", "ypasS", false},
    {"alice@example.org", "", false},
    {"bob", "sixpass", true},
    {"bob", "ypass", false},
    {"carol", "bcpass", true},
    {"carol", "BCPASS", false},
    {"dave", "ypass", false},              /* unknown user */
    {"Alice@example.org", "ypass", false}, /* names are case-sensitive */
    {"", "ypass", false},
};

static void
test_verify(const struct auth_table *users)
{
	size_t i;

	for (i = 0; i < NELEM(vcases); i++) {
		const struct vcase *c = &vcases[i];

		CHECK(auth_table_verify(users, c->user, c->password) == c->ok,
		    "verify \"%s\" with password #%zu -> %s", c->user, i,
		    c->ok ? "yes" : "no");
	}
	CHECK(!auth_table_verify(NULL, "alice", "ypass"),
	    "verify without a table");
}

struct scase {
	const char *user, *sender;
	bool ok;
};

static const struct scase scases[] = {
    {"alice@example.org", "alice@example.org", true},
    {"alice@example.org", "alice@EXAMPLE.Org", true},
    {"alice@example.org", "Alice@example.org", false},
    {"alice@example.org", "bob@example.org", false},
    {"alice@example.org", "", true},
    {"bob", "anyone@example.com", true},
    {"bob", "x@EXAMPLE.COM", true},
    {"bob", "x@sub.example.com", false},
    {"bob", "x@example.com.evil", false},
    {"bob", "@example.com", false},
    {"bob", "carol@other.example", true},
    {"bob", "carol@OTHER.EXAMPLE", true},
    {"bob", "Carol@other.example", false},
    {"bob", "carol2@other.example", false},
    {"bob", "bob", false},
    {"bob", "", true},
    {"carol", "carol", true}, /* empty third field: the user name */
    {"carol", "carol@example.com", false},
    {"dave", "dave", false},
    {"dave", "", true},
    {"Bob", "x@example.com", false},
};

static void
test_senders(const struct auth_table *users)
{
	size_t i;

	for (i = 0; i < NELEM(scases); i++) {
		const struct scase *c = &scases[i];

		CHECK(auth_table_sender_allowed(users, c->user, c->sender) ==
		          c->ok,
		    "sender \"%s\" for %s -> %s", c->sender, c->user,
		    c->ok ? "yes" : "no");
	}
}

struct ecase {
	const char *name;
	const char *fmt; /* %s: a valid yescrypt hash, used once at most */
	int nerr;
	const char *want;   /* in the error text */
	const char *secret; /* must not be echoed */
};

static const struct ecase ecases[] = {
    {"no colon", "alice\n", 1, ":1: expected \"user:HASH", NULL},
    {"no hash", "# c\nalice:\n", 1, ":2: user \"alice\" has no password hash",
        NULL},
    {"blank hash", "alice:  :@x.org\n", 1, ":1: user \"alice\" has no", NULL},
    {"md5 prefix", "\n\nalice:$1$abcdefgh$0123456789abcdefghijkl\n", 1,
        ":3: user \"alice\": unsupported hash format", "0123456789abcdef"},
    {"2a prefix",
        "alice:$2a$05$abcdefghijklmnopqrstuvabcdefghijklmnopqrstuvwxyzABCDE\n",
        1, ":1: user \"alice\": unsupported hash format", NULL},
    {"plaintext", "alice:hunter2\n", 1, ":1: user \"alice\": unsupported",
        "hunter2"},
    {"truncated yescrypt", "alice:%.40s\n", 1, ":1: user \"alice\": malformed",
        NULL},
    {"bad sender", "bob:%s:@example.com, bogus\n", 1,
        ":1: bad sender \"bogus\"", NULL},
    {"bad sender domain", "bob:%s:bob@\n", 1, ":1: bad sender \"bob@\"", NULL},
    {"user with space", "a b:%s\n", 1, ":1: invalid user name", NULL},
    {"empty user", ":%s\n", 1, ":1: invalid user name", NULL},
    {"duplicate", "alice:%1$s\n\n#\nbob:%1$s\nalice:%1$s\n", 1,
        ":5: duplicate user \"alice\" (first on line 1)", NULL},
    {"every line counted", "x\ny:\n\nz\n", 3, ":4: expected", NULL},
};

static void
test_errors(void)
{
	char text[1024], errs[1024];
	size_t i;
	int nerr;
	struct auth_table *users;

	for (i = 0; i < NELEM(ecases); i++) {
		const struct ecase *c = &ecases[i];

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
		snprintf(text, sizeof(text), c->fmt, hash_y);
#pragma GCC diagnostic pop
		nerr = -1;
		users = load_text(text, errs, sizeof(errs), &nerr);
		CHECK(users == NULL && nerr == c->nerr &&
		          strstr(errs, c->want) != NULL,
		    "load error: %s (%d errors: %s)", c->name, nerr,
		    show(errs));
		if (c->secret != NULL)
			CHECK(strstr(errs, c->secret) == NULL,
			    "load error: %s does not echo the hash field",
			    c->name);
		auth_table_free(users);
	}
	nerr = -1;
	{
		char errbuf[512];
		FILE *e = fmemopen(errbuf, sizeof(errbuf), "w");

		memset(errbuf, 0, sizeof(errbuf));
		users = auth_table_load("/nonexistent/sluice/users", e, &nerr);
		fclose(e);
		CHECK(users == NULL && nerr == 1 &&
		          strstr(errbuf, "/nonexistent/sluice/users: cannot "
		                         "open") != NULL,
		    "load error: missing file (%s)", show(errbuf));
	}
	users = load_text("# nobody yet\n\n", errs, sizeof(errs), &nerr);
	CHECK(users != NULL && nerr == 0 && auth_table_count(users) == 0,
	    "load: a file of comments has no users");
	auth_table_free(users);
	auth_table_free(NULL);
}

static void
test_hash_password(void)
{
	char why[WHY_MAX] = "";
	char *a = auth_hash_password("correct horse", why);
	char *b = auth_hash_password("correct horse", why);

	CHECK(a != NULL && strncmp(a, "$y$", 3) == 0, "hash: yescrypt");
	CHECK(a != NULL && b != NULL && strcmp(a, b) != 0,
	    "hash: a fresh salt each time");
	CHECK(a != NULL && hash_matches("correct horse", a),
	    "hash: crypt_rn agrees");
	free(a);
	free(b);
	why[0] = '\0';
	a = auth_hash_password("", why);
	CHECK(a == NULL && strstr(why, "empty") != NULL,
	    "hash: empty password refused (%s)", why);
	free(a);
}

struct dcase {
	const char *in;
	size_t outlen; /* 0: 64 */
	int ret;
	const char *out; /* `ret` octets */
};

static const struct dcase dcases[] = {
    {"=", 0, 0, ""}, /* RFC 4954 section 4 */
    {"", 0, 0, ""},
    {"AA==", 0, 1, "\0"},
    {"Zg==", 0, 1, "f"},
    {"Zm8=", 0, 2, "fo"},
    {"Zm9v", 0, 3, "foo"},
    {"Zm9vYg==", 0, 4, "foob"},
    {"Zm9vYmE=", 0, 5, "fooba"},
    {"Zm9vYmFy", 0, 6, "foobar"},
    {"AGFsaWNlAHNlY3JldA==", 0, 13, "\0alice\0secret"},
    {"//79", 0, 3, "\xff\xfe\xfd"},
    {"Zm9vYmFy", 7, 6, "foobar"},
    {"Zm9vYmFy", 6, -1, ""}, /* no room for the NUL */
    {"A", 0, -1, ""},
    {"AA", 0, -1, ""},
    {"AA=", 0, -1, ""},
    {"A===", 0, -1, ""},
    {"====", 0, -1, ""},
    {"==", 0, -1, ""},
    {"!!!!", 0, -1, ""},
    {"Zm 9v", 0, -1, ""},
    {"Zm 9vYmE", 0, -1, ""},
    {" Zm9", 0, -1, ""},
    {"Zm9v\r\n", 0, -1, ""},
    {"Zg==Zm8=", 0, -1, ""}, /* padding inside */
    {"Zm=v", 0, -1, ""},
    {"Zm9v====", 0, -1, ""},
    {"Zh==", 0, -1, ""}, /* non-canonical: unused bits set */
    {"Zm9=", 0, -1, ""},
    {"Zm9v-_==", 0, -1, ""}, /* base64url is not base64 */
    {"*", 0, -1, ""},
};

static void
test_b64_decode(void)
{
	char out[64];
	size_t i;

	for (i = 0; i < NELEM(dcases); i++) {
		const struct dcase *c = &dcases[i];
		size_t outlen = c->outlen ? c->outlen : sizeof(out);
		int r;

		memset(out, 'x', sizeof(out));
		r = auth_b64_decode(c->in, out, outlen);
		CHECK(r == c->ret &&
		          (r < 0 || (memcmp(out, c->out, (size_t)r) == 0 &&
		                        out[r] == '\0')) &&
		          (r >= 0 || out[0] == '\0'),
		    "b64 decode #%zu \"%s\" -> %d (got %d)", i, show(c->in),
		    c->ret, r);
	}
	CHECK(auth_b64_decode("Zg==", out, 0) == -1, "b64 decode: no room");
}

#define S(x) x, sizeof(x) - 1

struct pcase {
	const char *name;
	const char *msg;
	size_t len;
	int ret;
	const char *authzid, *authcid, *passwd;
};

static const struct pcase pcases[] = {
    {"no authzid", S("\0alice\0secret"), 0, "", "alice", "secret"},
    {"with authzid", S("admin\0alice\0s e c"), 0, "admin", "alice", "s e c"},
    {"empty password", S("\0alice\0"), 0, "", "alice", ""},
    {"one NUL", S("alice\0secret"), -1, "", "", ""},
    {"no NUL", S("alicesecret"), -1, "", "", ""},
    {"three NULs", S("\0alice\0secret\0"), -1, "", "", ""},
    {"four fields", S("a\0b\0c\0d"), -1, "", "", ""},
    {"empty authcid", S("\0\0secret"), -1, "", "", ""},
    {"empty authcid with authzid", S("admin\0\0secret"), -1, "", "", ""},
    {"only NULs", S("\0\0"), -1, "", "", ""},
    {"empty", S(""), -1, "", "", ""},
};

/* One message with fields of the given lengths ('z', 'c', 'p'). */
static size_t
plain_msg(char *buf, size_t zlen, size_t clen, size_t plen)
{
	size_t n = 0;

	memset(buf + n, 'z', zlen);
	n += zlen;
	buf[n++] = '\0';
	memset(buf + n, 'c', clen);
	n += clen;
	buf[n++] = '\0';
	memset(buf + n, 'p', plen);
	return n + plen;
}

static void
test_sasl_plain(void)
{
	char z[AUTH_FIELD_MAX], c[AUTH_FIELD_MAX], p[AUTH_FIELD_MAX];
	char msg[3 * AUTH_FIELD_MAX + 8];
	static const struct {
		size_t zlen, clen, plen;
		int ret;
	} lens[] = {
	    {255, 255, 255, 0},
	    {256, 5, 5, -1},
	    {0, 256, 5, -1},
	    {0, 5, 256, -1},
	    {0, 1, 1, 0},
	};
	size_t i, n;

	for (i = 0; i < NELEM(pcases); i++) {
		const struct pcase *t = &pcases[i];
		int r;

		memset(z, 'x', sizeof(z));
		memset(c, 'x', sizeof(c));
		memset(p, 'x', sizeof(p));
		r = sasl_plain_split(t->msg, t->len, z, c, p);
		CHECK(r == t->ret && strcmp(z, t->authzid) == 0 &&
		          strcmp(c, t->authcid) == 0 &&
		          strcmp(p, t->passwd) == 0,
		    "sasl plain: %s -> %d (got %d)", t->name, t->ret, r);
	}
	for (i = 0; i < NELEM(lens); i++) {
		int r;

		n = plain_msg(msg, lens[i].zlen, lens[i].clen, lens[i].plen);
		r = sasl_plain_split(msg, n, z, c, p);
		CHECK(r == lens[i].ret &&
		          (r != 0 || (strlen(z) == lens[i].zlen &&
		                         strlen(c) == lens[i].clen &&
		                         strlen(p) == lens[i].plen)) &&
		          (r == 0 || p[0] == '\0'),
		    "sasl plain: fields of %zu/%zu/%zu octets -> %d",
		    lens[i].zlen, lens[i].clen, lens[i].plen, lens[i].ret);
	}
}

/*
 * Run `sluice passwd user` (passwd_cmd) with standard input from `input` (`len`
 * octets) and standard output and error captured.
 */
static int
run_passwd(
    const char *user, const char *input, size_t len, char **out, char **err)
{
	char inpath[64], outpath[64], errpath[64];
	int save0 = dup(0), save1, save2, fd, status;

	write_temp(inpath, input, len);
	write_temp(outpath, "", 0);
	write_temp(errpath, "", 0);
	fflush(stdout);
	fflush(stderr);
	save1 = dup(1);
	save2 = dup(2);
	fd = open(inpath, O_RDONLY);
	dup2(fd, 0);
	close(fd);
	fd = open(outpath, O_WRONLY);
	dup2(fd, 1);
	close(fd);
	fd = open(errpath, O_WRONLY);
	dup2(fd, 2);
	close(fd);

	{
		char *argv[] = {"passwd", (char *)user, NULL};

		status = passwd_cmd(2, argv);
	}

	fflush(stdout);
	fflush(stderr);
	dup2(save0, 0);
	dup2(save1, 1);
	dup2(save2, 2);
	close(save0);
	close(save1);
	close(save2);
	*out = read_all(outpath);
	*err = read_all(errpath);
	unlink(inpath);
	unlink(outpath);
	unlink(errpath);
	return status;
}

struct wcase {
	const char *name, *user;
	const char *input;
	size_t len;
	int status;
	const char *password; /* the one expected in the hash */
	const char *err;      /* in standard error when status != 0 */
};

static const struct wcase wcases[] = {
    {"one line", "alice", S("s3cret pass\n"), 0, "s3cret pass", NULL},
    {"crlf", "alice@example.org", S("Zecret9\r\n"), 0, "Zecret9", NULL},
    {"no newline", "bob", S("Zecret9"), 0, "Zecret9", NULL},
    {"first line only", "bob", S("Zecret9\nsecond\n"), 0, "Zecret9", NULL},
    {"empty input", "bob", S(""), 1, NULL, "empty password"},
    {"empty line", "bob", S("\n"), 1, NULL, "empty password"},
    {"cr only", "bob", S("\r\n"), 1, NULL, "empty password"},
    {"nul", "bob", S("Zec\0ret9\n"), 1, NULL, "NUL"},
    {"colon in user", "a:b", S("Zecret9\n"), 1, NULL, "user name"},
    {"space in user", "a b", S("Zecret9\n"), 1, NULL, "user name"},
    {"tab in user", "a\tb", S("Zecret9\n"), 1, NULL, "user name"},
    {"newline in user", "a\n", S("Zecret9\n"), 1, NULL, "user name"},
    {"control in user", "a\x01z", S("Zecret9\n"), 1, NULL, "user name"},
    {"empty user", "", S("Zecret9\n"), 1, NULL, "user name"},
    {"null user", NULL, S("Zecret9\n"), 1, NULL, "user name"},
};

static void
check_passwd_output(const char *name, const char *user, const char *password,
    int status, const char *out, const char *err)
{
	size_t ulen = strlen(user), olen = strlen(out);
	bool shape = strncmp(out, user, ulen) == 0 && out[ulen] == ':' &&
	             olen > ulen + 1 && out[olen - 1] == '\n' &&
	             strchr(out, '\n') == out + olen - 1;
	char hash[CRYPT_OUTPUT_SIZE] = "";

	if (shape)
		snprintf(hash, sizeof(hash), "%.*s", (int)(olen - ulen - 2),
		    out + ulen + 1);
	CHECK(status == 0 && shape && err[0] == '\0',
	    "passwd: %s prints \"USER:HASH\" (status %d, stderr \"%s\")", name,
	    status, show(err));
	CHECK(strncmp(hash, "$y$", 3) == 0 && hash_matches(password, hash),
	    "passwd: %s hash is yescrypt of the line", name);
}

static void
test_passwd(void)
{
	char longpw[AUTH_FIELD_MAX + 2], *out, *err, text[512], errs[256];
	struct auth_table *users;
	size_t i;
	int status, nerr;

	for (i = 0; i < NELEM(wcases); i++) {
		const struct wcase *c = &wcases[i];

		status = run_passwd(c->user, c->input, c->len, &out, &err);
		if (c->status == 0) {
			check_passwd_output(
			    c->name, c->user, c->password, status, out, err);
		} else {
			CHECK(status == 1 && out[0] == '\0' &&
			          strncmp(err, "sluice: ", 8) == 0 &&
			          strstr(err, c->err) != NULL &&
			          strchr(err, '\n') == err + strlen(err) - 1,
			    "passwd: %s fails (status %d, stderr \"%s\")",
			    c->name, status, show(err));
			CHECK(strstr(err, "Zecret9") == NULL &&
			          strstr(err, "Zec") == NULL,
			    "passwd: %s does not print the password", c->name);
		}
		/* The first output must load and verify as a users file. */
		if (i == 0 && status == 0) {
			snprintf(text, sizeof(text), "%s", out);
			users = load_text(text, errs, sizeof(errs), &nerr);
			CHECK(users != NULL && auth_table_verify(users, "alice",
			                           "s3cret pass"),
			    "passwd: its output is a users file line");
			auth_table_free(users);
		}
		free(out);
		free(err);
	}

	/* 255 octets is the longest a SASL field can carry. */
	memset(longpw, 'x', AUTH_FIELD_MAX - 1);
	longpw[AUTH_FIELD_MAX - 1] = '\n';
	status = run_passwd("max", longpw, AUTH_FIELD_MAX, &out, &err);
	longpw[AUTH_FIELD_MAX - 1] = '\0';
	check_passwd_output(
	    "255-octet password", "max", longpw, status, out, err);
	free(out);
	free(err);
	memset(longpw, 'x', AUTH_FIELD_MAX);
	longpw[AUTH_FIELD_MAX] = '\n';
	status = run_passwd("max", longpw, AUTH_FIELD_MAX + 1, &out, &err);
	CHECK(status == 1 && out[0] == '\0' &&
	          strstr(err, "longer than 255 octets") != NULL &&
	          strstr(err, "xxxxxxxx") == NULL,
	    "passwd: 256-octet password refused (%s)", show(err));
	free(out);
	free(err);
}

int
main(void)
{
	struct auth_table *users;

	make_hashes();
	users = load_users();
	test_verify(users);
	test_senders(users);
	auth_table_free(users);
	test_errors();
	test_hash_password();
	test_b64_decode();
	test_sasl_plain();
	test_passwd();
	UNIT_DONE();
}
