/* replica.h: the cluster's semaphores as every host computes them.
 *
 * In cluster mode etcd holds the truth (shared/CLUSTER.md): per semaphore a
 * `meta` record (limit, plain units out, relaxed ranges, owner) and one
 * queue entry per lock or acquire request, each keyed by the host, its lease
 * and a counter. The replica applies etcd's events in revision order and
 * applies one rule: the holders of a semaphore are its queue entries in
 * create-revision order, skipping relaxed ones, up to `limit - plain`; the
 * rest wait. Every host applies the same rule to the same events, so grants
 * need no write and never conflict; a holder's fencing token is its entry's
 * create revision, which only grows cluster-wide.
 *
 * The replica is a pure function of the events: it never sleeps, never
 * calls etcd or the kernel, never logs. What an event changed comes back as
 * reports (granted, released, relaxed, ...) for the caller to journal and
 * to answer its local waiters with. The planners below compute the write an
 * admin command needs from the replica's state; the caller sends it as a
 * transaction guarded by the revision it read.
 *
 * Keys are relative to the cluster prefix:
 *   sem/NAME/meta          "limit=N plain=N mode=0644 uid=N gid=N defined=0|1
 *                           relaxed=A-B,C-D by=WHO" (relaxed and by may be
 *                           empty; by= comes last and runs to the end)
 *   sem/NAME/q/ENTRY       "kind=lock|acquire who=WHO"; ENTRY is HOST.LEASE.N
 *   sem/NAME/open/HOST     HOST has a file open on it, under HOST's lease (not
 *                          part of the rule: it keeps an idle undefined name)
 *   dir/NAME               a directory made with mkdir: "mode=0755 uid=N gid=N"
 *   hosts/HOST             a daemon's incarnation (ignored by the rule)
 * NAME is replica_key_name()'s escaped form: no '/' in it. */
#ifndef SEMFS_REPLICA_H
#define SEMFS_REPLICA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define REPLICA_RELAXED_MAX 16 /* ranges a meta record may carry */
#define REPLICA_WHO_MAX	    128
#define REPLICA_ENTRY_MAX   192 /* HOST.LEASE.N */
#define REPLICA_FORGIVE_MAX 64	/* lock entries one set may delete (etcd: 128 ops a txn) */

enum replica_kind { REPLICA_LOCK, REPLICA_ACQUIRE };

struct replica_range {
	int64_t from, to; /* create revisions, both included */
};

struct replica_meta {
	int limit;
	int plain; /* units out that no entry stands for (set, outside) */
	mode_t mode;
	uid_t uid;
	gid_t gid;
	bool defined;
	bool undefined;		  /* made on the fly for an ACE client: goes when idle */
	char by[REPLICA_WHO_MAX]; /* who wrote it last: "pid:42@build01"; "" if unknown */
	int relaxed_count;
	struct replica_range relaxed[REPLICA_RELAXED_MAX];
};

/* One event of etcd's watch (or one key of a range read, as a put). */
struct replica_event {
	bool deleted;
	const char *key; /* relative to the prefix */
	size_t key_length;
	const char *value; /* puts only */
	size_t value_length;
	int64_t revision; /* the event's (mod) revision */
	/* A load's events all carry the load's revision; this is the key's own
	 * mod revision (what a compare-and-swap names). 0: `revision`. */
	int64_t mod_revision;
	int64_t create_revision; /* puts only */
	int64_t lease;		 /* puts only; 0: none */
};

enum replica_change {
	REPLICA_CREATED,   /* a meta record appeared */
	REPLICA_CHANGED,   /* its meta record changed (limit, plain, relax) */
	REPLICA_REMOVED,   /* its meta record went */
	REPLICA_QUEUED,	   /* an entry arrived and waits */
	REPLICA_GRANTED,   /* an entry holds a unit now (token: its create revision) */
	REPLICA_RELAXED,   /* a waiting entry was relaxed: done without a unit */
	REPLICA_RELEASED,  /* a holder's entry went: its unit came home */
	REPLICA_CANCELLED, /* a waiting (or relaxed) entry went */
	REPLICA_DEMOTED,   /* a holder became a waiter again: a write broke the rule */
	REPLICA_PERSISTED, /* a holder's entry lost its lease (a lock unit that outlives its host)
			    */
	REPLICA_DIRECTORY, /* a directory record appeared (name: its escaped path) */
	REPLICA_DIRECTORY_REMOVED, /* ... went */
	REPLICA_CLOSED,		   /* a host's open mark went (closed, or its lease) */
};

struct replica_report {
	enum replica_change change;
	const char *name;  /* the semaphore's escaped key name */
	const char *entry; /* HOST.LEASE.N; NULL for meta changes */
	const char *who;   /* the entry's who=, "" for meta changes */
	enum replica_kind kind;
	int64_t token;	  /* the entry's create revision */
	int64_t revision; /* the event's */
	int value;	  /* units at home after the event */
};

typedef void replica_report_fn(void *context, const struct replica_report *report);

struct replica;

struct replica *replica_new(void);
void replica_free(struct replica *replica);

/* Apply one event. Revisions must not go back (-ESTALE); a key or value the
 * replica does not understand is -EINVAL with the reason in `error`; both
 * change nothing. -ENOMEM: nothing changed either. */
int replica_apply(struct replica *replica, const struct replica_event *event,
		  replica_report_fn *report, void *context, char *error, size_t error_size);

/* A range read at `revision` (every key of the prefix, as puts): applied in
 * the order the rule needs (meta records first, then entries by create
 * revision), so no entry is granted that an older one would take back.
 * Stops at the first event that fails (its index in `failed`). */
int replica_load(struct replica *replica, struct replica_event *events, size_t count,
		 replica_report_fn *report, void *context, size_t *failed, char *error,
		 size_t error_size);

/* The last revision applied. */
int64_t replica_revision(const struct replica *replica);

/* A semaphore's state: -ENOENT if it has no meta record. */
struct replica_state {
	struct replica_meta meta;
	int holders;	       /* entries holding a unit */
	int waiting;	       /* entries waiting (not relaxed) */
	int value;	       /* limit - plain - holders */
	int64_t last_revision; /* of its latest event */
	int64_t meta_revision; /* its meta record's mod revision: compare-and-swap on it */
	int opened;	       /* hosts with a file open on it (open/ marks) */
};
int replica_state(const struct replica *replica, const char *name, struct replica_state *state);

/* Whether `host` has its open mark on `name`. */
bool replica_open_on(const struct replica *replica, const char *name, const char *host);

/* The state of one entry: -ENOENT, else 1 holding (token set), 0 waiting,
 * 2 relaxed. */
int replica_entry(const struct replica *replica, const char *name, const char *entry,
		  int64_t *token);

/* Its holders' who= as "who,who" (one per entry, in grant order) into
 * `out`; "" for none. Cut at a whole entry when `size` is too small. */
void replica_holders(const struct replica *replica, const char *name, char *out, size_t size);

/* Visit every semaphore (escaped key name, state), in no particular order. */
typedef void replica_each_fn(void *context, const char *name, const struct replica_state *state);
void replica_each(const struct replica *replica, replica_each_fn *each, void *context);

/* Directories made with mkdir: each (escaped path, mode, owner), in no order. */
typedef void replica_directory_fn(void *context, const char *name, mode_t mode, uid_t uid,
				  gid_t gid);
void replica_each_directory(const struct replica *replica, replica_directory_fn *each,
			    void *context);
/* 0 when `name` has a directory record (mode and owner filled), -ENOENT. */
int replica_directory(const struct replica *replica, const char *name, mode_t *mode, uid_t *uid,
		      gid_t *gid);

/* ---- meta records and keys ------------------------------------------------ */

int replica_meta_parse(const char *text, size_t length, struct replica_meta *meta, char *error,
		       size_t error_size);
/* The record's text; its length, or -ENAMETOOLONG when `size` is too small. */
int replica_meta_format(const struct replica_meta *meta, char *out, size_t size);

/* A semaphore's path in the mount as a key component: '%' and '/' as %XX. */
int replica_key_name(const char *path, char *out, size_t size);

/* ---- planners: what an admin command writes ------------------------------- */
/* Each fills `meta` with the record to write (compare-and-swap on the
 * semaphore's last revision) or returns the command's error, as the
 * single-host rules do: */

/* limit N: -EBUSY when more units are in use than N, -EINVAL when N < 0. */
int replica_plan_limit(const struct replica *replica, const char *name, int limit,
		       struct replica_meta *meta);
/* set V (units at home): plain units are forgiven first, then lock units,
 * whose entries the caller deletes in the same transaction: their ids go
 * to `forgive`; returns how many (-E2BIG past `forgive_max`). Acquire
 * units are never forgiven: -ERANGE outside 0..limit - acquired. */
int replica_plan_set(const struct replica *replica, const char *name, int value,
		     struct replica_meta *meta, char forgive[][REPLICA_ENTRY_MAX], int forgive_max);
/* relax: every entry waiting now is relaxed; 0 with nothing to write (meta
 * unchanged) when nobody waits; -ENOSPC when REPLICA_RELAXED_MAX ranges are
 * still in use. Ranges without entries left are dropped. */
int replica_plan_relax(const struct replica *replica, const char *name, struct replica_meta *meta);
/* unlock: the oldest lease-less holder's entry (a lock unit) to delete,
 * written into `entry` (returns 1); else one plain unit fewer in `meta`
 * (returns 0); else -EOVERFLOW. */
int replica_plan_unlock(const struct replica *replica, const char *name, char *entry,
			size_t entry_size, struct replica_meta *meta);

#endif
