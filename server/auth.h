/*
 * auth.h - SMTP AUTH support (RFC 4954): the credentials file, password
 * verification with libcrypt, SASL PLAIN (RFC 4616) and LOGIN decoding,
 * and `sluice passwd`.
 *
 * The credentials file (`auth_users`) has one user per line:
 *
 *     user:HASH[:sender, sender, ...]
 *
 * HASH is a crypt(3) hash (yescrypt "$y$", SHA-512-crypt "$6$", bcrypt
 * "$2b$"/"$2y$").  The optional third field lists the envelope senders the
 * user may use when sender_login_match = yes: full addresses, or "@domain"
 * for any address in that domain.  Without it, the user may only use the
 * address equal to its user name.  Blank lines and lines starting with '#'
 * are ignored.
 *
 * Threads: a loaded `struct auth_table` is immutable; any thread may call
 * auth_table_verify and auth_table_sender_allowed on it (crypt_rn keeps its
 * state in a per-call buffer).  A reload builds a new one.
 */
#ifndef SLUICE_AUTH_H
#define SLUICE_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#define AUTH_FIELD_MAX 256 /* longest user name, password or authzid */

/* The users of the auth_users file, loaded once and never changed. */
struct auth_table;

/*
 * Load `path`.  Every problem (unreadable file, a line without a hash, a
 * hash in an unsupported format, a duplicate user) is printed to `errs`
 * as "PATH:LINE: message" and counted in *nerrors; the result is NULL when
 * there was any.
 */
struct auth_table *auth_table_load(const char *path, FILE *errs, int *nerrors);
void auth_table_free(struct auth_table *t);

/* Number of users loaded. */
int auth_table_count(const struct auth_table *t);

/*
 * True when `user` exists and `password` matches its hash.  An unknown user
 * costs the same hashing work as a known one (no user enumeration by
 * timing).
 */
bool auth_table_verify(
    const struct auth_table *t, const char *user, const char *password);

/*
 * sender_login_match: may `user` use envelope sender `sender`
 * ("local@domain", compared case-insensitively in the domain)?  The null
 * sender "" is always allowed (bounces).
 */
bool auth_table_sender_allowed(
    const struct auth_table *t, const char *user, const char *sender);

/*
 * Hash `password` with yescrypt and a fresh salt.  Returns a malloc'd
 * string, or NULL with `why` (WHY_MAX bytes) filled.
 */
char *auth_hash_password(const char *password, char *why);

/*
 * Decode a SASL response: canonical base64 (tls/base64.h) into `out`
 * (capacity `outlen`, always NUL-terminated), or "=" alone, the empty
 * string (RFC 4954 section 4: an empty initial response).  Returns the
 * decoded length, or -1 for malformed base64 or output that does not fit.
 */
int auth_b64_decode(const char *in, char *out, size_t outlen);

/*
 * Split a decoded SASL PLAIN message "authzid NUL authcid NUL passwd"
 * (RFC 4616) of `len` octets into its three parts (each at most
 * AUTH_FIELD_MAX - 1 octets, NUL-terminated).  Returns 0, or -1 when
 * malformed (not exactly two NULs, an empty authcid, a field too long).
 */
int sasl_plain_split(
    const char *msg, size_t len, char *authzid, char *authcid, char *passwd);

/*
 * Whether `user` can be a user name: it fits "USER:HASH" and a SASL field
 * (a token of 1 to AUTH_FIELD_MAX - 1 octets, without ':').
 */
bool auth_user_name_ok(const char *user);

#endif
