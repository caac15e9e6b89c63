/* fake_backend.c: see fake_backend.h. */
#include "fake_backend.h"

#include <errno.h>
#include <pthread.h>
#include <string.h>
#include <time.h>

/* A handle is slot + FAKE_COUNTERS * generation, as a SysV semid carries a
 * sequence number: a stale handle never reaches a slot's next counter. */
static struct counter {
	bool used;
	key_t key;
	int value;
	int last_pid;
	int generation;
	int sleepers;	      /* in fake_take now */
	int outside_sleepers; /* another "process" waiting */
	int moves;	      /* successful moves, any kind */
	int asks;	      /* values asked through the backend */
	int undo;	      /* units "this process" holds with undo (semadj) */
	long long stamp;      /* the stamp clock at its last change */
} counters[FAKE_COUNTERS];
static long long stamp_clock; /* one tick a change: a "second" per change */
static bool stamps_off;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static size_t steps_max = 1000; /* adjust_steps: more is E2BIG */

void fake_reset(void)
{
	steps_max = 1000;
	stamps_off = false;
	pthread_mutex_lock(&lock);
	for (int i = 0; i < FAKE_COUNTERS; i++)
		counters[i].used = false; /* generations go on */
	pthread_mutex_unlock(&lock);
}

static struct counter *counter_of(int handle)
{
	if (handle < 0)
		return NULL;
	struct counter *c = &counters[handle % FAKE_COUNTERS];
	return c->used && c->generation == handle / FAKE_COUNTERS ? c : NULL;
}

static int handle_of(int slot)
{
	return slot + FAKE_COUNTERS * counters[slot].generation;
}

static int allocate(key_t key, int *handle)
{
	for (int i = 0; i < FAKE_COUNTERS; i++) {
		if (!counters[i].used) {
			int generation = counters[i].generation + 1;
			counters[i] =
			    (struct counter){.used = true, .key = key, .stamp = ++stamp_clock};
			counters[i].generation = generation;
			*handle = handle_of(i);
			return 0;
		}
	}
	return -ENOSPC;
}

static int fake_create_at(void *self, key_t key, int permissions, int *handle)
{
	pthread_mutex_lock(&lock);
	int r = 0;
	for (int i = 0; i < FAKE_COUNTERS; i++)
		if (counters[i].used && counters[i].key == key)
			r = -EEXIST;
	if (r == 0)
		r = allocate(key, handle);
	pthread_mutex_unlock(&lock);
	return r;
}

static int fake_create(void *self, const char *path, int permissions, key_t *key, int *handle)
{
	static key_t next = 0x7e000000;
	for (;;) {
		pthread_mutex_lock(&lock);
		key_t candidate = next++;
		pthread_mutex_unlock(&lock);
		int r = fake_create_at(self, candidate, permissions, handle);
		if (r != -EEXIST) {
			if (r == 0)
				*key = candidate;
			return r;
		}
	}
}

static int fake_attach(void *self, key_t key, uid_t creator, int *handle)
{
	pthread_mutex_lock(&lock);
	int r = -ENOENT;
	for (int i = 0; i < FAKE_COUNTERS; i++)
		if (counters[i].used && counters[i].key == key) {
			*handle = handle_of(i);
			r = 0;
		}
	pthread_mutex_unlock(&lock);
	return r;
}

static int value_of(int handle, bool asked)
{
	pthread_mutex_lock(&lock);
	struct counter *c = counter_of(handle);
	int r = c ? c->value : -EIDRM;
	if (c && asked)
		c->asks++;
	pthread_mutex_unlock(&lock);
	return r;
}

static int fake_value_of(void *self, int handle)
{
	return value_of(handle, true);
}

int fake_value(int handle)
{
	return value_of(handle, false);
}

int fake_asks(int handle)
{
	pthread_mutex_lock(&lock);
	struct counter *c = counter_of(handle);
	int r = c ? c->asks : -EIDRM;
	pthread_mutex_unlock(&lock);
	return r;
}

void fake_stamps_off(bool off)
{
	stamps_off = off;
}

static int fake_stamps(void *self, void (*each)(void *arg, int handle, long long stamp), void *arg,
		       long long *settled)
{
	if (stamps_off)
		return -ENOTSUP;
	pthread_mutex_lock(&lock);
	*settled = stamp_clock + 1;
	for (int i = 0; i < FAKE_COUNTERS; i++)
		if (counters[i].used)
			each(arg, handle_of(i), counters[i].stamp);
	pthread_mutex_unlock(&lock);
	return 0;
}

int fake_live(void)
{
	int live = 0;
	pthread_mutex_lock(&lock);
	for (int i = 0; i < FAKE_COUNTERS; i++)
		live += counters[i].used;
	pthread_mutex_unlock(&lock);
	return live;
}

static int fake_last_pid(void *self, int handle)
{
	pthread_mutex_lock(&lock);
	struct counter *c = counter_of(handle);
	int r = c ? c->last_pid : -EIDRM;
	pthread_mutex_unlock(&lock);
	return r;
}

static int move(int handle, int delta, int pid)
{
	pthread_mutex_lock(&lock);
	struct counter *c = counter_of(handle);
	int r = !c ? -EIDRM : c->value + delta < 0 ? -EAGAIN : 0;
	if (r == 0) {
		c->value += delta;
		c->last_pid = pid;
		c->moves++;
		c->stamp = ++stamp_clock;
	}
	pthread_mutex_unlock(&lock);
	return r;
}

static void count_undo(int handle, int units)
{
	pthread_mutex_lock(&lock);
	struct counter *c = counter_of(handle);
	if (c)
		c->undo += units;
	pthread_mutex_unlock(&lock);
}

static int fake_adjust(void *self, int handle, int delta, bool with_undo)
{
	int r = move(handle, delta, 1);
	if (r == 0 && with_undo)
		count_undo(handle, -delta); /* taking with undo: one more held */
	return r;
}

int fake_undo_units(int handle)
{
	pthread_mutex_lock(&lock);
	struct counter *c = counter_of(handle);
	int r = c ? c->undo : -EIDRM;
	pthread_mutex_unlock(&lock);
	return r;
}

static int before_steps_handle = -1, before_steps_delta;

void fake_outside_adjust_before_steps(int handle, int delta)
{
	pthread_mutex_lock(&lock);
	before_steps_handle = handle;
	before_steps_delta = delta;
	pthread_mutex_unlock(&lock);
}

void fake_steps_max(size_t max)
{
	steps_max = max;
}

/* All or none, like one semop with several operations. */
static int fake_adjust_steps(void *self, int handle, const signed char *steps, size_t count)
{
	if (count > steps_max)
		return -E2BIG; /* as semop past SEMOPM */
	pthread_mutex_lock(&lock);
	struct counter *c = counter_of(handle);
	if (c && handle == before_steps_handle) {
		c->value += before_steps_delta;
		c->last_pid = 4242;
		c->stamp = ++stamp_clock;
		before_steps_handle = -1;
	}
	int r = c ? 0 : -EIDRM, value = c ? c->value : 0;
	for (size_t i = 0; r == 0 && i < count; i++)
		if ((value += steps[i]) < 0)
			r = -EAGAIN;
	if (r == 0) {
		c->value = value;
		c->last_pid = 1;
		c->moves++;
		c->stamp = ++stamp_clock;
	}
	pthread_mutex_unlock(&lock);
	return r;
}

void fake_outside_adjust(int handle, int delta)
{
	(void)move(handle, delta, 4242);
}

/* Sleeps in short slices: nanosleep ends early on the store's kick signal,
 * as semtimedop does, so the helper's wake-up works unchanged. */
static void count_sleeper(int handle, int delta)
{
	pthread_mutex_lock(&lock);
	struct counter *c = counter_of(handle);
	if (c)
		c->sleepers += delta;
	pthread_mutex_unlock(&lock);
}

static int take_sleeping(int handle, const struct timespec *timeout);

static int fake_take(void *self, int handle, const struct timespec *timeout)
{
	count_sleeper(handle, 1);
	int r = take_sleeping(handle, timeout);
	count_sleeper(handle, -1);
	if (r == 0)
		count_undo(handle, 1);
	return r;
}

static int fake_waiting(void *self, int handle)
{
	pthread_mutex_lock(&lock);
	struct counter *c = counter_of(handle);
	int r = c ? c->sleepers + c->outside_sleepers : -EIDRM;
	pthread_mutex_unlock(&lock);
	return r;
}

void fake_outside_sleepers(int handle, int count)
{
	pthread_mutex_lock(&lock);
	struct counter *c = counter_of(handle);
	if (c)
		c->outside_sleepers = count;
	pthread_mutex_unlock(&lock);
}

int fake_moves(int handle)
{
	pthread_mutex_lock(&lock);
	struct counter *c = counter_of(handle);
	int r = c ? c->moves : -EIDRM;
	pthread_mutex_unlock(&lock);
	return r;
}

static int take_sleeping(int handle, const struct timespec *timeout)
{
	struct timespec start;
	clock_gettime(CLOCK_MONOTONIC, &start);
	for (;;) {
		int r = move(handle, -1, 1);
		if (r != -EAGAIN)
			return r;
		struct timespec now;
		clock_gettime(CLOCK_MONOTONIC, &now);
		double waited = (double)(now.tv_sec - start.tv_sec) +
				(double)(now.tv_nsec - start.tv_nsec) / 1e9;
		if (timeout && waited >= (double)timeout->tv_sec + (double)timeout->tv_nsec / 1e9)
			return -EAGAIN;
		struct timespec slice = {0, 2000000};
		if (nanosleep(&slice, NULL) < 0 && errno == EINTR)
			return -EINTR;
	}
}

/* Like the kernel's: the value does not move, the undo record does. */
static int change_kind(int handle, int undo)
{
	pthread_mutex_lock(&lock);
	struct counter *c = counter_of(handle);
	int r = !c ? -EIDRM : c->undo + undo < 0 ? -EINVAL : 0;
	if (r == 0) {
		c->undo += undo;
		c->stamp = ++stamp_clock;
	}
	pthread_mutex_unlock(&lock);
	return r;
}

static int fake_undo_to_plain(void *self, int handle)
{
	return change_kind(handle, -1);
}

static int fake_plain_to_undo(void *self, int handle)
{
	return change_kind(handle, 1);
}

static int fake_set_owner(void *self, int handle, uid_t uid, gid_t gid, mode_t mode)
{
	return fake_value_of(self, handle) < 0 ? -EIDRM : 0;
}

static int fake_remove_of(void *self, int handle)
{
	pthread_mutex_lock(&lock);
	struct counter *c = counter_of(handle);
	if (c)
		c->used = false;
	pthread_mutex_unlock(&lock);
	return c ? 0 : -EINVAL;
}

void fake_remove(int handle)
{
	(void)fake_remove_of(NULL, handle);
}

static const struct backend_ops fake_ops = {
    .create = fake_create,
    .create_at = fake_create_at,
    .attach = fake_attach,
    .value = fake_value_of,
    .last_pid = fake_last_pid,
    .waiting = fake_waiting,
    .stamps = fake_stamps,
    .adjust = fake_adjust,
    .adjust_steps = fake_adjust_steps,
    .take = fake_take,
    .undo_to_plain = fake_undo_to_plain,
    .plain_to_undo = fake_plain_to_undo,
    .set_owner = fake_set_owner,
    .remove = fake_remove_of,
};

const struct backend fake_backend = {.name = "fake", .ops = &fake_ops, .self = NULL};
