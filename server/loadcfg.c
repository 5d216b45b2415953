/*
 * loadcfg.c - finding and loading the configuration, for `sluice serve`
 * and the commands beside it, where those commands reach a listener, and
 * the paths derived from queue_path (see loadcfg.h).
 *
 * Threads: called by main() and the commands before any thread starts, and
 * on SIGHUP by the main thread; no shared state.
 */
#include "cidr.h"
#include "loadcfg.h"
#include "store.h"
#include "util.h"
#include "log.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* SLUICE_<KEY> variables over `cfg`; NULL (freeing it) on a bad one. */
static struct config *
with_env(struct config *cfg, FILE *errs)
{
	char why[WHY_MAX];
	int nerr;

	if (cfg == NULL)
		return NULL;
	nerr = config_apply_env(cfg, errs);
	if (nerr == 0 && config_check(cfg, why) == 0)
		return cfg;
	if (nerr == 0) {
		fprintf(errs, "sluice: %s\n", why);
		config_free(cfg);
		return NULL;
	}
	fprintf(errs, "sluice: %d problem%s in the environment\n", nerr,
	    nerr == 1 ? "" : "s");
	config_free(cfg);
	return NULL;
}

/*
 * Tell the queue's storage who this node is, from the first
 * configuration loaded (node_name and allow_unsafe_database change at the
 * next start, not on SIGHUP).
 */
static struct config *
configured(struct config *cfg)
{
	if (cfg != NULL && store_node_name()[0] == '\0')
		store_configure(
		    cfg->node_name[0] != '\0' ? cfg->node_name : cfg->hostname,
		    cfg->allow_unsafe_database);
	return cfg;
}

/* load_config, reporting problems to `errs`. */
static struct config *
load_config_to(const char *path, const char **source, FILE *errs)
{
	struct config *cfg;
	int nerr = 0;

	if (path == NULL)
		path = getenv("SLUICE_CONFIG");
	if (path == NULL || *path == '\0') {
		if (access(DEFAULT_CONFIG, F_OK) != 0) {
			*source = "built-in defaults";
			return configured(with_env(config_defaults(), errs));
		}
		path = DEFAULT_CONFIG;
	}
	*source = path;
	cfg = config_load(path, errs, &nerr);
	if (cfg == NULL)
		fprintf(errs, "sluice: %d problem%s in %s\n", nerr,
		    nerr == 1 ? "" : "s", path);
	return configured(with_env(cfg, errs));
}

struct config *
load_config(const char *path, const char **source)
{
	return load_config_to(path, source, stderr);
}

struct config *
load_config_logged(const char *path, const char **source)
{
	struct config *cfg;
	char *text = NULL, *line, *save = NULL;
	size_t len = 0;
	FILE *errs = open_memstream(&text, &len);

	if (errs == NULL)
		return load_config(path, source);
	cfg = load_config_to(path, source, errs);
	fclose(errs);
	for (line = strtok_r(text, "\n", &save); line != NULL;
	     line = strtok_r(NULL, "\n", &save))
		log_err("config", "%s", line);
	free(text);
	return cfg;
}

void
listener_target(const struct listen_addr *l, struct sockaddr_storage *ss,
    socklen_t *len, char *text, size_t tlen)
{
	char ip[64];

	*ss = l->ss;
	*len = l->sslen;
	if (ss->ss_family == AF_INET) {
		struct sockaddr_in *in = (struct sockaddr_in *)ss;

		if (in->sin_addr.s_addr == htonl(INADDR_ANY))
			in->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	} else if (ss->ss_family == AF_INET6) {
		struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;

		if (IN6_IS_ADDR_UNSPECIFIED(&in6->sin6_addr))
			in6->sin6_addr = in6addr_loopback;
	}
	sockaddr_ntop((const struct sockaddr *)ss, ip, sizeof(ip));
	snprintf(text, tlen, ss->ss_family == AF_INET6 ? "[%s]:%d" : "%s:%d",
	    ip, sockaddr_port((const struct sockaddr *)ss));
}

void
data_dir(const struct config *cfg, char *dir, size_t len)
{
	const char *slash = strrchr(cfg->queue_path, '/');

	if (cfg->data_dir[0] != '\0')
		snprintf(dir, len, "%s", cfg->data_dir);
	else if (store_path_is_database(cfg->queue_path))
		snprintf(dir, len, "var");
	else if (slash == NULL)
		snprintf(dir, len, ".");
	else if (slash == cfg->queue_path)
		snprintf(dir, len, "/");
	else
		snprintf(dir, len, "%.*s", (int)(slash - cfg->queue_path),
		    cfg->queue_path);
}

void
tls_paths(const struct config *cfg, char *cert, char *key, size_t len)
{
	char dir[4000]; /* leaves room for the file names below */

	if (cfg->tls_cert[0] != '\0') {
		snprintf(cert, len, "%s", cfg->tls_cert);
		snprintf(key, len, "%s",
		    cfg->tls_key[0] ? cfg->tls_key : cfg->tls_cert);
		return;
	}
	data_dir(cfg, dir, sizeof(dir));
	snprintf(cert, len, "%s/selfsigned-cert.pem", dir);
	snprintf(key, len, "%s/selfsigned-key.pem", dir);
}

int
loadcfg_args(int argc, char **argv, const char *usage, const char **path,
    const char **arg)
{
	int i;

	*path = NULL;
	if (arg != NULL)
		*arg = NULL;
	for (i = 1; i < argc; i++) {
		if (strcmp(argv[i], "-c") == 0 && i + 1 < argc) {
			*path = argv[++i];
		} else if (arg != NULL && *arg == NULL && argv[i][0] != '-') {
			*arg = argv[i];
		} else {
			fprintf(stderr, "sluice: unexpected argument \"%s\"\n",
			    argv[i]);
			fprintf(stderr, "usage: %s\n", usage);
			return 2;
		}
	}
	if (arg != NULL && *arg == NULL) {
		fprintf(stderr, "usage: %s\n", usage);
		return 2;
	}
	return 0;
}
