/*
 * queueid.h - queue IDs: QUEUE_ID_LEN characters of Crockford's base32
 * (no I, L, O or U, so an ID reads aloud well), the first 11 the
 * microseconds of the wall clock (IDs sort by time), the last 5 random.
 * Made by the queue, checked by the queue CLI before it looks one up.
 *
 * Threads: pure functions; callable from any thread.
 */
#ifndef SLUICE_QUEUEID_H
#define SLUICE_QUEUEID_H

#include <stdbool.h>
#include <stdint.h>

#include "envelope.h"

/* The ID of a message received at `wall_us` (Unix microseconds), with
 * `random` for the last characters, into buf[QUEUE_ID_LEN + 1]. */
void queue_id_make(char *buf, uint64_t wall_us, uint32_t random);

/* True when `s` is a well-formed queue ID (upper case). */
bool queue_id_valid(const char *s);

#endif
