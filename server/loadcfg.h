/*
 * loadcfg.h - finding and loading the configuration, and the places it
 * names, for the server and for every command (server/loadcfg.c).
 */
#ifndef SLUICE_LOADCFG_H
#define SLUICE_LOADCFG_H

#include "config.h"

/*
 * Find and load the configuration: `path` (-c), else $SLUICE_CONFIG, else
 * /etc/sluice/sluice.conf, else the built-in defaults; then SLUICE_<KEY>
 * environment overrides.  NULL after printing the problems to stderr.
 * `*source` says where it came from.
 */
struct config *load_config(const char *path, const char **source);

/* The same for a running server: each problem becomes a log line. */
struct config *load_config_logged(const char *path, const char **source);

#define DEFAULT_CONFIG "/etc/sluice/sluice.conf"

/*
 * Where a command reaches listener `l` (server/loadcfg.c): its address,
 * a wildcard (0.0.0.0, ::) becoming loopback, in *ss and *len, and as
 * text ("127.0.0.1:2525", "[::1]:2525") in `text`.
 */
void listener_target(const struct listen_addr *l, struct sockaddr_storage *ss,
    socklen_t *len, char *text, size_t tlen);

/*
 * The folder that holds the queue and the self-signed key pair
 * (server/loadcfg.c): the folder of queue_path, "." or "/".
 */
void data_dir(const struct config *cfg, char *dir, size_t len);

/*
 * The TLS certificate and key of the server's listeners: the configured
 * ones (tls_key defaulting to tls_cert), or the self-signed pair in
 * data_dir, which `sluice serve` generates at first start.  `cert` and
 * `key` have `len` octets each.
 */
void tls_paths(const struct config *cfg, char *cert, char *key, size_t len);

/*
 * The arguments every command shares: -c FILE into *path and, when
 * `arg` is not NULL, one operand into *arg (required).  Anything else
 * prints "sluice: unexpected argument" and `usage` to stderr; returns 0,
 * or 2 (the usage exit status).
 */
int loadcfg_args(int argc, char **argv, const char *usage, const char **path,
    const char **arg);

#endif
