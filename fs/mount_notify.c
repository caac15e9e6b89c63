/* mount_notify.c: after a change, the poller thread wakes armed poll()s and
 * the notifier thread has the inode touched (by the toucher process, see
 * mount_toucher.c) so inotify watchers see it, without ever waiting on an
 * inode lock a queued write holds. */
#include "mount_internal.h"

static void wake_pollers(struct mount *mount);

/* ---- the notifier: poll wake-ups and inotify touches ------------------------ */

/* Queue a touch of `ino`'s aliases (`only` one of them, or 0: every one) for
 * the notifier (notify_lock held). A change already queued for it covers
 * this one, widened to every alias when they differ. */
static void queue_change(struct mount *mount, uint64_t ino, const char *path, bool touch,
			 uint64_t only)
{
	for (struct change *c = mount->changes; c; c = c->next) {
		if (c->ino == ino) {
			c->touch |= touch;
			if (c->only != only)
				c->only = 0;
			return;
		}
	}
	size_t length = strlen(path);
	struct change *change = malloc(sizeof(*change) + length + 1);
	if (!change)
		return; /* without memory a watcher misses one event, nothing else */
	change->ino = ino;
	change->touch = touch;
	change->only = only;
	memcpy(change->path, path, length + 1);
	change->next = mount->changes;
	mount->changes = change;
	if (!mount->notifier_pausing)
		pthread_cond_signal(&mount->notify_wake);
}

void mount_changed(void *context, uint64_t ino, const char *path, enum store_change kind)
{
	struct mount *mount = context;

	/* A new semaphore has no inode but its creator's (none, if it was made
	 * over the network): a touch would reach no watcher and cost three
	 * requests. The kernel tells the directory's watchers (IN_CREATE). */
	if (kind == CHANGE_NEW)
		return;
	/* Nobody polls: the poller sleeps on (its round and its pause are two
	 * thread wake-ups a change, on every host of a cluster). */
	bool polled = atomic_load(&mount->pollers_armed) > 0;
	/* No inode of it in the kernel: no watch to tell, and the notifier
	 * sleeps on (semaphores used only over TCP, every host's copy of a
	 * cluster's semaphore that nobody there has looked up). */
	bool held = nodeids_held(&mount->nodeids, ino);
	if (!polled && !held)
		return;
	pthread_mutex_lock(&mount->notify_lock);
	if (polled) {
		mount->polls_due = true;
		if (!mount->poller_pausing)
			pthread_cond_signal(&mount->poll_wake);
	}
	if (held)
		queue_change(mount, ino, path, kind == CHANGE_UNANNOUNCED, 0);
	pthread_mutex_unlock(&mount->notify_lock);
}

void mount_retouch(struct mount *mount, uint64_t ino, const char *path, uint64_t nodeid)
{
	pthread_mutex_lock(&mount->notify_lock);
	queue_change(mount, ino, path, false, nodeid);
	pthread_mutex_unlock(&mount->notify_lock);
}

/* Wake every armed poll() whose file has lines past what it has read. */
static void wake_pollers(struct mount *mount)
{
	struct fuse_pollhandle *ready[64];
	size_t count;

	do {
		count = 0;
		pthread_mutex_lock(&mount->poll_lock);
		for (struct open_file *file = mount->pollers, *next; file && count < 64;
		     file = next) {
			next = file->poll_next;
			if (!file_readable(mount, file))
				continue;
			ready[count++] = file->poll_handle;
			file->poll_handle = NULL;
			atomic_fetch_sub(&mount->pollers_armed, 1);
			if (file->poll_prev)
				file->poll_prev->poll_next = file->poll_next;
			else
				mount->pollers = file->poll_next;
			if (file->poll_next)
				file->poll_next->poll_prev = file->poll_prev;
		}
		pthread_mutex_unlock(&mount->poll_lock);

		pthread_mutex_lock(&mount->session_lock);
		for (size_t i = 0; i < count; i++) {
			if (!mount->session_closed)
				fuse_lowlevel_notify_poll(ready[i]);
			fuse_pollhandle_destroy(ready[i]);
		}
		pthread_mutex_unlock(&mount->session_lock);
	} while (count == 64);
}

/* Sleep out NOTIFY_INTERVAL (notify_lock held): what changes meanwhile
 * coalesces into the next round. */
static void pace(struct mount *mount, bool *pausing, pthread_cond_t *wake)
{
	struct timespec pause = clock_after(CLOCK_MONOTONIC, NOTIFY_INTERVAL);
	*pausing = true;
	while (!mount->notifier_stop &&
	       pthread_cond_timedwait(wake, &mount->notify_lock, &pause) == 0)
		;
	*pausing = false;
}

void *poller_main(void *argument)
{
	struct mount *mount = argument;

	pthread_setname_np(pthread_self(), "semfs-poll");
	pthread_mutex_lock(&mount->notify_lock);
	while (!mount->notifier_stop) {
		if (!mount->polls_due) {
			pthread_cond_wait(&mount->poll_wake, &mount->notify_lock);
			continue;
		}
		mount->polls_due = false;
		pthread_mutex_unlock(&mount->notify_lock);
		wake_pollers(mount);
		pthread_mutex_lock(&mount->notify_lock);
		pace(mount, &mount->poller_pausing, &mount->poll_wake);
	}
	pthread_mutex_unlock(&mount->notify_lock);
	return NULL;
}

void *notifier_main(void *argument)
{
	struct mount *mount = argument;

	pthread_setname_np(pthread_self(), "semfs-notify");
	pthread_mutex_lock(&mount->notify_lock);
	while (!mount->notifier_stop) {
		if (!mount->changes) {
			pthread_cond_wait(&mount->notify_wake, &mount->notify_lock);
			continue;
		}
		struct change *changes = mount->changes;
		mount->changes = NULL;
		pthread_mutex_unlock(&mount->notify_lock);
		while (changes) {
			struct change *next = changes->next;
			if (!mount->notifier_stop)
				touch(mount, changes);
			free(changes);
			changes = next;
		}
		pthread_mutex_lock(&mount->notify_lock);
		pace(mount, &mount->notifier_pausing, &mount->notify_wake);
	}
	pthread_mutex_unlock(&mount->notify_lock);
	return NULL;
}
