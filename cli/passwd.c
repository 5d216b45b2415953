/*
 * passwd.c - `sluice passwd USER`: read a password as one line on
 * standard input (on a terminal: prompted twice on /dev/tty without echo,
 * and the two must match), hash it with libxcrypt's strongest default
 * (server/auth.c) and print "USER:HASH" for the auth_users file.
 *
 * Threads: single-threaded command; `passwd_signo` is its only shared
 * state, written by its signal handler.  The password is read with
 * read(2) so no stdio buffer keeps a copy, and wiped before exit.
 */
#include "auth.h"
#include "cli.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

/* Set by passwd_on_signal while the terminal has echo turned off. */
static volatile sig_atomic_t passwd_signo;

static void
passwd_on_signal(int sig)
{
	passwd_signo = sig;
}

/*
 * Read one line from fd into buf (AUTH_FIELD_MAX + 1 octets) with read(2),
 * so no stdio buffer keeps a copy.  The whole line is consumed even when
 * it is too long.  With `waitmask`, the caller has blocked the signals it
 * catches and they are let in only while ppoll waits, so a ^C can never
 * slip in between a check of passwd_signo and a blocking read.  Returns 0,
 * or -1 with `why` set.
 */
static int
read_password(int fd, char *buf, const sigset_t *waitmask, char *why)
{
	size_t n = 0;
	bool toolong = false, nul = false;
	int rc = -1;
	char c = '\0';

	for (;;) {
		struct pollfd pfd = {.fd = fd, .events = POLLIN};
		ssize_t r;

		if (waitmask != NULL && ppoll(&pfd, 1, NULL, waitmask) < 0) {
			if (errno == EINTR && passwd_signo == 0)
				continue;
			why_set(why, "cannot read the password: %s",
			    passwd_signo != 0 ? "interrupted"
			                      : strerror(errno));
			goto out;
		}
		r = read(fd, &c, 1);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			why_set(why, "cannot read the password: %s",
			    strerror(errno));
			goto out;
		}
		if (r == 0 || c == '\n')
			break;
		if (c == '\0')
			nul = true;
		if (n < AUTH_FIELD_MAX)
			buf[n++] = c;
		else
			toolong = true;
	}
	if (n > 0 && buf[n - 1] == '\r')
		n--;
	buf[n] = '\0';
	if (toolong || n >= AUTH_FIELD_MAX)
		why_set(
		    why, "password longer than %d octets", AUTH_FIELD_MAX - 1);
	else if (nul)
		why_set(why, "password contains a NUL octet");
	else if (n == 0)
		why_set(why, "empty password");
	else
		rc = 0;
out:
	explicit_bzero(&c, sizeof(c));
	return rc;
}

static void
tty_write(int fd, const char *s)
{
	size_t len = strlen(s);

	while (len > 0) {
		ssize_t w = write(fd, s, len);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return;
		s += w;
		len -= (size_t)w;
	}
}

/*
 * Prompt twice on the terminal with echo off.  Echo is restored, and
 * pending input flushed, on every path; a signal (^C) aborts the prompt,
 * restores the terminal, then takes its usual effect.  Signals the caller
 * ignores stay ignored.
 */
static int
read_password_tty(char *pw, char *again, char *why)
{
	static const int sigs[] = {SIGINT, SIGHUP, SIGQUIT, SIGTERM, SIGTSTP};
	enum { NSIGS = sizeof(sigs) / sizeof(sigs[0]) };
	struct sigaction sa, old[NSIGS];
	bool caught[NSIGS] = {false};
	sigset_t block, saved_mask;
	struct termios saved, noecho;
	bool echo_off = false;
	int fd, in, out, rc = -1, signo;
	size_t i;

	fd = open("/dev/tty", O_RDWR | O_NOCTTY | O_CLOEXEC);
	in = fd >= 0 ? fd : STDIN_FILENO;
	out = fd >= 0 ? fd : STDERR_FILENO;
	passwd_signo = 0;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = passwd_on_signal;
	sigemptyset(&sa.sa_mask);
	sigemptyset(&block);
	for (i = 0; i < NSIGS; i++) {
		sigaction(sigs[i], NULL, &old[i]);
		if (old[i].sa_handler != SIG_IGN)
			sigaddset(&block, sigs[i]);
	}
	/* Blocked except inside ppoll (see read_password). */
	sigprocmask(SIG_BLOCK, &block, &saved_mask);
	for (i = 0; i < NSIGS; i++)
		if (sigismember(&block, sigs[i]) == 1)
			caught[i] = sigaction(sigs[i], &sa, NULL) == 0;
	if (tcgetattr(in, &saved) != 0) {
		why_set(why, "cannot read the terminal settings: %s",
		    strerror(errno));
		goto out;
	}
	noecho = saved;
	noecho.c_lflag &= ~(tcflag_t)(ECHO | ECHOE | ECHOK | ECHONL);
	if (tcsetattr(in, TCSAFLUSH, &noecho) != 0) {
		why_set(why, "cannot turn off echo: %s", strerror(errno));
		goto out;
	}
	echo_off = true;
	tty_write(out, "Password: ");
	if (read_password(in, pw, &saved_mask, why) != 0)
		goto out;
	tty_write(out, "\nAgain: ");
	if (read_password(in, again, &saved_mask, why) != 0)
		goto out;
	if (strcmp(pw, again) != 0) {
		why_set(why, "the passwords do not match");
		goto out;
	}
	rc = 0;
out:
	if (echo_off) {
		tty_write(out, "\n");
		while (tcsetattr(in, TCSAFLUSH, &saved) != 0 && errno == EINTR)
			;
	}
	for (i = 0; i < NSIGS; i++)
		if (caught[i])
			sigaction(sigs[i], &old[i], NULL);
	if (fd >= 0)
		close(fd);
	signo = passwd_signo;
	passwd_signo = 0;
	/* A signal still pending is delivered here, with the old action. */
	sigprocmask(SIG_SETMASK, &saved_mask, NULL);
	if (signo != 0) {
		rc = -1;
		why_set(why, "interrupted");
		raise(signo); /* with the caller's disposition restored */
	}
	return rc;
}

int
passwd_cmd(int argc, char **argv)
{
	char pw[AUTH_FIELD_MAX + 1], again[AUTH_FIELD_MAX + 1], why[WHY_MAX];
	const char *user = argv[1];
	char *hash = NULL;
	int status = 1;

	if (argc != 2) {
		fprintf(stderr, "usage: sluice passwd USER\n");
		return 2;
	}

	pw[0] = again[0] = why[0] = '\0';
	if (!auth_user_name_ok(user)) {
		why_set(why,
		    "the user name must be 1 to %d octets, without ':', white "
		    "space or control characters",
		    AUTH_FIELD_MAX - 1);
		goto out;
	}
	if (isatty(STDIN_FILENO)) {
		if (read_password_tty(pw, again, why) != 0)
			goto out;
	} else if (read_password(STDIN_FILENO, pw, NULL, why) != 0) {
		goto out;
	}
	hash = auth_hash_password(pw, why);
	if (hash == NULL)
		goto out;
	if (printf("%s:%s\n", user, hash) < 0 || fflush(stdout) != 0) {
		why_set(why, "cannot write to standard output: %s",
		    strerror(errno));
		goto out;
	}
	status = 0;
out:
	if (status != 0)
		fprintf(stderr, "sluice: passwd: %s\n", why);
	explicit_bzero(pw, sizeof(pw));
	explicit_bzero(again, sizeof(again));
	free(hash);
	return status;
}
