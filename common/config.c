/*
 * config.c - parse and validate the configuration file (see config.h).
 *
 * Keys are described by one table (`keys` below): a name, a type, the
 * field it sets and its default as text.  Defaults go through the same
 * parsers as the file, so config.example, the defaults and the checks
 * cannot drift apart.
 */
#include "config.h"
#include "log.h"
#include "util.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct key;

/*
 * A key's parser: set the field `k` names from its text `value`; 0, or -1
 * with `why` (and the field as it was, or as far as it got: a failed parse
 * is an error for the whole configuration).  One per kind of value, named
 * in the key table below.
 */
typedef int key_parser(
    struct config *cfg, const struct key *k, const char *value, char *why);

struct key {
	const char *name;
	key_parser *parse;
	size_t off;
	long long min, max;
	const char *def;            /* NULL: computed (hostname) */
	const char *const *choices; /* parse_choice: NULL-terminated */
};

static key_parser parse_hostname, parse_path, parse_optpath, parse_int,
    parse_bytes_key, parse_duration_key, parse_listen, parse_networks,
    parse_domains, parse_bool, parse_choice, parse_durations, parse_hostports,
    parse_hostport_key, parse_ipport, parse_routes, parse_dkim_keys,
    parse_rate_key, parse_dest_rates, parse_bare_newline, parse_log_level,
    parse_tls_policy;

static const char *const inet_choices[] = {"all", "ipv4", "ipv6", NULL};
static const char *const outbound_tls_choices[] = {
    "none", "may", "encrypt", "verify", "dane", "dane-only", NULL};
static const char *const smarthost_tls_choices[] = {
    "starttls", "smtps", "none", NULL};
static const char *const log_format_choices[] = {"text", "json", NULL};
static const char *const dkim_sign_by_choices[] = {"from", "sender", NULL};
static const char *const dnssec_choices[] = {"off", "trust-ad", NULL};
static const char *const off_on_choices[] = {"off", "on", NULL};

#define F(field) offsetof(struct config, field)

static const struct key keys[] = {
    {"hostname", parse_hostname, F(hostname), 0, 0, NULL, NULL},
    {"listen", parse_listen, 0, 0, 0, "127.0.0.1:2525", NULL},
    {"queue_path", parse_path, F(queue_path), 0, 0, "var/queue.db", NULL},
    {"data_dir", parse_optpath, F(data_dir), 0, 0, "", NULL},
    {"node_name", parse_optpath, F(node_name), 0, 0, "", NULL},
    {"allow_unsafe_database", parse_bool, F(allow_unsafe_database), 0, 0, "no",
        NULL},
    {"delivery_lease", parse_duration_key, F(delivery_lease), 3, 3600, "2m",
        NULL},
    {"workers", parse_int, F(workers), 1, 10000, "100", NULL},
    {"max_connections", parse_int, F(max_connections), 1, 1000000, "15000",
        NULL},
    {"max_connections_per_ip", parse_int, F(max_connections_per_ip), 0, 100000,
        "20", NULL},
    {"max_connection_rate", parse_int, F(max_connection_rate), 0, 1000000,
        "600", NULL},
    {"max_auth_failure_rate", parse_int, F(max_auth_failure_rate), 0, 1000000,
        "10", NULL},
    {"client_rate_time_unit", parse_duration_key, F(client_rate_time_unit), 1,
        86400, "1m", NULL},
    {"client_ipv4_prefix", parse_int, F(client_ipv4_prefix), 8, 32, "32", NULL},
    {"client_ipv6_prefix", parse_int, F(client_ipv6_prefix), 16, 128, "64",
        NULL},
    {"stress_threshold", parse_int, F(stress_threshold), 1, 100, "80", NULL},
    {"stress_command_timeout", parse_duration_key, F(stress_command_timeout), 1,
        86400, "10s", NULL},
    {"max_message_size", parse_bytes_key, F(max_message_size), 1024,
        (long long)1 << 40, "26214400", NULL},
    {"max_recipients", parse_int, F(max_recipients), 1, 100000, "1000", NULL},
    {"relay_networks", parse_networks, 0, 0, 0, "127.0.0.0/8, ::1/128", NULL},
    {"proxy_networks", parse_networks, 0, 0, 0, "", NULL},
    {"dnssec_trusted_servers", parse_networks, 0, 0, 0, "", NULL},
    {"relay_domains", parse_domains, 0, 0, 0, "", NULL},
    {"command_timeout", parse_duration_key, F(command_timeout), 1, 86400, "5m",
        NULL},
    {"data_timeout", parse_duration_key, F(data_timeout), 1, 86400, "3m", NULL},
    {"min_data_rate", parse_int, F(min_data_rate), 0, INT_MAX, "500", NULL},
    {"max_errors", parse_int, F(max_errors), 1, 10000, "10", NULL},
    {"max_received_headers", parse_int, F(max_received_headers), 1, 1000, "50",
        NULL},
    {"bare_newline", parse_bare_newline, 0, 0, 0, "reject", NULL},
    {"shutdown_grace", parse_duration_key, F(shutdown_grace), 0, 86400, "30s",
        NULL},
    {"log_level", parse_log_level, F(log_level), 0, 0, "info", NULL},
    {"log_format", parse_choice, F(log_format), 0, 0, "text",
        log_format_choices},
    {"metrics_listen", parse_ipport, F(metrics_listen), 0, 0, "", NULL},
    {"user", parse_path, F(user), 0, 0, "sluice", NULL},
    {"finished_retention", parse_duration_key, F(finished_retention), 0,
        3650 * 86400, "7d", NULL},
    {"tls_cert", parse_optpath, F(tls_cert), 0, 0, "", NULL},
    {"tls_key", parse_optpath, F(tls_key), 0, 0, "", NULL},
    {"tls_priority", parse_path, F(tls_priority), 0, 0, CONFIG_TLS_PRIORITY,
        NULL},
    {"auth_users", parse_optpath, F(auth_users), 0, 0, "", NULL},
    {"submission_trust_networks", parse_bool, F(submission_trust_networks), 0,
        0, "no", NULL},
    {"sender_login_match", parse_bool, F(sender_login_match), 0, 0, "no", NULL},
    {"auth_failure_delay", parse_duration_key, F(auth_failure_delay), 0, 60,
        "1s", NULL},
    {"delivery_threads", parse_int, F(delivery_threads), 0, 1000, "16", NULL},
    {"destination_concurrency", parse_int, F(destination_concurrency), 1, 1000,
        "20", NULL},
    {"destination_rate", parse_rate_key, F(destination_rate), 0, 0, "0", NULL},
    {"destination_rates", parse_dest_rates, 0, 0, 0, "", NULL},
    {"tls_policy", parse_tls_policy, 0, 0, 0, "", NULL},
    {"retry_schedule", parse_durations, 0, 0, 0, "1m, 5m, 15m, 30m, 1h, 2h, 4h",
        NULL},
    {"queue_lifetime", parse_duration_key, F(queue_lifetime), 1, 365 * 86400,
        "5d", NULL},
    {"delay_warning_time", parse_duration_key, F(delay_warning_time), 0,
        365 * 86400, "0", NULL},
    {"delivery_port", parse_int, F(delivery_port), 1, 65535, "25", NULL},
    {"connect_timeout", parse_duration_key, F(connect_timeout), 1, 3600, "30s",
        NULL},
    {"delivery_command_timeout", parse_duration_key,
        F(delivery_command_timeout), 1, 86400, "5m", NULL},
    {"delivery_data_timeout", parse_duration_key, F(delivery_data_timeout), 1,
        86400, "10m", NULL},
    {"max_messages_per_connection", parse_int, F(max_messages_per_connection),
        1, 100000, "100", NULL},
    {"max_mx_hosts", parse_int, F(max_mx_hosts), 1, 100, "5", NULL},
    {"dns_servers", parse_hostports, 0, 0, 0, "", NULL},
    {"dns_timeout", parse_duration_key, F(dns_timeout), 1, 600, "10s", NULL},
    {"dnssec", parse_choice, F(dnssec), 0, 0, "off", dnssec_choices},
    {"mta_sts", parse_choice, F(mta_sts), 0, 0, "on", off_on_choices},
    {"mta_sts_port", parse_int, F(mta_sts_port), 1, 65535, "443", NULL},
    {"mta_sts_refresh", parse_duration_key, F(mta_sts_refresh), 1, 86400, "10m",
        NULL},
    {"tlsrpt", parse_bool, F(tlsrpt), 0, 0, "no", NULL},
    {"tlsrpt_organization", parse_optpath, F(tlsrpt_organization), 0, 0, "",
        NULL},
    {"tlsrpt_contact", parse_optpath, F(tlsrpt_contact), 0, 0, "", NULL},
    {"tlsrpt_send_after", parse_duration_key, F(tlsrpt_send_after), 0,
        23 * 3600, "10m", NULL},
    {"inet_protocols", parse_choice, F(inet_protocols), 0, 0, "all",
        inet_choices},
    {"outbound_tls", parse_choice, F(outbound_tls), 0, 0, "may",
        outbound_tls_choices},
    {"tls_ca_file", parse_optpath, F(tls_ca_file), 0, 0, "", NULL},
    {"smarthost", parse_hostport_key, F(smarthost), 0, 0, "", NULL},
    {"smarthost_tls", parse_choice, F(smarthost_tls), 0, 0, "starttls",
        smarthost_tls_choices},
    {"smarthost_user", parse_optpath, F(smarthost_user), 0, 0, "", NULL},
    {"smarthost_password_file", parse_optpath, F(smarthost_password_file), 0, 0,
        "", NULL},
    {"smarthost_auth_without_tls", parse_bool, F(smarthost_auth_without_tls), 0,
        0, "no", NULL},
    {"routes", parse_routes, 0, 0, 0, "", NULL},
    {"sender_relays", parse_optpath, F(sender_relays), 0, 0, "", NULL},
    {"dkim_keys", parse_dkim_keys, 0, 0, 0, "", NULL},
    {"dkim_sign_by", parse_choice, F(dkim_sign_by), 0, 0, "from",
        dkim_sign_by_choices},
};

#define NKEYS (sizeof(keys) / sizeof(keys[0]))

long long
config_parse_duration(const char *s)
{
	char *end;
	long long v, mult = 1;

	if (*s < '0' || *s > '9')
		return -1;
	errno = 0;
	v = strtoll(s, &end, 10);
	if (errno != 0 || v > 100LL * 365 * 86400)
		return -1;
	if (*end == 's')
		mult = 1;
	else if (*end == 'm')
		mult = 60;
	else if (*end == 'h')
		mult = 3600;
	else if (*end == 'd')
		mult = 86400;
	else if (*end != '\0')
		return -1;
	if (*end != '\0' && end[1] != '\0')
		return -1;
	return v * mult;
}

static long long
parse_bytes(const char *s)
{
	char *end;
	long long v, mult = 1;

	if (*s < '0' || *s > '9')
		return -1;
	errno = 0;
	v = strtoll(s, &end, 10);
	if (errno != 0)
		return -1;
	switch (*end) {
	case '\0':
		break;
	case 'k':
	case 'K':
		mult = 1024;
		break;
	case 'm':
	case 'M':
		mult = 1024 * 1024;
		break;
	case 'g':
	case 'G':
		mult = 1024 * 1024 * 1024;
		break;
	default:
		return -1;
	}
	if (*end != '\0' && end[1] != '\0')
		return -1;
	if (v > LLONG_MAX / mult)
		return -1;
	return v * mult;
}

int
config_parse_listen(const char *s, struct listen_addr *out, char *why)
{
	char host[64], kindbuf[80] = "";
	const char *p, *colon, *slash;
	char *end;
	long port;
	size_t hlen;

	memset(out, 0, sizeof(*out));
	if (strlen(s) >= sizeof(out->text)) {
		why_set(why, "listen address too long: \"%s\"", s);
		return -1;
	}
	memcpy(out->text, s, strlen(s) + 1);
	slash = strchr(s, '/');
	/* "/proxy" last: after the kind, or alone (smtp). */
	if (slash != NULL && strlen(s) >= 6 &&
	    strcmp(s + strlen(s) - 6, "/proxy") == 0) {
		out->proxy = true;
		kindbuf[0] = '\0';
		snprintf(kindbuf, sizeof(kindbuf), "%.*s",
		    (int)(strlen(slash) - 6), slash);
	} else if (slash != NULL) {
		snprintf(kindbuf, sizeof(kindbuf), "%s", slash);
	}
	if (slash == NULL || kindbuf[0] == '\0' ||
	    strcmp(kindbuf, "/smtp") == 0)
		out->kind = LISTEN_SMTP;
	else if (strcmp(kindbuf, "/submission") == 0)
		out->kind = LISTEN_SUBMISSION;
	else if (strcmp(kindbuf, "/smtps") == 0)
		out->kind = LISTEN_SMTPS;
	else {
		why_set(why,
		    "bad listener kind in \"%s\" (smtp, submission or smtps, "
		    "then /proxy if a PROXY header comes first)",
		    s);
		return -1;
	}
	if (s[0] == '[') {
		p = strchr(s, ']');
		if (p == NULL || p[1] != ':') {
			why_set(why,
			    "bad listen address \"%s\" "
			    "(IPv6 is written [::1]:2525)",
			    s);
			return -1;
		}
		hlen = (size_t)(p - s - 1);
		colon = p + 1;
		if (hlen >= sizeof(host))
			hlen = sizeof(host) - 1;
		memcpy(host, s + 1, hlen);
	} else {
		colon = strrchr(s, ':');
		if (colon == NULL || (slash != NULL && colon > slash)) {
			why_set(why,
			    "bad listen address \"%s\" "
			    "(expected ADDRESS:PORT)",
			    s);
			return -1;
		}
		hlen = (size_t)(colon - s);
		if (hlen >= sizeof(host))
			hlen = sizeof(host) - 1;
		memcpy(host, s, hlen);
	}
	host[hlen] = '\0';
	port = strtol(colon + 1, &end, 10);
	if (colon[1] == '\0' || (*end != '\0' && *end != '/') || port < 1 ||
	    port > 65535) {
		why_set(why, "bad port in listen address \"%s\"", s);
		return -1;
	}
	if (s[0] == '[') {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&out->ss;

		if (inet_pton(AF_INET6, host, &sin6->sin6_addr) != 1) {
			why_set(why, "bad IPv6 address in \"%s\"", s);
			return -1;
		}
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons((uint16_t)port);
		out->sslen = sizeof(*sin6);
	} else {
		struct sockaddr_in *sin = (struct sockaddr_in *)&out->ss;

		if (strcmp(host, "*") == 0 || host[0] == '\0')
			sin->sin_addr.s_addr = htonl(INADDR_ANY);
		else if (inet_pton(AF_INET, host, &sin->sin_addr) != 1) {
			why_set(why,
			    "bad IPv4 address in \"%s\" "
			    "(names are not resolved)",
			    s);
			return -1;
		}
		sin->sin_family = AF_INET;
		sin->sin_port = htons((uint16_t)port);
		out->sslen = sizeof(*sin);
	}
	return 0;
}

/* Is `s` a plausible host or domain name (LDH labels, dots)? */
static bool
name_valid(const char *s, bool allow_wildcard)
{
	size_t label = 0, len = strlen(s);
	const char *p = s;

	if (len == 0 || len > 253)
		return false;
	if (allow_wildcard && strncmp(s, "*.", 2) == 0)
		p += 2;
	if (*p == '\0' || *p == '.')
		return false;
	for (; *p != '\0'; p++) {
		if (*p == '.') {
			if (label == 0 || p[-1] == '-')
				return false;
			label = 0;
			continue;
		}
		if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
		        (*p >= '0' && *p <= '9') || *p == '-' || *p == '_'))
			return false;
		if (label == 0 && *p == '-')
			return false;
		if (++label > 63)
			return false;
	}
	return label > 0;
}

int
config_parse_hostport(const char *s, struct hostport *out, char *why)
{
	const char *colon, *hend;
	char *end;
	long port = 0;
	size_t hlen;

	memset(out, 0, sizeof(*out));
	if (s[0] == '[') {
		hend = strchr(s, ']');
		if (hend == NULL) {
			why_set(why, "missing ']' in \"%s\"", s);
			return -1;
		}
		hlen = (size_t)(hend - s - 1);
		s++;
		colon = hend[1] == ':' ? hend + 1 : NULL;
		if (hend[1] != '\0' && colon == NULL) {
			why_set(why, "bad host:port \"%s\"", s - 1);
			return -1;
		}
	} else {
		colon = strrchr(s, ':');
		if (colon != NULL && strchr(s, ':') != colon) {
			why_set(why,
			    "write IPv6 addresses as [addr]:port, "
			    "not \"%s\"",
			    s);
			return -1;
		}
		hlen = colon ? (size_t)(colon - s) : strlen(s);
	}
	if (hlen == 0 || hlen >= sizeof(out->host)) {
		why_set(why, "bad host in \"%s\"", s);
		return -1;
	}
	memcpy(out->host, s, hlen);
	if (colon != NULL) {
		port = strtol(colon + 1, &end, 10);
		if (colon[1] == '\0' || *end != '\0' || port < 1 ||
		    port > 65535) {
			why_set(why, "bad port in \"%s\"", s);
			return -1;
		}
	}
	out->port = (int)port;
	return 0;
}

bool
config_domain_listed(char *const *list, int n, const char *domain)
{
	size_t dlen = strlen(domain);
	int i;

	for (i = 0; i < n; i++) {
		const char *e = list[i];

		if (strncmp(e, "*.", 2) == 0) {
			size_t elen = strlen(e + 1); /* ".x" */

			if (dlen > elen &&
			    ascii_casecmp(domain + dlen - elen, e + 1) == 0)
				return true;
		} else if (ascii_casecmp(domain, e) == 0) {
			return true;
		}
	}
	return false;
}

/* Split a list value on commas and white space; returns the item count. */
static int
split_list(char *value, char ***items)
{
	char *save = NULL, *tok;
	int n = 0;

	*items = NULL;
	for (tok = strtok_r(value, ", \t", &save); tok != NULL;
	     tok = strtok_r(NULL, ", \t", &save)) {
		*items = xrealloc(*items, sizeof(char *) * (size_t)(n + 1));
		(*items)[n++] = tok;
	}
	return n;
}

/* The field a key sets, as a T. */
#define FIELD(cfg, k, T) ((T *)((char *)(cfg) + (k)->off))

static int
parse_hostname(
    struct config *cfg, const struct key *k, const char *value, char *why)
{
	(void)k;
	if (!name_valid(value, false)) {
		why_set(why, "bad host name \"%s\"", value);
		return -1;
	}
	free(cfg->hostname);
	cfg->hostname = xstrdup(value);
	return 0;
}

/* A path or any text, not empty. */
static int
parse_path(
    struct config *cfg, const struct key *k, const char *value, char *why)
{
	if (*value == '\0') {
		why_set(why, "%s must not be empty", k->name);
		return -1;
	}
	return parse_optpath(cfg, k, value, why);
}

/* A path, or empty. */
static int
parse_optpath(
    struct config *cfg, const struct key *k, const char *value, char *why)
{
	(void)why;
	free(*FIELD(cfg, k, char *));
	*FIELD(cfg, k, char *) = xstrdup(value);
	return 0;
}

/*
 * A number already parsed from `value` (-1: it was not one; `hint` says
 * what one looks like), checked against the key's range.
 */
static int
check_number(const struct key *k, const char *value, long long v,
    const char *hint, char *why)
{
	if (v < 0) {
		why_set(why, "bad value \"%s\" for %s%s", value, k->name, hint);
		return -1;
	}
	if (v < k->min || v > k->max) {
		why_set(why, "%s = %s is out of range (%lld..%lld)", k->name,
		    value, k->min, k->max);
		return -1;
	}
	return 0;
}

static int
parse_int(struct config *cfg, const struct key *k, const char *value, char *why)
{
	char *end;
	long long v;

	errno = 0;
	v = strtoll(value, &end, 10);
	if (*value == '\0' || *end != '\0' || errno != 0)
		v = -1;
	if (check_number(k, value, v, "", why) != 0)
		return -1;
	*FIELD(cfg, k, int) = (int)v;
	return 0;
}

static int
parse_bytes_key(
    struct config *cfg, const struct key *k, const char *value, char *why)
{
	long long v = parse_bytes(value);

	if (check_number(k, value, v, " (bytes, or with k, m, g)", why) != 0)
		return -1;
	*FIELD(cfg, k, long long) = v;
	return 0;
}

static int
parse_duration_key(
    struct config *cfg, const struct key *k, const char *value, char *why)
{
	long long v = config_parse_duration(value);

	if (check_number(
	        k, value, v, " (a duration like 30s, 5m, 2h, 1d)", why) != 0)
		return -1;
	*FIELD(cfg, k, int) = (int)v;
	return 0;
}

static int
parse_bool(
    struct config *cfg, const struct key *k, const char *value, char *why)
{
	if (strcmp(value, "yes") == 0) {
		*FIELD(cfg, k, bool) = true;
	} else if (strcmp(value, "no") == 0) {
		*FIELD(cfg, k, bool) = false;
	} else {
		why_set(
		    why, "%s must be yes or no, not \"%s\"", k->name, value);
		return -1;
	}
	return 0;
}

/*
 * One of the words of `names` (NULL-terminated): its index in *out, or -1
 * with `why` saying "NAME must be one of A, B, not "VALUE"".
 */
static int
choose(const char *const *names, const char *value, const char *name, int *out,
    char *why)
{
	char list[128] = "";
	int i;

	for (i = 0; names[i] != NULL; i++)
		if (strcmp(names[i], value) == 0) {
			*out = i;
			return 0;
		}
	for (i = 0; names[i] != NULL; i++)
		snprintf(list + strlen(list), sizeof(list) - strlen(list),
		    "%s%s", i ? ", " : "", names[i]);
	why_set(why, "%s must be one of %s, not \"%s\"", name, list, value);
	return -1;
}

static int
parse_choice(
    struct config *cfg, const struct key *k, const char *value, char *why)
{
	return choose(k->choices, value, k->name, FIELD(cfg, k, int), why);
}

static int
parse_bare_newline(
    struct config *cfg, const struct key *k, const char *value, char *why)
{
	(void)k;
	if (strcmp(value, "reject") == 0) {
		cfg->bare_newline_normalize = false;
	} else if (strcmp(value, "normalize") == 0) {
		cfg->bare_newline_normalize = true;
	} else {
		why_set(why,
		    "bare_newline must be reject or normalize, not \"%s\"",
		    value);
		return -1;
	}
	return 0;
}

static int
parse_log_level(
    struct config *cfg, const struct key *k, const char *value, char *why)
{
	static const struct {
		const char *name;
		int level;
	} levels[] = {{"error", LOG_ERR}, {"warning", LOG_WARN},
	    {"info", LOG_INFO}, {"debug", LOG_DEBUG}};
	size_t i;

	(void)k;
	for (i = 0; i < sizeof(levels) / sizeof(levels[0]); i++)
		if (strcmp(value, levels[i].name) == 0) {
			cfg->log_level = levels[i].level;
			return 0;
		}
	why_set(why,
	    "log_level must be error, warning, info or debug, not \"%s\"",
	    value);
	return -1;
}

/* True when `host` is an IPv4 or IPv6 address. */
static bool
is_ip(const char *host)
{
	unsigned char a[16];

	return inet_pton(AF_INET, host, a) == 1 ||
	       inet_pton(AF_INET6, host, a) == 1;
}

/* host:port, or empty for none (smarthost). */
static int
parse_hostport_key(
    struct config *cfg, const struct key *k, const char *value, char *why)
{
	struct hostport *hp = FIELD(cfg, k, struct hostport);

	if (*value == '\0') {
		memset(hp, 0, sizeof(*hp));
		return 0;
	}
	return config_parse_hostport(value, hp, why);
}

/* An IP address and a port, or empty (metrics_listen). */
static int
parse_ipport(
    struct config *cfg, const struct key *k, const char *value, char *why)
{
	const struct hostport *hp = FIELD(cfg, k, struct hostport);

	if (parse_hostport_key(cfg, k, value, why) != 0)
		return -1;
	if (*value == '\0')
		return 0;
	if (!is_ip(hp->host)) {
		why_set(why, "%s needs an IP address, not \"%s\"", k->name,
		    hp->host);
		return -1;
	}
	if (hp->port == 0) {
		why_set(why, "%s needs a port", k->name);
		return -1;
	}
	return 0;
}

/* ---- lists ---- */

/*
 * A list value: `start` frees the list the key had and makes room for
 * `n` items (an error when the key needs one and n is 0); `item` parses
 * one, appending it.
 */
struct list_parser {
	int (*start)(struct config *cfg, const struct key *k, int n, char *why);
	int (*item)(
	    struct config *cfg, const struct key *k, char *item, char *why);
};

static int
parse_list(struct config *cfg, const struct key *k, const char *value,
    const struct list_parser *lp, char *why)
{
	char *copy = xstrdup(value), **items;
	int n = split_list(copy, &items), i, rc;

	rc = lp->start(cfg, k, n, why);
	for (i = 0; rc == 0 && i < n; i++)
		rc = lp->item(cfg, k, items[i], why);
	free(items);
	free(copy);
	return rc;
}

static int
listen_start(struct config *cfg, const struct key *k, int n, char *why)
{
	(void)k;
	if (n == 0) {
		why_set(why, "listen needs at least one address");
		return -1;
	}
	free(cfg->listen);
	cfg->listen = xcalloc((size_t)n, sizeof(*cfg->listen));
	cfg->nlisten = 0;
	return 0;
}

static int
listen_item(struct config *cfg, const struct key *k, char *item, char *why)
{
	(void)k;
	if (config_parse_listen(item, &cfg->listen[cfg->nlisten], why) != 0)
		return -1;
	cfg->nlisten++;
	return 0;
}

static int
parse_listen(
    struct config *cfg, const struct key *k, const char *value, char *why)
{
	static const struct list_parser lp = {listen_start, listen_item};

	return parse_list(cfg, k, value, &lp, why);
}

/* The list a networks key fills: relay_networks, proxy_networks or
 * dnssec_trusted_servers. */
static struct cidr **
networks_of(struct config *cfg, const struct key *k, int **n)
{
	if (strcmp(k->name, "proxy_networks") == 0) {
		*n = &cfg->nproxy_networks;
		return &cfg->proxy_networks;
	}
	if (strcmp(k->name, "dnssec_trusted_servers") == 0) {
		*n = &cfg->ndnssec_trusted;
		return &cfg->dnssec_trusted;
	}
	*n = &cfg->nrelay_networks;
	return &cfg->relay_networks;
}

static int
networks_start(struct config *cfg, const struct key *k, int n, char *why)
{
	int *count;
	struct cidr **list = networks_of(cfg, k, &count);

	(void)why;
	free(*list);
	*list = xcalloc((size_t)(n > 0 ? n : 1), sizeof(struct cidr));
	*count = 0;
	return 0;
}

static int
networks_item(struct config *cfg, const struct key *k, char *item, char *why)
{
	int *count;
	struct cidr **list = networks_of(cfg, k, &count);

	if (cidr_parse(item, &(*list)[*count], why) != 0)
		return -1;
	(*count)++;
	return 0;
}

static int
parse_networks(
    struct config *cfg, const struct key *k, const char *value, char *why)
{
	static const struct list_parser lp = {networks_start, networks_item};

	return parse_list(cfg, k, value, &lp, why);
}

static int
domains_start(struct config *cfg, const struct key *k, int n, char *why)
{
	int i;

	(void)k;
	(void)why;
	for (i = 0; i < cfg->nrelay_domains; i++)
		free(cfg->relay_domains[i]);
	free(cfg->relay_domains);
	cfg->relay_domains = xcalloc((size_t)n, sizeof(char *));
	cfg->nrelay_domains = 0;
	return 0;
}

static int
domains_item(struct config *cfg, const struct key *k, char *item, char *why)
{
	char *d;

	if (!name_valid(item, true)) {
		why_set(why, "bad domain \"%s\" in %s", item, k->name);
		return -1;
	}
	d = xstrdup(item);
	for (char *c = d; *c != '\0'; c++)
		*c = ascii_lower(*c);
	cfg->relay_domains[cfg->nrelay_domains++] = d;
	return 0;
}

static int
parse_domains(
    struct config *cfg, const struct key *k, const char *value, char *why)
{
	static const struct list_parser lp = {domains_start, domains_item};

	return parse_list(cfg, k, value, &lp, why);
}

static int
durations_start(struct config *cfg, const struct key *k, int n, char *why)
{
	if (n == 0) {
		why_set(why, "%s needs at least one duration", k->name);
		return -1;
	}
	free(cfg->retry_schedule);
	cfg->retry_schedule = xcalloc((size_t)n, sizeof(int));
	cfg->nretry_schedule = 0;
	return 0;
}

static int
durations_item(struct config *cfg, const struct key *k, char *item, char *why)
{
	long long v = config_parse_duration(item);

	if (v < 1 || v > 30LL * 86400) {
		why_set(why, "bad duration \"%s\" in %s", item, k->name);
		return -1;
	}
	cfg->retry_schedule[cfg->nretry_schedule++] = (int)v;
	return 0;
}

static int
parse_durations(
    struct config *cfg, const struct key *k, const char *value, char *why)
{
	static const struct list_parser lp = {durations_start, durations_item};

	return parse_list(cfg, k, value, &lp, why);
}

static int
hostports_start(struct config *cfg, const struct key *k, int n, char *why)
{
	(void)k;
	(void)why;
	free(cfg->dns_servers);
	cfg->dns_servers = xcalloc((size_t)n, sizeof(struct hostport));
	cfg->ndns_servers = 0;
	return 0;
}

static int
hostports_item(struct config *cfg, const struct key *k, char *item, char *why)
{
	struct hostport *hp = &cfg->dns_servers[cfg->ndns_servers];

	(void)k;
	if (config_parse_hostport(item, hp, why) != 0)
		return -1;
	if (!is_ip(hp->host)) {
		why_set(why, "dns_servers takes IP addresses, not \"%s\"",
		    hp->host);
		return -1;
	}
	cfg->ndns_servers++;
	return 0;
}

static int
parse_hostports(
    struct config *cfg, const struct key *k, const char *value, char *why)
{
	static const struct list_parser lp = {hostports_start, hostports_item};

	return parse_list(cfg, k, value, &lp, why);
}

static int
routes_start(struct config *cfg, const struct key *k, int n, char *why)
{
	(void)k;
	(void)why;
	free(cfg->routes);
	cfg->routes = xcalloc((size_t)n, sizeof(struct route));
	cfg->nroutes = 0;
	return 0;
}

/* domain:host:port */
static int
routes_item(struct config *cfg, const struct key *k, char *item, char *why)
{
	struct route *r = &cfg->routes[cfg->nroutes];
	char *c = strchr(item, ':');

	(void)k;
	if (c == NULL || c == item) {
		why_set(
		    why, "bad route \"%s\" (expected domain:host:port)", item);
		return -1;
	}
	*c = '\0';
	if (!name_valid(item, true) || strlen(item) >= sizeof(r->domain)) {
		why_set(why, "bad domain \"%s\" in routes", item);
		return -1;
	}
	snprintf(r->domain, sizeof(r->domain), "%s", item);
	if (config_parse_hostport(c + 1, &r->to, why) != 0)
		return -1;
	cfg->nroutes++;
	return 0;
}

static int
parse_routes(
    struct config *cfg, const struct key *k, const char *value, char *why)
{
	static const struct list_parser lp = {routes_start, routes_item};

	return parse_list(cfg, k, value, &lp, why);
}

/* "N/PERIOD" (30/1m, 2/1s), or "0": none. */
static int
rate_parse(const char *s, struct rate *r, char *why)
{
	char *end;
	long n;
	long long secs;

	r->n = 0;
	r->period_ms = 0;
	if (strcmp(s, "0") == 0)
		return 0;
	errno = 0;
	n = strtol(s, &end, 10);
	if (errno != 0 || end == s || *end != '/' || n < 1 || n > 1000000) {
		why_set(
		    why, "bad rate \"%s\" (expected N/PERIOD, as 30/1m)", s);
		return -1;
	}
	secs = config_parse_duration(end + 1);
	if (secs < 1 || secs > 86400) {
		why_set(
		    why, "bad period in rate \"%s\" (1s to 1d, as 30/1m)", s);
		return -1;
	}
	r->n = (int)n;
	r->period_ms = secs * 1000;
	return 0;
}

static int
parse_rate_key(
    struct config *cfg, const struct key *k, const char *value, char *why)
{
	return rate_parse(value, FIELD(cfg, k, struct rate), why);
}

static int
dest_rates_start(struct config *cfg, const struct key *k, int n, char *why)
{
	(void)k;
	(void)why;
	free(cfg->destination_rates);
	cfg->destination_rates =
	    xcalloc((size_t)(n > 0 ? n : 1), sizeof(struct dest_rate));
	cfg->ndestination_rates = 0;
	return 0;
}

/*
 * The destination before the last colon of `item`: a domain, ".domain"
 * (its subdomains, when `dot`) or "[host]", lower case into key[len];
 * *value is what follows the colon.  0, or -1 when there is no colon
 * (*value NULL) or the destination is malformed.
 */
static int
dest_key(char *item, bool dot, char *key, size_t len, char **value)
{
	char *c = strrchr(item, ':'), *p;
	bool host = item[0] == '[';
	size_t n;
	int rc = -1;

	*value = NULL;
	if (c == NULL || c == item)
		return -1;
	*c = '\0';
	*value = c + 1;
	n = strlen(item);
	if (host && (n < 3 || item[n - 1] != ']'))
		return -1;
	if (host)
		item[n - 1] = '\0';
	p = host || (dot && item[0] == '.') ? item + 1 : item;
	if (name_valid(p, true) && strlen(p) <= 255) {
		snprintf(key, len, host ? "[%s]" : "%s", host ? p : item);
		for (p = key; *p != '\0'; p++)
			*p = ascii_lower(*p);
		rc = 0;
	}
	if (host)
		item[n - 1] = ']';
	return rc;
}

/* domain:N/PERIOD or [host]:N/PERIOD */
static int
dest_rates_item(struct config *cfg, const struct key *k, char *item, char *why)
{
	struct dest_rate *d = &cfg->destination_rates[cfg->ndestination_rates];
	char *v;

	(void)k;
	if (dest_key(item, false, d->key, sizeof(d->key), &v) != 0) {
		if (v == NULL)
			why_set(why,
			    "bad destination rate \"%s\" (expected "
			    "DOMAIN:N/PERIOD or [HOST]:N/PERIOD)",
			    item);
		else
			why_set(why,
			    "bad destination \"%s\" in destination_rates",
			    item);
		return -1;
	}
	if (rate_parse(v, &d->rate, why) != 0)
		return -1;
	cfg->ndestination_rates++;
	return 0;
}

static int
parse_dest_rates(
    struct config *cfg, const struct key *k, const char *value, char *why)
{
	static const struct list_parser lp = {
	    dest_rates_start, dest_rates_item};

	return parse_list(cfg, k, value, &lp, why);
}

static int
tls_policy_start(struct config *cfg, const struct key *k, int n, char *why)
{
	(void)k;
	(void)why;
	free(cfg->tls_policies);
	cfg->tls_policies =
	    xcalloc((size_t)(n > 0 ? n : 1), sizeof(struct tls_policy));
	cfg->ntls_policies = 0;
	return 0;
}

/* domain:LEVEL, .domain:LEVEL or [host]:LEVEL */
static int
tls_policy_item(struct config *cfg, const struct key *k, char *item, char *why)
{
	struct tls_policy *t = &cfg->tls_policies[cfg->ntls_policies];
	char *v;
	int i;

	(void)k;
	if (dest_key(item, true, t->key, sizeof(t->key), &v) != 0) {
		if (v == NULL)
			why_set(why,
			    "bad TLS policy \"%s\" (expected DOMAIN:LEVEL, "
			    ".DOMAIN:LEVEL or [HOST]:LEVEL)",
			    item);
		else
			why_set(
			    why, "bad destination \"%s\" in tls_policy", item);
		return -1;
	}
	for (i = 0; outbound_tls_choices[i] != NULL; i++)
		if (ascii_casecmp(v, outbound_tls_choices[i]) == 0)
			break;
	if (outbound_tls_choices[i] == NULL) {
		why_set(why,
		    "bad level \"%s\" in tls_policy (none, may, encrypt, "
		    "verify, dane or dane-only)",
		    v);
		return -1;
	}
	t->level = i;
	cfg->ntls_policies++;
	return 0;
}

static int
parse_tls_policy(
    struct config *cfg, const struct key *k, const char *value, char *why)
{
	static const struct list_parser lp = {
	    tls_policy_start, tls_policy_item};

	return parse_list(cfg, k, value, &lp, why);
}

static void
dkim_keys_clear(struct config *cfg)
{
	int i;

	for (i = 0; i < cfg->ndkim_keys; i++) {
		free(cfg->dkim_keys[i].domain);
		free(cfg->dkim_keys[i].selector);
		free(cfg->dkim_keys[i].path);
	}
	free(cfg->dkim_keys);
	cfg->dkim_keys = NULL;
	cfg->ndkim_keys = 0;
}

static int
dkim_keys_start(struct config *cfg, const struct key *k, int n, char *why)
{
	(void)k;
	(void)why;
	dkim_keys_clear(cfg);
	cfg->dkim_keys =
	    xcalloc((size_t)(n > 0 ? n : 1), sizeof(struct dkim_key_conf));
	return 0;
}

/* DOMAIN:SELECTOR:KEYFILE (the file's path may hold more colons). */
static int
dkim_keys_item(struct config *cfg, const struct key *k, char *item, char *why)
{
	struct dkim_key_conf *d = &cfg->dkim_keys[cfg->ndkim_keys];
	char *sel = strchr(item, ':'),
	     *path = sel ? strchr(sel + 1, ':') : NULL;
	char *p;

	(void)k;
	if (sel == NULL || path == NULL || sel == item || path == sel + 1 ||
	    path[1] == '\0') {
		why_set(why,
		    "bad DKIM key \"%s\" (expected DOMAIN:SELECTOR:KEYFILE)",
		    item);
		return -1;
	}
	*sel++ = '\0';
	*path++ = '\0';
	if (!name_valid(item, true)) {
		why_set(
		    why, "bad domain \"%s\" in dkim_keys (an A-label)", item);
		return -1;
	}
	for (p = sel; *p != '\0'; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
		        (*p >= '0' && *p <= '9') || *p == '-' || *p == '_'))
			break;
	if (*p != '\0' || p - sel > 63) {
		why_set(why, "bad selector \"%s\" in dkim_keys (one DNS label)",
		    sel);
		return -1;
	}
	d->domain = xstrdup(item);
	for (p = d->domain; *p != '\0'; p++)
		*p = ascii_lower(*p);
	d->selector = xstrdup(sel);
	d->path = xstrdup(path);
	cfg->ndkim_keys++;
	return 0;
}

static int
parse_dkim_keys(
    struct config *cfg, const struct key *k, const char *value, char *why)
{
	static const struct list_parser lp = {dkim_keys_start, dkim_keys_item};

	return parse_list(cfg, k, value, &lp, why);
}

int
config_check(const struct config *cfg, char *why)
{
	int i;

	if (cfg->outbound_tls >= OUTBOUND_TLS_DANE &&
	    cfg->dnssec == DNSSEC_OFF) {
		why_set(why,
		    "outbound_tls = %s needs dnssec = trust-ad (DANE uses "
		    "only DNSSEC-validated answers)",
		    outbound_tls_choices[cfg->outbound_tls]);
		return -1;
	}
	for (i = 0; i < cfg->ntls_policies; i++)
		if (cfg->tls_policies[i].level >= OUTBOUND_TLS_DANE &&
		    cfg->dnssec == DNSSEC_OFF) {
			why_set(why,
			    "tls_policy %s:%s needs dnssec = trust-ad (DANE "
			    "uses only DNSSEC-validated answers)",
			    cfg->tls_policies[i].key,
			    outbound_tls_choices[cfg->tls_policies[i].level]);
			return -1;
		}
	return 0;
}

struct config *
config_defaults(void)
{
	struct config *cfg = xcalloc(1, sizeof(*cfg));
	char why[WHY_MAX], host[256];
	size_t i;

	for (i = 0; i < NKEYS; i++) {
		if (keys[i].def != NULL &&
		    keys[i].parse(cfg, &keys[i], keys[i].def, why) != 0) {
			fprintf(stderr, "sluice: bug: default for %s: %s\n",
			    keys[i].name, why);
			abort();
		}
	}
	if (gethostname(host, sizeof(host)) != 0 || !name_valid(host, false))
		snprintf(host, sizeof(host), "localhost");
	host[sizeof(host) - 1] = '\0';
	cfg->hostname = xstrdup(host);
	return cfg;
}

static char *
trim(char *s)
{
	char *e;

	while (*s == ' ' || *s == '\t')
		s++;
	e = s + strlen(s);
	while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r' ||
	                    e[-1] == '\n'))
		*--e = '\0';
	return s;
}

/*
 * The first control octet of a line of `len` octets as read (its "\n" or
 * "\r\n" aside), or -1.  A NUL would cut the line short without a word,
 * and other controls have no place in a value or in an error message.
 */
static int
control_octet(const char *line, size_t len)
{
	size_t i;

	if (len > 0 && line[len - 1] == '\n')
		len--;
	if (len > 0 && line[len - 1] == '\r')
		len--;
	for (i = 0; i < len; i++) {
		unsigned char c = (unsigned char)line[i];

		if ((c < 0x20 && c != '\t') || c == 0x7f)
			return c;
	}
	return -1;
}

/* Remember the keys whose default matters (see config.h: user_set). */
static void
note_set(struct config *cfg, const struct key *k)
{
	if (k->off == offsetof(struct config, user))
		cfg->user_set = true;
}

struct config *
config_load(const char *path, FILE *errs, int *nerrors)
{
	struct config *cfg = config_defaults();
	int seen[NKEYS] = {0};
	char *line = NULL, why[WHY_MAX];
	size_t cap = 0, i;
	ssize_t len;
	int lineno = 0, errors = 0, bad;
	FILE *f;

	f = fopen(path, "r");
	if (f == NULL) {
		fprintf(errs, "%s: cannot open: %s\n", path, strerror(errno));
		errors++;
		goto out;
	}
	while ((len = getline(&line, &cap, f)) != -1) {
		char *key, *value, *eq, *hash;

		lineno++;
		if ((bad = control_octet(line, (size_t)len)) >= 0) {
			fprintf(errs,
			    "%s:%d: control character 0x%02x in the line "
			    "(only text, tabs and UTF-8 are allowed)\n",
			    path, lineno, bad);
			errors++;
			continue;
		}
		hash = strchr(line, '#');
		if (hash != NULL)
			*hash = '\0';
		key = trim(line);
		if (*key == '\0')
			continue;
		eq = strchr(key, '=');
		if (eq == NULL) {
			fprintf(errs, "%s:%d: expected \"key = value\"\n", path,
			    lineno);
			errors++;
			continue;
		}
		*eq = '\0';
		value = trim(eq + 1);
		key = trim(key);
		for (i = 0; i < NKEYS; i++)
			if (strcmp(keys[i].name, key) == 0)
				break;
		if (i == NKEYS) {
			fprintf(errs, "%s:%d: unknown key \"%s\"\n", path,
			    lineno, key);
			errors++;
			continue;
		}
		if (seen[i] != 0) {
			fprintf(errs, "%s:%d: %s is already set on line %d\n",
			    path, lineno, key, seen[i]);
			errors++;
			continue;
		}
		seen[i] = lineno;
		if (keys[i].parse(cfg, &keys[i], value, why) != 0) {
			fprintf(errs, "%s:%d: %s\n", path, lineno, why);
			errors++;
		} else {
			note_set(cfg, &keys[i]);
		}
	}
	if (ferror(f)) {
		fprintf(errs, "%s: read error: %s\n", path, strerror(errno));
		errors++;
	}
	fclose(f);
out:
	free(line);
	*nerrors = errors;
	if (errors > 0) {
		config_free(cfg);
		return NULL;
	}
	return cfg;
}

int
config_apply_env(struct config *cfg, FILE *errs)
{
	char name[80], why[WHY_MAX];
	int errors = 0;
	size_t i, j;

	for (i = 0; i < NKEYS; i++) {
		const char *value;

		snprintf(name, sizeof(name), "SLUICE_%s", keys[i].name);
		for (j = 7; name[j] != '\0'; j++)
			name[j] = (char)toupper((unsigned char)name[j]);
		value = getenv(name);
		if (value == NULL)
			continue;
		if (keys[i].parse == parse_hostname && *value == '\0')
			continue; /* empty: keep the computed default */
		if (keys[i].parse(cfg, &keys[i], value, why) != 0) {
			fprintf(errs, "environment %s: %s\n", name, why);
			errors++;
		} else {
			note_set(cfg, &keys[i]);
		}
	}
	return errors;
}

void
config_free(struct config *cfg)
{
	int i;

	if (cfg == NULL)
		return;
	free(cfg->hostname);
	free(cfg->listen);
	free(cfg->queue_path);
	free(cfg->data_dir);
	free(cfg->node_name);
	free(cfg->tls_cert);
	free(cfg->tls_key);
	free(cfg->tls_priority);
	free(cfg->auth_users);
	free(cfg->retry_schedule);
	free(cfg->dns_servers);
	free(cfg->tls_ca_file);
	free(cfg->smarthost_user);
	free(cfg->tlsrpt_organization);
	free(cfg->tlsrpt_contact);
	free(cfg->smarthost_password_file);
	free(cfg->routes);
	free(cfg->sender_relays);
	free(cfg->destination_rates);
	dkim_keys_clear(cfg);
	free(cfg->user);
	free(cfg->relay_networks);
	free(cfg->proxy_networks);
	free(cfg->dnssec_trusted);
	free(cfg->tls_policies);
	for (i = 0; i < cfg->nrelay_domains; i++)
		free(cfg->relay_domains[i]);
	free(cfg->relay_domains);
	free(cfg);
}
