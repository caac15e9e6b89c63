/* test_mount.c: end-to-end, through a real FUSE mount and the real daemon,
 * with ordinary file operations and processes. */
#include "e2e.h"

#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/sem.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

static void start_default(void)
{
	e2e_start(NULL);
}

TestSuite(mount, .init = start_default, .fini = e2e_teardown, .timeout = 120);
/* Tests that start the daemon with a config of their own. */
TestSuite(mount_configured, .fini = e2e_teardown, .timeout = 120);

static void create(const char *name)
{
	int fd = open(e2e_path(name), O_WRONLY | O_CREAT, 0644);
	cr_assert_geq(fd, 0, "create %s: %s", name, strerror(errno));
	close(fd);
}

Test(mount, create_list_and_delete)
{
	struct stat status;
	create("db");
	cr_assert_eq(mkdir(e2e_path("group"), 0755), 0);
	create("group/one");
	cr_assert_eq(stat(e2e_path("db"), &status), 0);
	cr_assert(S_ISREG(status.st_mode));
	cr_assert_gt(status.st_size, 0, "a new semaphore's journal has its create line");

	DIR *root = opendir(e2e.mnt);
	bool seen_db = false, seen_status = false, seen_group = false;
	for (struct dirent *entry; (entry = readdir(root));) {
		seen_db |= strcmp(entry->d_name, "db") == 0;
		seen_status |= strcmp(entry->d_name, "semaphore.status") == 0;
		seen_group |= strcmp(entry->d_name, "group") == 0;
	}
	closedir(root);
	cr_assert(seen_db && seen_status && seen_group);

	/* A real SysV set at the recorded key. */
	long key = e2e_xattr("db", "key");
	long semid = e2e_xattr("db", "semid");
	cr_assert_eq(semget((key_t)key, 0, 0), semid);

	cr_assert_eq(rmdir(e2e_path("group")), -1);
	cr_assert_eq(errno, ENOTEMPTY);
	cr_assert_eq(unlink(e2e_path("group/one")), 0);
	cr_assert_eq(rmdir(e2e_path("group")), 0);
	cr_assert_eq(unlink(e2e_path("db")), 0);
	cr_assert_eq(semget((key_t)key, 0, 0), -1, "rm must remove the SysV set");
	cr_assert_eq(unlink(e2e_path("semaphore.status")), -1);
	cr_assert_eq(mkdir(e2e_path("semaphore.status"), 0755), -1);
	cr_assert_eq(errno, EEXIST);
}

Test(mount, echo_creates_then_locks)
{
	cr_assert_eq(e2e_write("new", "lock\n"), 0);
	cr_assert_eq(e2e_xattr("new", "value"), 0);
	cr_assert_eq(e2e_xattr("new", "limit"), 1);
}

Test(mount, lock_unlock_and_their_errors)
{
	create("db");
	cr_assert_eq(e2e_write("db", "lock\n"), 0);
	cr_assert_eq(e2e_xattr("db", "value"), 0);
	cr_assert_eq(e2e_write("db", "lock 0\n"), EAGAIN);
	cr_assert_eq(e2e_write("db", "unlock\n"), 0);
	cr_assert_eq(e2e_xattr("db", "value"), 1);
	cr_assert_eq(e2e_write("db", "unlock\n"), EOVERFLOW, "bounded: no double unlock");
	cr_assert_eq(e2e_write("db", "release\n"), ENOLCK);
	cr_assert_eq(e2e_xattr("db", "value"), 1);
}

Test(mount, bad_commands_change_nothing)
{
	create("db");
	struct stat before, after;
	cr_assert_eq(stat(e2e_path("db"), &before), 0);
	const char *bad[] = {"bogus\n", "lock x\n",   "lock\nbogus\n",
			     "limit\n", "unlock 3\n", "lock -1\n"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		cr_assert_eq(e2e_write("db", bad[i]), EINVAL, "accepted %s", bad[i]);
	cr_assert_eq(stat(e2e_path("db"), &after), 0);
	cr_assert_eq(after.st_size, before.st_size, "a refused write changed the journal");
	cr_assert_eq(e2e_xattr("db", "value"), 1);
}

Test(mount, several_lines_in_order_fail_at_first_error)
{
	create("db");
	cr_assert_eq(e2e_write("db", "limit 3\nlock\nlock\nunlock\n"), 0);
	cr_assert_eq(e2e_xattr("db", "limit"), 3);
	cr_assert_eq(e2e_xattr("db", "value"), 2);
	cr_assert_eq(e2e_write("db", "lock\nlock\nlock 0\n"), EAGAIN);
	cr_assert_eq(e2e_xattr("db", "value"), 0, "earlier commands stay done");
}

Test(mount, limit_and_set)
{
	create("db");
	cr_assert_eq(e2e_write("db", "limit 5\n"), 0);
	cr_assert_eq(e2e_xattr("db", "value"), 5);
	cr_assert_eq(e2e_write("db", "set 2\n"), 0);
	cr_assert_eq(e2e_xattr("db", "value"), 2);
	cr_assert_eq(e2e_write("db", "set 6\n"), ERANGE);
	cr_assert_eq(e2e_write("db", "limit 2\n"), EBUSY, "3 in use cannot fit a limit of 2");
	cr_assert_eq(setxattr(e2e_path("db"), "user.semfs.limit", "4", 1, 0), 0);
	cr_assert_eq(e2e_xattr("db", "limit"), 4);
	cr_assert_eq(e2e_xattr("db", "value"), 1);
	cr_assert_eq(setxattr(e2e_path("db"), "user.semfs.limit", "x", 1, 0), -1);
	cr_assert_eq(errno, EINVAL);
	cr_assert_eq(setxattr(e2e_path("db"), "user.semfs.value", "1", 1, 0), -1);
	cr_assert_eq(errno, EPERM);
}

Test(mount, journal_lines_and_status)
{
	create("db");
	cr_assert_eq(e2e_write("db", "lock\n"), 0);
	char *journal = e2e_read("db");
	cr_assert(strstr(journal, " create by=semfs value=1 limit=1 waiting=0 seq=1\n"), "%s",
		  journal);
	cr_assert(strstr(journal, " lock by=pid:"), "%s", journal);
	cr_assert(strstr(journal, "value=0 limit=1 waiting=0 token=1 seq=2\n"), "%s", journal);
	free(journal);
	e2e_expect_text("semaphore.status", "db: 1 limit=1 value=0 waiting=0 holders=pid:");
	char holders[256];
	ssize_t n = getxattr(e2e_path("db"), "user.semfs.holders", holders, sizeof(holders) - 1);
	cr_assert_gt(n, 0);
	holders[n] = '\0';
	cr_assert_eq(strncmp(holders, "pid:", 4), 0, "%s", holders);
}

Test(mount, acquire_returns_on_close_and_on_sigkill)
{
	create("db");
	int fd = open(e2e_path("db"), O_WRONLY);
	cr_assert_geq(fd, 0);
	cr_assert_eq(write(fd, "acquire\n", 8), 8);
	cr_assert_eq(e2e_xattr("db", "value"), 0);
	cr_assert_eq(write(fd, "release\n", 8), 8);
	cr_assert_eq(write(fd, "release\n", 8), -1);
	cr_assert_eq(errno, ENOLCK);
	cr_assert_eq(write(fd, "acquire\n", 8), 8);
	close(fd);
	cr_assert(e2e_wait_xattr("db", "value", 1, 2000), "last close returns the unit");

	/* A holder killed with SIGKILL. */
	pid_t holder = e2e_fork();
	if (holder == 0) {
		int child_fd = open(e2e_path("db"), O_WRONLY);
		if (child_fd < 0 || write(child_fd, "acquire\n", 8) != 8)
			_exit(1);
		pause();
		_exit(0);
	}
	cr_assert(e2e_wait_xattr("db", "value", 0, 2000));
	kill(holder, SIGKILL);
	cr_assert_eq(e2e_wait_exit(holder, 2000), 128 + SIGKILL);
	cr_assert(e2e_wait_xattr("db", "value", 1, 2000), "death of the holder returns the unit");
}

Test(mount, blocked_lock_does_not_block_unlock)
{
	/* The kernel holds the inode lock through a write: a waiter must not
	 * keep `echo unlock > f` (O_TRUNC) or `>>` (O_APPEND) out. */
	create("db");
	cr_assert_eq(e2e_write("db", "lock\n"), 0);
	pid_t waiter = e2e_spawn_write("db", "lock\n");
	cr_assert(e2e_wait_xattr("db", "waiting", 1, 2000));
	pid_t unlocker = e2e_spawn_write("db", "unlock\n");
	cr_assert_eq(e2e_wait_exit(unlocker, 3000), 0, "unlock stuck behind a waiter");
	cr_assert_eq(e2e_wait_exit(waiter, 3000), 0);
	cr_assert_eq(e2e_xattr("db", "value"), 0);
	int fd = open(e2e_path("db"), O_WRONLY | O_APPEND);
	cr_assert_geq(fd, 0);
	waiter = e2e_spawn_write("db", "lock\n");
	cr_assert(e2e_wait_xattr("db", "waiting", 1, 2000));
	cr_assert_eq(write(fd, "unlock\n", 7), 7);
	close(fd);
	cr_assert_eq(e2e_wait_exit(waiter, 3000), 0);
}

Test(mount, fifo_order_of_three_waiters)
{
	create("db");
	cr_assert_eq(e2e_write("db", "lock\n"), 0);
	pid_t waiters[3];
	for (int i = 0; i < 3; i++) {
		waiters[i] = e2e_spawn_write("db", "lock\n");
		cr_assert(e2e_wait_xattr("db", "waiting", i + 1, 2000));
	}
	for (int i = 0; i < 3; i++) {
		cr_assert_eq(e2e_write("db", "unlock\n"), 0);
		cr_assert_eq(e2e_wait_exit(waiters[i], 2000), 0, "waiter %d not served first", i);
		for (int j = i + 1; j < 3; j++)
			cr_assert_eq(e2e_wait_exit(waiters[j], 0), -1, "waiter %d jumped the queue",
				     j);
	}
}

Test(mount, timeout_precision)
{
	create("db");
	cr_assert_eq(e2e_write("db", "lock\n"), 0);
	double start = e2e_now();
	cr_assert_eq(e2e_write("db", "lock 0.5\n"), ETIMEDOUT);
	double elapsed = e2e_now() - start;
	cr_assert_geq(elapsed, 0.5, "returned after %.3f s", elapsed);
	cr_assert_lt(elapsed, 1.0, "returned after %.3f s", elapsed);
	cr_assert_eq(e2e_xattr("db", "waiting"), 0);
	cr_assert_eq(e2e_xattr("db", "value"), 0);
}

static void on_signal(int signal_number)
{
	(void)signal_number;
}

Test(mount, signal_ends_the_wait_with_eintr_and_takes_nothing)
{
	create("db");
	cr_assert_eq(e2e_write("db", "lock\n"), 0);
	pid_t waiter = e2e_fork();
	if (waiter == 0) {
		struct sigaction action = {.sa_handler = on_signal}; /* no SA_RESTART */
		sigaction(SIGUSR1, &action, NULL);
		_exit(e2e_write("db", "lock\n"));
	}
	cr_assert(e2e_wait_xattr("db", "waiting", 1, 2000));
	double start = e2e_now();
	kill(waiter, SIGUSR1);
	cr_assert_eq(e2e_wait_exit(waiter, 2000), EINTR);
	cr_assert_lt(e2e_now() - start, 1.0, "EINTR must come at once");
	cr_assert_eq(e2e_xattr("db", "waiting"), 0);
	cr_assert_eq(e2e_write("db", "unlock\n"), 0);
	cr_assert(e2e_wait_xattr("db", "value", 1, 1000), "the interrupted waiter took a unit");
	e2e_expect_text("db", " interrupt by=pid:");
}

Test(mount, sigkill_of_50_waiters_leaves_the_value_intact)
{
	create("db");
	cr_assert_eq(e2e_write("db", "lock\n"), 0);
	pid_t waiters[50];
	for (int i = 0; i < 50; i++)
		waiters[i] = e2e_spawn_write("db", "lock\n");
	cr_assert(e2e_wait_xattr("db", "waiting", 50, 5000));
	for (int i = 0; i < 50; i++)
		kill(waiters[i], SIGKILL);
	for (int i = 0; i < 50; i++)
		cr_assert_eq(e2e_wait_exit(waiters[i], 3000), 128 + SIGKILL);
	cr_assert(e2e_wait_xattr("db", "waiting", 0, 2000));
	cr_assert_eq(e2e_write("db", "unlock\n"), 0);
	cr_assert(e2e_wait_xattr("db", "value", 1, 1000), "a killed waiter kept a unit");
}

static void relax_many(int count, bool check_threads)
{
	create("db");
	cr_assert_eq(e2e_write("db", "lock\n"), 0);
	pid_t *waiters = calloc((size_t)count, sizeof(pid_t));
	for (int i = 0; i < count; i++)
		waiters[i] = e2e_spawn_write("db", "lock\n");
	cr_assert(e2e_wait_xattr("db", "waiting", count, 60000), "only %ld of %d queued",
		  e2e_xattr("db", "waiting"), count);
	if (check_threads) {
		int threads = e2e_thread_count(e2e.daemon);
		cr_assert_gt(threads, 0);
		cr_assert_lt(threads, 64, "%d threads for %d waiters", threads, count);
	}
	cr_assert_eq(e2e_write("db", "relax\n"), 0);
	for (int i = 0; i < count; i++)
		cr_assert_eq(e2e_wait_exit(waiters[i], 20000), 0, "waiter %d not completed", i);
	cr_assert_eq(e2e_xattr("db", "waiting"), 0);
	cr_assert_eq(e2e_xattr("db", "value"), 0, "relax must not change the value");
	free(waiters);
}

Test(mount, relax_wakes_200_waiters)
{
	relax_many(200, false);
}

Test(mount, two_thousand_waiters_few_threads, .timeout = 300)
{
	relax_many(2000, true);
}

Test(mount, delete_fails_waiters_with_eidrm)
{
	create("db");
	cr_assert_eq(e2e_write("db", "lock\n"), 0);
	pid_t waiter = e2e_spawn_write("db", "lock\n");
	cr_assert(e2e_wait_xattr("db", "waiting", 1, 2000));
	cr_assert_eq(unlink(e2e_path("db")), 0);
	cr_assert_eq(e2e_wait_exit(waiter, 2000), EIDRM);
}

Test(mount, restart_keeps_values_and_limits)
{
	create("a");
	cr_assert_eq(mkdir(e2e_path("dir"), 0750), 0);
	create("dir/b");
	cr_assert_eq(e2e_write("a", "limit 3\nlock\n"), 0);
	cr_assert_eq(e2e_write("dir/b", "lock\n"), 0);
	long key = e2e_xattr("a", "key");
	long token = e2e_xattr("a", "token");
	e2e_restart();
	cr_assert_eq(e2e_xattr("a", "limit"), 3);
	cr_assert_eq(e2e_xattr("a", "value"), 2);
	cr_assert_eq(e2e_xattr("a", "key"), key);
	cr_assert_eq(e2e_xattr("dir/b", "value"), 0);
	cr_assert_eq(e2e_write("a", "lock\n"), 0);
	cr_assert_gt(e2e_xattr("a", "token"), token, "fencing tokens only grow");
}

Test(mount, acquire_units_return_when_the_daemon_is_killed)
{
	create("db");
	cr_assert_eq(e2e_write("db", "limit 2\nlock\n"), 0);
	int fd = open(e2e_path("db"), O_WRONLY);
	cr_assert_eq(write(fd, "acquire\n", 8), 8);
	cr_assert_eq(e2e_xattr("db", "value"), 0);
	kill(e2e.daemon, SIGKILL);
	waitpid(e2e.daemon, NULL, 0);
	e2e.daemon = 0;
	close(fd);
	e2e_restart();
	cr_assert_eq(e2e_xattr("db", "value"), 1, "SEM_UNDO returns acquire, lock stays taken");
}

Test(mount, outside_semop_is_reflected)
{
	create("db");
	int semid = semget((key_t)e2e_xattr("db", "key"), 0, 0);
	cr_assert_geq(semid, 0);
	struct sembuf take = {.sem_num = 0, .sem_op = -1, .sem_flg = IPC_NOWAIT};
	cr_assert_eq(semop(semid, &take, 1), 0);
	cr_assert(e2e_wait_xattr("db", "value", 0, 1000));
	double start = e2e_now();
	char *journal = NULL;
	do {
		free(journal);
		usleep(50000);
		journal = e2e_read("db");
	} while (!strstr(journal, " outside-change by=sysv:") && e2e_now() - start < 1.0);
	cr_assert(strstr(journal, " outside-change by=sysv:"), "%s", journal);
	free(journal);
	e2e_expect_text("semaphore.status", "db: 1 limit=1 value=0");
}

Test(mount, inotify_sees_a_timeout)
{
	create("db");
	cr_assert_eq(e2e_write("db", "lock\n"), 0);
	int watch = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	cr_assert_geq(inotify_add_watch(watch, e2e_path("db"), IN_MODIFY | IN_ATTRIB), 0);
	pid_t waiter = e2e_spawn_write("db", "lock 0.5\n");
	cr_assert(e2e_wait_xattr("db", "waiting", 1, 2000));
	usleep(200000);
	char buffer[4096];
	while (read(watch, buffer, sizeof(buffer)) > 0) /* events up to now */
		;
	cr_assert_eq(e2e_wait_exit(waiter, 2000), ETIMEDOUT);
	struct pollfd pfd = {.fd = watch, .events = POLLIN};
	cr_assert_eq(poll(&pfd, 1, 1000), 1, "no inotify event for the timeout");
	close(watch);
}

/* A directory watcher sees a semaphore made through the mount once, as
 * IN_CREATE from the kernel (semfs no longer touches a new semaphore: its
 * only inode is its creator's), and what is done to it afterwards. */
Test(mount, a_directory_watch_sees_a_create_then_a_lock)
{
	int watch = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	cr_assert_geq(inotify_add_watch(watch, e2e.mnt, IN_CREATE | IN_MODIFY), 0);
	create("fresh");
	usleep(100000); /* 10 of the notifier's rounds */
	char buffer[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
	int creates = 0, modifies = 0;
	ssize_t n;
	while ((n = read(watch, buffer, sizeof(buffer))) > 0)
		for (char *p = buffer; p < buffer + n;) {
			struct inotify_event *event = (struct inotify_event *)p;
			creates += (event->mask & IN_CREATE) && strcmp(event->name, "fresh") == 0;
			modifies += (event->mask & IN_MODIFY) != 0;
			p += sizeof(*event) + event->len;
		}
	cr_assert_eq(creates, 1);
	cr_assert_eq(modifies, 0);
	cr_assert_eq(e2e_write("fresh", "lock\n"), 0);
	struct pollfd pfd = {.fd = watch, .events = POLLIN};
	cr_assert_eq(poll(&pfd, 1, 2000), 1, "no inotify event for the lock");
	n = read(watch, buffer, sizeof(buffer));
	cr_assert_gt(n, 0);
	cr_assert(((struct inotify_event *)buffer)->mask & IN_MODIFY);
	close(watch);
}

Test(mount, tail_follows_a_timeout)
{
	create("db");
	cr_assert_eq(e2e_write("db", "lock\n"), 0);
	int pipe_fds[2];
	cr_assert_eq(pipe(pipe_fds), 0);
	pid_t tail = e2e_fork();
	if (tail == 0) {
		dup2(pipe_fds[1], 1);
		execlp("tail", "tail", "-n", "0", "-f", e2e_path("db"), (char *)NULL);
		_exit(127);
	}
	close(pipe_fds[1]);
	usleep(300000);
	cr_assert_eq(e2e_write("db", "lock 0.2\n"), ETIMEDOUT);
	char output[4096] = "";
	size_t length = 0;
	double start = e2e_now();
	fcntl(pipe_fds[0], F_SETFL, O_NONBLOCK);
	while (!strstr(output, " timeout by=") && e2e_now() - start < 4.0) {
		ssize_t n = read(pipe_fds[0], output + length, sizeof(output) - length - 1);
		if (n > 0)
			output[length += (size_t)n] = '\0';
		usleep(50000);
	}
	close(pipe_fds[0]);
	cr_assert(strstr(output, " timeout by="), "tail -f printed: %s", output);
}

Test(mount, poll_wakes_when_the_journal_grows)
{
	create("db");
	int fd = open(e2e_path("db"), O_RDONLY);
	char buffer[4096];
	while (read(fd, buffer, sizeof(buffer)) > 0)
		;
	struct pollfd pfd = {.fd = fd, .events = POLLIN};
	cr_assert_eq(poll(&pfd, 1, 0), 0, "nothing new yet");
	pid_t locker = e2e_spawn_write("db", "lock\n");
	cr_assert_eq(poll(&pfd, 1, 2000), 1);
	cr_assert(pfd.revents & POLLIN);
	cr_assert_eq(e2e_wait_exit(locker, 2000), 0);
	close(fd);
}

/* Past journal_max the oldest lines go; the size only grows, so tail -f
 * never sees a truncation, and a reader from the start is told what went. */
Test(mount_configured, the_journal_drops_its_oldest_lines_and_never_shrinks)
{
	e2e_start("journal_max = 1024");
	create("db");
	struct stat status;
	off_t size = 0;
	for (int i = 0; i < 40; i++) {
		cr_assert_eq(e2e_write("db", "lock\nunlock\n"), 0);
		cr_assert_eq(stat(e2e_path("db"), &status), 0);
		cr_assert_gt(status.st_size, size, "the size went back");
		size = status.st_size;
	}
	cr_assert_gt(size, 1024 * 4);
	char *journal = e2e_read("db");
	cr_assert(strncmp(journal, "... lines before seq=", 21) == 0, "%s", journal);
	cr_assert(strstr(journal, "were dropped (journal_max)\n"), "%s", journal);
	cr_assert_lt(strlen(journal), 1024 + 100);
	cr_assert(strstr(journal, " unlock by=pid:"), "%s", journal);
	cr_assert(strstr(journal, " seq=81\n"), "the newest line: %s", journal);
	free(journal);
}

Test(mount, permissions_are_enforced)
{
	create("db");
	pid_t child = e2e_fork();
	if (child == 0) {
		if (setgid(65534) < 0 || setuid(65534) < 0)
			_exit(100);
		_exit(e2e_write("db", "lock\n"));
	}
	cr_assert_eq(e2e_wait_exit(child, 2000), EACCES, "nobody wrote to a 0644 root file");
	cr_assert_eq(chmod(e2e_path("db"), 0666), 0);
	child = e2e_fork();
	if (child == 0) {
		if (setgid(65534) < 0 || setuid(65534) < 0)
			_exit(100);
		_exit(e2e_write("db", "lock\n"));
	}
	cr_assert_eq(e2e_wait_exit(child, 2000), 0);
	struct stat status;
	cr_assert_eq(stat(e2e_path("db"), &status), 0);
	cr_assert_eq(status.st_mode & 0777, 0666);
}

Test(mount, five_thousand_semaphores_all_distinct_and_usable, .timeout = 300)
{
	enum { COUNT = 5000 };
	cr_assert_eq(mkdir(e2e_path("many"), 0755), 0);
	long *keys = calloc(COUNT, sizeof(long));
	char name[64];
	for (int i = 0; i < COUNT; i++) {
		snprintf(name, sizeof(name), "many/s%d", i);
		create(name);
		keys[i] = e2e_xattr(name, "key");
		cr_assert_neq(keys[i], -1);
	}
	for (int i = 0; i < COUNT; i++) {
		snprintf(name, sizeof(name), "many/s%d", i);
		cr_assert_eq(e2e_write(name, "lock 0\n"), 0, "%s not usable", name);
		cr_assert_eq(e2e_xattr(name, "value"), 0);
	}
	/* All distinct: sort and compare neighbours. */
	for (int i = 1; i < COUNT; i++) {
		long key = keys[i];
		int j = i - 1;
		while (j >= 0 && keys[j] > key) {
			keys[j + 1] = keys[j];
			j--;
		}
		keys[j + 1] = key;
	}
	for (int i = 1; i < COUNT; i++)
		cr_assert_neq(keys[i], keys[i - 1], "two semaphores share key 0x%lx", keys[i]);
	free(keys);
}

Test(mount_configured, bad_config_is_a_startup_error)
{
	e2e_start(NULL); /* for the directory; the daemon under test is another */
	char config[400], command[1200];
	snprintf(config, sizeof(config), "%s/bad.ini", e2e.dir);
	FILE *file = fopen(config, "we");
	fprintf(file, "[semfs]\ndefault_limit = lots\ncolour = red\n");
	fclose(file);
	snprintf(command, sizeof(command), "%s --check -c %s 2>%s/err.txt", getenv("SEMFS_BIN"),
		 config, e2e.dir);
	int status = system(command);
	cr_assert_neq(status, 0);
	snprintf(config, sizeof(config), "%s/err.txt", e2e.dir);
	file = fopen(config, "re");
	char text[1024] = "";
	size_t n = fread(text, 1, sizeof(text) - 1, file);
	text[n] = '\0';
	fclose(file);
	cr_assert(strstr(text, "bad.ini:2: default_limit = lots"), "%s", text);
	cr_assert(strstr(text, "bad.ini:3: unknown key 'colour'"), "%s", text);
}

/* A write waiting on the very descriptor that created its file holds that
 * inode's lock; the notifier must not wait for it (issue 12). */
Test(mount, a_wait_on_the_creating_descriptor_stalls_no_notification)
{
	pid_t creator = e2e_fork();
	if (creator == 0) {
		int fd = open(e2e_path("db"), O_WRONLY | O_CREAT | O_TRUNC, 0644);
		if (fd < 0)
			_exit(1);
		(void)write(fd, "lock\nlock\n", 10); /* the second lock waits */
		_exit(0);
	}
	cr_assert(e2e_wait_xattr("db", "waiting", 1, 3000));
	create("other");
	cr_assert_eq(e2e_write("other", "lock\n"), 0);
	int watch = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	cr_assert_geq(inotify_add_watch(watch, e2e_path("other"), IN_MODIFY | IN_ATTRIB), 0);
	char buffer[4096];
	usleep(200000);
	while (read(watch, buffer, sizeof(buffer)) > 0) /* events up to now */
		;
	pid_t waiter = e2e_spawn_write("other", "lock 0.3\n");
	cr_assert_eq(e2e_wait_exit(waiter, 3000), ETIMEDOUT);
	struct pollfd pfd = {.fd = watch, .events = POLLIN};
	cr_assert_eq(poll(&pfd, 1, 2000), 1, "no inotify event: the notifier is stuck");
	close(watch);
	cr_assert_eq(e2e_write("db", "relax\n"), 0);
	cr_assert_eq(e2e_wait_exit(creator, 3000), 0);
}

/* As in ACE: a semaphore_NAME line removed from the configuration leaves NAME
 * an ordinary undefined semaphore after a restart (limit 1, gone when idle). */
Test(mount, a_removed_definition_leaves_an_undefined_semaphore)
{
	struct stat st;
	e2e_start("[service_network_semaphore]\nsemaphore_gone = 3\nsemaphore_held = 3\n"
		  "semaphore_kept = 2");
	cr_assert_eq(e2e_write("held", "lock 0"), 0);
	e2e_stop();
	FILE *config = fopen(e2e.config, "we");
	cr_assert_not_null(config);
	fprintf(config,
		"[service_network_semaphore]\nbind_port = %u\nsemaphore_kept = 2\n"
		"[semfs]\nstate_dir = %s\n",
		e2e.port, e2e.state);
	fclose(config);
	e2e_restart();
	cr_assert_eq(stat(e2e_path("gone"), &st), -1, "an idle undefined semaphore is removed");
	cr_assert_eq(errno, ENOENT);
	cr_assert_eq(e2e_xattr("held", "limit"), 1, "back to an undefined semaphore's limit");
	cr_assert_eq(e2e_xattr("held", "value"), 0, "its locked unit is still out");
	cr_assert_eq(e2e_xattr("kept", "limit"), 2);
	cr_assert_neq(e2e_write("kept", "delete"), 0, "kept is still defined");
	e2e_expect_text("held", "undefine by=config");
	e2e_expect_text("held", "was-limit=3");
	cr_assert_eq(e2e_write("held", "unlock"), 0);
	/* Idle once its unit came home: gone after the grace (0.5 s). */
	cr_assert(e2e_wait_gone("held", 2000), "still there, idle since its unit came home");
	e2e_expect_text("../semfs.log", "semaphore_gone is no longer in the configuration");
	e2e_teardown();
}

/* Mount points that sshfs and mount(8) refuse: each refusal says what to do
 * and reaches the terminal, without -f too. */
Test(mount_configured, unsafe_mount_points_are_refused_with_a_reason)
{
	e2e_start(NULL); /* its mount is "already a FUSE mount" below */
	char file[400], full[400], command[1600], log[400];
	snprintf(file, sizeof(file), "%s/a-file", e2e.dir);
	snprintf(full, sizeof(full), "%s/full", e2e.dir);
	snprintf(log, sizeof(log), "%s/refusal.txt", e2e.dir);
	FILE *f = fopen(file, "we");
	cr_assert_not_null(f);
	fclose(f);
	cr_assert_eq(mkdir(full, 0755), 0);
	char inside[450];
	snprintf(inside, sizeof(inside), "%s/keep-me", full);
	f = fopen(inside, "we");
	fclose(f);
	static const struct {
		const char *where, *says;
	} cases[] = {
	    {"a-file", "is not a directory"},
	    {"missing", "does not exist: mkdir -p"},
	    {"mnt", "is already a FUSE mount (fuse.semfs): unmount it first"},
	    {"full", "is not empty (it holds keep-me)"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		snprintf(command, sizeof(command),
			 "timeout 10 %s -c %s %s/%s 2>%s </dev/null >/dev/null",
			 getenv("SEMFS_BIN"), e2e.config, e2e.dir, cases[i].where, log);
		int status = system(command);
		cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 1, "%s: status %d",
			  cases[i].where, status);
		e2e_expect_text("../refusal.txt", cases[i].says);
	}
	/* With consent, over the files: they come back after the unmount. */
	char state[450], config[450];
	snprintf(state, sizeof(state), "%s/state2", e2e.dir);
	snprintf(config, sizeof(config), "%s/second.ini", e2e.dir);
	f = fopen(config, "we");
	fprintf(f, "[service_network_semaphore]\nenabled = no\n[semfs]\nstate_dir = %s\n", state);
	fclose(f);
	snprintf(command, sizeof(command), "timeout 10 %s -o nonempty -c %s %s 2>%s",
		 getenv("SEMFS_BIN"), config, full, log);
	cr_assert_eq(system(command), 0, "-o nonempty was refused");
	struct stat st;
	cr_assert_eq(stat(inside, &st), -1, "the mount hides the files");
	snprintf(command, sizeof(command), "fusermount3 -u %s", full);
	cr_assert_eq(system(command), 0);
	cr_assert_eq(stat(inside, &st), 0, "the files are back");
}

/* GNU tail -f, polling once a second, follows 1,000 changes a second on one
 * semaphore without losing a line (the journal keeps >= journal_max / 2). */
Test(mount, tail_f_keeps_up_with_a_thousand_changes_a_second)
{
	create("busy");
	char out[400];
	snprintf(out, sizeof(out), "%s/tail.txt", e2e.dir);
	pid_t tail = e2e_fork();
	if (tail == 0) {
		int fd = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0644);
		dup2(fd, 1);
		dup2(fd, 2);
		execlp("tail", "tail", "-n", "0", "-f", e2e_path("busy"), (char *)NULL);
		_exit(127);
	}
	usleep(500000);
	int fd = open(e2e_path("busy"), O_WRONLY);
	cr_assert_geq(fd, 0);
	double start = e2e_now();
	for (int i = 0; i < 3000; i++) { /* 6,000 changes, paced to 1,000 a second */
		cr_assert_eq(write(fd, "lock\nunlock\n", 12), 12);
		double due = start + (i + 1) * 0.002;
		double now = e2e_now();
		if (due > now)
			usleep((useconds_t)((due - now) * 1e6));
	}
	close(fd);
	usleep(2500000); /* two of tail's polls */
	kill(tail, SIGTERM);
	e2e_wait_exit(tail, 2000);
	char *text = e2e_read("../tail.txt");
	unsigned long expected = 0, count = 0;
	for (char *p = text; (p = strstr(p, " seq=")); p += 5) {
		unsigned long seq = strtoul(p + 5, NULL, 10);
		if (expected == 0)
			expected = seq;
		cr_assert_eq(seq, expected, "tail -f lost lines %lu..%lu", expected, seq - 1);
		expected++;
		count++;
	}
	cr_assert_null(strstr(text, "truncated"), "tail saw the file shrink");
	cr_assert_eq(count, 6000, "tail -f printed %lu of 6000 lines", count);
	free(text);
}

/* A semaphore's name is its identity: no rename, no links, plainly said. */
Test(mount, names_cannot_be_moved_or_linked)
{
	create("a");
	cr_assert_eq(rename(e2e_path("a"), e2e_path("b")), -1);
	cr_assert_eq(errno, EPERM);
	cr_assert_eq(link(e2e_path("a"), e2e_path("c")), -1);
	cr_assert_eq(errno, EPERM);
	cr_assert_eq(symlink("a", e2e_path("d")), -1);
	cr_assert_eq(errno, EPERM);
	cr_assert_eq(e2e_xattr("a", "limit"), 1, "a is untouched");
}

/* Attributes outside user.semfs.*: the user namespace has no others
 * (ENODATA), the rest is not supported (EOPNOTSUPP), and the real ls -l,
 * which caches "not supported" per device, asks one file, not each. */
Test(mount, ls_l_asks_one_file_for_its_label_and_acl)
{
	char value[64], command[1200], trace[400];
	create("a");
	cr_assert_eq(lgetxattr(e2e_path("a"), "security.selinux", value, sizeof(value)), -1);
	cr_assert_eq(errno, EOPNOTSUPP, "security.selinux: %s", strerror(errno));
	cr_assert_eq(getxattr(e2e_path("a"), "user.other", value, sizeof(value)), -1);
	cr_assert_eq(errno, ENODATA, "user.other: %s", strerror(errno));
	cr_assert_eq(removexattr(e2e_path("a"), "security.selinux"), -1);
	cr_assert_eq(errno, EOPNOTSUPP);
	cr_assert_eq(e2e_xattr("a", "value"), 1, "the semfs attributes still answer");

	cr_assert_eq(mkdir(e2e_path("many"), 0755), 0);
	for (int i = 0; i < 20; i++) {
		char name[32];
		snprintf(name, sizeof(name), "many/s%d", i);
		create(name);
	}
	snprintf(trace, sizeof(trace), "%s/ls.strace", e2e.dir);
	snprintf(command, sizeof(command),
		 "strace -f -qq -e trace=getxattr,lgetxattr -o %s ls -l %s >/dev/null", trace,
		 e2e_path("many"));
	cr_assert_eq(system(command), 0, "%s", command);
	FILE *file = fopen(trace, "re");
	cr_assert_not_null(file);
	int calls = 0, unsupported = 0;
	char line[512];
	while (fgets(line, sizeof(line), file)) {
		calls++;
		unsupported += strstr(line, "EOPNOTSUPP") != NULL;
	}
	fclose(file);
	/* Before: 40 (security.selinux and system.posix_acl_access per file). */
	cr_assert(calls >= 1 && calls <= 2, "ls -l of 20 files made %d getxattr calls", calls);
	cr_assert_eq(unsupported, calls, "every one answered EOPNOTSUPP");
}

/* Type=notify: systemd hears READY=1 only once the mount exists, and
 * STOPPING=1 on SIGTERM, after which the mount is gone. */
Test(mount_configured, systemd_hears_ready_once_the_mount_is_up)
{
	e2e_start(NULL); /* for the directory; the daemon under test is another */
	char socket_path[400], config[400], mnt[400];
	snprintf(socket_path, sizeof(socket_path), "%s/notify", e2e.dir);
	snprintf(config, sizeof(config), "%s/second.ini", e2e.dir);
	snprintf(mnt, sizeof(mnt), "%s/mnt2", e2e.dir);
	cr_assert_eq(mkdir(mnt, 0755), 0);
	FILE *file = fopen(config, "we");
	fprintf(file, "[service_network_semaphore]\nenabled = no\n[semfs]\nstate_dir = %s/state2\n",
		e2e.dir);
	fclose(file);
	int listener = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	struct sockaddr_un address = {.sun_family = AF_UNIX};
	cr_assert_lt(strlen(socket_path), sizeof(address.sun_path));
	memcpy(address.sun_path, socket_path, strlen(socket_path) + 1);
	cr_assert_eq(bind(listener, (struct sockaddr *)&address, sizeof(address)), 0);
	pid_t daemon = e2e_fork();
	if (daemon == 0) {
		setenv("NOTIFY_SOCKET", socket_path, 1);
		int null = open("/dev/null", O_WRONLY);
		dup2(null, 2);
		execl(getenv("SEMFS_BIN"), "semfs", "-f", "-c", config, mnt, (char *)NULL);
		_exit(127);
	}
	char message[512] = "";
	struct pollfd ready = {.fd = listener, .events = POLLIN};
	cr_assert_eq(poll(&ready, 1, 5000), 1, "no READY=1 within 5 s");
	ssize_t n = recv(listener, message, sizeof(message) - 1, 0);
	cr_assert_gt(n, 0);
	message[n] = '\0';
	cr_assert(strstr(message, "READY=1"), "%s", message);
	char mounts[8192] = "", needle[450];
	snprintf(needle, sizeof(needle), " %s fuse.semfs ", mnt);
	int fd = open("/proc/self/mounts", O_RDONLY);
	n = read(fd, mounts, sizeof(mounts) - 1);
	close(fd);
	mounts[n > 0 ? n : 0] = '\0';
	cr_assert(strstr(mounts, needle), "READY=1 came before the mount");
	kill(daemon, SIGTERM);
	cr_assert_eq(poll(&ready, 1, 5000), 1, "no STOPPING=1");
	n = recv(listener, message, sizeof(message) - 1, 0);
	message[n > 0 ? n : 0] = '\0';
	cr_assert(strstr(message, "STOPPING=1"), "%s", message);
	cr_assert_eq(e2e_wait_exit(daemon, 5000), 0, "a clean stop exits 0");
	fd = open("/proc/self/mounts", O_RDONLY);
	n = read(fd, mounts, sizeof(mounts) - 1);
	close(fd);
	mounts[n > 0 ? n : 0] = '\0';
	cr_assert_null(strstr(mounts, needle), "stopping did not unmount");
	close(listener);
}

/* In the background, as an administrator starts it: a failure after the
 * fork (here a state_dir that cannot exist) still reaches the terminal and
 * the exit status; success returns only once the mount is up. */
Test(mount_configured, background_start_reports_failure_and_success)
{
	e2e_start(NULL);
	char config[400], mnt[400], command[1600];
	snprintf(config, sizeof(config), "%s/bad.ini", e2e.dir);
	snprintf(mnt, sizeof(mnt), "%s/mnt2", e2e.dir);
	cr_assert_eq(mkdir(mnt, 0755), 0);
	FILE *file = fopen(config, "we");
	fprintf(file, "[service_network_semaphore]\nenabled = no\n[semfs]\n"
		      "state_dir = /proc/semfs-cannot-be\n");
	fclose(file);
	snprintf(command, sizeof(command), "timeout 10 %s -c %s %s 2>%s/bad.txt",
		 getenv("SEMFS_BIN"), config, mnt, e2e.dir);
	int status = system(command);
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 1, "status %d", status);
	e2e_expect_text("../bad.txt", "state directory /proc/semfs-cannot-be");

	file = fopen(config, "we");
	fprintf(file, "[service_network_semaphore]\nenabled = no\n[semfs]\nstate_dir = %s/state2\n",
		e2e.dir);
	fclose(file);
	snprintf(command, sizeof(command), "timeout 10 %s -c %s %s", getenv("SEMFS_BIN"), config,
		 mnt);
	cr_assert_eq(system(command), 0);
	struct stat st;
	char probe[450];
	snprintf(probe, sizeof(probe), "%s/semaphore.status", mnt);
	cr_assert_eq(stat(probe, &st), 0, "the parent returned before the mount was up");
	snprintf(command, sizeof(command), "fusermount3 -u %s", mnt);
	cr_assert_eq(system(command), 0);
}

/* -c several times: read in order, each file's errors name that file. */
Test(mount_configured, several_config_files_are_read_in_order)
{
	e2e_start(NULL);
	char first[400], second[400], command[2600];
	snprintf(first, sizeof(first), "%s/first.ini", e2e.dir);
	snprintf(second, sizeof(second), "%s/second.ini", e2e.dir);
	FILE *file = fopen(first, "we");
	fprintf(file, "[semfs]\ndefault_limit = 2\n");
	fclose(file);
	file = fopen(second, "we");
	fprintf(file, "[semfs]\n\ndefault_limit = many\n");
	fclose(file);
	snprintf(command, sizeof(command), "%s --check -c %s -c %s 2>%s/err.txt",
		 getenv("SEMFS_BIN"), first, second, e2e.dir);
	cr_assert_neq(system(command), 0);
	e2e_expect_text("../err.txt", "second.ini:3: default_limit = many");
	/* The later file overrides: a mount with both takes the second's. */
	file = fopen(second, "we");
	fprintf(file, "[semfs]\ndefault_limit = 3\n");
	fclose(file);
	e2e_stop();
	FILE *config = fopen(e2e.config, "ae");
	fprintf(config, "default_limit = 1\n");
	fclose(config);
	char mnt[400];
	snprintf(mnt, sizeof(mnt), "%s", e2e.mnt);
	snprintf(command, sizeof(command), "timeout 10 %s -c %s -c %s -c %s %s 2>>%s",
		 getenv("SEMFS_BIN"), e2e.config, first, second, mnt, e2e.log);
	cr_assert_eq(system(command), 0);
	cr_assert_eq(mknod(e2e_path("x"), S_IFREG | 0644, 0), 0);
	cr_assert_eq(e2e_xattr("x", "limit"), 3, "the last file's default_limit");
	snprintf(command, sizeof(command), "fusermount3 -u %s", mnt);
	cr_assert_eq(system(command), 0);
}

/* The thread id of the daemon's helper thread (0: none). */
static pid_t helper_tid(void)
{
	char path[300], comm[32];
	pid_t found = 0;
	snprintf(path, sizeof(path), "/proc/%d/task", e2e.daemon);
	DIR *tasks = opendir(path);
	cr_assert_not_null(tasks);
	for (struct dirent *task; (task = readdir(tasks)) && !found;) {
		snprintf(path, sizeof(path), "/proc/%d/task/%s/comm", e2e.daemon, task->d_name);
		FILE *file = fopen(path, "re");
		if (file && fgets(comm, sizeof(comm), file) &&
		    strncmp(comm, "semfs-helper", 12) == 0)
			found = atoi(task->d_name);
		if (file)
			fclose(file);
	}
	closedir(tasks);
	return found;
}

/* A helper whose queue emptied stays a moment, parked, for the next waiter
 * (a thread's start and exit cost more than a hand-off), takes no unit
 * meanwhile, and then goes. */
Test(mount, a_helper_stays_for_the_next_waiter_then_goes)
{
	create("linger");
	cr_assert_eq(e2e_write("linger", "lock\n"), 0);
	pid_t waiter = e2e_spawn_write("linger", "lock\n");
	cr_assert(e2e_wait_xattr("linger", "waiting", 1, 5000));
	/* The waiter is counted before its new helper has named itself. */
	pid_t helper = 0;
	for (double until = e2e_now() + 5; !(helper = helper_tid()) && e2e_now() < until;)
		usleep(10000);
	cr_assert_gt(helper, 0);
	cr_assert_eq(e2e_write("linger", "unlock\n"), 0);
	cr_assert_eq(e2e_wait_exit(waiter, 5000), 0);
	/* Parked, not in semtimedop: the unit given back stays home. */
	cr_assert_eq(e2e_write("linger", "unlock\n"), 0);
	cr_assert_eq(e2e_xattr("linger", "value"), 1);
	cr_assert_eq(e2e_write("linger", "lock\n"), 0);
	waiter = e2e_spawn_write("linger", "lock\n");
	cr_assert(e2e_wait_xattr("linger", "waiting", 1, 5000));
	cr_assert_eq(helper_tid(), helper, "a new helper thread for the second waiter");
	cr_assert_eq(e2e_write("linger", "unlock\n"), 0);
	cr_assert_eq(e2e_wait_exit(waiter, 5000), 0);
	double until = e2e_now() + 10;
	while (helper_tid() != 0 && e2e_now() < until)
		usleep(50000);
	cr_assert_eq(helper_tid(), 0, "the idle helper stayed");
}

/* What a shell's `echo lock > f` costs in FUSE requests: one LOOKUP (the
 * kernel's revalidation of the last walk's dentry is given that walk's idle
 * alias back), no FORGET, and the permission check of its open() uses the
 * attributes of the lookup just answered (no GETATTR); the sizes a stat sees
 * are still the journal's own. Counted in libfuse's trace of the daemon
 * (semfs -d), by the requests this process made. */
Test(mount_configured, an_echo_asks_one_lookup_and_no_getattr)
{
	enum { PAIRS = 20 };
	e2e_start_traced(NULL);
	create("db");
	long from = e2e_log_size();
	for (int i = 0; i < PAIRS; i++) {
		static const char *const lines[] = {"lock\n", "unlock\n"};
		for (int j = 0; j < 2; j++) {
			int fd = open(e2e_path("db"), O_WRONLY | O_TRUNC);
			cr_assert_geq(fd, 0, "open: %s", strerror(errno));
			cr_assert_eq(write(fd, lines[j], strlen(lines[j])),
				     (ssize_t)strlen(lines[j]));
			close(fd);
		}
	}
	int walks = 2 * PAIRS;
	int lookups = e2e_traced_requests(from, "LOOKUP", getpid());
	int getattrs = e2e_traced_requests(from, "GETATTR", getpid());
	int opens = e2e_traced_requests(from, "OPEN", getpid());
	cr_assert_eq(opens, walks, "the trace shows %d opens of %d", opens, walks);
	int forgets =
	    e2e_traced_requests(from, "FORGET", 0) + e2e_traced_requests(from, "BATCH_FORGET", 0);
	/* Before: two LOOKUPs and two FORGETs a walk (a fresh alias, which the
	 * revalidation found different), one GETATTR. A walk that meets a touch
	 * of the alias, or crosses a tick, still asks more. */
	cr_assert_geq(lookups, walks, "the trace shows %d lookups for %d walks", lookups, walks);
	cr_assert_leq(lookups, walks + walks / 4, "%d LOOKUP for %d walks", lookups, walks);
	cr_assert_leq(forgets, walks / 4, "%d FORGET for %d walks", forgets, walks);
	cr_assert_leq(getattrs, walks / 4, "%d GETATTR for %d walks", getattrs, walks);

	char *text = e2e_read("db");
	struct stat st;
	cr_assert_eq(stat(e2e_path("db"), &st), 0);
	cr_assert_eq((size_t)st.st_size, strlen(text), "stat says %lld bytes, a read %zu",
		     (long long)st.st_size, strlen(text));
	free(text);
}

/* A watch's path walk may be given the alias the last `echo` closed. The
 * notifier puts off touching an alias that young (the walk may be about to
 * open it and wait in a write), and touches it once it has settled: the
 * watch still sees the change made right after it was set up. */
Test(mount, a_watch_on_an_alias_just_given_back_sees_the_next_change)
{
	create("db");
	for (int i = 0; i < 3; i++) {
		cr_assert_eq(e2e_write("db", "lock\n"), 0);
		cr_assert_eq(e2e_write("db", "unlock\n"), 0);
	}
	usleep(100000); /* the notifier's touches of those are over */
	int watch = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	cr_assert_geq(watch, 0);
	cr_assert_geq(inotify_add_watch(watch, e2e_path("db"), IN_MODIFY | IN_ATTRIB), 0);
	pid_t writer = e2e_spawn_write("db", "lock\n");
	cr_assert_eq(e2e_wait_exit(writer, 3000), 0);
	struct pollfd pfd = {.fd = watch, .events = POLLIN};
	cr_assert_eq(poll(&pfd, 1, 2000), 1, "the watch saw no event of the lock");
	close(watch);
}

/* The attributes a lookup answered serve only its open's permission check:
 * an fstat() right after the open sees a change made meanwhile through
 * another descriptor (st_size is the journal's own, always). */
Test(mount, fstat_right_after_an_open_sees_a_change_made_meanwhile)
{
	create("db");
	int other = open(e2e_path("db"), O_WRONLY);
	cr_assert_geq(other, 0);
	for (int i = 0; i < 5; i++) {
		int fd = open(e2e_path("db"), O_RDONLY);
		cr_assert_geq(fd, 0);
		struct stat before, after;
		cr_assert_eq(fstat(fd, &before), 0);
		const char *line = i % 2 ? "unlock\n" : "lock\n";
		cr_assert_eq(write(other, line, strlen(line)), (ssize_t)strlen(line));
		cr_assert_eq(fstat(fd, &after), 0);
		cr_assert_gt(after.st_size, before.st_size, "round %d: st_size still %lld", i,
			     (long long)after.st_size);
		close(fd);
	}
	close(other);
}
