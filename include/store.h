/* store.h: the semaphore store. Owns the tree of names, one System V semaphore
 * per semaphore file, each semaphore's journal, holders and FIFO queue of
 * waiters. Front-ends (the mount, the network) parse a request into commands,
 * submit it here and get exactly one completion, now or later.
 *
 * Threads and locks: one store lock guards everything here, including the
 * store-private fields of every queued waiter. It is never held while a
 * waiter's complete() runs, so front-ends may call back into the store (and
 * into libfuse) from there. Store threads: one helper per *contended*
 * semaphore (sleeps in semtimedop for the head of the queue) and one monitor
 * (notices changes made by other SysV users). */
#ifndef SEMFS_STORE_H
#define SEMFS_STORE_H

#include "backend.h"
#include "command.h"

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#define STORE_ROOT_INO	  1
#define STORE_STATUS_INO  2
#define STORE_STATUS_NAME "semaphore.status"
#define STORE_NAME_MAX	  255
#define STORE_WHO_MAX	  64
#define STORE_QUEUED	  1 /* store_submit: complete() will be called later */

struct store;
struct semaphore;
struct holder;

enum store_node_kind { NODE_DIRECTORY, NODE_SEMAPHORE, NODE_STATUS };

struct store_attr {
	uint64_t nodeid; /* the node's own: its ino (the mount may hand out another) */
	uint64_t ino;	 /* st_ino */
	enum store_node_kind kind;
	mode_t mode; /* with file type bits */
	uid_t uid;
	gid_t gid;
	uint64_t size;
	unsigned nlink;
	struct timespec mtime, ctime;
};

struct store_entry {
	char *name;
	uint64_t ino;
	enum store_node_kind kind;
};

/* Whoever units taken with `acquire` belong to: an open file of the mount, a
 * network connection. Closing it returns them (store_release_owner). */
struct owner {
	struct holder *holders; /* store lock */
	uint64_t id;		/* cluster mode: its number in the cluster (store lock) */
};

struct waiter;
/* Called exactly once per queued request, without the store lock, from any
 * store or front-end thread. `error` is 0 or a positive errno. */
typedef void waiter_complete_fn(struct waiter *waiter, int error);

enum waiter_state { WAITER_IDLE, WAITER_RUNNING, WAITER_QUEUED, WAITER_DONE };

struct waiter {
	/* Set by the front-end before store_submit(). */
	const struct command *commands;
	size_t count;
	struct owner *owner;	 /* acquire/release need one */
	char who[STORE_WHO_MAX]; /* "pid:N", "tcp:ADDR:PORT" */
	waiter_complete_fn *complete;
	/* The front-end's successful reply itself tells watchers (a write through
	 * the VFS raises IN_MODIFY), so the store need not. */
	bool announced_by_reply;
	/* Told, under the store lock, when the request enters (+1) or leaves
	 * (-1) its semaphore's queue: a waiting write holds its inode's lock,
	 * which the mount must know. NULL: nobody asks. */
	void (*queued)(struct waiter *waiter, int delta);

	/* Store-private, under the store lock. */
	struct semaphore *semaphore;
	enum waiter_state state;
	size_t next; /* next command to run */
	bool interrupted;
	bool changed_something;
	bool has_deadline;
	struct timespec deadline; /* CLOCK_MONOTONIC */
	struct waiter *queue_prev, *queue_next;
	int result;	     /* for the completion list */
	unsigned lock_units; /* plain units this request took */
	uint64_t token;	     /* fencing token of its last grant */
};

/* Who has heard of a change already, which decides what the mount does. */
enum store_change {
	CHANGE_UNANNOUNCED, /* nobody: inotify watchers need a touch */
	CHANGE_ANNOUNCED,   /* the request's write reply, on its own inode */
	CHANGE_NEW,	    /* a semaphore just made: nobody can watch or poll it yet */
};

/* A semaphore changed: called with the store lock held, so it may only queue
 * work. `path` is relative to the mount root. */
typedef void store_changed_fn(void *context, uint64_t ino, const char *path,
			      enum store_change change);

/* Who asks: the permission checks the kernel makes for the mount
 * (default_permissions), made by the store for the network and for
 * semaphore.status. uid 0 may do everything. */
struct store_caller {
	uid_t uid;
	gid_t gid;
	const gid_t *groups; /* supplementary groups */
	size_t group_count;
};

struct store_options {
	const char *state_dir;
	/* Semaphores and directories made over the network (create, ACE's
	 * undefined names): their owner and mode (directories add x bits). */
	uid_t network_uid;
	gid_t network_gid;
	mode_t network_mode;
	unsigned default_limit;
	size_t journal_max;
	double max_wait; /* seconds, 0 for none: every wait ends (ETIMEDOUT) before */
	store_changed_fn *changed;
	void *changed_context;
	/* Where units live (backend.h); NULL: System V semaphore sets. */
	const struct backend *backend;
};

/* Cluster mode (cluster.h): connect to etcd and make the tree the
 * cluster's, before store_define and the front-ends. -errno with the reason
 * (the cluster does not answer, a bad option). store_start starts its loop,
 * store_shutdown ends it (waits end with ECANCELED, the lease is revoked). */
struct cluster_options;
struct cluster_health;
int store_attach_cluster(struct store *store, const struct cluster_options *options, char *error,
			 size_t error_size);
/* Cluster mode: wait (up to request_timeout) until this host has applied
 * every change the cluster had when called, so a read that follows shows
 * writes finished on other hosts. Nothing on one host, and nothing when the
 * cluster does not answer (the read shows what this host knows). */
void store_read_barrier(struct store *store);
/* Cluster mode: the cluster's loop thread runs another event loop too
 * (cluster_drive): after store_start, run(context) whenever `fd` is
 * readable; NULL run: stop, returning once it no longer runs. -ENOTSUP
 * outside cluster mode (no such thread). */
int store_drive(struct store *store, int fd, void (*run)(void *context), void *context);
/* Whether the store is in cluster mode. */
bool store_is_cluster(const struct store *store);
/* Zeros outside cluster mode. */
void cluster_store_health(struct store *store, struct cluster_health *health);

/* Open the state directory and bring back every semaphore it records. */
int store_open(struct store **out, const struct store_options *options, char *error,
	       size_t error_size);
int store_start(struct store *store);	  /* start the monitor thread */
void store_shutdown(struct store *store); /* end all waits (ECANCELED), stop threads */
void store_close(struct store *store);

/* The tree, for the mount. Functions return 0 or -errno; nodes are named by
 * their ino. lookup and create count one kernel reference, forget drops them;
 * an unlinked node lives until the last one goes. (Which nodeids the kernel
 * gets for a node is the mount's business: fs/mount_nodeids.c.) */
int store_lookup(struct store *store, uint64_t parent, const char *name, struct store_attr *attr);
void store_forget(struct store *store, uint64_t ino, uint64_t count);
int store_getattr(struct store *store, uint64_t ino, struct store_attr *attr);
int store_create(struct store *store, uint64_t parent, const char *name, mode_t mode, uid_t uid,
		 gid_t gid, struct store_attr *attr);
int store_mkdir(struct store *store, uint64_t parent, const char *name, mode_t mode, uid_t uid,
		gid_t gid, struct store_attr *attr);
int store_unlink(struct store *store, uint64_t parent, const char *name);
int store_rmdir(struct store *store, uint64_t parent, const char *name);
/* NULL fields are left alone. */
int store_setattr(struct store *store, uint64_t ino, const mode_t *mode, const uid_t *uid,
		  const gid_t *gid, const struct timespec *mtime, struct store_attr *attr);
int store_list(struct store *store, uint64_t ino, struct store_entry **entries, size_t *count);
void store_list_free(struct store_entry *entries, size_t count);

/* Semaphores. open takes a reference that close drops (store_open_path
 * takes one too). */
int store_open_semaphore(struct store *store, uint64_t ino, struct semaphore **semaphore);
void store_close_semaphore(struct store *store, struct semaphore *semaphore);

/* Run a request's commands in order. Returns 0 (all done), -errno (failed at
 * the first error; earlier commands stay done) or STORE_QUEUED: it waits, and
 * complete() will be called exactly once, possibly before this returns. */
int store_submit(struct store *store, struct semaphore *semaphore, struct waiter *waiter);

/* A run of pipelined lock and unlock requests of one client (`who`) on one
 * semaphore, each its own request: what each does is worked out from one
 * look at the value and done in one move of the backend, all or none, then
 * journalled in order. Fills results[i] (0 or -EOVERFLOW, as store_submit
 * would) and, for a granted lock, tokens[i]. Returns how many leading
 * requests were done (at most STORE_RUN_MAX); the rest go through
 * store_submit one at a time: the first of them would wait, or the run could
 * not be taken at once (someone else moved the value, cluster mode). */
#define STORE_RUN_MAX 64
size_t store_submit_run(struct store *store, struct semaphore *semaphore, const char *who,
			const struct command *commands, size_t count, int results[],
			uint64_t tokens[]);

/* The caller gave up (a signal). true: the waiter was queued, is now removed,
 * took nothing, and is the caller's again (complete() will not be called).
 * false: it is running or done; the interrupt is remembered. */
bool store_cancel(struct store *store, struct waiter *waiter);

/* A successful request could not be answered (its caller is gone): give back
 * the plain units it took, so they go to the next waiter. */
void store_return_units(struct store *store, struct waiter *waiter);

/* Cluster mode: the owner's acquire units went with this host's lease
 * (lease-lost). Its open file answers EIO and POLLERR, its connection an
 * error and a close, until it is released. Always false on one host. */
bool store_owner_lost(struct store *store, const struct owner *owner);

/* Return every unit an owner holds (last close, disconnect). */
void store_release_owner(struct store *store, struct owner *owner, const char *who);

/* Read the journal at file offset *offset and move it past what was read.
 * Below the first kept line (dropped past journal_max) the reader gets one
 * line saying so instead, and *offset moves to the first kept line. */
size_t store_read_journal(struct store *store, struct semaphore *semaphore, uint64_t *offset,
			  char *buffer, size_t size);
/* The newest journal line's seq= number (0: none yet). */
uint64_t store_journal_seq(struct store *store, struct semaphore *semaphore);
/* The file offsets of the first kept byte and of the end (the file size). */
void store_journal_position(struct store *store, struct semaphore *semaphore, uint64_t *start,
			    uint64_t *end);

/* ---- Names, for the network and the configuration. A path is "a/b/c" below
 * the root, already checked by name_check(). Semaphores made over the network
 * get the options' network owner and mode; defined ones (the configuration)
 * belong to semfs's user with STORE_DEFINED_MODE, so any peer may use them.
 * Directories made for a name go again when they empty. */
#define STORE_DEFINED_MODE 0666
#define STORE_DEPTH_MAX	   16 /* directories a network name may have */

enum store_access {
	STORE_READ,   /* status NAME, watch: r on the file */
	STORE_WRITE,  /* every command: w on the file */
	STORE_CREATE, /* create, an undefined name: w+x on the deepest directory there */
	STORE_DELETE, /* w+x on the directory, and its sticky bit's rule */
};
/* May `caller` do `access` at `path`? 0, -EACCES, -EPERM (sticky), -ENOENT
 * (a directory missing; or the semaphore, except for CREATE), -ENOTDIR. */
int store_access_path(struct store *store, const char *path, const struct store_caller *caller,
		      enum store_access access);

/* Take a reference on the semaphore at `path` (drop it with
 * store_close_semaphore(store, semaphore, 0)). -ENOENT if missing, unless
 * `undefined_if_missing`: then ACE's rule, a semaphore of limit 1 that goes
 * again once idle (no holder, waiter, open file or reference left). */
/* The path in the mount of a client's name (see name.h): its escaped form
 * if that exists, else itself where it can be a path, else its escaped form.
 * 0, or -ENAMETOOLONG. The tree may change before the path is used. */
int store_name_path(struct store *store, const char *name, char *path, size_t size);
int store_open_path(struct store *store, const char *path, bool undefined_if_missing,
		    struct semaphore **semaphore);
/* `create NAME [LIMIT]`: missing directories are made. -EEXIST if taken. */
int store_create_path(struct store *store, const char *path, unsigned limit, const char *who);
/* `delete NAME`: -EPERM for a semaphore the configuration defines. */
int store_delete_path(struct store *store, const char *path, const char *who);
/* A `semaphore_NAME = LIMIT` line (NAME a client's name, placed as
 * store_name_path() says): create it or set its limit; from now on it cannot
 * be deleted. -errno with a message. */
int store_define(struct store *store, const char *path, unsigned limit, char *error,
		 size_t error_size);
/* After the last store_define(): a semaphore restored as defined that the
 * configuration no longer names becomes undefined (limit 1, removed when
 * idle), journalled and logged. */
void store_defines_done(struct store *store);
/* Deleted (rm, `delete`, ipcrm): every operation fails with EIDRM now. */
bool store_semaphore_removed(struct store *store, struct semaphore *semaphore);
/* A semaphore as the report module and the stats writer see it. The
 * strings live only during the visit. */
struct store_metric {
	const char *path;
	unsigned limit;
	int value;
	size_t waiting;
	uint64_t grants, timeouts, token;
	key_t key;
	int semid;
	const char *holders; /* "who,who": one per unit held; "" for none */
	bool defined, undefined;
	bool gone; /* deleted (store_semaphore_metric only; path "") */
};
struct store_totals {
	size_t semaphores;
	uint64_t grants, timeouts; /* since start, deleted semaphores included */
};
/* Called under the store lock: copy, format, do not call back. */
typedef void store_metric_fn(void *context, const struct store_metric *metric);
/* Only the semaphores `caller` may see (NULL: all): x on every directory
 * above, r on the semaphore. `totals` may be NULL. */
void store_metrics(struct store *store, const struct store_caller *caller, store_metric_fn *visit,
		   void *context, struct store_totals *totals);
/* One semaphore, also once deleted (`gone`). 0. */
int store_semaphore_metric(struct store *store, struct semaphore *semaphore, store_metric_fn *visit,
			   void *context);

#endif
