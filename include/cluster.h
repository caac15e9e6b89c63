/* cluster.h: cluster mode — the store's semaphores kept in etcd, the same on
 * every host (shared/CLUSTER.md; semfs(8) CLUSTER MODE).
 *
 * Each lock or acquire request puts one queue entry in etcd under this
 * daemon's lease; every host's replica (replica.h) applies etcd's events in
 * revision order, and the one rule there says who holds. The cluster module
 * owns the etcd client, the lease, the watch and the replica, all driven by
 * one loop thread of its own; the store keeps the tree, the journals, the
 * local SysV mirror of each value, and answers its waiters when told.
 *
 * Threads: requests are queued from any thread and run on the loop thread,
 * which may run another module's event loop too (cluster_drive).
 * The loop calls the store's hooks holding none of its own locks, so the
 * hooks may take the store lock; the store may call in here holding its
 * lock (order: store lock, then the cluster's queue lock). */
#ifndef SEMFS_CLUSTER_H
#define SEMFS_CLUSTER_H

#include "etcd.h"
#include "replica.h"
#include "store.h"

#include <stdbool.h>
#include <stdint.h>

struct cluster_options {
	struct etcd_options etcd;
	const char *prefix;	/* keys live below it: "/semfs/" */
	const char *host;	/* this host's name in entries and journals */
	unsigned lease_ttl;	/* s */
	const char *lease_file; /* this incarnation's lease ID, revoked at the next start */
	double max_wait;	/* s, 0 for none: every wait ends (ETIMEDOUT) before */
};

/* The store's side, called on the loop thread (or, before cluster_start,
 * on the thread that waits in a synchronous call). */
struct cluster_hooks {
	void *context;
	/* `path` exists cluster-wide with this record, value, waiters and
	 * holders ("who,who": the status file's holders=). */
	void (*sync)(void *context, const char *path, const struct replica_meta *meta, int value,
		     int waiting, const char *holders);
	/* `path` was removed cluster-wide. */
	void (*gone)(void *context, const char *path);
	/* A directory made with mkdir exists cluster-wide / went. */
	void (*directory)(void *context, const char *path, mode_t mode, uid_t uid, gid_t gid);
	void (*directory_gone)(void *context, const char *path);
	/* A full load is done: every semaphore not synced since `begin` is
	 * gone (begin: a load starts). */
	void (*load_begin)(void *context);
	void (*load_end)(void *context);
	/* One journal line for `path`. */
	void (*journal)(void *context, const char *path, const char *event, const char *who,
			int64_t token, const char *extra);
	/* A submitted request ended: error 0 or -errno; the token of its last
	 * grant and the lock units it took. Called exactly once. */
	void (*complete)(void *context, struct waiter *waiter, int error, int64_t token,
			 unsigned lock_units);
	/* A host's file open on `path` closed, or went with that host's lease:
	 * an idle undefined name may go now. */
	void (*closed)(void *context, const char *path);
	/* A new lease after lease-lost: the open marks (cluster_open_mark)
	 * went with the old one. */
	void (*lease)(void *context);
	/* Whether the store still answers (its lock can be taken): the lease
	 * is renewed only then, so a wedged daemon loses its lease. */
	bool (*alive)(void *context);
};

struct cluster;

/* Connect: revoke the previous incarnation's lease, take a new one, read
 * every semaphore (hooks->sync for each), open the watch. Blocks up to a
 * few request timeouts; -EIO with the reason when the cluster does not
 * answer. No thread yet (cluster_start, after the daemon forks). */
int cluster_open(struct cluster **out, const struct cluster_options *options,
		 const struct cluster_hooks *hooks, char *error, size_t error_size);
int cluster_start(struct cluster *cluster);
/* The loop thread also waits for `fd` to be readable and calls run(context)
 * after each pass: another module's event loop (the TCP server's) runs on
 * it, so its requests and their answers cross no thread. A synchronous
 * call made from run drives the loop itself meanwhile, without run. NULL
 * run: stop; returns once run is not running and will not run again. */
void cluster_drive(struct cluster *cluster, int fd, void (*run)(void *context), void *context);
/* End every request (-ECANCELED), revoke the lease (this host's acquire
 * units return at once), stop the loop. */
void cluster_shutdown(struct cluster *cluster);
void cluster_close(struct cluster *cluster);

/* ---- asynchronous: complete() tells the end -------------------------------- */
/* Run the waiter's commands on the semaphore at `path`. 0, or -ENOMEM. */
int cluster_submit(struct cluster *cluster, const char *path, struct waiter *waiter);
/* The caller gave up: its entry goes and it completes with -EINTR (or with
 * what it had, if it ended first). */
void cluster_cancel(struct cluster *cluster, struct waiter *waiter);
/* Every acquire unit of `owner` goes back (last close, disconnect). */
void cluster_release_owner(struct cluster *cluster, struct owner *owner);
/* Whether the owner's acquire units went with a lost lease (any thread). */
bool cluster_owner_lost(struct cluster *cluster, uint64_t owner_id);
/* A reply was lost: `units` lock units at `path` go back. */
void cluster_return_units(struct cluster *cluster, const char *path, unsigned units,
			  const char *who);

/* ---- synchronous: block until the local tree shows the result -------------- */
/* Create `path` with `meta` (limit, mode, owner, defined): 0, -EEXIST, -EIO. */
int cluster_create(struct cluster *cluster, const char *path, const struct replica_meta *meta);
/* Remove it with every entry: 0, -ENOENT, -EPERM (defined, unless
 * `even_defined`), -EIO. */
int cluster_remove(struct cluster *cluster, const char *path, bool even_defined, const char *who);
/* chmod/chown of `path` on every host (a semaphore, or a directory made
 * with mkdir): the fields given (NULL: unchanged). 0, -ENOENT, -EBUSY
 * (changed too often meanwhile), -EIO. */
int cluster_chown(struct cluster *cluster, const char *path, const mode_t *mode, const uid_t *uid,
		  const gid_t *gid, const char *who);
/* An idle undefined semaphore (an ACE client's name) goes on every host,
 * unless some host uses it again before etcd sees the request. Returns at
 * once: nobody waits for it. */
void cluster_reap(struct cluster *cluster, const char *path);
/* A file is open here on `path`: its mark under this host's lease keeps
 * every host from reaping the name while idle. 0 with the mark's revision
 * in *revision, -ENOENT (the name went as it was opened), -EIO. */
int cluster_open_mark(struct cluster *cluster, const char *path, int64_t *revision);
/* The last file open here closed: the mark of that revision goes (a newer
 * one, from an open since, stays; -1: whatever mark there is). Returns at
 * once. */
void cluster_open_unmark(struct cluster *cluster, const char *path, int64_t revision);
/* A configuration line: create it defined, or make it defined with this
 * limit (-EBUSY: more units in use; it is defined with its old limit). */
int cluster_define(struct cluster *cluster, const char *path, unsigned limit);

/* mkdir: 0, -EEXIST (a directory or semaphore of that name), -EIO.
 * rmdir: 0, -ENOENT (no such directory record), -ENOTEMPTY, -EIO. */
int cluster_mkdir(struct cluster *cluster, const char *path, mode_t mode, uid_t uid, gid_t gid);
int cluster_rmdir(struct cluster *cluster, const char *path);

/* Wait until the replica has every change etcd had when called: 0, or -EIO
 * when etcd does not answer in time. */
int cluster_barrier(struct cluster *cluster);

struct cluster_health {
	int endpoints, reachable;
	double lease_age;    /* s since the lease was last renewed */
	int64_t revision;    /* the replica's */
	int64_t watch_lag;   /* revisions etcd has shown that the replica has not */
	uint64_t lease_lost; /* times */
	uint64_t watch_reopened;
};
void cluster_health(struct cluster *cluster, struct cluster_health *health);

#endif
