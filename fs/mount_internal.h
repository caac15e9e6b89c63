/* mount_internal.h: the mount's private interface, shared by its files
 * (fs/mount*.c) and nothing else: the mount and open-file structures and the
 * calls one mount file makes into another. */
#ifndef SEMFS_MOUNT_INTERNAL_H
#define SEMFS_MOUNT_INTERNAL_H

#include "mount.h"
#include "report.h"
#include "clock.h"
#include "command.h"
#include "log.h"
#include "thread.h"
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdatomic.h>
#include <linux/fuse.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#define ENTRY_TIMEOUT 1.0 /* directories: names change only through us */
#define ATTR_TIMEOUT  0.0 /* size and mtime move with every change */
/* A semaphore's attributes in the reply to a lookup through an alias: until
 * the kernel's next tick (1 us rounds up to a jiffy). See reply_entry. */
#define ALIAS_ATTR_TIMEOUT 0.000001
#define WRITE_MAX	   65536
#define XATTR_PREFIX	   "user.semfs."
/* The notifier's pace: changes within this coalesce into one touch, so a hot
 * semaphore costs the loop at most ~100 touch batches a second. */
#define NOTIFY_INTERVAL 0.01 /* seconds */
/* Seconds an alias handed to a path walk and not opened is not touched: the
 * walk's open and a write that waits may follow, and that write would hold
 * the inode lock the touch needs. Older, it is a watch's (or a stat's). */
#define ALIAS_SETTLE 0.1

enum open_kind { OPEN_SEMAPHORE, OPEN_STATUS };

struct open_file {
	enum open_kind kind;
	uint64_t nodeid;
	struct semaphore *semaphore;
	struct owner owner; /* acquire units of this open file */
	char *status_text;
	size_t status_length;
	/* Kernel offset + skew = journal offset; the skew moves past lines
	 * that were dropped before this reader got to them (see journal.h). */
	int64_t skew;
	/* poll_lock: */
	uint64_t read_end;
	struct fuse_pollhandle *poll_handle;
	struct open_file *poll_next, *poll_prev; /* on mount->pollers while armed */
	struct open_file *all_next, *all_prev;	 /* on mount->open_files */
};

struct change {
	uint64_t ino;
	bool touch;
	uint64_t only; /* a touch put off: this alias alone (0: every alias) */
	struct change *next;
	char path[];
};

/* The nodeids the kernel holds for semaphores (mount_nodeids.c). */
struct nodeids {
	pthread_mutex_t lock;
	struct known **by_nodeid, **by_ino;
	size_t size, count;
	uint64_t next_alias;
};

struct mount {
	struct store *store;
	struct nodeids nodeids;
	struct fuse_session *session;
	char mountpoint[PATH_MAX];
	bool mounted;

	pthread_mutex_t poll_lock;
	struct open_file *pollers;
	/* How many are on `pollers`: counted before the file's readiness is
	 * looked at, read by mount_changed (store lock held) without poll_lock,
	 * which comes before the store lock. */
	atomic_uint pollers_armed;
	struct open_file *open_files;
	struct directory_listing *listings; /* freed at the end if no releasedir came */

	pthread_mutex_t notify_lock;
	pthread_cond_t notify_wake;
	struct change *changes;
	bool notifier_stop;
	bool notifier_pausing; /* it sleeps out NOTIFY_INTERVAL: no need to wake it */
	bool notifier_running;
	pthread_t notifier;
	volatile pid_t notifier_tid; /* the toucher's: its lookups get canonical nodeids */
	bool handles_work;	     /* open_by_handle_at is allowed */
	pid_t toucher;
	int toucher_channel;
	bool toucher_gone; /* the notifier's: it stopped answering */
	/* The poller wakes armed poll()s: apart from the notifier, whose own
	 * file table lacks /dev/fuse (see notifier_main). */
	pthread_cond_t poll_wake;
	bool polls_due, poller_pausing, poller_running;
	pthread_t poller;

	pthread_mutex_t session_lock;
	bool session_closed;
};

struct write_request {
	struct waiter waiter; /* first: the store hands it back */
	struct mount *mount;
	uint64_t nodeid; /* it came through: a waiting write holds its inode */
	fuse_req_t req;
	size_t size;
	struct command commands[];
};

struct directory_listing {
	struct store_entry *entries;
	size_t count;
	struct directory_listing *next, *prev; /* on mount->listings (poll_lock) */
};

/* mount.c */
struct mount *mount_of(fuse_req_t req);
void who_of(fuse_req_t req, char *who, size_t size);
bool file_readable(struct mount *mount, struct open_file *file);

/* mount_xattr.c */
void mount_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size);
void mount_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size);
void mount_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name, const char *value,
		    size_t size, int flags);
void mount_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name);

/* mount_notify.c */
void *notifier_main(void *argument);
void *poller_main(void *argument);

/* mount_toucher.c: the process that touches inodes for the notifier. */
int toucher_start(struct mount *mount); /* 0 or -errno */
void touch(struct mount *mount, const struct change *change);
/* Touch alias `nodeid` of `ino` again after the notifier's next pause. */
void mount_retouch(struct mount *mount, uint64_t ino, const char *path, uint64_t nodeid);
void toucher_stop(struct mount *mount); /* the notifier may still be running */

/* mount_nodeids.c: a node's own nodeid is its ino; every other path walk to
 * a semaphore gets an alias nodeid of its own (see the file's top). */
int nodeids_init(struct nodeids *table);
void nodeids_free(struct nodeids *table);
uint64_t nodeids_ino(struct nodeids *table, uint64_t nodeid); /* 0: unknown */
bool nodeids_is_alias(uint64_t nodeid);
/* A lookup of semaphore `ino`: its own nodeid (`own`, the notifier) or an
 * alias no other walk, file or write is using. One kernel reference. */
uint64_t nodeids_looked_up(struct nodeids *table, uint64_t ino, bool own);
/* The kernel forgets `count` references: the ino to tell the store. */
uint64_t nodeids_forget(struct nodeids *table, uint64_t nodeid, uint64_t count);
void nodeids_opened(struct nodeids *table, uint64_t nodeid, int delta);
void nodeids_queued(struct nodeids *table, uint64_t nodeid, int delta);
/* Whether the kernel holds any nodeid of `ino` (an inotify watch pins the
 * inode it was set on, and so its nodeid). */
bool nodeids_held(struct nodeids *table, uint64_t ino);
/* The nodeids of `ino` a watch may hold, that no waiting write holds. */
size_t nodeids_watchable(struct nodeids *table, uint64_t ino, uint64_t *out, size_t max);
/* Whether `nodeid` may be touched now (TOUCH_NOW: no walk gets it until
 * nodeids_touch_end), never (a file is open or a write waits there), or only
 * once it has settled (a walk was just given it and may open it). */
enum touch_verdict { TOUCH_NOW, TOUCH_NEVER, TOUCH_LATER };
enum touch_verdict nodeids_touch_begin(struct nodeids *table, uint64_t ino, uint64_t nodeid);
void nodeids_touch_end(struct nodeids *table, uint64_t nodeid);

#endif
