/*
 * tls.h - server-side TLS on GnuTLS: credentials (certificate chain and
 * key), the priority string, a self-signed certificate for first runs, and
 * reference counting so that SIGHUP can swap credentials under running
 * sessions.
 *
 * Threads: a `struct tls_creds` is immutable and reference-counted; a
 * connection takes a reference for as long as its TLS session lives, so a
 * reload (which swaps the current credentials in a common/holder.h slot)
 * never frees credentials in use.
 */
#ifndef SLUICE_TLS_H
#define SLUICE_TLS_H

#include <stdbool.h>

struct tls_creds;

/*
 * Load the PEM certificate chain `cert` and key `key` and compile
 * `priority`.  NULL with `why` on any problem (unreadable file, key that
 * does not match, bad priority string).
 */
struct tls_creds *tls_creds_load(
    const char *cert, const char *key, const char *priority, char *why);
void tls_creds_ref(struct tls_creds *c);
void tls_creds_unref(struct tls_creds *c); /* NULL is a no-op */

/* Check a priority string; 0 or -1 with `why`. */
int tls_priority_check(const char *priority, char *why);

/*
 * Write a self-signed certificate for `hostname` (RSA 2048, SHA-256, valid
 * for ten years, the name as CN and DNS SAN) and its key (mode 0600; 0660,
 * and 0664 for the certificate, in a folder shared with a group:
 * shared_file_mode in util.h) to the two paths, unless a pair made for
 * `hostname` is there already.  A pair made for another name (the host
 * name changed), one whose key does not match, or one that cannot be read
 * is replaced, with a log line that says why.  Returns 1 when it generated
 * the pair, 0 when it kept it, -1 with `why` on failure.
 */
int tls_selfsigned_ensure(
    const char *cert, const char *key, const char *hostname, char *why);

/*
 * Client credentials for outbound TLS: the trust store is `ca_file` (PEM)
 * or, when NULL or "", the system's.  Immutable once made; share it
 * between threads.  NULL with `why`.
 */
struct tls_creds *tls_client_creds_new(const char *ca_file, char *why);

/* For conn.c: the GnuTLS objects behind the credentials. */
void *tls_creds_x509(const struct tls_creds *c);
void *tls_creds_priority(const struct tls_creds *c);

#endif
