/* store.c: the store: opening a state directory and bringing its semaphores back,
 * starting and stopping the threads, and the calls into the backend.
 *
 * The store is one module in several files (fs/store*.c), which share the
 * private store_internal.h; the rest of semfs sees only include/store.h.
 * Units themselves live in a backend (include/backend.h).
 *
 * How a unit reaches a waiter. An uncontended lock/acquire is a non-blocking
 * semop, answered at once. When none is free, the request becomes a waiter at
 * the tail of its semaphore's queue and the semaphore gets a helper thread (if
 * it has none). The helper sleeps in semtimedop(-1, SEM_UNDO) *for the queue*,
 * in the kernel's own queue next to any outside SysV user; when it wins a unit
 * it hands it to whoever heads the queue at that moment, or gives it back if
 * the queue emptied meanwhile. So a waiter that is cancelled never strands a
 * unit, and a thousand waiters cost one thread. A helper whose queue emptied
 * stays parked (out of semtimedop) for HELPER_LINGER, so the next waiter of a
 * busy semaphore starts no thread; its exit was on the hand-off's path. An
 * unlock or release with a lock or acquire queued and nobody but the helper
 * asleep on the set hands its unit straight to the head
 * (hand_directly_prepare): the kernel would give it to the helper for the
 * same waiter, two thread wake-ups later. The helper takes with SEM_UNDO so
 * that a daemon crash returns the unit; a `lock` waiter gets it turned into
 * a plain unit atomically (sysv_undo_to_plain), and a plain unit handed to
 * an `acquire` the other way (sysv_plain_to_undo).
 *
 * Completions: everything that finishes a queued waiter (grant, timeout,
 * relax, delete, shutdown) only moves it onto a local done list under the
 * lock; run_done() calls complete() after the lock is dropped. */
#include "store_internal.h"

#include "cluster.h"

static void free_subtree(struct store *store, struct node *node);

/* ---- the backend (see backend.h) ------------------------------------------ */

#define BACKEND(store)		     ((store)->options.backend)
#define BACKEND_CALL(store, op, ...) BACKEND(store)->ops->op(BACKEND(store)->self, __VA_ARGS__)

int be_create(const struct store *store, const char *path, int permissions, key_t *key, int *handle)
{
	return BACKEND_CALL(store, create, path, permissions, key, handle);
}

int be_create_at(const struct store *store, key_t key, int permissions, int *handle)
{
	return BACKEND_CALL(store, create_at, key, permissions, handle);
}

int be_attach(const struct store *store, key_t key, uid_t creator, int *handle)
{
	return BACKEND_CALL(store, attach, key, creator, handle);
}

int be_value(const struct store *store, int handle)
{
	return BACKEND_CALL(store, value, handle);
}

int be_last_pid(const struct store *store, int handle)
{
	return BACKEND_CALL(store, last_pid, handle);
}

int be_waiting(const struct store *store, int handle)
{
	if (!BACKEND(store)->ops->waiting)
		return -ENOSYS;
	return BACKEND_CALL(store, waiting, handle);
}

int be_adjust(const struct store *store, int handle, int delta, bool with_undo)
{
	return BACKEND_CALL(store, adjust, handle, delta, with_undo);
}

int be_adjust_steps(const struct store *store, int handle, const signed char *steps, size_t count)
{
	if (!BACKEND(store)->ops->adjust_steps)
		return -ENOSYS;
	return BACKEND_CALL(store, adjust_steps, handle, steps, count);
}

int be_take(const struct store *store, int handle, const struct timespec *timeout)
{
	return BACKEND_CALL(store, take, handle, timeout);
}

int be_undo_to_plain(const struct store *store, int handle)
{
	return BACKEND_CALL(store, undo_to_plain, handle);
}

int be_plain_to_undo(const struct store *store, int handle)
{
	return BACKEND_CALL(store, plain_to_undo, handle);
}

/* A cluster's mirror is read-only to other users, whatever the file's mode
 * (at creation, chmod, a set made again): only semfs writes it. */
static mode_t set_mode(const struct store *store, mode_t mode)
{
	return store->cluster ? (mode & 0444) | 0200 : mode;
}

int be_set_owner(const struct store *store, int handle, uid_t uid, gid_t gid, mode_t mode)
{
	return BACKEND_CALL(store, set_owner, handle, uid, gid, set_mode(store, mode));
}

int be_create_owned(const struct store *store, const char *path, uid_t uid, gid_t gid, mode_t mode,
		    key_t *key, int *handle)
{
	int r = BACKEND_CALL(store, create, path, (int)set_mode(store, mode), key, handle);
	/* Made with that mode, and owned by semfs's own user already. */
	if (r == 0 && (uid != store->euid || gid != store->egid))
		r = be_set_owner(store, *handle, uid, gid, mode);
	return r;
}

int be_remove(const struct store *store, int handle)
{
	return BACKEND_CALL(store, remove, handle);
}

/* ---- creating and restoring ---------------------------------------------- */

struct semaphore *semaphore_new(struct store *store, key_t key, int semid, unsigned limit)
{
	struct semaphore *semaphore = calloc(1, sizeof(*semaphore));
	if (!semaphore)
		return NULL;
	semaphore->store = store;
	semaphore->key = key;
	semaphore->semid = semid;
	semaphore->limit = limit;
	semaphore->references = 1; /* the node's */
	clock_condition_init(&semaphore->helper_wake);
	journal_init(&semaphore->journal, store->options.journal_max);
	semaphore->live_next = store->live;
	if (store->live)
		store->live->live_prev = semaphore;
	store->live = semaphore;
	store->live_count++;
	return semaphore;
}

void node_attach_semaphore(struct node *node, struct semaphore *semaphore)
{
	node->semaphore = semaphore;
	semaphore->node = node;
	semaphore->ino = node->ino;
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
	store->run_steps_max = STORE_RUN_MAX;
	store->euid = geteuid();
	store->egid = getegid();
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
	r = store_restore(store, error, error_size);
	if (r < 0)
		goto fail;
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
	if (store->cluster && (r = cluster_start(store->cluster)) < 0)
		return r;
	store->monitor_running = true;
	return 0;
}

void store_shutdown(struct store *store)
{
	struct done_list done = {0};

	/* First: idle undefined semaphores in their grace go; no new request
	 * reaches the cluster, and the ones it has complete (ECANCELED)
	 * through the store. */
	pthread_mutex_lock(&store->lock);
	reap_idle_due(store, &done, true);
	store->stopping = true;
	pthread_mutex_unlock(&store->lock);
	cluster_shutdown(store->cluster);
	pthread_mutex_lock(&store->lock);
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
	cluster_close(store->cluster);
	/* Unlinked nodes the kernel still knew. */
	for (size_t i = 0; i < store->by_ino.size; i++) {
		struct node *node = store->by_ino.buckets[i];
		while (node) {
			struct node *next = node->ino_chain;
			if (node->unlinked)
				node_free(store, node);
			node = next;
		}
	}
	if (store->status)
		node_free(store, store->status);
	if (store->root)
		free_subtree(store, store->root);
	backing_close(&store->backing);
	while (store->reaps) { /* not asked: the names stay (another host may ask) */
		struct reap_request *next = store->reaps->next;
		free(store->reaps);
		store->reaps = next;
	}
	free(store->by_ino.buckets);
	free(store->by_name.buckets);
	free(store->stamps.slots);
	pthread_cond_destroy(&store->monitor_wake);
	pthread_cond_destroy(&store->helpers_gone);
	pthread_mutex_destroy(&store->lock);
	free(store);
}
