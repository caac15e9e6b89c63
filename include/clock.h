/* clock.h: timespec arithmetic for deadlines and timeouts. */
#ifndef SEMFS_CLOCK_H
#define SEMFS_CLOCK_H

#include <pthread.h>
#include <time.h>

/* A condition variable whose timed waits take CLOCK_MONOTONIC deadlines, so
 * that a wall-clock jump never stalls or hurries a thread. */
void clock_condition_init(pthread_cond_t *condition);

/* `seconds` (>= 0) after now on `clock`. */
struct timespec clock_after(clockid_t clock, double seconds);
struct timespec clock_add(struct timespec t, double seconds);
int clock_compare(const struct timespec *a, const struct timespec *b);
/* later - earlier, never negative. */
struct timespec clock_difference(const struct timespec *later, const struct timespec *earlier);

#endif
