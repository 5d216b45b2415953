/*
 * relays.h - sender-dependent relays (sender_relays = FILE): mail from a
 * sender goes through that sender's own relay, with its own credentials
 * (one account per department or per client), as Postfix's
 * sender_dependent_relayhost_maps and smtp_sasl_password_maps do.
 *
 * The file has one line per sender, '#' comments:
 *
 *   SENDER HOST:PORT [tls=starttls|smtps|none] [user=NAME password_file=FILE]
 *
 * SENDER is a full address, "@domain" or "<>" (the null sender); HOST may
 * be [bracketed] (an IP literal such as [192.0.2.7]:587 too).  Either way
 * the host's addresses are used, never its MX records.  tls= defaults to
 * starttls, as for the smarthost: TLS is required unless tls=none, and
 * AUTH only goes over it.  A sender is looked up by its full address,
 * then by "@domain".  Routes (by recipient domain) win over a sender's
 * relay, which wins over the smarthost.
 *
 * Threads: a table is immutable once loaded.
 */
#ifndef SLUICE_RELAYS_H
#define SLUICE_RELAYS_H

#include "config.h"
#include "dests.h"

struct relay {
	char *sender;       /* lower case: "a@b.example", "@b.example", "<>" */
	struct hostport to; /* port 0: 587, or 465 with tls=smtps */
	int tls;            /* SMARTHOST_TLS_* */
	char *user, *password;   /* NULL: no AUTH */
	char key[DESTS_KEY_MAX]; /* its site: "[host]:port user" */
};

struct relays;

/* Load `path` ("" or NULL: an empty table).  NULL + why ("FILE:LINE: ...")
 * on the first problem. */
struct relays *relays_load(const char *path, char *why);
void relays_free(struct relays *t);

/* The relay for mail from `sender` ("" is the null sender), or NULL. */
const struct relay *relays_for(const struct relays *t, const char *sender);

/* The number of relays in the table, and the i-th (in file order). */
int relays_count(const struct relays *t);
const struct relay *relays_at(const struct relays *t, int i);

#endif
