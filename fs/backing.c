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
#include <sys/stat.h>
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

int backing_open(struct backing *backing, const char *state_dir, char *error, size_t error_size)
{
	if (snprintf(backing->root, sizeof(backing->root), "%s/tree", state_dir) >=
	    (int)sizeof(backing->root)) {
		snprintf(error, error_size, "state_dir too long");
		return -ENAMETOOLONG;
	}
	int r = make_directories(backing->root);
	if (r < 0) {
		snprintf(error, error_size, "cannot create %s: %s", backing->root, strerror(-r));
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

void backing_close(struct backing *backing)
{
	if (backing->root_fd >= 0)
		close(backing->root_fd);
	backing->root_fd = -1;
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
	close(fd);
	return 0;
}

int backing_write(struct backing *backing, const char *path, const struct backing_record *record)
{
	char text[256];
	int length =
	    snprintf(text, sizeof(text),
		     "key=0x%08x\nlimit=%u\nmode=0%o\nuid=%u\ngid=%u\ntoken=%" PRIu64 "\n%s",
		     (unsigned)record->key, record->limit, (unsigned)(record->mode & 07777),
		     (unsigned)record->uid, (unsigned)record->gid, record->token_reserved,
		     record->undefined ? "undefined=1\n" : "");
	/* Rewritten in place: the inode, which seeded the key, stays. */
	int fd = openat(backing->root_fd, path, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	int r = 0;
	if (pwrite(fd, text, (size_t)length, 0) != length || ftruncate(fd, length) < 0)
		r = errno ? -errno : -EIO;
	close(fd);
	return r;
}

int backing_read(struct backing *backing, const char *path, struct backing_record *record)
{
	char text[512];
	int fd = openat(backing->root_fd, path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	ssize_t length = read(fd, text, sizeof(text) - 1);
	int saved = errno;
	close(fd);
	if (length < 0)
		return -saved;
	text[length] = '\0';

	unsigned found = 0;
	record->undefined = false;
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
	}
	return found == 63 ? 0 : -EBADMSG;
}

int backing_remove(struct backing *backing, const char *path)
{
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
