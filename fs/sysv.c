/* sysv.c: thin wrappers over semget/semop/semctl returning -errno. */
#include "sysv.h"

#include "backend.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ipc.h>
#include <sys/random.h>
#include <sys/sem.h>
#include <unistd.h>

union semun {
	int val;
	struct semid_ds *buf;
	unsigned short *array;
};

static int permissions_of(mode_t mode)
{
	/* File read/write map onto SysV read/alter. */
	return (int)(mode & 0666);
}

int sysv_create_at(key_t key, int permissions, int *semid)
{
	int id = semget(key, 1, IPC_CREAT | IPC_EXCL | permissions_of((mode_t)permissions));
	if (id < 0)
		return -errno;
	*semid = id;
	return 0;
}

/* Where the next search for a free ftok tag starts: after the last tag that
 * worked. A file system hands a freed inode number to the next file made,
 * and the record file a key was derived from is replaced (renamed over) at
 * once: the next new semaphore usually gets the same inode, so the tags up
 * to the last one taken are taken already. A few tags, then random keys:
 * with thousands of semaphores on one reused inode, walking all 255 tags
 * cost 255 semget calls a create. */
#define FTOK_TAGS_TRIED 4
static _Atomic int next_tag = 1;

int sysv_create(const char *path, int permissions, key_t *key, int *semid)
{
	int first = next_tag;
	for (int step = 0; step < FTOK_TAGS_TRIED; step++) {
		int tag = (first - 1 + step) % 255 + 1;
		key_t candidate = ftok(path, tag);
		if (candidate == -1)
			return -errno;
		int r = sysv_create_at(candidate, permissions, semid);
		if (r == 0) {
			*key = candidate;
			next_tag = tag % 255 + 1;
			return 0;
		}
		if (r != -EEXIST)
			return r;
	}
	for (int attempt = 0; attempt < 1000; attempt++) {
		key_t candidate;
		if (getrandom(&candidate, sizeof(candidate), 0) != sizeof(candidate))
			return -EIO;
		if (candidate == IPC_PRIVATE)
			continue;
		int r = sysv_create_at(candidate, permissions, semid);
		if (r == 0) {
			*key = candidate;
			return 0;
		}
		if (r != -EEXIST)
			return r;
	}
	return -ENOSPC;
}

int sysv_attach(key_t key, uid_t creator, int *semid)
{
	struct semid_ds info;
	union semun argument = {.buf = &info};
	int id = semget(key, 0, 0);

	if (id < 0)
		return -errno;
	if (semctl(id, 0, IPC_STAT, argument) < 0)
		return -errno;
	if (info.sem_nsems != 1 || info.sem_perm.cuid != creator)
		return -EINVAL;
	*semid = id;
	return 0;
}

int sysv_value(int semid)
{
	int r = semctl(semid, 0, GETVAL);
	return r < 0 ? -errno : r;
}

int sysv_last_pid(int semid)
{
	int r = semctl(semid, 0, GETPID);
	return r < 0 ? -errno : r;
}

int sysv_waiting(int semid)
{
	int r = semctl(semid, 0, GETNCNT);
	return r < 0 ? -errno : r;
}

int sysv_adjust(int semid, int delta, bool with_undo)
{
	struct sembuf op = {
	    .sem_num = 0,
	    .sem_op = (short)delta,
	    .sem_flg = (short)(IPC_NOWAIT | (with_undo ? SEM_UNDO : 0)),
	};
	if (delta == 0)
		return 0;
	return semop(semid, &op, 1) < 0 ? -errno : 0;
}

int sysv_adjust_steps(int semid, const signed char *steps, size_t count)
{
	struct sembuf ops[SYSV_STEPS_MAX];

	if (count > SYSV_STEPS_MAX)
		return -E2BIG;
	for (size_t i = 0; i < count; i++)
		ops[i] = (struct sembuf){.sem_num = 0, .sem_op = steps[i], .sem_flg = IPC_NOWAIT};
	return semop(semid, ops, count) < 0 ? -errno : 0;
}

int sysv_take(int semid, const struct timespec *timeout)
{
	struct sembuf op = {.sem_num = 0, .sem_op = -1, .sem_flg = SEM_UNDO};
	return semtimedop(semid, &op, 1, timeout) < 0 ? -errno : 0;
}

int sysv_undo_to_plain(int semid)
{
	/* +1 with undo cancels the undo record, -1 plain takes it back: one
	 * atomic semop, so no other process can slip in between. */
	struct sembuf ops[2] = {
	    {.sem_num = 0, .sem_op = 1, .sem_flg = SEM_UNDO | IPC_NOWAIT},
	    {.sem_num = 0, .sem_op = -1, .sem_flg = IPC_NOWAIT},
	};
	return semop(semid, ops, 2) < 0 ? -errno : 0;
}

int sysv_plain_to_undo(int semid)
{
	/* A plain unit comes home and is taken again with undo, in one semop. */
	struct sembuf ops[2] = {
	    {.sem_num = 0, .sem_op = 1, .sem_flg = IPC_NOWAIT},
	    {.sem_num = 0, .sem_op = -1, .sem_flg = SEM_UNDO | IPC_NOWAIT},
	};
	return semop(semid, ops, 2) < 0 ? -errno : 0;
}

int sysv_set_owner(int semid, uid_t uid, gid_t gid, mode_t mode)
{
	struct semid_ds info;
	union semun argument = {.buf = &info};

	if (semctl(semid, 0, IPC_STAT, argument) < 0)
		return -errno;
	info.sem_perm.uid = uid;
	info.sem_perm.gid = gid;
	info.sem_perm.mode = (unsigned short)permissions_of(mode);
	return semctl(semid, 0, IPC_SET, argument) < 0 ? -errno : 0;
}

int sysv_remove(int semid)
{
	return semctl(semid, 0, IPC_RMID) < 0 ? -errno : 0;
}

/* ---- every set's stamps at once ---------------------------------------------- */

#define PROC_SEM	 "/proc/sysvipc/sem"
#define PROC_SEM_COLUMNS 10 /* key semid perms nsems uid gid cuid cgid otime ctime */

/* The header the kernel writes (ipc/sem.c), column by column. */
static bool stamps_header_known(const char *line, const char *end)
{
	static const char *const columns[PROC_SEM_COLUMNS] = {
	    "key", "semid", "perms", "nsems", "uid", "gid", "cuid", "cgid", "otime", "ctime"};
	const char *p = line;
	for (int i = 0; i < PROC_SEM_COLUMNS; i++) {
		while (p < end && *p == ' ')
			p++;
		size_t length = strlen(columns[i]);
		if ((size_t)(end - p) < length || memcmp(p, columns[i], length) != 0)
			return false;
		p += length;
		if (p < end && *p != ' ')
			return false;
	}
	while (p < end && *p == ' ')
		p++;
	return p == end;
}

/* One line of ten integers (the key may be negative). */
static bool stamps_line(const char *p, const char *end, long long fields[PROC_SEM_COLUMNS])
{
	for (int i = 0; i < PROC_SEM_COLUMNS; i++) {
		while (p < end && *p == ' ')
			p++;
		bool negative = p < end && *p == '-';
		if (negative)
			p++;
		if (p == end || *p < '0' || *p > '9')
			return false;
		long long value = 0;
		for (; p < end && *p >= '0' && *p <= '9'; p++) {
			if (value > (LLONG_MAX - 9) / 10)
				return false;
			value = value * 10 + (*p - '0');
		}
		fields[i] = negative ? -value : value;
	}
	while (p < end && *p == ' ')
		p++;
	return p == end;
}

int sysv_stamps(void (*each)(void *arg, int semid, long long stamp), void *arg, long long *settled)
{
	enum { CHUNK = 64 * 1024 };
	struct timespec now;

	/* Before the read: a change after it has at least this second. The
	 * kernel stamps with its coarse clock, which may still be one second
	 * behind ours. */
	clock_gettime(CLOCK_REALTIME, &now);
	*settled = (long long)now.tv_sec - 1;
	char *buffer = malloc(CHUNK);
	if (!buffer)
		return -ENOMEM;
	int fd = open(PROC_SEM, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		free(buffer);
		return -errno;
	}
	size_t kept = 0; /* a line cut by the last read, at the buffer's start */
	bool header = true;
	int r = 0;
	for (;;) {
		ssize_t n = read(fd, buffer + kept, CHUNK - kept);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			r = -errno;
			break;
		}
		if (n == 0) {
			if (kept > 0 || header)
				r = -EPROTO; /* the file ends without a newline */
			break;
		}
		size_t filled = kept + (size_t)n;
		char *line = buffer, *end = buffer + filled, *newline;
		while ((newline = memchr(line, '\n', (size_t)(end - line)))) {
			long long fields[PROC_SEM_COLUMNS];
			if (header) {
				if (!stamps_header_known(line, newline)) {
					r = -ENOTSUP;
					break;
				}
				header = false;
			} else if (!stamps_line(line, newline, fields) || fields[1] < 0 ||
				   fields[1] > INT_MAX) {
				r = -EPROTO;
				break;
			} else {
				each(arg, (int)fields[1],
				     fields[8] > fields[9] ? fields[8] : fields[9]);
			}
			line = newline + 1;
		}
		if (r < 0)
			break;
		kept = (size_t)(end - line);
		if (kept == CHUNK) {
			r = -EPROTO; /* a line longer than a chunk */
			break;
		}
		memmove(buffer, line, kept);
	}
	close(fd);
	free(buffer);
	return r;
}

/* ---- as a backend ------------------------------------------------------------ */

static int backend_create(void *self, const char *path, int permissions, key_t *key, int *handle)
{
	return sysv_create(path, permissions, key, handle);
}

static int backend_create_at(void *self, key_t key, int permissions, int *handle)
{
	return sysv_create_at(key, permissions, handle);
}

static int backend_attach(void *self, key_t key, uid_t creator, int *handle)
{
	return sysv_attach(key, creator, handle);
}

static int backend_value(void *self, int handle)
{
	return sysv_value(handle);
}

static int backend_last_pid(void *self, int handle)
{
	return sysv_last_pid(handle);
}

static int backend_waiting(void *self, int handle)
{
	return sysv_waiting(handle);
}

static int backend_stamps(void *self, void (*each)(void *arg, int handle, long long stamp),
			  void *arg, long long *settled)
{
	return sysv_stamps(each, arg, settled);
}

static int backend_adjust(void *self, int handle, int delta, bool with_undo)
{
	return sysv_adjust(handle, delta, with_undo);
}

static int backend_adjust_steps(void *self, int handle, const signed char *steps, size_t count)
{
	return sysv_adjust_steps(handle, steps, count);
}

static int backend_take(void *self, int handle, const struct timespec *timeout)
{
	return sysv_take(handle, timeout);
}

static int backend_undo_to_plain(void *self, int handle)
{
	return sysv_undo_to_plain(handle);
}

static int backend_plain_to_undo(void *self, int handle)
{
	return sysv_plain_to_undo(handle);
}

static int backend_set_owner(void *self, int handle, uid_t uid, gid_t gid, mode_t mode)
{
	return sysv_set_owner(handle, uid, gid, mode);
}

static int backend_remove(void *self, int handle)
{
	return sysv_remove(handle);
}

static const struct backend_ops sysv_ops = {
    .create = backend_create,
    .create_at = backend_create_at,
    .attach = backend_attach,
    .value = backend_value,
    .last_pid = backend_last_pid,
    .waiting = backend_waiting,
    .stamps = backend_stamps,
    .adjust = backend_adjust,
    .adjust_steps = backend_adjust_steps,
    .take = backend_take,
    .undo_to_plain = backend_undo_to_plain,
    .plain_to_undo = backend_plain_to_undo,
    .set_owner = backend_set_owner,
    .remove = backend_remove,
};

const struct backend backend_sysv = {.name = "sysv", .ops = &sysv_ops, .self = NULL};
