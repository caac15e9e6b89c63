/* store_internal.h: the store module's private interface, shared by its files
 * (fs/store*.c) and by nothing else: the structures behind include/store.h
 * and the functions one store file calls in another. */
#ifndef SEMFS_STORE_INTERNAL_H
#define SEMFS_STORE_INTERNAL_H

#include "store.h"
#include "backing.h"
#include "clock.h"
#include "journal.h"
#include "log.h"
#include "name.h"
#include "backend.h"
#include "thread.h"
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* Seconds: a helper re-checks its queue at least this often. Kicks wake it
 * sooner (none is lost: see helper_nap in store_helper.c); this is a safety
 * net. Every wake-up re-queues the helper at the tail of the kernel's queue,
 * behind any outside SysV waiter, so it must be rare. */
#define HELPER_NAP 5.0
/* Seconds a helper whose queue emptied stays (parked, not in semtimedop) for
 * the next waiter: a thread's exit and start cost more than a hand-off. */
#define HELPER_LINGER 2.0
/* The monitor sweeps every MONITOR_PERIOD_MIN seconds while that is at most
 * MONITOR_ASKS_PER_SECOND values asked (were each set asked), less often with
 * more semaphores, never less than once a second: an outside change is seen
 * within a second. A sweep reads every set's stamp at once and asks only the
 * sets that changed (a GETVAL of each of 20,000 sets, ~1.5 us each on a VM,
 * cost ~3 % of a core; the stamps of all, ~0.6 us a set, ~1 %). It holds the
 * store lock for at most MONITOR_SHARE questions or MONITOR_VISITS sets at a
 * time, MONITOR_PAUSE seconds apart. */
#define MONITOR_PERIOD_MIN	0.25
#define MONITOR_PERIOD_MAX	1.0
#define MONITOR_ASKS_PER_SECOND 4000
#define MONITOR_SHARE		1000
#define MONITOR_VISITS		4000
#define MONITOR_PAUSE		0.001
/* An idle undefined semaphore goes this long after its last user: an ACE
 * client that reconnects for its next cycle finds it, instead of a SysV set
 * and a record made and removed per cycle. */
#define UNDEFINED_GRACE	   0.5
#define TOKEN_BLOCK	   1024 /* fencing tokens reserved on disk at a time */
#define HELPER_KICK_SIGNAL SIGUSR2

struct node {
	uint64_t ino;
	enum store_node_kind kind;
	char *name;
	struct node *parent;
	mode_t mode;
	uid_t uid;
	gid_t gid;
	struct timespec mtime, ctime;
	uint64_t lookups; /* kernel references (FUSE nlookup) */
	bool unlinked;
	struct node *first_child, *last_child, *next_sibling, *prev_sibling;
	struct node *ino_chain, *name_chain; /* hash buckets */
	struct semaphore *semaphore;	     /* NODE_SEMAPHORE: holds one reference */
	bool implicit;			     /* a directory made for a name: goes when it empties */
	bool clustered;			     /* cluster mode: a directory etcd records (mkdir) */
};

struct holder {
	struct semaphore *semaphore;
	struct owner *owner; /* NULL: plain `lock` units */
	unsigned units;
	bool pinned; /* a grant to it is under way: stays at 0 units */
	struct holder *next_in_semaphore, *next_in_owner;
	char who[STORE_WHO_MAX];
};

struct semaphore {
	struct store *store;
	struct node *node;
	uint64_t ino;
	key_t key;
	int semid;
	unsigned limit;
	uint64_t token, token_reserved;
	unsigned acquired; /* units held by owners (acquire), with SEM_UNDO */
	int last_value;	   /* as of our last journal line: to notice outside changes */
	/* The value our own semop just left, for the journal line that follows
	 * (one GETVAL less per lock and unlock); used once. */
	bool value_known;
	int known_value;
	bool removed;	      /* the SysV set is gone: everything fails with EIDRM */
	bool undefined;	      /* made by an ACE acquire of an unknown name: goes when idle */
	bool idle_pending;    /* undefined and idle since idle_since: goes after a grace */
	bool reap_when_home;  /* cluster: look again when the watch brings units home */
	unsigned mount_opens; /* files open on it through the mount */
	int64_t open_mark;    /* cluster: revision of this host's open mark; 0 none, -1 unknown */
	struct timespec idle_since;
	bool defined;		  /* from the configuration: cannot be deleted */
	bool defined_unconfirmed; /* restored as defined, not (yet) in this configuration */
	uint64_t grants, timeouts;
	struct journal journal;
	struct waiter *head, *tail;
	size_t waiting;
	struct holder *holders;
	bool helper_running;
	bool helper_idle;	    /* parked in helper_wake, queue empty */
	bool helper_taking;	    /* between dropping the lock for be_take and back */
	pthread_cond_t helper_wake; /* a waiter for the idle helper, or its end */
	pthread_t helper;
	struct timespec helper_until;		 /* when the helper wakes by itself */
	unsigned references;			 /* node + open files + helper */
	bool cluster_seen;			 /* cluster mode: in the last full load */
	int cluster_value;			 /* cluster mode: what the SysV set must show */
	char *cluster_holders;			 /* cluster mode: "who,who" of every host */
	struct semaphore *live_prev, *live_next; /* monitor's list */
	/* What the monitor last asked the value at: the set's stamp then, and
	 * whether it had settled (so an equal stamp means no change since). */
	int seen_handle;
	long long seen_stamp;
	bool seen_quiet;
};

/* Every counter's stamp, from the monitor's last look (store_monitor.c):
 * the monitor thread's own, an open-addressing table by handle. */
struct stamp_table {
	struct stamp_slot *slots;
	size_t size, count; /* size: 0 or a power of two */
	bool failed;	    /* out of memory while filling */
	bool fresh;	    /* filled by this sweep's look */
	bool force;	    /* the clock went back: ask every counter */
	bool unusable;	    /* the backend failed to give stamps: not asked again */
	long long settled;  /* a change after the look has a stamp >= this */
	time_t enomem_logged;
};

struct hash {
	struct node **buckets;
	size_t size, count;
};

/* An idle undefined semaphore the cluster is to remove (cluster mode). */
struct reap_request {
	struct reap_request *next;
	char path[];
};

struct store {
	pthread_mutex_t lock;
	struct store_options options;
	char state_dir[PATH_MAX];
	struct backing backing;
	struct node *root, *status;
	struct hash by_ino, by_name;
	uint64_t next_ino;
	struct semaphore *live; /* semaphores not deleted */
	size_t live_count;
	struct semaphore *monitor_hand; /* the next the monitor checks (NULL: no sweep on) */
	struct stamp_table stamps;
	size_t idle_pending; /* undefined ones in their grace (at least) */
	struct timespec status_mtime;
	time_t stamp_second; /* journal time stamps: the second, formatted once */
	char stamp[32];
	time_t enospc_logged;	  /* when "out of SysV sets" was last logged */
	time_t state_full_logged; /* when "state_dir full" was last logged */
	time_t excess_logged;	  /* when an outside excess was last logged */
	/* Undefined semaphores come and go with every ACE cycle on a new name:
	 * a few lines a second, then a count, so no peer can flood the log. */
	time_t undefined_second;
	unsigned undefined_logged, undefined_suppressed;
	struct reap_request *reaps; /* for the monitor to ask, outside the lock */
	bool remark_opens;	    /* cluster: a new lease; files open here mark again */
	uid_t euid;		    /* semfs's own: the owner of the sets it makes */
	gid_t egid;
	uint64_t token_floor; /* new semaphores start their tokens here */
	uint64_t grants_total, timeouts_total;
	size_t run_steps_max; /* what the backend takes in one adjust_steps */
	pid_t pid;
	unsigned helpers;
	pthread_cond_t helpers_gone;
	bool stopping;
	bool monitor_running;
	pthread_t monitor;
	pthread_cond_t monitor_wake;
	struct cluster *cluster; /* cluster mode (store_cluster.c); NULL: one host */
	uint64_t owner_ids;	 /* cluster mode: the last owner id handed out */
};

struct done_list {
	struct waiter *first, *last;
};

/* Set by a kick that lands while the helper is not yet in semtimedop, so
 * that the kick is not lost: the helper looks at its queue again instead. */

/* Who owns the directories walk_to_parent makes, and with which mode. */
struct maker {
	uid_t uid;
	gid_t gid;
	mode_t mode;
};

/* store.c */
int be_create(const struct store *store, const char *path, int permissions, key_t *key,
	      int *handle);
int be_create_at(const struct store *store, key_t key, int permissions, int *handle);
int be_attach(const struct store *store, key_t key, uid_t creator, int *handle);
int be_value(const struct store *store, int handle);
int be_last_pid(const struct store *store, int handle);
int be_waiting(const struct store *store, int handle); /* -ENOSYS: unknown */
int be_adjust(const struct store *store, int handle, int delta, bool with_undo);
/* -ENOSYS when the backend moves one delta at a time only. */
int be_adjust_steps(const struct store *store, int handle, const signed char *steps, size_t count);
int be_take(const struct store *store, int handle, const struct timespec *timeout);
int be_undo_to_plain(const struct store *store, int handle);
int be_plain_to_undo(const struct store *store, int handle);
int be_set_owner(const struct store *store, int handle, uid_t uid, gid_t gid, mode_t mode);
/* be_create with `mode` (as be_set_owner makes it), owned by uid:gid. On an
 * error after the set was made, *handle is it (for the caller to remove). */
int be_create_owned(const struct store *store, const char *path, uid_t uid, gid_t gid, mode_t mode,
		    key_t *key, int *handle);
int be_remove(const struct store *store, int handle);
struct semaphore *semaphore_new(struct store *store, key_t key, int semid, unsigned limit);
void node_attach_semaphore(struct node *node, struct semaphore *semaphore);

/* store_tree.c */
void timespec_now(clockid_t clock, struct timespec *now);
int hash_grow(struct hash *hash, bool by_name);
void hash_remove(struct hash *hash, struct node *node, bool by_name);
struct node *node_by_ino(struct store *store, uint64_t ino);
struct node *node_child(struct store *store, struct node *parent, const char *name);
int node_path(const struct node *node, char *out, size_t size);
int child_path(const struct node *parent, const char *name, char *out, size_t size);
bool name_valid(const char *name);
struct node *node_new(struct store *store, struct node *parent, const char *name,
		      enum store_node_kind kind, mode_t mode, uid_t uid, gid_t gid);
void node_detach(struct store *store, struct node *node);
void node_free(struct store *store, struct node *node);
void node_release_if_unused(struct store *store, struct node *node);

/* store_semaphore.c */
void journal_event(struct store *store, struct semaphore *semaphore, const char *event,
		   const char *who, uint64_t token, const char *extra, enum store_change change);
struct holder *holder_get(struct semaphore *semaphore, struct owner *owner, const char *who);
void holder_put_back(struct holder *holder);
void holder_unlink(struct holder *holder);
struct holder *holder_of_owner(struct semaphore *semaphore, struct owner *owner);
void holder_drop_plain(struct semaphore *semaphore, const char *who);
void semaphore_unreference(struct store *store, struct semaphore *semaphore);
void live_remove(struct store *store, struct semaphore *semaphore);
int semaphore_save(struct store *store, struct semaphore *semaphore);
int token_reserve(struct store *store, struct semaphore *semaphore, uint64_t count);
bool set_gone_from_outside(struct store *store, struct semaphore *semaphore,
			   struct done_list *done);
int delete_node(struct store *store, struct node *node, const char *who, struct done_list *done);
void reap_if_idle(struct store *store, struct semaphore *semaphore, struct done_list *done);
void reap_idle_now(struct store *store, struct semaphore *semaphore, struct done_list *done);
void reap_idle_due(struct store *store, struct done_list *done, bool all);
void log_undefined(struct store *store, const char *path, const char *what);
void semaphore_let_go(struct store *store, struct semaphore *semaphore, struct done_list *done);

/* store_rules.c */
void finish(struct store *store, struct waiter *waiter, int result, struct done_list *done);
int grant_prepare(struct store *store, struct semaphore *semaphore, struct waiter *waiter,
		  enum command_verb verb, struct holder **holder);
void grant(struct store *store, struct semaphore *semaphore, struct waiter *waiter,
	   enum command_verb verb, struct holder *holder);
bool handle_gone(int r);
int limit_guard(struct store *store, struct semaphore *semaphore);
void helper_kick(struct semaphore *semaphore);
int take(struct store *store, struct semaphore *semaphore, struct waiter *waiter,
	 const struct command *command, struct done_list *done);
int command_limit(struct store *store, struct semaphore *semaphore, struct waiter *waiter,
		  const struct command *command, struct done_list *done);
int execute(struct store *store, struct semaphore *semaphore, struct waiter *waiter,
	    struct done_list *done);

/* store_helper.c */
void *helper_main(void *argument);
void kick_handler(int signal_number);
/* store_monitor.c */
void *monitor_main(void *argument);

/* store_mount.c */
int create_semaphore(struct store *store, struct node *parent, const char *name, mode_t mode,
		     uid_t uid, gid_t gid, unsigned limit, bool undefined, const char *who,
		     struct node **out);
int make_directory(struct store *store, struct node *parent, const char *name, mode_t mode,
		   uid_t uid, gid_t gid, struct node **out);

/* store_paths.c */
int walk_to_parent(struct store *store, const char *path, const struct maker *make,
		   struct node **parent, const char **leaf);
void prune_implicit(struct store *store, struct node *directory);
bool node_permits(const struct node *node, const struct store_caller *caller, unsigned bits);

/* store_waiters.c */
void done_push(struct done_list *done, struct waiter *waiter, int result);
void run_done(struct done_list *done);
void queue_append(struct semaphore *semaphore, struct waiter *waiter);
void queue_remove(struct semaphore *semaphore, struct waiter *waiter);
void note_queued(struct waiter *waiter, int delta);

/* store_restore.c: every record of state_dir back in the tree. 0 or -errno
 * with a message. */
int store_restore(struct store *store, char *error, size_t error_size);

/* store_cluster.c: the calls above, in cluster mode */
struct cluster_health;
int cluster_store_submit(struct store *store, struct semaphore *semaphore, struct waiter *waiter);
bool cluster_store_cancel(struct store *store, struct waiter *waiter);
void cluster_store_return_units(struct store *store, struct waiter *waiter);
/* `undefined`: an ACE client's name, removed cluster-wide when idle. */
int cluster_store_create(struct store *store, const char *path, mode_t mode, uid_t uid, gid_t gid,
			 unsigned limit, bool undefined, const char *who);
int cluster_store_remove(struct store *store, const char *path, const char *who);
void cluster_store_reap(struct store *store);
/* A file opened here on an undefined semaphore: marked open on every host
 * (0, -ENOENT: the name went as it was opened). Without the store lock. */
int cluster_store_mark_open(struct store *store, struct semaphore *semaphore, const char *path);
/* ... the last one here closed: the mark of that revision goes. */
void cluster_store_unmark_open(struct store *store, const char *path, int64_t revision);
/* After lease-lost: every undefined name open here is marked again, by the
 * monitor outside the store lock. Called with it held. */
void cluster_store_remark(struct store *store);
int cluster_store_chown(struct store *store, const char *path, const mode_t *mode, const uid_t *uid,
			const gid_t *gid);
int cluster_store_define(struct store *store, const char *path, unsigned limit, char *error,
			 size_t error_size);
struct node *cluster_store_node(struct store *store, const char *path);
int cluster_store_mkdir(struct store *store, const char *path, mode_t mode, uid_t uid, gid_t gid);
int cluster_store_rmdir(struct store *store, const char *path);
/* store_mount.c */
int remove_directory(struct store *store, struct node *node);

#endif
