/*
 * dkim.h - DKIM signatures (RFC 6376): RSA-SHA256 and Ed25519-SHA256
 * (RFC 8463), relaxed/relaxed canonicalization, made in one pass while a
 * message streams in.  The cryptography is GnuTLS's.
 *
 * A signer takes the message as it will be stored (CRLF lines); the
 * header is held (up to DKIM_HEADER_MAX octets), the body only hashed.
 * At the end, dkim_signer_sign writes one DKIM-Signature field per key of
 * the signing domain, to be put in front of the message.
 *
 * h= lists From and the fields RFC 6376 section 5.4.1 suggests, each once
 * more than it occurs (oversigning: a copy added later breaks the
 * signature), and TLS-Report-Domain, TLS-Report-Submitter and TLS-Required
 * the same way when the message has them; no l= (appended content would pass),
 * no x= (a signature must outlive the queue).
 *
 * Threads: a key table is immutable once loaded, shared by every session;
 * a signer belongs to one session.
 */
#ifndef SLUICE_DKIM_H
#define SLUICE_DKIM_H

#include "config.h"
#include "util.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define DKIM_HEADER_MAX (128 * 1024) /* header octets a signer holds */
#define DKIM_SELECTOR_MAX 63         /* one DNS label */

enum dkim_alg { DKIM_RSA_SHA256, DKIM_ED25519_SHA256 };

struct dkim_keys;

/*
 * Load the private keys (PEM, PKCS#8 or PKCS#1; RSA of at least 1024 bits,
 * or Ed25519).  NULL with `why` when any fails; an RSA key under 2048
 * bits is accepted with a warning in *warn (empty otherwise; WHY_MAX).
 * n == 0 gives an empty table.
 */
struct dkim_keys *dkim_keys_load(
    const struct dkim_key_conf *conf, int n, char *warn, char *why);
void dkim_keys_free(struct dkim_keys *k);

/* How many keys sign for `domain` (case-insensitive); 0: none. */
int dkim_keys_count(const struct dkim_keys *k, const char *domain);

/* The number of keys in the table. */
int dkim_keys_total(const struct dkim_keys *k);

struct dkim_signer;

struct dkim_signer *dkim_signer_new(void);
void dkim_signer_free(struct dkim_signer *s);

/* The next octets of the message (header and body, CRLF lines). */
void dkim_signer_put(struct dkim_signer *s, const void *data, size_t len);

/*
 * The domain of the message's From field, lower-cased, into out[len]:
 * 1 when there is exactly one From field with exactly one address, 0
 * when not (no From, several, a list, no domain: such mail is not
 * signed), -1 when the header was too long to hold (DKIM_HEADER_MAX).
 * Call after the whole message was put.
 */
int dkim_signer_from_domain(struct dkim_signer *s, char *out, size_t len);

/*
 * Sign with every key of `domain`, at time `now`: the DKIM-Signature
 * fields, each ending in CRLF, appended to *out (a malloc'd string,
 * *out_len octets; NULL when empty).  RES_OK (also when the domain has no
 * key: nothing appended), or RES_TEMP with `why` when signing failed.
 * Call once, after the whole message was put.
 */
enum res dkim_signer_sign(struct dkim_signer *s, const struct dkim_keys *k,
    const char *domain, int64_t now, char **out, size_t *out_len, char *why);

/*
 * Sign a whole message in memory (a notice sluice writes itself) with the
 * keys of `domain`; the same results as dkim_signer_sign.
 */
enum res dkim_sign_message(const struct dkim_keys *k, const char *domain,
    const void *msg, size_t len, int64_t now, char **out, size_t *out_len,
    char *why);

/*
 * Sign a message sluice writes itself (a notice, a TLS-RPT report) with
 * the keys of `hostname`'s domain: hostname itself or its nearest parent
 * with keys (not the top-level domain).  Nothing (RES_OK, *out NULL) when
 * none has any.
 */
enum res dkim_sign_as_host(const struct dkim_keys *k, const char *hostname,
    const void *msg, size_t len, int64_t now, char **out, size_t *out_len,
    char *why);

/*
 * `sluice dkim keygen`: make a key (`alg`; RSA of `bits`), write it to
 * `path` (PKCS#8 PEM, mode 0600; an existing file is never replaced).
 * 0, or -1 with `why`.
 */
int dkim_keygen(const char *path, enum dkim_alg alg, unsigned bits, char *why);

/*
 * The DNS record that publishes the public half of the key in `path`,
 * one line: SELECTOR._domainkey.DOMAIN. IN TXT ( "v=DKIM1; k=rsa; "
 * "p=..." ), its strings at most 255 octets.  To `f`; 0, or -1 with
 * `why`.
 */
int dkim_print_record(FILE *f, const char *domain, const char *selector,
    const char *path, char *why);

#endif
