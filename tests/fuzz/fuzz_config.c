/*
 * fuzz_config.c - the configuration parser (common/config.c) fed a whole
 * file: the input is written to a memfd and loaded with config_load
 * through /proc/self/fd, as `sluice check-config -c FILE` would.
 *
 * Properties:
 *  - a file is refused (NULL) exactly when errors were counted, and every
 *    error is one line "PATH:LINE: message" or "PATH: message" of text
 *    and tabs (a value quoted in a message cannot break the line or
 *    send the terminal an escape sequence);
 *  - an accepted file holds no control octet (a NUL would silently cut a
 *    line short) and every value is within the range its key allows;
 *  - loading is deterministic: the same file gives the same messages.
 */
#include "config.h"
#include "fuzz.h"

#include <netinet/in.h>
#include <sys/mman.h>
#include <unistd.h>

#define IN(v, lo, hi) ((v) >= (lo) && (v) <= (hi))

static void
check_values(const struct config *c)
{
	int i;

	FUZZ_ASSERT(c->hostname != NULL && c->hostname[0] != '\0', "hostname");
	FUZZ_ASSERT(c->queue_path != NULL && c->queue_path[0] != '\0' &&
	                c->user != NULL && c->user[0] != '\0' &&
	                c->tls_priority != NULL && c->tls_priority[0] != '\0' &&
	                c->tls_cert != NULL && c->tls_key != NULL &&
	                c->auth_users != NULL && c->tls_ca_file != NULL &&
	                c->smarthost_user != NULL &&
	                c->smarthost_password_file != NULL,
	    "strings set");
	FUZZ_ASSERT(IN(c->max_connections, 1, 1000000) &&
	                IN(c->max_connection_rate, 0, 1000000) &&
	                IN(c->max_auth_failure_rate, 0, 1000000) &&
	                IN(c->client_rate_time_unit, 1, 86400) &&
	                IN(c->client_ipv4_prefix, 8, 32) &&
	                IN(c->client_ipv6_prefix, 16, 128) &&
	                IN(c->stress_threshold, 1, 100) &&
	                IN(c->stress_command_timeout, 1, 86400),
	    "connection limits within their ranges");
	FUZZ_ASSERT(IN(c->workers, 1, 10000) &&
	                IN(c->max_connections_per_ip, 0, 100000) &&
	                IN(c->max_message_size, 1024, 1LL << 40) &&
	                IN(c->max_recipients, 1, 100000) &&
	                IN(c->command_timeout, 1, 86400) &&
	                IN(c->data_timeout, 1, 86400) &&
	                c->min_data_rate >= 0 && IN(c->max_errors, 1, 10000) &&
	                IN(c->max_received_headers, 1, 1000) &&
	                IN(c->shutdown_grace, 0, 86400) &&
	                IN(c->finished_retention, 0, 3650 * 86400) &&
	                IN(c->auth_failure_delay, 0, 60) &&
	                IN(c->delivery_threads, 0, 1000) &&
	                IN(c->destination_concurrency, 1, 1000) &&
	                IN(c->queue_lifetime, 1, 365 * 86400) &&
	                IN(c->delay_warning_time, 0, 365 * 86400) &&
	                IN(c->delivery_port, 1, 65535) &&
	                IN(c->connect_timeout, 1, 3600) &&
	                IN(c->delivery_command_timeout, 1, 86400) &&
	                IN(c->delivery_data_timeout, 1, 86400) &&
	                IN(c->max_messages_per_connection, 1, 100000) &&
	                IN(c->max_mx_hosts, 1, 100) &&
	                IN(c->dns_timeout, 1, 600),
	    "numbers within their ranges");
	FUZZ_ASSERT(IN(c->inet_protocols, 0, 2) && IN(c->outbound_tls, 0, 3) &&
	                IN(c->smarthost_tls, 0, 2) && IN(c->log_format, 0, 1),
	    "choices within their lists");
	FUZZ_ASSERT(c->nlisten >= 1, "at least one listener");
	for (i = 0; i < c->nlisten; i++) {
		const struct listen_addr *l = &c->listen[i];

		FUZZ_ASSERT(strnlen(l->text, sizeof(l->text)) < sizeof(l->text),
		    "listen text NUL-terminated");
		FUZZ_ASSERT((l->ss.ss_family == AF_INET &&
		                l->sslen == sizeof(struct sockaddr_in)) ||
		                (l->ss.ss_family == AF_INET6 &&
		                    l->sslen == sizeof(struct sockaddr_in6)),
		    "listen address");
		FUZZ_ASSERT(
		    IN(l->kind, LISTEN_SMTP, LISTEN_SMTPS), "listen kind");
	}
	FUZZ_ASSERT(c->nretry_schedule >= 1, "a retry schedule");
	for (i = 0; i < c->nretry_schedule; i++)
		FUZZ_ASSERT(IN(c->retry_schedule[i], 1, 30 * 86400),
		    "retry intervals within range");
	for (i = 0; i < c->nrelay_domains; i++) {
		const char *d = c->relay_domains[i];

		FUZZ_ASSERT(d[0] != '\0', "relay domain not empty");
		for (; *d != '\0'; d++)
			FUZZ_ASSERT(!(*d >= 'A' && *d <= 'Z'),
			    "relay domains in lower case");
	}
	for (i = 0; i < c->nroutes; i++)
		FUZZ_ASSERT(c->routes[i].domain[0] != '\0' &&
		                c->routes[i].to.host[0] != '\0' &&
		                IN(c->routes[i].to.port, 0, 65535),
		    "routes");
	for (i = 0; i < c->ndns_servers; i++)
		FUZZ_ASSERT(c->dns_servers[i].host[0] != '\0' &&
		                IN(c->dns_servers[i].port, 0, 65535),
		    "dns servers");
	FUZZ_ASSERT(c->metrics_listen.host[0] == '\0' ||
	                IN(c->metrics_listen.port, 1, 65535),
	    "metrics_listen has a port");
}

/* Load `data` as a file; the messages in *errs (malloc'd). */
static struct config *
load(const uint8_t *data, size_t size, char *path, size_t pathlen, char **errs,
    size_t *errlen, int *nerrors)
{
	struct config *cfg;
	FILE *e;
	int fd = memfd_create("sluice-fuzz-config", MFD_CLOEXEC);
	size_t off = 0;
	ssize_t w;

	if (fd < 0)
		abort();
	while (off < size) {
		w = write(fd, data + off, size - off);
		if (w <= 0)
			abort();
		off += (size_t)w;
	}
	snprintf(path, pathlen, "/proc/self/fd/%d", fd);
	e = open_memstream(errs, errlen);
	if (e == NULL)
		abort();
	cfg = config_load(path, e, nerrors);
	fclose(e);
	close(fd);
	return cfg;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char path[64], *errs = NULL, *errs2 = NULL, *p;
	size_t errlen = 0, errlen2 = 0, i;
	struct config *cfg, *cfg2;
	int nerrors = -1, nerrors2 = -1, lines = 0;

	if (size > 16384)
		return 0;
	cfg = load(data, size, path, sizeof(path), &errs, &errlen, &nerrors);
	FUZZ_ASSERT((cfg == NULL) == (nerrors > 0), "refused iff errors");
	for (p = errs; p < errs + errlen; p = strchr(p, '\n') + 1) {
		FUZZ_ASSERT(
		    strchr(p, '\n') != NULL, "messages are whole lines");
		FUZZ_ASSERT(strncmp(p, path, strlen(path)) == 0 &&
		                p[strlen(path)] == ':',
		    "messages start with the path");
		lines++;
	}
	FUZZ_ASSERT(lines == nerrors, "one line per error");
	for (i = 0; i < errlen; i++)
		FUZZ_ASSERT(
		    errs[i] == '\n' || errs[i] == '\t' ||
		        ((unsigned char)errs[i] >= 0x20 && errs[i] != 0x7f),
		    "messages are printable");
	if (cfg != NULL) {
		for (i = 0; i < size; i++)
			FUZZ_ASSERT(
			    data[i] >= 0x20 || data[i] == '\t' ||
			        data[i] == '\n' ||
			        (data[i] == '\r' &&
			            (i + 1 == size || data[i + 1] == '\n')),
			    "an accepted file has no control octet");
		check_values(cfg);
	}

	cfg2 =
	    load(data, size, path, sizeof(path), &errs2, &errlen2, &nerrors2);
	FUZZ_ASSERT(nerrors2 == nerrors && (cfg2 == NULL) == (cfg == NULL),
	    "deterministic");
	/* The path (a descriptor number) may differ; compare the rest. */
	config_free(cfg);
	config_free(cfg2);
	free(errs);
	free(errs2);
	return 0;
}
