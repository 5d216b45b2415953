/*
 * base64.h - base64 (RFC 4648 section 4) through GnuTLS, for SMTP AUTH
 * both ways (the session's SASL, the SMTP client's credentials) and
 * whatever else encodes: the one codec in sluice.
 *
 * Both functions write a NUL-terminated result into the caller's buffer
 * and fail, never truncate, when it does not fit.  Decoding is strict:
 * only the canonical encoding of some octets is accepted (no white
 * space, padding as RFC 4648 has it, the bits padding drops zero), as
 * RFC 4954 asks of a server.
 *
 * Threads: reentrant; callable from any thread.  Buffers GnuTLS lends
 * are wiped before they are freed (they may hold passwords).
 */
#ifndef SLUICE_BASE64_H
#define SLUICE_BASE64_H

#include <stddef.h>

/* `len` octets of `in` as base64 into out[outlen]: the encoded length,
 * or -1 (out "" when outlen > 0) when it does not fit. */
int base64_encode(const void *in, size_t len, char *out, size_t outlen);

/* The octets `in` encodes into out[outlen] (NUL-terminated after them):
 * their count, or -1 (out "" when outlen > 0) when `in` is not canonical
 * base64 or they do not fit. */
int base64_decode(const char *in, void *out, size_t outlen);

#endif
