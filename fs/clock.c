/* clock.c: timespec arithmetic and monotonic condition variables, shared by
 * the store, the mount and the stats writer. */
#include "clock.h"

struct timespec clock_add(struct timespec t, double seconds)
{
	time_t whole = (time_t)seconds;
	long nanoseconds = (long)((seconds - (double)whole) * 1e9);

	t.tv_sec += whole;
	t.tv_nsec += nanoseconds;
	if (t.tv_nsec >= 1000000000L) {
		t.tv_sec++;
		t.tv_nsec -= 1000000000L;
	}
	return t;
}

struct timespec clock_after(clockid_t clock, double seconds)
{
	struct timespec now;
	clock_gettime(clock, &now);
	return clock_add(now, seconds);
}

int clock_compare(const struct timespec *a, const struct timespec *b)
{
	if (a->tv_sec != b->tv_sec)
		return a->tv_sec < b->tv_sec ? -1 : 1;
	if (a->tv_nsec != b->tv_nsec)
		return a->tv_nsec < b->tv_nsec ? -1 : 1;
	return 0;
}

struct timespec clock_difference(const struct timespec *later, const struct timespec *earlier)
{
	struct timespec d = {later->tv_sec - earlier->tv_sec, later->tv_nsec - earlier->tv_nsec};
	if (d.tv_nsec < 0) {
		d.tv_sec--;
		d.tv_nsec += 1000000000L;
	}
	if (d.tv_sec < 0)
		d.tv_sec = d.tv_nsec = 0;
	return d;
}

void clock_condition_init(pthread_cond_t *condition)
{
	pthread_condattr_t attributes;

	pthread_condattr_init(&attributes);
	pthread_condattr_setclock(&attributes, CLOCK_MONOTONIC);
	pthread_cond_init(condition, &attributes);
	pthread_condattr_destroy(&attributes);
}
