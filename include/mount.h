/* mount.h: the FUSE front-end. Every file is a semaphore of the store; writes
 * are commands, reads are the journal. Runs libfuse's single-threaded
 * low-level loop: no handler ever blocks (waits are the store's queues), and
 * one thread answers a request faster than a pool. */
#ifndef SEMFS_MOUNT_H
#define SEMFS_MOUNT_H

#include "store.h"

#include <fuse_lowlevel.h>
#include <stdbool.h>
#include <stddef.h>

struct mount;

struct mount *mount_new(void);

/* The store's change observer (store_options.changed); context = the mount.
 * Wakes poll() and, for changes no write reply announces, raises an inotify
 * event by touching the file through the mount from the notifier thread. */
void mount_changed(void *context, uint64_t ino, const char *path, enum store_change change);

/* Create the session and mount. `args` holds the remaining FUSE options. */
int mount_attach(struct mount *mount, struct store *store, struct fuse_args *args,
		 const char *mountpoint, char *error, size_t error_size);

/* Start the notifier and poller threads, run the loop until unmount or
 * a signal, then unmount. Returns fuse_session_loop's result: 0 after an
 * unmount, a signal number after a signal, -errno on failure. */
int mount_run(struct mount *mount);
/* Fork the toucher, the process that makes inotify see changes (see
 * fs/mount_toucher.c): after daemonizing and before any thread or network
 * connection exists, so that the child never holds, even for a moment, a
 * descriptor the daemon closes (a connection's socket would stay in epoll).
 * 0, or -1 after logging why. */
int mount_fork_toucher(struct mount *mount);

/* After store_shutdown(): close the session, stop the notifier, let go of
 * open files. */
void mount_destroy(struct mount *mount);

#endif
