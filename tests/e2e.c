/* e2e.c: the end-to-end harness (see e2e.h). */
#include "e2e.h"
#include "fusectl.h"

#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/prctl.h>
#include <sys/sem.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

struct e2e e2e;

double e2e_now(void)
{
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	return (double)now.tv_sec + (double)now.tv_nsec / 1e9;
}

static bool is_mounted(void)
{
	char line[1024], needle[400];
	FILE *mounts = fopen("/proc/self/mounts", "re");
	bool found = false;

	snprintf(needle, sizeof(needle), " %s fuse.semfs ", e2e.mnt);
	while (mounts && fgets(line, sizeof(line), mounts))
		if (strstr(line, needle))
			found = true;
	if (mounts)
		fclose(mounts);
	return found;
}

static void daemon_launch(void)
{
	const char *binary = getenv("SEMFS_BIN");
	cr_assert_not_null(binary, "SEMFS_BIN is not set (run through meson test)");
	pid_t pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		/* If the test process dies, the daemon follows (and unmounts). */
		prctl(PR_SET_PDEATHSIG, SIGTERM);
		int log = open(e2e.log, O_WRONLY | O_CREAT | O_APPEND, 0644);
		if (log >= 0) {
			dup2(log, 2);
			close(log);
		}
		/* Other users (the permission test) need allow_other; root may set it. */
		const char *mode = e2e.traced ? "-d" : "-f";
		if (geteuid() == 0)
			execl(binary, "semfs", mode, "-o", "allow_other", "-c", e2e.config, e2e.mnt,
			      (char *)NULL);
		else
			execl(binary, "semfs", mode, "-c", e2e.config, e2e.mnt, (char *)NULL);
		_exit(127);
	}
	e2e.daemon = pid;
	char path[320];
	snprintf(path, sizeof(path), "%s/daemon.pid", e2e.dir);
	FILE *file = fopen(path, "we");
	if (file) {
		fprintf(file, "%d\n", pid);
		fclose(file);
	}
	for (int i = 0; i < 500 && !is_mounted(); i++) {
		int status;
		if (waitpid(pid, &status, WNOHANG) == pid) {
			e2e.daemon = 0;
			cr_assert_fail("semfs exited at start-up (status %d), see %s", status,
				       e2e.log);
		}
		usleep(10000);
	}
	cr_assert(is_mounted(), "semfs did not mount within 5 s");
}

unsigned e2e_free_port(void)
{
	struct sockaddr_in address = {.sin_family = AF_INET,
				      .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t size = sizeof(address);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	cr_assert_geq(fd, 0);
	cr_assert_eq(bind(fd, (struct sockaddr *)&address, sizeof(address)), 0);
	cr_assert_eq(getsockname(fd, (struct sockaddr *)&address, &size), 0);
	close(fd);
	return ntohs(address.sin_port);
}

static void start(const char *extra, bool traced)
{
	memset(&e2e, 0, sizeof(e2e));
	e2e.traced = traced;
	snprintf(e2e.dir, sizeof(e2e.dir), "/tmp/semfs-test.XXXXXX");
	cr_assert_not_null(mkdtemp(e2e.dir));
	chmod(e2e.dir, 0755); /* the permission test runs as nobody */
	snprintf(e2e.mnt, sizeof(e2e.mnt), "%s/mnt", e2e.dir);
	snprintf(e2e.state, sizeof(e2e.state), "%s/state", e2e.dir);
	snprintf(e2e.config, sizeof(e2e.config), "%s/semfs.ini", e2e.dir);
	snprintf(e2e.log, sizeof(e2e.log), "%s/semfs.log", e2e.dir);
	cr_assert_eq(mkdir(e2e.mnt, 0755), 0);
	FILE *config = fopen(e2e.config, "we");
	cr_assert_not_null(config);
	e2e.port = e2e_free_port();
	fprintf(config,
		"[service_network_semaphore]\nbind_port = %u\n[semfs]\nstate_dir = %s\n%s\n",
		e2e.port, e2e.state, extra ? extra : "");
	fclose(config);
	daemon_launch();
}

void e2e_start(const char *extra)
{
	start(extra, false);
}

void e2e_start_traced(const char *extra)
{
	start(extra, true);
}

long e2e_log_size(void)
{
	struct stat st;
	return stat(e2e.log, &st) == 0 ? (long)st.st_size : 0;
}

int e2e_traced_requests(long from, const char *opcode, pid_t pid)
{
	char needle[96], tail[32], line[512];
	/* libfuse's trace: "unique: 9, opcode: LOOKUP (1), nodeid: 1, insize: 45, pid: 42" */
	snprintf(needle, sizeof(needle), "opcode: %s (", opcode);
	snprintf(tail, sizeof(tail), ", pid: %d\n", (int)pid);
	FILE *log = fopen(e2e.log, "re");
	cr_assert_not_null(log);
	cr_assert_eq(fseek(log, from, SEEK_SET), 0);
	int count = 0;
	while (fgets(line, sizeof(line), log)) {
		size_t length = strlen(line), tail_length = strlen(tail);
		count += strstr(line, needle) && length >= tail_length &&
			 strcmp(line + length - tail_length, tail) == 0;
	}
	fclose(log);
	return count;
}

void e2e_restart(void)
{
	e2e_stop();
	daemon_launch();
}

void e2e_kill_children(void)
{
	for (int i = 0; i < e2e.child_count; i++) {
		if (e2e.children[i] > 0) {
			kill(e2e.children[i], SIGKILL);
			waitpid(e2e.children[i], NULL, 0);
			e2e.children[i] = 0;
		}
	}
	e2e.child_count = 0;
}

/* The daemon's log, for a failure message. */
static const char *daemon_log(void)
{
	static char text[4096];
	FILE *file = fopen(e2e.log, "re");
	size_t n = file ? fread(text, 1, sizeof(text) - 1, file) : 0;
	text[n] = '\0';
	if (file)
		fclose(file);
	return text;
}

bool e2e_kill_daemon(int *status)
{
	dev_t device = fusectl_device(e2e.mnt);
	bool alone = true;
	kill(e2e.daemon, SIGKILL);
	for (int t = 0; waitpid(e2e.daemon, status, WNOHANG) != e2e.daemon; t++) {
		if (t == 200 && device) {
			fprintf(stderr, "semfs: killed but not gone after 2 s: aborting its FUSE "
					"connection\n");
			alone = false;
			fusectl_abort(device);
		}
		if (t == 1000) {
			fprintf(stderr, "semfs (pid %d): killed, still not gone after 10 s\n",
				(int)e2e.daemon);
			alone = false;
			break;
		}
		usleep(10000);
	}
	e2e.daemon = 0;
	return alone;
}

void e2e_stop(void)
{
	if (e2e.daemon > 0) {
		kill(e2e.daemon, SIGTERM);
		int status = 0;
		bool exited = false;
		for (int i = 0; i < 1000; i++) {
			if (waitpid(e2e.daemon, &status, WNOHANG) == e2e.daemon) {
				exited = true;
				break;
			}
			usleep(10000);
		}
		if (!exited)
			e2e_kill_daemon(&status);
		e2e.daemon = 0;
		/* A clean unmount exits 0; a sanitizer report or a hang does not. */
		if (!exited || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
			e2e.unclean = true;
			cr_expect_fail(
			    "semfs did not stop cleanly on SIGTERM (%s, status 0x%x):\n%s",
			    exited ? "exited" : "hung 10 s, killed", status, daemon_log());
		}
	}
	if (is_mounted()) {
		char command[400];
		snprintf(command, sizeof(command), "fusermount3 -u -z %s 2>/dev/null", e2e.mnt);
		if (system(command) != 0)
			umount2(e2e.mnt, MNT_DETACH);
	}
}

/* Remove the SysV set recorded in every backing file under `path`. */
static void remove_sets(const char *path)
{
	DIR *directory = opendir(path);
	struct dirent *entry;

	if (!directory)
		return;
	while ((entry = readdir(directory))) {
		char child[1024];
		if (entry->d_name[0] == '.' &&
		    (entry->d_name[1] == '\0' || strcmp(entry->d_name, "..") == 0))
			continue;
		snprintf(child, sizeof(child), "%s/%s", path, entry->d_name);
		struct stat status;
		if (lstat(child, &status) < 0)
			continue;
		if (S_ISDIR(status.st_mode)) {
			remove_sets(child);
			continue;
		}
		FILE *file = fopen(child, "re");
		unsigned key;
		if (file && fscanf(file, "key=%x", &key) == 1) {
			int semid = semget((key_t)key, 0, 0);
			if (semid >= 0)
				semctl(semid, 0, IPC_RMID);
		}
		if (file)
			fclose(file);
	}
	closedir(directory);
}

bool e2e_wait_gone(const char *name, int ms)
{
	struct stat status;
	for (double end = e2e_now() + ms / 1000.0; e2e_now() < end; usleep(20000))
		if (stat(e2e_path(name), &status) < 0 && errno == ENOENT)
			return true;
	return false;
}

/* Mounts a test made itself below its directory (a second daemon, run.sh,
 * -o nonempty) and did not get to unmount because an assertion stopped it:
 * their daemons exit when unmounted. */
static void unmount_leftovers(void)
{
	char line[1024], prefix[300];
	FILE *mounts = fopen("/proc/self/mounts", "re");

	snprintf(prefix, sizeof(prefix), "%s/", e2e.dir);
	while (mounts && fgets(line, sizeof(line), mounts)) {
		char point[PATH_MAX];
		if (sscanf(line, "%*s %4095s", point) == 1 &&
		    strncmp(point, prefix, strlen(prefix)) == 0)
			(void)umount2(point, MNT_DETACH);
	}
	if (mounts)
		fclose(mounts);
}

void e2e_teardown(void)
{
	char command[400], tree[320];

	e2e_kill_children();
	e2e_stop();
	if (e2e.dir[0])
		unmount_leftovers();
	snprintf(tree, sizeof(tree), "%s/tree", e2e.state);
	remove_sets(tree);
	if (e2e.dir[0]) {
		snprintf(command, sizeof(command), "rm -rf %s", e2e.dir);
		if (system(command) != 0)
			fprintf(stderr, "could not remove %s\n", e2e.dir);
	}
	if (e2e.unclean) {
		fprintf(stderr, "semfs did not stop cleanly: failing the suite\n");
		abort();
	}
}

const char *e2e_path(const char *name)
{
	static char paths[8][600];
	static int next;
	char *path = paths[next++ % 8];
	snprintf(path, sizeof(paths[0]), "%s/%s", e2e.mnt, name);
	return path;
}

int e2e_write(const char *name, const char *text)
{
	int fd = open(e2e_path(name), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		return errno;
	ssize_t n = write(fd, text, strlen(text));
	int error = n < 0 ? errno : (size_t)n == strlen(text) ? 0 : EIO;
	close(fd);
	return error;
}

pid_t e2e_fork(void)
{
	cr_assert_lt(e2e.child_count, E2E_CHILDREN_MAX);
	pid_t pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0)
		prctl(PR_SET_PDEATHSIG, SIGKILL);
	else
		e2e.children[e2e.child_count++] = pid;
	return pid;
}

pid_t e2e_spawn_write(const char *name, const char *text)
{
	pid_t pid = e2e_fork();
	if (pid == 0)
		_exit(e2e_write(name, text));
	return pid;
}

static void forget_child(pid_t pid)
{
	for (int i = 0; i < e2e.child_count; i++)
		if (e2e.children[i] == pid)
			e2e.children[i] = 0;
}

int e2e_wait_exit(pid_t pid, int milliseconds)
{
	int status;
	for (int waited = 0;; waited += 5) {
		pid_t r = waitpid(pid, &status, WNOHANG);
		if (r == pid) {
			forget_child(pid);
			return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
		}
		if (r < 0 || waited >= milliseconds)
			return -1;
		usleep(5000);
	}
}

long e2e_xattr(const char *name, const char *attribute)
{
	char value[64], full[64];
	snprintf(full, sizeof(full), "user.semfs.%s", attribute);
	ssize_t n = getxattr(e2e_path(name), full, value, sizeof(value) - 1);
	if (n < 0)
		return -1;
	value[n] = '\0';
	return strtol(value, NULL, 0);
}

bool e2e_wait_xattr(const char *name, const char *attribute, long value, int milliseconds)
{
	for (int waited = 0; waited <= milliseconds; waited += 10) {
		if (e2e_xattr(name, attribute) == value)
			return true;
		usleep(10000);
	}
	return false;
}

char *e2e_read(const char *name)
{
	int fd = open(e2e_path(name), O_RDONLY | O_CLOEXEC);
	size_t length = 0, allocated = 4096;
	char *text = malloc(allocated);
	cr_assert_geq(fd, 0, "open %s: %s", name, strerror(errno));
	for (;;) {
		if (allocated - length < 2048)
			text = realloc(text, allocated *= 2);
		ssize_t n = read(fd, text + length, allocated - length - 1);
		cr_assert_geq(n, 0);
		if (n == 0)
			break;
		length += (size_t)n;
	}
	close(fd);
	text[length] = '\0';
	return text;
}

void e2e_expect_text(const char *name, const char *needle)
{
	char *text = e2e_read(name);
	cr_assert(strstr(text, needle), "%s lacks '%s':\n%s", name, needle, text);
	free(text);
}

int e2e_thread_count(pid_t pid)
{
	char path[64], line[256];
	int threads = -1;
	snprintf(path, sizeof(path), "/proc/%d/status", pid);
	FILE *file = fopen(path, "re");
	while (file && fgets(line, sizeof(line), file))
		if (sscanf(line, "Threads: %d", &threads) == 1)
			break;
	if (file)
		fclose(file);
	return threads;
}
