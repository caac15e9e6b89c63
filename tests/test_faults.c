/* test_faults.c: faults a real deployment meets, against the real daemon, its
 * real mount and real TCP: waiters killed or cut off at random moments, the
 * daemon itself killed, clients that trickle or flood, the kernel out of
 * semaphore sets. Each test ends by proving nothing leaked: the kernel's own
 * value of every semaphore plus the units the test knows it still holds is
 * the semaphore's limit, and nobody is left waiting. */
#include "e2e.h"
#include "e2e_net.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/resource.h>
#include <sys/sem.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* ---- the invariant ----------------------------------------------------------- */

/* The kernel's value of the semaphore behind `key`, read past the daemon. */
static int kernel_value(long key)
{
	int semid = semget((key_t)key, 0, 0);
	cr_assert_geq(semid, 0, "no SysV set for key 0x%lx: %s", key, strerror(errno));
	int value = semctl(semid, 0, GETVAL);
	cr_assert_geq(value, 0, "semctl GETVAL: %s", strerror(errno));
	return value;
}

/* value + held = limit and nobody waiting, in the kernel and in the daemon's
 * own figures. Released units may still be on their way (a closed file's
 * RELEASE, a reset's EPOLLHUP), so allow `ms` to settle. */
static void assert_nothing_leaked(const char *name, int held, int ms)
{
	long key = e2e_xattr(name, "key"), limit = 0, value = 0, daemon_value = 0, waiting = 0;
	cr_assert_geq(key, 0, "%s: no key attribute", name);
	for (double end = e2e_now() + ms / 1000.0;; usleep(20000)) {
		limit = e2e_xattr(name, "limit");
		value = kernel_value(key);
		daemon_value = e2e_xattr(name, "value");
		waiting = e2e_xattr(name, "waiting");
		if (value + held == limit && daemon_value == value && waiting == 0)
			return;
		if (e2e_now() > end)
			break;
	}
	cr_assert_fail("%s leaked: kernel value %ld + %d held by the test != limit %ld "
		       "(daemon's value %ld, waiting %ld)",
		       name, value, held, limit, daemon_value, waiting);
}

static unsigned random_below(unsigned n)
{
	return (unsigned)random() % n;
}

static void shuffle(int *items, int count)
{
	for (int i = count - 1; i > 0; i--) {
		int j = (int)random_below((unsigned)i + 1), t = items[i];
		items[i] = items[j];
		items[j] = t;
	}
}

static void setup(void)
{
	srandom((unsigned)getpid());
	/* 500 sockets and children: more than the usual 1,024 descriptors. */
	struct rlimit limit;
	if (getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur < 4096) {
		limit.rlim_cur = limit.rlim_max < 4096 ? limit.rlim_max : 4096;
		setrlimit(RLIMIT_NOFILE, &limit);
	}
}

TestSuite(faults, .init = setup, .fini = e2e_teardown, .timeout = 240);

/* ---- 1. the mount: 500 blocked writers, half SIGKILLed, the rest relaxed ------ */

#define WRITERS 500

Test(faults, killed_and_relaxed_mount_writers_leak_nothing)
{
	pid_t writers[WRITERS];
	int order[WRITERS];

	e2e_start(NULL);
	cr_assert_eq(e2e_write("w", "lock\n"), 0); /* limit 1, now held by the test */
	for (int i = 0; i < WRITERS; i++) {
		writers[i] = e2e_spawn_write("w", "lock\n");
		order[i] = i;
	}
	cr_assert(e2e_wait_xattr("w", "waiting", WRITERS, 60000), "only %ld of %d writers queued",
		  e2e_xattr("w", "waiting"), WRITERS);

	/* 200 killed one by one at random moments while they wait... */
	shuffle(order, WRITERS);
	for (int i = 0; i < 200; i++) {
		kill(writers[order[i]], SIGKILL);
		usleep(random_below(3000));
	}
	/* ...and 50 more by a killer racing the relax of everyone left. */
	pid_t killer = e2e_fork();
	if (killer == 0) {
		for (int i = 200; i < WRITERS / 2; i++) {
			kill(writers[order[i]], SIGKILL);
			usleep(random_below(400));
		}
		_exit(0);
	}
	usleep(random_below(5000));
	cr_assert_eq(e2e_write("w", "relax\n"), 0);
	cr_assert_eq(e2e_wait_exit(killer, 10000), 0);

	int relaxed = 0, killed = 0;
	for (int i = 0; i < WRITERS; i++) {
		int status = e2e_wait_exit(writers[order[i]], 20000);
		if (i >= WRITERS / 2)
			cr_assert_eq(status, 0, "a survivor's lock failed or hung (status %d)",
				     status);
		relaxed += status == 0;
		killed += status == 128 + SIGKILL;
	}
	cr_assert_geq(killed, 200, "only %d writers died of SIGKILL", killed);
	cr_assert_eq(relaxed + killed, WRITERS);
	/* Relax hands every waiter a unit without raising the value: still the
	 * test's unit is the only one in use. */
	assert_nothing_leaked("w", 1, 5000);
	cr_assert_eq(e2e_write("w", "unlock\n"), 0);
	assert_nothing_leaked("w", 0, 1000);
	cr_assert_eq(e2e_write("w", "unlock\n"), EOVERFLOW, "a unit appeared from nowhere");
}

/* ---- 2. the network: 500 waiters, half cut off while waiting or holding ------ */

#define PEERS 500
#define POOL  5

struct peer {
	int fd;
	bool ace, victim, granted, done;
	char seen[64]; /* the tail of what the server sent */
};

/* Read what arrived; true once the grant (`locked|` or `ok token=`) is in. */
static bool peer_granted(struct peer *peer)
{
	char buffer[256], joined[sizeof(peer->seen) + sizeof(buffer)];
	ssize_t n;

	while ((n = recv(peer->fd, buffer, sizeof(buffer) - 1, MSG_DONTWAIT)) > 0) {
		buffer[n] = '\0';
		snprintf(joined, sizeof(joined), "%s%s", peer->seen, buffer);
		if (strstr(joined, peer->ace ? "locked|" : "ok token="))
			peer->granted = true;
		size_t length = strlen(joined); /* keep a tail: a token may be split */
		snprintf(peer->seen, sizeof(peer->seen), "%s",
			 joined + (length > 16 ? length - 16 : 0));
	}
	return peer->granted;
}

static void peer_release(struct peer *peer)
{
	char reply[32];
	net_send(peer->fd, peer->ace ? "release|" : "release pool\n");
	const char *want = peer->ace ? "ok|" : "ok\n";
	size_t got = 0;
	double end = e2e_now() + 5;
	while (got < strlen(want) && e2e_now() < end) {
		struct pollfd p = {.fd = peer->fd, .events = POLLIN};
		if (poll(&p, 1, 100) <= 0)
			continue;
		ssize_t n = recv(peer->fd, reply + got, strlen(want) - got, 0);
		cr_assert_gt(n, 0, "connection lost before the release was answered");
		got += (size_t)n;
	}
	cr_assert(got == strlen(want) && memcmp(reply, want, got) == 0,
		  "release not answered with '%s'", want);
	close(peer->fd);
	peer->done = true;
}

Test(faults, network_waiters_cut_off_leak_nothing)
{
	static struct peer peers[PEERS];
	int order[PEERS];

	e2e_start(NULL);
	int control = net_connect();
	ask(control, "create pool 5", "ok");
	for (int i = 0; i < PEERS; i++) {
		peers[i] = (struct peer){.fd = net_connect(), .ace = i % 2 == 1};
		net_send(peers[i].fd, peers[i].ace ? "acquire:pool|" : "acquire pool\n");
		order[i] = i;
	}
	cr_assert(e2e_wait_xattr("pool", "waiting", PEERS - POOL, 30000), "%ld waiting",
		  e2e_xattr("pool", "waiting"));
	shuffle(order, PEERS);
	for (int i = 0; i < PEERS / 2; i++)
		peers[order[i]].victim = true;

	/* Random steps: cut a victim off (FIN or RST), or let a survivor that
	 * holds a unit release it. Grants move down the FIFO as units return. */
	int left = PEERS, cut_waiting = 0, cut_holding = 0, next_victim = 0;
	double end = e2e_now() + 120;
	while (left > 0) {
		cr_assert(e2e_now() < end, "%d peers never finished", left);
		bool cut = next_victim < PEERS / 2 && random_below(3) == 0;
		if (cut) {
			struct peer *victim = &peers[order[next_victim++]];
			if (peer_granted(victim))
				cut_holding++;
			else
				cut_waiting++;
			if (random_below(2))
				reset_connection(victim->fd);
			else
				close(victim->fd);
			victim->done = true;
			left--;
			continue;
		}
		bool progressed = false;
		for (int i = 0; i < PEERS; i++) {
			struct peer *peer = &peers[i];
			if (!peer->done && !peer->victim && peer_granted(peer)) {
				peer_release(peer);
				left--;
				progressed = true;
				break;
			}
		}
		if (!progressed && next_victim == PEERS / 2)
			usleep(2000); /* only survivors left: wait for their grants */
	}
	cr_assert_gt(cut_waiting, 0);
	cr_assert_gt(cut_holding, 0, "no victim was cut off while holding a unit");
	cr_log_info("cut off %d waiting and %d holding", cut_waiting, cut_holding);
	assert_nothing_leaked("pool", 0, 5000);
	close(control);
}

/* ---- 3. kill -9 of the daemon with units out --------------------------------- */

#define MOUNT_HOLDERS 50
#define NET_HOLDERS   50
#define LOCKS	      100

Test(faults, daemon_killed_with_units_out_restarts_whole)
{
	static const char *const names[] = {"k", "jobs/a", "jobs/b", "jobs/nightly/x", "db"};
	int sockets[NET_HOLDERS];

	/* Loopback peers administer: they use the semaphores root made. */
	e2e_start("admin_ipv4 = 127.0.0.1\n");
	cr_assert_eq(mkdir(e2e_path("jobs"), 0755), 0);
	cr_assert_eq(mkdir(e2e_path("jobs/nightly"), 0755), 0);
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		cr_assert_eq(e2e_write(names[i], "limit 300\n"), 0);

	/* 50 acquire holders in the mount: each keeps its open file. */
	int ready[2];
	cr_assert_eq(pipe(ready), 0);
	for (int i = 0; i < MOUNT_HOLDERS; i++) {
		if (e2e_fork() == 0) {
			int fd = open(e2e_path("k"), O_WRONLY);
			char ok = fd >= 0 && write(fd, "acquire\n", 8) == 8 ? 'y' : 'n';
			if (write(ready[1], &ok, 1) != 1)
				_exit(1);
			pause();
			_exit(0);
		}
	}
	for (int i = 0; i < MOUNT_HOLDERS; i++) {
		char ok = 0;
		cr_assert_eq(read(ready[0], &ok, 1), 1);
		cr_assert_eq(ok, 'y', "a mount holder could not acquire");
	}
	/* 50 over the network, 100 lock units in one write of 100 lines. */
	for (int i = 0; i < NET_HOLDERS; i++) {
		sockets[i] = net_connect();
		ask(sockets[i], "acquire k", "ok token=");
	}
	char batch[LOCKS * 5 + 1] = "";
	for (int i = 0; i < LOCKS; i++)
		strcat(batch, "lock\n");
	cr_assert_eq(e2e_write("k", batch), 0);
	long key = e2e_xattr("k", "key");
	cr_assert_eq(kernel_value(key), 300 - MOUNT_HOLDERS - NET_HOLDERS - LOCKS);

	int status = 0;
	cr_assert(e2e_kill_daemon(&status), "semfs did not exit on SIGKILL");
	/* The kernel undid the daemon's SEM_UNDO units at once: acquires came
	 * back, lock units did not. */
	cr_assert_eq(kernel_value(key), 300 - LOCKS);
	e2e_kill_children();
	for (int i = 0; i < NET_HOLDERS; i++)
		close(sockets[i]);

	e2e_restart(); /* unmounts the dead mount, starts on the same state_dir */
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		struct stat st;
		cr_assert_eq(stat(e2e_path(names[i]), &st), 0, "%s is gone after the restart",
			     names[i]);
		cr_assert_eq(e2e_xattr(names[i], "limit"), 300);
	}
	cr_assert_eq(e2e_xattr("k", "key"), key, "the restart made a new set");
	assert_nothing_leaked("k", LOCKS, 2000);
	for (size_t i = 1; i < sizeof(names) / sizeof(names[0]); i++)
		assert_nothing_leaked(names[i], 0, 1000);
	cr_assert_eq(e2e_write("k", batch), 0); /* it still works: 100 more */
	char unlocks[LOCKS * 7 * 2 + 1] = "";
	for (int i = 0; i < 2 * LOCKS; i++)
		strcat(unlocks, "unlock\n");
	cr_assert_eq(e2e_write("k", unlocks), 0);
	assert_nothing_leaked("k", 0, 1000);
}

/* ---- 3a. kill -9 while the daemon waits on its own mount ---------------------- */

/* semfs raises inotify events by touching the semaphore through the mount:
 * a request the daemon answers itself. Killed between reading that request
 * and answering it, the daemon used to stay forever a zombie with a thread in
 * uninterruptible sleep and a mount on which every access hung (only
 * fusectl's abort freed it). gdb stops the daemon exactly there. */
Test(faults, daemon_killed_while_its_own_touch_waits_exits)
{
	char gdb_log[400], armed[400], stopped[400], arm[420], stop[420], pid_text[16];

	e2e_start("");
	cr_assert_eq(e2e_write("s", "limit 2\n"), 0);
	int watch = inotify_init1(IN_CLOEXEC | IN_NONBLOCK);
	cr_assert_geq(watch, 0);
	cr_assert_geq(inotify_add_watch(watch, e2e_path("s"), IN_ATTRIB), 0);

	/* gdb marks its steps with files: its own output is buffered. */
	snprintf(gdb_log, sizeof(gdb_log), "%s/gdb.log", e2e.dir);
	snprintf(armed, sizeof(armed), "%s/gdb.armed", e2e.dir);
	snprintf(stopped, sizeof(stopped), "%s/gdb.stopped", e2e.dir);
	snprintf(arm, sizeof(arm), "shell touch %s", armed);
	snprintf(stop, sizeof(stop), "shell touch %s", stopped);
	snprintf(pid_text, sizeof(pid_text), "%d", (int)e2e.daemon);
	pid_t gdb = e2e_fork();
	if (gdb == 0) {
		int log = open(gdb_log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
		int null = open("/dev/null", O_RDONLY | O_CLOEXEC);
		if (log < 0 || null < 0 || dup2(null, 0) < 0 || dup2(log, 1) < 0 ||
		    dup2(log, 2) < 0)
			_exit(126);
		execlp("gdb", "gdb", "-batch", "-nx", "-p", pid_text, "-ex", "break mount_setattr",
		       "-ex", arm, "-ex", "continue", "-ex", stop, "-ex", "signal SIGKILL",
		       (char *)NULL);
		_exit(127);
	}
	for (double end = e2e_now() + 30; access(armed, F_OK) != 0; usleep(50000)) {
		int gone = e2e_wait_exit(gdb, 0);
		cr_assert_eq(gone, -1, "gdb exited (%d; scripts/deps.sh installs it), see %s", gone,
			     gdb_log);
		cr_assert_lt(e2e_now(), end, "gdb did not attach within 30 s, see %s", gdb_log);
	}
	/* A change: the notifier touches s, the daemon reads that SETATTR and
	 * stops at the breakpoint, holding it unanswered. */
	pid_t writer = e2e_spawn_write("s", "lock\n");
	for (double end = e2e_now() + 10; access(stopped, F_OK) != 0; usleep(20000))
		cr_assert_lt(e2e_now(), end, "the daemon got no SETATTR within 10 s, see %s",
			     gdb_log);
	cr_assert_eq(e2e_wait_exit(writer, 5000), 0, "the lock was not answered");

	/* gdb resumes it with SIGKILL and waits for its end: 10 s at most. */
	pid_t daemon = e2e.daemon;
	if (e2e_wait_exit(gdb, 10000) == -1) {
		kill(gdb, SIGKILL);
		e2e_wait_exit(gdb, 5000);
	}
	int status = 0;
	cr_assert(e2e_kill_daemon(&status),
		  "semfs (pid %d), killed while its touch waited in its own mount, did not exit "
		  "until its FUSE connection was aborted",
		  (int)daemon);
	cr_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL, "status 0x%x", status);
	close(watch);

	/* And it comes back on the same state. */
	e2e_restart();
	cr_assert_eq(e2e_xattr("s", "limit"), 2);
	cr_assert_eq(e2e_xattr("s", "value"), 1, "the lock unit was lost");
}

/* ---- 3b. a reboot: the kernel's sets are gone, the state_dir is not ----------- */

Test(faults, reboot_recreates_every_semaphore_free_with_its_limit)
{
	static const char *const names[] = {"db", "jobs/a"};
	long keys[2], token;

	/* Loopback peers administer: they use the semaphores root made. */
	e2e_start("admin_ipv4 = 127.0.0.1\n");
	cr_assert_eq(mkdir(e2e_path("jobs"), 0755), 0);
	cr_assert_eq(e2e_write("db", "limit 2\nlock\nlock\n"), 0);
	cr_assert_eq(e2e_write("jobs/a", "limit 3\nlock\n"), 0);
	cr_assert_eq(chmod(e2e_path("db"), 0600), 0);
	token = e2e_xattr("db", "token");
	for (int i = 0; i < 2; i++)
		keys[i] = e2e_xattr(names[i], "key");
	e2e_stop();
	for (int i = 0; i < 2; i++) /* what a reboot does to SysV sets */
		cr_assert_eq(semctl(semget((key_t)keys[i], 0, 0), 0, IPC_RMID), 0);

	e2e_restart();
	struct stat st;
	cr_assert_eq(stat(e2e_path("db"), &st), 0);
	cr_assert_eq(st.st_mode & 07777, 0600, "the mode was lost");
	cr_assert_eq(e2e_xattr("db", "limit"), 2);
	cr_assert_eq(e2e_xattr("jobs/a", "limit"), 3);
	/* Lock units lived in the kernel and went with it: every unit is free. */
	assert_nothing_leaked("db", 0, 1000);
	assert_nothing_leaked("jobs/a", 0, 1000);
	cr_assert_eq(e2e_write("db", "lock\n"), 0);
	cr_assert_gt(e2e_xattr("db", "token"), token, "fencing tokens only grow");
	cr_assert_eq(e2e_write("db", "unlock\n"), 0);
}

/* ---- 4. a trickling and a flooding client ------------------------------------- */

/* In a child: send `text` one byte a second; exit 0 once the server has cut
 * the connection, 1 if every byte went through and nothing was cut. */
static pid_t spawn_trickler(const char *text)
{
	pid_t pid = e2e_fork();
	if (pid != 0)
		return pid;
	int fd = net_connect();
	for (size_t i = 0; text[i]; i++) {
		if (send(fd, text + i, 1, MSG_NOSIGNAL) != 1 || closed_by_server(fd, 1000))
			_exit(0);
	}
	_exit(closed_by_server(fd, 3000) ? 0 : 1);
}

/* In a child: send 10 MB with no line end; exit 0 once cut off. */
static pid_t spawn_flooder(const char *start)
{
	pid_t pid = e2e_fork();
	if (pid != 0)
		return pid;
	int fd = net_connect();
	static char chunk[64 * 1024];
	memset(chunk, 'x', sizeof(chunk));
	if (send(fd, start, strlen(start), MSG_NOSIGNAL) < 0)
		_exit(0);
	for (size_t sent = 0; sent < 10u << 20;) {
		ssize_t n = send(fd, chunk, sizeof(chunk), MSG_NOSIGNAL);
		if (n < 0)
			_exit(errno == EPIPE || errno == ECONNRESET ? 0 : 2);
		sent += (size_t)n;
	}
	_exit(closed_by_server(fd, 5000) ? 0 : 1);
}

Test(faults, tricklers_and_floods_are_cut_off_alone)
{
	e2e_start("request_timeout = 2");
	int control = net_connect();
	ask(control, "create s 1", "ok");
	cr_assert_eq(e2e_write("t", "limit 1\n"), 0);

	pid_t abusers[] = {
	    spawn_trickler("lock s 100\n"),
	    spawn_trickler("acquire:s|release|"),
	    spawn_flooder("lock "),
	    spawn_flooder("acquire:"),
	};
	/* Meanwhile the others go on: round trips on the network and the mount. */
	int client = net_connect(), rounds = 0;
	double end = e2e_now() + 6;
	while (e2e_now() < end) {
		ask(client, "lock s 5", "ok token=");
		ask(client, "unlock s", "ok");
		cr_assert_eq(e2e_write("t", "lock 5\nunlock\n"), 0);
		rounds++;
	}
	cr_assert_gt(rounds, 10, "only %d rounds in 6 s", rounds);
	for (size_t i = 0; i < sizeof(abusers) / sizeof(abusers[0]); i++)
		cr_assert_eq(e2e_wait_exit(abusers[i], 15000), 0,
			     "abusive client %zu was not cut off", i);
	ask(control, "ping", "ok");
	assert_nothing_leaked("s", 0, 2000);
	assert_nothing_leaked("t", 0, 1000);
	close(client);
	close(control);
}

/* ---- 5. the kernel's semaphore sets run out ----------------------------------- */

#define SETS_ALLOWED 8

Test(faults, out_of_sysv_sets_is_enospc_and_nothing_else_breaks)
{
	/* A private IPC namespace (inherited by the daemon) with SEMMNI lowered. */
	if (geteuid() != 0 || unshare(CLONE_NEWIPC) != 0)
		cr_skip_test("needs root for an IPC namespace");
	FILE *sem = fopen("/proc/sys/kernel/sem", "r+e");
	cr_assert_not_null(sem);
	unsigned msl, mns, opm, mni;
	cr_assert_eq(fscanf(sem, "%u %u %u %u", &msl, &mns, &opm, &mni), 4);
	rewind(sem);
	fprintf(sem, "%u %u %u %u\n", msl, mns, opm, SETS_ALLOWED);
	cr_assert_eq(fclose(sem), 0);

	e2e_start("admin_ipv4 = 127.0.0.1\n"); /* uses root's semaphores over TCP */
	char name[32];
	int created = 0, error = 0;
	while (created <= SETS_ALLOWED) {
		snprintf(name, sizeof(name), "s%d", created);
		int fd = open(e2e_path(name), O_WRONLY | O_CREAT | O_EXCL, 0644);
		if (fd < 0) {
			error = errno;
			break;
		}
		close(fd);
		created++;
	}
	cr_assert_eq(created, SETS_ALLOWED, "created %d of %d", created, SETS_ALLOWED);
	cr_assert_eq(error, ENOSPC, "got %s", strerror(error));
	struct stat st;
	cr_assert_eq(stat(e2e_path(name), &st), -1, "the failed create left %s behind", name);

	/* Both dialects say it; the log explains it. */
	int client = net_connect();
	ask(client, "create more", "err ENOSPC the system's limit on semaphore sets");
	int ace = net_connect();
	net_send(ace, "acquire:also|");
	cr_assert(closed_by_server(ace, 3000), "ACE acquire of a new name was not refused");
	close(ace);
	e2e_expect_text("../semfs.log", "limit on SysV semaphore sets is reached");

	/* Everything else still works, and a freed set can be used again. */
	cr_assert_eq(e2e_write("s0", "lock\nunlock\n"), 0);
	ask(client, "acquire s1 1", "ok token=");
	ask(client, "release s1", "ok");
	cr_assert_eq(mkdir(e2e_path("dir"), 0755), 0);
	cr_assert_eq(unlink(e2e_path("s2")), 0);
	ask(client, "create more", "ok");
	for (int i = 0; i < SETS_ALLOWED; i++) {
		snprintf(name, sizeof(name), "s%d", i);
		if (i != 2)
			assert_nothing_leaked(name, 0, 1000);
	}
	assert_nothing_leaked("more", 0, 1000);
	close(client);
}
