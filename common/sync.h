/*
 * sync.h - the project's mutexes and condition variables, and BUG_ON.
 *
 * Every lock in sluice goes through these wrappers so that debug builds
 * (SLUICE_DEBUG: make asan, make tsan) catch misuse where it happens:
 * mutexes are PTHREAD_MUTEX_ERRORCHECK there, and a lock or unlock that
 * fails (relocking a held mutex, unlocking one the thread does not hold)
 * stops the process with the file and line.  Release builds use plain
 * mutexes and ignore the results, as before.
 *
 * Condition variables run on CLOCK_MONOTONIC, the clock of now_ms(), so a
 * timed wait takes a now_ms() deadline and is not moved by a change of
 * the wall clock.
 *
 * BUG_ON(cond) states an invariant written down in a file's header: in
 * debug builds a true `cond` is a bug in sluice (never a peer's doing)
 * and aborts with the condition's text; in release builds it costs
 * nothing (the condition is compiled but not evaluated).
 *
 * Threads: all functions may be called from any thread.
 */
#ifndef SLUICE_SYNC_H
#define SLUICE_SYNC_H

#include <pthread.h>
#include <stdint.h>

#ifdef SLUICE_DEBUG
#define BUG_ON(cond) ((cond) ? sync_bug(__FILE__, __LINE__, #cond) : (void)0)
#else
#define BUG_ON(cond) ((void)sizeof(!(cond)))
#endif

/* Report a broken invariant on stderr and abort. */
_Noreturn void sync_bug(const char *file, int line, const char *what);

void mutex_init(pthread_mutex_t *mu);
void mutex_destroy(pthread_mutex_t *mu);
void mutex_lock_at(pthread_mutex_t *mu, const char *file, int line);
void mutex_unlock_at(pthread_mutex_t *mu, const char *file, int line);
#define mutex_lock(mu) mutex_lock_at((mu), __FILE__, __LINE__)
#define mutex_unlock(mu) mutex_unlock_at((mu), __FILE__, __LINE__)

/* A condition variable on CLOCK_MONOTONIC. */
void cond_init(pthread_cond_t *cv);
void cond_destroy(pthread_cond_t *cv);
void cond_wait(pthread_cond_t *cv, pthread_mutex_t *mu);

/*
 * Wait until signalled or until `deadline_ms` (a now_ms() value) passes.
 * Like pthread_cond_wait it may return early: callers re-check their
 * condition and the time.
 */
void cond_wait_until(
    pthread_cond_t *cv, pthread_mutex_t *mu, int64_t deadline_ms);

#endif
