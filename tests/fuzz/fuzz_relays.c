/*
 * fuzz_relays.c - the sender_relays table (queue/relays.c) from any file
 * content.  Input: the file.
 *
 * Properties: a table loaded, or a clear "FILE:LINE: ..." reason; every
 * relay has a lower-case sender (an address, @domain or <>), a port
 * within 1..65535, a site key "[host]:port[ user]", and a user exactly
 * when it has a password; lookups by each relay's sender find a relay.
 */
#include "fuzz.h"
#include "relays.h"
#include "util.h"

#include <unistd.h>

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char path[] = "/tmp/sluice-fuzz-relays-XXXXXX", why[WHY_MAX];
	struct relays *t;
	int fd, i;

	if (size > 65536)
		return 0;
	fd = mkstemp(path);
	if (fd < 0 || write(fd, data, size) != (ssize_t)size)
		abort();
	close(fd);
	why[0] = '\0';
	t = relays_load(path, why);
	unlink(path);
	if (t == NULL) {
		FUZZ_ASSERT(strncmp(why, path, strlen(path)) == 0 &&
		                why[strlen(path)] == ':',
		    "a refused table says FILE:LINE");
		return 0;
	}
	for (i = 0; i < relays_count(t); i++) {
		const struct relay *r = relays_at(t, i);
		const char *s = r->sender, *p;

		for (p = s; *p != '\0'; p++)
			FUZZ_ASSERT(
			    *p < 'A' || *p > 'Z', "senders are lower case");
		FUZZ_ASSERT(strcmp(s, "<>") == 0 || strchr(s, '@') != NULL,
		    "a sender is an address, @domain or <>");
		FUZZ_ASSERT(r->to.port >= 1 && r->to.port <= 65535,
		    "a port within 1..65535");
		FUZZ_ASSERT(r->key[0] == '[', "a site key [host]:port");
		FUZZ_ASSERT((r->user == NULL) == (r->password == NULL),
		    "a user exactly when a password");
		FUZZ_ASSERT(
		    relays_for(t, strcmp(s, "<>") == 0 ? "" : s) != NULL,
		    "each sender finds a relay");
	}
	relays_free(t);
	return 0;
}
