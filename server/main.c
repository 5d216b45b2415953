/*
 * main.c - the sluice binary: subcommands, start-up and shutdown.
 *
 * Threads: main() runs on the main thread, which after start-up only waits
 * for signals (sigwait) and drives shutdown.  All signals of interest are
 * blocked before any other thread starts, so no thread is ever interrupted
 * by a handler.
 *
 * Shutdown (SIGTERM or SIGINT):
 *   1. stop accepting (close the listeners);
 *   2. make stop_fd readable: sessions waiting for a command outside a
 *      transaction end with 421;
 *   3. sessions inside a transaction, and deliveries in progress, get
 *      shutdown_grace to finish; then kill_fd becomes readable and they
 *      end too: partial messages are dropped, cut deliveries deferred;
 *   4. the queue writer finishes what was submitted; exit 0.
 * A second signal exits at once (status 1).  SQLite's WAL makes that safe:
 * a transaction is either committed or it never happened.
 */
#include "auth.h"
#include "cmds.h"
#include "config.h"
#include "deliver.h"
#include "dns.h"
#include "holder.h"
#include "listener.h"
#include "log.h"
#include "pool.h"
#include "queue.h"
#include "server.h"
#include "tls.h"
#include "util.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_CONFIG "/etc/sluice/sluice.conf"
#define SLUICE_VERSION "0.1.0"

static void
usage(FILE *f)
{
	fprintf(f,
	    "usage: sluice COMMAND [-c FILE]\n"
	    "\n"
	    "commands:\n"
	    "  serve         run the relay in the foreground\n"
	    "  check-config  check the configuration and report every "
	    "problem\n"
	    "  resolve DOMAIN  show where mail for DOMAIN would go (MX "
	    "hosts and\n"
	    "                addresses, in the order they are tried)\n"
	    "  passwd USER   hash a password read on standard input and "
	    "print\n"
	    "                the line USER:HASH for the auth_users file\n"
	    "  queue ...     list, show and change queued mail (sluice queue "
	    "help)\n"
	    "  sendmail [-t] [-f SENDER] [-i] [RCPT...]\n"
	    "                submit a message read on standard input\n"
	    "  health        exit 0 when the relay answers SMTP and its queue "
	    "is\n"
	    "                writable (for HEALTHCHECK and monitoring)\n"
	    "  version       print the version\n"
	    "\n"
	    "The configuration is FILE, else $SLUICE_CONFIG, else %s;\n"
	    "when none of these exists, the built-in defaults are used.\n"
	    "Any key can also be set as SLUICE_<KEY> in the environment\n"
	    "(SLUICE_RELAY_NETWORKS=...), which wins over the file.\n",
	    DEFAULT_CONFIG);
}

/* SLUICE_<KEY> variables over `cfg`; NULL (freeing it) on a bad one. */
static struct config *
with_env(struct config *cfg)
{
	int nerr;

	if (cfg == NULL)
		return NULL;
	nerr = config_apply_env(cfg, stderr);
	if (nerr == 0)
		return cfg;
	fprintf(stderr, "sluice: %d problem%s in the environment\n", nerr,
	    nerr == 1 ? "" : "s");
	config_free(cfg);
	return NULL;
}

struct config *
load_config(const char *path, const char **source)
{
	struct config *cfg;
	int nerr = 0;

	if (path == NULL)
		path = getenv("SLUICE_CONFIG");
	if (path == NULL || *path == '\0') {
		if (access(DEFAULT_CONFIG, F_OK) != 0) {
			*source = "built-in defaults";
			return with_env(config_defaults());
		}
		path = DEFAULT_CONFIG;
	}
	*source = path;
	cfg = config_load(path, stderr, &nerr);
	if (cfg == NULL)
		fprintf(stderr, "sluice: %d problem%s in %s\n", nerr,
		    nerr == 1 ? "" : "s", path);
	return with_env(cfg);
}

/* mkdir -p for the directory that will hold `file`. */
static int
make_parent_dirs(const char *file, char *why)
{
	char *dir = xstrdup(file), *p;
	int rc = 0;

	p = strrchr(dir, '/');
	if (p == NULL || p == dir)
		goto out;
	*p = '\0';
	for (p = dir + 1; *p != '\0'; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(dir, 0750) != 0 && errno != EEXIST) {
			why_set(
			    why, "cannot create %s: %s", dir, strerror(errno));
			rc = -1;
			goto out;
		}
		*p = '/';
	}
	if (mkdir(dir, 0750) != 0 && errno != EEXIST) {
		why_set(why, "cannot create %s: %s", dir, strerror(errno));
		rc = -1;
	}
out:
	free(dir);
	return rc;
}

/*
 * The certificate and key to use: the configured ones, or a self-signed
 * pair in the data folder (beside the queue), generated at first start.
 */
static void
tls_paths(const struct config *cfg, char *cert, char *key, size_t len)
{
	const char *slash;
	int dlen;

	if (cfg->tls_cert[0] != '\0') {
		snprintf(cert, len, "%s", cfg->tls_cert);
		snprintf(key, len, "%s",
		    cfg->tls_key[0] ? cfg->tls_key : cfg->tls_cert);
		return;
	}
	slash = strrchr(cfg->queue_path, '/');
	dlen = slash ? (int)(slash - cfg->queue_path) : 1;
	snprintf(cert, len, "%.*s/selfsigned-cert.pem", dlen,
	    slash ? cfg->queue_path : ".");
	snprintf(key, len, "%.*s/selfsigned-key.pem", dlen,
	    slash ? cfg->queue_path : ".");
}

/* Load (and on first start generate) the TLS credentials.  NULL + why. */
static struct tls_creds *
load_tls(const struct config *cfg, bool generate, char *why)
{
	char cert[4096], key[4096];

	tls_paths(cfg, cert, key, sizeof(cert));
	if (cfg->tls_cert[0] == '\0' && generate) {
		int r = tls_selfsigned_ensure(cert, key, cfg->hostname, why);

		if (r < 0)
			return NULL;
		if (r > 0)
			log_info("tls",
			    "no tls_cert configured: generated a "
			    "self-signed certificate for %s in %s; "
			    "STARTTLS uses it",
			    cfg->hostname, cert);
	}
	return tls_creds_load(cert, key, cfg->tls_priority, why);
}

/* Load auth_users; NULL without error when AUTH is not configured. */
static struct auth_db *
load_auth(const struct config *cfg, bool *failed)
{
	struct auth_db *db;
	int nerr = 0;

	*failed = false;
	if (cfg->auth_users[0] == '\0')
		return NULL;
	db = auth_db_load(cfg->auth_users, stderr, &nerr);
	if (db == NULL)
		*failed = true;
	return db;
}

/* SIGHUP: new certificates and users, or the old ones kept. */
static void
reload(struct server *srv)
{
	struct tls_creds *creds;
	struct auth_db *db;
	char why[WHY_MAX];
	bool failed;

	creds = load_tls(srv->cfg, false, why);
	if (creds == NULL) {
		log_err("main", "SIGHUP: keeping the old certificate: %s", why);
	} else {
		holder_set(srv->tls, creds);
		log_info("main", "SIGHUP: certificate reloaded");
	}
	db = load_auth(srv->cfg, &failed);
	if (failed) {
		log_err("main",
		    "SIGHUP: keeping the old auth_users: %s has "
		    "errors",
		    srv->cfg->auth_users);
	} else if (db != NULL) {
		holder_set(srv->auth, db);
		log_info("main", "SIGHUP: auth_users reloaded (%d users)",
		    auth_db_count(db));
	}
}

static void
signal_fd(int fd)
{
	uint64_t one = 1;

	(void)!write(fd, &one, sizeof(one));
}

/*
 * Wait for the sessions to end, for at most `ms` milliseconds; a signal
 * meanwhile means "exit now".
 */
static void
drain_sessions(struct pool *pool, const sigset_t *set, int64_t ms)
{
	int64_t deadline = now_ms() + ms;

	while (pool_busy(pool) > 0 && now_ms() < deadline) {
		struct timespec ts = {0, 50 * 1000 * 1000};
		int sig = sigtimedwait(set, NULL, &ts);

		if (sig == SIGTERM || sig == SIGINT) {
			log_warn("main", "second signal: exiting at once");
			_exit(1);
		}
	}
}

static int
cmd_serve(const char *path)
{
	struct server srv;
	struct config *cfg;
	struct listener *lis = NULL;
	struct ipcount *ipc = NULL;
	struct pool *pool = NULL;
	struct delivery *delivery = NULL;
	struct sockaddr_storage *self_addrs = NULL;
	const char *source;
	char why[WHY_MAX], addrs[512];
	sigset_t set;
	int i, sig, rc = 1;
	size_t off = 0;

	cfg = load_config(path, &source);
	if (cfg == NULL)
		return 1;
	log_set_level(cfg->log_level);
	memset(&srv, 0, sizeof(srv));
	srv.cfg = cfg;
	srv.stop_fd = srv.kill_fd = -1;

	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	signal(SIGPIPE, SIG_IGN);

	if (make_parent_dirs(cfg->queue_path, why) != 0) {
		log_err("main", "fatal: %s", why);
		goto out;
	}
	srv.queue = queue_open(cfg->queue_path, why);
	if (srv.queue == NULL) {
		log_err("main", "fatal: queue %s: %s", cfg->queue_path, why);
		goto out;
	}
	srv.stop_fd = eventfd(0, EFD_CLOEXEC);
	srv.kill_fd = eventfd(0, EFD_CLOEXEC);
	if (srv.stop_fd < 0 || srv.kill_fd < 0) {
		log_err("main", "fatal: eventfd: %s", strerror(errno));
		goto out;
	}
	srv.tls = holder_new((void (*)(void *))tls_creds_unref);
	srv.auth = holder_new((void (*)(void *))auth_db_free);
	{
		struct tls_creds *creds = load_tls(cfg, true, why);
		struct auth_db *db;
		bool failed;

		if (creds == NULL) {
			log_err("main", "fatal: TLS: %s", why);
			goto out;
		}
		holder_set(srv.tls, creds);
		db = load_auth(cfg, &failed);
		if (failed) {
			log_err(
			    "main", "fatal: %s has errors", cfg->auth_users);
			goto out;
		}
		holder_set(srv.auth, db);
	}
	lis = listener_open(&srv, why);
	if (lis == NULL) {
		log_err("main", "fatal: %s", why);
		goto out;
	}
	ipc = ipcount_new();
	pool = pool_new(&srv, ipc, cfg->workers, cfg->workers, why);
	if (pool == NULL) {
		log_err("main", "fatal: %s", why);
		goto out;
	}
	if (listener_start(lis, pool, ipc, why) != 0) {
		log_err("main", "fatal: %s", why);
		goto out;
	}
	if (cfg->delivery_threads > 0) {
		struct dns_self self;

		self_addrs = xcalloc((size_t)cfg->nlisten, sizeof(*self_addrs));
		for (i = 0; i < cfg->nlisten; i++)
			self_addrs[i] = cfg->listen[i].ss;
		self.hostname = cfg->hostname;
		self.addrs = self_addrs;
		self.naddrs = cfg->nlisten;
		delivery =
		    delivery_start(srv.queue, cfg, &self, srv.kill_fd, why);
		if (delivery == NULL) {
			log_err("main", "fatal: delivery: %s", why);
			goto out;
		}
	} else {
		log_info("main", "delivery_threads = 0: accepting and queueing "
		                 "only, delivering nothing");
	}
	addrs[0] = '\0';
	for (i = 0; i < cfg->nlisten && off < sizeof(addrs); i++)
		off += (size_t)snprintf(addrs + off, sizeof(addrs) - off,
		    "%s%s", i ? "," : "", cfg->listen[i].text);
	log_info("main",
	    "ready: sluice %s listening on %s queue=%s "
	    "workers=%d hostname=%s config=%s",
	    SLUICE_VERSION, addrs, cfg->queue_path, cfg->workers, cfg->hostname,
	    source);

	for (;;) {
		if (sigwait(&set, &sig) != 0)
			continue;
		if (sig == SIGTERM || sig == SIGINT)
			break;
		if (sig == SIGHUP)
			reload(&srv);
	}
	log_info("main", "%s: shutting down (grace %ds)",
	    sig == SIGTERM ? "SIGTERM" : "SIGINT", cfg->shutdown_grace);
	listener_stop(lis);
	lis = NULL;
	signal_fd(srv.stop_fd);
	drain_sessions(pool, &set, (int64_t)cfg->shutdown_grace * 1000);
	if (pool_busy(pool) > 0)
		log_info("main", "grace period over: ending %d session%s",
		    pool_busy(pool), pool_busy(pool) == 1 ? "" : "s");
	signal_fd(srv.kill_fd);
	drain_sessions(pool, &set, 3600 * 1000);
	rc = 0;
out:
	listener_stop(lis);
	if (pool != NULL)
		pool_join(pool);
	ipcount_free(ipc);
	delivery_stop(delivery);
	free(self_addrs);
	queue_close(srv.queue);
	holder_free(srv.tls);
	holder_free(srv.auth);
	if (srv.stop_fd >= 0)
		close(srv.stop_fd);
	if (srv.kill_fd >= 0)
		close(srv.kill_fd);
	if (rc == 0)
		log_info("main", "stopped: %ld message%s accepted",
		    atomic_load(&srv.messages_accepted),
		    atomic_load(&srv.messages_accepted) == 1 ? "" : "s");
	config_free(cfg);
	return rc;
}

static int
cmd_check_config(const char *path)
{
	const char *source;
	struct config *cfg = load_config(path, &source);

	struct tls_creds *creds;
	struct auth_db *db;
	char why[WHY_MAX];
	bool failed;
	int rc = 0;

	if (cfg == NULL)
		return 1;
	if (tls_priority_check(cfg->tls_priority, why) != 0) {
		fprintf(stderr, "%s: %s\n", source, why);
		rc = 1;
	} else if (cfg->tls_cert[0] != '\0') {
		creds = load_tls(cfg, false, why);
		if (creds == NULL) {
			fprintf(stderr, "%s: %s\n", source, why);
			rc = 1;
		}
		tls_creds_unref(creds);
	}
	db = load_auth(cfg, &failed);
	if (failed)
		rc = 1;
	auth_db_free(db);
	if (rc == 0)
		printf("%s: configuration OK\n", source);
	config_free(cfg);
	return rc;
}

static int
cmd_resolve(const char *path, const char *domain)
{
	const char *source;
	struct config *cfg = load_config(path, &source);
	struct dns_resolver *r = NULL;
	struct mx_host *hosts = NULL;
	struct dns_self self = {NULL, NULL, 0};
	char why[WHY_MAX];
	enum res res;
	int i, n = 0, rc = 1;

	if (cfg == NULL)
		return 1;
	r = dns_resolver_new(cfg, why);
	if (r == NULL) {
		fprintf(stderr, "sluice: %s\n", why);
		goto out;
	}
	self.hostname = cfg->hostname;
	res = dns_resolve_mx(r, domain, cfg->delivery_port, &self,
	    cfg->max_mx_hosts, &hosts, &n, why);
	if (res != RES_OK) {
		printf("%s %s\n", res == RES_TEMP ? "temporary" : "permanent",
		    why);
		rc =
		    res == RES_TEMP ? 75 : 69; /* EX_TEMPFAIL, EX_UNAVAILABLE */
		goto out;
	}
	for (i = 0; i < n; i++)
		printf("%s %d %s %d\n", hosts[i].name, hosts[i].pref,
		    hosts[i].ip,
		    sockaddr_port((struct sockaddr *)&hosts[i].addr));
	rc = 0;
out:
	free(hosts);
	dns_resolver_free(r);
	config_free(cfg);
	return rc;
}

int
main(int argc, char **argv)
{
	const char *cmd, *path = NULL, *arg = NULL;
	int i;

	cmd = strrchr(argv[0], '/') ? strrchr(argv[0], '/') + 1 : argv[0];
	if (strcmp(cmd, "sendmail") == 0)
		return sendmail_cmd(argc, argv);
	if (argc < 2) {
		usage(stderr);
		return 2;
	}
	cmd = argv[1];
	if (strcmp(cmd, "sendmail") == 0)
		return sendmail_cmd(argc - 1, argv + 1);
	if (strcmp(cmd, "queue") == 0)
		return queue_cmd(argc - 1, argv + 1);
	if (strcmp(cmd, "health") == 0)
		return health_cmd(argc - 1, argv + 1);
	if (strcmp(cmd, "passwd") == 0) {
		if (argc != 3) {
			fprintf(stderr, "usage: sluice passwd USER\n");
			return 2;
		}
		return auth_cmd_passwd(argv[2]);
	}
	for (i = 2; i < argc; i++) {
		if (strcmp(cmd, "resolve") == 0 && argv[i][0] != '-' &&
		    arg == NULL) {
			arg = argv[i];
		} else if (strcmp(argv[i], "-c") == 0 && i + 1 < argc) {
			path = argv[++i];
		} else {
			fprintf(stderr, "sluice: unexpected argument \"%s\"\n",
			    argv[i]);
			usage(stderr);
			return 2;
		}
	}
	if (strcmp(cmd, "serve") == 0)
		return cmd_serve(path);
	if (strcmp(cmd, "check-config") == 0)
		return cmd_check_config(path);
	if (strcmp(cmd, "resolve") == 0) {
		if (arg == NULL) {
			fprintf(
			    stderr, "usage: sluice resolve DOMAIN [-c FILE]\n");
			return 2;
		}
		return cmd_resolve(path, arg);
	}
	if (strcmp(cmd, "version") == 0) {
		printf("sluice %s\n", SLUICE_VERSION);
		return 0;
	}
	if (strcmp(cmd, "help") == 0 || strcmp(cmd, "-h") == 0 ||
	    strcmp(cmd, "--help") == 0) {
		usage(stdout);
		return 0;
	}
	fprintf(stderr, "sluice: unknown command \"%s\"\n", cmd);
	usage(stderr);
	return 2;
}
