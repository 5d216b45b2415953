/*
 * queueid.c - making and checking queue IDs (see queueid.h).
 */
#include "queueid.h"

#include <string.h>

/* Crockford's base32, in the order of its values. */
static const char alphabet[] = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";

#define TIME_CHARS 11

void
queue_id_make(char *buf, uint64_t wall_us, uint32_t random)
{
	int i;

	for (i = TIME_CHARS - 1; i >= 0; i--) {
		buf[i] = alphabet[wall_us & 31];
		wall_us >>= 5;
	}
	for (i = TIME_CHARS; i < QUEUE_ID_LEN; i++) {
		buf[i] = alphabet[random & 31];
		random >>= 5;
	}
	buf[QUEUE_ID_LEN] = '\0';
}

bool
queue_id_valid(const char *s)
{
	size_t i;

	for (i = 0; i < QUEUE_ID_LEN; i++)
		if (s[i] == '\0' || strchr(alphabet, s[i]) == NULL)
			return false;
	return s[i] == '\0';
}
