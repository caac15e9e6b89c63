/* cluster_internal.h: the cluster module's private interface, shared by its
 * files (cluster/cluster.c, jobs.c, txn.c) and by nothing else: the
 * loop's state, a request's, and the calls one file makes in another.
 * Everything here belongs to the loop thread, except what `lock` guards. */
#ifndef SEMFS_CLUSTER_INTERNAL_H
#define SEMFS_CLUSTER_INTERNAL_H

#include "cluster.h"

#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#define KEY_NAME_MAX	(3 * 255 + 1) /* a path with every byte escaped */
#define KEY_MAX		(KEY_NAME_MAX + 512)
#define CAS_RETRIES	100 /* an admin command that keeps losing its race */
#define DELETE_RETRY_MS 500
#define LOOP_TICK_MS	100 /* deadlines are checked at least this often */
#define TOUCHED_MAX	64

enum job_type {
	JOB_COMMANDS, /* a waiter's batch */
	JOB_CANCEL,
	JOB_RELEASE_OWNER,
	JOB_RETURN_UNITS,
	JOB_CREATE,
	JOB_REMOVE,
	JOB_DEFINE,
	JOB_MKDIR,
	JOB_BARRIER,
	JOB_RMDIR,
	JOB_DELETE,	 /* an entry that must go: retried until it has */
	JOB_REAP,	 /* an idle undefined semaphore goes, unless used again */
	JOB_CHOWN,	 /* chmod/chown of a semaphore: its meta record */
	JOB_OPEN_MARK,	 /* a file open here: sem/NAME/open/HOST */
	JOB_OPEN_UNMARK, /* ... the last one closed */
};

/* job_chown's r->number: the fields to change. */
enum { CHOWN_MODE = 1, CHOWN_UID = 2, CHOWN_GID = 4 };

enum phase {
	PHASE_IDLE,   /* between steps */
	PHASE_BUSY,   /* an etcd call is out */
	PHASE_AWAIT,  /* waiting for the replica to reach `await` */
	PHASE_QUEUED, /* its entry waits in the queue */
	PHASE_LEASE,  /* waits for this host's new lease (after lease-lost) */
};

struct job;
typedef void step_fn(struct job *job);

struct job {
	struct job *next; /* incoming, or the loop's active list */
	struct cluster *cluster;
	enum job_type type;
	enum phase phase;
	struct waiter *waiter;
	uint64_t owner_id; /* acquire, release, release-owner */
	const char *path;  /* in `text`: thousands may wait, each as a job */
	const char *name;  /* its key name */
	char who[REPLICA_WHO_MAX];
	const struct command *commands; /* the waiter's, or unlocks to return units */
	size_t count;
	size_t index; /* the command running */
	char entry[REPLICA_ENTRY_MAX];
	bool entry_lock; /* the entry is a lock's */
	bool persisted;	 /* ... put without a lease (the fast way) */
	int64_t token;	 /* the entry's create revision */
	int64_t last_token;
	unsigned lock_units;
	int64_t await;
	step_fn *then;
	bool has_deadline;
	int64_t deadline_ms;
	int64_t not_before_ms;
	bool interrupted;
	int retries;
	bool caught_up;		 /* unlock: looked again after catching up with etcd */
	step_fn *after_catch_up; /* job_catch_up's continuation */
	/* Synchronous calls: the caller waits on cluster->done. */
	struct replica_meta meta;
	unsigned number;
	bool even_defined;
	int result;
	int64_t *answer; /* the caller's: r->token when it finished */
	bool finished, abandoned;
	char text[]; /* path, then name */
};

/* An acquire unit of this host: whose it is, to give back on close. */
struct held {
	struct held *next;
	uint64_t owner_id; /* the store's name for the owner (struct owner.id) */
	char name[KEY_NAME_MAX];
	char entry[REPLICA_ENTRY_MAX];
	int64_t token;
};

struct cluster {
	struct cluster_options options;
	char prefix[256];
	char host[REPLICA_WHO_MAX];
	char lease_file[PATH_MAX];
	struct cluster_hooks hooks;
	struct etcd *etcd;
	struct replica *replica;
	int64_t lease;
	int64_t lease_renewed_ms;
	bool lease_renewing;
	bool lease_granting;	   /* a grant is out (after lease-lost) */
	int64_t next_lease_try_ms; /* when to ask again after a failed grant */
	uint64_t entry_counter;
	struct etcd_stream *watch;
	int64_t watch_from;
	bool reloading;
	uint64_t lease_lost, watch_reopened;
	int64_t etcd_revision;	 /* the newest revision of ours an answer showed */
	int64_t newest_revision; /* loop: the newest of any answer (other users') */
	int64_t applied;	 /* the replica's revision, for other threads */
	int64_t lag_since_ms;	 /* loop: ours shown that the watch has not brought */
	int64_t probe_since_ms;	 /* loop: newer revisions than the replica's seen */
	bool probing;		 /* loop: a sync mark is out to test the watch */
	char watch_error[256];
	/* Loop: entries the events being applied changed (jobs_check looks at
	 * their jobs only); `touched_all` after a reload or an overflow. */
	char touched[TOUCHED_MAX][REPLICA_ENTRY_MAX];
	int touched_count;
	bool touched_all;
	/* Loop: who unlocked at revision `unlocked_at`: an unlock writes its
	 * host's sync mark as "unlock by=WHO" with the lock entry's delete, so
	 * that every host journals the unlocker, not the locker. */
	int64_t unlocked_at;
	char unlocked_by[REPLICA_WHO_MAX];

	/* Loop thread only. */
	struct job *active;
	struct held *held;
	int64_t next_keepalive_ms;

	pthread_mutex_t lock; /* incoming, the flags below, sync results */
	pthread_cond_t done;
	struct job *incoming;
	uint64_t *lost_ids; /* owners whose acquire units a lost lease took */
	size_t lost_count, lost_allocated;
	bool running; /* the loop thread exists */
	bool stopping;
	pthread_t thread;
	/* cluster_drive: what the loop also runs, and whether it runs now. */
	int io_fd;
	void (*io_run)(void *context);
	void *io_context;
	bool io_running;
	pthread_cond_t io_idle;
};

/* txn.c: etcd's JSON for keys, compares and operations; times */
int64_t cluster_now_ms(void);
/* PREFIX + the formatted rest, base64 (a json string). */
struct json_object *txn_key(const struct cluster *c, const char *format, ...)
    __attribute__((format(printf, 2, 3)));
struct json_object *txn_range_end(const struct cluster *c, const char *format, ...)
    __attribute__((format(printf, 2, 3)));
/* target CREATE or MOD, result EQUAL/GREATER/LESS; `end` (may be NULL): a range. */
struct json_object *txn_compare(struct json_object *k, struct json_object *end, const char *target,
				const char *result, int64_t value);
struct json_object *txn_put(struct json_object *k, const char *value, int64_t lease);
/* Compare: key k's value is exactly `value`. */
struct json_object *txn_compare_value(struct json_object *k, const char *value);
struct json_object *txn_delete(struct json_object *k, struct json_object *end);
/* Compares and operations: NULL-terminated lists, taken over. */
struct json_object *txn_new(const struct cluster *cluster, struct json_object **compares,
			    struct json_object **ops);
struct json_object *txn_sync_put(const struct cluster *c);
/* The sync mark that says who unlocked (see unlocked_by). */
struct json_object *txn_unlock_mark(const struct cluster *c, const char *who);
bool txn_succeeded(struct json_object *response);
/* The revision an answer was made at (0 if it says none). */
int64_t txn_revision(struct json_object *response);
/* Notes etcd's newest revision, for the watch's lag. */
void cluster_seen(struct cluster *c, struct json_object *response);
void cluster_seen_any(struct cluster *c, struct json_object *response);
/* A key's escaped name back to the semaphore's path. */
int cluster_path_of(const char *name, char *path, size_t size);

/* jobs.c: a job is one store request as the loop carries it out */
struct job *job_new(struct cluster *c, enum job_type type, const char *path);
void job_enqueue(struct cluster *c, struct job *r); /* any thread */
void job_unlink(struct cluster *c, struct job *r);
void job_finish(struct job *r, int error);
void job_next(struct job *r); /* the next command of a batch */
void job_await(struct job *r, int64_t revision, step_fn *then);
void jobs_check(struct cluster *c); /* after the replica moved */
void job_abandon(struct job *r, int error);
void job_delete_start(struct job *r);
void job_delete_entry(struct cluster *c, const char *name, const char *entry, int64_t token);
void job_create(struct job *r);
void job_remove(struct job *r);
void job_reap(struct job *r);
void job_chown(struct job *r);
void job_open_mark(struct job *r);
void job_open_unmark(struct job *r);
void job_define(struct job *r);
void job_mkdir(struct job *r);
void job_barrier(struct job *r);
void job_catch_up(struct job *r, step_fn *then);
void job_rmdir(struct job *r);
void jobs_release_owner(struct cluster *c, uint64_t owner_id, bool delete_entries);
void jobs_cancel(struct cluster *c, struct waiter *waiter);

/* cluster.c */
bool cluster_touched(const struct cluster *c, const char *entry);
void cluster_mark_lost(struct cluster *c, uint64_t owner_id);

#endif
