/* store_monitor.c: the monitor of outside changes. SysV tells nobody when
 * another process moves a set, so the monitor looks, in sweeps: it reads when
 * each set last changed, all at once (the backend's stamps), and asks the
 * value only of the sets that did since it last asked; every set, when the
 * backend cannot tell. Between sweeps it ends idle undefined semaphores once
 * their grace is over. */
#include "store_internal.h"

#include "log.h"

struct stamp_slot {
	int handle; /* -1: empty */
	long long stamp;
};

/* SysV semids are the set's index in the low bits (and a sequence above):
 * kept as they are, the sets of one look, listed in index order, fill the
 * table in order and are found in the order they were made. */
static size_t stamp_index(int handle, size_t size)
{
	return (size_t)handle & (size - 1);
}

static void stamps_clear(struct stamp_table *table)
{
	if (table->slots)
		memset(table->slots, 0xff, table->size * sizeof(*table->slots));
	table->count = 0;
	table->failed = false;
}

static void stamps_insert(struct stamp_slot *slots, size_t size, int handle, long long stamp)
{
	size_t i = stamp_index(handle, size);
	while (slots[i].handle != -1 && slots[i].handle != handle)
		i = (i + 1) & (size - 1);
	slots[i] = (struct stamp_slot){.handle = handle, .stamp = stamp};
}

static bool stamps_grow(struct stamp_table *table)
{
	size_t size = table->size ? table->size * 2 : 1024;
	struct stamp_slot *slots = malloc(size * sizeof(*slots));
	if (!slots)
		return false;
	memset(slots, 0xff, size * sizeof(*slots));
	for (size_t i = 0; i < table->size; i++)
		if (table->slots[i].handle != -1)
			stamps_insert(slots, size, table->slots[i].handle, table->slots[i].stamp);
	free(table->slots);
	table->slots = slots;
	table->size = size;
	return true;
}

/* The backend's `each`: one counter's stamp. */
static void stamps_put(void *arg, int handle, long long stamp)
{
	struct stamp_table *table = arg;
	if (table->failed || handle < 0)
		return;
	if ((table->count + 1) * 2 > table->size && !stamps_grow(table)) {
		table->failed = true;
		return;
	}
	stamps_insert(table->slots, table->size, handle, stamp);
	table->count++;
}

static bool stamps_find(const struct stamp_table *table, int handle, long long *stamp)
{
	if (!table->size)
		return false;
	for (size_t i = stamp_index(handle, table->size); table->slots[i].handle != -1;
	     i = (i + 1) & (table->size - 1)) {
		if (table->slots[i].handle == handle) {
			*stamp = table->slots[i].stamp;
			return true;
		}
	}
	return false;
}

/* A sweep's look at every stamp, without the store lock (a read of ~10 ms
 * for 20,000 SysV sets). */
static void monitor_look(struct store *store)
{
	const struct backend *backend = store->options.backend;
	struct stamp_table *table = &store->stamps;

	table->fresh = false;
	if (!backend->ops->stamps || table->unusable)
		return;
	stamps_clear(table);
	long long settled = 0;
	pthread_mutex_unlock(&store->lock);
	int r = backend->ops->stamps(backend->self, stamps_put, table, &settled);
	pthread_mutex_lock(&store->lock);
	if (r == 0 && table->failed)
		r = -ENOMEM;
	if (r == -ENOMEM) {
		if (time(NULL) - table->enomem_logged >= 60) {
			table->enomem_logged = time(NULL);
			log_warnx(
			    "out of memory for the stamps of every %s counter: this sweep asks "
			    "each semaphore (logged once a minute)",
			    backend->name);
		}
		return;
	}
	if (r < 0) {
		table->unusable = true;
		log_warnx("no stamps from the %s backend (%s): outside changes are found by asking "
			  "every semaphore each sweep from now on",
			  backend->name, strerror(-r));
		return;
	}
	/* The clock went back: a stamp that did not change may hide a change. */
	table->force = settled < table->settled;
	table->settled = settled;
	table->fresh = true;
}

/* Whether `s` may have changed since the monitor last asked its value: it
 * has no stamp, or its stamp moved, or was not settled when last asked.
 * Notes the stamp the value is now asked at. */
static bool monitor_moved(struct store *store, struct semaphore *s)
{
	const struct stamp_table *table = &store->stamps;
	long long stamp = 0;
	bool known = table->fresh && stamps_find(table, s->semid, &stamp);
	if (known && !table->force && s->seen_quiet && s->seen_handle == s->semid &&
	    s->seen_stamp == stamp)
		return false;
	s->seen_handle = s->semid;
	s->seen_stamp = stamp;
	s->seen_quiet = known && stamp < table->settled;
	return true;
}

/* Cluster mode: the set only mirrors the cluster's value; an outside
 * semop cannot wait in the cluster's queue, so its change is undone. */
static void cluster_revert(struct store *store, struct semaphore *s, struct done_list *done)
{
	int value = be_value(store, s->semid);
	if (handle_gone(value)) {
		(void)set_gone_from_outside(store, s, done);
		return;
	}
	if (value < 0 || value == s->cluster_value)
		return;
	int pid = be_last_pid(store, s->semid);
	char who[32], extra[48];
	snprintf(who, sizeof(who), "sysv:%d", pid);
	snprintf(extra, sizeof(extra), "was=%d reverted", value);
	(void)be_adjust(store, s->semid, s->cluster_value - value, false);
	journal_event(store, s, "outside-change", who, 0, extra, CHANGE_UNANNOUNCED);
}

static void monitor_check_one(struct store *store, struct semaphore *s, struct done_list *done)
{
	if (store->cluster) {
		cluster_revert(store, s, done);
		return;
	}
	int value = limit_guard(store, s);
	if (handle_gone(value)) {
		(void)set_gone_from_outside(store, s, done);
		return;
	}
	if (value < 0 || value == s->last_value)
		return;
	int pid = be_last_pid(store, s->semid);
	if (pid == store->pid)
		return; /* ours, in flight: its own journal line follows */
	char who[32];
	snprintf(who, sizeof(who), "sysv:%d", pid);
	journal_event(store, s, "outside-change", who, 0, NULL, CHANGE_UNANNOUNCED);
}

/* Seconds between sweeps: 0.25 while that is at most MONITOR_ASKS_PER_SECOND
 * questions, longer with more semaphores, never over 1. */
static double monitor_period(const struct store *store)
{
	double period = (double)store->live_count / MONITOR_ASKS_PER_SECOND;
	if (period < MONITOR_PERIOD_MIN)
		period = MONITOR_PERIOD_MIN;
	if (period > MONITOR_PERIOD_MAX)
		period = MONITOR_PERIOD_MAX;
	return period;
}

/* The sweep from the hand on, until MONITOR_SHARE questions or
 * MONITOR_VISITS semaphores: the store lock is never held for a whole sweep
 * of thousands. */
static void monitor_share(struct store *store, struct done_list *done)
{
	size_t asked = 0, visited = 0;
	struct semaphore *s;
	while ((s = store->monitor_hand) && asked < MONITOR_SHARE && visited < MONITOR_VISITS) {
		/* Moved on first: live_remove moves it again if this check
		 * removes the next one. */
		store->monitor_hand = s->live_next;
		visited++;
		if (monitor_moved(store, s)) {
			asked++;
			monitor_check_one(store, s, done);
		}
	}
}

void *monitor_main(void *argument)
{
	struct store *store = argument;
	struct done_list done = {0};
	struct timespec next_sweep = clock_after(CLOCK_MONOTONIC, 0);

	pthread_setname_np(pthread_self(), "semfs-monitor");
	pthread_mutex_lock(&store->lock);
	while (!store->stopping) {
		struct timespec wake = next_sweep;
		if (store->monitor_hand) {
			wake = clock_after(CLOCK_MONOTONIC, MONITOR_PAUSE); /* the sweep goes on */
		} else {
			/* Undefined semaphores in their grace are looked at at
			 * least this often too (one may become idle meanwhile). */
			struct timespec grace = clock_after(CLOCK_MONOTONIC, UNDEFINED_GRACE / 2);
			if (clock_compare(&grace, &wake) < 0)
				wake = grace;
		}
		pthread_cond_timedwait(&store->monitor_wake, &store->lock, &wake);
		if (store->stopping)
			break;
		reap_idle_due(store, &done, false);
		struct timespec now = clock_after(CLOCK_MONOTONIC, 0);
		if (!store->monitor_hand && clock_compare(&now, &next_sweep) >= 0) {
			next_sweep = clock_after(CLOCK_MONOTONIC, monitor_period(store));
			monitor_look(store);
			store->monitor_hand = store->live;
		}
		if (!store->stopping)
			monitor_share(store, &done);
		if (done.first) {
			pthread_mutex_unlock(&store->lock);
			run_done(&done);
			pthread_mutex_lock(&store->lock);
		}
		if (store->reaps) /* the cluster's loop takes the store lock too */
			cluster_store_reap(store);
		if (store->remark_opens)
			cluster_store_remark(store);
	}
	store->monitor_hand = NULL;
	pthread_mutex_unlock(&store->lock);
	return NULL;
}
