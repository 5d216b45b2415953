/*
 * health.c - `sluice health`, for a container HEALTHCHECK and for
 * monitoring: exit 0 only when
 *
 *   1. the relay completes an SMTP handshake on its first listener
 *      (connect, TLS first on an /smtps listener, the 220 greeting, EHLO
 *      answered 250, QUIT), and
 *   2. its queue can take mail: the file exists, its file system is
 *      writable with at least HEALTH_MIN_FREE octets free, and a second
 *      connection can take the write lock (BEGIN IMMEDIATE; ROLLBACK).
 *
 * The whole check runs against one deadline (--timeout, 10 s by default).
 * Prints one line: "ok: ..." (exit 0) or "unhealthy: REASON" (exit 1);
 * usage errors exit 2 (Docker reserves 2, so it never means "unhealthy").
 *
 * Run it as the user sluice runs as (or root): the queue check writes.
 *
 * Threads: single-threaded command; no shared state.
 */
#include "cli.h"
#include "loadcfg.h"
#include "conn.h"
#include "store.h"
#include "smtpwire.h"
#include "tls.h"
#include "util.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#define HEALTH_TIMEOUT 10 /* seconds, the default */
#define HEALTH_MIN_FREE (1024 * 1024)

/* The SMTP side of the check. */
struct probe {
	struct conn *conn;
	char peer[80]; /* "127.0.0.1:2525" */
	int64_t deadline;
	int timeout; /* seconds, for messages */
};

static int
usage(void)
{
	fprintf(stderr, "usage: sluice health [-c FILE] [--timeout SECONDS]\n");
	return 2;
}

/* Connect before the deadline: the socket, or -1 with `why`. */
static int
probe_connect(struct probe *p, const struct sockaddr_storage *ss, socklen_t len,
    char *why)
{
	int fd = smtpwire_connect(ss, len, p->deadline);

	if (fd >= 0)
		return fd;
	if (errno == ETIMEDOUT)
		why_set(
		    why, "%s: no connection within %d s", p->peer, p->timeout);
	else
		why_set_errno(why, p->peer, errno);
	return -1;
}

/*
 * The code of what the wire reported, or 0 with `why` naming `what` we
 * were waiting for.
 */
static int
probe_result(const struct probe *p, enum smtpwire_status st,
    const struct smtp_reply *r, const char *what, char *why)
{
	switch (st) {
	case SMTPWIRE_OK:
		return r->code;
	case SMTPWIRE_TIMEOUT:
		why_set(
		    why, "%s: no %s within %d s", p->peer, what, p->timeout);
		break;
	case SMTPWIRE_LOST:
		why_set(
		    why, "%s: connection closed before the %s", p->peer, what);
		break;
	case SMTPWIRE_MALFORMED:
		why_set(why, "%s: malformed %s \"%s\"", p->peer, what, r->text);
		break;
	case SMTPWIRE_TOO_LONG:
		why_set(why, "%s: command too long", p->peer);
		break;
	}
	return 0;
}

/*
 * Client credentials for an /smtps listener.  Nothing is verified, so the
 * trust store only has to load: the relay's own certificate (tls_paths:
 * the configured one or the self-signed one) does, and works in a
 * container without CA certificates; else the system's.
 */
static struct tls_creds *
client_creds(const struct config *cfg, char *why)
{
	char cert[4096], key[4096];
	struct tls_creds *c = NULL;

	tls_paths(cfg, cert, key, sizeof(cert));
	if (access(cert, R_OK) == 0)
		c = tls_client_creds_new(cert, why);
	if (c == NULL)
		c = tls_client_creds_new(NULL, why);
	return c;
}

/* Greeting, EHLO, QUIT on the open probe.  0 or -1 with `why`. */
static int
probe_talk(struct probe *p, const char *helo, char *why)
{
	struct smtp_reply r;
	int code;

	code = probe_result(p,
	    smtpwire_read_reply(p->conn, p->deadline, &r, NULL, NULL), &r,
	    "greeting", why);
	if (code == 0)
		return -1;
	if (code != 220) {
		why_set(why, "%s: greeting was \"%s\"", p->peer, r.text);
		return -1;
	}
	code = probe_result(p,
	    smtpwire_command(
	        p->conn, p->deadline, &r, NULL, NULL, "EHLO %s", helo),
	    &r, "reply to EHLO", why);
	if (code == 0)
		return -1;
	if (code != 250) {
		why_set(why, "%s: EHLO was answered \"%s\"", p->peer, r.text);
		return -1;
	}
	/* QUIT, politely and briefly: the verdict is in. */
	smtpwire_quit(p->conn, deadline_left_ms(p->deadline) > 1000
	                           ? deadline_in(1)
	                           : p->deadline);
	return 0;
}

/* The SMTP half.  0 with the time taken in *ms, or -1 with `why`. */
static int
check_smtp(const struct config *cfg, struct probe *p, int64_t *ms, char *why)
{
	const struct listen_addr *l = &cfg->listen[0];
	struct sockaddr_storage ss;
	struct tls_creds *creds = NULL;
	socklen_t len;
	char err[WHY_MAX];
	int64_t start = now_ms();
	int fd, rc = -1;

	if (cfg->nlisten == 0) {
		why_set(why, "no listener is configured");
		return -1;
	}
	listener_target(l, &ss, &len, p->peer, sizeof(p->peer));
	fd = probe_connect(p, &ss, len, why);
	if (fd < 0)
		return -1;
	p->conn = conn_new(fd);
	if (l->kind == LISTEN_SMTPS) {
		creds = client_creds(cfg, err);
		if (creds == NULL) {
			why_set(why, "%s: %s", p->peer, err);
			goto out;
		}
		if (conn_tls_connect(p->conn, creds, cfg->hostname, false,
		        p->deadline, err) != CONN_OK) {
			why_set(
			    why, "%s: TLS handshake failed: %s", p->peer, err);
			goto out;
		}
	}
	if (probe_talk(p, cfg->hostname, why) != 0)
		goto out;
	*ms = now_ms() - start;
	rc = 0;
out:
	conn_free(p->conn);
	p->conn = NULL;
	tls_creds_unref(creds);
	return rc;
}

/* The file system holding the queue: writable, with room.  0 or -1. */
static int
check_filesystem(const char *path, char *why)
{
	struct statvfs vfs;
	unsigned long long avail;

	if (statvfs(path, &vfs) != 0) {
		why_set(why, "queue %s: %s", path, strerror(errno));
		return -1;
	}
	if (vfs.f_flag & ST_RDONLY) {
		why_set(why, "queue %s: read-only file system", path);
		return -1;
	}
	avail = (unsigned long long)vfs.f_bavail * vfs.f_frsize;
	if (avail < HEALTH_MIN_FREE) {
		why_set(why, "queue %s: only %llu KiB free on its file system",
		    path, avail / 1024);
		return -1;
	}
	return 0;
}

/* The queue half.  0 or -1 with `why`. */
static int
check_queue(const struct config *cfg, int64_t deadline, char *why)
{
	const char *path = cfg->queue_path;
	struct store *store = NULL;
	struct stat st;
	char err[WHY_MAX], shown[512];
	int rc = -1;

	/* A PostgreSQL queue: no file to look at, and no password shown. */
	if (store_path_is_database(cfg->queue_path)) {
		store_path_shown(cfg->queue_path, shown, sizeof(shown));
		path = shown;
		goto open;
	}
	if (stat(path, &st) != 0) {
		if (errno == ENOENT)
			why_set(why, "queue %s: does not exist", path);
		else
			why_set(why, "queue %s: %s", path, strerror(errno));
		return -1;
	}
	if (check_filesystem(path, why) != 0)
		return -1;
	if (access(path, W_OK) != 0) {
		why_set(
		    why, "queue %s: not writable: %s", path, strerror(errno));
		return -1;
	}
open:
	store = store_open_helper(cfg->queue_path, err);
	if (store == NULL) {
		why_set(why, "queue %s: %s", path, err);
		return -1;
	}
	store_set_busy_timeout(store, deadline_left_ms(deadline) + 1);
	if (store_probe_write(store, err) != RES_OK) {
		why_set(why, "queue %s: cannot write: %s", path, err);
		goto out;
	}
	rc = 0;
out:
	store_close(store);
	return rc;
}

/*
 * A backstop for what no deadline covers (a file system that hangs in
 * stat): the check still ends, unhealthy.  Async-signal-safe.
 */
static void
on_alarm(int sig)
{
	static const char msg[] = "unhealthy: the check did not finish in "
	                          "time\n";

	(void)sig;
	(void)!write(STDOUT_FILENO, msg, sizeof(msg) - 1);
	_exit(1);
}

/* Parse the arguments; 0, or the usage exit status. */
static int
parse_args(int argc, char **argv, const char **path, int *timeout)
{
	long long t;
	int i;

	for (i = 1; i < argc; i++) {
		const char *v = NULL;

		if (strcmp(argv[i], "-c") == 0 && i + 1 < argc) {
			*path = argv[++i];
			continue;
		}
		if (strcmp(argv[i], "--timeout") == 0 && i + 1 < argc)
			v = argv[++i];
		else if (strncmp(argv[i], "--timeout=", 10) == 0)
			v = argv[i] + 10;
		if (v == NULL) {
			fprintf(stderr,
			    "sluice health: unexpected argument "
			    "\"%s\"\n",
			    argv[i]);
			return usage();
		}
		t = config_parse_duration(v);
		if (t <= 0 || t > 3600) {
			fprintf(stderr,
			    "sluice health: bad --timeout \"%s\" (seconds, "
			    "1 to 3600)\n",
			    v);
			return usage();
		}
		*timeout = (int)t;
	}
	return 0;
}

int
health_cmd(int argc, char **argv)
{
	const char *path = NULL, *source;
	struct config *cfg;
	struct probe p;
	char why[WHY_MAX];
	int64_t ms = 0;
	int timeout = HEALTH_TIMEOUT, rc;

	if ((rc = parse_args(argc, argv, &path, &timeout)) != 0)
		return rc;
	cfg = load_config(path, &source);
	if (cfg == NULL) {
		printf("unhealthy: cannot load the configuration\n");
		return 1;
	}
	signal(SIGPIPE, SIG_IGN);
	signal(SIGALRM, on_alarm);
	alarm((unsigned)timeout + 2);
	memset(&p, 0, sizeof(p));
	p.timeout = timeout;
	p.deadline = deadline_in(timeout);
	rc = 1;
	if (check_smtp(cfg, &p, &ms, why) != 0 ||
	    check_queue(cfg, p.deadline, why) != 0) {
		printf("unhealthy: %s\n", why);
	} else {
		char shown[512];

		store_path_shown(cfg->queue_path, shown, sizeof(shown));
		printf(
		    "ok: SMTP on %s answered in %lld ms; queue %s writable\n",
		    p.peer, (long long)ms, shown);
		rc = 0;
	}
	alarm(0);
	config_free(cfg);
	return rc;
}
