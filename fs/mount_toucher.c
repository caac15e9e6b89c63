/* mount_toucher.c: the toucher, a child process that sets a semaphore's
 * times through the mount so that inotify watchers see its changes.
 *
 * Why a process and not a thread: a touch is a request to our own mount. If
 * the daemon dies (SIGKILL, or a crash: the core dump waits for every thread)
 * after reading that request and before answering it, the thread that made
 * it waits for the answer uninterruptibly, and the connection aborts only
 * when the daemon's last /dev/fuse descriptor closes — which, with that
 * thread still in the daemon, never happens: a zombie and a mount on which
 * every access hangs. The toucher holds none of the daemon's descriptors, so
 * the daemon's death aborts the connection, which ends the touch, and the
 * toucher follows its parent out (PR_SET_PDEATHSIG, or the channel's EOF).
 *
 * It is forked right after daemonizing (mount_fork_toucher), while the
 * daemon has one thread and no connection, and makes system calls and
 * nothing else (no allocation, no stdio). Each message gets one answer (an
 * errno, 0 for success), so the notifier can check a nodeid is still
 * watchable between the open and the touch. */
#include "mount_internal.h"

#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>

enum touch_kind {
	TOUCH_OPEN = 'o',  /* open nodeid's inode by file handle */
	TOUCH_TIMES = 't', /* set the times of the opened inode, close it */
	TOUCH_SKIP = 's',  /* close it untouched */
	TOUCH_DONE = 'd',  /* the batch is over: close the mount's root */
	TOUCH_PATH = 'p',  /* set the times of MOUNT/path */
};

struct touch_message {
	char kind;
	uint64_t nodeid;
	char path[PATH_MAX * 2];
};

#define MESSAGE_HEAD offsetof(struct touch_message, path)
#define CHANNEL_FD   3 /* the toucher's end, where the child keeps it */

static int toucher_open(const char *mountpoint, int *root_fd, uint64_t nodeid)
{
	struct {
		struct file_handle handle;
		uint32_t words[3];
	} fuse_handle;

	/* Opened per batch: a standing fd would keep `fusermount3 -u` out.
	 * (Not O_PATH: open_by_handle_at refuses such a mount fd.) */
	if (*root_fd < 0)
		*root_fd = open(mountpoint, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (*root_fd < 0)
		return -errno;
	/* The kernel's FUSE handle: FILEID_INO64_GEN, nodeid, generation. */
	fuse_handle.handle.handle_bytes = sizeof(fuse_handle.words);
	fuse_handle.handle.handle_type = 0x81;
	fuse_handle.words[0] = (uint32_t)(nodeid >> 32);
	fuse_handle.words[1] = (uint32_t)nodeid;
	fuse_handle.words[2] = 1; /* entry.generation */
	int fd = open_by_handle_at(*root_fd, &fuse_handle.handle, O_PATH | O_CLOEXEC);
	return fd >= 0 ? fd : -errno;
}

static _Noreturn void toucher_main(const char *mountpoint)
{
	struct touch_message message;
	int root_fd = -1, inode_fd = -1;

	for (;;) {
		ssize_t n = recv(CHANNEL_FD, &message, sizeof(message) - 1, 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < (ssize_t)MESSAGE_HEAD)
			_exit(0); /* the daemon closed the channel, or died */
		int answer = 0;
		switch (message.kind) {
		case TOUCH_OPEN:
			if (inode_fd >= 0)
				close(inode_fd);
			inode_fd = toucher_open(mountpoint, &root_fd, message.nodeid);
			answer = inode_fd < 0 ? -inode_fd : 0;
			break;
		case TOUCH_TIMES:
			if (inode_fd >= 0 && utimensat(inode_fd, "", NULL, AT_EMPTY_PATH) != 0)
				answer = errno;
			/* fall through */
		case TOUCH_SKIP:
			if (inode_fd >= 0)
				close(inode_fd);
			inode_fd = -1;
			break;
		case TOUCH_DONE:
			if (root_fd >= 0)
				close(root_fd);
			root_fd = -1;
			break;
		case TOUCH_PATH:
			message.path[n - MESSAGE_HEAD] = '\0';
			if (utimensat(AT_FDCWD, message.path, NULL, 0) != 0)
				answer = errno;
			break;
		default:
			answer = EINVAL;
		}
		if (send(CHANNEL_FD, &answer, sizeof(answer), MSG_NOSIGNAL) != sizeof(answer))
			_exit(0);
	}
}

int toucher_start(struct mount *mount)
{
	int pair[2];
	pid_t parent = getpid();

	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) != 0)
		return -errno;
	pid_t child = fork();
	if (child < 0) {
		int e = errno;
		close(pair[0]);
		close(pair[1]);
		return -e;
	}
	if (child == 0) {
		/* It ends with the daemon, not with a signal meant for it
		 * (systemd signals the whole unit; ^C the process group). */
		struct sigaction ignore = {.sa_handler = SIG_IGN};
		sigaction(SIGTERM, &ignore, NULL);
		sigaction(SIGINT, &ignore, NULL);
		sigaction(SIGHUP, &ignore, NULL);
		sigaction(SIGPIPE, &ignore, NULL);
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent)
			_exit(0);
		/* Nothing of the daemon's: above all not /dev/fuse. */
		if (dup2(pair[1], CHANNEL_FD) < 0 || close_range(CHANNEL_FD + 1, ~0U, 0) != 0)
			_exit(1);
		prctl(PR_SET_NAME, "semfs-touch");
		toucher_main(mount->mountpoint);
	}
	close(pair[1]);
	mount->handles_work = true;
	mount->toucher = child;
	mount->toucher_channel = pair[0];
	/* Its lookups get the node's own nodeid (see nodeids_looked_up). */
	mount->notifier_tid = child;
	return 0;
}

/* The toucher's answer to one message: 0 or an errno (EPIPE: it is gone). */
static int toucher_ask(struct mount *mount, char kind, uint64_t nodeid, const char *path)
{
	struct touch_message message = {.kind = kind, .nodeid = nodeid};
	size_t length = MESSAGE_HEAD;
	int answer;

	if (mount->toucher_gone)
		return EPIPE;
	if (path) {
		size_t path_length = strnlen(path, sizeof(message.path) - 1);
		memcpy(message.path, path, path_length);
		length += path_length;
	}
	if (send(mount->toucher_channel, &message, length, MSG_NOSIGNAL) != (ssize_t)length)
		return EPIPE;
	for (;;) {
		ssize_t n = recv(mount->toucher_channel, &answer, sizeof(answer), 0);
		if (n == (ssize_t)sizeof(answer))
			return answer;
		if (n < 0 && errno == EINTR)
			continue;
		return EPIPE;
	}
}

/* Raise IN_ATTRIB on every inode of the semaphore a watch may hold: set its
 * times through the mount, by file handle so that each alias is reached. */
void touch(struct mount *mount, const struct change *change)
{
	uint64_t nodeids[64];
	size_t count = nodeids_watchable(&mount->nodeids, change->ino, nodeids, 64);
	bool opened = false;

	for (size_t i = 0; i < count && mount->handles_work; i++) {
		if (change->only && nodeids[i] != change->only)
			continue;
		int r = toucher_ask(mount, TOUCH_OPEN, nodeids[i], NULL);
		opened = true;
		if (r == EPERM) /* needs CAP_DAC_READ_SEARCH */
			mount->handles_work = false;
		if (r == EPIPE)
			goto gone;
		if (r != 0)
			continue;
		/* Ask again at the last moment: an alias just looked up is often
		 * opened and written at once, and a write that waits holds the
		 * inode lock utimensat needs. Until the touch is over, no walk is
		 * given this alias; one just given it is touched once it settles. */
		enum touch_verdict verdict =
		    nodeids_touch_begin(&mount->nodeids, change->ino, nodeids[i]);
		r = toucher_ask(mount, verdict == TOUCH_NOW ? TOUCH_TIMES : TOUCH_SKIP, 0, NULL);
		if (verdict == TOUCH_NOW)
			nodeids_touch_end(&mount->nodeids, nodeids[i]);
		if (verdict == TOUCH_LATER)
			mount_retouch(mount, change->ino, change->path, nodeids[i]);
		if (r == EPIPE)
			goto gone;
	}
	if (opened && toucher_ask(mount, TOUCH_DONE, 0, NULL) == EPIPE)
		goto gone;
	if (!mount->handles_work && change->touch) {
		/* Unprivileged: by path, reaching the node's own inode only. */
		char path[PATH_MAX * 2];
		snprintf(path, sizeof(path), "%s/%s", mount->mountpoint, change->path);
		if (toucher_ask(mount, TOUCH_PATH, 0, path) == EPIPE)
			goto gone;
	}
	return;
gone:
	if (!mount->toucher_gone && !mount->notifier_stop)
		log_warnx("the toucher process is gone: inotify watchers of %s see no more "
			  "changes (tail -f, poll and reads still do)",
			  mount->mountpoint);
	mount->toucher_gone = true;
}

void toucher_stop(struct mount *mount)
{
	/* Its EOF; and the notifier, should it wait for an answer, has one. */
	if (mount->toucher_channel >= 0)
		shutdown(mount->toucher_channel, SHUT_RDWR);
	if (mount->toucher <= 0)
		return;
	/* A touch it still waits in ended when /dev/fuse closed; one that waits
	 * for an inode lock has 1 s. */
	for (int t = 0; waitpid(mount->toucher, NULL, WNOHANG) == 0; t++) {
		if (t == 100)
			kill(mount->toucher, SIGKILL);
		usleep(10000);
	}
	mount->toucher = 0;
}
