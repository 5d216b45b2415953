/*
 * sync.c - mutexes, condition variables and BUG_ON (see sync.h).
 */
#include "sync.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <time.h>

void
sync_bug(const char *file, int line, const char *what)
{
	fprintf(stderr, "sluice: BUG at %s:%d: %s\n", file, line, what);
	abort();
}

void
mutex_init(pthread_mutex_t *mu)
{
	pthread_mutexattr_t attr;

	pthread_mutexattr_init(&attr);
#ifdef SLUICE_DEBUG
	pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_ERRORCHECK);
#endif
	if (pthread_mutex_init(mu, &attr) != 0)
		sync_bug(__FILE__, __LINE__, "pthread_mutex_init");
	pthread_mutexattr_destroy(&attr);
}

void
mutex_destroy(pthread_mutex_t *mu)
{
	int rc = pthread_mutex_destroy(mu);

	BUG_ON(rc != 0);
	(void)rc;
}

void
mutex_lock_at(pthread_mutex_t *mu, const char *file, int line)
{
	int rc = pthread_mutex_lock(mu);

#ifdef SLUICE_DEBUG
	if (rc != 0)
		sync_bug(file, line, strerror(rc));
#else
	(void)rc;
	(void)file;
	(void)line;
#endif
}

void
mutex_unlock_at(pthread_mutex_t *mu, const char *file, int line)
{
	int rc = pthread_mutex_unlock(mu);

#ifdef SLUICE_DEBUG
	if (rc != 0)
		sync_bug(file, line, strerror(rc));
#else
	(void)rc;
	(void)file;
	(void)line;
#endif
}

void
cond_init(pthread_cond_t *cv)
{
	pthread_condattr_t attr;

	pthread_condattr_init(&attr);
	pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
	if (pthread_cond_init(cv, &attr) != 0)
		sync_bug(__FILE__, __LINE__, "pthread_cond_init");
	pthread_condattr_destroy(&attr);
}

void
cond_destroy(pthread_cond_t *cv)
{
	pthread_cond_destroy(cv);
}

void
cond_wait(pthread_cond_t *cv, pthread_mutex_t *mu)
{
	int rc = pthread_cond_wait(cv, mu);

	BUG_ON(rc != 0);
	(void)rc;
}

void
cond_wait_until(pthread_cond_t *cv, pthread_mutex_t *mu, int64_t deadline_ms)
{
	struct timespec ts;
	int rc;

	ts.tv_sec = (time_t)(deadline_ms / 1000);
	ts.tv_nsec = (long)(deadline_ms % 1000) * 1000000L;
	rc = pthread_cond_timedwait(cv, mu, &ts);
	BUG_ON(rc != 0 && rc != ETIMEDOUT);
	(void)rc;
}
