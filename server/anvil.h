/*
 * anvil.h - what each client is doing, across its sessions (after
 * Postfix's anvil): open connections, the connection rate and the rate of
 * failed AUTH attempts, per client.
 *
 * A client is an address cut to a prefix: /32 for IPv4 and /64 for IPv6 by
 * default (client_ipv4_prefix, client_ipv6_prefix), since one IPv6 host
 * usually holds a whole /64.  Rates are counted over a sliding window of
 * `unit` milliseconds (client_rate_time_unit), estimated from the counts of
 * the current and the previous window.
 *
 * Memory is bounded: at most `max_clients` entries.  Entries of clients
 * with no open connection are dropped once their counts have aged out, and
 * the oldest of them first when the table is full; a client that cannot
 * be tracked (every entry holds an open connection) is let through.
 *
 * Threads: every function may be called from any thread (one mutex inside,
 * never held across anything but the table).
 */
#ifndef SLUICE_ANVIL_H
#define SLUICE_ANVIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* A client: the address family and the address cut to its prefix. */
struct anvil_key {
	unsigned char b[17];
};

/* The key of `sa` with the given prefix lengths (0..32, 0..128). */
void anvil_key(const struct sockaddr *sa, int v4_prefix, int v6_prefix,
    struct anvil_key *k);

/* "192.0.2.7", "2001:db8:1:2::/64": the client as logs name it. */
void anvil_key_text(const struct anvil_key *k, int v4_prefix, int v6_prefix,
    char *buf, size_t len);

struct anvil;

struct anvil *anvil_new(size_t max_clients);
void anvil_free(struct anvil *a); /* NULL is a no-op */

/* What anvil_connect decided. */
enum anvil_verdict {
	ANVIL_OK,
	ANVIL_TOO_MANY, /* max_conns open already */
	ANVIL_RATE,     /* max_rate connections in the window already */
};

/*
 * A new connection from `k` at `now` (ms).  Counted (one more open, one
 * more in the rate) only when it is ANVIL_OK; every ANVIL_OK is followed by
 * one anvil_disconnect.  Limits of 0 are off.  `*count` is set to the open
 * connections or the rate that decided.
 */
enum anvil_verdict anvil_connect(struct anvil *a, const struct anvil_key *k,
    int max_conns, int max_rate, int64_t unit, int64_t now, int *count);
void anvil_disconnect(struct anvil *a, const struct anvil_key *k, int64_t now);

/* Count one failed AUTH; returns the client's failure rate after it. */
int anvil_auth_failed(
    struct anvil *a, const struct anvil_key *k, int64_t unit, int64_t now);

/* The client's failure rate now. */
int anvil_auth_rate(
    struct anvil *a, const struct anvil_key *k, int64_t unit, int64_t now);

/* Entries in use (for tests and metrics). */
size_t anvil_size(struct anvil *a);

#endif
