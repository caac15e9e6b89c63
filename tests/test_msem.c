/* test_msem.c: end-to-end tests of the msem client, against a real mount
 * and against the real TCP server of the same daemon. */
#include "e2e.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static void start_default(void)
{
	e2e_start(NULL);
}

TestSuite(msem, .init = start_default, .fini = e2e_teardown, .timeout = 120);

/* Where the semaphore is: "local" paths in the mount, "remote" names. */
enum where { LOCAL, REMOTE };

/* argv for msem: -H 127.0.0.1:PORT first when remote; NULL-terminated. */
static pid_t spawn_msem(enum where where, int out_fd, const char *first, va_list ap)
{
	const char *argv[32];
	char host[64];
	int n = 0;

	argv[n++] = "msem";
	if (where == REMOTE) {
		snprintf(host, sizeof(host), "127.0.0.1:%u", e2e.port);
		argv[n++] = "-H";
		argv[n++] = host;
	}
	for (const char *arg = first; arg && n < 31; arg = va_arg(ap, const char *))
		argv[n++] = arg;
	argv[n] = NULL;
	const char *binary = getenv("MSEM_BIN");
	cr_assert_not_null(binary, "MSEM_BIN is not set (run through meson test)");
	pid_t pid = e2e_fork();
	if (pid == 0) {
		unsetenv("SEMFS_HOST");
		if (out_fd >= 0)
			dup2(out_fd, 1);
		int null = open("/dev/null", O_WRONLY);
		dup2(null, 2); /* messages are checked by the exit status here */
		execv(binary, (char *const *)argv);
		_exit(127);
	}
	return pid;
}

/* Run msem to the end; its exit status. */
static int msem(enum where where, const char *first, ...)
{
	va_list ap;
	va_start(ap, first);
	pid_t pid = spawn_msem(where, -1, first, ap);
	va_end(ap);
	int status = e2e_wait_exit(pid, 20000);
	cr_assert_neq(status, -1, "msem %s did not finish", first);
	return status;
}

/* Start msem and leave it running (stdout to `out_fd` if >= 0). */
static pid_t msem_background(enum where where, int out_fd, const char *first, ...)
{
	va_list ap;
	va_start(ap, first);
	pid_t pid = spawn_msem(where, out_fd, first, ap);
	va_end(ap);
	return pid;
}

/* PATH as msem takes it: the mount path locally, the bare name remotely. */
static const char *at(enum where where, const char *name)
{
	return where == LOCAL ? e2e_path(name) : name;
}

static void verbs_and_exit_codes(enum where w)
{
	cr_assert_eq(msem(w, "-c", at(w, "m"), "a", "1", NULL), 0, "create a mutex");
	cr_assert_eq(e2e_xattr("m/a", "limit"), 1);
	cr_assert_eq(e2e_xattr("m/a", "value"), 1);
	cr_assert_eq(msem(w, "-c", at(w, "m"), "a", "1", NULL), 5, "it exists already");
	cr_assert_eq(msem(w, "-l", at(w, "m"), "a", NULL), 0);
	cr_assert_eq(e2e_xattr("m/a", "value"), 0);
	cr_assert_eq(msem(w, "-p", at(w, "m"), "a", "0", NULL), 1, "would block, timeout 0");
	cr_assert_eq(msem(w, "--lock", at(w, "m"), "a", "0.2", NULL), 1, "times out");
	cr_assert_eq(msem(w, "-u", at(w, "m"), "a", NULL), 0);
	cr_assert_eq(e2e_xattr("m/a", "value"), 1);
	cr_assert_neq(msem(w, "-v", at(w, "m"), "a", NULL), 0, "a double unlock fails");
	cr_assert_eq(e2e_xattr("m/a", "value"), 1, "and changes nothing");
	cr_assert_eq(msem(w, "-d", at(w, "m"), "a", NULL), 0);
	cr_assert_eq(msem(w, "-l", at(w, "m"), "a", "0", NULL), 3, "no such semaphore");
	cr_assert_eq(msem(w, "-u+", at(w, "nothing"), NULL), 3);

	cr_assert_eq(msem(w, "--create", at(w, "pool"), "a", "5", NULL), 0, "a pool");
	cr_assert_eq(e2e_xattr("pool/a", "limit"), 5);
	cr_assert_eq(e2e_xattr("pool/a", "value"), 5);
	cr_assert_eq(msem(w, "-c", at(w, "plain"), NULL), 0, "no uid: the path itself");
	cr_assert_eq(e2e_xattr("plain", "limit"), 1);

	/* PATH itself a semaphore: the number after it is its timeout, not a
	 * uid (msem -H host -l nightly 0 tries nightly once). */
	cr_assert_eq(msem(w, "-c", at(w, "nightly"), "2", NULL), 0, "no directory: initial 2");
	cr_assert_eq(e2e_xattr("nightly", "limit"), 2);
	cr_assert_eq(msem(w, "-l", at(w, "nightly"), NULL), 0);
	cr_assert_eq(msem(w, "-l", at(w, "nightly"), "0", NULL), 0, "one unit was left");
	cr_assert_eq(msem(w, "-l", at(w, "nightly"), "0", NULL), 1, "tried once: busy");
	cr_assert_eq(msem(w, "-l", at(w, "nightly"), "0.2", NULL), 1, "timed out");
	struct stat st;
	cr_assert_eq(stat(e2e_path("nightly/0"), &st), -1, "no uid 0 below a semaphore");
	/* PATH a directory: the word after it is a uid, as before. */
	cr_assert_eq(msem(w, "-c", at(w, "pool"), "7", "1", NULL), 0);
	cr_assert_eq(msem(w, "-l", at(w, "pool"), "7", NULL), 0, "pool/7, a uid");
	cr_assert_eq(e2e_xattr("pool/7", "value"), 0);
}

Test(msem, verbs_and_exit_codes_in_the_mount)
{
	verbs_and_exit_codes(LOCAL);
}

Test(msem, verbs_and_exit_codes_over_tcp)
{
	verbs_and_exit_codes(REMOTE);
}

/* A long-poll feed: starts at 0, subscribers wait, relax lets all through,
 * unlock exactly one. */
static void feed(enum where w)
{
	cr_assert_eq(msem(w, "-c", at(w, "feed"), "x", "0", NULL), 0);
	cr_assert_eq(e2e_xattr("feed/x", "limit"), 1);
	cr_assert_eq(e2e_xattr("feed/x", "value"), 0);
	pid_t one = msem_background(w, -1, "-l", at(w, "feed"), "x", NULL);
	pid_t two = msem_background(w, -1, "-l", at(w, "feed"), "x", NULL);
	cr_assert(e2e_wait_xattr("feed/x", "waiting", 2, 5000));
	cr_assert_eq(msem(w, "-u+", at(w, "feed"), "x", NULL), 0);
	cr_assert_eq(e2e_wait_exit(one, 5000), 0, "relax lets the first through");
	cr_assert_eq(e2e_wait_exit(two, 5000), 0, "and the second");
	cr_assert_eq(e2e_xattr("feed/x", "value"), 0, "relax does not raise the value");

	pid_t three = msem_background(w, -1, "-p", at(w, "feed"), "x", NULL);
	pid_t four = msem_background(w, -1, "-p", at(w, "feed"), "x", NULL);
	cr_assert(e2e_wait_xattr("feed/x", "waiting", 2, 5000));
	cr_assert_eq(msem(w, "--unlock", at(w, "feed"), "x", NULL), 0);
	cr_assert(e2e_wait_xattr("feed/x", "waiting", 1, 5000), "unlock lets exactly one go");
	cr_assert_eq(msem(w, "--relax", at(w, "feed"), "x", NULL), 0);
	cr_assert_eq(e2e_wait_exit(three, 5000), 0);
	cr_assert_eq(e2e_wait_exit(four, 5000), 0);
}

Test(msem, a_feed_in_the_mount)
{
	feed(LOCAL);
}

Test(msem, a_feed_over_tcp)
{
	feed(REMOTE);
}

static void run_mode(enum where w)
{
	cr_assert_eq(msem(w, "-c", at(w, "job"), NULL), 0);
	/* The command sees the unit taken. */
	char check[512];
	snprintf(check, sizeof(check),
		 "test \"$(getfattr --only-values -n user.semfs.value %s)\" = 0", e2e_path("job"));
	cr_assert_eq(msem(w, "-x", at(w, "job"), "--", "sh", "-c", check, NULL), 0);
	cr_assert_eq(e2e_xattr("job", "value"), 1, "returned after success");
	cr_assert_eq(msem(w, "-x", at(w, "job"), "--", "sh", "-c", "exit 7", NULL), 7,
		     "the command's status");
	cr_assert_eq(e2e_xattr("job", "value"), 1, "returned after a failure");
	cr_assert_eq(msem(w, "-x", at(w, "job"), "--", "sh", "-c", "kill -9 $$", NULL), 128 + 9);
	cr_assert_eq(e2e_xattr("job", "value"), 1, "returned after a kill");
	/* Busy: the timeout applies, the command does not run, and the exit
	 * status cannot be the command's: 75, or -E CODE as with flock(1). */
	cr_assert_eq(msem(w, "-l", at(w, "job"), NULL), 0);
	cr_assert_eq(msem(w, "-x", at(w, "job"), "0.2", "--", "false", NULL), 75);
	cr_assert_eq(msem(w, "-E", "9", "-x", at(w, "job"), "0", "--", "true", NULL), 9);
	cr_assert_eq(msem(w, "-u", at(w, "job"), NULL), 0);
	/* A missing semaphore is made, as flock(1) makes its file. */
	cr_assert_eq(msem(w, "-x", at(w, "fresh"), "--", "true", NULL), 0);
	cr_assert_eq(e2e_xattr("fresh", "value"), 1, "made, used and returned");
	/* msem itself killed while the command runs: the unit still returns. */
	char pid_file[400], script[512];
	snprintf(pid_file, sizeof(pid_file), "%s/sleeper.pid", e2e.dir);
	snprintf(script, sizeof(script), "echo $$ > %s; exec sleep 30", pid_file);
	pid_t holder = msem_background(w, -1, "-x", at(w, "job"), "--", "sh", "-c", script, NULL);
	cr_assert(e2e_wait_xattr("job", "value", 0, 5000));
	for (int i = 0; i < 500 && access(pid_file, R_OK) != 0; i++)
		usleep(10000); /* the command is running */
	usleep(50000);	       /* and its pid written whole */
	kill(holder, SIGKILL);
	cr_assert(e2e_wait_xattr("job", "value", 1, 5000), "the unit of a killed msem -x");
	FILE *file = fopen(pid_file, "r");
	int sleeper = 0;
	if (file) { /* the orphaned command is ours to end */
		if (fscanf(file, "%d", &sleeper) == 1 && sleeper > 0)
			kill(sleeper, SIGKILL);
		fclose(file);
	}
	cr_assert_gt(sleeper, 0, "the command ran");
}

Test(msem, run_mode_in_the_mount)
{
	run_mode(LOCAL);
}

Test(msem, run_mode_over_tcp)
{
	run_mode(REMOTE);
}

/* Read what `fd` gets within `ms` (the pipe is non-blocking). */
static const char *drain(int fd, int ms)
{
	static char text[8192];
	size_t length = 0;
	double end = e2e_now() + ms / 1000.0;

	while (e2e_now() < end && length < sizeof(text) - 1) {
		ssize_t n = read(fd, text + length, sizeof(text) - 1 - length);
		if (n > 0)
			length += (size_t)n;
		else
			usleep(20000);
	}
	text[length] = '\0';
	return text;
}

static void follow_and_status(enum where w)
{
	int pipe_fds[2];
	cr_assert_eq(msem(w, "-c", at(w, "db"), NULL), 0);
	cr_assert_eq(pipe2(pipe_fds, O_NONBLOCK), 0);
	pid_t follower = msem_background(w, pipe_fds[1], "-f", at(w, "db"), NULL);
	close(pipe_fds[1]);
	const char *first = drain(pipe_fds[0], 500);
	cr_assert(strstr(first, "db: "), "the current state first: %s", first);
	cr_assert_eq(msem(w, "-l", at(w, "db"), NULL), 0);
	cr_assert_eq(msem(w, "-u", at(w, "db"), NULL), 0);
	const char *lines = drain(pipe_fds[0], 1000);
	cr_assert(strstr(lines, " lock by="), "follow shows the lock: %s", lines);
	cr_assert(strstr(lines, " unlock by="), "and the unlock: %s", lines);
	kill(follower, SIGINT);
	cr_assert_eq(e2e_wait_exit(follower, 5000), 0, "Ctrl-C ends a follow cleanly");
	close(pipe_fds[0]);

	cr_assert_eq(pipe2(pipe_fds, O_NONBLOCK), 0);
	pid_t status = msem_background(w, pipe_fds[1], "-s", at(w, "db"), NULL);
	close(pipe_fds[1]);
	cr_assert_eq(e2e_wait_exit(status, 5000), 0);
	const char *text = drain(pipe_fds[0], 200);
	cr_assert(strncmp(text, "db: ", 4) == 0, "status of one: %s", text);
	close(pipe_fds[0]);
	cr_assert_eq(msem(w, "--status", at(w, "none"), NULL), 3);

	/* A directory: the lines of what is in it, the same either way. */
	cr_assert_eq(msem(w, "-c", at(w, "dir"), "x", "1", NULL), 0);
	cr_assert_eq(msem(w, "-c", at(w, "dir"), "y", "1", NULL), 0);
	cr_assert_eq(pipe2(pipe_fds, O_NONBLOCK), 0);
	status = msem_background(w, pipe_fds[1], "-s", at(w, "dir"), NULL);
	close(pipe_fds[1]);
	cr_assert_eq(e2e_wait_exit(status, 5000), 0);
	text = drain(pipe_fds[0], 200);
	cr_assert(strncmp(text, "dir/x: ", 7) == 0 && strstr(text, "\ndir/y: "), "%s", text);
	close(pipe_fds[0]);
}

Test(msem, follow_and_status_in_the_mount)
{
	follow_and_status(LOCAL);
}

Test(msem, follow_and_status_over_tcp)
{
	follow_and_status(REMOTE);
}

Test(msem, waiters_queue_in_fifo_order)
{
	cr_assert_eq(msem(LOCAL, "-c", e2e_path("q"), NULL), 0);
	cr_assert_eq(chmod(e2e_path("q"), 0666), 0); /* shared with network peers */
	cr_assert_eq(msem(LOCAL, "-l", e2e_path("q"), NULL), 0);
	pid_t first = msem_background(LOCAL, -1, "-l", e2e_path("q"), NULL);
	cr_assert(e2e_wait_xattr("q", "waiting", 1, 5000));
	pid_t second = msem_background(REMOTE, -1, "-l", "q", NULL);
	cr_assert(e2e_wait_xattr("q", "waiting", 2, 5000));
	cr_assert_eq(msem(LOCAL, "-u", e2e_path("q"), NULL), 0);
	cr_assert_eq(e2e_wait_exit(first, 5000), 0, "the first to queue goes first");
	cr_assert_eq(e2e_wait_exit(second, 300), -1, "the second still waits");
	cr_assert_eq(msem(REMOTE, "-u", "q", NULL), 0);
	cr_assert_eq(e2e_wait_exit(second, 5000), 0);
}

Test(msem, usage_errors_and_unreachable_targets)
{
	cr_assert_eq(msem(LOCAL, NULL), 2, "no action");
	cr_assert_eq(msem(LOCAL, "-l", NULL), 2, "no path");
	cr_assert_eq(msem(LOCAL, "-l", e2e_path("x"), "a", "soon", NULL), 2, "bad timeout");
	cr_assert_eq(msem(LOCAL, "-l", e2e_path("x"), "a/b", NULL), 2, "bad uid");
	cr_assert_eq(msem(LOCAL, "-c", e2e_path("x"), "a", "40000", NULL), 2, "bad initial");
	cr_assert_eq(msem(LOCAL, "-l", e2e_path("x"), "-u", e2e_path("x"), NULL), 2, "two");
	cr_assert_eq(msem(LOCAL, "-x", e2e_path("x"), "true", NULL), 2, "-x without --");
	cr_assert_eq(msem(LOCAL, "--bogus", NULL), 2);
	cr_assert_eq(msem(LOCAL, "--help", NULL), 0);
	cr_assert_eq(msem(LOCAL, "-l", "/tmp/not-a-semfs-mount", NULL), 4, "not a mount");
	char host[64];
	snprintf(host, sizeof(host), "127.0.0.1:%u", e2e_free_port());
	cr_assert_eq(msem(LOCAL, "-H", host, "-l", "x", NULL), 4, "nobody listens");
	cr_assert_eq(msem(LOCAL, "-H", "127.0.0.1:0", "-l", "x", NULL), 2, "bad port");
}

static void start_small_journal(void)
{
	e2e_start("journal_max = 1024");
}

TestSuite(msem_small_journal, .init = start_small_journal, .fini = e2e_teardown, .timeout = 120);

/* A follower slower than the journal: every line printed, or counted in a
 * "... N lines skipped" line, locally and remotely alike. */
static void follow_counts_every_line(enum where w)
{
	int pipe_fds[2];
	cr_assert_eq(msem(w, "-c", at(w, "busy"), NULL), 0);
	cr_assert_eq(pipe2(pipe_fds, O_NONBLOCK), 0);
	pid_t follower = msem_background(w, pipe_fds[1], "-f", at(w, "busy"), NULL);
	close(pipe_fds[1]);
	(void)drain(pipe_fds[0], 500); /* the status line */
	/* Stop the follower while the journal overflows under it. */
	kill(follower, SIGSTOP);
	int fd = open(e2e_path("busy"), O_WRONLY);
	cr_assert_geq(fd, 0);
	for (int i = 0; i < 200; i++)
		cr_assert_eq(write(fd, "lock\nunlock\n", 12), 12);
	close(fd);
	kill(follower, SIGCONT);
	static char all[65536];
	size_t length = 0;
	for (double end = e2e_now() + 2.0; e2e_now() < end;) {
		const char *more = drain(pipe_fds[0], 200);
		size_t n = strlen(more);
		if (length + n < sizeof(all)) {
			memcpy(all + length, more, n);
			length += n;
		}
	}
	all[length] = '\0';
	static char shown[65536];
	memcpy(shown, all, length + 1); /* `all` is cut into lines below */
	kill(follower, SIGINT);
	e2e_wait_exit(follower, 5000);
	close(pipe_fds[0]);
	unsigned long printed = 0, skipped = 0;
	for (char *line = all; *line;) {
		char *next = strchr(line, '\n');
		if (!next)
			break;
		*next = '\0';
		if (strstr(line, " seq="))
			printed++;
		else if (sscanf(line, "... %lu lines skipped", &skipped) == 1)
			printed += skipped;
		line = next + 1;
	}
	/* In the mount the stopped reader fell behind the journal; over TCP the
	 * socket buffers held the lines for it. */
	if (w == LOCAL)
		cr_assert(strstr(shown, "lines skipped"), "nothing was skipped?\n%s", shown);
	cr_assert_eq(printed, 400, "printed and skipped lines: %lu of 400\n%s", printed, shown);
}

Test(msem_small_journal, a_slow_follower_is_told_what_it_missed_in_the_mount)
{
	follow_counts_every_line(LOCAL);
}

Test(msem_small_journal, a_slow_follower_is_told_what_it_missed_over_tcp)
{
	follow_counts_every_line(REMOTE);
}
