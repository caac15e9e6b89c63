/* test_net.c: the network front-end end to end: the real daemon, its real
 * mount, real TCP on 127.0.0.1; ACE's dialect spoken by a Python client
 * written as ACE's own client is, the native dialect by raw sockets. */
#include "e2e.h"
#include "e2e_net.h"

#include "ace_section.h"

#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/sem.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* ---- suites -------------------------------------------------------------------- */

static void start_plain(void)
{
	e2e_start(NULL);
}

static void start_pool(void)
{
	e2e_start("[service_network_semaphore]\nsemaphore_pool = 3\nallowed_ipv4 = 127.0.0.1\n"
		  "stats_dir = stats\n");
}

TestSuite(ace, .init = start_pool, .fini = e2e_teardown, .timeout = 60);
TestSuite(native, .init = start_plain, .fini = e2e_teardown, .timeout = 60);
TestSuite(net_configured, .fini = e2e_teardown, .timeout = 60);

Test(ace, undefined_semaphore_is_acquired_released_and_vanishes)
{
	struct ace_client client = ace_spawn("job");
	ace_expect(&client, "locked", 3000);
	/* The mount shows the very same semaphore while it is held. */
	cr_assert_eq(e2e_xattr("job", "limit"), 1);
	cr_assert_eq(e2e_xattr("job", "value"), 0);
	e2e_expect_text("job", "acquire by=tcp:127.0.0.1:");
	ace_say(&client, "release");
	ace_expect(&client, "ok", 3000);
	ace_expect(&client, "closed", 3000); /* ok|, then the server closes */
	cr_assert(e2e_wait_gone("job", 2000), "the idle undefined semaphore is still there");
	ace_kill(&client);
}

/* One ACE reply (`locked|`, `ok|`): bytes up to the bar. */
static void ace_reply(int fd, const char *expected)
{
	char reply[64];
	size_t used = 0;
	struct pollfd p = {.fd = fd, .events = POLLIN};
	while (used < sizeof(reply) - 1 && (used == 0 || reply[used - 1] != '|')) {
		cr_assert_eq(poll(&p, 1, 3000), 1, "no reply, expected %s", expected);
		cr_assert_eq(read(fd, reply + used, 1), 1, "closed, expected %s", expected);
		used++;
	}
	reply[used] = '\0';
	cr_assert_str_eq(reply, expected);
}

/* ACE clients connect for each cycle: an undefined name used again at once
 * keeps its SysV set (the kernel's semid), and goes once idle. */
Test(ace, an_undefined_name_used_again_at_once_keeps_its_set_then_goes)
{
	long semid = -1;
	for (int cycle = 0; cycle < 5; cycle++) {
		int fd = net_connect();
		net_send(fd, "acquire:cycle|");
		ace_reply(fd, "locked|");
		long now = e2e_xattr("cycle", "semid");
		cr_assert_geq(now, 0);
		if (cycle > 0)
			cr_assert_eq(now, semid, "cycle %d: a new set (%ld, was %ld)", cycle, now,
				     semid);
		semid = now;
		net_send(fd, "release|");
		ace_reply(fd, "ok|");
		close(fd);
	}
	cr_assert(e2e_wait_gone("cycle", 2000), "the idle undefined semaphore is still there");
	struct semid_ds ds;
	union semun {
		int val;
		struct semid_ds *buf;
	} arg = {.buf = &ds};
	cr_assert_eq(semctl((int)semid, 0, IPC_STAT, arg), -1, "its set outlived it");
	cr_assert(errno == EINVAL || errno == EIDRM, "%s", strerror(errno));
}

Test(ace, defined_limit_three_makes_the_fourth_wait_with_heartbeats)
{
	struct ace_client holders[3], fourth;

	cr_assert_eq(e2e_xattr("pool", "limit"), 3);
	for (int i = 0; i < 3; i++) {
		holders[i] = ace_spawn("pool");
		ace_expect(&holders[i], "locked", 3000);
	}
	fourth = ace_spawn("pool");
	/* About once a second (the cadence is measured in test_ace.c; the
	 * margin here is for a loaded machine starting ACE's client). */
	ace_expect(&fourth, "wait", 5000);
	ace_expect(&fourth, "wait", 5000);
	cr_assert_eq(e2e_xattr("pool", "waiting"), 1);
	ace_say(&holders[1], "release");
	ace_expect(&holders[1], "ok", 3000);
	const char *line;
	while ((line = ace_hear(&fourth, 3000)) && strcmp(line, "wait") == 0)
		;
	cr_assert_not_null(line);
	cr_assert_str_eq(line, "locked");
	cr_assert_eq(e2e_xattr("pool", "value"), 0);
	/* Defined semaphores stay when idle. */
	ace_say(&fourth, "release");
	ace_expect(&fourth, "ok", 3000);
	for (int i = 0; i < 3; i += 2) {
		ace_say(&holders[i], "release");
		ace_expect(&holders[i], "ok", 3000);
	}
	cr_assert(e2e_wait_xattr("pool", "value", 3, 2000));
	cr_assert(!e2e_wait_gone("pool", 300), "a defined semaphore vanished");
	for (int i = 0; i < 3; i++)
		ace_kill(&holders[i]);
	ace_kill(&fourth);
}

Test(ace, a_holder_that_disconnects_returns_its_unit)
{
	struct ace_client holder = ace_spawn("pool");
	ace_expect(&holder, "locked", 3000);
	cr_assert_eq(e2e_xattr("pool", "value"), 2);
	ace_say(&holder, "drop");
	cr_assert(e2e_wait_xattr("pool", "value", 3, 2000), "FIN: the unit did not come back");

	holder = ace_spawn("pool");
	ace_expect(&holder, "locked", 3000);
	ace_say(&holder, "reset");
	cr_assert(e2e_wait_xattr("pool", "value", 3, 2000), "RST: the unit did not come back");

	/* Killed outright. */
	holder = ace_spawn("pool");
	ace_expect(&holder, "locked", 3000);
	ace_kill(&holder);
	cr_assert(e2e_wait_xattr("pool", "value", 3, 2000), "kill: the unit did not come back");
}

Test(ace, a_waiter_that_disconnects_leaves_the_queue)
{
	struct ace_client holder = ace_spawn("solo");
	ace_expect(&holder, "locked", 3000);
	struct ace_client waiter = ace_spawn("solo");
	cr_assert(e2e_wait_xattr("solo", "waiting", 1, 2000));
	ace_kill(&waiter); /* FIN while queued */

	int fd = net_connect(); /* RST while queued */
	net_send(fd, "acquire:solo|");
	cr_assert(e2e_wait_xattr("solo", "waiting", 1, 2000));
	reset_connection(fd);
	cr_assert(e2e_wait_xattr("solo", "waiting", 0, 2000));

	ace_say(&holder, "release");
	ace_expect(&holder, "ok", 3000);
	/* Nobody took the unit on the way out, and the name is gone. */
	cr_assert(e2e_wait_gone("solo", 2000));
	ace_kill(&holder);
}

Test(ace, waiters_are_served_in_arrival_order)
{
	struct ace_client holder = ace_spawn("fifo"), waiters[3];
	ace_expect(&holder, "locked", 3000);
	for (int i = 0; i < 3; i++) {
		waiters[i] = ace_spawn("fifo");
		cr_assert(e2e_wait_xattr("fifo", "waiting", i + 1, 2000));
	}
	ace_say(&holder, "release");
	ace_expect(&holder, "ok", 3000);
	for (int i = 0; i < 3; i++) {
		const char *line;
		while ((line = ace_hear(&waiters[i], 3000)) && strcmp(line, "wait") == 0)
			;
		cr_assert_not_null(line, "waiter %d was not served", i);
		cr_assert_str_eq(line, "locked");
		if (i + 1 < 3)
			cr_assert_eq(e2e_xattr("fifo", "waiting"), 2 - i);
		ace_say(&waiters[i], "release");
		ace_expect(&waiters[i], "ok", 3000);
	}
	ace_kill(&holder);
	for (int i = 0; i < 3; i++)
		ace_kill(&waiters[i]);
}

Test(ace, split_and_coalesced_tokens)
{
	int fd = net_connect();
	const char *pieces[] = {"acq", "uire:sp", "lit|", "\n"};
	for (size_t i = 0; i < 4; i++) {
		net_send(fd, pieces[i]);
		usleep(30000);
	}
	char reply[64] = "";
	cr_assert_eq(recv(fd, reply, sizeof(reply) - 1, 0), 7);
	cr_assert_str_eq(reply, "locked|");
	net_send(fd, "wait|wait|release|");
	memset(reply, 0, sizeof(reply));
	cr_assert_eq(recv(fd, reply, sizeof(reply) - 1, 0), 3);
	cr_assert_str_eq(reply, "ok|");
	cr_assert(closed_by_server(fd, 2000));
	close(fd);
	cr_assert(e2e_wait_gone("split", 2000));
}

Test(ace, release_while_queued_is_answered_locked_ok)
{
	struct ace_client holder = ace_spawn("early");
	ace_expect(&holder, "locked", 3000);
	int fd = net_connect();
	net_send(fd, "acquire:early|");
	cr_assert(e2e_wait_xattr("early", "waiting", 1, 2000));
	net_send(fd, "release|");
	ace_say(&holder, "release");
	ace_expect(&holder, "ok", 3000);
	char reply[64] = "";
	size_t length = 0;
	while (length < 10) {
		ssize_t n = recv(fd, reply + length, sizeof(reply) - 1 - length, 0);
		cr_assert_gt(n, 0, "closed early after '%s'", reply);
		length += (size_t)n;
		reply[length] = '\0';
		if (strstr(reply, "locked|ok|"))
			break;
	}
	cr_assert(strstr(reply, "locked|ok|"), "%s", reply);
	cr_assert(closed_by_server(fd, 2000));
	close(fd);
	cr_assert(e2e_wait_gone("early", 2000), "the unit did not come back at once");
	ace_kill(&holder);
}

Test(ace, invalid_input_closes_the_connection)
{
	static const char *const bad[] = {
	    "acquire:a|bogus|",
	    "acquire:|",
	    "acquire:x|acquire:y|",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		int fd = net_connect();
		net_send(fd, bad[i]);
		cr_assert(closed_by_server(fd, 2000), "'%s' did not close the connection", bad[i]);
		close(fd);
	}
	/* Nothing was left behind: the held unit of "a" went back. */
	cr_assert(e2e_wait_gone("a", 2000));
	e2e_expect_text("../semfs.log", "invalid ACE input");
}

Test(ace, mount_lock_blocks_network_acquire_until_unlock)
{
	cr_assert_eq(e2e_write("shared", "lock\n"), 0);
	cr_assert_eq(chmod(e2e_path("shared"), 0666), 0); /* shared with network peers */
	struct ace_client client = ace_spawn("shared");
	ace_expect(&client, "wait", 5000); /* a heartbeat, after 1 s: generous under load */
	cr_assert_eq(e2e_write("shared", "unlock\n"), 0);
	const char *line;
	while ((line = ace_hear(&client, 3000)) && strcmp(line, "wait") == 0)
		;
	cr_assert_not_null(line);
	cr_assert_str_eq(line, "locked");
	ace_say(&client, "release");
	ace_expect(&client, "ok", 3000);
	ace_kill(&client);
	/* Made in the mount, so not undefined: it stays. */
	cr_assert_eq(e2e_xattr("shared", "value"), 1);
}

Test(ace, stats_dir_follows_changes)
{
	char status_path[400], prom_path[400];
	snprintf(status_path, sizeof(status_path), "%s/stats/semaphore.status", e2e.state);
	snprintf(prom_path, sizeof(prom_path), "%s/stats/semfs.prom", e2e.state);
	struct ace_client client = ace_spawn("pool");
	ace_expect(&client, "locked", 3000);
	bool seen = false;
	for (double end = e2e_now() + 2; !seen && e2e_now() < end; usleep(50000)) {
		FILE *file = fopen(status_path, "re");
		char line[512] = "";
		if (file) {
			seen = fgets(line, sizeof(line), file) &&
			       strncmp(line, "pool: 1 limit=3 value=2", 23) == 0;
			fclose(file);
		}
	}
	cr_assert(seen, "stats_dir/semaphore.status did not show the unit in use");
	FILE *prom = fopen(prom_path, "re");
	cr_assert_not_null(prom);
	char text[8192] = "";
	size_t n = fread(text, 1, sizeof(text) - 1, prom);
	text[n] = '\0';
	fclose(prom);
	cr_assert(strstr(text, "semfs_semaphore_in_use{name=\"pool\"} 1\n"), "%s", text);
	cr_assert(strstr(text, "# TYPE semfs_grants_total counter\n"), "%s", text);
	ace_say(&client, "release");
	ace_expect(&client, "ok", 3000);
	ace_kill(&client);
}

/* ---- native dialect ------------------------------------------------------------- */

Test(native, every_verb_and_its_errors)
{
	int fd = net_connect();
	ask(fd, "ping", "ok pong");
	ask(fd, "create db", "ok limit=1");
	ask(fd, "create db", "err EEXIST ");
	ask(fd, "create jobs/nightly 2", "ok limit=2");
	ask(fd, "create big 40000", "err EINVAL ");
	ask(fd, "lock nothere", "err ENOENT ");
	ask(fd, "lock db", "ok token=1");
	ask(fd, "lock db 0", "err EAGAIN ");
	ask(fd, "lock db 0.2", "err ETIMEDOUT ");
	ask(fd, "unlock db", "ok");
	ask(fd, "unlock db", "err EOVERFLOW ");
	ask(fd, "acquire db", "ok token=");
	ask(fd, "release db", "ok");
	ask(fd, "release db", "err ENOLCK ");
	ask(fd, "limit db 3", "ok");
	ask(fd, "set db 4", "err ERANGE ");
	ask(fd, "set db 1", "ok");
	ask(fd, "limit db 1", "err EBUSY ");
	ask(fd, "set db 3", "ok");
	ask(fd, "relax db", "ok");
	ask(fd, "status db", "ok db: 0 limit=3 value=3 waiting=0 holders=- token=");
	ask(fd, "status", "ok lines=2");
	expect_line(fd, "db: ");
	expect_line(fd, "jobs/nightly: 0 limit=2");
	ask(fd, "lock db x", "err EINVAL ");
	ask(fd, "lock", "err EINVAL usage: lock NAME [SECONDS]");
	ask(fd, "frobnicate db", "err EINVAL unknown verb");
	ask(fd, "lock a/../b", "err ENOENT ");
	ask(fd, "delete db", "ok");
	ask(fd, "delete db", "err ENOENT ");
	/* "jobs" is a directory: the name "jobs" would be the file %6Aobs. */
	ask(fd, "lock jobs", "err ENOENT ");
	ask(fd, "help", "ok lines=14");
	expect_line(fd, "lock NAME [SECONDS]");
	for (int i = 1; i < 14; i++)
		cr_assert_not_null(net_line(fd, 2000));
	/* The mount sees what the network did. */
	cr_assert_eq(e2e_xattr("jobs/nightly", "limit"), 2);
	struct stat status;
	cr_assert_eq(stat(e2e_path("db"), &status), -1);
	ask(fd, "quit", "ok bye");
	cr_assert(closed_by_server(fd, 2000));
	close(fd);
}

/* A silent peer is probed: the kernel's own view of the server's side of a
 * connection (ss) shows a keep-alive timer of about KEEPALIVE_IDLE (60 s). */
Test(native, accepted_connections_are_probed_by_tcp_keepalive)
{
	int fd = net_connect();
	ask(fd, "ping", "ok pong");
	char command[160];
	snprintf(command, sizeof(command), "ss -tno state established '( sport = :%u )' 2>&1",
		 e2e.port);
	FILE *ss = popen(command, "r");
	cr_assert_not_null(ss);
	char text[4096] = "";
	size_t used = fread(text, 1, sizeof(text) - 1, ss);
	text[used] = '\0';
	pclose(ss);
	cr_assert(strstr(text, "timer:(keepalive,"), "no keep-alive timer:\n%s", text);
	cr_assert(strstr(text, "timer:(keepalive,59") || strstr(text, "timer:(keepalive,1min"),
		  "keep-alive not at about 60 s:\n%s", text);
	close(fd);
}

Test(native, pipelined_requests_are_answered_in_order)
{
	int fd = net_connect(), other = net_connect();
	net_send(fd, "create p\nlock p\nunlock p\nping\n");
	expect_line(fd, "ok limit=1");
	expect_line(fd, "ok token=1");
	expect_line(fd, "ok");
	expect_line(fd, "ok pong");
	/* Behind a waiting request, later lines wait their turn; other
	 * connections are not stalled. */
	ask(other, "lock p", "ok token=");
	net_send(fd, "lock p\nstatus p\n");
	cr_assert_null(net_line(fd, 300));
	ask(other, "ping", "ok pong");
	ask(other, "unlock p", "ok");
	expect_line(fd, "ok token=");
	expect_line(fd, "ok p: 1 limit=1 value=0");
	close(fd);
	close(other);
}

Test(native, acquired_units_belong_to_the_connection)
{
	int fd = net_connect();
	ask(fd, "create pool 2", "ok");
	ask(fd, "acquire pool", "ok token=");
	ask(fd, "acquire pool", "ok token=");
	ask(fd, "lock pool 0", "err EAGAIN ");
	cr_assert_eq(e2e_xattr("pool", "value"), 0);
	close(fd);
	cr_assert(e2e_wait_xattr("pool", "value", 2, 2000));
	/* A queued acquire of a connection that resets takes nothing. */
	int holder = net_connect(), waiter = net_connect();
	ask(holder, "acquire pool", "ok");
	ask(holder, "acquire pool", "ok");
	net_send(waiter, "acquire pool\n");
	cr_assert(e2e_wait_xattr("pool", "waiting", 1, 2000));
	reset_connection(waiter);
	cr_assert(e2e_wait_xattr("pool", "waiting", 0, 2000));
	close(holder);
	cr_assert(e2e_wait_xattr("pool", "value", 2, 2000));
}

Test(native, watch_streams_journal_lines)
{
	int watcher = net_connect(), fd = net_connect();
	ask(fd, "create w", "ok");
	ask(watcher, "watch w", "ok watching=w");
	ask(fd, "lock w", "ok");
	expect_line(watcher, "20"); /* a journal line begins with its time */
	ask(fd, "unlock w", "ok");
	const char *line = net_line(watcher, 2000);
	cr_assert_not_null(line);
	cr_assert(strstr(line, " unlock by=tcp:127.0.0.1:"), "%s", line);
	/* Changes through the mount stream too. */
	cr_assert_eq(e2e_write("w", "lock\n"), 0);
	line = net_line(watcher, 2000);
	cr_assert_not_null(line);
	cr_assert(strstr(line, " lock by=pid:"), "%s", line);
	/* Deleting it ends the stream. */
	ask(fd, "delete w", "ok");
	line = net_line(watcher, 2000);
	cr_assert_not_null(line);
	cr_assert(strstr(line, " delete by=tcp:"), "%s", line);
	cr_assert(closed_by_server(watcher, 2000));
	close(watcher);
	close(fd);
}

Test(native, a_bad_request_leaves_the_connection_open)
{
	int fd = net_connect();
	net_send(fd, "bogus\n\nlock\tx y z\n\x01\nping\n");
	expect_line(fd, "err EINVAL unknown verb");
	expect_line(fd, "err EINVAL ");
	expect_line(fd, "err EINVAL ");
	expect_line(fd, "ok pong");
	close(fd);
}

Test(native, names_are_validated)
{
	static const char *const bad[] = {
	    "create a|b",
	    "create a%7Cb",
	    "create a%2",
	};
	int fd = net_connect();
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		ask(fd, bad[i], "err EINVAL");
	char request[400] = "create ";
	memset(request + 7, 'n', 256);
	ask(fd, request, "err ENAMETOOLONG ");
	/* What cannot be a path is one escaped file at the root. */
	ask(fd, "create a//b", "ok");
	ask(fd, "create semaphore.status", "ok");
	ask(fd, "create a%20b", "ok");
	cr_assert_eq(e2e_xattr("a%2F%2Fb", "limit"), 1);
	cr_assert_eq(e2e_xattr("%73emaphore.status", "limit"), 1);
	cr_assert_eq(e2e_xattr("a b", "limit"), 1);
	ask(fd, "status a%20b", "ok a b: ");
	ask(fd, "ping", "ok pong");
	close(fd);
	char *log = e2e_read("../semfs.log");
	cr_assert(strstr(log, "rejected 127.0.0.1:"), "%s", log);
	cr_assert(strstr(log, "bad request: '|' in name"), "%s", log);
	free(log);
}

Test(native, an_over_long_line_is_cut_off_and_others_carry_on)
{
	int fd = net_connect(), other = net_connect();
	char *big = malloc(5000);
	memset(big, 'x', 4999);
	big[4999] = '\0';
	net_send(fd, big);
	free(big);
	expect_line(fd, "err E2BIG ");
	cr_assert(closed_by_server(fd, 2000));
	close(fd);
	ask(other, "ping", "ok pong");
	close(other);
}

Test(native, network_changes_raise_inotify_and_show_in_the_mount)
{
	int fd = net_connect();
	ask(fd, "create seen", "ok");
	int watch = inotify_init1(IN_CLOEXEC | IN_NONBLOCK);
	cr_assert_geq(inotify_add_watch(watch, e2e_path("seen"), IN_MODIFY | IN_ATTRIB), 0);
	ask(fd, "lock seen", "ok");
	struct pollfd p = {.fd = watch, .events = POLLIN};
	cr_assert_eq(poll(&p, 1, 2000), 1, "no inotify event for a network lock");
	close(watch);
	cr_assert_eq(e2e_xattr("seen", "value"), 0);
	char *journal = e2e_read("seen");
	char expect[64];
	snprintf(expect, sizeof(expect), "lock by=tcp:127.0.0.1:");
	cr_assert(strstr(journal, expect), "%s", journal);
	free(journal);
	char *status = e2e_read("semaphore.status");
	cr_assert(strstr(status, "seen: 1 limit=1 value=0 waiting=0 holders=tcp:127.0.0.1:"), "%s",
		  status);
	free(status);
	close(fd);
}

/* The kernel's count of the times the daemon's notifier thread slept. */
static long notifier_sleeps(void)
{
	char path[320], line[256];
	long sleeps = -1;
	snprintf(path, sizeof(path), "/proc/%d/task", e2e.daemon);
	DIR *tasks = opendir(path);
	cr_assert_not_null(tasks);
	for (struct dirent *task; (task = readdir(tasks)) && sleeps < 0;) {
		snprintf(path, sizeof(path), "/proc/%d/task/%s/comm", e2e.daemon, task->d_name);
		FILE *file = fopen(path, "re");
		bool notifier = file && fgets(line, sizeof(line), file) &&
				strncmp(line, "semfs-notify", 12) == 0;
		if (file)
			fclose(file);
		snprintf(path, sizeof(path), "/proc/%d/task/%s/status", e2e.daemon, task->d_name);
		file = notifier ? fopen(path, "re") : NULL;
		while (file && fgets(line, sizeof(line), file))
			if (sscanf(line, "voluntary_ctxt_switches: %ld", &sleeps) == 1)
				break;
		if (file)
			fclose(file);
	}
	closedir(tasks);
	return sleeps;
}

/* A semaphore used only over TCP has no inode in the kernel, so no watch to
 * tell: its changes leave the notifier asleep. Once looked up in the mount,
 * they wake it (network_changes_raise_inotify_and_show_in_the_mount). */
Test(native, changes_nobody_could_watch_leave_the_notifier_asleep)
{
	int fd = net_connect();
	ask(fd, "create quiet", "ok");
	usleep(100000);
	long before = notifier_sleeps();
	cr_assert_geq(before, 0, "no semfs-notify thread");
	for (int i = 0; i < 20; i++) {
		ask(fd, "lock quiet", "ok");
		ask(fd, "unlock quiet", "ok");
		usleep(20000); /* past the notifier's pause: each change alone */
	}
	long asleep = notifier_sleeps() - before;
	cr_assert_leq(asleep, 4, "the notifier woke %ld times for 40 changes", asleep);
	struct stat st;
	cr_assert_eq(stat(e2e_path("quiet"), &st), 0);
	before = notifier_sleeps();
	ask(fd, "lock quiet", "ok");
	ask(fd, "unlock quiet", "ok");
	usleep(100000);
	cr_assert_gt(notifier_sleeps(), before, "looked up, its changes reach no notifier");
	close(fd);
}

/* ---- configuration and security --------------------------------------------- */

Test(net_configured, ace_section_loads_unchanged)
{
	e2e_start(ACE_SECTION);
	e2e.port = ACE_SECTION_PORT;
	int fd = net_connect();
	ask(fd, "ping", "ok pong");
	close(fd);
	char path[400];
	snprintf(path, sizeof(path), "%s/var/network_semaphore/semaphore.status", e2e.state);
	cr_assert_eq(access(path, F_OK), 0, "%s missing", path);
	char *log = e2e_read("../semfs.log");
	cr_assert_null(strstr(log, "unknown key"), "%s", log);
	free(log);
}

Test(net_configured, enabled_no_turns_the_network_off)
{
	e2e_start("[service_network_semaphore]\nenabled = no\n");
	cr_assert_eq(connect_from(NULL, e2e.port), -ECONNREFUSED);
	cr_assert_eq(e2e_write("still", "lock\n"), 0); /* the mount works */
}

Test(net_configured, peers_outside_the_allow_list_are_closed_unheard)
{
	e2e_start("[service_network_semaphore]\nallowed_ipv4 = 127.0.0.1, 10.0.0.0/8\n");
	int outsider = connect_from("127.0.0.2", e2e.port);
	cr_assert_geq(outsider, 0);
	send(outsider, "create x\n", 9, MSG_NOSIGNAL);
	cr_assert(closed_by_server(outsider, 2000));
	close(outsider);
	struct stat status;
	cr_assert_eq(stat(e2e_path("x"), &status), -1, "the outsider's request ran");
	int insider = net_connect();
	ask(insider, "ping", "ok pong");
	close(insider);
	e2e_expect_text("../semfs.log", "rejected 127.0.0.2:");
}

Test(net_configured, connections_are_capped)
{
	e2e_start("max_connections = 3\n");
	int fds[3];
	for (int i = 0; i < 3; i++) {
		fds[i] = net_connect();
		ask(fds[i], "ping", "ok pong");
	}
	int extra = net_connect(); /* accepted by the kernel, closed by semfs */
	cr_assert(closed_by_server(extra, 2000));
	close(extra);
	close(fds[0]);
	usleep(200000);
	extra = net_connect();
	ask(extra, "ping", "ok pong");
	close(extra);
	for (int i = 1; i < 3; i++)
		close(fds[i]);
}

Test(net_configured, a_defined_semaphore_cannot_be_deleted)
{
	e2e_start("[service_network_semaphore]\nsemaphore_fixed = 2\n");
	cr_assert_eq(e2e_xattr("fixed", "limit"), 2);
	cr_assert_eq(unlink(e2e_path("fixed")), -1);
	cr_assert_eq(errno, EPERM);
	int fd = net_connect();
	ask(fd, "delete fixed", "err EPERM ");
	close(fd);
}

Test(net_configured, an_unfinished_request_times_out)
{
	e2e_start("request_timeout = 1\n");
	int fd = net_connect();
	net_send(fd, "pi"); /* and never the rest */
	expect_line(fd, "err ETIMEDOUT ");
	cr_assert(closed_by_server(fd, 3000));
	close(fd);
}

Test(ace, undefined_semaphores_held_at_a_crash_are_gone_after_restart)
{
	struct ace_client client = ace_spawn("crashed");
	ace_expect(&client, "locked", 3000);
	int fd = net_connect();
	ask(fd, "create kept", "ok");
	close(fd);
	kill(e2e.daemon, SIGKILL);
	waitpid(e2e.daemon, NULL, 0);
	e2e.daemon = 0;
	ace_kill(&client);
	e2e_restart();
	/* SEM_UNDO gave the unit back; idle and undefined, it goes at start-up. */
	cr_assert(e2e_wait_gone("crashed", 1000));
	cr_assert_eq(e2e_xattr("kept", "value"), 1, "a created semaphore stays");
	cr_assert_eq(e2e_xattr("pool", "limit"), 3);
}

/* ---- the limit holds for every actor (issue 12) ----------------------------- */

static int semid_of(const char *name)
{
	long semid = e2e_xattr(name, "semid");
	cr_assert_geq(semid, 0);
	return (int)semid;
}

/* Pipelined lock/unlock lines on one name are taken as a run (one semop):
 * each still gets the reply it would get alone, the kernel's counter ends
 * where one-by-one would leave it, the journal shows every request, and a
 * waiter queued from the mount is not passed. */
Test(native, a_pipelined_run_answers_each_request_as_alone)
{
	int fd = net_connect();
	ask(fd, "create q 2", "ok limit=2");
	net_send(fd, "unlock q\nlock q\nlock q\nunlock q\nlock q\nlock q 0\nunlock q\n");
	const char *replies[] = {"err EOVERFLOW", "ok token=",	"ok token=", "ok",
				 "ok token=",	  "err EAGAIN", "ok"};
	for (int i = 0; i < 7; i++)
		expect_line(fd, replies[i]);
	cr_assert_eq(semctl(semid_of("q"), 0, GETVAL), 1, "the kernel's value");
	char *journal = e2e_read("q");
	const char *values[] = {"lock by=tcp:",	  "value=1", "lock by=tcp:", "value=0",
				"unlock by=tcp:", "value=1", "lock by=tcp:", "value=0",
				"unlock by=tcp:", "value=1"};
	const char *at = strstr(journal, "create by=");
	cr_assert_not_null(at, "%s", journal);
	for (int i = 0; i < 10; i++) {
		at = strstr(at, values[i]);
		cr_assert_not_null(at, "no '%s' in order in:\n%s", values[i], journal);
	}
	free(journal);

	/* A run the store declines (its first would wait) goes one at a time,
	 * and runs start again after it. Value 1 here. */
	net_send(fd, "lock q\nlock q 0\nlock q 0\nunlock q\nlock q\nunlock q\nunlock q\n");
	const char *declined[] = {"ok token=", "err EAGAIN", "err EAGAIN", "ok",
				  "ok token=", "ok",	     "ok"};
	for (int i = 0; i < 7; i++)
		expect_line(fd, declined[i]);
	cr_assert_eq(semctl(semid_of("q"), 0, GETVAL), 2);
	ask(fd, "lock q", "ok token=");

	/* Both units out, a writer waits in the mount: an unlock+lock run hands
	 * the unit to it and then waits its own turn. */
	ask(fd, "lock q", "ok token=");
	pid_t writer = e2e_spawn_write("q", "lock\n");
	cr_assert(e2e_wait_xattr("q", "waiting", 1, 3000));
	net_send(fd, "unlock q\nlock q\n");
	expect_line(fd, "ok");
	cr_assert_eq(e2e_wait_exit(writer, 3000), 0, "the mount's waiter was passed");
	cr_assert_null(net_line(fd, 300), "the lock passed a waiter");
	cr_assert_eq(e2e_write("q", "unlock\n"), 0);
	expect_line(fd, "ok token=");
	close(fd);
}

/* An acquire holder's unit cannot be unlocked from the mount, the native
 * dialect or set away; after kill -9 the kernel gives it back once. */
Test(native, an_acquired_unit_is_nobody_elses_to_unlock)
{
	int fd = net_connect();
	ask(fd, "create m 1", "ok");
	int holder = open(e2e_path("m"), O_WRONLY);
	cr_assert_geq(holder, 0);
	cr_assert_eq(write(holder, "acquire\n", 8), 8);
	cr_assert_eq(e2e_write("m", "unlock"), EOVERFLOW);
	ask(fd, "unlock m", "err EOVERFLOW ");
	ask(fd, "set m 1", "err ERANGE ");
	cr_assert_eq(semctl(semid_of("m"), 0, GETVAL), 0, "the kernel's value rose");
	kill(e2e.daemon, SIGKILL);
	waitpid(e2e.daemon, NULL, 0);
	e2e.daemon = 0;
	close(holder);
	close(fd);
	e2e_restart();
	cr_assert_eq(semctl(semid_of("m"), 0, GETVAL), 1, "SEM_UNDO gave the unit back once");
	cr_assert_eq(e2e_write("m", "lock 0"), 0);
	cr_assert_eq(e2e_write("m", "lock 0"), EAGAIN, "two holders on a limit-1 semaphore");
	cr_assert_eq(e2e_write("m", "unlock"), 0);
	cr_assert_eq(e2e_write("m", "unlock"), EOVERFLOW);
}

Test(native, a_second_daemon_on_the_same_state_dir_is_refused)
{
	char config[400], mnt[400], log[400], command[1600];
	snprintf(config, sizeof(config), "%s/second.ini", e2e.dir);
	snprintf(mnt, sizeof(mnt), "%s/mnt2", e2e.dir);
	snprintf(log, sizeof(log), "%s/second.log", e2e.dir);
	cr_assert_eq(mkdir(mnt, 0755), 0);
	FILE *file = fopen(config, "we");
	cr_assert_not_null(file);
	fprintf(file, "[service_network_semaphore]\nenabled = no\n[semfs]\nstate_dir = %s\n",
		e2e.state);
	fclose(file);
	/* In the background, as an administrator would start it: the refusal
	 * still reaches the terminal. */
	snprintf(command, sizeof(command), "timeout 10 %s -c %s %s 2>%s", getenv("SEMFS_BIN"),
		 config, mnt, log);
	int status = system(command);
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) != 0, "a second daemon started");
	e2e_expect_text("../second.log", "in use by another semfs");
	cr_assert_eq(e2e_write("probe", "lock 0"), 0, "the first daemon is unharmed");
}

/* ---- liveness of the network front-end (issue 12) ------------------------- */

Test(net_configured, blank_lines_do_not_keep_an_idle_connection)
{
	e2e_start("idle_timeout = 1\n");
	int fd = net_connect();
	ask(fd, "ping", "ok pong");
	double start = e2e_now();
	bool closed = false;
	while (!closed && e2e_now() - start < 4.0) {
		if (send(fd, "\n", 1, MSG_NOSIGNAL) < 0)
			break;
		closed = closed_by_server(fd, 300);
	}
	cr_assert(closed, "blank lines kept an idle connection open for 4 s");
	close(fd);
}

static void pipeline(int fd, const char *request, int count, const char *prefix)
{
	char batch[8192];
	for (int sent = 0; sent < count;) {
		size_t used = 0;
		int in_batch = 0;
		while (sent + in_batch < count && used + strlen(request) + 1 < sizeof(batch)) {
			used +=
			    (size_t)snprintf(batch + used, sizeof(batch) - used, "%s\n", request);
			in_batch++;
		}
		net_send(fd, batch);
		for (int i = 0; i < in_batch; i++) {
			const char *line = net_line(fd, 5000);
			cr_assert(line && strncmp(line, prefix, strlen(prefix)) == 0,
				  "reply %d: %s", sent + i, line ? line : "(none)");
		}
		sent += in_batch;
	}
}

Test(native, status_of_any_size_is_answered_whole)
{
	int fd = net_connect();
	/* Each unit held shows its holder: 32,767 of them make a status line of
	 * ~700 KB, two such semaphores a status over 1 MiB. */
	ask(fd, "create a 32767", "ok");
	ask(fd, "create b 32767", "ok");
	pipeline(fd, "acquire a", 32767, "ok token=");
	pipeline(fd, "acquire b", 32767, "ok token=");
	net_send(fd, "status a\n");
	char *line = net_long_line(fd, 10000);
	cr_assert_not_null(line);
	size_t length = strlen(line);
	cr_assert_gt(length, 600000, "status a cut at %zu bytes", length);
	cr_assert(strstr(line, " semid="), "status a lost its tail");
	free(line);
	net_send(fd, "status\n");
	expect_line(fd, "ok lines=2");
	for (int i = 0; i < 2; i++) {
		line = net_long_line(fd, 10000);
		cr_assert(line && strstr(line, " semid="), "status line %d missing or cut", i);
		free(line);
	}
	ask(fd, "ping", "ok pong");
	close(fd);
}

/* Out of descriptors at accept: once the limit is raised again (no
 * connection of ours closed meanwhile), the listener accepts again. */
Test(native, accepting_resumes_after_running_out_of_descriptors)
{
	char command[256];
	bool used[4096] = {false};
	struct stat st;
	/* Answered once the daemon's loop runs: its start-up is over, and with
	 * it the descriptors it opens and closes (the toucher's socket pair). */
	cr_assert_eq(stat(e2e_path("semaphore.status"), &st), 0);
	snprintf(command, sizeof(command), "/proc/%d/fd", e2e.daemon);
	DIR *directory = opendir(command);
	cr_assert_not_null(directory);
	for (struct dirent *entry; (entry = readdir(directory));)
		if (entry->d_name[0] != '.' && atoi(entry->d_name) < 4096)
			used[atoi(entry->d_name)] = true;
	closedir(directory);
	int open_fds = 0; /* the lowest free descriptor: the limit that stops accept */
	while (used[open_fds])
		open_fds++;
	snprintf(command, sizeof(command), "prlimit --pid %d --nofile=%d:4096", e2e.daemon,
		 open_fds);
	cr_assert_eq(system(command), 0, "%s", command);
	int fd = net_connect(); /* in the kernel's backlog; accept fails with EMFILE */
	net_send(fd, "ping\n");
	cr_assert_null(net_line(fd, 1000), "served with no descriptor free");
	snprintf(command, sizeof(command), "prlimit --pid %d --nofile=4096:4096", e2e.daemon);
	cr_assert_eq(system(command), 0, "%s", command);
	const char *line = net_line(fd, 3000);
	cr_assert(line && strcmp(line, "ok pong") == 0, "accepting never resumed");
	close(fd);
	e2e_expect_text("../semfs.log", "cannot accept connections");
}

/* ---- who may do what over the network (issue 12) ---------------------------
 * Peers act as network_user (nobody); 127.0.0.1 is in admin_ipv4 here and
 * acts as semfs's own user. Each verb meets each permission case. */

static void start_permissions(void)
{
	e2e_start("admin_ipv4 = 127.0.0.1\n[service_network_semaphore]\n"
		  "allowed_ipv4 = 127.0.0.0/8\n");
	/* Made by root in the mount, as a local administrator would. */
	cr_assert_eq(e2e_write("private", "limit 1\n"), 0);
	cr_assert_eq(chmod(e2e_path("private"), 0600), 0);
	cr_assert_eq(e2e_write("readable", "limit 1\n"), 0);
	cr_assert_eq(chmod(e2e_path("readable"), 0644), 0);
	cr_assert_eq(e2e_write("shared", "limit 1\n"), 0);
	cr_assert_eq(chmod(e2e_path("shared"), 0666), 0);
	cr_assert_eq(mkdir(e2e_path("secret"), 0700), 0);
	cr_assert_eq(e2e_write("secret/inner", "limit 1\n"), 0);
	cr_assert_eq(chmod(e2e_path("secret/inner"), 0666), 0);
}

TestSuite(permissions, .init = start_permissions, .fini = e2e_teardown, .timeout = 60);

static int stranger(void)
{
	int fd = connect_from("127.0.0.2", e2e.port);
	cr_assert_geq(fd, 0);
	return fd;
}

Test(permissions, every_verb_meets_the_files_mode)
{
	static const char *const verbs[][2] = {{"lock", " 0"},	  {"unlock", ""},  {"relax", ""},
					       {"acquire", " 0"}, {"release", ""}, {"limit", " 2"},
					       {"set", " 0"}};
	static const char *const names[] = {"private", "readable", "secret/inner"};
	int fd = stranger();
	char request[128];
	for (size_t i = 0; i < sizeof(verbs) / sizeof(verbs[0]); i++) {
		for (size_t target = 0; target < sizeof(names) / sizeof(names[0]); target++) {
			snprintf(request, sizeof(request), "%s %s%s", verbs[i][0], names[target],
				 verbs[i][1]);
			ask(fd, request, "err EACCES ");
		}
	}
	ask(fd, "status private", "err EACCES ");
	ask(fd, "status secret/inner", "err EACCES ");
	ask(fd, "status readable", "ok readable: ");
	ask(fd, "create secret/new", "err EACCES ");
	ask(fd, "delete private", "err EPERM "); /* the root's sticky bit */
	ask(fd, "delete shared", "err EPERM ");
	ask(fd, "delete secret/inner", "err EACCES ");
	/* Nothing moved: root still has every unit. */
	cr_assert_eq(e2e_xattr("private", "value"), 1);
	cr_assert_eq(e2e_xattr("readable", "limit"), 1);
	cr_assert_eq(e2e_xattr("secret/inner", "value"), 1);
	/* What the mode allows, it may do. */
	ask(fd, "lock shared 0", "ok token=");
	ask(fd, "unlock shared", "ok");
	ask(fd, "create mine 2", "ok limit=2");
	ask(fd, "delete mine", "ok");
	/* An ACE client is closed, as for any refusal. */
	int ace = stranger();
	net_send(ace, "acquire:secret/inner|");
	cr_assert(closed_by_server(ace, 3000), "ACE acquired inside a 0700 directory");
	close(ace);
	close(fd);
	e2e_expect_text("../semfs.log", "permission denied");
}

Test(permissions, an_admin_peer_acts_as_semfs_user)
{
	int fd = connect_from("127.0.0.1", e2e.port);
	cr_assert_geq(fd, 0);
	ask(fd, "lock private 0", "ok token=");
	ask(fd, "unlock private", "ok");
	ask(fd, "set secret/inner 0", "ok");
	ask(fd, "set secret/inner 1", "ok");
	ask(fd, "create secret/made", "ok");
	ask(fd, "delete secret/made", "ok");
	close(fd);
}

Test(permissions, status_shows_each_reader_what_it_may_see)
{
	/* Over TCP. */
	int fd = stranger();
	net_send(fd, "status\n");
	const char *line = net_line(fd, 3000);
	cr_assert(line && strncmp(line, "ok lines=", 9) == 0);
	int lines = atoi(line + 9);
	for (int i = 0; i < lines; i++) {
		line = net_line(fd, 3000);
		cr_assert_not_null(line);
		cr_assert(!strstr(line, "secret/") && strncmp(line, "private:", 8) != 0,
			  "a stranger sees %s", line);
	}
	cr_assert_eq(lines, 2, "readable and shared");
	close(fd);
	/* In the mount, as the second user nobody. */
	int pipe_fds[2];
	cr_assert_eq(pipe(pipe_fds), 0);
	pid_t child = e2e_fork();
	if (child == 0) {
		close(pipe_fds[0]);
		if (setgid(65534) < 0 || setuid(65534) < 0)
			_exit(100);
		int status = open(e2e_path("semaphore.status"), O_RDONLY);
		char buffer[4096];
		ssize_t n = status < 0 ? -1 : read(status, buffer, sizeof(buffer));
		if (n > 0 && write(pipe_fds[1], buffer, (size_t)n) != n)
			_exit(101);
		_exit(n < 0 ? 102 : 0);
	}
	close(pipe_fds[1]);
	char seen[4096] = "";
	ssize_t n = read(pipe_fds[0], seen, sizeof(seen) - 1);
	close(pipe_fds[0]);
	cr_assert_eq(e2e_wait_exit(child, 3000), 0);
	seen[n > 0 ? n : 0] = '\0';
	cr_assert(strstr(seen, "shared: ") && !strstr(seen, "secret/") && !strstr(seen, "private:"),
		  "nobody reads:\n%s", seen);
	e2e_expect_text("semaphore.status", "secret/inner: "); /* root sees all */
}

Test(permissions, a_name_cannot_forge_a_status_line)
{
	cr_assert_eq(e2e_write("evil\nforged: 0 limit=9", "limit 1\n"), 0);
	char *text = e2e_read("semaphore.status");
	cr_assert(strstr(text, "evil\\012forged: 0 limit=9: 0 limit=1"), "%s", text);
	cr_assert_null(strstr(text, "\nforged"), "%s", text);
	free(text);
}

Test(permissions, network_names_make_bounded_directories_that_go_again)
{
	int fd = connect_from("127.0.0.1", e2e.port);
	cr_assert_geq(fd, 0);
	char deep[512] = "";
	for (int i = 0; i < 70; i++)
		strcat(deep, "d/");
	strcat(deep, "x");
	char request[600];
	/* Too deep for a path, too long for one escaped file name. */
	snprintf(request, sizeof(request), "create %s", deep);
	ask(fd, request, "err ENAMETOOLONG ");
	struct stat st;
	cr_assert_eq(stat(e2e_path("d"), &st), -1, "a refused create left directories");
	/* 17 deep: one escaped file at the root, no directories. */
	deep[17 * 2 + 1] = '\0';
	snprintf(request, sizeof(request), "create %s", deep);
	ask(fd, request, "ok");
	cr_assert_eq(stat(e2e_path("d"), &st), -1, "a name too deep for a path made directories");
	ask(fd, "create jobs/nightly/build", "ok");
	cr_assert_eq(stat(e2e_path("jobs/nightly"), &st), 0);
	cr_assert_eq(st.st_uid, 65534, "made for the network user");
	ask(fd, "delete jobs/nightly/build", "ok");
	/* The kernel may cache a directory's name for ENTRY_TIMEOUT (1 s). */
	double start = e2e_now();
	while (stat(e2e_path("jobs"), &st) == 0 && e2e_now() - start < 3.0)
		usleep(100000);
	cr_assert_eq(stat(e2e_path("jobs"), &st), -1, "emptied directories stayed");
	close(fd);
}

/* An outside ipcrm of a defined semaphore's set: made again with its limit,
 * acquire holders keep their units, the journal and the log say so. */
Test(net_configured, a_defined_semaphore_outlives_an_outside_ipcrm)
{
	e2e_start("[service_network_semaphore]\nsemaphore_fixed = 2\n");
	int fd = net_connect();
	ask(fd, "acquire fixed", "ok token=");
	cr_assert_eq(e2e_write("fixed", "lock\n"), 0);
	long semid = e2e_xattr("fixed", "semid");
	cr_assert_eq(semctl((int)semid, 0, IPC_RMID), 0);
	double start = e2e_now();
	while (e2e_xattr("fixed", "semid") == semid && e2e_now() - start < 3.0)
		usleep(50000);
	long fresh = e2e_xattr("fixed", "semid");
	cr_assert_neq(fresh, semid, "not made again");
	e2e_expect_text("fixed", "recreate by=sysv");
	e2e_expect_text("fixed", "lost=1");
	e2e_expect_text("../semfs.log", "removed from outside");
	cr_assert_eq(semctl((int)fresh, 0, GETVAL), 1, "the acquire unit is still out");
	ask(fd, "release fixed", "ok");
	cr_assert_eq(semctl((int)fresh, 0, GETVAL), 2);
	ask(fd, "lock fixed 0", "ok token=");
	ask(fd, "lock fixed 0", "ok token=");
	ask(fd, "lock fixed 0", "err EAGAIN ");
	close(fd);
}
