/*
 * privs.h - started as root, sluice binds its ports, reads its keys, then
 * serves as `user` (default "sluice"), keeping only the capability to
 * bind ports below 1024 (CAP_NET_BIND_SERVICE) so that a reload can open
 * a new listener on port 25.
 *
 * Threads: main thread only, before any other thread starts.
 */
#ifndef SLUICE_PRIVS_H
#define SLUICE_PRIVS_H

#include <stdbool.h>
#include <sys/types.h>

#include "config.h"

struct privs {
	bool drop; /* running as root and `user` is someone else */
	uid_t uid;
	gid_t gid;
	char name[64];
};

/*
 * Decide what to become.  Not root: nothing to do.  Root with a `user`
 * that does not exist: an error when the configuration names it, a
 * warning (and staying root) for the default "sluice", so that a first
 * `make run` as root works before the user is created.  -1 with `why`.
 */
int privs_plan(const struct config *cfg, struct privs *p, char *why);

/*
 * Give the queue's folder `dir` to the user when sluice just created it
 * (`created`), and those of `files` (NULL-terminated: the database first,
 * its WAL and shared-memory files, the self-signed key pair) that root
 * owns.  In a folder its group may write (shared_file_mode in util.h: an
 * OpenShift volume), whoever runs: create the database with mode 0660 if
 * it is missing, and give the group the owner's rights on those files.
 */
void privs_prepare_dir(const struct privs *p, const char *dir, bool created,
    const char *const *files);

/* Become the user (groups, gid, uid), keeping CAP_NET_BIND_SERVICE. */
int privs_drop(const struct privs *p, char *why);

#endif
