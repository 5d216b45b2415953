/*
 * serve.c - `sluice serve`: start-up, reload and shutdown of the relay.
 *
 * Threads: serve_cmd runs on the main thread, which after start-up only waits
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
#include "loadcfg.h"
#include "config.h"
#include "deliver.h"
#include "dkim.h"
#include "dns.h"
#include "holder.h"
#include "httpd.h"
#include "listener.h"
#include "log.h"
#include "pool.h"
#include "privs.h"
#include "queue.h"
#include "serve.h"
#include "server.h"
#include "store.h"
#include "tls.h"
#include "util.h"
#include "version.h"
#include "waiter.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

struct dkim_keys *
serve_load_dkim(const struct config *cfg, char *why)
{
	char warn[WHY_MAX];
	struct dkim_keys *k =
	    dkim_keys_load(cfg->dkim_keys, cfg->ndkim_keys, warn, why);

	if (k != NULL && warn[0] != '\0')
		log_warn("dkim", "%s", warn);
	return k;
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

struct tls_creds *
serve_load_tls(const struct config *cfg, bool generate, char *why)
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

struct auth_table *
serve_load_auth(const struct config *cfg, bool *failed)
{
	struct auth_table *users;
	int nerr = 0;

	*failed = false;
	if (cfg->auth_users[0] == '\0')
		return NULL;
	users = auth_table_load(cfg->auth_users, stderr, &nerr);
	if (users == NULL)
		*failed = true;
	return users;
}

/* What serving needs beside `struct server`, for reload and shutdown. */
struct serving {
	struct server srv;
	const char *path;   /* -c, or NULL: found again on reload */
	struct config *cfg; /* the current version (srv.config holds it) */
	struct listener *lis;
	struct delivery_conf *dconf; /* until delivery starts */
	struct delivery *delivery;
	struct httpd *httpd;
};

static bool
same_hostport(const struct hostport *a, const struct hostport *b)
{
	return strcmp(a->host, b->host) == 0 && a->port == b->port;
}

/* Keys read only at start: say so when a reload changes them. */
static void
warn_restart_keys(const struct config *old, const struct config *cfg)
{
	if (strcmp(old->queue_path, cfg->queue_path) != 0)
		log_warn(
		    "main", "SIGHUP: queue_path changes at the next start");
	if (old->workers != cfg->workers)
		log_warn("main", "SIGHUP: workers changes at the next start");
	if (old->delivery_threads != cfg->delivery_threads)
		log_warn("main",
		    "SIGHUP: delivery_threads changes at the next start");
	if (strcmp(old->user, cfg->user) != 0)
		log_warn("main", "SIGHUP: user changes at the next start");
}

/*
 * After dropping root, a key only root may read (as certbot leaves them)
 * cannot be read again on SIGHUP.  When the files are the same ones, keep
 * what was loaded at start rather than refuse the whole reload.
 */
static bool
tls_unreadable_unchanged(const struct config *old, const struct config *cfg)
{
	char c1[4096], k1[4096], c2[4096], k2[4096];

	tls_paths(old, c1, k1, sizeof(c1));
	tls_paths(cfg, c2, k2, sizeof(c2));
	if (strcmp(c1, c2) != 0 || strcmp(k1, k2) != 0 ||
	    strcmp(old->tls_priority, cfg->tls_priority) != 0)
		return false;
	return (access(c2, R_OK) != 0 && errno == EACCES) ||
	       (access(k2, R_OK) != 0 && errno == EACCES);
}

/*
 * SIGHUP: read the configuration again and switch to it whole, or keep
 * the old one whole when anything in it is wrong (the file, the
 * certificate, auth_users, the smarthost password file).  Sessions and
 * deliveries in progress finish with the version they started with.
 */
static void
reload(struct serving *sv)
{
	struct config *cfg;
	const struct config *old;
	struct tls_creds *creds = NULL;
	struct auth_table *users = NULL;
	struct dkim_keys *dkim = NULL;
	struct delivery_conf *dconf = NULL;
	struct held *old_ref, *ref;
	const char *source;
	char why[WHY_MAX];
	bool failed, keep_creds = false;

	cfg = load_config_logged(sv->path, &source);
	if (cfg == NULL) {
		log_err("main",
		    "SIGHUP: %s has errors (above): keeping the "
		    "old configuration",
		    sv->path ? sv->path : "the configuration");
		return;
	}
	if (tls_unreadable_unchanged(sv->cfg, cfg)) {
		log_warn("main",
		    "SIGHUP: %s or its key cannot be read as this user: "
		    "keeping the certificate loaded at start",
		    cfg->tls_cert);
		keep_creds = true;
	} else if (tls_priority_check(cfg->tls_priority, why) != 0 ||
	           (creds = serve_load_tls(cfg, true, why)) == NULL) {
		log_err("main",
		    "SIGHUP: TLS: %s: keeping the old certificate and "
		    "configuration",
		    why);
		goto fail;
	}
	users = serve_load_auth(cfg, &failed);
	if (failed) {
		log_err("main",
		    "SIGHUP: %s has errors: keeping the old auth_users and "
		    "configuration",
		    cfg->auth_users);
		goto fail;
	}
	dkim = serve_load_dkim(cfg, why);
	if (dkim == NULL) {
		log_err("main",
		    "SIGHUP: %s: keeping the old DKIM keys and configuration",
		    why);
		goto fail;
	}
	if (sv->delivery != NULL &&
	    (dconf = delivery_conf_new(cfg, why)) == NULL) {
		log_err(
		    "main", "SIGHUP: %s: keeping the old configuration", why);
		goto fail;
	}
	/* Everything checked: switch. */
	old = holder_get(sv->srv.config, &old_ref);
	holder_set(sv->srv.config, cfg);
	if (dconf != NULL) {
		(void)holder_get(sv->srv.config, &ref);
		delivery_conf_keep(dconf, ref);
		delivery_reconfigure(sv->delivery, dconf);
	}
	warn_restart_keys(old, cfg);
	if (!keep_creds)
		holder_set(sv->srv.tls, creds);
	holder_set(sv->srv.auth, users);
	holder_set(sv->srv.dkim, dkim);
	if (listener_reload(sv->lis, cfg) > 0)
		log_err("main", "SIGHUP: some listeners could not be opened");
	if (!same_hostport(&old->metrics_listen, &cfg->metrics_listen)) {
		httpd_stop(sv->httpd);
		sv->httpd = NULL;
		if (cfg->metrics_listen.host[0] != '\0' &&
		    (sv->httpd = httpd_start(cfg, &sv->srv, why)) == NULL)
			log_err("main", "SIGHUP: %s", why);
	}
	holder_put(old_ref);
	sv->cfg = cfg;
	log_info("main",
	    "SIGHUP: configuration reloaded from %s (certificate %s, "
	    "%d auth users, %d DKIM keys)",
	    source, keep_creds ? "kept" : "reloaded",
	    users ? auth_table_count(users) : 0, dkim_keys_total(dkim));
	log_set_level(cfg->log_level);
	log_set_json(cfg->log_format == LOG_FORMAT_JSON);
	return;
fail:
	tls_creds_unref(creds);
	auth_table_free(users);
	dkim_keys_free(dkim);
	config_free(cfg);
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
drain_sessions(struct server *srv, const sigset_t *set, int64_t ms)
{
	int64_t deadline = now_ms() + ms;

	while (atomic_load(&srv->sessions) > 0 && now_ms() < deadline) {
		struct timespec ts = {0, 50 * 1000 * 1000};
		int sig = sigtimedwait(set, NULL, &ts);

		if (sig == SIGTERM || sig == SIGINT) {
			log_warn("main", "second signal: exiting at once");
			_exit(1);
		}
	}
}

/*
 * Each connection is a descriptor: raise the soft limit to the hard one,
 * and say so when even that cannot hold max_connections.
 */
static void
raise_fd_limit(const struct config *cfg)
{
	struct rlimit rl;
	/* Beside the connections: workers, delivery, listeners, the queue. */
	rlim_t reserve =
	    (rlim_t)cfg->workers + 4 * (rlim_t)cfg->delivery_threads + 256;
	rlim_t want = (rlim_t)cfg->max_connections + reserve;

	if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
		return;
	if (rl.rlim_cur < want && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max < want ? rl.rlim_max : want;
		(void)setrlimit(RLIMIT_NOFILE, &rl);
		(void)getrlimit(RLIMIT_NOFILE, &rl);
	}
	if (rl.rlim_cur < want)
		log_warn("main",
		    "max_connections = %d needs about %llu file descriptors, "
		    "but the limit is %llu (ulimit -n): accepting fails "
		    "beyond about %llu connections",
		    cfg->max_connections, (unsigned long long)want,
		    (unsigned long long)rl.rlim_cur,
		    (unsigned long long)(rl.rlim_cur > reserve
		                             ? rl.rlim_cur - reserve
		                             : 0));
}

/*
 * Everything that needs root, then the drop: the queue's folder, the
 * listening sockets, a configured certificate and auth_users, the
 * smarthost password.  Then, as the user: the self-signed certificate,
 * the queue.
 */
static int
start_serving(struct serving *sv, char *why)
{
	struct config *cfg = sv->cfg;
	struct privs privs;
	struct stat st;
	char dir[4096], wal[4096], shm[4096], cert[4096], key[4096];
	const char *own[6];
	int nown;
	bool created, failed;
	struct auth_table *users;
	struct dkim_keys *dkim;
	struct tls_creds *creds = NULL;

	if (privs_plan(cfg, &privs, why) != 0)
		return -1;
	data_dir(cfg, dir, sizeof(dir));
	created = stat(dir, &st) != 0;
	if (store_path_is_database(cfg->queue_path)) {
		snprintf(wal, sizeof(wal), "%.4000s/.", dir);
		if (make_parent_dirs(wal, why) != 0)
			return -1;
	} else if (make_parent_dirs(cfg->queue_path, why) != 0) {
		return -1;
	}
	/* The files sluice itself makes in the folder. */
	snprintf(wal, sizeof(wal), "%s-wal", cfg->queue_path);
	snprintf(shm, sizeof(shm), "%s-shm", cfg->queue_path);
	tls_paths(cfg, cert, key, sizeof(cert));
	nown = 0;
	if (!store_path_is_database(cfg->queue_path)) {
		own[nown++] = cfg->queue_path;
		own[nown++] = wal;
		own[nown++] = shm;
	}
	if (cfg->tls_cert[0] == '\0') { /* the self-signed pair */
		own[nown++] = cert;
		own[nown++] = key;
	}
	own[nown] = NULL;
	privs_prepare_dir(&privs, dir, created, own);
	sv->lis = listener_open(&sv->srv, cfg, why);
	if (sv->lis == NULL)
		return -1;
	if (cfg->tls_cert[0] != '\0' &&
	    (creds = serve_load_tls(cfg, false, why)) == NULL)
		return -1;
	users = serve_load_auth(cfg, &failed);
	if (failed) {
		tls_creds_unref(creds);
		why_set(why, "%s has errors", cfg->auth_users);
		return -1;
	}
	holder_set(sv->srv.auth, users);
	dkim = serve_load_dkim(cfg, why);
	if (dkim == NULL) {
		tls_creds_unref(creds);
		return -1;
	}
	holder_set(sv->srv.dkim, dkim);
	if (cfg->delivery_threads > 0) {
		struct held *ref;

		sv->dconf = delivery_conf_new(cfg, why);
		if (sv->dconf == NULL) {
			tls_creds_unref(creds);
			return -1;
		}
		(void)holder_get(sv->srv.config, &ref);
		delivery_conf_keep(sv->dconf, ref);
	}
	if (privs_drop(&privs, why) != 0) {
		tls_creds_unref(creds);
		return -1;
	}
	if (privs.drop && access(dir, W_OK | X_OK) != 0) {
		tls_creds_unref(creds);
		why_set(why,
		    "the queue folder %s is not writable by user %s: "
		    "chown %s %s",
		    dir, privs.name, privs.name, dir);
		return -1;
	}
	if (creds == NULL && (creds = serve_load_tls(cfg, true, why)) == NULL)
		return -1;
	holder_set(sv->srv.tls, creds);
	sv->srv.queue = queue_open(cfg->queue_path, why);
	if (sv->srv.queue == NULL) {
		char tmp[WHY_MAX], shown[512];

		snprintf(tmp, sizeof(tmp), "%s", why);
		store_path_shown(cfg->queue_path, shown, sizeof(shown));
		why_set(why, "queue %s: %s", shown, tmp);
		return -1;
	}
	return 0;
}

int
serve_cmd(int argc, char **argv)
{
	struct serving sv;
	struct server *srv = &sv.srv;
	struct config *cfg;
	struct pool *pool = NULL;
	const char *source, *path;
	char why[WHY_MAX], addrs[512], shown[512];
	sigset_t set;
	int i, sig, rc = 1;
	size_t off = 0;

	rc = loadcfg_args(argc, argv, "sluice serve [-c FILE]", &path, NULL);
	if (rc != 0)
		return rc;
	rc = 1;
	cfg = load_config(path, &source);
	if (cfg == NULL)
		return 1;
	log_set_level(cfg->log_level);
	log_set_json(cfg->log_format == LOG_FORMAT_JSON);
	memset(&sv, 0, sizeof(sv));
	sv.path = path;
	sv.cfg = cfg;
	srv->stop_fd = srv->kill_fd = -1;
	srv->config = holder_new((void (*)(void *))config_free);
	holder_set(srv->config, cfg);
	srv->tls = holder_new((void (*)(void *))tls_creds_unref);
	srv->auth = holder_new((void (*)(void *))auth_table_free);
	srv->dkim = holder_new((void (*)(void *))dkim_keys_free);

	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	signal(SIGPIPE, SIG_IGN);

	srv->stop_fd = eventfd(0, EFD_CLOEXEC);
	srv->kill_fd = eventfd(0, EFD_CLOEXEC);
	if (srv->stop_fd < 0 || srv->kill_fd < 0) {
		log_err("main", "fatal: eventfd: %s", strerror(errno));
		goto out;
	}
	if (start_serving(&sv, why) != 0) {
		log_err("main", "fatal: %s", why);
		goto out;
	}
	raise_fd_limit(cfg);
	/* Clients tracked: those with connections open, and recent ones. */
	srv->anvil = anvil_new((size_t)cfg->max_connections * 2 + 100000);
	/* A burst of new sessions may wait for a worker; beyond this many,
	 * untrusted clients are refused (421 4.3.2) rather than left waiting
	 * for their greeting. */
	pool = pool_new(srv, cfg->workers,
	    cfg->workers * 8 < 1000 ? 1000 : cfg->workers * 8, why);
	if (pool == NULL) {
		log_err("main", "fatal: %s", why);
		goto out;
	}
	srv->waiter = waiter_new(srv, pool, why);
	if (srv->waiter == NULL) {
		log_err("main", "fatal: %s", why);
		goto out;
	}
	if (listener_start(sv.lis, pool, why) != 0) {
		log_err("main", "fatal: %s", why);
		goto out;
	}
	if (sv.dconf != NULL) {
		sv.delivery =
		    delivery_start(srv->queue, sv.dconf, srv->kill_fd, why);
		sv.dconf = NULL;
		if (sv.delivery == NULL) {
			log_err("main", "fatal: delivery: %s", why);
			goto out;
		}
	} else {
		log_info("main", "delivery_threads = 0: accepting and queueing "
		                 "only, delivering nothing");
	}
	if (cfg->metrics_listen.host[0] != '\0') {
		sv.httpd = httpd_start(cfg, srv, why);
		if (sv.httpd == NULL) {
			log_err("main", "fatal: %s", why);
			goto out;
		}
	}
	addrs[0] = '\0';
	store_path_shown(cfg->queue_path, shown, sizeof(shown));
	for (i = 0; i < cfg->nlisten && off < sizeof(addrs); i++)
		off += (size_t)snprintf(addrs + off, sizeof(addrs) - off,
		    "%s%s", i ? "," : "", cfg->listen[i].text);
	log_info("main",
	    "ready: sluice %s listening on %s queue=%s "
	    "workers=%d hostname=%s config=%s",
	    SLUICE_VERSION, addrs, shown, cfg->workers, cfg->hostname, source);

	for (;;) {
		if (sigwait(&set, &sig) != 0)
			continue;
		if (sig == SIGTERM || sig == SIGINT)
			break;
		if (sig == SIGHUP)
			reload(&sv);
	}
	cfg = sv.cfg;
	log_info("main", "%s: shutting down (grace %ds)",
	    sig == SIGTERM ? "SIGTERM" : "SIGINT", cfg->shutdown_grace);
	listener_stop(sv.lis);
	sv.lis = NULL;
	signal_fd(srv->stop_fd);
	drain_sessions(srv, &set, (int64_t)cfg->shutdown_grace * 1000);
	if (atomic_load(&srv->sessions) > 0)
		log_info("main", "grace period over: ending %ld session%s",
		    atomic_load(&srv->sessions),
		    atomic_load(&srv->sessions) == 1 ? "" : "s");
	signal_fd(srv->kill_fd);
	drain_sessions(srv, &set, 3600 * 1000);
	rc = 0;
out:
	listener_stop(sv.lis);
	if (pool != NULL && srv->stop_fd >= 0) {
		/* Whatever is left ends now (a failed start, or a drain cut
		 * short): no session is left parked or queued. */
		signal_fd(srv->stop_fd);
		signal_fd(srv->kill_fd);
	}
	waiter_stop(srv->waiter);
	if (pool != NULL)
		pool_join(pool);
	/* The metrics endpoint reads the waiter: it stops first. */
	httpd_stop(sv.httpd);
	waiter_free(srv->waiter);
	anvil_free(srv->anvil);
	delivery_conf_free(sv.dconf);
	delivery_stop(sv.delivery);
	queue_close(srv->queue);
	holder_free(srv->tls);
	holder_free(srv->auth);
	holder_free(srv->dkim);
	if (srv->stop_fd >= 0)
		close(srv->stop_fd);
	if (srv->kill_fd >= 0)
		close(srv->kill_fd);
	if (rc == 0)
		log_info("main", "stopped: %ld message%s accepted",
		    atomic_load(&srv->messages_accepted),
		    atomic_load(&srv->messages_accepted) == 1 ? "" : "s");
	holder_free(srv->config);
	return rc;
}
