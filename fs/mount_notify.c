/* mount_notify.c: the notifier thread: after a change it wakes pollers and
 * touches the inode so inotify watchers see it, without ever waiting on an
 * inode lock a queued write holds. */
#include "mount_internal.h"

static void wake_pollers(struct mount *mount);
static bool still_watchable(struct mount *mount, uint64_t ino, uint64_t nodeid);

/* ---- the notifier: poll wake-ups and inotify touches ------------------------ */

void mount_changed(void *context, uint64_t ino, const char *path, bool announced_by_reply)
{
	struct mount *mount = context;
	size_t length = strlen(path);

	pthread_mutex_lock(&mount->notify_lock);
	for (struct change *c = mount->changes; c; c = c->next) {
		if (c->ino == ino) {
			c->touch |= !announced_by_reply;
			pthread_mutex_unlock(&mount->notify_lock);
			return;
		}
	}
	struct change *change = malloc(sizeof(*change) + length + 1);
	if (change) { /* without memory a watcher misses one event, nothing else */
		change->ino = ino;
		change->touch = !announced_by_reply;
		memcpy(change->path, path, length + 1);
		change->next = mount->changes;
		mount->changes = change;
		if (!mount->notifier_pausing)
			pthread_cond_signal(&mount->notify_wake);
	}
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

static bool still_watchable(struct mount *mount, uint64_t ino, uint64_t nodeid)
{
	uint64_t nodeids[64];
	size_t count = nodeids_watchable(&mount->nodeids, ino, nodeids, 64);

	for (size_t i = 0; i < count; i++)
		if (nodeids[i] == nodeid)
			return true;
	return false;
}

/* Raise IN_ATTRIB on every inode of the semaphore a watch may hold: set its
 * times through the mount, by file handle so that each alias is reached. */
void touch(struct mount *mount, const struct change *change)
{
	uint64_t nodeids[64];
	size_t count = nodeids_watchable(&mount->nodeids, change->ino, nodeids, 64);
	struct {
		struct file_handle handle;
		uint32_t words[3];
	} fuse_handle;

	/* Opened per touch: a standing fd would keep `fusermount3 -u` out.
	 * (Not O_PATH: open_by_handle_at refuses such a mount fd.) */
	int root_fd = count ? open(mount->mountpoint, O_RDONLY | O_DIRECTORY | O_CLOEXEC) : -1;
	for (size_t i = 0; i < count && root_fd >= 0 && mount->handles_work; i++) {
		/* The kernel's FUSE handle: FILEID_INO64_GEN, nodeid, generation. */
		fuse_handle.handle.handle_bytes = sizeof(fuse_handle.words);
		fuse_handle.handle.handle_type = 0x81;
		fuse_handle.words[0] = (uint32_t)(nodeids[i] >> 32);
		fuse_handle.words[1] = (uint32_t)nodeids[i];
		fuse_handle.words[2] = 1; /* entry.generation */
		int fd = open_by_handle_at(root_fd, &fuse_handle.handle, O_PATH | O_CLOEXEC);
		if (fd < 0) {
			if (errno == EPERM) /* needs CAP_DAC_READ_SEARCH */
				mount->handles_work = false;
			continue;
		}
		/* Ask again at the last moment: an alias just looked up is often
		 * opened and written at once, and a write that waits holds the
		 * inode lock utimensat needs. */
		if (still_watchable(mount, change->ino, nodeids[i]))
			(void)utimensat(fd, "", NULL, AT_EMPTY_PATH);
		close(fd);
	}
	if (root_fd >= 0)
		close(root_fd);
	if (!mount->handles_work && change->touch) {
		/* Unprivileged: by path, reaching the node's own inode only. */
		char path[PATH_MAX * 2];
		snprintf(path, sizeof(path), "%s/%s", mount->mountpoint, change->path);
		(void)utimensat(AT_FDCWD, path, NULL, 0);
	}
}

void *notifier_main(void *argument)
{
	struct mount *mount = argument;

	pthread_setname_np(pthread_self(), "semfs-notify");
	mount->notifier_tid = gettid();
	mount->handles_work = true;
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
			wake_pollers(mount);
			if (!mount->notifier_stop)
				touch(mount, changes);
			free(changes);
			changes = next;
		}
		pthread_mutex_lock(&mount->notify_lock);
		struct timespec pause = clock_after(CLOCK_MONOTONIC, NOTIFY_INTERVAL);
		mount->notifier_pausing = true;
		while (!mount->notifier_stop &&
		       pthread_cond_timedwait(&mount->notify_wake, &mount->notify_lock, &pause) ==
			   0)
			;
		mount->notifier_pausing = false;
	}
	pthread_mutex_unlock(&mount->notify_lock);
	return NULL;
}
