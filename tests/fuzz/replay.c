/*
 * replay.c - the main() that `make test` links with each fuzz target
 * instead of libFuzzer: every file of the target's seed corpus
 * (tests/fuzz/corpus/TARGET, or the files and folders given as arguments)
 * is fed to LLVMFuzzerTestOneInput once, each in its own child process so
 * that one input that crashes, trips a sanitizer or leaks is reported by
 * name and the others still run.  Output follows tests/run.sh: one
 * "ok - fuzz TARGET: N inputs" line, or a "FAIL - ..." line per failure.
 *
 * FUZZ_TARGET (the target's name) is defined by the Makefile.
 */
#include "fuzz.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef FUZZ_TARGET
#error "FUZZ_TARGET must name the target"
#endif

static int ninputs, nfailed;

/* Read all of `path` into a malloc'd buffer; NULL with errno. */
static uint8_t *
read_file(const char *path, size_t *len)
{
	uint8_t *p = NULL;
	size_t cap = 0, n = 0;
	ssize_t r;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return NULL;
	for (;;) {
		if (n + 4096 > cap) {
			cap = (n + 4096) * 2;
			p = realloc(p, cap);
			if (p == NULL)
				abort();
		}
		r = read(fd, p + n, cap - n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		n += (size_t)r;
	}
	close(fd);
	if (r < 0) {
		free(p);
		return NULL;
	}
	*len = n;
	return p;
}

/* Feed one file to the target in a child process; count the outcome. */
static void
replay_one(const char *path)
{
	uint8_t *data;
	size_t len = 0;
	pid_t pid;
	int status;

	data = read_file(path, &len);
	if (data == NULL) {
		printf("FAIL - fuzz %s: %s: cannot read: %s\n", FUZZ_TARGET,
		    path, strerror(errno));
		nfailed++;
		return;
	}
	ninputs++;
	fflush(stdout);
	fflush(stderr);
	pid = fork();
	if (pid < 0) {
		printf(
		    "FAIL - fuzz %s: fork: %s\n", FUZZ_TARGET, strerror(errno));
		nfailed++;
	} else if (pid == 0) {
		LLVMFuzzerTestOneInput(data, len);
		free(data);
		exit(0); /* exit, not _exit: LeakSanitizer runs at exit */
	} else {
		while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
			;
		if (WIFSIGNALED(status)) {
			printf("FAIL - fuzz %s: %s: killed by signal %d\n",
			    FUZZ_TARGET, path, WTERMSIG(status));
			nfailed++;
		} else if (WEXITSTATUS(status) != 0) {
			printf("FAIL - fuzz %s: %s: exit status %d\n",
			    FUZZ_TARGET, path, WEXITSTATUS(status));
			nfailed++;
		}
	}
	free(data);
}

static int
skip_hidden(const struct dirent *e)
{
	return e->d_name[0] != '.';
}

/* A file, or every file of a folder in name order. */
static void
replay_path(const char *path)
{
	struct dirent **names;
	struct stat st;
	char sub[4096];
	int n, i;

	if (stat(path, &st) != 0) {
		printf("FAIL - fuzz %s: %s: %s\n", FUZZ_TARGET, path,
		    strerror(errno));
		nfailed++;
		return;
	}
	if (!S_ISDIR(st.st_mode)) {
		replay_one(path);
		return;
	}
	n = scandir(path, &names, skip_hidden, alphasort);
	if (n < 0) {
		printf("FAIL - fuzz %s: %s: %s\n", FUZZ_TARGET, path,
		    strerror(errno));
		nfailed++;
		return;
	}
	for (i = 0; i < n; i++) {
		snprintf(sub, sizeof(sub), "%s/%s", path, names[i]->d_name);
		replay_one(sub);
		free(names[i]);
	}
	free(names);
}

int
main(int argc, char **argv)
{
	int i;

	setvbuf(stdout, NULL, _IOLBF, 0); /* lines in order with stderr */
	if (argc < 2)
		replay_path("tests/fuzz/corpus/" FUZZ_TARGET);
	for (i = 1; i < argc; i++)
		replay_path(argv[i]);
	if (ninputs == 0 && nfailed == 0) {
		printf("FAIL - fuzz %s: no inputs to replay\n", FUZZ_TARGET);
		nfailed++;
	}
	if (nfailed == 0)
		printf("ok - fuzz %s: %d inputs\n", FUZZ_TARGET, ninputs);
	return nfailed ? 1 : 0;
}
