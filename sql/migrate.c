/*
 * migrate.c - copy an SQLite queue into a PostgreSQL one (sluice queue
 * migrate): the one place that talks to both databases at once.
 *
 * Invariants:
 *  1. One read transaction on the SQLite file and one write transaction on
 *     PostgreSQL: the copy is a snapshot, and it is all there or none of
 *     it is (a failure leaves the target as empty as it was).
 *  2. Only into a queue with no messages: nothing is merged.
 *  3. Leases and partly received messages (`incoming`) are not copied: no
 *     node holds the copied mail, and no session is receiving into it.
 */
#include "pg.h"
#include "sqlite.h"
#include "store.h"

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A table: what to read from SQLite and where it goes in PostgreSQL
 * (the same columns, in order). */
static const struct copy {
	const char *what;
	const char *select;
	const char *insert;
} copies[] = {
    {"messages",
        "SELECT id, received_at, sender, size, stored_size, body_type, "
        "smtputf8, dsn_ret, dsn_envid, client_ip, client_port, helo, "
        "protocol, tls_version, tls_cipher, auth_user, requiretls, "
        "tls_required_no FROM messages",
        "INSERT INTO messages (id, received_at, sender, size, stored_size, "
        "body_type, smtputf8, dsn_ret, dsn_envid, client_ip, client_port, "
        "helo, protocol, tls_version, tls_cipher, auth_user, requiretls, "
        "tls_required_no) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, "
        "$11, $12, $13, $14, $15, $16, $17, $18)"},
    {"recipients",
        "SELECT msg_id, rcpt_no, address, domain, state, attempts, "
        "next_attempt_at, last_attempt_at, last_reply, notify, orcpt, "
        "notified FROM recipients",
        "INSERT INTO recipients (msg_id, rcpt_no, address, domain, state, "
        "attempts, next_attempt_at, last_attempt_at, last_reply, notify, "
        "orcpt, notified) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, "
        "$11, $12)"},
    {"body chunks",
        "SELECT msg_id, seq, data FROM body_chunks WHERE msg_id IN "
        "(SELECT id FROM messages)",
        "INSERT INTO body_chunks (msg_id, seq, data) VALUES ($1, $2, $3)"},
    {"attempts",
        "SELECT id, msg_id, rcpt_no, at, mx_host, ip, port, tls, status, "
        "reply, duration_ms, security, security_why FROM attempts",
        "INSERT INTO attempts (id, msg_id, rcpt_no, at, mx_host, ip, port, "
        "tls, status, reply, duration_ms, security, security_why) VALUES "
        "($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"},
    {"TLS-RPT results",
        "SELECT day, policy_domain, policy_type, policy_string, mx_host, "
        "result_type, sending_ip, receiving_ip, count FROM tlsrpt_results",
        "INSERT INTO tlsrpt_results (day, policy_domain, policy_type, "
        "policy_string, mx_host, result_type, sending_ip, receiving_ip, "
        "count) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"},
    {"TLS-RPT days sent", "SELECT day, sent_at FROM tlsrpt_sent",
        "INSERT INTO tlsrpt_sent (day, sent_at) VALUES ($1, $2)"},
    {"MTA-STS policies",
        "SELECT domain, id, mode, mx, max_age, fetched_at, expires_at, "
        "policy_text, last_error FROM sts_policies",
        "INSERT INTO sts_policies (domain, id, mode, mx, max_age, "
        "fetched_at, expires_at, policy_text, last_error) VALUES ($1, $2, "
        "$3, $4, $5, $6, $7, $8, $9)"},
};

enum { NCOPIES = sizeof(copies) / sizeof(copies[0]) };

/* Copy one table's rows; how many, or -1 with `why`. */
static int64_t
copy_table(sqlite3 *src, struct pg *dst, const struct copy *c, char *why)
{
	sqlite3_stmt *st = NULL;
	int64_t n = 0;
	int rc, i;

	if (sqlite3_prepare_v2(src, c->select, -1, &st, NULL) != SQLITE_OK) {
		why_set(why, "reading %s: %s", c->what, sqlite3_errmsg(src));
		return -1;
	}
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		struct pg_args a = {0};
		char err[WHY_MAX];

		for (i = 0; i < sqlite3_column_count(st); i++) {
			switch (sqlite3_column_type(st, i)) {
			case SQLITE_NULL:
				pg_text(&a, NULL);
				break;
			case SQLITE_INTEGER:
				pg_int(&a, sqlite3_column_int64(st, i));
				break;
			case SQLITE_BLOB:
				/* Bodies; text stored as a BLOB is made
				 * text (pg_text: valid UTF-8) below. */
				if (strcmp(c->what, "body chunks") == 0) {
					pg_bin(&a, sqlite3_column_blob(st, i),
					    (size_t)sqlite3_column_bytes(
					        st, i));
					break;
				}
				/* fall through */
			default:
				pg_text(&a,
				    (const char *)sqlite3_column_text(st, i));
				break;
			}
		}
		if (pg_run(dst, c->insert, &a, err) != RES_OK) {
			why_set(why, "writing %s: %s", c->what, err);
			sqlite3_finalize(st);
			return -1;
		}
		n++;
	}
	if (rc != SQLITE_DONE) {
		why_set(why, "reading %s: %s", c->what, sqlite3_errmsg(src));
		n = -1;
	}
	sqlite3_finalize(st);
	return n;
}

int
store_migrate(const char *from, const char *to, int64_t counts[],
    const char *names[], int max, char *why)
{
	sqlite3 *src = NULL;
	struct store *dst_store = NULL;
	struct pg *dst;
	PGresult *r;
	char err[WHY_MAX];
	int k = -1, i;

	if (store_path_is_database(from) || !store_path_is_database(to)) {
		why_set(why, "a migration goes from an SQLite queue to a "
		             "PostgreSQL one");
		return -1;
	}
	if (sqlite3_open_v2(from, &src, SQLITE_OPEN_READONLY, NULL) !=
	    SQLITE_OK) {
		why_set(why, "cannot open %s: %s", from, sqlite3_errmsg(src));
		goto out;
	}
	sqlite3_busy_timeout(src, 10000);
	/* The target, its schema made if need be, and then empty. */
	dst_store = pg_open_schema(to, err);
	if (dst_store == NULL) {
		char shown[512];

		store_path_shown(to, shown, sizeof(shown));
		why_set(why, "%s: %s", shown, err);
		goto out;
	}
	dst = pg_db(dst_store);
	dst->cli = true;
	if (sqlite3_exec(src, "BEGIN", NULL, NULL, NULL) != SQLITE_OK ||
	    sqlite3_exec(src, "SELECT 1 FROM messages LIMIT 1", NULL, NULL,
	        NULL) != SQLITE_OK) {
		why_set(why, "%s holds no sluice queue: %s", from,
		    sqlite3_errmsg(src));
		goto out;
	}
	{
		sqlite3_stmt *st;
		int v = -1;

		if (sqlite3_prepare_v2(src, "PRAGMA user_version", -1, &st,
		        NULL) == SQLITE_OK &&
		    sqlite3_step(st) == SQLITE_ROW)
			v = sqlite3_column_int(st, 0);
		sqlite3_finalize(st);
		if (v != DB_SCHEMA_VERSION) {
			why_set(why,
			    "%s has queue schema version %d; this sluice "
			    "migrates version %d (start sluice serve on it "
			    "once to upgrade it)",
			    from, v, DB_SCHEMA_VERSION);
			goto out;
		}
	}
	if (pg_begin(dst_store, why) != RES_OK)
		goto out;
	r = pg_query(
	    dst, "SELECT count(*) FROM messages", NULL, false, false, why);
	if (r == NULL)
		goto rollback;
	i = (int)pg_iv(r, 0, 0);
	PQclear(r);
	if (i != 0) {
		why_set(why,
		    "the PostgreSQL queue already holds %d message%s: a "
		    "migration goes into an empty one",
		    i, i == 1 ? "" : "s");
		goto rollback;
	}
	for (i = 0; i < NCOPIES && i < max; i++) {
		names[i] = copies[i].what;
		if ((counts[i] = copy_table(src, dst, &copies[i], why)) < 0)
			goto rollback;
	}
	/* New attempts are numbered after the copied ones. */
	if (pg_run(dst,
	        "SELECT setval('attempts_id_seq', "
	        "greatest((SELECT max(id) FROM attempts), 1))",
	        NULL, why) != RES_OK ||
	    pg_commit(dst_store, why) != RES_OK)
		goto rollback;
	k = i;
	goto out;
rollback:
	pg_rollback(dst_store);
out:
	if (src != NULL)
		sqlite3_close(src);
	if (dst_store != NULL)
		store_close(dst_store);
	return k;
}
