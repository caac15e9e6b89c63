/* backing.c: the state directory's files, read and written relative to an
 * open directory fd so that long trees never build long paths. */
#include "backing.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/magic.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <time.h>
#include <unistd.h>

static int make_directories(const char *path)
{
	char buffer[PATH_MAX];

	if (snprintf(buffer, sizeof(buffer), "%s", path) >= (int)sizeof(buffer))
		return -ENAMETOOLONG;
	for (char *p = buffer + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(buffer, 0755) < 0 && errno != EEXIST)
			return -errno;
		*p = '/';
	}
	if (mkdir(buffer, 0755) < 0 && errno != EEXIST)
		return -errno;
	return 0;
}

/* One daemon per state directory: a second one would overwrite the first's
 * records, and a unit it holds would vanish after a restart. */
static int lock_state_dir(struct backing *backing, char *error, size_t error_size)
{
	char pid[32] = "";
	int length;

	/* Read-only, so that the lock never keeps a file open for writing. */
	backing->lock_fd = openat(backing->state_fd, "lock", O_RDONLY | O_CREAT | O_CLOEXEC, 0644);
	if (backing->lock_fd < 0) {
		int r = -errno;
		snprintf(error, error_size, "cannot open %s/lock: %s", backing->state_dir,
			 strerror(-r));
		return r;
	}
	if (flock(backing->lock_fd, LOCK_EX | LOCK_NB) < 0) {
		int r = errno == EWOULDBLOCK ? -EBUSY : -errno;
		ssize_t n = pread(backing->lock_fd, pid, sizeof(pid) - 1, 0);
		pid[n > 0 ? n : 0] = '\0';
		pid[strcspn(pid, "\n")] = '\0';
		if (r == -EBUSY)
			snprintf(error, error_size,
				 "state_dir %s is in use by another semfs (pid %s): one daemon per "
				 "state_dir",
				 backing->state_dir, pid[0] ? pid : "unknown");
		else
			snprintf(error, error_size, "cannot lock %s/lock: %s", backing->state_dir,
				 strerror(-r));
		return r;
	}
	/* The pid is only a courtesy for the next message: no error if unwritten. */
	length = snprintf(pid, sizeof(pid), "%ld\n", (long)getpid());
	int fd = openat(backing->state_fd, "lock", O_WRONLY | O_TRUNC | O_CLOEXEC);
	if (fd >= 0) {
		if (write(fd, pid, (size_t)length) < 0)
			length = 0;
		close(fd);
	}
	return 0;
}

int backing_open(struct backing *backing, const char *state_dir, char *error, size_t error_size)
{
	backing->root_fd = backing->state_fd = backing->lock_fd = backing->fresh_fd = -1;
	if (snprintf(backing->state_dir, sizeof(backing->state_dir), "%s", state_dir) >=
		(int)sizeof(backing->state_dir) ||
	    snprintf(backing->root, sizeof(backing->root), "%s/tree", state_dir) >=
		(int)sizeof(backing->root)) {
		snprintf(error, error_size, "state_dir too long");
		return -ENAMETOOLONG;
	}
	int r = make_directories(backing->root);
	if (r < 0) {
		snprintf(error, error_size, "cannot create %s: %s", backing->root, strerror(-r));
		return r;
	}
	backing->state_fd = open(state_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (backing->state_fd < 0) {
		r = -errno;
		snprintf(error, error_size, "cannot open %s: %s", state_dir, strerror(-r));
		return r;
	}
	r = lock_state_dir(backing, error, error_size);
	if (r < 0)
		return r;
	/* The default, /run/semfs, is on tmpfs: its records are rebuilt from
	 * nothing after a reboot anyway, and fsync there does nothing but cost
	 * four system calls a record (two fsyncs, the directory's open and
	 * close). */
	struct statfs filesystem;
	backing->in_memory = fstatfs(backing->state_fd, &filesystem) == 0 &&
			     (filesystem.f_type == TMPFS_MAGIC || filesystem.f_type == RAMFS_MAGIC);
	if (mkdirat(backing->state_fd, "tmp", 0700) < 0 && errno != EEXIST) {
		r = -errno;
		snprintf(error, error_size, "cannot create %s/tmp: %s", state_dir, strerror(-r));
		return r;
	}
	backing->root_fd = open(backing->root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (backing->root_fd < 0) {
		r = -errno;
		snprintf(error, error_size, "cannot open %s: %s", backing->root, strerror(-r));
		return r;
	}
	return 0;
}

/* The file backing_create kept open is written no more in place. */
static void fresh_forget(struct backing *backing)
{
	if (backing->fresh_fd >= 0)
		close(backing->fresh_fd);
	backing->fresh_fd = -1;
}

void backing_close(struct backing *backing)
{
	fresh_forget(backing);
	if (backing->root_fd >= 0)
		close(backing->root_fd);
	if (backing->state_fd >= 0)
		close(backing->state_fd);
	if (backing->lock_fd >= 0)
		close(backing->lock_fd); /* and with it the lock */
	backing->root_fd = backing->state_fd = backing->lock_fd = -1;
}

void backing_full_path(const struct backing *backing, const char *path, char *out, size_t size)
{
	snprintf(out, size, "%s/%s", backing->root, path);
}

int backing_create(struct backing *backing, const char *path)
{
	int fd = openat(backing->root_fd, path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	fresh_forget(backing);
	/* In memory, its first record goes straight in (backing_write): three
	 * system calls a create fewer than a temporary file renamed over, and
	 * the key's ftok inode stays the record's. Nobody else has the new
	 * file, and a crash before the write leaves it empty, as it did
	 * before (set aside at the next start). */
	if (backing->in_memory && strlen(path) < sizeof(backing->fresh_path)) {
		backing->fresh_fd = fd;
		memcpy(backing->fresh_path, path, strlen(path) + 1);
	} else {
		close(fd);
	}
	return 0;
}

/* `text` replaces `path` (relative to `directory_fd`) atomically: written to
 * STATE_DIR/tmp/NAME, fsync'd, renamed over, and the directory fsync'd. The
 * callers hold the store lock, so one temporary name per kind suffices. */
static int replace_file(struct backing *backing, const char *temporary, int directory_fd,
			const char *path, const char *text, size_t length)
{
	int fd =
	    openat(backing->state_fd, temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	int r = 0;
	ssize_t written = write(fd, text, length);
	if (written < 0 || (!backing->in_memory && fsync(fd) < 0))
		r = -errno;
	else if ((size_t)written != length)
		r = -ENOSPC;
	close(fd);
	if (r == 0 && renameat(backing->state_fd, temporary, directory_fd, path) < 0)
		r = -errno;
	if (r < 0) {
		(void)unlinkat(backing->state_fd, temporary, 0);
		return r;
	}
	if (backing->in_memory)
		return 0;
	/* The rename itself must reach the disk: fsync the directory holding it. */
	const char *slash = strrchr(path, '/');
	char parent[PATH_MAX];
	snprintf(parent, sizeof(parent), "%.*s", slash ? (int)(slash - path) : 1,
		 slash ? path : ".");
	int directory = openat(directory_fd, parent, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (directory < 0)
		return -errno;
	if (fsync(directory) < 0 && errno != EINVAL)
		r = -errno;
	close(directory);
	return r;
}

int backing_write(struct backing *backing, const char *path, const struct backing_record *record)
{
	char text[256];
	int length = snprintf(
	    text, sizeof(text),
	    "key=0x%08x\nlimit=%u\nmode=0%o\nuid=%u\ngid=%u\ntoken=%" PRIu64 "\n%s%s",
	    (unsigned)record->key, record->limit, (unsigned)(record->mode & 07777),
	    (unsigned)record->uid, (unsigned)record->gid, record->token_reserved,
	    record->undefined ? "undefined=1\n" : "", record->defined ? "defined=1\n" : "");
	if (backing->fresh_fd >= 0 && strcmp(path, backing->fresh_path) == 0) {
		int fd = backing->fresh_fd;
		backing->fresh_fd = -1;
		ssize_t written = pwrite(fd, text, (size_t)length, 0);
		int r = written < 0 ? -errno : written != length ? -ENOSPC : 0;
		close(fd);
		return r;
	}
	fresh_forget(backing);
	return replace_file(backing, "tmp/record", backing->root_fd, path, text, (size_t)length);
}

/* A small text file below `dir_fd`, NUL-ended in `text`: its length or -errno. */
static ssize_t read_text(int dir_fd, const char *path, char *text, size_t size)
{
	int fd = openat(dir_fd, path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	ssize_t length = read(fd, text, size - 1);
	int saved = errno;
	close(fd);
	if (length < 0)
		return -saved;
	text[length] = '\0';
	return length;
}

int backing_read(struct backing *backing, const char *path, struct backing_record *record)
{
	char text[512];
	ssize_t length = read_text(backing->root_fd, path, text, sizeof(text));
	if (length < 0)
		return (int)length;

	unsigned found = 0;
	record->undefined = record->defined = false;
	for (char *line = text, *next; line && *line; line = next) {
		next = strchr(line, '\n');
		if (next)
			*next++ = '\0';
		char *equals = strchr(line, '=');
		if (!equals)
			return -EBADMSG;
		*equals = '\0';
		char *value = equals + 1, *end;
		errno = 0;
		unsigned long long number = strtoull(value, &end, 0);
		if (errno || *end || end == value)
			return -EBADMSG;
		if (strcmp(line, "key") == 0)
			record->key = (key_t)(uint32_t)number, found |= 1;
		else if (strcmp(line, "limit") == 0)
			record->limit = (unsigned)number, found |= 2;
		else if (strcmp(line, "mode") == 0)
			record->mode = (mode_t)number, found |= 4;
		else if (strcmp(line, "uid") == 0)
			record->uid = (uid_t)number, found |= 8;
		else if (strcmp(line, "gid") == 0)
			record->gid = (gid_t)number, found |= 16;
		else if (strcmp(line, "token") == 0)
			record->token_reserved = number, found |= 32;
		else if (strcmp(line, "undefined") == 0)
			record->undefined = number != 0;
		else if (strcmp(line, "defined") == 0)
			record->defined = number != 0;
	}
	return found == 63 ? 0 : -EBADMSG;
}

int backing_set_aside(struct backing *backing, const char *path, char *moved_to, size_t size)
{
	char name[PATH_MAX];

	if (mkdirat(backing->state_fd, "aside", 0700) < 0 && errno != EEXIST)
		return -errno;
	int length = snprintf(name, sizeof(name), "aside/%s.%ld", path, (long)time(NULL));
	if (length >= (int)sizeof(name))
		return -ENAMETOOLONG;
	for (char *p = name + strlen("aside/"); *p; p++)
		if (*p == '/')
			*p = '%';
	fresh_forget(backing);
	if (renameat(backing->root_fd, path, backing->state_fd, name) < 0)
		return -errno;
	snprintf(moved_to, size, "%s/%s", backing->state_dir, name);
	return 0;
}

int backing_token_floor(struct backing *backing, uint64_t *floor)
{
	char text[64];
	unsigned long long number;

	*floor = 0;
	ssize_t length = read_text(backing->state_fd, "tokens", text, sizeof(text));
	if (length == -ENOENT)
		return 0; /* none yet: nothing was deleted */
	if (length < 0)
		return (int)length;
	if (sscanf(text, "floor=%llu", &number) != 1)
		return -EBADMSG;
	*floor = number;
	return 0;
}

int backing_raise_token_floor(struct backing *backing, uint64_t floor)
{
	char text[64];
	int length = snprintf(text, sizeof(text), "floor=%" PRIu64 "\n", floor);
	return replace_file(backing, "tmp/tokens", backing->state_fd, "tokens", text,
			    (size_t)length);
}

int backing_remove(struct backing *backing, const char *path)
{
	fresh_forget(backing);
	return unlinkat(backing->root_fd, path, 0) < 0 ? -errno : 0;
}

int backing_mkdir(struct backing *backing, const char *path, mode_t mode)
{
	return mkdirat(backing->root_fd, path, mode & 07777) < 0 ? -errno : 0;
}

int backing_rmdir(struct backing *backing, const char *path)
{
	return unlinkat(backing->root_fd, path, AT_REMOVEDIR) < 0 ? -errno : 0;
}

int backing_chmod_dir(struct backing *backing, const char *path, mode_t mode, uid_t uid, gid_t gid)
{
	if (fchmodat(backing->root_fd, path, mode & 07777, 0) < 0)
		return -errno;
	/* Only root may give a directory away; elsewhere the mount keeps it. */
	if (fchownat(backing->root_fd, path, uid, gid, AT_SYMLINK_NOFOLLOW) < 0 && errno != EPERM)
		return -errno;
	return 0;
}

static int walk_directory(struct backing *backing, const char *prefix, backing_visit_fn *visit,
			  void *context)
{
	int fd = prefix[0] ? openat(backing->root_fd, prefix, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
			   : dup(backing->root_fd);
	if (fd < 0)
		return -errno;
	DIR *directory = fdopendir(fd);
	if (!directory) {
		int r = -errno;
		close(fd);
		return r;
	}
	rewinddir(directory);
	int r = 0;
	struct dirent *entry;
	while (r == 0 && (entry = readdir(directory))) {
		if (strcmp(entry->d_name, ".") == 0 || strcmp(entry->d_name, "..") == 0)
			continue;
		char path[PATH_MAX];
		if (snprintf(path, sizeof(path), "%s%s%s", prefix, prefix[0] ? "/" : "",
			     entry->d_name) >= (int)sizeof(path))
			continue;
		struct stat status;
		if (fstatat(backing->root_fd, path, &status, AT_SYMLINK_NOFOLLOW) < 0)
			continue;
		if (S_ISDIR(status.st_mode)) {
			r = visit(context, path, true, &status);
			if (r == 0)
				r = walk_directory(backing, path, visit, context);
		} else if (S_ISREG(status.st_mode)) {
			r = visit(context, path, false, &status);
		}
	}
	closedir(directory);
	return r;
}

int backing_walk(struct backing *backing, backing_visit_fn *visit, void *context)
{
	return walk_directory(backing, "", visit, context);
}
