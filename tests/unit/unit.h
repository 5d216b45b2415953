/*
 * unit.h - a tiny table-driven unit test kit.  Each check prints one line,
 * "ok - name" or "FAIL - name: detail", which tests/run.sh counts; main()
 * returns non-zero when any check failed.
 */
#ifndef SLUICE_UNIT_H
#define SLUICE_UNIT_H

#include <stdio.h>
#include <string.h>

static int unit_failed;

#define CHECK(cond, ...)                                                       \
	do {                                                                   \
		if (cond) {                                                    \
			printf("ok - ");                                       \
			printf(__VA_ARGS__);                                   \
			printf("\n");                                          \
		} else {                                                       \
			unit_failed++;                                         \
			printf("FAIL - ");                                     \
			printf(__VA_ARGS__);                                   \
			printf(" (%s:%d: %s)\n", __FILE__, __LINE__, #cond);   \
		}                                                              \
	} while (0)

#define UNIT_DONE() return unit_failed ? 1 : 0

#endif
