/*
 * relays.c - the sender_relays table (see relays.h).
 */
#include "relays.h"
#include "envelope.h"
#include "util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct relays {
	struct relay *v;
	int n;
};

static void
relay_clear(struct relay *r)
{
	free(r->sender);
	free(r->user);
	if (r->password != NULL)
		explicit_bzero(r->password, strlen(r->password));
	free(r->password);
}

void
relays_free(struct relays *t)
{
	int i;

	if (t == NULL)
		return;
	for (i = 0; i < t->n; i++)
		relay_clear(&t->v[i]);
	free(t->v);
	free(t);
}

int
relays_count(const struct relays *t)
{
	return t != NULL ? t->n : 0;
}

static void
lower(char *s)
{
	for (; *s != '\0'; s++)
		*s = ascii_lower(*s);
}

/* The first line of `path`, without its line end; NULL + why. */
static char *
read_password(const char *path, char *why)
{
	char buf[512];
	FILE *f = fopen(path, "r");
	size_t n;

	if (f == NULL) {
		why_set(why, "cannot read password_file %s: %s", path,
		    strerror(errno));
		return NULL;
	}
	if (fgets(buf, sizeof(buf), f) == NULL)
		buf[0] = '\0';
	fclose(f);
	n = strcspn(buf, "\r\n");
	buf[n] = '\0';
	if (n == 0) {
		why_set(why, "password_file %s is empty", path);
		return NULL;
	}
	return xstrdup(buf);
}

/* One line's fields into r; 0, or -1 with why (without FILE:LINE). */
static int
parse_line(char *line, struct relay *r, char *why)
{
	char *f[8], *save = NULL, *t, *pwfile = NULL;
	int nf = 0, i;

	for (t = strtok_r(line, " \t", &save); t != NULL;
	     t = strtok_r(NULL, " \t", &save)) {
		if (nf == 8) {
			why_set(why, "too many fields");
			return -1;
		}
		f[nf++] = t;
	}
	if (nf < 2) {
		why_set(why, "expected SENDER HOST:PORT [tls=...] [user=... "
		             "password_file=...]");
		return -1;
	}
	if (strcmp(f[0], "<>") != 0 && strchr(f[0], '@') == NULL) {
		why_set(
		    why, "bad sender \"%s\" (an address, @domain or <>)", f[0]);
		return -1;
	}
	r->sender = xstrdup(f[0]);
	lower(r->sender);
	if (config_parse_hostport(f[1], &r->to, why) != 0)
		return -1;
	r->tls = SMARTHOST_TLS_STARTTLS;
	for (i = 2; i < nf; i++) {
		if (strcmp(f[i], "tls=starttls") == 0)
			r->tls = SMARTHOST_TLS_STARTTLS;
		else if (strcmp(f[i], "tls=smtps") == 0)
			r->tls = SMARTHOST_TLS_SMTPS;
		else if (strcmp(f[i], "tls=none") == 0)
			r->tls = SMARTHOST_TLS_NONE;
		else if (strncmp(f[i], "user=", 5) == 0 && f[i][5] != '\0' &&
		         r->user == NULL)
			r->user = xstrdup(f[i] + 5);
		else if (strncmp(f[i], "password_file=", 14) == 0 &&
		         f[i][14] != '\0' && pwfile == NULL)
			pwfile = f[i] + 14;
		else {
			why_set(why, "unknown or repeated field \"%s\"", f[i]);
			return -1;
		}
	}
	if ((r->user == NULL) != (pwfile == NULL)) {
		why_set(why, "user= and password_file= go together");
		return -1;
	}
	if (pwfile != NULL &&
	    (r->password = read_password(pwfile, why)) == NULL)
		return -1;
	if (r->to.port == 0)
		r->to.port = r->tls == SMARTHOST_TLS_SMTPS ? 465 : 587;
	snprintf(r->key, sizeof(r->key), "[%s]:%d%s%s", r->to.host, r->to.port,
	    r->user ? " " : "", r->user ? r->user : "");
	return 0;
}

struct relays *
relays_load(const char *path, char *why)
{
	struct relays *t = xcalloc(1, sizeof(*t));
	char line[2048], err[WHY_MAX];
	size_t cap = 0;
	int lineno = 0;
	FILE *f;

	if (path == NULL || path[0] == '\0')
		return t;
	f = fopen(path, "r");
	if (f == NULL) {
		why_set(why, "sender_relays %s: %s", path, strerror(errno));
		relays_free(t);
		return NULL;
	}
	while (fgets(line, sizeof(line), f) != NULL) {
		char *p = line, *hash = strchr(line, '#');

		lineno++;
		if (hash != NULL)
			*hash = '\0';
		line[strcspn(line, "\r\n")] = '\0';
		while (*p == ' ' || *p == '\t')
			p++;
		if (*p == '\0')
			continue;
		if ((size_t)t->n == cap) {
			cap = cap ? cap * 2 : 16;
			t->v = xrealloc(t->v, cap * sizeof(*t->v));
		}
		memset(&t->v[t->n], 0, sizeof(t->v[t->n]));
		if (parse_line(p, &t->v[t->n], err) != 0) {
			why_set(why, "%s:%d: %s", path, lineno, err);
			relay_clear(&t->v[t->n]);
			fclose(f);
			relays_free(t);
			return NULL;
		}
		t->n++;
	}
	fclose(f);
	return t;
}

const struct relay *
relays_at(const struct relays *t, int i)
{
	return t != NULL && i >= 0 && i < t->n ? &t->v[i] : NULL;
}

const struct relay *
relays_for(const struct relays *t, const char *sender)
{
	const char *at = strrchr(sender, '@');
	char dom[SMTP_DOMAIN_MAX + 2];
	int i;

	if (t == NULL)
		return NULL;
	for (i = 0; i < t->n; i++)
		if (sender[0] == '\0'
		        ? strcmp(t->v[i].sender, "<>") == 0
		        : ascii_casecmp(t->v[i].sender, sender) == 0)
			return &t->v[i];
	if (at == NULL || strlen(at) >= sizeof(dom))
		return NULL;
	snprintf(dom, sizeof(dom), "%s", at);
	for (i = 0; i < t->n; i++)
		if (ascii_casecmp(t->v[i].sender, dom) == 0)
			return &t->v[i];
	return NULL;
}
