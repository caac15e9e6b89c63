/* mount_nodeids.c: the nodeids the kernel holds for semaphores, and why a
 * semaphore has several.
 *
 * A write that waits for a unit holds its inode's lock (i_rwsem) for as long
 * as it waits. Had every path walk to a semaphore shared one inode, a second
 * `echo lock > f` would block in the kernel behind the first, before semfs
 * saw it, and so would the notifier's touch of that inode. So each lookup of
 * a semaphore gets a nodeid nobody else can be using — an alias — and its
 * own inode; the notifier looks up the semaphore's own nodeid (its ino) and
 * touches only nodeids whose inode no waiting write holds. This table is the
 * kernel's side of that: per nodeid, its semaphore (ino), the kernel's
 * references, the open files and the writes waiting through it. The store
 * knows nothing of it: it counts one reference per kernel reference on the
 * semaphore itself.
 *
 * The kernel keeps the last walk's dentry (an entry valid for no time is not
 * dropped at the last close on a /dev/fuse mount), and the next walk asks
 * about it again. A fresh alias there means a second LOOKUP and two FORGETs
 * per `echo lock > f`, so the newest alias goes back to the next walk when
 * it is idle: handed to no walk that has not closed it since, no file open,
 * no write waiting, no touch under way. Two walks never share an alias, so a
 * waiting write still holds no other open's inode.
 *
 * Lock order: the store's lock, then this table's (nodeids_queued runs under
 * the store lock); never the store while holding this one. */
#include "mount_internal.h"

#include <stdlib.h>

/* Alias nodeids live above every ino the store hands out. */
#define ALIAS_FIRST (UINT64_C(1) << 62)

struct known {
	uint64_t nodeid, ino;
	uint64_t lookups;	/* the kernel's references (FUSE nlookup) */
	unsigned opens;		/* open files through this nodeid */
	unsigned queued_writes; /* writes through it waiting in the store */
	bool alias;
	bool handed;		 /* to a walk that has not closed it since (or never opened it) */
	bool touching;		 /* the notifier is setting its times */
	struct timespec settled; /* when a walk handed it has had time to open it */
	struct known *next_by_nodeid, *next_by_ino;
};

#define BUCKETS 4096 /* grows: see grow() */

static size_t bucket(uint64_t key, size_t size)
{
	key ^= key >> 33;
	key *= UINT64_C(0xff51afd7ed558ccd);
	key ^= key >> 33;
	return (size_t)key & (size - 1);
}

int nodeids_init(struct nodeids *table)
{
	table->size = BUCKETS;
	table->by_nodeid = calloc(table->size, sizeof(*table->by_nodeid));
	table->by_ino = calloc(table->size, sizeof(*table->by_ino));
	table->next_alias = ALIAS_FIRST;
	pthread_mutex_init(&table->lock, NULL);
	return table->by_nodeid && table->by_ino ? 0 : -ENOMEM;
}

void nodeids_free(struct nodeids *table)
{
	for (size_t i = 0; table->by_nodeid && i < table->size; i++)
		for (struct known *k = table->by_nodeid[i], *next; k; k = next) {
			next = k->next_by_nodeid;
			free(k);
		}
	free(table->by_nodeid);
	free(table->by_ino);
	table->by_nodeid = table->by_ino = NULL;
	pthread_mutex_destroy(&table->lock);
}

static struct known *find(struct nodeids *table, uint64_t nodeid)
{
	struct known *k = table->by_nodeid[bucket(nodeid, table->size)];
	while (k && k->nodeid != nodeid)
		k = k->next_by_nodeid;
	return k;
}

/* Double the buckets past one entry per bucket; without memory, chains grow. */
static void grow(struct nodeids *table)
{
	size_t size = table->size * 2;
	struct known **by_nodeid = calloc(size, sizeof(*by_nodeid));
	struct known **by_ino = calloc(size, sizeof(*by_ino));
	if (!by_nodeid || !by_ino) {
		free(by_nodeid);
		free(by_ino);
		return;
	}
	for (size_t i = 0; i < table->size; i++) {
		for (struct known *k = table->by_nodeid[i], *next; k; k = next) {
			next = k->next_by_nodeid;
			k->next_by_nodeid = by_nodeid[bucket(k->nodeid, size)];
			by_nodeid[bucket(k->nodeid, size)] = k;
			k->next_by_ino = by_ino[bucket(k->ino, size)];
			by_ino[bucket(k->ino, size)] = k;
		}
	}
	free(table->by_nodeid);
	free(table->by_ino);
	table->by_nodeid = by_nodeid;
	table->by_ino = by_ino;
	table->size = size;
}

static struct known *add(struct nodeids *table, uint64_t nodeid, uint64_t ino, bool alias)
{
	if (table->count >= table->size)
		grow(table);
	struct known *k = calloc(1, sizeof(*k));
	if (!k)
		return NULL;
	*k = (struct known){.nodeid = nodeid, .ino = ino, .alias = alias};
	k->next_by_nodeid = table->by_nodeid[bucket(nodeid, table->size)];
	table->by_nodeid[bucket(nodeid, table->size)] = k;
	k->next_by_ino = table->by_ino[bucket(ino, table->size)];
	table->by_ino[bucket(ino, table->size)] = k;
	table->count++;
	return k;
}

static void drop_if_unused(struct nodeids *table, struct known *k)
{
	if (k->lookups > 0 || k->opens > 0 || k->queued_writes > 0)
		return;
	struct known **p = &table->by_nodeid[bucket(k->nodeid, table->size)];
	while (*p != k)
		p = &(*p)->next_by_nodeid;
	*p = k->next_by_nodeid;
	p = &table->by_ino[bucket(k->ino, table->size)];
	while (*p != k)
		p = &(*p)->next_by_ino;
	*p = k->next_by_ino;
	table->count--;
	free(k);
}

uint64_t nodeids_ino(struct nodeids *table, uint64_t nodeid)
{
	if (nodeid < ALIAS_FIRST)
		return nodeid; /* a node's own nodeid is its ino */
	pthread_mutex_lock(&table->lock);
	struct known *k = find(table, nodeid);
	uint64_t ino = k ? k->ino : 0; /* 0: no such node (ENOENT below) */
	pthread_mutex_unlock(&table->lock);
	return ino;
}

bool nodeids_is_alias(uint64_t nodeid)
{
	return nodeid >= ALIAS_FIRST;
}

/* The newest alias of `ino` if no walk, file, write or touch has it. */
static struct known *idle_alias(struct nodeids *table, uint64_t ino)
{
	struct known *newest = NULL;
	for (struct known *k = table->by_ino[bucket(ino, table->size)]; k; k = k->next_by_ino)
		if (k->ino == ino && k->alias && (!newest || k->nodeid > newest->nodeid))
			newest = k;
	if (newest && newest->lookups > 0 && newest->opens == 0 && newest->queued_writes == 0 &&
	    !newest->handed && !newest->touching)
		return newest;
	return NULL;
}

uint64_t nodeids_looked_up(struct nodeids *table, uint64_t ino, bool own)
{
	pthread_mutex_lock(&table->lock);
	struct known *k = NULL;
	if (!own) {
		k = idle_alias(table, ino);
		if (!k)
			k = add(table, table->next_alias++, ino, true);
		if (k) {
			k->handed = true;
			k->settled = clock_after(CLOCK_MONOTONIC, ALIAS_SETTLE);
		}
	}
	if (!k) /* the notifier's, or no memory: share the node's own inode */
		k = find(table, ino);
	if (!k)
		k = add(table, ino, ino, false);
	uint64_t nodeid = ino; /* not even that: untracked, forget still passes */
	if (k) {
		k->lookups++;
		nodeid = k->nodeid;
	}
	pthread_mutex_unlock(&table->lock);
	return nodeid;
}

uint64_t nodeids_forget(struct nodeids *table, uint64_t nodeid, uint64_t count)
{
	pthread_mutex_lock(&table->lock);
	struct known *k = find(table, nodeid);
	uint64_t ino = nodeid < ALIAS_FIRST ? nodeid : 0;
	if (k) {
		ino = k->ino;
		k->lookups = k->lookups > count ? k->lookups - count : 0;
		drop_if_unused(table, k);
	}
	pthread_mutex_unlock(&table->lock);
	return ino;
}

static void adjust(struct nodeids *table, uint64_t nodeid, int delta, bool opens)
{
	pthread_mutex_lock(&table->lock);
	struct known *k = find(table, nodeid);
	if (k) {
		unsigned *field = opens ? &k->opens : &k->queued_writes;
		*field = (unsigned)((int)*field + delta);
		if (opens && delta < 0 && k->opens == 0)
			k->handed = false; /* its walk is over: the next may have it */
		drop_if_unused(table, k);
	}
	pthread_mutex_unlock(&table->lock);
}

void nodeids_opened(struct nodeids *table, uint64_t nodeid, int delta)
{
	adjust(table, nodeid, delta, true);
}

void nodeids_queued(struct nodeids *table, uint64_t nodeid, int delta)
{
	adjust(table, nodeid, delta, false);
}

bool nodeids_held(struct nodeids *table, uint64_t ino)
{
	bool held = false;

	pthread_mutex_lock(&table->lock);
	for (struct known *k = table->by_ino[bucket(ino, table->size)]; k && !held;
	     k = k->next_by_ino)
		held = k->ino == ino && k->lookups > 0;
	pthread_mutex_unlock(&table->lock);
	return held;
}

size_t nodeids_watchable(struct nodeids *table, uint64_t ino, uint64_t *out, size_t max)
{
	size_t count = 0;

	pthread_mutex_lock(&table->lock);
	for (struct known *k = table->by_ino[bucket(ino, table->size)]; k && count < max;
	     k = k->next_by_ino) {
		/* A touch of an inode whose lock a waiting write holds would wait
		 * too; an alias with an open file is that file's, not a watch's. */
		if (k->ino == ino && k->lookups > 0 && k->queued_writes == 0 &&
		    (!k->alias || k->opens == 0))
			out[count++] = k->nodeid;
	}
	pthread_mutex_unlock(&table->lock);
	return count;
}

enum touch_verdict nodeids_touch_begin(struct nodeids *table, uint64_t ino, uint64_t nodeid)
{
	uint64_t nodeids[64];
	size_t count = nodeids_watchable(table, ino, nodeids, 64);
	bool watchable = false;

	for (size_t i = 0; i < count; i++)
		watchable |= nodeids[i] == nodeid;
	if (!watchable)
		return TOUCH_NEVER;
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	enum touch_verdict verdict = TOUCH_NEVER;
	pthread_mutex_lock(&table->lock);
	struct known *k = find(table, nodeid);
	if (k && k->queued_writes == 0 && (!k->alias || k->opens == 0)) {
		/* Handed and not open: not opened yet (a close ends the hand). */
		if (k->alias && k->handed && clock_compare(&now, &k->settled) < 0) {
			verdict = TOUCH_LATER;
		} else {
			k->touching = true;
			verdict = TOUCH_NOW;
		}
	}
	pthread_mutex_unlock(&table->lock);
	return verdict;
}

void nodeids_touch_end(struct nodeids *table, uint64_t nodeid)
{
	pthread_mutex_lock(&table->lock);
	struct known *k = find(table, nodeid);
	if (k)
		k->touching = false;
	pthread_mutex_unlock(&table->lock);
}
