/*
 * privs.c - dropping root (see privs.h).
 *
 * Threads: main thread only, before other threads exist (setuid and
 * capset apply to the calling thread; with a single thread that is the
 * whole process).
 */
#include "privs.h"
#include "log.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/capability.h>
#include <pwd.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

int
privs_plan(const struct config *cfg, struct privs *p, char *why)
{
	struct passwd *pw;

	memset(p, 0, sizeof(*p));
	if (geteuid() != 0)
		return 0;
	pw = getpwnam(cfg->user);
	if (pw == NULL) {
		if (cfg->user_set) {
			why_set(why,
			    "user \"%s\" does not exist (create it, e.g. "
			    "useradd --system %s, or set user = root)",
			    cfg->user, cfg->user);
			return -1;
		}
		log_warn("main",
		    "running as root: the user \"%s\" does not exist "
		    "(create it with useradd --system %s, or set user)",
		    cfg->user, cfg->user);
		return 0;
	}
	if (pw->pw_uid == 0)
		return 0; /* user = root: stay root, as asked */
	p->drop = true;
	p->uid = pw->pw_uid;
	p->gid = pw->pw_gid;
	snprintf(p->name, sizeof(p->name), "%s", cfg->user);
	return 0;
}

/*
 * In a folder shared with its group (shared_file_mode), give the group the
 * owner's rights on the files sluice makes there.  The database is created
 * here when it does not exist: SQLite makes its WAL and shared-memory files,
 * which come and go, with the database's mode.  Files left with narrower
 * modes (by an older version) are widened when this uid may.
 */
static void
share_files(const char *const *files)
{
	struct stat st;
	mode_t want;
	int i, fd;

	want = shared_file_mode(files[0], 0600);
	if (want == 0600)
		return; /* not a shared folder */
	fd = open(files[0], O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, want);
	if (fd >= 0) {
		(void)fchmod(fd, want); /* whatever the umask */
		close(fd);
	}
	for (i = 0; files[i] != NULL; i++) {
		if (lstat(files[i], &st) != 0 || !S_ISREG(st.st_mode))
			continue;
		want = shared_file_mode(files[i], st.st_mode & 07777);
		if (want == (st.st_mode & 07777))
			continue;
		if (chmod(files[i], want) != 0)
			log_warn("main",
			    "%s (uid %ld, mode %04o) cannot be shared with "
			    "the folder's group: %s",
			    files[i], (long)st.st_uid,
			    (unsigned)(st.st_mode & 07777), strerror(errno));
	}
}

void
privs_prepare_dir(const struct privs *p, const char *dir, bool created,
    const char *const *files)
{
	struct stat st;
	int i;

	share_files(files);
	if (!p->drop)
		return;
	if (created && chown(dir, p->uid, p->gid) != 0)
		log_warn("main", "chown %s: %s", dir, strerror(errno));
	for (i = 0; files[i] != NULL; i++) {
		if (lstat(files[i], &st) != 0 || !S_ISREG(st.st_mode) ||
		    st.st_uid != 0)
			continue;
		if (chown(files[i], p->uid, p->gid) != 0)
			log_warn(
			    "main", "chown %s: %s", files[i], strerror(errno));
	}
}

/* Keep CAP_NET_BIND_SERVICE alone, permitted and effective. */
static int
keep_bind_cap(char *why)
{
	struct __user_cap_header_struct hdr;
	struct __user_cap_data_struct data[2];

	memset(&hdr, 0, sizeof(hdr));
	memset(data, 0, sizeof(data));
	hdr.version = _LINUX_CAPABILITY_VERSION_3;
	data[0].permitted = data[0].effective = 1u << CAP_NET_BIND_SERVICE;
	if (syscall(SYS_capset, &hdr, data) != 0) {
		why_set(why, "capset: %s", strerror(errno));
		return -1;
	}
	return 0;
}

int
privs_drop(const struct privs *p, char *why)
{
	if (!p->drop)
		return 0;
	if (prctl(PR_SET_KEEPCAPS, 1L, 0L, 0L, 0L) != 0) {
		why_set(why, "prctl(PR_SET_KEEPCAPS): %s", strerror(errno));
		return -1;
	}
	if (initgroups(p->name, p->gid) != 0 || setgid(p->gid) != 0 ||
	    setuid(p->uid) != 0) {
		why_set(why, "cannot become user %s (uid %ld): %s", p->name,
		    (long)p->uid, strerror(errno));
		return -1;
	}
	(void)prctl(PR_SET_KEEPCAPS, 0L, 0L, 0L, 0L);
	if (setuid(0) == 0) { /* never: root must be gone for good */
		why_set(why, "could still become root after dropping it");
		return -1;
	}
	if (keep_bind_cap(why) != 0)
		return -1;
	log_info("main", "running as user %s (uid %ld, gid %ld)", p->name,
	    (long)p->uid, (long)p->gid);
	return 0;
}
