/* backing.h: the state directory on disk. Its tree/ mirrors the mounted tree:
 * a directory per directory, a small text file per semaphore recording what
 * the kernel does not keep (key, limit, owner, mode, fencing-token high-water
 * mark). The file's inode also seeds the semaphore's ftok key. */
#ifndef SEMFS_BACKING_H
#define SEMFS_BACKING_H

#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>

struct backing {
	char state_dir[PATH_MAX];
	char root[PATH_MAX]; /* STATE_DIR/tree */
	int root_fd;
	int state_fd;	/* STATE_DIR: its lock file, tmp/, aside/, the token floor */
	int lock_fd;	/* STATE_DIR/lock, flock'd while this daemon runs */
	bool in_memory; /* tmpfs or ramfs: nothing outlives a reboot, fsync is moot */
	int fresh_fd;	/* in memory: the file backing_create just made, still open */
	char fresh_path[PATH_MAX];
};

struct backing_record {
	key_t key;
	unsigned limit;
	mode_t mode;
	uid_t uid;
	gid_t gid;
	uint64_t token_reserved; /* tokens below this may have been handed out */
	bool undefined;		 /* made by an ACE acquire: goes when idle */
	bool defined;		 /* by a semaphore_NAME line of the configuration */
};

/* Create STATE_DIR/tree as needed, open it and lock STATE_DIR against a second
 * daemon (-EBUSY). -errno, message in `error`. */
int backing_open(struct backing *backing, const char *state_dir, char *error, size_t error_size);
void backing_close(struct backing *backing);

/* Paths are relative to the tree, "dir/name", never empty. */
int backing_create(struct backing *backing, const char *path); /* O_EXCL */
/* Atomic and durable: a temporary file, fsync, rename over the record, and
 * an fsync of its directory. Either the old record or the new one survives a
 * crash; -errno if the new one may not have. */
int backing_write(struct backing *backing, const char *path, const struct backing_record *record);
int backing_read(struct backing *backing, const char *path, struct backing_record *record);
int backing_remove(struct backing *backing, const char *path);
int backing_mkdir(struct backing *backing, const char *path, mode_t mode);
int backing_rmdir(struct backing *backing, const char *path);
int backing_chmod_dir(struct backing *backing, const char *path, mode_t mode, uid_t uid, gid_t gid);
/* Move a record that cannot be read to STATE_DIR/aside/ (its path with '/'
 * as '%'), out of the way of the next start; the new place in `moved_to`. */
int backing_set_aside(struct backing *backing, const char *path, char *moved_to, size_t size);
/* The token floor: no semaphore, deleted or not, handed out a fencing token
 * at or above it, so a new one starts there. Written durably. Reading it:
 * 0 (no file yet: floor 0) or -errno (unreadable: floor 0, the caller says so). */
int backing_token_floor(struct backing *backing, uint64_t *floor);
int backing_raise_token_floor(struct backing *backing, uint64_t floor);
/* Full path for ftok(). */
void backing_full_path(const struct backing *backing, const char *path, char *out, size_t size);

/* Visit every entry, parents before children. The callback returns 0 to go
 * on; a negative value stops the walk and is returned. */
typedef int backing_visit_fn(void *context, const char *path, bool is_directory,
			     const struct stat *status);
int backing_walk(struct backing *backing, backing_visit_fn *visit, void *context);

#endif
