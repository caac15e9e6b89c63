/* backend.h: the seam between the store and where units really live.
 *
 * Per semaphore a backend keeps a counter — the units at home — that the
 * store moves only by deltas, lets a thread sleep until a unit comes home,
 * and shows what others did to it (the value, the last writer). The store's
 * rules (who holds what, FIFO order, tokens, the journal) sit above it and do
 * not know which backend runs; neither do the mount and the server. The
 * System V backend (sysv.c) is the first implementation; tests use an
 * in-memory one; the cluster backend will be another.
 *
 * Handles are ints. Every call returns a value >= 0 or -errno; -EIDRM or
 * -EINVAL: the handle is gone (removed from outside). */
#ifndef SEMFS_BACKEND_H
#define SEMFS_BACKEND_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>
#include <time.h>

struct backend_ops {
	/* A new counter at value 0 (the store then adds the limit). `path`
	 * seeds the key; `key` is what a restart finds it by. */
	int (*create)(void *self, const char *path, int permissions, key_t *key, int *handle);
	int (*create_at)(void *self, key_t key, int permissions, int *handle); /* -EEXIST */
	/* The counter at `key` if it is ours (made by `creator`): -ENOENT, or
	 * -EINVAL when it is somebody else's. */
	int (*attach)(void *self, key_t key, uid_t creator, int *handle);
	int (*value)(void *self, int handle);
	int (*last_pid)(void *self, int handle); /* who moved it last, 0 if unknown */
	/* How many sleep in a take on it now, in any process (GETNCNT). NULL:
	 * unknown (units then always go home through the backend). */
	int (*waiting)(void *self, int handle);
	/* When every counter last changed, in one look, so that a monitor of
	 * outside changes asks only those that did: `each` per counter with
	 * its stamp; a change after the look began gets a stamp >= *settled
	 * (stamps may have other counters than the store's). NULL: unknown (the
	 * monitor then asks every counter each time). */
	int (*stamps)(void *self, void (*each)(void *arg, int handle, long long stamp), void *arg,
		      long long *settled);
	/* Move by `delta` without waiting (-EAGAIN if it would go below 0);
	 * with_undo: the units belong to this process's life. */
	int (*adjust)(void *self, int handle, int delta, bool with_undo);
	/* Move by each of `steps` (each +1 or -1, plain units) in turn, all or
	 * none, without waiting: -EAGAIN if a step would go below 0, -E2BIG if
	 * the backend takes fewer at once. NULL: one adjust at a time only. */
	int (*adjust_steps)(void *self, int handle, const signed char *steps, size_t count);
	/* Take one unit (with undo), sleeping up to `timeout` (NULL: forever):
	 * -EAGAIN on timeout, -EINTR when the sleeping thread is signalled. */
	int (*take)(void *self, int handle, const struct timespec *timeout);
	/* One held unit from "undo" to "plain" (outlives the process), and
	 * back: the value does not move. */
	int (*undo_to_plain)(void *self, int handle);
	int (*plain_to_undo)(void *self, int handle);
	/* Who may touch it from outside: the file's owner, group and mode. */
	int (*set_owner)(void *self, int handle, uid_t uid, gid_t gid, mode_t mode);
	int (*remove)(void *self, int handle);
};

struct backend {
	const char *name;
	const struct backend_ops *ops;
	void *self;
};

/* System V semaphore sets, one per semaphore (sysv.c). */
extern const struct backend backend_sysv;

#endif
