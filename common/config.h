/*
 * config.h - the configuration file: flat "key = value" lines, '#'
 * comments, lists separated by commas or spaces.  Every key is documented
 * with its default in config.example.  A line holding a control character
 * other than a tab (a NUL included) is an error, never cut short.
 *
 * A `struct config` is immutable once loaded: threads share it read-only
 * (a reload, later, builds a new one and swaps it whole).
 */
#ifndef SLUICE_CONFIG_H
#define SLUICE_CONFIG_H

#include <stdbool.h>
#include <stdio.h>
#include <sys/socket.h>

#include "cidr.h"

/* TLS 1.2 and 1.3 only, forward secrecy (ECDHE), AEAD ciphers only. */
#define CONFIG_TLS_PRIORITY                                                    \
	"NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2:-CIPHER-ALL:"              \
	"+AES-256-GCM:+AES-128-GCM:+CHACHA20-POLY1305:-KX-ALL:"                \
	"+ECDHE-ECDSA:+ECDHE-RSA:-MAC-ALL:+AEAD:%SERVER_PRECEDENCE"

enum listen_kind {
	LISTEN_SMTP = 0,   /* port 25 style: relay by IP, STARTTLS */
	LISTEN_SUBMISSION, /* port 587: AUTH required (TLS issue) */
	LISTEN_SMTPS,      /* port 465: implicit TLS (TLS issue) */
};

struct listen_addr {
	struct sockaddr_storage ss;
	socklen_t sslen;
	enum listen_kind kind;
	bool proxy;    /* /proxy: a PROXY header comes first (proxy_networks) */
	char text[80]; /* as written, e.g. "[::1]:2525/smtp" */
};

/* "host:port", "[host]:port" or "1.2.3.4" (port 0: the default). */
struct hostport {
	char host[256];
	int port;
};

/* routes = domain:host:port, ... ("*.domain" for subdomains) */
struct route {
	char domain[256];
	struct hostport to;
};

enum { INET_ALL = 0, INET_IPV4, INET_IPV6 };
enum {
	OUTBOUND_TLS_NONE = 0,
	OUTBOUND_TLS_MAY,
	OUTBOUND_TLS_ENCRYPT,
	OUTBOUND_TLS_VERIFY,
	OUTBOUND_TLS_DANE,      /* may, plus DANE where TLSA records apply */
	OUTBOUND_TLS_DANE_ONLY, /* usable TLSA records required */
};
enum { DNSSEC_OFF = 0, DNSSEC_TRUST_AD };
enum { SMARTHOST_TLS_STARTTLS = 0, SMARTHOST_TLS_SMTPS, SMARTHOST_TLS_NONE };

/* Which domain's keys sign a message: its From field's, or MAIL FROM's. */
enum { DKIM_BY_FROM = 0, DKIM_BY_SENDER };

/* A rate: n messages per `period_ms` (n == 0: none). */
struct rate {
	int n;
	int64_t period_ms;
};

/* destination_rates = KEY:N/PERIOD: a recipient domain or "[host]". */
struct dest_rate {
	char key[258]; /* a domain (255 octets at most), or "[host]" */
	struct rate rate;
};

/* tls_policy = KEY:LEVEL: a recipient domain, ".domain" (its subdomains)
 * or "[host]" (a smarthost, route or sender relay host). */
struct tls_policy {
	char key[258];
	int level; /* OUTBOUND_TLS_* */
};

/* One configured DKIM key (tls/dkim.h loads it). */
struct dkim_key_conf {
	char *domain; /* lower case, an A-label */
	char *selector;
	char *path;
};

struct config {
	char *hostname;
	struct listen_addr *listen;
	int nlisten;
	char *queue_path;
	char *data_dir;  /* files sluice writes ("": loadcfg's data_dir) */
	char *node_name; /* a shared queue's name of this node ("": hostname) */
	bool allow_unsafe_database; /* a PostgreSQL without durable commits */
	int delivery_lease; /* seconds a node holds a recipient it delivers,
	                     * renewed while it works (PostgreSQL queue) */
	int workers;
	/* Admission (server/listener.c, server/anvil.c). */
	int max_connections;        /* open connections, all clients */
	int max_connections_per_ip; /* per client (prefix); 0: unlimited */
	int max_connection_rate;    /* per client per time unit; 0: off */
	int max_auth_failure_rate;  /* per client per time unit; 0: off */
	int client_rate_time_unit;  /* seconds */
	int client_ipv4_prefix;     /* a client is this /prefix */
	int client_ipv6_prefix;
	int stress_threshold;       /* percent of max_connections */
	int stress_command_timeout; /* seconds, untrusted, under stress */
	long long max_message_size;
	int max_recipients;
	struct cidr *relay_networks;
	int nrelay_networks;
	struct cidr *proxy_networks; /* balancers that may send PROXY */
	int nproxy_networks;
	struct cidr
	    *dnssec_trusted; /* dnssec_trusted_servers, beyond loopback */
	int ndnssec_trusted;
	char **relay_domains; /* lower case; "*.x" for subdomains */
	int nrelay_domains;
	int command_timeout; /* seconds */
	int data_timeout;    /* seconds */
	int min_data_rate;   /* bytes per second, 0: off */
	int max_errors;
	int max_received_headers;
	bool bare_newline_normalize;
	int shutdown_grace; /* seconds */
	char *tls_cert;     /* "": self-signed in the data folder */
	char *tls_key;
	char *tls_priority; /* GnuTLS priority string */
	char *auth_users;   /* "": no AUTH */
	bool submission_trust_networks;
	bool sender_login_match;
	int auth_failure_delay; /* seconds */
	/* Delivery (queue/deliver.c, dns/). */
	int delivery_threads;
	int destination_concurrency;
	struct rate destination_rate;        /* n == 0: no limit */
	struct dest_rate *destination_rates; /* per domain or [host] */
	int ndestination_rates;
	struct tls_policy
	    *tls_policies; /* tls_policy, overriding outbound_tls */
	int ntls_policies;
	int *retry_schedule; /* seconds; the last value repeats */
	int nretry_schedule;
	int queue_lifetime;     /* seconds */
	int delay_warning_time; /* seconds, 0: no delay notices */
	int delivery_port;
	int connect_timeout;          /* seconds */
	int delivery_command_timeout; /* seconds: greeting, MAIL, RCPT, DATA */
	int delivery_data_timeout;    /* seconds: the reply to the final dot */
	int max_messages_per_connection;
	int max_mx_hosts;
	struct hostport *dns_servers; /* none: /etc/resolv.conf */
	int ndns_servers;
	int dns_timeout;           /* seconds */
	int dnssec;                /* DNSSEC_OFF, DNSSEC_TRUST_AD */
	int mta_sts;               /* 0 off, 1 on */
	int mta_sts_port;          /* where policies are fetched (443) */
	int mta_sts_refresh;       /* seconds between looks at the cache */
	bool tlsrpt;               /* record TLS-RPT results */
	char *tlsrpt_organization; /* "" : hostname */
	char *tlsrpt_contact;      /* "" : postmaster@hostname */
	int tlsrpt_send_after;     /* seconds after midnight UTC of the send */
	int inet_protocols;        /* INET_ALL, INET_IPV4, INET_IPV6 */
	int outbound_tls;          /* OUTBOUND_TLS_* */
	char *tls_ca_file;         /* "": the system trust store */
	struct hostport smarthost; /* host[0] == '\0': none */
	int smarthost_tls;         /* SMARTHOST_TLS_* */
	char *smarthost_user;
	char *smarthost_password_file;
	bool smarthost_auth_without_tls;
	struct route *routes;
	int nroutes;
	char *sender_relays;             /* "": none (queue/relays.h) */
	struct dkim_key_conf *dkim_keys; /* dkim_keys: DOMAIN:SELECTOR:FILE */
	int ndkim_keys;
	int dkim_sign_by;               /* DKIM_BY_FROM, DKIM_BY_SENDER */
	int log_level;                  /* enum log_level */
	int log_format;                 /* LOG_FORMAT_* */
	struct hostport metrics_listen; /* host[0] == '\0': off */
	char *user;    /* started as root: serve as this user */
	bool user_set; /* `user` came from the file or the environment */
	int finished_retention; /* seconds finished messages are kept */
};

enum { LOG_FORMAT_TEXT = 0, LOG_FORMAT_JSON };

/*
 * The embedded defaults (what config.example documents).  Never fails.
 */
struct config *config_defaults(void);

/*
 * Load `path` over the defaults.  Every problem (unknown key, bad value,
 * duplicate key, unreadable file) is printed to `errs` as
 * "PATH:LINE: message".  Returns NULL when there was any problem, and sets
 * *nerrors to their count.
 */
struct config *config_load(const char *path, FILE *errs, int *nerrors);

/*
 * Apply SLUICE_<KEY> environment variables (SLUICE_RELAY_NETWORKS, ...)
 * over `cfg`: the environment wins over the file.  Problems are printed to
 * `errs` as "environment SLUICE_KEY: message"; returns their count.
 */
int config_apply_env(struct config *cfg, FILE *errs);

/* Rules between keys, once all are read: 0, or -1 with `why`. */
int config_check(const struct config *cfg, char *why);

void config_free(struct config *cfg);

/* Parse "host:port", "[host]:port" or "host" into `out`.  0 or -1 + why. */
int config_parse_hostport(const char *s, struct hostport *out, char *why);

/* Parse a duration ("30", "30s", "5m", "2h", "1d") into seconds; -1 bad. */
long long config_parse_duration(const char *s);

/* Parse "ADDRESS:PORT[/kind]" ("[::1]:2525/submission").  0 or -1 + why. */
int config_parse_listen(const char *s, struct listen_addr *out, char *why);

/*
 * True when `domain` (any case) is in `list`: an exact entry, or a "*.x"
 * entry and `domain` is a subdomain of x.
 */
bool config_domain_listed(char *const *list, int n, const char *domain);

#endif
