/*
 * fuzz.h - shared by the fuzz targets in tests/fuzz/ (see
 * docs/fuzzing.md).  Each target defines LLVMFuzzerTestOneInput and is
 * built twice: with libFuzzer by `make fuzz`, and with replay.c's main() by
 * `make test`, which feeds it every file of its seed corpus once.
 *
 * A target checks properties, not just the absence of crashes: FUZZ_ASSERT
 * prints the property that failed and aborts, which libFuzzer reports as
 * a crash (and saves the input) and the replay as a FAIL line.
 *
 * fuzz_rng turns some input octets into a deterministic sequence, so that
 * a choice the fuzzer makes (where to split a stream, how big a buffer is)
 * is part of the input and replays exactly.
 */
#ifndef SLUICE_FUZZ_H
#define SLUICE_FUZZ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static inline void __attribute__((noreturn))
fuzz_fail(const char *file, int line, const char *cond, const char *what)
{
	fprintf(stderr, "%s:%d: property failed: %s (%s)\n", file, line, what,
	    cond);
	fflush(stderr);
	abort();
}

#define FUZZ_ASSERT(cond, what)                                                \
	do {                                                                   \
		if (!(cond))                                                   \
			fuzz_fail(__FILE__, __LINE__, #cond, what);            \
	} while (0)

/* A growing byte buffer for outputs under comparison. */
struct fuzz_buf {
	char *p;
	size_t len, cap;
};

static inline void
fuzz_buf_add(struct fuzz_buf *b, const void *p, size_t n)
{
	if (n > SIZE_MAX / 4 || b->len > SIZE_MAX / 4)
		abort();
	if (b->len + n + 1 > b->cap) {
		b->cap = (b->len + n + 1) * 2;
		b->p = realloc(b->p, b->cap);
		if (b->p == NULL)
			abort();
	}
	if (n > 0)
		memcpy(b->p + b->len, p, n);
	b->len += n;
	b->p[b->len] = '\0';
}

static inline void
fuzz_buf_free(struct fuzz_buf *b)
{
	free(b->p);
	b->p = NULL;
	b->len = b->cap = 0;
}

static inline bool
fuzz_buf_eq(const struct fuzz_buf *a, const struct fuzz_buf *b)
{
	return a->len == b->len &&
	       (a->len == 0 || memcmp(a->p, b->p, a->len) == 0);
}

/* xorshift64*, seeded from input octets. */
struct fuzz_rng {
	uint64_t s;
};

static inline void
fuzz_rng_seed(struct fuzz_rng *r, const uint8_t *p, size_t n)
{
	size_t i;

	r->s = 0x9e3779b97f4a7c15ULL;
	for (i = 0; i < n; i++)
		r->s = (r->s ^ p[i]) * 0x100000001b3ULL;
	if (r->s == 0)
		r->s = 1;
}

static inline uint32_t
fuzz_rng_next(struct fuzz_rng *r)
{
	r->s ^= r->s >> 12;
	r->s ^= r->s << 25;
	r->s ^= r->s >> 27;
	return (uint32_t)((r->s * 2685821657736338717ULL) >> 32);
}

/*
 * The size of the next piece of a stream with `left` octets to go: mostly
 * small (0 to 3 octets, where state carried between calls matters), some
 * medium, some the whole rest.
 */
static inline size_t
fuzz_piece(struct fuzz_rng *r, size_t left)
{
	uint32_t x = fuzz_rng_next(r);
	size_t n;

	switch (x % 8) {
	case 0:
	case 1:
	case 2:
	case 3:
		n = (x >> 3) % 4;
		break;
	case 4:
	case 5:
		n = (x >> 3) % 64;
		break;
	case 6:
		n = (x >> 3) % 1024;
		break;
	default:
		n = left;
		break;
	}
	return n < left ? n : left;
}

#endif
