/*
 * serve.h - `sluice serve`: start the relay, run it until a signal, and
 * stop it (server/serve.c).
 */
#ifndef SLUICE_SERVE_H
#define SLUICE_SERVE_H

#include "auth.h"
#include "config.h"
#include "tls.h"

#include <stdbool.h>

/* sluice serve [-c FILE]: the process exit status. */
int serve_cmd(int argc, char **argv);

/*
 * The listeners' TLS credentials (tls_paths in loadcfg.h); with
 * `generate`, the self-signed pair is made at first start.  NULL + why.
 */
struct tls_creds *serve_load_tls(
    const struct config *cfg, bool generate, char *why);

/*
 * auth_users, each problem printed to stderr; NULL without error when
 * AUTH is not configured (*failed says which).
 */
struct auth_table *serve_load_auth(const struct config *cfg, bool *failed);

/* The DKIM keys of dkim_keys (an empty table without any); NULL + why
 * when one cannot be loaded.  A weak key is logged as a warning. */
struct dkim_keys;
struct dkim_keys *serve_load_dkim(const struct config *cfg, char *why);

#endif
