/* store.c: names, semaphores, holders, journals and the FIFO waiter queues.
 *
 * How a unit reaches a waiter. An uncontended lock/acquire is a non-blocking
 * semop, answered at once. When none is free, the request becomes a waiter at
 * the tail of its semaphore's queue and the semaphore gets a helper thread (if
 * it has none). The helper sleeps in semtimedop(-1, SEM_UNDO) *for the queue*,
 * in the kernel's own queue next to any outside SysV user; when it wins a unit
 * it hands it to whoever heads the queue at that moment, or gives it back if
 * the queue emptied meanwhile. So a waiter that is cancelled never strands a
 * unit, and a thousand waiters cost one thread. The unit is taken with
 * SEM_UNDO so that a daemon crash returns it; a `lock` waiter gets it turned
 * into a plain unit atomically (sysv_undo_to_plain).
 *
 * Completions: everything that finishes a queued waiter (grant, timeout,
 * relax, delete, shutdown) only moves it onto a local done list under the
 * lock; run_done() calls complete() after the lock is dropped. */
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
 * sooner; this only bounds a kick lost in the instant before semtimedop. Every
 * wake-up re-queues the helper at the tail of the kernel's queue, behind any
 * outside SysV waiter, so it must be rare. */
#define HELPER_NAP	   5.0
#define MONITOR_PERIOD	   0.25 /* seconds: outside changes show within this */
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
	struct node *alias_of;		     /* an alias: the node it stands for */
	struct node *first_alias;	     /* live aliases of this node */
	struct node *alias_prev, *alias_next;
	bool implicit;		/* a directory made for a name: goes when it empties */
	unsigned opens;		/* open files on this nodeid */
	unsigned queued_writes; /* waits holding this nodeid's inode lock */
};

struct holder {
	struct semaphore *semaphore;
	struct owner *owner; /* NULL: plain `lock` units */
	unsigned units;
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
	unsigned acquired;	  /* units held by owners (acquire), with SEM_UNDO */
	int last_value;		  /* as of our last journal line: to notice outside changes */
	bool removed;		  /* the SysV set is gone: everything fails with EIDRM */
	bool undefined;		  /* made by an ACE acquire of an unknown name: goes when idle */
	bool defined;		  /* from the configuration: cannot be deleted */
	bool defined_unconfirmed; /* restored as defined, not (yet) in this configuration */
	uint64_t grants, timeouts;
	struct journal journal;
	struct waiter *head, *tail;
	size_t waiting;
	struct holder *holders;
	bool helper_running;
	pthread_t helper;
	struct timespec helper_until;		 /* when the helper wakes by itself */
	unsigned references;			 /* node + open files + helper */
	struct semaphore *live_prev, *live_next; /* monitor's list */
};

struct hash {
	struct node **buckets;
	size_t size, count;
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
	struct timespec status_mtime;
	time_t stamp_second; /* journal time stamps: the second, formatted once */
	char stamp[32];
	time_t enospc_logged;	  /* when "out of SysV sets" was last logged */
	time_t state_full_logged; /* when "state_dir full" was last logged */
	time_t excess_logged;	  /* when an outside excess was last logged */
	uint64_t token_floor;	  /* new semaphores start their tokens here */
	uint64_t grants_total, timeouts_total;
	pid_t pid;
	unsigned helpers;
	pthread_cond_t helpers_gone;
	bool stopping;
	bool monitor_running;
	pthread_t monitor;
	pthread_cond_t monitor_wake;
};

struct done_list {
	struct waiter *first, *last;
};

/* Set by a kick that lands while the helper is not yet in semtimedop, so
 * that the kick is not lost: the helper looks at its queue again instead. */
static __thread volatile sig_atomic_t helper_kicked;

/* ---- the backend (see backend.h) ------------------------------------------ */

#define BACKEND(store)		     ((store)->options.backend)
#define BACKEND_CALL(store, op, ...) BACKEND(store)->ops->op(BACKEND(store)->self, __VA_ARGS__)

static int be_create(const struct store *store, const char *path, int permissions, key_t *key,
		     int *handle)
{
	return BACKEND_CALL(store, create, path, permissions, key, handle);
}

static int be_create_at(const struct store *store, key_t key, int permissions, int *handle)
{
	return BACKEND_CALL(store, create_at, key, permissions, handle);
}

static int be_attach(const struct store *store, key_t key, uid_t creator, int *handle)
{
	return BACKEND_CALL(store, attach, key, creator, handle);
}

static int be_value(const struct store *store, int handle)
{
	return BACKEND_CALL(store, value, handle);
}

static int be_last_pid(const struct store *store, int handle)
{
	return BACKEND_CALL(store, last_pid, handle);
}

static int be_adjust(const struct store *store, int handle, int delta, bool with_undo)
{
	return BACKEND_CALL(store, adjust, handle, delta, with_undo);
}

static int be_take(const struct store *store, int handle, const struct timespec *timeout)
{
	return BACKEND_CALL(store, take, handle, timeout);
}

static int be_undo_to_plain(const struct store *store, int handle)
{
	return BACKEND_CALL(store, undo_to_plain, handle);
}

static int be_set_owner(const struct store *store, int handle, uid_t uid, gid_t gid, mode_t mode)
{
	return BACKEND_CALL(store, set_owner, handle, uid, gid, mode);
}

static int be_remove(const struct store *store, int handle)
{
	return BACKEND_CALL(store, remove, handle);
}

/* ---- small helpers ------------------------------------------------------ */

static void timespec_now(clockid_t clock, struct timespec *now)
{
	clock_gettime(clock, now);
}

static void done_push(struct done_list *done, struct waiter *waiter, int result)
{
	waiter->state = WAITER_DONE;
	waiter->result = result;
	waiter->queue_next = NULL;
	if (done->last)
		done->last->queue_next = waiter;
	else
		done->first = waiter;
	done->last = waiter;
}

static void run_done(struct done_list *done)
{
	struct waiter *waiter = done->first;

	while (waiter) {
		struct waiter *next = waiter->queue_next; /* complete() may free it */
		waiter->complete(waiter, waiter->result < 0 ? -waiter->result : 0);
		waiter = next;
	}
	done->first = done->last = NULL;
}

/* ---- hash tables: ino -> node, (parent, name) -> node ------------------- */

static uint64_t hash_name(uint64_t parent, const char *name)
{
	uint64_t h = 1469598103934665603ULL ^ parent;
	for (const unsigned char *p = (const unsigned char *)name; *p; p++)
		h = (h ^ *p) * 1099511628211ULL;
	return h;
}

static uint64_t hash_ino(uint64_t ino)
{
	return ino * 0x9E3779B97F4A7C15ULL;
}

static struct node **hash_chain(struct hash *hash, struct node *node, bool by_name)
{
	uint64_t h = by_name ? hash_name(node->parent->ino, node->name) : hash_ino(node->ino);
	return &hash->buckets[h & (hash->size - 1)];
}

static int hash_insert(struct hash *hash, struct node *node, bool by_name);

static int hash_grow(struct hash *hash, bool by_name)
{
	struct hash bigger = {.size = hash->size ? hash->size * 2 : 1024};

	bigger.buckets = calloc(bigger.size, sizeof(*bigger.buckets));
	if (!bigger.buckets)
		return -ENOMEM;
	for (size_t i = 0; i < hash->size; i++) {
		struct node *node = hash->buckets[i];
		while (node) {
			struct node *next = by_name ? node->name_chain : node->ino_chain;
			hash_insert(&bigger, node, by_name);
			node = next;
		}
	}
	free(hash->buckets);
	*hash = bigger;
	return 0;
}

static int hash_insert(struct hash *hash, struct node *node, bool by_name)
{
	if (hash->count >= hash->size) {
		int r = hash_grow(hash, by_name);
		if (r < 0)
			return r;
	}
	struct node **chain = hash_chain(hash, node, by_name);
	if (by_name)
		node->name_chain = *chain;
	else
		node->ino_chain = *chain;
	*chain = node;
	hash->count++;
	return 0;
}

static void hash_remove(struct hash *hash, struct node *node, bool by_name)
{
	for (struct node **p = hash_chain(hash, node, by_name); *p;
	     p = by_name ? &(*p)->name_chain : &(*p)->ino_chain) {
		if (*p == node) {
			*p = by_name ? node->name_chain : node->ino_chain;
			hash->count--;
			return;
		}
	}
}

static struct node *node_by_ino(struct store *store, uint64_t ino)
{
	struct node *node = store->by_ino.buckets[hash_ino(ino) & (store->by_ino.size - 1)];
	while (node && node->ino != ino)
		node = node->ino_chain;
	return node;
}

/* A nodeid from the kernel: the node itself, or the node an alias stands for. */
static struct node *node_resolve(struct store *store, uint64_t nodeid)
{
	struct node *node = node_by_ino(store, nodeid);
	return node && node->alias_of ? node->alias_of : node;
}

static struct node *node_child(struct store *store, struct node *parent, const char *name)
{
	uint64_t h = hash_name(parent->ino, name);
	struct node *node = store->by_name.buckets[h & (store->by_name.size - 1)];
	while (node && !(node->parent == parent && strcmp(node->name, name) == 0))
		node = node->name_chain;
	return node;
}

/* ---- nodes --------------------------------------------------------------- */

static int node_path(const struct node *node, char *out, size_t size)
{
	const struct node *chain[PATH_MAX / 2];
	size_t depth = 0, used = 0;

	for (; node && node->parent; node = node->parent) {
		if (depth == sizeof(chain) / sizeof(chain[0]))
			return -ENAMETOOLONG;
		chain[depth++] = node;
	}
	out[0] = '\0';
	while (depth-- > 0) {
		int n =
		    snprintf(out + used, size - used, "%s%s", used ? "/" : "", chain[depth]->name);
		if (n < 0 || (size_t)n >= size - used)
			return -ENAMETOOLONG;
		used += (size_t)n;
	}
	return 0;
}

/* The path of a new child `name` of `parent`. */
static int child_path(const struct node *parent, const char *name, char *out, size_t size)
{
	char path[PATH_MAX];
	int r = node_path(parent, path, sizeof(path));

	if (r == 0 && snprintf(out, size, "%s%s%s", path, path[0] ? "/" : "", name) >= (int)size)
		r = -ENAMETOOLONG;
	return r;
}

static bool name_valid(const char *name)
{
	size_t length = strlen(name);
	return length > 0 && length <= STORE_NAME_MAX && !strchr(name, '/') &&
	       strcmp(name, ".") != 0 && strcmp(name, "..") != 0;
}

static struct node *node_new(struct store *store, struct node *parent, const char *name,
			     enum store_node_kind kind, mode_t mode, uid_t uid, gid_t gid)
{
	struct node *node = calloc(1, sizeof(*node));
	if (!node)
		return NULL;
	node->name = strdup(name);
	if (!node->name) {
		free(node);
		return NULL;
	}
	node->ino = store->next_ino++;
	node->kind = kind;
	node->parent = parent;
	node->mode = mode;
	node->uid = uid;
	node->gid = gid;
	timespec_now(CLOCK_REALTIME, &node->mtime);
	node->ctime = node->mtime;
	if (hash_insert(&store->by_ino, node, false) < 0) {
		free(node->name);
		free(node);
		return NULL;
	}
	if (parent) {
		if (hash_insert(&store->by_name, node, true) < 0) {
			hash_remove(&store->by_ino, node, false);
			free(node->name);
			free(node);
			return NULL;
		}
		node->prev_sibling = parent->last_child;
		if (parent->last_child)
			parent->last_child->next_sibling = node;
		else
			parent->first_child = node;
		parent->last_child = node;
	}
	return node;
}

/* Take a node out of the namespace; it lives on while the kernel knows it. */
static void node_detach(struct store *store, struct node *node)
{
	struct node *parent = node->parent;

	hash_remove(&store->by_name, node, true);
	if (node->prev_sibling)
		node->prev_sibling->next_sibling = node->next_sibling;
	else
		parent->first_child = node->next_sibling;
	if (node->next_sibling)
		node->next_sibling->prev_sibling = node->prev_sibling;
	else
		parent->last_child = node->prev_sibling;
	node->prev_sibling = node->next_sibling = NULL;
	node->unlinked = true;
}

static void semaphore_unreference(struct store *store, struct semaphore *semaphore);

static void node_free(struct store *store, struct node *node)
{
	hash_remove(&store->by_ino, node, false);
	if (node->semaphore) {
		node->semaphore->node = NULL;
		semaphore_unreference(store, node->semaphore);
	}
	free(node->name);
	free(node);
}

static void node_release_if_unused(struct store *store, struct node *node)
{
	if (node->alias_of) {
		if (node->lookups > 0 || node->opens > 0)
			return;
		struct node *target = node->alias_of;
		if (node->alias_prev)
			node->alias_prev->alias_next = node->alias_next;
		else
			target->first_alias = node->alias_next;
		if (node->alias_next)
			node->alias_next->alias_prev = node->alias_prev;
		hash_remove(&store->by_ino, node, false);
		free(node->name);
		free(node);
		node_release_if_unused(store, target);
		return;
	}
	if (node->unlinked && node->lookups == 0 && !node->first_alias)
		node_free(store, node);
}

static struct node *alias_new(struct store *store, struct node *target)
{
	struct node *alias =
	    node_new(store, NULL, "", NODE_SEMAPHORE, target->mode, target->uid, target->gid);
	if (!alias)
		return NULL;
	alias->alias_of = target;
	alias->alias_next = target->first_alias;
	if (target->first_alias)
		target->first_alias->alias_prev = alias;
	target->first_alias = alias;
	return alias;
}

/* Which nodeid a lookup of `node` gets: see store.h on aliases. */
static struct node *lookup_choice(struct store *store, struct node *node, bool canonical)
{
	if (canonical || node->kind != NODE_SEMAPHORE)
		return node;
	/* A fresh one every time: two path walks that shared an inode could
	 * meet a waiting write's lock between their lookup and their write. */
	struct node *alias = alias_new(store, node);
	return alias ? alias : node; /* no memory: share, and risk the wait */
}

/* A queued write holds its inode's lock: count it on the nodeid it came by. */
static void note_queued_write(struct store *store, struct waiter *waiter, int delta)
{
	struct node *via = waiter->via_nodeid ? node_by_ino(store, waiter->via_nodeid) : NULL;
	if (via)
		via->queued_writes = (unsigned)((int)via->queued_writes + delta);
}

/* ---- journal ------------------------------------------------------------- */

static void journal_event(struct store *store, struct semaphore *semaphore, const char *event,
			  const char *who, uint64_t token, const char *extra, bool announced)
{
	struct timespec now;
	char line[512], token_text[32] = "";
	int value = semaphore->removed ? -1 : be_value(store, semaphore->semid);

	timespec_now(CLOCK_REALTIME, &now);
	if (now.tv_sec != store->stamp_second || !store->stamp[0]) {
		struct tm utc;
		gmtime_r(&now.tv_sec, &utc);
		strftime(store->stamp, sizeof(store->stamp), "%Y-%m-%dT%H:%M:%S", &utc);
		store->stamp_second = now.tv_sec;
	}
	if (token)
		snprintf(token_text, sizeof(token_text), " token=%" PRIu64, token);
	/* seq= last: followers see a gap, not a guess, when lines were dropped. */
	int length =
	    snprintf(line, sizeof(line),
		     "%s.%06ldZ %s by=%s value=%d limit=%u waiting=%zu%s%s%s seq=%" PRIu64 "\n",
		     store->stamp, now.tv_nsec / 1000, event, who, value, semaphore->limit,
		     semaphore->waiting, token_text, extra ? " " : "", extra ? extra : "",
		     semaphore->journal.lines + 1);
	if (length >= (int)sizeof(line)) {
		length = sizeof(line) - 1;
		line[length - 1] = '\n';
	}
	/* Out of memory only loses this line; the state itself is unharmed. */
	(void)journal_append(&semaphore->journal, line, (size_t)length);
	semaphore->last_value = value;
	store->status_mtime = now;
	if (semaphore->node) {
		semaphore->node->mtime = now;
		if (store->options.changed && !semaphore->node->unlinked) {
			char path[PATH_MAX];
			if (node_path(semaphore->node, path, sizeof(path)) == 0)
				store->options.changed(store->options.changed_context,
						       semaphore->ino, path, announced);
		}
	}
}

/* ---- holders ------------------------------------------------------------- */

/* The holder record a grant will count on, found or made *before* the unit
 * is taken: an allocation that fails then takes nothing. */
static struct holder *holder_get(struct semaphore *semaphore, struct owner *owner, const char *who)
{
	struct holder **tail = &semaphore->holders;

	for (struct holder *h = semaphore->holders; h; h = h->next_in_semaphore)
		if (h->owner == owner && (owner || strcmp(h->who, who) == 0))
			return h;
	struct holder *holder = calloc(1, sizeof(*holder));
	if (!holder)
		return NULL;
	holder->semaphore = semaphore;
	holder->owner = owner;
	snprintf(holder->who, sizeof(holder->who), "%s", who);
	while (*tail)
		tail = &(*tail)->next_in_semaphore;
	*tail = holder;
	if (owner) {
		holder->next_in_owner = owner->holders;
		owner->holders = holder;
	}
	return holder;
}

static void holder_unlink(struct holder *holder);

/* A grant prepared with holder_get() did not happen. */
static void holder_put_back(struct holder *holder)
{
	if (holder->units == 0)
		holder_unlink(holder);
}

static void holder_unlink(struct holder *holder)
{
	struct holder **p;

	for (p = &holder->semaphore->holders; *p; p = &(*p)->next_in_semaphore) {
		if (*p == holder) {
			*p = holder->next_in_semaphore;
			break;
		}
	}
	if (holder->owner) {
		for (p = &holder->owner->holders; *p; p = &(*p)->next_in_owner) {
			if (*p == holder) {
				*p = holder->next_in_owner;
				break;
			}
		}
	}
	free(holder);
}

static struct holder *holder_of_owner(struct semaphore *semaphore, struct owner *owner)
{
	for (struct holder *h = owner ? owner->holders : NULL; h; h = h->next_in_owner)
		if (h->semaphore == semaphore)
			return h;
	return NULL;
}

/* An unlock returns a plain unit: credit the unlocker's own, else the oldest. */
static void holder_drop_plain(struct semaphore *semaphore, const char *who)
{
	struct holder *oldest = NULL, *match = NULL;

	for (struct holder *h = semaphore->holders; h; h = h->next_in_semaphore) {
		if (h->owner)
			continue;
		if (!oldest)
			oldest = h;
		if (!match && strcmp(h->who, who) == 0)
			match = h;
	}
	struct holder *holder = match ? match : oldest;
	if (holder && --holder->units == 0)
		holder_unlink(holder);
}

/* ---- semaphores ---------------------------------------------------------- */

static void semaphore_unreference(struct store *store, struct semaphore *semaphore)
{
	if (--semaphore->references > 0)
		return;
	while (semaphore->holders)
		holder_unlink(semaphore->holders);
	journal_free(&semaphore->journal);
	free(semaphore);
}

static void live_remove(struct store *store, struct semaphore *semaphore)
{
	if (semaphore->live_prev)
		semaphore->live_prev->live_next = semaphore->live_next;
	else if (store->live == semaphore)
		store->live = semaphore->live_next;
	else
		return; /* not on the list */
	if (semaphore->live_next)
		semaphore->live_next->live_prev = semaphore->live_prev;
	semaphore->live_prev = semaphore->live_next = NULL;
	store->live_count--;
}

static void queue_remove(struct semaphore *semaphore, struct waiter *waiter)
{
	note_queued_write(semaphore->store, waiter, -1);
	if (waiter->queue_prev)
		waiter->queue_prev->queue_next = waiter->queue_next;
	else
		semaphore->head = waiter->queue_next;
	if (waiter->queue_next)
		waiter->queue_next->queue_prev = waiter->queue_prev;
	else
		semaphore->tail = waiter->queue_prev;
	waiter->queue_prev = waiter->queue_next = NULL;
	semaphore->waiting--;
}

static void queue_append(struct semaphore *semaphore, struct waiter *waiter)
{
	waiter->queue_next = NULL;
	waiter->queue_prev = semaphore->tail;
	if (semaphore->tail)
		semaphore->tail->queue_next = waiter;
	else
		semaphore->head = waiter;
	semaphore->tail = waiter;
	semaphore->waiting++;
	waiter->state = WAITER_QUEUED;
	note_queued_write(semaphore->store, waiter, 1);
}

static void record_of(struct semaphore *semaphore, struct backing_record *record)
{
	struct node *node = semaphore->node;
	*record = (struct backing_record){
	    .key = semaphore->key,
	    .limit = semaphore->limit,
	    .mode = node ? node->mode : 0600,
	    .uid = node ? node->uid : 0,
	    .gid = node ? node->gid : 0,
	    .token_reserved = semaphore->token_reserved,
	    .undefined = semaphore->undefined,
	    .defined = semaphore->defined,
	};
}

/* Durable before acknowledged: callers change the semaphore, save, and undo
 * their change if this fails. */
static int semaphore_save(struct store *store, struct semaphore *semaphore)
{
	struct backing_record record;
	char path[PATH_MAX];

	if (!semaphore->node || semaphore->node->unlinked)
		return 0;
	int r = node_path(semaphore->node, path, sizeof(path));
	if (r < 0)
		return r;
	record_of(semaphore, &record);
	r = backing_write(&store->backing, path, &record);
	if (r == -ENOSPC || r == -EDQUOT) {
		/* Once a minute: a client retrying in a loop must not flood the log. */
		if (time(NULL) - store->state_full_logged >= 60) {
			store->state_full_logged = time(NULL);
			log_warnx("cannot save semaphore %s: state_dir %s is full (%s)", path,
				  store->state_dir, strerror(-r));
		}
	}
	return r;
}

/* Fencing tokens are reserved on disk a block at a time *before* any of them
 * is handed out, so no crash lets one be handed out twice. */
static int token_reserve(struct store *store, struct semaphore *semaphore, uint64_t count)
{
	if (semaphore->token + count < semaphore->token_reserved)
		return 0;
	uint64_t previous = semaphore->token_reserved;
	semaphore->token_reserved = semaphore->token + count + TOKEN_BLOCK;
	int r = semaphore_save(store, semaphore);
	if (r < 0)
		semaphore->token_reserved = previous;
	return r;
}

static void finish(struct store *store, struct waiter *waiter, int result, struct done_list *done);

/* The set is gone (rm, or ipcrm from outside): every waiter fails. */
static void semaphore_mark_removed(struct store *store, struct semaphore *semaphore,
				   const char *who, struct done_list *done)
{
	if (semaphore->removed)
		return;
	semaphore->removed = true;
	live_remove(store, semaphore);
	while (semaphore->head) {
		struct waiter *waiter = semaphore->head;
		queue_remove(semaphore, waiter);
		finish(store, waiter, -EIDRM, done);
	}
	journal_event(store, semaphore, "delete", who, 0, NULL, false);
}

static void helper_kick(struct semaphore *semaphore);
static int take(struct store *store, struct semaphore *semaphore, struct waiter *waiter,
		const struct command *command, struct done_list *done);

/* The set went from outside (ipcrm). A defined semaphore must always exist:
 * a new set with its limit replaces it, the acquire units still out are
 * taken again for their owners (with SEM_UNDO, as before), waiters keep
 * their place; plain units that were out are lost, and the journal says so.
 * Any other semaphore is gone. true: recreated. */
static bool set_gone_from_outside(struct store *store, struct semaphore *semaphore,
				  struct done_list *done)
{
	char path[PATH_MAX], full[PATH_MAX], extra[64];
	key_t key;
	int semid = -1;

	if (!semaphore->defined || semaphore->removed || store->stopping || !semaphore->node ||
	    node_path(semaphore->node, path, sizeof(path)) < 0) {
		semaphore_mark_removed(store, semaphore, "sysv", done);
		return false;
	}
	backing_full_path(&store->backing, path, full, sizeof(full));
	int r = be_create(store, full, (int)semaphore->node->mode, &key, &semid);
	if (r == 0)
		r = be_adjust(store, semid, (int)semaphore->limit, false);
	if (r == 0)
		r = be_set_owner(store, semid, semaphore->node->uid, semaphore->node->gid,
				 semaphore->node->mode);
	if (r == 0)
		r = be_adjust(store, semid, -(int)semaphore->acquired, true);
	key_t old_key = semaphore->key;
	int old_semid = semaphore->semid;
	if (r == 0) {
		semaphore->key = key;
		semaphore->semid = semid;
		r = semaphore_save(store, semaphore);
	}
	if (r < 0) {
		semaphore->key = old_key;
		semaphore->semid = old_semid;
		if (semid >= 0)
			(void)be_remove(store, semid);
		log_warnx("defined semaphore %s: its SysV set was removed from outside and cannot "
			  "be made again: %s",
			  path, strerror(-r));
		semaphore_mark_removed(store, semaphore, "sysv", done);
		return false;
	}
	unsigned lost = 0; /* plain units that were out: their set is gone */
	for (struct holder *h = semaphore->holders, *next; h; h = next) {
		next = h->next_in_semaphore;
		if (!h->owner) {
			lost += h->units;
			holder_unlink(h);
		}
	}
	snprintf(extra, sizeof(extra), "was=0x%08x lost=%u", (unsigned)old_key, lost);
	journal_event(store, semaphore, "recreate", "sysv", 0, extra, false);
	log_warnx("defined semaphore %s: its SysV set 0x%08x was removed from outside; made "
		  "again at key 0x%08x with limit %u",
		  path, (unsigned)old_key, (unsigned)key, semaphore->limit);
	if (semaphore->helper_running)
		helper_kick(semaphore); /* to sleep on the new set */
	return true;
}

static void prune_implicit(struct store *store, struct node *directory);

/* rm, `delete NAME`, an idle undefined semaphore: the set and its record go,
 * waiters fail with EIDRM, the node lives on while the kernel knows it. */
static int delete_node(struct store *store, struct node *node, const char *who,
		       struct done_list *done)
{
	struct semaphore *semaphore = node->semaphore;
	struct node *parent = node->parent;
	char path[PATH_MAX];
	int r = node_path(node, path, sizeof(path));

	if (r < 0)
		return r;
	/* A re-created name must not hand out this one's tokens again. */
	if (semaphore->token_reserved > store->token_floor) {
		r = backing_raise_token_floor(&store->backing, semaphore->token_reserved);
		if (r < 0)
			return r;
		store->token_floor = semaphore->token_reserved;
	}
	semaphore_mark_removed(store, semaphore, who, done);
	(void)be_remove(store, semaphore->semid);
	(void)backing_remove(&store->backing, path);
	node_detach(store, node);
	timespec_now(CLOCK_REALTIME, &parent->mtime);
	parent->ctime = parent->mtime;
	node_release_if_unused(store, node);
	prune_implicit(store, parent);
	return 0;
}

/* ACE's undefined semaphores last while someone uses them: no holder, no
 * waiter, no open file or connection, every unit home. */
static void reap_if_idle(struct store *store, struct semaphore *semaphore, struct done_list *done)
{
	if (!semaphore->undefined || semaphore->removed || semaphore->references != 1 ||
	    semaphore->head || semaphore->holders || !semaphore->node ||
	    semaphore->node->unlinked || store->stopping)
		return;
	if (be_value(store, semaphore->semid) != (int)semaphore->limit)
		return;
	char path[PATH_MAX];
	if (node_path(semaphore->node, path, sizeof(path)) == 0)
		log_info("undefined semaphore %s removed: idle", path);
	(void)delete_node(store, semaphore->node, "semfs:idle", done);
}

/* Drop one reference (an open file, a connection, a helper). */
static void semaphore_let_go(struct store *store, struct semaphore *semaphore,
			     struct done_list *done)
{
	if (semaphore->references > 1) {
		semaphore->references--;
		reap_if_idle(store, semaphore, done);
	} else {
		semaphore_unreference(store, semaphore);
	}
}

/* ---- running commands --------------------------------------------------- */

static int execute(struct store *store, struct semaphore *semaphore, struct waiter *waiter,
		   struct done_list *done);

/* A request ended: a queued one goes to the done list. A failed request whose
 * earlier commands changed something gets no IN_MODIFY from its write. */
static void finish(struct store *store, struct waiter *waiter, int result, struct done_list *done)
{
	struct semaphore *semaphore = waiter->semaphore;

	if (result < 0 && waiter->changed_something && waiter->announced_by_reply &&
	    semaphore->node && !semaphore->node->unlinked && store->options.changed) {
		char path[PATH_MAX];
		if (node_path(semaphore->node, path, sizeof(path)) == 0)
			store->options.changed(store->options.changed_context, semaphore->ino, path,
					       false);
	}
	if (done)
		done_push(done, waiter, result);
	else
		waiter->state = WAITER_DONE;
}

/* What a grant needs, made ready before the unit is taken: its token
 * reserved on disk and its holder record allocated. */
static int grant_prepare(struct store *store, struct semaphore *semaphore, struct waiter *waiter,
			 enum command_verb verb, struct holder **holder)
{
	int r = token_reserve(store, semaphore, 1);
	if (r < 0)
		return r;
	*holder = holder_get(semaphore, verb == VERB_ACQUIRE ? waiter->owner : NULL, waiter->who);
	return *holder ? 0 : -ENOMEM;
}

static void grant(struct store *store, struct semaphore *semaphore, struct waiter *waiter,
		  enum command_verb verb, struct holder *holder)
{
	waiter->token = ++semaphore->token;
	waiter->changed_something = true;
	semaphore->grants++;
	store->grants_total++;
	holder->units++;
	if (verb == VERB_ACQUIRE)
		semaphore->acquired++;
	else
		waiter->lock_units++;
	journal_event(store, semaphore, command_verb_name(verb), waiter->who, waiter->token, NULL,
		      waiter->announced_by_reply);
}

static bool handle_gone(int r)
{
	return r == -EIDRM || r == -EINVAL;
}

/* Units beyond the limit came from outside (another SysV user's semop, or a
 * SETVAL): take them back before anyone is handed one. The kernel's value
 * plus the acquired units may never pass the limit; plain units in use are
 * limit - value - acquired. Returns the value, or -errno. */
static int limit_guard(struct store *store, struct semaphore *semaphore)
{
	for (int attempt = 0;; attempt++) {
		int value = be_value(store, semaphore->semid);
		if (value < 0)
			return value;
		int excess = value + (int)semaphore->acquired - (int)semaphore->limit;
		if (excess <= 0)
			return value;
		int pid = be_last_pid(store, semaphore->semid);
		int r = be_adjust(store, semaphore->semid, -excess, false);
		if (r == -EAGAIN && attempt < 3)
			continue; /* someone took one meanwhile: look again */
		if (r < 0)
			return r;
		char who[32], extra[32];
		snprintf(who, sizeof(who), "sysv:%d", pid);
		snprintf(extra, sizeof(extra), "reverted=%d", excess);
		journal_event(store, semaphore, "outside-change", who, 0, extra, false);
		if (time(NULL) - store->excess_logged >= 60) {
			store->excess_logged = time(NULL);
			char path[PATH_MAX] = "?";
			if (semaphore->node)
				(void)node_path(semaphore->node, path, sizeof(path));
			log_warnx(
			    "semaphore %s: pid %d raised its SysV value past the limit by %d; "
			    "taken back (logged once a minute)",
			    path, pid, excess);
		}
		return value - excess;
	}
}

static void *helper_main(void *argument);

static void helper_kick(struct semaphore *semaphore)
{
	pthread_kill(semaphore->helper, HELPER_KICK_SIGNAL);
}

/* An idle helper would catch the next unit in semtimedop and hand it back a
 * moment later; send it away as soon as its queue is empty. */
static void helper_release_if_idle(struct semaphore *semaphore)
{
	if (semaphore->helper_running && !semaphore->head)
		helper_kick(semaphore);
}

static int helper_start(struct store *store, struct semaphore *semaphore)
{
	pthread_attr_t attributes;
	sigset_t all, previous;
	int r;

	pthread_attr_init(&attributes);
	pthread_attr_setdetachstate(&attributes, PTHREAD_CREATE_DETACHED);
	pthread_attr_setstacksize(&attributes, 64 * 1024);
	/* Helpers take only the kick signal; SIGTERM and friends stay with the
	 * FUSE loop, which must see them to stop. */
	sigfillset(&all);
	sigdelset(&all, HELPER_KICK_SIGNAL);
	pthread_sigmask(SIG_SETMASK, &all, &previous);
	semaphore->references++;
	semaphore->helper_running = true;
	store->helpers++;
	r = pthread_create(&semaphore->helper, &attributes, helper_main, semaphore);
	pthread_sigmask(SIG_SETMASK, &previous, NULL);
	pthread_attr_destroy(&attributes);
	if (r != 0) {
		semaphore->references--;
		semaphore->helper_running = false;
		store->helpers--;
		return -r;
	}
	return 0;
}

static int take(struct store *store, struct semaphore *semaphore, struct waiter *waiter,
		const struct command *command, struct done_list *done)
{
	bool acquire = command->verb == VERB_ACQUIRE;

	if (acquire && !waiter->owner)
		return -EINVAL;
	/* Only an empty queue may try the kernel directly: no barging. */
	if (!semaphore->head) {
		struct holder *holder;
		int r = grant_prepare(store, semaphore, waiter, command->verb, &holder);
		if (r < 0)
			return r;
		r = limit_guard(store, semaphore);
		if (r >= 0)
			r = be_adjust(store, semaphore->semid, -1, acquire);
		if (r == 0) {
			grant(store, semaphore, waiter, command->verb, holder);
			return 0;
		}
		holder_put_back(holder);
		if (handle_gone(r)) {
			if (set_gone_from_outside(store, semaphore, done))
				return take(store, semaphore, waiter, command, done);
			return -EIDRM;
		}
		if (r != -EAGAIN)
			return r;
	}
	if (command->timeout == 0)
		return -EAGAIN;
	if (waiter->interrupted)
		return -EINTR;

	double seconds = command->timeout;
	if (store->options.max_wait > 0 && (seconds < 0 || seconds > store->options.max_wait))
		seconds = store->options.max_wait;
	waiter->has_deadline = seconds >= 0;
	if (waiter->has_deadline) {
		waiter->deadline = clock_after(CLOCK_MONOTONIC, seconds);
	}
	if (!semaphore->helper_running) {
		int r = helper_start(store, semaphore);
		if (r < 0)
			return r;
	} else if (waiter->has_deadline &&
		   clock_compare(&waiter->deadline, &semaphore->helper_until) < 0) {
		helper_kick(semaphore);
	}
	queue_append(semaphore, waiter);
	journal_event(store, semaphore, "wait", waiter->who, 0, NULL, false);
	return STORE_QUEUED;
}

static int command_lock(struct store *store, struct semaphore *semaphore, struct waiter *waiter,
			const struct command *command, struct done_list *done)
{
	return take(store, semaphore, waiter, command, done);
}

static int command_unlock(struct store *store, struct semaphore *semaphore, struct waiter *waiter,
			  const struct command *command, struct done_list *done)
{
	int value = limit_guard(store, semaphore);

	if (value < 0)
		return value;
	/* unlock returns plain units only: with none in use (every unit home, or
	 * held by an acquire owner) it would be a double unlock. */
	if ((unsigned)value + semaphore->acquired >= semaphore->limit)
		return -EOVERFLOW;
	int r = be_adjust(store, semaphore->semid, 1, false);
	if (r < 0)
		return r;
	holder_drop_plain(semaphore, waiter->who);
	waiter->changed_something = true;
	journal_event(store, semaphore, "unlock", waiter->who, 0, NULL, waiter->announced_by_reply);
	return 0;
}

static int command_relax(struct store *store, struct semaphore *semaphore, struct waiter *waiter,
			 const struct command *command, struct done_list *done)
{
	/* Detach the current queue first: a relaxed batch that waits again
	 * joins the new queue and is not relaxed twice. */
	struct waiter *relaxed = semaphore->head;
	size_t count = semaphore->waiting;
	char extra[32];
	int r = token_reserve(store, semaphore, count);

	if (r < 0)
		return r;
	semaphore->head = semaphore->tail = NULL;
	semaphore->waiting = 0;
	waiter->changed_something = true;
	snprintf(extra, sizeof(extra), "woke=%zu", count);
	journal_event(store, semaphore, "relax", waiter->who, 0, extra, waiter->announced_by_reply);
	helper_release_if_idle(semaphore);
	while (relaxed) {
		struct waiter *next = relaxed->queue_next;
		note_queued_write(store, relaxed, -1);
		relaxed->queue_prev = relaxed->queue_next = NULL;
		relaxed->state = WAITER_RUNNING;
		relaxed->token = ++semaphore->token;
		semaphore->grants++;
		store->grants_total++;
		relaxed->next++;
		r = execute(store, semaphore, relaxed, done);
		if (r != STORE_QUEUED)
			finish(store, relaxed, r, done);
		relaxed = next;
	}
	return 0;
}

static int command_acquire(struct store *store, struct semaphore *semaphore, struct waiter *waiter,
			   const struct command *command, struct done_list *done)
{
	return take(store, semaphore, waiter, command, done);
}

static int command_release(struct store *store, struct semaphore *semaphore, struct waiter *waiter,
			   const struct command *command, struct done_list *done)
{
	struct holder *holder = holder_of_owner(semaphore, waiter->owner);

	if (!holder)
		return -ENOLCK;
	int r = be_adjust(store, semaphore->semid, 1, true);
	if (r < 0)
		return r;
	semaphore->acquired--;
	if (--holder->units == 0)
		holder_unlink(holder);
	waiter->changed_something = true;
	journal_event(store, semaphore, "release", waiter->who, 0, NULL,
		      waiter->announced_by_reply);
	return 0;
}

static int command_limit(struct store *store, struct semaphore *semaphore, struct waiter *waiter,
			 const struct command *command, struct done_list *done)
{
	int difference = command->number - (int)semaphore->limit;
	char extra[32];

	if (difference < 0) {
		int value = be_value(store, semaphore->semid);
		if (value < 0)
			return value;
		/* The value moves by the difference; units in use cannot. */
		if (value < -difference)
			return -EBUSY;
	}
	/* On disk first: a crash in between leaves the larger limit's units
	 * missing, never more units than the recorded limit. */
	unsigned previous = semaphore->limit;
	semaphore->limit = (unsigned)command->number;
	int r = semaphore_save(store, semaphore);
	if (r < 0) {
		semaphore->limit = previous;
		return r;
	}
	r = be_adjust(store, semaphore->semid, difference, false);
	if (r < 0) {
		semaphore->limit = previous;
		(void)semaphore_save(store, semaphore);
		return r == -EAGAIN ? -EBUSY : r;
	}
	snprintf(extra, sizeof(extra), "was=%u", previous);
	waiter->changed_something = true;
	journal_event(store, semaphore, "limit", waiter->who, 0, extra, waiter->announced_by_reply);
	return 0;
}

static int command_set(struct store *store, struct semaphore *semaphore, struct waiter *waiter,
		       const struct command *command, struct done_list *done)
{
	/* Units an acquire owner holds are not set's to hand out. */
	if ((unsigned)command->number + semaphore->acquired > semaphore->limit)
		return -ERANGE;
	int value = limit_guard(store, semaphore);
	if (value < 0)
		return value;
	int r = be_adjust(store, semaphore->semid, command->number - value, false);
	if (r < 0)
		return r;
	waiter->changed_something = true;
	journal_event(store, semaphore, "set", waiter->who, 0, NULL, waiter->announced_by_reply);
	return 0;
}

typedef int command_fn(struct store *, struct semaphore *, struct waiter *, const struct command *,
		       struct done_list *);

static command_fn *const command_table[] = {
    [VERB_LOCK] = command_lock,	      [VERB_UNLOCK] = command_unlock,
    [VERB_RELAX] = command_relax,     [VERB_ACQUIRE] = command_acquire,
    [VERB_RELEASE] = command_release, [VERB_LIMIT] = command_limit,
    [VERB_SET] = command_set,
};

/* Run the waiter's commands from waiter->next: 0, -errno or STORE_QUEUED. */
static int execute(struct store *store, struct semaphore *semaphore, struct waiter *waiter,
		   struct done_list *done)
{
	while (waiter->next < waiter->count) {
		const struct command *command = &waiter->commands[waiter->next];
		if (semaphore->removed)
			return -EIDRM;
		int r = command_table[command->verb](store, semaphore, waiter, command, done);
		if (r != 0)
			return r;
		waiter->next++;
	}
	return 0;
}

int store_submit(struct store *store, struct semaphore *semaphore, struct waiter *waiter)
{
	struct done_list done = {0};
	int r;

	pthread_mutex_lock(&store->lock);
	waiter->semaphore = semaphore;
	waiter->next = 0;
	waiter->state = WAITER_RUNNING;
	/* IN_MODIFY from a write through an alias lands on the alias's inode,
	 * not the one inotify watches: those changes need a touch. */
	if (waiter->via_nodeid && waiter->via_nodeid != semaphore->ino)
		waiter->announced_by_reply = false;
	if (store->stopping)
		r = -ECANCELED;
	else
		r = execute(store, semaphore, waiter, &done);
	if (r != STORE_QUEUED)
		finish(store, waiter, r, NULL);
	pthread_mutex_unlock(&store->lock);
	run_done(&done);
	return r;
}

bool store_cancel(struct store *store, struct waiter *waiter)
{
	bool taken = false;

	pthread_mutex_lock(&store->lock);
	if (waiter->state == WAITER_QUEUED) {
		struct semaphore *semaphore = waiter->semaphore;
		queue_remove(semaphore, waiter);
		waiter->state = WAITER_DONE;
		journal_event(store, semaphore, "interrupt", waiter->who, 0, NULL, false);
		helper_release_if_idle(semaphore);
		taken = true;
	} else {
		waiter->interrupted = true;
	}
	pthread_mutex_unlock(&store->lock);
	return taken;
}

void store_return_units(struct store *store, struct waiter *waiter)
{
	struct semaphore *semaphore = waiter->semaphore;

	pthread_mutex_lock(&store->lock);
	for (; waiter->lock_units > 0 && !semaphore->removed; waiter->lock_units--) {
		if (be_adjust(store, semaphore->semid, 1, false) < 0)
			break;
		holder_drop_plain(semaphore, waiter->who);
		journal_event(store, semaphore, "unlock", waiter->who, 0, "reason=reply-lost",
			      false);
	}
	pthread_mutex_unlock(&store->lock);
}

static void release_holder(struct store *store, struct holder *holder, const char *who)
{
	struct semaphore *semaphore = holder->semaphore;

	if (!semaphore->removed)
		(void)be_adjust(store, semaphore->semid, (int)holder->units, true);
	semaphore->acquired -= holder->units;
	holder_unlink(holder);
	if (!semaphore->removed)
		journal_event(store, semaphore, "release", who, 0, "reason=close", false);
}

void store_release_owner(struct store *store, struct owner *owner, const char *who)
{
	struct done_list done = {0};

	pthread_mutex_lock(&store->lock);
	while (owner->holders) {
		struct semaphore *semaphore = owner->holders->semaphore;
		release_holder(store, owner->holders, who);
		reap_if_idle(store, semaphore, &done);
	}
	pthread_mutex_unlock(&store->lock);
	run_done(&done);
}

/* ---- the helper: one per contended semaphore ---------------------------- */

static void expire_waiters(struct store *store, struct semaphore *semaphore, struct done_list *done)
{
	struct timespec now;

	timespec_now(CLOCK_MONOTONIC, &now);
	for (struct waiter *waiter = semaphore->head, *next; waiter; waiter = next) {
		next = waiter->queue_next;
		if (!waiter->has_deadline || clock_compare(&waiter->deadline, &now) > 0)
			continue;
		queue_remove(semaphore, waiter);
		semaphore->timeouts++;
		store->timeouts_total++;
		journal_event(store, semaphore, "timeout", waiter->who, 0, NULL, false);
		finish(store, waiter, -ETIMEDOUT, done);
	}
}

/* The helper won a unit (held with SEM_UNDO): the queue's head gets it. */
static void hand_unit(struct store *store, struct semaphore *semaphore, struct done_list *done)
{
	struct waiter *waiter = semaphore->head;
	/* The kernel woke us for a unit an outside semop added past the limit:
	 * keep it from everyone (held by nobody), and take back the rest. */
	int value = be_value(store, semaphore->semid);
	if (value >= 0 && value + (int)semaphore->acquired + 1 > (int)semaphore->limit &&
	    be_undo_to_plain(store, semaphore->semid) == 0) {
		journal_event(store, semaphore, "outside-change", "sysv", 0, "reverted=1", false);
		(void)limit_guard(store, semaphore);
		return;
	}
	if (!waiter) {
		(void)be_adjust(store, semaphore->semid, 1, true); /* back home */
		return;
	}
	const struct command *command = &waiter->commands[waiter->next];
	struct holder *holder;
	int r = grant_prepare(store, semaphore, waiter, command->verb, &holder);
	queue_remove(semaphore, waiter);
	waiter->state = WAITER_RUNNING;
	if (r == 0 && command->verb == VERB_LOCK) {
		r = be_undo_to_plain(store, semaphore->semid);
		if (r < 0)
			holder_put_back(holder);
	}
	if (r < 0) {
		(void)be_adjust(store, semaphore->semid, 1, true);
		finish(store, waiter, r, done);
		return;
	}
	grant(store, semaphore, waiter, command->verb, holder);
	waiter->next++;
	r = execute(store, semaphore, waiter, done);
	if (r != STORE_QUEUED)
		finish(store, waiter, r, done);
}

static struct timespec helper_timeout(struct store *store, struct semaphore *semaphore)
{
	struct timespec now, until;

	timespec_now(CLOCK_MONOTONIC, &now);
	until = clock_add(now, HELPER_NAP);
	for (struct waiter *w = semaphore->head; w; w = w->queue_next)
		if (w->has_deadline && clock_compare(&w->deadline, &until) < 0)
			until = w->deadline;
	semaphore->helper_until = until;
	return clock_difference(&until, &now);
}

static void *helper_main(void *argument)
{
	struct semaphore *semaphore = argument;
	struct store *store = semaphore->store;
	struct done_list done = {0};

	pthread_setname_np(pthread_self(), "semfs-helper");
	pthread_mutex_lock(&store->lock);
	for (;;) {
		expire_waiters(store, semaphore, &done);
		if (!semaphore->head || semaphore->removed || store->stopping) {
			/* Finish the completions, then look again: a waiter queued
			 * meanwhile saw helper_running and relies on us. */
			if (!done.first)
				break;
			pthread_mutex_unlock(&store->lock);
			run_done(&done);
			pthread_mutex_lock(&store->lock);
			continue;
		}
		helper_kicked = 0;
		struct timespec timeout = helper_timeout(store, semaphore);
		int semid = semaphore->semid;
		pthread_mutex_unlock(&store->lock);
		run_done(&done);
		int r = helper_kicked ? -EINTR : be_take(store, semid, &timeout);
		pthread_mutex_lock(&store->lock);
		if (r == 0)
			hand_unit(store, semaphore, &done);
		else if (handle_gone(r))
			(void)set_gone_from_outside(store, semaphore, &done);
	}
	semaphore->helper_running = false;
	store->helpers--;
	semaphore_let_go(store, semaphore, &done);
	pthread_cond_broadcast(&store->helpers_gone);
	pthread_mutex_unlock(&store->lock);
	run_done(&done);
	return NULL;
}

static void kick_handler(int signal_number)
{
	(void)signal_number; /* interrupts semtimedop, or is seen before it */
	helper_kicked = 1;
}

/* ---- outside changes ------------------------------------------------------ */

static void monitor_check(struct store *store, struct done_list *done)
{
	for (struct semaphore *s = store->live, *next; s; s = next) {
		next = s->live_next;
		int value = limit_guard(store, s);
		if (handle_gone(value)) {
			(void)set_gone_from_outside(store, s, done);
			continue;
		}
		if (value < 0 || value == s->last_value)
			continue;
		int pid = be_last_pid(store, s->semid);
		if (pid == store->pid)
			continue; /* ours, in flight: its own journal line follows */
		char who[32];
		snprintf(who, sizeof(who), "sysv:%d", pid);
		journal_event(store, s, "outside-change", who, 0, NULL, false);
	}
}

static void *monitor_main(void *argument)
{
	struct store *store = argument;
	struct done_list done = {0};

	pthread_setname_np(pthread_self(), "semfs-monitor");
	pthread_mutex_lock(&store->lock);
	while (!store->stopping) {
		struct timespec wake = clock_after(CLOCK_MONOTONIC, MONITOR_PERIOD);
		pthread_cond_timedwait(&store->monitor_wake, &store->lock, &wake);
		if (store->stopping)
			break;
		monitor_check(store, &done);
		if (done.first) {
			pthread_mutex_unlock(&store->lock);
			run_done(&done);
			pthread_mutex_lock(&store->lock);
		}
	}
	pthread_mutex_unlock(&store->lock);
	return NULL;
}

/* ---- creating and restoring ---------------------------------------------- */

static struct semaphore *semaphore_new(struct store *store, key_t key, int semid, unsigned limit)
{
	struct semaphore *semaphore = calloc(1, sizeof(*semaphore));
	if (!semaphore)
		return NULL;
	semaphore->store = store;
	semaphore->key = key;
	semaphore->semid = semid;
	semaphore->limit = limit;
	semaphore->references = 1; /* the node's */
	journal_init(&semaphore->journal, store->options.journal_max);
	semaphore->live_next = store->live;
	if (store->live)
		store->live->live_prev = semaphore;
	store->live = semaphore;
	store->live_count++;
	return semaphore;
}

static void node_attach_semaphore(struct node *node, struct semaphore *semaphore)
{
	node->semaphore = semaphore;
	semaphore->node = node;
	semaphore->ino = node->ino;
}

/* Who owns the directories walk_to_parent makes, and with which mode. */
struct maker {
	uid_t uid;
	gid_t gid;
	mode_t mode;
};

static int walk_to_parent(struct store *store, const char *path, const struct maker *make,
			  struct node **parent, const char **leaf);

struct restore {
	struct store *store;
	char *error;
	size_t error_size;
};

static int restore_entry(void *context, const char *path, bool is_directory,
			 const struct stat *status)
{
	struct restore *restore = context;
	struct store *store = restore->store;
	const char *leaf;
	struct node *parent;

	if (walk_to_parent(store, path, NULL, &parent, &leaf) < 0 ||
	    (parent == store->root && strcmp(leaf, STORE_STATUS_NAME) == 0))
		return 0; /* not one of ours: leave it */
	if (is_directory) {
		return node_new(store, parent, leaf, NODE_DIRECTORY,
				S_IFDIR | (status->st_mode & 07777), status->st_uid, status->st_gid)
			   ? 0
			   : -ENOMEM;
	}

	struct backing_record record;
	char full[PATH_MAX], moved[PATH_MAX];
	int semid, r = backing_read(&store->backing, path, &record);
	bool fresh = false;

	if (r < 0) {
		/* One bad record (a full disk at create, a stray file) must not
		 * keep every other semaphore from starting. */
		int moving = backing_set_aside(&store->backing, path, moved, sizeof(moved));
		log_warnx("%s/%s: unreadable record (%s): %s%s; the other semaphores start",
			  store->backing.root, path, strerror(-r),
			  moving == 0 ? "moved to " : "left in place: ",
			  moving == 0 ? moved : strerror(-moving));
		return 0;
	}
	/* Adopt only a set that is ours: one semaphore, made by this user. */
	r = be_attach(store, record.key, geteuid(), &semid);
	if (r == -ENOENT) {
		/* After a reboot: the same key again if free, else a new one. */
		r = be_create_at(store, record.key, (int)record.mode, &semid);
		if (r == -EEXIST) {
			backing_full_path(&store->backing, path, full, sizeof(full));
			r = be_create(store, full, (int)record.mode, &record.key, &semid);
		}
		if (r == 0)
			r = be_adjust(store, semid, (int)record.limit, false);
		fresh = true;
	} else if (r == -EINVAL) {
		log_warnx("%s/%s: the SysV set at key 0x%08x is not ours (not one semaphore, or "
			  "made by another user): a new set replaces it",
			  store->backing.root, path, (unsigned)record.key);
		backing_full_path(&store->backing, path, full, sizeof(full));
		r = be_create(store, full, (int)record.mode, &record.key, &semid);
		if (r == 0)
			r = be_adjust(store, semid, (int)record.limit, false);
		fresh = true;
	}
	if (r == 0)
		r = be_set_owner(store, semid, record.uid, record.gid, record.mode);
	if (r < 0) {
		snprintf(restore->error, restore->error_size, "%s/%s: semaphore key 0x%08x: %s",
			 store->backing.root, path, (unsigned)record.key, strerror(-r));
		return r;
	}
	struct node *node = node_new(store, parent, leaf, NODE_SEMAPHORE,
				     S_IFREG | (record.mode & 07777), record.uid, record.gid);
	struct semaphore *semaphore =
	    node ? semaphore_new(store, record.key, semid, record.limit) : NULL;
	if (!semaphore)
		return -ENOMEM;
	node_attach_semaphore(node, semaphore);
	/* Tokens below the reservation may have been handed out; the first
	 * grant reserves a new block. */
	semaphore->token = semaphore->token_reserved = record.token_reserved;
	if (record.token_reserved > store->token_floor)
		store->token_floor = record.token_reserved;
	semaphore->undefined = record.undefined;
	semaphore->defined = semaphore->defined_unconfirmed = record.defined;
	if (fresh) {
		r = semaphore_save(store, semaphore); /* a new key */
		if (r < 0)
			log_warnx("%s/%s: cannot record its new key 0x%08x: %s",
				  store->backing.root, path, (unsigned)record.key, strerror(-r));
	}
	journal_event(store, semaphore, fresh ? "create" : "restore", "semfs", 0, NULL, false);
	if (!fresh)
		(void)limit_guard(store, semaphore); /* value <= limit, as recorded */
	return 0;
}

int store_open(struct store **out, const struct store_options *options, char *error,
	       size_t error_size)
{
	struct store *store = calloc(1, sizeof(*store));
	struct sigaction kick = {.sa_handler = kick_handler};
	int r;

	if (!store) {
		snprintf(error, error_size, "out of memory");
		return -ENOMEM;
	}
	store->options = *options;
	if (!store->options.backend)
		store->options.backend = &backend_sysv;
	snprintf(store->state_dir, sizeof(store->state_dir), "%s", options->state_dir);
	store->options.state_dir = store->state_dir;
	store->options.changed = NULL; /* restoring announces nothing */
	store->pid = getpid();
	store->next_ino = STORE_ROOT_INO;
	store->backing.root_fd = -1;
	pthread_mutex_init(&store->lock, NULL);
	clock_condition_init(&store->helpers_gone);
	clock_condition_init(&store->monitor_wake);
	sigemptyset(&kick.sa_mask);
	sigaction(HELPER_KICK_SIGNAL, &kick, NULL); /* no SA_RESTART */

	r = hash_grow(&store->by_ino, false);
	if (r == 0)
		r = hash_grow(&store->by_name, true);
	if (r < 0) {
		snprintf(error, error_size, "out of memory");
		goto fail;
	}
	uid_t uid = geteuid();
	gid_t gid = getegid();
	/* Like /dev/shm: anyone may make a name at the root, the sticky bit
	 * keeps others' names safe. */
	store->root = node_new(store, NULL, "", NODE_DIRECTORY, S_IFDIR | 01777, uid, gid);
	store->status =
	    node_new(store, NULL, STORE_STATUS_NAME, NODE_STATUS, S_IFREG | 0444, uid, gid);
	if (!store->root || !store->status) {
		snprintf(error, error_size, "out of memory");
		r = -ENOMEM;
		goto fail;
	}
	store->status->parent = store->root; /* listed at the root, never hashed by name */
	timespec_now(CLOCK_REALTIME, &store->status_mtime);

	r = backing_open(&store->backing, options->state_dir, error, error_size);
	if (r < 0)
		goto fail;
	r = backing_token_floor(&store->backing, &store->token_floor);
	if (r < 0)
		log_warnx("%s/tokens: %s: new semaphores start above the highest recorded token "
			  "only",
			  options->state_dir, strerror(-r));
	struct restore restore = {store, error, error_size};
	r = backing_walk(&store->backing, restore_entry, &restore);
	if (r < 0)
		goto fail;
	/* Undefined semaphores whose users went with a crash go now. */
	struct done_list done = {0};
	for (struct semaphore *s = store->live, *next; s; s = next) {
		next = s->live_next;
		reap_if_idle(store, s, &done);
	}
	run_done(&done);
	store->options.changed = options->changed;
	*out = store;
	return 0;
fail:
	store_close(store);
	return r;
}

int store_start(struct store *store)
{
	int r = thread_start(&store->monitor, monitor_main, store);

	if (r < 0)
		return r;
	store->monitor_running = true;
	return 0;
}

void store_shutdown(struct store *store)
{
	struct done_list done = {0};

	pthread_mutex_lock(&store->lock);
	store->stopping = true;
	pthread_cond_broadcast(&store->monitor_wake);
	for (struct semaphore *s = store->live; s; s = s->live_next) {
		while (s->head) {
			struct waiter *waiter = s->head;
			queue_remove(s, waiter);
			finish(store, waiter, -ECANCELED, &done);
		}
		if (s->helper_running)
			helper_kick(s);
	}
	pthread_mutex_unlock(&store->lock);
	run_done(&done);

	if (store->monitor_running) {
		pthread_join(store->monitor, NULL);
		store->monitor_running = false;
	}
	pthread_mutex_lock(&store->lock);
	while (store->helpers > 0) {
		for (struct semaphore *s = store->live; s; s = s->live_next)
			if (s->helper_running)
				helper_kick(s);
		struct timespec wake = clock_after(CLOCK_MONOTONIC, 1.0);
		pthread_cond_timedwait(&store->helpers_gone, &store->lock, &wake);
	}
	pthread_mutex_unlock(&store->lock);
}

static void free_subtree(struct store *store, struct node *node)
{
	while (node->first_child) {
		struct node *child = node->first_child;
		free_subtree(store, child);
	}
	if (node->parent && !node->unlinked)
		node_detach(store, node);
	node_free(store, node);
}

void store_close(struct store *store)
{
	if (!store)
		return;
	if (!store->stopping)
		store_shutdown(store);
	/* Aliases, then unlinked nodes the kernel still knew. */
	for (int pass = 0; pass < 2; pass++) {
		for (size_t i = 0; i < store->by_ino.size; i++) {
			struct node *node = store->by_ino.buckets[i];
			while (node) {
				struct node *next = node->ino_chain;
				if (pass == 0 && node->alias_of) {
					node->alias_of->first_alias = NULL;
					hash_remove(&store->by_ino, node, false);
					free(node->name);
					free(node);
				} else if (pass == 1 && node->unlinked) {
					node_free(store, node);
				}
				node = next;
			}
		}
	}
	if (store->status)
		node_free(store, store->status);
	if (store->root)
		free_subtree(store, store->root);
	backing_close(&store->backing);
	free(store->by_ino.buckets);
	free(store->by_name.buckets);
	pthread_cond_destroy(&store->monitor_wake);
	pthread_cond_destroy(&store->helpers_gone);
	pthread_mutex_destroy(&store->lock);
	free(store);
}

/* ---- the tree, for the mount --------------------------------------------- */

static bool node_permits(const struct node *node, const struct store_caller *caller, unsigned bits);

static void node_fill_attr(struct store *store, struct node *node, struct store_attr *attr)
{
	memset(attr, 0, sizeof(*attr));
	attr->nodeid = node->ino;
	attr->ino = node->ino;
	attr->kind = node->kind;
	attr->mode = node->mode;
	attr->uid = node->uid;
	attr->gid = node->gid;
	attr->mtime = node->mtime;
	attr->ctime = node->ctime;
	attr->nlink = node->unlinked ? 0 : node->kind == NODE_DIRECTORY ? 2 : 1;
	if (node->kind == NODE_SEMAPHORE && node->semaphore)
		attr->size = journal_end(&node->semaphore->journal);
	if (node->kind == NODE_STATUS)
		attr->mtime = attr->ctime = store->status_mtime;
}

static int parent_directory(struct store *store, uint64_t ino, struct node **parent)
{
	struct node *node = node_by_ino(store, ino);

	if (!node || node->unlinked)
		return -ENOENT;
	if (node->kind != NODE_DIRECTORY)
		return -ENOTDIR;
	*parent = node;
	return 0;
}

int store_lookup(struct store *store, uint64_t parent_ino, const char *name, bool canonical,
		 struct store_attr *attr)
{
	struct node *parent, *node;
	int r;

	pthread_mutex_lock(&store->lock);
	r = parent_directory(store, parent_ino, &parent);
	if (r == 0) {
		node = parent == store->root && strcmp(name, STORE_STATUS_NAME) == 0
			   ? store->status
			   : node_child(store, parent, name);
		if (!node) {
			r = -ENOENT;
		} else {
			struct node *chosen = lookup_choice(store, node, canonical);
			chosen->lookups++;
			node_fill_attr(store, node, attr);
			attr->nodeid = chosen->ino;
		}
	}
	pthread_mutex_unlock(&store->lock);
	return r;
}

void store_forget(struct store *store, uint64_t ino, uint64_t count)
{
	pthread_mutex_lock(&store->lock);
	struct node *node = node_by_ino(store, ino);
	if (node) {
		node->lookups = node->lookups > count ? node->lookups - count : 0;
		node_release_if_unused(store, node);
	}
	pthread_mutex_unlock(&store->lock);
}

int store_getattr(struct store *store, uint64_t ino, struct store_attr *attr)
{
	int r = 0;

	pthread_mutex_lock(&store->lock);
	struct node *node = node_resolve(store, ino);
	if (node) {
		node_fill_attr(store, node, attr);
		attr->nodeid = ino;
	} else {
		r = -ENOENT;
	}
	pthread_mutex_unlock(&store->lock);
	return r;
}

static int check_new_name(struct store *store, struct node *parent, const char *name)
{
	if (!name_valid(name))
		return -EINVAL;
	if (parent == store->root && strcmp(name, STORE_STATUS_NAME) == 0)
		return -EEXIST;
	if (node_child(store, parent, name))
		return -EEXIST;
	return 0;
}

/* Under the lock: a new semaphore `name` in `parent`, counted as looked up
 * by nobody. */
static int create_semaphore(struct store *store, struct node *parent, const char *name, mode_t mode,
			    uid_t uid, gid_t gid, unsigned limit, bool undefined, const char *who,
			    struct node **out)
{
	struct node *node = NULL;
	char path[PATH_MAX], full[PATH_MAX];
	key_t key;
	int semid = -1;
	int r = check_new_name(store, parent, name);

	if (r == 0)
		r = child_path(parent, name, path, sizeof(path));
	if (r < 0)
		return r;
	r = backing_create(&store->backing, path);
	if (r == -EEXIST) { /* a leftover no semaphore claims: reuse it */
		(void)backing_remove(&store->backing, path);
		r = backing_create(&store->backing, path);
	}
	if ((r == -ENOSPC || r == -EDQUOT) && time(NULL) - store->state_full_logged >= 60) {
		store->state_full_logged = time(NULL);
		log_warnx("cannot create semaphore %s: state_dir %s is full (%s)", path,
			  store->state_dir, strerror(-r));
	}
	if (r < 0)
		return r;
	backing_full_path(&store->backing, path, full, sizeof(full));
	r = be_create(store, full, (int)mode, &key, &semid);
	if (r == -ENOSPC && time(NULL) - store->enospc_logged >= 60) {
		/* Once a minute: a client retrying in a loop must not flood the log. */
		store->enospc_logged = time(NULL);
		log_warnx("cannot create semaphore %s: the kernel's limit on SysV semaphore sets "
			  "is reached (kernel.sem: SEMMNI sets, SEMMNS semaphores; ipcs -l shows "
			  "them)",
			  path);
	}
	if (r == 0)
		r = be_adjust(store, semid, (int)limit, false);
	if (r == 0)
		r = be_set_owner(store, semid, uid, gid, mode);
	if (r == 0) {
		node = node_new(store, parent, name, NODE_SEMAPHORE, S_IFREG | (mode & 07777), uid,
				gid);
		struct semaphore *semaphore = node ? semaphore_new(store, key, semid, limit) : NULL;
		if (!semaphore) {
			r = -ENOMEM;
		} else {
			node_attach_semaphore(node, semaphore);
			/* Above every token a deleted semaphore of any name had. */
			semaphore->token = store->token_floor;
			semaphore->token_reserved = store->token_floor + TOKEN_BLOCK;
			semaphore->undefined = undefined;
			r = semaphore_save(store, semaphore);
		}
		if (r == 0) {
			/* Announced already (IN_CREATE on the directory), and no
			 * touch: the creator opens and may wait in a write on this
			 * very inode before the notifier would get to it. */
			journal_event(store, node->semaphore, "create", who, 0, NULL, true);
			parent->mtime = parent->ctime = node->mtime;
			if (undefined) /* as ACE logs "adding undefined semaphore" */
				log_info("undefined semaphore %s created (limit %u)", path, limit);
			*out = node;
		}
	}
	if (r < 0) {
		if (node) {
			if (node->semaphore)
				live_remove(store, node->semaphore); /* the monitor's list */
			node_detach(store, node);
			node_free(store, node);
		}
		if (semid >= 0)
			(void)be_remove(store, semid);
		(void)backing_remove(&store->backing, path);
	}
	return r;
}

static int make_directory(struct store *store, struct node *parent, const char *name, mode_t mode,
			  uid_t uid, gid_t gid, struct node **out)
{
	char full[PATH_MAX];
	int r = check_new_name(store, parent, name);

	if (r == 0)
		r = child_path(parent, name, full, sizeof(full));
	if (r == 0)
		r = backing_mkdir(&store->backing, full, mode);
	if (r == -EEXIST)
		r = 0; /* a leftover empty directory */
	if (r < 0)
		return r;
	(void)backing_chmod_dir(&store->backing, full, mode, uid, gid);
	struct node *node =
	    node_new(store, parent, name, NODE_DIRECTORY, S_IFDIR | (mode & 07777), uid, gid);
	if (!node) {
		(void)backing_rmdir(&store->backing, full);
		return -ENOMEM;
	}
	parent->mtime = parent->ctime = node->mtime;
	*out = node;
	return 0;
}

/* A new entry below `parent_ino`, made from the mount: counted as looked up
 * once, since the kernel now holds a reference to it. */
static int make_entry(struct store *store, uint64_t parent_ino, const char *name, mode_t mode,
		      uid_t uid, gid_t gid, bool directory, struct store_attr *attr)
{
	struct node *parent, *node;
	int r;

	pthread_mutex_lock(&store->lock);
	r = parent_directory(store, parent_ino, &parent);
	if (r == 0 && directory)
		r = make_directory(store, parent, name, mode, uid, gid, &node);
	else if (r == 0)
		r = create_semaphore(store, parent, name, mode, uid, gid,
				     store->options.default_limit, false, "semfs", &node);
	if (r == 0) {
		/* An alias, as for a lookup: the creating descriptor may wait in
		 * a write, and the notifier touches the node's own inode. */
		struct node *chosen = lookup_choice(store, node, false);
		chosen->lookups++;
		node_fill_attr(store, node, attr);
		attr->nodeid = chosen->ino;
	}
	pthread_mutex_unlock(&store->lock);
	return r;
}

int store_create(struct store *store, uint64_t parent_ino, const char *name, mode_t mode, uid_t uid,
		 gid_t gid, struct store_attr *attr)
{
	return make_entry(store, parent_ino, name, mode, uid, gid, false, attr);
}

int store_mkdir(struct store *store, uint64_t parent_ino, const char *name, mode_t mode, uid_t uid,
		gid_t gid, struct store_attr *attr)
{
	return make_entry(store, parent_ino, name, mode, uid, gid, true, attr);
}

int store_unlink(struct store *store, uint64_t parent_ino, const char *name)
{
	struct node *parent, *node = NULL;
	struct done_list done = {0};
	int r;

	pthread_mutex_lock(&store->lock);
	r = parent_directory(store, parent_ino, &parent);
	if (r == 0 && parent == store->root && strcmp(name, STORE_STATUS_NAME) == 0)
		r = -EPERM;
	if (r == 0) {
		node = node_child(store, parent, name);
		if (!node)
			r = -ENOENT;
		else if (node->kind == NODE_DIRECTORY)
			r = -EISDIR;
	}
	if (r == 0 && node->semaphore->defined)
		r = -EPERM;
	if (r == 0)
		r = delete_node(store, node, "semfs", &done);
	pthread_mutex_unlock(&store->lock);
	run_done(&done);
	return r;
}

int store_rmdir(struct store *store, uint64_t parent_ino, const char *name)
{
	struct node *parent, *node = NULL;
	char path[PATH_MAX];
	int r;

	pthread_mutex_lock(&store->lock);
	r = parent_directory(store, parent_ino, &parent);
	if (r == 0) {
		node = node_child(store, parent, name);
		if (!node)
			r = -ENOENT;
		else if (node->kind != NODE_DIRECTORY)
			r = -ENOTDIR;
		else if (node->first_child)
			r = -ENOTEMPTY;
	}
	if (r == 0)
		r = node_path(node, path, sizeof(path));
	if (r == 0)
		r = backing_rmdir(&store->backing, path);
	if (r == 0) {
		node_detach(store, node);
		timespec_now(CLOCK_REALTIME, &parent->mtime);
		parent->ctime = parent->mtime;
		node_release_if_unused(store, node);
	}
	pthread_mutex_unlock(&store->lock);
	return r;
}

int store_setattr(struct store *store, uint64_t ino, const mode_t *mode, const uid_t *uid,
		  const gid_t *gid, const struct timespec *mtime, struct store_attr *attr)
{
	int r = 0;

	pthread_mutex_lock(&store->lock);
	struct node *node = node_resolve(store, ino);
	if (!node) {
		r = -ENOENT;
		goto out;
	}
	if ((mode || uid || gid) && node->kind == NODE_STATUS) {
		r = -EPERM;
		goto out;
	}
	mode_t old_mode = node->mode;
	uid_t old_uid = node->uid;
	gid_t old_gid = node->gid;
	if (mode)
		node->mode = (node->mode & S_IFMT) | (*mode & 07777);
	if (uid)
		node->uid = *uid;
	if (gid)
		node->gid = *gid;
	if (mode || uid || gid) {
		char path[PATH_MAX];
		/* Saved first, then the SysV set follows: it must never admit
		 * anyone the file (as recorded) would refuse. */
		if (node->kind == NODE_SEMAPHORE && node->semaphore && !node->unlinked) {
			r = semaphore_save(store, node->semaphore);
			if (r == 0)
				r = be_set_owner(store, node->semaphore->semid, node->uid,
						 node->gid, node->mode);
		} else if (node->kind == NODE_DIRECTORY && node->parent) {
			r = node_path(node, path, sizeof(path));
			if (r == 0)
				r = backing_chmod_dir(&store->backing, path, node->mode, node->uid,
						      node->gid);
		}
		if (r < 0) {
			node->mode = old_mode;
			node->uid = old_uid;
			node->gid = old_gid;
			if (node->kind == NODE_SEMAPHORE && node->semaphore && !node->unlinked)
				(void)semaphore_save(store, node->semaphore);
			goto out;
		}
		timespec_now(CLOCK_REALTIME, &node->ctime);
	}
	if (mtime && node->kind != NODE_STATUS)
		node->mtime = *mtime;
	node_fill_attr(store, node, attr);
out:
	pthread_mutex_unlock(&store->lock);
	return r;
}

void store_list_free(struct store_entry *entries, size_t count)
{
	for (size_t i = 0; i < count; i++)
		free(entries[i].name);
	free(entries);
}

static int list_push(struct store_entry **entries, size_t *count, size_t *allocated,
		     const struct node *node)
{
	if (*count == *allocated) {
		size_t bigger_size = *allocated ? *allocated * 2 : 16;
		struct store_entry *bigger = realloc(*entries, bigger_size * sizeof(**entries));
		if (!bigger)
			return -ENOMEM;
		*entries = bigger;
		*allocated = bigger_size;
	}
	struct store_entry *entry = &(*entries)[*count];
	entry->name = strdup(node->name);
	if (!entry->name)
		return -ENOMEM;
	entry->ino = node->ino;
	entry->kind = node->kind;
	(*count)++;
	return 0;
}

int store_list(struct store *store, uint64_t ino, struct store_entry **out, size_t *out_count)
{
	struct node *directory = NULL;
	struct store_entry *entries = NULL;
	size_t count = 0, allocated = 0;
	int r;

	pthread_mutex_lock(&store->lock);
	r = parent_directory(store, ino, &directory);
	if (r == 0 && directory == store->root)
		r = list_push(&entries, &count, &allocated, store->status);
	for (struct node *child = r == 0 ? directory->first_child : NULL; r == 0 && child;
	     child = child->next_sibling)
		r = list_push(&entries, &count, &allocated, child);
	pthread_mutex_unlock(&store->lock);
	if (r < 0) {
		store_list_free(entries, count);
		return r;
	}
	*out = entries;
	*out_count = count;
	return 0;
}

int store_open_semaphore(struct store *store, uint64_t ino, struct semaphore **out)
{
	int r = 0;

	pthread_mutex_lock(&store->lock);
	struct node *node = node_resolve(store, ino);
	if (!node)
		r = -ENOENT;
	else if (node->kind == NODE_DIRECTORY)
		r = -EISDIR;
	else if (node->kind != NODE_SEMAPHORE || !node->semaphore)
		r = -EINVAL;
	else {
		node->semaphore->references++;
		node_by_ino(store, ino)->opens++;
		*out = node->semaphore;
	}
	pthread_mutex_unlock(&store->lock);
	return r;
}

void store_close_semaphore(struct store *store, struct semaphore *semaphore, uint64_t nodeid)
{
	struct done_list done = {0};

	pthread_mutex_lock(&store->lock);
	struct node *node = nodeid ? node_by_ino(store, nodeid) : NULL;
	if (node && node->opens > 0) {
		node->opens--;
		node_release_if_unused(store, node);
	}
	semaphore_let_go(store, semaphore, &done);
	pthread_mutex_unlock(&store->lock);
	run_done(&done);
}

size_t store_watchable_nodeids(struct store *store, uint64_t ino, uint64_t *out, size_t max)
{
	size_t count = 0;

	pthread_mutex_lock(&store->lock);
	struct node *node = node_by_ino(store, ino);
	/* A touch of an inode whose lock a waiting write holds would wait too. */
	if (node && node->lookups > 0 && node->queued_writes == 0 && count < max)
		out[count++] = node->ino;
	for (struct node *a = node ? node->first_alias : NULL; a && count < max; a = a->alias_next)
		if (a->lookups > 0 && a->opens == 0 && a->queued_writes == 0)
			out[count++] = a->ino;
	pthread_mutex_unlock(&store->lock);
	return count;
}

size_t store_read_journal(struct store *store, struct semaphore *semaphore, uint64_t *offset,
			  char *buffer, size_t size)
{
	size_t n;

	pthread_mutex_lock(&store->lock);
	if (*offset < semaphore->journal.start) {
		n = journal_gone_line(&semaphore->journal, buffer, size);
		*offset = semaphore->journal.start;
	} else {
		n = journal_read(&semaphore->journal, *offset, buffer, size);
		*offset += n;
	}
	pthread_mutex_unlock(&store->lock);
	return n;
}

uint64_t store_journal_seq(struct store *store, struct semaphore *semaphore)
{
	pthread_mutex_lock(&store->lock);
	uint64_t lines = semaphore->journal.lines;
	pthread_mutex_unlock(&store->lock);
	return lines;
}

void store_journal_position(struct store *store, struct semaphore *semaphore, uint64_t *start,
			    uint64_t *end)
{
	pthread_mutex_lock(&store->lock);
	*start = semaphore->journal.start;
	*end = journal_end(&semaphore->journal);
	pthread_mutex_unlock(&store->lock);
}

/* ---- names, for the network and the configuration ------------------------- */

static void prune_implicit(struct store *store, struct node *directory);

/* "a/b/c": the directory holding the last component, and that component.
 * `make` creates missing directories (at most STORE_DEPTH_MAX deep), marked
 * implicit: they go again when they empty. */
static int walk_to_parent(struct store *store, const char *path, const struct maker *make,
			  struct node **parent, const char **leaf)
{
	char component[STORE_NAME_MAX + 1];
	struct node *node = store->root;
	const char *p = path;

	for (unsigned depth = 0;; depth++) {
		const char *slash = strchr(p, '/');
		if (!slash) {
			if (!name_valid(p))
				return -EINVAL;
			*parent = node;
			*leaf = p;
			return 0;
		}
		size_t length = (size_t)(slash - p);
		if (length == 0 || length > STORE_NAME_MAX)
			return -EINVAL;
		memcpy(component, p, length);
		component[length] = '\0';
		if (!name_valid(component))
			return -EINVAL;
		struct node *child = node_child(store, node, component);
		if (!child) {
			if (!make)
				return -ENOENT;
			int r = depth >= STORE_DEPTH_MAX
				    ? -ENAMETOOLONG
				    : make_directory(store, node, component, make->mode, make->uid,
						     make->gid, &child);
			if (r < 0) {
				prune_implicit(store, node); /* what this walk made */
				return r;
			}
			child->implicit = true;
		} else if (child->kind != NODE_DIRECTORY) {
			return -ENOTDIR;
		}
		node = child;
		p = slash + 1;
	}
}

/* Directories made for a name go when their last entry goes. */
static void prune_implicit(struct store *store, struct node *directory)
{
	char path[PATH_MAX];

	while (directory != store->root && directory->implicit && !directory->first_child &&
	       !directory->unlinked) {
		struct node *up = directory->parent;
		if (node_path(directory, path, sizeof(path)) < 0 ||
		    backing_rmdir(&store->backing, path) < 0)
			return;
		node_detach(store, directory);
		timespec_now(CLOCK_REALTIME, &up->mtime);
		up->ctime = up->mtime;
		node_release_if_unused(store, directory);
		directory = up;
	}
}

/* ---- permissions, for the network and semaphore.status -------------------- */

static bool caller_in_group(const struct store_caller *caller, gid_t gid)
{
	if (caller->gid == gid)
		return true;
	for (size_t i = 0; i < caller->group_count; i++)
		if (caller->groups[i] == gid)
			return true;
	return false;
}

/* The kernel's rule for a mode: owner bits, else group bits, else others. */
static bool node_permits(const struct node *node, const struct store_caller *caller, unsigned bits)
{
	if (!caller || caller->uid == 0)
		return true;
	unsigned have = node->mode & 7;
	if (caller->uid == node->uid)
		have = (node->mode >> 6) & 7;
	else if (caller_in_group(caller, node->gid))
		have = (node->mode >> 3) & 7;
	return (have & bits) == bits;
}

int store_access_path(struct store *store, const char *path, const struct store_caller *caller,
		      enum store_access access)
{
	char component[STORE_NAME_MAX + 1];
	int r = 0;

	pthread_mutex_lock(&store->lock);
	struct node *directory = store->root;
	const char *p = path;
	for (;;) {
		if (!node_permits(directory, caller, 1)) {
			r = -EACCES;
			break;
		}
		const char *slash = strchr(p, '/');
		size_t length = slash ? (size_t)(slash - p) : strlen(p);
		if (length == 0 || length > STORE_NAME_MAX) {
			r = -EINVAL;
			break;
		}
		memcpy(component, p, length);
		component[length] = '\0';
		struct node *child =
		    directory == store->root && strcmp(component, STORE_STATUS_NAME) == 0 && !slash
			? store->status
			: node_child(store, directory, component);
		if (!child) {
			/* Made from here on down: the last directory must let us. */
			if (access == STORE_CREATE)
				r = node_permits(directory, caller, 3) ? 0 : -EACCES;
			else
				r = -ENOENT;
			break;
		}
		if (slash) {
			if (child->kind != NODE_DIRECTORY) {
				r = -ENOTDIR;
				break;
			}
			directory = child;
			p = slash + 1;
			continue;
		}
		switch (access) {
		case STORE_READ:
			r = node_permits(child, caller, 4) ? 0 : -EACCES;
			break;
		case STORE_WRITE:
			r = node_permits(child, caller, 2) ? 0 : -EACCES;
			break;
		case STORE_CREATE:
			r = 0; /* taken: the create itself says EEXIST */
			break;
		case STORE_DELETE:
			if (!node_permits(directory, caller, 3))
				r = -EACCES;
			else if ((directory->mode & S_ISVTX) && caller && caller->uid != 0 &&
				 caller->uid != child->uid && caller->uid != directory->uid)
				r = -EPERM;
			break;
		}
		break;
	}
	pthread_mutex_unlock(&store->lock);
	return r;
}

static int find_semaphore(struct store *store, const char *path, struct node **out)
{
	struct node *parent, *node;
	const char *leaf;
	int r = walk_to_parent(store, path, NULL, &parent, &leaf);

	if (r < 0)
		return r;
	if (parent == store->root && strcmp(leaf, STORE_STATUS_NAME) == 0)
		return -EINVAL;
	node = node_child(store, parent, leaf);
	if (!node)
		return -ENOENT;
	if (node->kind != NODE_SEMAPHORE || !node->semaphore)
		return -EISDIR;
	*out = node;
	return 0;
}

/* A directory for a network name: x wherever the semaphores' mode has r. */
static mode_t directory_mode(mode_t mode)
{
	return (mode & 0777) | ((mode & 0444) >> 2);
}

static enum name_kind kind_of_path(void *context, const char *path)
{
	struct node *node;
	int r = find_semaphore(context, path, &node);
	return r == 0 ? NAME_SEMAPHORE : r == -ENOENT ? NAME_ABSENT : NAME_BLOCKED;
}

int store_name_path(struct store *store, const char *name, char *path, size_t size)
{
	pthread_mutex_lock(&store->lock);
	int r = name_resolve(name, strlen(name), kind_of_path, store, path, size);
	pthread_mutex_unlock(&store->lock);
	return r;
}

int store_open_path(struct store *store, const char *path, bool undefined_if_missing,
		    struct semaphore **out)
{
	struct node *node, *parent;
	const char *leaf;

	pthread_mutex_lock(&store->lock);
	int r = store->stopping ? -ECANCELED : find_semaphore(store, path, &node);
	if (r == -ENOENT && undefined_if_missing) {
		/* ACE's "jobs/nightly": its directories come and go with it. */
		struct maker network = {store->options.network_uid, store->options.network_gid,
					directory_mode(store->options.network_mode)};
		parent = NULL;
		r = walk_to_parent(store, path, &network, &parent, &leaf);
		if (r == 0)
			r = create_semaphore(store, parent, leaf, store->options.network_mode,
					     store->options.network_uid, store->options.network_gid,
					     1, true, "semfs:undefined", &node);
		if (r < 0 && parent)
			prune_implicit(store, parent);
	}
	if (r == 0) {
		node->semaphore->references++;
		*out = node->semaphore;
	}
	pthread_mutex_unlock(&store->lock);
	return r;
}

int store_create_path(struct store *store, const char *path, unsigned limit, const char *who)
{
	struct node *parent = NULL, *node;
	const char *leaf;

	struct maker network = {store->options.network_uid, store->options.network_gid,
				directory_mode(store->options.network_mode)};

	pthread_mutex_lock(&store->lock);
	int r = walk_to_parent(store, path, &network, &parent, &leaf);
	if (r == 0)
		r = create_semaphore(store, parent, leaf, store->options.network_mode,
				     store->options.network_uid, store->options.network_gid, limit,
				     false, who, &node);
	if (r < 0 && parent)
		prune_implicit(store, parent); /* what this request made for nothing */
	pthread_mutex_unlock(&store->lock);
	return r;
}

int store_delete_path(struct store *store, const char *path, const char *who)
{
	struct done_list done = {0};
	struct node *node;

	pthread_mutex_lock(&store->lock);
	int r = find_semaphore(store, path, &node);
	if (r == 0 && node->semaphore->defined)
		r = -EPERM;
	if (r == 0)
		r = delete_node(store, node, who, &done);
	pthread_mutex_unlock(&store->lock);
	run_done(&done);
	return r;
}

int store_define(struct store *store, const char *name, unsigned limit, char *error,
		 size_t error_size)
{
	struct done_list done = {0};
	struct node *node, *parent;
	const char *leaf;
	char path[PATH_MAX];

	pthread_mutex_lock(&store->lock);
	int r = name_resolve(name, strlen(name), kind_of_path, store, path, sizeof(path));
	if (r < 0) {
		snprintf(error, error_size, "semaphore_%s: no file name can hold it: %s", name,
			 strerror(-r));
		pthread_mutex_unlock(&store->lock);
		return r;
	}
	r = find_semaphore(store, path, &node);
	if (r == -ENOENT) {
		struct maker daemon = {geteuid(), getegid(), 0755};
		r = walk_to_parent(store, path, &daemon, &parent, &leaf);
		if (r == 0)
			r = create_semaphore(store, parent, leaf, STORE_DEFINED_MODE, geteuid(),
					     getegid(), limit, false, "config", &node);
		if (r == 0)
			log_info("defined semaphore %s created (limit %u)", path, limit);
	} else if (r == 0 && node->semaphore->limit != limit) {
		struct command command = {.verb = VERB_LIMIT, .number = (int)limit};
		struct waiter waiter = {.commands = &command, .count = 1, .who = "config"};
		waiter.semaphore = node->semaphore;
		r = command_limit(store, node->semaphore, &waiter, &command, &done);
		if (r == -EBUSY)
			snprintf(error, error_size,
				 "semaphore_%s = %u: more units than that are in use", name, limit);
	}
	if (r == 0) {
		bool was_undefined = node->semaphore->undefined;
		bool was_defined = node->semaphore->defined;
		node->semaphore->undefined = false;
		node->semaphore->defined = true;
		r = semaphore_save(store, node->semaphore);
		if (r == 0) {
			node->semaphore->defined_unconfirmed = false;
		} else {
			node->semaphore->undefined = was_undefined;
			node->semaphore->defined = was_defined;
		}
	}
	if (r < 0 && r != -EBUSY) {
		snprintf(error, error_size, "semaphore_%s: %s", name, strerror(-r));
	}
	pthread_mutex_unlock(&store->lock);
	run_done(&done);
	return r;
}

/* A semaphore_NAME line gone from the configuration: as in ACE, NAME is an
 * ordinary undefined semaphore again (limit 1, removed when idle). */
static void undefine(struct store *store, struct semaphore *semaphore, struct done_list *done)
{
	char path[PATH_MAX] = "?";
	unsigned old_limit = semaphore->limit;

	if (semaphore->node)
		(void)node_path(semaphore->node, path, sizeof(path));
	semaphore->defined = semaphore->defined_unconfirmed = false;
	semaphore->undefined = true;
	if (semaphore->limit != 1) {
		struct command command = {.verb = VERB_LIMIT, .number = 1};
		struct waiter waiter = {.commands = &command, .count = 1, .who = "config"};
		waiter.semaphore = semaphore;
		if (command_limit(store, semaphore, &waiter, &command, done) < 0)
			log_warnx("%s: no longer defined, but more than 1 unit is in use: its "
				  "limit stays %u until they come back",
				  path, semaphore->limit);
	}
	int r = semaphore_save(store, semaphore);
	if (r < 0)
		log_warnx("%s: cannot record that it is no longer defined: %s", path, strerror(-r));
	char detail[64];
	snprintf(detail, sizeof(detail), "was-limit=%u", old_limit);
	journal_event(store, semaphore, "undefine", "config", 0, detail, false);
	log_info("semaphore_%s is no longer in the configuration: %s is an undefined "
		 "semaphore again (limit %u, removed when idle)",
		 path, path, semaphore->limit);
	reap_if_idle(store, semaphore, done);
}

void store_defines_done(struct store *store)
{
	struct done_list done = {0};

	pthread_mutex_lock(&store->lock);
	for (struct semaphore *s = store->live, *next; s; s = next) {
		next = s->live_next;
		if (s->defined_unconfirmed && !s->removed)
			undefine(store, s, &done);
	}
	pthread_mutex_unlock(&store->lock);
	run_done(&done);
}

bool store_semaphore_removed(struct store *store, struct semaphore *semaphore)
{
	pthread_mutex_lock(&store->lock);
	bool removed = semaphore->removed;
	pthread_mutex_unlock(&store->lock);
	return removed;
}

/* ---- snapshots, for the report module and the stats writer ---------------- */

/* Holders as "who,who,...", one entry per unit, in a buffer reused across
 * one visit. */
struct holders_text {
	char *data;
	size_t allocated;
};

static const char *holders_join(struct holders_text *buffer, const struct semaphore *semaphore)
{
	size_t length = 0;

	for (const struct holder *h = semaphore->holders; h; h = h->next_in_semaphore) {
		size_t who = strlen(h->who);
		for (unsigned i = 0; i < h->units; i++) {
			if (length + who + 2 > buffer->allocated) {
				size_t allocated = buffer->allocated ? buffer->allocated * 2 : 256;
				while (allocated < length + who + 2)
					allocated *= 2;
				char *data = realloc(buffer->data, allocated);
				if (!data)
					return buffer->data
						   ? (buffer->data[length] = '\0', buffer->data)
						   : "";
				buffer->data = data;
				buffer->allocated = allocated;
			}
			if (length)
				buffer->data[length++] = ',';
			memcpy(buffer->data + length, h->who, who);
			length += who;
		}
	}
	if (!length)
		return "";
	buffer->data[length] = '\0';
	return buffer->data;
}

static void metric_of(const struct semaphore *s, const char *path, struct holders_text *holders,
		      struct store_metric *metric)
{
	int value = s->removed ? 0 : be_value(s->store, s->semid);
	*metric = (struct store_metric){
	    .path = path,
	    .limit = s->limit,
	    .value = value < 0 ? 0 : value,
	    .waiting = s->waiting,
	    .grants = s->grants,
	    .timeouts = s->timeouts,
	    .token = s->token,
	    .key = s->key,
	    .semid = s->semid,
	    .holders = holders_join(holders, s),
	    .defined = s->defined,
	    .undefined = s->undefined,
	};
}

static void metrics_of_subtree(struct store *store, struct node *directory,
			       const struct store_caller *caller, store_metric_fn *visit,
			       void *context, struct holders_text *holders)
{
	if (!node_permits(directory, caller, 1))
		return; /* what a reader cannot reach, it does not see */
	for (struct node *node = directory->first_child; node; node = node->next_sibling) {
		if (node->kind == NODE_DIRECTORY) {
			metrics_of_subtree(store, node, caller, visit, context, holders);
			continue;
		}
		if (!node_permits(node, caller, 4))
			continue;
		char path[PATH_MAX];
		if (node_path(node, path, sizeof(path)) < 0)
			continue;
		struct store_metric metric;
		metric_of(node->semaphore, path, holders, &metric);
		visit(context, &metric);
	}
}

void store_metrics(struct store *store, const struct store_caller *caller, store_metric_fn *visit,
		   void *context, struct store_totals *totals)
{
	struct holders_text holders = {0};

	pthread_mutex_lock(&store->lock);
	metrics_of_subtree(store, store->root, caller, visit, context, &holders);
	if (totals) {
		totals->semaphores = store->live_count;
		totals->grants = store->grants_total;
		totals->timeouts = store->timeouts_total;
	}
	pthread_mutex_unlock(&store->lock);
	free(holders.data);
}

int store_semaphore_metric(struct store *store, struct semaphore *semaphore, store_metric_fn *visit,
			   void *context)
{
	struct holders_text holders = {0};
	char path[PATH_MAX];
	int r;

	pthread_mutex_lock(&store->lock);
	bool gone = !semaphore->node || semaphore->node->unlinked || semaphore->removed ||
		    node_path(semaphore->node, path, sizeof(path)) < 0;
	struct store_metric metric;
	metric_of(semaphore, gone ? "" : path, &holders, &metric);
	metric.gone = gone;
	visit(context, &metric);
	r = 0;
	pthread_mutex_unlock(&store->lock);
	free(holders.data);
	return r;
}
