/* sysv.h: the System V semaphore calls semfs needs, one set of one semaphore
 * per semfs semaphore. Every function returns a value >= 0 or -errno. The
 * value is only ever moved with semop deltas, never SETVAL, which would erase
 * the kernel's undo records of units held with SEM_UNDO. */
#ifndef SEMFS_SYSV_H
#define SEMFS_SYSV_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>
#include <time.h>

/* Create a new set with IPC_EXCL at ftok(path, tag) for tag 1..255, then at
 * random keys: ftok keeps only 16 bits of the inode, so keys collide. */
int sysv_create(const char *path, int permissions, key_t *key, int *semid);

/* Create a set at exactly `key` (after a reboot). -EEXIST if taken. */
int sysv_create_at(key_t key, int permissions, int *semid);

/* Find the existing set at `key`; -ENOENT if none, -EINVAL if it is not a
 * one-semaphore set created by `creator` (so not ours). */
int sysv_attach(key_t key, uid_t creator, int *semid);

int sysv_value(int semid);
int sysv_last_pid(int semid);
int sysv_waiting(int semid); /* GETNCNT: processes blocked in the kernel */

/* semop of `delta`, never waiting; with_undo for units owned by a session. */
int sysv_adjust(int semid, int delta, bool with_undo);

/* The deltas of `steps` (plain units) as one semop: applied in turn, all or
 * none, IPC_NOWAIT. -EAGAIN, or -E2BIG past SYSV_STEPS_MAX or the kernel's
 * SEMOPM (/proc/sys/kernel/sem, 500 by default). */
#define SYSV_STEPS_MAX 64
int sysv_adjust_steps(int semid, const signed char *steps, size_t count);

/* Take one unit with SEM_UNDO, sleeping up to `timeout` (NULL: forever).
 * -EAGAIN on timeout, -EINTR on a signal, -EIDRM if the set went away. */
int sysv_take(int semid, const struct timespec *timeout);

/* Move one held unit between "undo" (returned if the daemon dies) and "plain"
 * (outlives everything), atomically: the value never changes. */
int sysv_undo_to_plain(int semid);
int sysv_plain_to_undo(int semid); /* the reverse, as atomically */

/* The set admits whom the file admits: owner, group and the file's
 * read/write bits as SysV read/alter. */
int sysv_set_owner(int semid, uid_t uid, gid_t gid, mode_t mode);
int sysv_remove(int semid);

/* Every set of the IPC namespace in one read of /proc/sysvipc/sem (~0.5 us a
 * set, against ~1.5 us for a GETVAL of each): `each` gets its semid and the
 * later of its otime and ctime, in seconds. Every change of a value stamps
 * its set (semop and the undo at a process's exit: otime; SETVAL, SETALL,
 * IPC_SET: ctime), with the second it happened in; a change after this call
 * began has a stamp >= *settled. -ENOTSUP: the file is not in the format
 * known here; -EPROTO: a line is not. */
int sysv_stamps(void (*each)(void *arg, int semid, long long stamp), void *arg, long long *settled);

#endif
