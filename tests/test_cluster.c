/* test_cluster.c: cluster mode end to end. A real 3-member etcd cluster on
 * 127.0.0.1 and two or three real semfs daemons, each with its own mount,
 * state directory, port and `host =` name, play the hosts. Checked on every
 * host: the files, the journals, the kernel's own value of each mirror set
 * (semctl GETVAL), and the invariant value + units in use = limit. Runs in
 * an IPC namespace of its own (meson: unshare --ipc). */
#include "etcd_cluster.h"
#include "fusectl.h"
#include "janitor.h"

#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/sem.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#define HOSTS_MAX    3
#define CHILDREN_MAX 256

struct host {
	char name[16];
	char dir[200], mnt[256], config[256], log[256];
	unsigned port;
	pid_t pid;
};

static struct etcd_cluster cluster;
static struct etcd_cluster secure; /* a TLS one, for the test that needs it */
static struct host hosts[HOSTS_MAX];
static char base[64];
static pid_t children[CHILDREN_MAX];
static pid_t janitor;
static int child_count;

static double now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + t.tv_nsec / 1e9;
}

static unsigned free_port(void)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t length = sizeof(a);
	bind(fd, (struct sockaddr *)&a, sizeof(a));
	getsockname(fd, (struct sockaddr *)&a, &length);
	close(fd);
	return ntohs(a.sin_port);
}

static bool mounted(const char *path)
{
	FILE *mounts = fopen("/proc/mounts", "re");
	char line[1024];
	bool found = false;
	while (mounts && fgets(line, sizeof(line), mounts)) {
		char *space = strchr(line, ' ');
		if (space && strncmp(space + 1, path, strlen(path)) == 0 &&
		    space[1 + strlen(path)] == ' ')
			found = true;
	}
	if (mounts)
		fclose(mounts);
	return found;
}

static char *slurp(const char *path)
{
	FILE *file = fopen(path, "re");
	if (!file)
		return strdup("");
	char *text = calloc(1, 1 << 20);
	size_t n = fread(text, 1, (1 << 20) - 1, file);
	text[n] = '\0';
	fclose(file);
	return text;
}

/* Start host `i` (its files in base/NAME) against the etcd cluster. false
 * with the daemon's exit status in *status when it did not mount. */
static bool host_launch(int i, int *status)
{
	struct host *h = &hosts[i];
	pid_t pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGTERM);
		int log = open(h->log, O_WRONLY | O_CREAT | O_APPEND, 0644);
		if (log >= 0) {
			dup2(log, 2);
			close(log);
		}
		execl(getenv("SEMFS_BIN"), "semfs", "-f", "-c", h->config, h->mnt, (char *)NULL);
		_exit(127);
	}
	h->pid = pid;
	for (int t = 0; t < 1500 && !mounted(h->mnt); t++) {
		if (waitpid(pid, status, WNOHANG) == pid) {
			h->pid = 0;
			return false;
		}
		usleep(10000);
	}
	return mounted(h->mnt);
}

/* Its name and files: base/hostX/{mnt,state,semfs.ini,semfs.log}. */
static void host_paths(int i)
{
	struct host *h = &hosts[i];
	char name[16], dir[200];
	snprintf(name, sizeof(name), "host%c", 'a' + i);
	snprintf(dir, sizeof(dir), "%s/%s", base, name);
	memcpy(h->name, name, sizeof(name));
	memcpy(h->dir, dir, sizeof(dir));
	snprintf(h->mnt, sizeof(h->mnt), "%s/mnt", dir);
	snprintf(h->config, sizeof(h->config), "%s/semfs.ini", dir);
	snprintf(h->log, sizeof(h->log), "%s/semfs.log", dir);
	mkdir(dir, 0755);
	mkdir(h->mnt, 0755);
}

/* Host i's semfs.ini: its own state, port and name; `extra` ends the
 * [cluster] section. */
static void host_configure(int i, const char *endpoints, const char *extra)
{
	struct host *h = &hosts[i];
	host_paths(i);
	h->port = free_port();
	FILE *config = fopen(h->config, "we");
	cr_assert_not_null(config);
	fprintf(config,
		"[semfs]\nstate_dir = %s/state\n"
		"[service_network_semaphore]\nbind_port = %u\nstats_dir = %s/stats\n"
		"[cluster]\nendpoints = %s\nprefix = %s/\nhost = %s\nlease_ttl = 3\n"
		"request_timeout = 1.5\n%s",
		h->dir, h->port, h->dir, endpoints ? endpoints : cluster.endpoint_list, base,
		h->name, extra ? extra : "");
	fclose(config);
}

static void host_start_with(int i, const char *endpoints, const char *extra)
{
	struct host *h = &hosts[i];
	host_configure(i, endpoints, extra);
	int status = 0;
	bool up = host_launch(i, &status);
	char *log = slurp(h->log);
	cr_assert(up, "%s did not mount (status 0x%x):\n%s", h->name, status, log);
	free(log);
}

static void host_start(int i, const char *endpoints)
{
	host_start_with(i, endpoints, NULL);
}

/* Calls and the watch stay on the first listed member that answers, not on
 * etcd's leader: a test that pauses the member a host talks to. */
static void host_start_listed(int i, const char *endpoints)
{
	host_start_with(i, endpoints, "prefer_leader = no\n");
}

static bool host_stop(int i, int signal_number)
{
	struct host *h = &hosts[i];
	int status = 0;
	bool clean = true;
	if (h->pid > 0) {
		dev_t device = fusectl_device(h->mnt);
		kill(h->pid, signal_number);
		/* A daemon that hangs in its shutdown is killed after 15 s. A
		 * killed one whose thread waits in a request to its own mount
		 * (the notifier's touch) cannot exit until that connection is
		 * aborted: after 2 s of SIGKILL, it is. */
		int t = 0;
		bool aborted = false;
		while (waitpid(h->pid, &status, WNOHANG) != h->pid) {
			if (++t == 1500)
				kill(h->pid, SIGKILL);
			if (!aborted && device &&
			    (t >= 1700 || (signal_number == SIGKILL && t >= 200))) {
				fprintf(stderr,
					"%s: killed but not gone after 2 s: aborting its FUSE "
					"connection\n",
					h->name);
				fusectl_abort(device);
				aborted = true;
			}
			usleep(10000);
		}
		h->pid = 0;
		/* A clean stop exits 0; a sanitizer report, a leak or a hang does not. */
		clean = signal_number != SIGTERM || (WIFEXITED(status) && WEXITSTATUS(status) == 0);
	}
	if (h->mnt[0] && mounted(h->mnt))
		umount2(h->mnt, MNT_DETACH); /* whatever happened above */
	if (!clean) {
		char *log = slurp(h->log);
		fprintf(stderr, "%s did not stop cleanly (status 0x%x):\n%s", h->name, status, log);
		free(log);
	}
	return clean;
}

/* The end of a test: every host stops cleanly on SIGTERM (checked here, in
 * the test: a failure in .fini would not count). */
static void stop_all(void)
{
	for (int i = 0; i < HOSTS_MAX; i++)
		cr_assert(host_stop(i, SIGTERM), "%s did not stop cleanly", hosts[i].name);
}

static void setup(void)
{
	cr_assert(etcd_cluster_start(&cluster, 3), "etcd did not start");
	snprintf(base, sizeof(base), "/tmp/semfs-cluster.XXXXXX");
	cr_assert_not_null(mkdtemp(base));
	memset(hosts, 0, sizeof(hosts));
	memset(&secure, 0, sizeof(secure));
	child_count = 0;
	/* If this process dies before its teardown (a timeout, a crash). */
	const char *const dirs[] = {base, cluster.dir};
	janitor = janitor_start(dirs, 2);
}

static void teardown(void)
{
	for (int i = 0; i < child_count; i++)
		if (children[i] > 0) {
			kill(children[i], SIGKILL);
			waitpid(children[i], NULL, 0);
		}
	for (int i = 0; i < HOSTS_MAX; i++)
		host_stop(i, SIGTERM);
	etcd_cluster_stop(&cluster);
	if (secure.size)
		etcd_cluster_stop(&secure);
	char command[128];
	snprintf(command, sizeof(command), "rm -rf '%s'", base);
	if (system(command) != 0)
		fprintf(stderr, "could not remove %s\n", base);
	janitor_stop(janitor); /* finds nothing left, or cleans what is */
}

TestSuite(cluster, .init = setup, .fini = teardown, .timeout = 120);

static const char *at(int i, const char *name)
{
	static char paths[8][512];
	static int next;
	char *path = paths[next++ % 8];
	snprintf(path, 512, "%s/%s", hosts[i].mnt, name);
	return path;
}

static int write_text(int i, const char *name, const char *text)
{
	int fd = open(at(i, name), O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (fd < 0)
		return errno;
	int r = write(fd, text, strlen(text)) == (ssize_t)strlen(text) ? 0 : errno;
	close(fd);
	return r;
}

static pid_t spawn_write(int i, const char *name, const char *text)
{
	pid_t pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0)
		_exit(write_text(i, name, text));
	cr_assert_lt(child_count, CHILDREN_MAX);
	children[child_count++] = pid;
	return pid;
}

/* A child's exit status, or -1 while it still runs after `ms`. */
static int wait_exit(pid_t pid, int ms)
{
	for (int t = 0; t <= ms; t += 5) {
		int status;
		if (waitpid(pid, &status, WNOHANG) == pid) {
			for (int c = 0; c < child_count; c++)
				if (children[c] == pid)
					children[c] = 0;
			return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
		}
		usleep(5000);
	}
	return -1;
}

static long xattr(int i, const char *name, const char *attribute)
{
	char value[64], full[64];
	snprintf(full, sizeof(full), "user.semfs.%s", attribute);
	ssize_t n = getxattr(at(i, name), full, value, sizeof(value) - 1);
	if (n < 0)
		return -1;
	value[n] = '\0';
	return strtol(value, NULL, 0);
}

/* The kernel's own count: GETVAL of the host's mirror set. */
static int getval(int i, const char *name)
{
	long key = xattr(i, name, "key");
	int semid = semget((key_t)key, 0, 0);
	return semid < 0 ? -1 : semctl(semid, 0, GETVAL);
}

static bool wait_value(int i, const char *name, long value, int ms)
{
	for (int t = 0; t <= ms; t += 10) {
		if (xattr(i, name, "value") == value && getval(i, name) == value)
			return true;
		usleep(10000);
	}
	return false;
}

static bool wait_exists(int i, const char *name, bool exists, int ms)
{
	for (int t = 0; t <= ms; t += 10) {
		if ((access(at(i, name), F_OK) == 0) == exists)
			return true;
		usleep(10000);
	}
	return false;
}

static int dial(int i)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in a = {.sin_family = AF_INET,
				.sin_port = htons((uint16_t)hosts[i].port),
				.sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	cr_assert_eq(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	struct timeval limit = {.tv_sec = 20};
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof(limit));
	return fd;
}

/* One native request and its reply line (without the newline). */
static void ask(int fd, const char *request, char *reply, size_t size)
{
	char line[512];
	snprintf(line, sizeof(line), "%s\n", request);
	cr_assert_eq(write(fd, line, strlen(line)), (ssize_t)strlen(line));
	size_t used = 0;
	while (used < size - 1) {
		ssize_t n = read(fd, reply + used, 1);
		if (n <= 0 || reply[used] == '\n')
			break;
		used++;
	}
	reply[used] = '\0';
}

static void expect_journal(int i, const char *name, const char *needle)
{
	char *text = slurp(at(i, name));
	cr_assert(strstr(text, needle), "%s's journal of %s lacks '%s':\n%s", hosts[i].name, name,
		  needle, text);
	free(text);
}

/* Every line of host i's journal of `name` with `event` also has `needle`;
 * there is at least one. */
static void expect_every(int i, const char *name, const char *event, const char *needle)
{
	char *text = slurp(at(i, name));
	int lines = 0;
	for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
		if (!strstr(line, event))
			continue;
		lines++;
		cr_assert(strstr(line, needle), "%s's journal of %s: '%s' lacks '%s'",
			  hosts[i].name, name, line, needle);
	}
	cr_assert_gt(lines, 0, "%s's journal of %s has no '%s'", hosts[i].name, name, event);
	free(text);
}

/* One ACE reply (`locked|`, `wait|`, `ok|`) within `ms`, or "" (timeout or
 * close). */
static const char *ace_reply(int fd, int ms)
{
	static char reply[64];
	size_t used = 0;
	struct pollfd p = {.fd = fd, .events = POLLIN};
	while (used < sizeof(reply) - 1 && (used == 0 || reply[used - 1] != '|')) {
		if (poll(&p, 1, ms) != 1 || read(fd, reply + used, 1) != 1) {
			used = 0;
			break;
		}
		used++;
	}
	reply[used] = '\0';
	return reply;
}

static int count_in_log(int i, const char *text)
{
	char *log = slurp(hosts[i].log);
	int count = 0;
	for (char *p = log; (p = strstr(p, text)); p++)
		count++;
	free(log);
	return count;
}

/* hosta's ACE client holds the undefined name `name` and hostb opens it:
 * hostb's file, and the client's connection in *on_a. */
static int held_on_a_open_on_b(const char *name, int *on_a)
{
	host_start(0, NULL);
	host_start(1, NULL);
	char request[64];
	int length = snprintf(request, sizeof(request), "acquire:%s|", name);
	*on_a = dial(0);
	cr_assert_eq(write(*on_a, request, (size_t)length), length);
	cr_assert_str_eq(ace_reply(*on_a, 5000), "locked|");
	cr_assert(wait_exists(1, name, true, 3000), "%s: not on hostb", name);
	int fd = open(at(1, name), O_RDONLY);
	cr_assert_geq(fd, 0, "hostb: open %s: %s", name, strerror(errno));
	return fd;
}

/* hosta's client lets go: idle on every host, but for hostb's file. */
static void release_on_a(int on_a)
{
	cr_assert_eq(write(on_a, "release|", 8), 8);
	cr_assert_str_eq(ace_reply(on_a, 5000), "ok|");
	close(on_a);
}

/* ---- a network that loses etcd's answers -------------------------------------- */

/* A TCP proxy to one etcd member. While `lose` is set, each answer to a
 * call ends its connection instead of reaching the host: etcd applied the
 * request, the host never learns it (as when a link fails after the
 * request went out). Watch streams pass: only calls lose answers. */
struct answer_proxy {
	int listen_fd, target_port;
	unsigned port;
	atomic_bool lose, stop;
	atomic_int relays;
	pthread_t acceptor;
};

struct relay {
	struct answer_proxy *proxy;
	int client, server;
};

static bool send_all(int fd, const char *data, size_t length)
{
	while (length > 0) {
		ssize_t n = send(fd, data, length, MSG_NOSIGNAL);
		if (n <= 0)
			return false;
		data += n;
		length -= (size_t)n;
	}
	return true;
}

static void *relay_main(void *argument)
{
	struct relay *r = argument;
	struct pollfd fds[2] = {{.fd = r->client, .events = POLLIN},
				{.fd = r->server, .events = POLLIN}};
	bool watch = false, first = true;
	static char buffer[2][65536]; /* per direction; one relay moves at a time */
	static pthread_mutex_t moving = PTHREAD_MUTEX_INITIALIZER;
	while (!atomic_load(&r->proxy->stop)) {
		if (poll(fds, 2, 100) <= 0)
			continue;
		pthread_mutex_lock(&moving);
		bool ok = true;
		if (fds[0].revents) {
			ssize_t n = recv(r->client, buffer[0], sizeof(buffer[0]), 0);
			if (n > 0 && first)
				watch = memmem(buffer[0], (size_t)n, "/v3/watch", 9) != NULL;
			first = false;
			ok = n > 0 && send_all(r->server, buffer[0], (size_t)n);
		}
		if (ok && fds[1].revents) {
			ssize_t n = recv(r->server, buffer[1], sizeof(buffer[1]), 0);
			ok = n > 0 && (watch || !atomic_load(&r->proxy->lose)) &&
			     send_all(r->client, buffer[1], (size_t)n);
		}
		pthread_mutex_unlock(&moving);
		if (!ok)
			break;
	}
	close(r->client);
	close(r->server);
	atomic_fetch_sub(&r->proxy->relays, 1);
	free(r);
	return NULL;
}

static void *acceptor_main(void *argument)
{
	struct answer_proxy *p = argument;
	struct pollfd listening = {.fd = p->listen_fd, .events = POLLIN};
	while (!atomic_load(&p->stop)) {
		if (poll(&listening, 1, 100) <= 0)
			continue;
		int client = accept4(p->listen_fd, NULL, NULL, SOCK_CLOEXEC);
		if (client < 0)
			continue;
		struct sockaddr_in target = {.sin_family = AF_INET,
					     .sin_port = htons((uint16_t)p->target_port),
					     .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
		int server = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		struct relay *r = malloc(sizeof(*r));
		pthread_t thread;
		if (server < 0 || !r ||
		    connect(server, (struct sockaddr *)&target, sizeof(target)) < 0) {
			close(client);
			if (server >= 0)
				close(server);
			free(r);
			continue;
		}
		*r = (struct relay){p, client, server};
		atomic_fetch_add(&p->relays, 1);
		if (pthread_create(&thread, NULL, relay_main, r) != 0) {
			atomic_fetch_sub(&p->relays, 1);
			close(client);
			close(server);
			free(r);
			continue;
		}
		pthread_detach(thread);
	}
	return NULL;
}

static void answer_proxy_start(struct answer_proxy *p, int target_port)
{
	*p = (struct answer_proxy){.target_port = target_port};
	p->listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in address = {.sin_family = AF_INET,
				      .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t length = sizeof(address);
	cr_assert(p->listen_fd >= 0 &&
		  bind(p->listen_fd, (struct sockaddr *)&address, sizeof(address)) == 0 &&
		  listen(p->listen_fd, 64) == 0 &&
		  getsockname(p->listen_fd, (struct sockaddr *)&address, &length) == 0);
	p->port = ntohs(address.sin_port);
	cr_assert_eq(pthread_create(&p->acceptor, NULL, acceptor_main, p), 0);
}

static void answer_proxy_stop(struct answer_proxy *p)
{
	atomic_store(&p->stop, true);
	pthread_join(p->acceptor, NULL);
	for (int t = 0; t < 100 && atomic_load(&p->relays) > 0; t++)
		usleep(10000);
	close(p->listen_fd);
}

/* ---- the tests ------------------------------------------------------------- */

Test(cluster, a_unit_taken_on_one_host_blocks_the_other_until_released)
{
	host_start(0, NULL);
	host_start(1, NULL);
	cr_assert_eq(write_text(0, "db", "lock\n"), 0);
	cr_assert(wait_exists(1, "db", true, 3000), "db never showed on hostb");
	cr_assert(wait_value(1, "db", 0, 3000), "hostb: value %ld, GETVAL %d",
		  xattr(1, "db", "value"), getval(1, "db"));
	/* hostb's status names hosta's holder. */
	char status_path[300];
	snprintf(status_path, sizeof(status_path), "%s/semaphore.status", hosts[1].mnt);
	char *status = slurp(status_path);
	cr_assert(strstr(status, "holders=pid:") && strstr(status, "@hosta "), "%s", status);
	free(status);
	pid_t waiter = spawn_write(1, "db", "lock\n");
	cr_assert_eq(wait_exit(waiter, 400), -1, "hostb got a unit hosta holds");
	cr_assert_eq(xattr(0, "db", "waiting"), 1, "hosta does not see hostb waiting");
	cr_assert_eq(write_text(0, "db", "unlock\n"), 0);
	cr_assert_eq(wait_exit(waiter, 5000), 0, "hostb's lock did not complete");
	cr_assert(wait_value(0, "db", 0, 3000));
	/* Every host's journal shows every host's events. */
	expect_journal(0, "db", "@hostb");
	expect_journal(1, "db", "lock by=pid:");
	expect_journal(1, "db", "@hosta");
	/* A unit stays out until unlocked; unlock twice is refused. */
	cr_assert_eq(write_text(1, "db", "unlock\n"), 0);
	cr_assert(wait_value(0, "db", 1, 3000));
	cr_assert_eq(write_text(0, "db", "unlock\n"), EOVERFLOW);
	/* A lock on one host, then at once an unlock on the other: the unlock
	 * finds the unit, whether or not the watch brought it there yet. */
	int on_a = dial(0), on_b = dial(1);
	char reply[256];
	ask(on_a, "create x 1", reply, sizeof(reply));
	cr_assert(wait_exists(1, "x", true, 3000));
	for (int n = 0; n < 50; n++) {
		ask(on_a, "lock x", reply, sizeof(reply));
		cr_assert(strncmp(reply, "ok", 2) == 0, "%s", reply);
		ask(on_b, "unlock x", reply, sizeof(reply));
		cr_assert_str_eq(reply, "ok", "round %d: unlock right after a lock elsewhere", n);
	}
	close(on_a);
	close(on_b);
	/* Each host journals the unlocker (hostb's), not the locker. */
	cr_assert(wait_value(0, "x", 1, 3000));
	expect_every(0, "x", " unlock by=", "@hostb ");
	expect_every(1, "x", " unlock by=", "@hostb ");
	expect_every(0, "x", " lock by=", "@hosta ");
	/* Timeouts and try-locks keep their meaning. */
	cr_assert_eq(write_text(0, "db", "lock\n"), 0);
	double start = now();
	cr_assert_eq(write_text(1, "db", "lock 0.3\n"), ETIMEDOUT);
	cr_assert_geq(now() - start, 0.29);
	cr_assert_eq(write_text(1, "db", "lock 0\n"), EAGAIN);
	cr_assert_eq(xattr(1, "db", "waiting"), 0, "a timed-out waiter left its entry");
	stop_all();
}

/* Whether host i's daemon has a thread named `name`. */
static bool has_thread(int i, const char *name)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/task", (int)hosts[i].pid);
	DIR *tasks = opendir(path);
	cr_assert_not_null(tasks, "%s: no %s", hosts[i].name, path);
	bool found = false;
	struct dirent *task;
	while (!found && (task = readdir(tasks))) {
		if (task->d_name[0] == '.')
			continue;
		char comm_path[384], comm[32] = "";
		snprintf(comm_path, sizeof(comm_path), "%s/%s/comm", path, task->d_name);
		FILE *file = fopen(comm_path, "re");
		if (file && fgets(comm, sizeof(comm), file))
			found =
			    strncmp(comm, name, strlen(name)) == 0 && comm[strlen(name)] == '\n';
		if (file)
			fclose(file);
	}
	closedir(tasks);
	return found;
}

/* The cluster's loop thread runs the TCP server too (no thread between a
 * request and etcd): a synchronous call made there (create) drives the loop
 * itself while a request waits, and a stop answers the waiting connection
 * and takes its entry back from the cluster. */
Test(cluster, the_cluster_loop_serves_tcp_and_a_stop_takes_back_its_waiters)
{
	host_start(0, NULL);
	host_start(1, NULL);
	cr_assert(has_thread(0, "semfs-cluster"), "hosta has no cluster loop thread");
	cr_assert(!has_thread(0, "semfs-net"), "hosta still runs a thread of its own for TCP");
	int on_a = dial(0), other = dial(0);
	char reply[256];
	ask(on_a, "create s 1", reply, sizeof(reply));
	cr_assert_str_eq(reply, "ok limit=1");
	cr_assert(wait_exists(1, "s", true, 3000));
	cr_assert_eq(write_text(1, "s", "lock\n"), 0);
	cr_assert_eq(write(on_a, "lock s\n", 7), 7);
	for (int t = 0; t < 300 && xattr(1, "s", "waiting") != 1; t++)
		usleep(10000);
	cr_assert_eq(xattr(1, "s", "waiting"), 1, "hosta's TCP waiter never reached hostb");
	/* Nested: the loop runs for this create while the lock still waits. */
	ask(other, "create t 2", reply, sizeof(reply));
	cr_assert_str_eq(reply, "ok limit=2");
	cr_assert(wait_exists(1, "t", true, 3000));
	ask(other, "lock t", reply, sizeof(reply));
	cr_assert(strncmp(reply, "ok token=", 9) == 0, "%s", reply);
	cr_assert_eq(xattr(1, "s", "waiting"), 1, "the waiter went while another request ran");
	struct pollfd ready = {.fd = on_a, .events = POLLIN};
	cr_assert_eq(poll(&ready, 1, 0), 0, "the waiter was answered while hostb holds");
	cr_assert(host_stop(0, SIGTERM), "hosta did not stop cleanly with a TCP waiter");
	/* The waiter learns it: the connection ends (no grant came). */
	ssize_t n = read(on_a, reply, sizeof(reply) - 1);
	reply[n > 0 ? n : 0] = '\0';
	cr_assert(n == 0 || (n > 0 && strncmp(reply, "err", 3) == 0), "the waiter heard \"%s\"",
		  reply);
	close(on_a);
	close(other);
	/* Its entry went: hostb sees nobody waiting, and its own unit held. */
	for (int t = 0; t < 300 && xattr(1, "s", "waiting") != 0; t++)
		usleep(10000);
	cr_assert_eq(xattr(1, "s", "waiting"), 0, "the stopped host's waiter stayed queued");
	cr_assert_eq(getval(1, "s"), 0);
	cr_assert_eq(write_text(1, "s", "unlock\n"), 0);
	cr_assert(wait_value(1, "s", 1, 3000));
	stop_all();
}

Test(cluster, creates_and_removals_show_on_every_host_and_outsiders_are_reverted)
{
	host_start(0, NULL);
	host_start(1, NULL);
	int fd = open(at(0, "pool"), O_WRONLY | O_CREAT | O_EXCL, 0640);
	cr_assert_geq(fd, 0);
	close(fd);
	cr_assert(wait_exists(1, "pool", true, 3000));
	struct stat st;
	cr_assert_eq(stat(at(1, "pool"), &st), 0);
	cr_assert_eq(st.st_mode & 0777, 0640, "mode 0%o on hostb", st.st_mode & 0777);
	cr_assert_eq(write_text(1, "pool", "limit 3\n"), 0);
	cr_assert(wait_value(0, "pool", 3, 3000));
	cr_assert_eq(xattr(0, "pool", "limit"), 3);
	/* An outside semop on hostb's mirror cannot join the cluster's queue:
	 * it is undone and journalled. */
	int semid = semget((key_t)xattr(1, "pool", "key"), 0, 0);
	cr_assert_geq(semid, 0);
	struct sembuf take = {.sem_num = 0, .sem_op = -1, .sem_flg = IPC_NOWAIT};
	cr_assert_eq(semop(semid, &take, 1), 0);
	cr_assert(wait_value(1, "pool", 3, 3000), "the outside change stayed");
	expect_journal(1, "pool", "outside-change");
	expect_journal(1, "pool", "reverted");
	cr_assert_eq(xattr(0, "pool", "value"), 3, "hosta saw hostb's outsider");
	/* A chmod that opens the file to everyone leaves the set read-only to
	 * other users: only semfs's own uid writes the mirror. */
	cr_assert_eq(chmod(at(1, "pool"), 0666), 0);
	struct semid_ds set;
	cr_assert_eq(semctl(semid, 0, IPC_STAT, &set), 0);
	cr_assert_eq(set.sem_perm.mode & 0777, 0644, "the mirror's mode after chmod 0666: 0%o",
		     set.sem_perm.mode & 0777);
	/* chmod and chown are the cluster's: hosta's file and set follow. */
	bool followed = false;
	for (int t = 0; t < 300 && !followed; t++) {
		followed = stat(at(0, "pool"), &st) == 0 && (st.st_mode & 0777) == 0666;
		usleep(10000);
	}
	cr_assert(followed, "hosta's mode after chmod 0666 on hostb: 0%o", st.st_mode & 0777);
	cr_assert_eq(chown(at(0, "pool"), 4321, 8765), 0, "%s", strerror(errno));
	followed = false;
	for (int t = 0; t < 300 && !followed; t++) {
		followed = stat(at(1, "pool"), &st) == 0 && st.st_uid == 4321 && st.st_gid == 8765;
		usleep(10000);
	}
	cr_assert(followed, "hostb's owner after chown on hosta: %u:%u", (unsigned)st.st_uid,
		  (unsigned)st.st_gid);
	cr_assert_eq(semctl(semid, 0, IPC_STAT, &set), 0);
	cr_assert(set.sem_perm.uid == 4321 && set.sem_perm.gid == 8765,
		  "hostb's mirror owner: %u:%u", (unsigned)set.sem_perm.uid,
		  (unsigned)set.sem_perm.gid);
	cr_assert_eq(chmod(at(0, "pool"), 0600), 0);
	followed = false;
	for (int t = 0; t < 300 && !followed; t++) {
		followed = stat(at(1, "pool"), &st) == 0 && (st.st_mode & 0777) == 0600;
		usleep(10000);
	}
	cr_assert(followed, "hostb's mode after chmod 0600 on hosta: 0%o", st.st_mode & 0777);
	/* rm on one host removes it everywhere; holders' units with it. */
	cr_assert_eq(write_text(0, "pool", "lock\n"), 0);
	cr_assert_eq(unlink(at(1, "pool")), 0);
	cr_assert(wait_exists(0, "pool", false, 3000), "pool outlived rm on hosta");
	cr_assert(wait_exists(1, "pool", false, 100));
	/* And the name is free again, on both. */
	cr_assert_eq(write_text(1, "pool", "lock\n"), 0);
	cr_assert(wait_value(0, "pool", 0, 3000));
	/* mkdir and rmdir are the cluster's too. */
	cr_assert_eq(mkdir(at(0, "jobs"), 0750), 0);
	cr_assert(wait_exists(1, "jobs", true, 3000), "jobs never showed on hostb");
	cr_assert_eq(stat(at(1, "jobs"), &st), 0);
	cr_assert(S_ISDIR(st.st_mode) && (st.st_mode & 0777) == 0750, "mode 0%o", st.st_mode);
	/* A mkdir'd directory's chmod is the cluster's too (seen within the
	 * second the kernel caches a directory's attributes). */
	cr_assert_eq(chmod(at(1, "jobs"), 0700), 0, "%s", strerror(errno));
	followed = false;
	for (int t = 0; t < 300 && !followed; t++) {
		followed = stat(at(0, "jobs"), &st) == 0 && (st.st_mode & 0777) == 0700;
		usleep(10000);
	}
	cr_assert(followed, "hosta's jobs after chmod 0700 on hostb: 0%o", st.st_mode & 0777);
	cr_assert_eq(mkdir(at(1, "jobs"), 0755), -1);
	cr_assert_eq(errno, EEXIST);
	cr_assert_eq(write_text(1, "jobs/nightly", "lock\n"), 0);
	cr_assert(wait_exists(0, "jobs/nightly", true, 3000));
	cr_assert_eq(rmdir(at(0, "jobs")), -1);
	cr_assert_eq(errno, ENOTEMPTY);
	cr_assert_eq(unlink(at(0, "jobs/nightly")), 0);
	cr_assert(wait_exists(1, "jobs/nightly", false, 3000));
	cr_assert(wait_exists(1, "jobs", true, 100), "an empty mkdir'd directory went");
	cr_assert_eq(rmdir(at(1, "jobs")), 0);
	cr_assert(wait_exists(0, "jobs", false, 3000), "rmdir on hostb left jobs on hosta");
	/* The limit as an attribute (setfattr) is a cluster write too. */
	cr_assert_eq(setxattr(at(0, "pool"), "user.semfs.limit", "5", 1, 0), 0, "%s",
		     strerror(errno));
	cr_assert_eq(xattr(0, "pool", "limit"), 5);
	for (int t = 0; t < 300 && xattr(1, "pool", "limit") != 5; t++)
		usleep(10000);
	cr_assert_eq(xattr(1, "pool", "limit"), 5, "hostb did not see the new limit");
	cr_assert(wait_value(1, "pool", 4, 3000), "hostb: %ld", xattr(1, "pool", "value"));
	stop_all();
}

Test(cluster, waiters_on_several_hosts_are_served_in_cluster_arrival_order)
{
	for (int i = 0; i < 3; i++)
		host_start(i, NULL);
	cr_assert_eq(write_text(0, "fifo", "lock\n"), 0);
	for (int i = 1; i < 3; i++)
		cr_assert(wait_exists(i, "fifo", true, 3000));
	char ledger[256];
	snprintf(ledger, sizeof(ledger), "%s/ledger", base);
	enum { WAITERS = 9 };
	pid_t pids[WAITERS];
	for (int w = 0; w < WAITERS; w++) {
		int i = (w + 1) % 3; /* hostb, hostc, hosta, hostb, ... */
		pid_t pid = fork();
		cr_assert_geq(pid, 0);
		if (pid == 0) {
			int r = write_text(i, "fifo", "lock\n");
			int fd = open(ledger, O_WRONLY | O_APPEND | O_CREAT, 0644);
			char line[16];
			int n = snprintf(line, sizeof(line), "%d\n", w);
			if (r || write(fd, line, (size_t)n) != n)
				_exit(1);
			close(fd);
			_exit(write_text(i, "fifo", "unlock\n"));
		}
		children[child_count++] = pids[w] = pid;
		/* Each is queued before the next is sent. */
		for (int t = 0; t < 300 && xattr(0, "fifo", "waiting") < w + 1; t++)
			usleep(10000);
		cr_assert_eq(xattr(0, "fifo", "waiting"), w + 1, "waiter %d not queued", w);
	}
	cr_assert_eq(write_text(0, "fifo", "unlock\n"), 0);
	for (int w = 0; w < WAITERS; w++)
		cr_assert_eq(wait_exit(pids[w], 10000), 0, "waiter %d", w);
	char *order = slurp(ledger);
	cr_assert_str_eq(order, "0\n1\n2\n3\n4\n5\n6\n7\n8\n", "served out of order:\n%s", order);
	free(order);
	for (int i = 0; i < 3; i++)
		cr_assert(wait_value(i, "fifo", 1, 3000), "%s: value", hosts[i].name);
	stop_all();
}

/* 200 acquire/release cycles on one limit-1 name from 3 hosts: a marker file
 * made with O_EXCL while holding proves no two holders; the fencing tokens
 * in the ledger only grow. */
Test(cluster, racing_cycles_on_three_hosts_never_show_two_holders)
{
	for (int i = 0; i < 3; i++)
		host_start(i, NULL);
	int fd0 = dial(0);
	char reply[256];
	ask(fd0, "create race 1", reply, sizeof(reply));
	cr_assert_str_eq(reply, "ok limit=1");
	close(fd0);
	for (int i = 1; i < 3; i++)
		cr_assert(wait_exists(i, "race", true, 3000));
	char marker[256], ledger[256];
	snprintf(marker, sizeof(marker), "%s/holder", base);
	snprintf(ledger, sizeof(ledger), "%s/tokens", base);
	enum { WORKERS = 6, CYCLES = 34 }; /* 204 cycles */
	pid_t pids[WORKERS];
	for (int w = 0; w < WORKERS; w++) {
		pid_t pid = fork();
		cr_assert_geq(pid, 0);
		if (pid == 0) {
			int fd = dial(w % 3);
			for (int n = 0; n < CYCLES; n++) {
				char answer[256];
				ask(fd, "acquire race", answer, sizeof(answer));
				long long token;
				if (sscanf(answer, "ok token=%lld", &token) != 1)
					_exit(10);
				int m = open(marker, O_CREAT | O_EXCL | O_WRONLY, 0644);
				if (m < 0)
					_exit(11); /* two holders */
				close(m);
				int l = open(ledger, O_WRONLY | O_APPEND | O_CREAT, 0644);
				dprintf(l, "%lld\n", token);
				close(l);
				unlink(marker);
				ask(fd, "release race", answer, sizeof(answer));
				if (strcmp(answer, "ok") != 0)
					_exit(12);
			}
			_exit(0);
		}
		children[child_count++] = pids[w] = pid;
	}
	for (int w = 0; w < WORKERS; w++)
		cr_assert_eq(wait_exit(pids[w], 90000), 0,
			     "worker %d (10: acquire, 11: two "
			     "holders, 12: release)",
			     w);
	char *text = slurp(ledger);
	long long previous = 0, token;
	int count = 0;
	for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
		token = atoll(line);
		cr_assert_gt(token, previous, "token %lld after %lld", token, previous);
		previous = token;
		count++;
	}
	free(text);
	cr_assert_eq(count, WORKERS * CYCLES);
	for (int i = 0; i < 3; i++)
		cr_assert(wait_value(i, "race", 1, 3000), "%s: value %ld", hosts[i].name,
			  xattr(i, "race", "value"));
	stop_all();
}

Test(cluster, relax_limit_and_set_reach_waiters_on_every_host)
{
	for (int i = 0; i < 3; i++)
		host_start(i, NULL);
	cr_assert_eq(write_text(0, "gate", "lock\n"), 0);
	for (int i = 1; i < 3; i++)
		cr_assert(wait_exists(i, "gate", true, 3000));
	pid_t b = spawn_write(1, "gate", "lock\n"), c = spawn_write(2, "gate", "lock\n");
	for (int t = 0; t < 300 && xattr(0, "gate", "waiting") < 2; t++)
		usleep(10000);
	cr_assert_eq(xattr(0, "gate", "waiting"), 2);
	cr_assert_eq(write_text(0, "gate", "relax\n"), 0);
	cr_assert_eq(wait_exit(b, 5000), 0);
	cr_assert_eq(wait_exit(c, 5000), 0);
	cr_assert(wait_value(2, "gate", 0, 3000), "relax took or gave a unit");
	expect_journal(1, "gate", "relaxed");
	/* limit with waiters: the new units go to them. */
	b = spawn_write(1, "gate", "lock\n");
	c = spawn_write(2, "gate", "lock\n");
	for (int t = 0; t < 300 && xattr(0, "gate", "waiting") < 2; t++)
		usleep(10000);
	cr_assert_eq(write_text(0, "gate", "limit 3\n"), 0);
	cr_assert_eq(wait_exit(b, 5000), 0);
	cr_assert_eq(wait_exit(c, 5000), 0);
	for (int i = 0; i < 3; i++)
		cr_assert(wait_value(i, "gate", 0, 3000));
	cr_assert_eq(write_text(1, "gate", "limit 2\n"), EBUSY, "a limit below the units in use");
	/* set with a waiter: the unit it frees goes to the waiter. */
	b = spawn_write(1, "gate", "lock\n");
	for (int t = 0; t < 300 && xattr(0, "gate", "waiting") < 1; t++)
		usleep(10000);
	cr_assert_eq(write_text(2, "gate", "set 1\n"), 0);
	cr_assert_eq(wait_exit(b, 5000), 0);
	for (int i = 0; i < 3; i++)
		cr_assert(wait_value(i, "gate", 0, 3000), "%s: %ld", hosts[i].name,
			  xattr(i, "gate", "value"));
	cr_assert_eq(write_text(2, "gate", "set 3\n"), 0);
	for (int i = 0; i < 3; i++)
		cr_assert(wait_value(i, "gate", 3, 3000));
	stop_all();
}

Test(cluster, a_killed_host_returns_its_acquire_units_and_keeps_its_locks)
{
	host_start(0, NULL);
	host_start(1, NULL);
	int fd = dial(0);
	char reply[256];
	ask(fd, "create pool 3", reply, sizeof(reply));
	cr_assert_str_eq(reply, "ok limit=3");
	ask(fd, "acquire pool", reply, sizeof(reply));
	cr_assert(strncmp(reply, "ok token=", 9) == 0, "%s", reply);
	cr_assert_eq(write_text(0, "pool", "lock\n"), 0);
	cr_assert(wait_value(1, "pool", 1, 3000));
	double killed = now();
	host_stop(0, SIGKILL);
	cr_assert(wait_value(1, "pool", 2, 8000), "the acquire unit never came back: %ld",
		  xattr(1, "pool", "value"));
	double back = now() - killed;
	cr_assert_lt(back, 3 + 4, "back after %.1f s (lease_ttl 3 s + an election)", back);
	/* The lock unit outlives its host: still out, a second later too. */
	usleep(1000000);
	cr_assert_eq(xattr(1, "pool", "value"), 2);
	expect_journal(1, "pool", "release");
	close(fd);
	/* hosta comes back: same state; its lock can be unlocked anywhere. */
	int status;
	cr_assert(host_launch(0, &status));
	cr_assert(wait_value(0, "pool", 2, 3000));
	cr_assert_eq(write_text(1, "pool", "unlock\n"), 0);
	cr_assert(wait_value(0, "pool", 3, 3000));
	stop_all();
}

/* Revoke host i's lease in etcd: what etcd 3.4 may do by itself after a
 * leader change. */
static void revoke_lease(int i)
{
	char path[300], body[128], command[512];
	snprintf(path, sizeof(path), "%s/state/cluster.lease", hosts[i].dir);
	char *id = slurp(path);
	id[strcspn(id, "\n")] = '\0';
	cr_assert(id[0], "no lease file");
	snprintf(body, sizeof(body), "{\"ID\":\"%s\"}", id);
	free(id);
	snprintf(command, sizeof(command), "curl -s -X POST %s/v3/lease/revoke -d '%s' >/dev/null",
		 cluster.endpoints[0], body);
	cr_assert_eq(system(command), 0);
}

Test(cluster, a_revoked_lease_is_lease_lost_and_the_host_carries_on)
{
	host_start(0, NULL);
	host_start(1, NULL);
	int fd = dial(0);
	char reply[256];
	ask(fd, "create pool 3", reply, sizeof(reply));
	ask(fd, "acquire pool", reply, sizeof(reply));
	cr_assert(strncmp(reply, "ok token=", 9) == 0, "%s", reply);
	/* An open file holds one too. */
	int file = open(at(0, "pool"), O_RDWR);
	cr_assert_geq(file, 0);
	cr_assert_eq(write(file, "acquire\n", 8), 8);
	cr_assert(wait_value(1, "pool", 1, 3000));
	char answer[512];
	revoke_lease(0);
	cr_assert(wait_value(1, "pool", 3, 3000), "the lost lease's units did not come back");
	/* hosta notices at its next renewal, says so, and takes a new lease. */
	for (int t = 0; t < 300; t++) {
		char *text = slurp(at(0, "pool"));
		bool said = strstr(text, "lease-lost") != NULL;
		free(text);
		if (said)
			break;
		usleep(10000);
	}
	expect_journal(0, "pool", "lease-lost");
	/* ... and its metrics too, within the stats writer's second. */
	char prom[300];
	snprintf(prom, sizeof(prom), "%s/stats/semfs.prom", hosts[0].dir);
	bool counted = false;
	for (int t = 0; t < 30 && !counted; t++) {
		char *text = slurp(prom);
		counted = strstr(text, "\nsemfs_cluster_lease_lost_total 1\n") != NULL &&
			  strstr(text, "\nsemfs_cluster_endpoints 3\n") != NULL;
		free(text);
		if (!counted)
			usleep(100000);
	}
	char *text = slurp(prom);
	cr_assert(counted, "semfs.prom:\n%s", text);
	double age = -1;
	const char *line = strstr(text, "\nsemfs_cluster_lease_age_seconds ");
	cr_assert(line && sscanf(line, "\nsemfs_cluster_lease_age_seconds %lf", &age) == 1);
	cr_assert(age >= 0 && age < 3, "lease age %.3f s with lease_ttl 3", age);
	free(text);
	/* The holders are told: the connection gets an error and a close... */
	struct pollfd told = {.fd = fd, .events = POLLIN};
	cr_assert_eq(poll(&told, 1, 3000), 1, "the connection was not told");
	ssize_t n = read(fd, reply, sizeof(reply) - 1);
	reply[n > 0 ? n : 0] = '\0';
	cr_assert(strncmp(reply, "err EIO lease-lost", 18) == 0, "%s", reply);
	cr_assert_eq(read(fd, answer, sizeof(answer)), 0, "the connection stayed open");
	close(fd);
	/* ... the open file EIO and POLLERR, until it is closed. */
	struct pollfd poller = {.fd = file, .events = POLLIN};
	cr_assert_eq(poll(&poller, 1, 2000), 1);
	cr_assert(poller.revents & POLLERR, "revents 0x%x", poller.revents);
	cr_assert_eq(pread(file, answer, sizeof(answer), 0), -1);
	cr_assert_eq(errno, EIO);
	close(file);
	/* The host carries on with its new lease. */
	fd = dial(0);
	ask(fd, "acquire pool 2", reply, sizeof(reply));
	cr_assert(strncmp(reply, "ok token=", 9) == 0, "after lease-lost: %s", reply);
	cr_assert(wait_value(1, "pool", 2, 3000));
	close(fd);
	stop_all();
}

Test(cluster, no_majority_is_eio_never_a_grant_and_then_it_recovers)
{
	host_start(0, NULL);
	host_start(1, NULL);
	cr_assert_eq(write_text(0, "db", "lock\n"), 0);
	cr_assert(wait_exists(1, "db", true, 3000));
	int fd = dial(1);
	char reply[256];
	ask(fd, "create net 1", reply, sizeof(reply));
	cr_assert_str_eq(reply, "ok limit=1");
	int on_a = dial(0); /* an undefined name, held on hosta */
	cr_assert_eq(write(on_a, "acquire:blind|", 14), 14);
	cr_assert_str_eq(ace_reply(on_a, 5000), "locked|");
	cr_assert(wait_exists(1, "blind", true, 3000));
	etcd_cluster_kill(&cluster, 0);
	etcd_cluster_kill(&cluster, 1);
	double start = now();
	int r = write_text(1, "db", "lock 5\n");
	cr_assert_eq(r, EIO, "without a majority: %s", strerror(r));
	cr_assert_lt(now() - start, 5, "EIO after %.1f s", now() - start);
	ask(fd, "lock net", reply, sizeof(reply));
	cr_assert(strncmp(reply, "err EIO cluster unreachable", 27) == 0, "%s", reply);
	close(fd);
	/* A read still opens (it shows what this host knows); the open mark of
	 * the undefined name could not be written, and the log says so. */
	int blind = open(at(1, "blind"), O_RDONLY);
	cr_assert_geq(blind, 0, "open without a majority: %s", strerror(errno));
	cr_assert_gt(count_in_log(1, "blind may be open here without its open mark"), 0, "%s",
		     slurp(hosts[1].log));
	cr_assert(etcd_cluster_restart(&cluster, 0));
	cr_assert(etcd_cluster_restart(&cluster, 1));
	/* Its close removes whatever mark there may be: the name goes once
	 * idle, on both hosts. */
	release_on_a(on_a);
	close(blind);
	for (int i = 0; i < 2; i++)
		cr_assert(wait_exists(i, "blind", false, 8000), "%s: the idle name stays",
			  hosts[i].name);
	/* Back: hosta's unit is still out, and the cluster answers again. */
	for (int t = 0; t < 100 && write_text(1, "db", "lock 0\n") == EIO; t++)
		usleep(100000);
	cr_assert_eq(write_text(1, "db", "lock 0\n"), EAGAIN);
	cr_assert_eq(write_text(0, "db", "unlock\n"), 0);
	cr_assert_eq(write_text(1, "db", "lock 5\n"), 0);
	stop_all();
}

Test(cluster, one_member_killed_operations_go_on_after_the_election)
{
	host_start(0, NULL);
	host_start(1, NULL);
	cr_assert_eq(write_text(0, "db", "lock\n"), 0);
	int leader = etcd_cluster_leader(&cluster);
	cr_assert_geq(leader, 0);
	etcd_cluster_kill(&cluster, leader);
	double start = now();
	int r = EIO;
	bool unknown = false;
	/* During the election a request may fail with EIO, its outcome unknown
	 * (never repeated behind the caller's back): then the next unlock says
	 * EOVERFLOW if the first one had gone through. */
	for (int t = 0; t < 50 && (r = write_text(0, "db", "unlock\n")) == EIO; t++) {
		unknown = true;
		usleep(100000);
	}
	cr_assert(r == 0 || (unknown && r == EOVERFLOW), "unlock after the leader died: %s",
		  strerror(r));
	fprintf(stderr, "leader kill: unlock done %.2f s later\n", now() - start);
	cr_assert_eq(write_text(1, "db", "lock 5\n"), 0);
	cr_assert(wait_value(0, "db", 0, 3000));
	stop_all();
}

Test(cluster, a_semfs_whose_cluster_does_not_answer_fails_with_the_reason)
{
	char endpoint[64];
	snprintf(endpoint, sizeof(endpoint), "http://127.0.0.1:%u", free_port());
	struct host *h = &hosts[0];
	host_paths(0);
	FILE *config = fopen(h->config, "we");
	fprintf(config,
		"[semfs]\nstate_dir = %s/state\n[service_network_semaphore]\nbind_port = %u\n"
		"[cluster]\nendpoints = %s\nrequest_timeout = 0.5\n",
		h->dir, free_port(), endpoint);
	fclose(config);
	int status = 0;
	cr_assert_not(host_launch(0, &status), "semfs mounted without its cluster");
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 1, "status 0x%x", status);
	char *log = slurp(h->log);
	cr_assert(strstr(log, "cluster unreachable"), "%s", log);
	free(log);
	stop_all();
}

/* etcd over TLS with client certificates (--client-cert-auth), the way a
 * production cluster runs: a host with ca_file, cert_file and key_file
 * works; one without its client certificate, or trusting another CA, does
 * not start, and says why in one line. So does a host whose etcd has a
 * server certificate without clientAuth (etcd issue 9785: the trap of
 * etcd's JSON gateway), with the fix in the sentence. */
Test(cluster, a_host_reaches_etcd_over_tls_with_its_client_certificate)
{
	char tls[256], extra[1024];
	snprintf(tls, sizeof(tls), "%s/tls", base);
	cr_assert_eq(mkdir(tls, 0700), 0);
	cr_assert(etcd_tls_files(tls), "openssl could not make the certificates");
	snprintf(extra, sizeof(extra),
		 "ca_file = %s/ca.pem\ncert_file = %s/client.pem\nkey_file = %s/client-key.pem\n",
		 tls, tls, tls);
	int status = 0;
	cr_assert(etcd_cluster_start_tls(&secure, 1, tls, "server-only"),
		  "etcd with TLS did not start");
	host_configure(0, secure.endpoint_list, extra);
	cr_assert_not(host_launch(0, &status), "hosta mounted through a gateway that cannot work");
	char *log = slurp(hosts[0].log);
	cr_assert(strstr(log, "cluster unreachable") && strstr(log, "extendedKeyUsage clientAuth"),
		  "%s", log);
	cr_log_info("server certificate without clientAuth: %s",
		    strstr(log, "cluster unreachable"));
	free(log);
	unlink(hosts[0].log);
	etcd_cluster_stop(&secure);
	memset(&secure, 0, sizeof(secure));
	cr_assert(etcd_cluster_start_tls(&secure, 1, tls, "server"), "etcd with TLS did not start");
	host_configure(0, secure.endpoint_list, extra);
	cr_assert(host_launch(0, &status), "hosta did not mount over TLS (status 0x%x):\n%s",
		  status, slurp(hosts[0].log));
	cr_assert_eq(write_text(0, "tls", "lock\n"), 0, "lock over TLS: %s", strerror(errno));
	cr_assert_eq(xattr(0, "tls", "value"), 0);
	cr_assert_eq(getval(0, "tls"), 0, "the mirror set");
	cr_assert(host_stop(0, SIGTERM));
	const char *const refused[] = {"no client certificate", "another CA"};
	for (size_t k = 0; k < 2; k++) {
		if (k == 0)
			snprintf(extra, sizeof(extra), "ca_file = %s/ca.pem\n", tls);
		else
			snprintf(extra, sizeof(extra),
				 "ca_file = %s/other-ca.pem\ncert_file = %s/client.pem\n"
				 "key_file = %s/client-key.pem\n",
				 tls, tls, tls);
		host_configure(1, secure.endpoint_list, extra);
		cr_assert_not(host_launch(1, &status), "%s: hostb mounted", refused[k]);
		cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 1, "%s: status 0x%x",
			  refused[k], status);
		log = slurp(hosts[1].log);
		cr_assert(strstr(log, "cluster unreachable") &&
			      strstr(log, k == 0 ? "give this host cert_file and key_file"
						 : "certificate"),
			  "%s: %s", refused[k], log);
		cr_log_info("%s: %s", refused[k], strstr(log, "cluster unreachable"));
		free(log);
		unlink(hosts[1].log);
	}
	stop_all();
}

Test(cluster, a_paused_etcd_leader_delays_but_loses_nothing)
{
	host_start(0, NULL);
	host_start(1, NULL);
	cr_assert_eq(write_text(0, "db", "lock\n"), 0);
	cr_assert(wait_exists(1, "db", true, 3000));
	pid_t waiter = spawn_write(1, "db", "lock 20\n");
	for (int t = 0; t < 300 && xattr(0, "db", "waiting") < 1; t++)
		usleep(10000);
	int leader = etcd_cluster_leader(&cluster);
	cr_assert_geq(leader, 0);
	etcd_cluster_pause(&cluster, leader, true);
	double start = now();
	int r = EIO;
	bool unknown = false;
	for (int t = 0; t < 100 && (r = write_text(0, "db", "unlock\n")) == EIO; t++) {
		unknown = true;
		usleep(100000);
	}
	cr_assert(r == 0 || (unknown && r == EOVERFLOW), "unlock with the leader paused: %s",
		  strerror(r));
	cr_assert_eq(wait_exit(waiter, 15000), 0, "hostb's waiter never got the unit");
	fprintf(stderr, "leader SIGSTOP: the waiter on hostb held %.2f s after the unlock began\n",
		now() - start);
	etcd_cluster_pause(&cluster, leader, false);
	/* Nothing lost, nothing doubled: one unit out, on both hosts. */
	for (int i = 0; i < 2; i++)
		cr_assert(wait_value(i, "db", 0, 5000),
			  "%s: value %ld (GETVAL %d), waiting %ld after the leader's pause; the "
			  "unlock said %s%s",
			  hosts[i].name, xattr(i, "db", "value"), getval(i, "db"),
			  xattr(i, "db", "waiting"), strerror(r), unknown ? " after EIO" : "");
	cr_assert_eq(write_text(1, "db", "unlock\n"), 0);
	cr_assert(wait_value(0, "db", 1, 5000));
	cr_assert_eq(write_text(0, "db", "unlock\n"), EOVERFLOW);
	stop_all();
}

/* The member the hosts talk to first stops (SIGSTOP): its watch stream
 * stays open and silent. The hosts notice the lag, move their calls and
 * their watch to another member, and go on. */
Test(cluster, a_paused_member_that_the_hosts_watch_is_passed_over)
{
	host_start_listed(0, NULL);
	host_start_listed(1, NULL);
	cr_assert_eq(write_text(0, "db", "lock\n"), 0);
	cr_assert(wait_exists(1, "db", true, 3000));
	pid_t waiter = spawn_write(1, "db", "lock 20\n");
	for (int t = 0; t < 300 && xattr(0, "db", "waiting") < 1; t++)
		usleep(10000);
	etcd_cluster_pause(&cluster, 0, true); /* endpoints list it first */
	int r = EIO;
	bool unknown = false;
	for (int t = 0; t < 100 && (r = write_text(0, "db", "unlock\n")) == EIO; t++) {
		unknown = true;
		usleep(100000);
	}
	cr_assert(r == 0 || (unknown && r == EOVERFLOW), "unlock: %s", strerror(r));
	int status = wait_exit(waiter, 15000);
	char *said = slurp(hosts[1].log);
	cr_assert_eq(status, 0, "hostb's waiter: %s\n%s",
		     status < 0 ? "still waiting" : strerror(status), said);
	free(said);
	cr_assert(wait_value(0, "db", 0, 5000), "hosta: %ld", xattr(0, "db", "value"));
	char *log = slurp(hosts[1].log);
	/* Moved when its lag showed, or with its calls (a keep-alive that the
	 * paused member never answered). */
	cr_assert(strstr(log, "reopening it on") || strstr(log, "calls and the watch go to"),
		  "hostb's watch did not move:\n%s", log);
	free(log);
	etcd_cluster_pause(&cluster, 0, false);
	stop_all();
}

/* A host whose watch fell behind etcd's compaction reads everything again
 * (CLUSTER.md, trap 4): hostb's watch is on a member that is paused while
 * hosta, on the other two, changes things and etcd is compacted past them;
 * hostb's watch, reopened elsewhere from where it was, is refused, and hostb
 * rebuilds its replica from a full read. */
Test(cluster, a_watch_behind_a_compaction_reads_everything_again)
{
	int leader = etcd_cluster_leader(&cluster);
	cr_assert_geq(leader, 0, "no etcd leader");
	int behind = (leader + 1) % 3, other = (leader + 2) % 3; /* a follower pauses */
	char hosta_endpoints[200], hostb_endpoints[300];
	snprintf(hosta_endpoints, sizeof(hosta_endpoints), "%s,%s", cluster.endpoints[leader],
		 cluster.endpoints[other]);
	snprintf(hostb_endpoints, sizeof(hostb_endpoints), "%s,%s,%s", cluster.endpoints[behind],
		 cluster.endpoints[leader], cluster.endpoints[other]);
	host_start(0, hosta_endpoints);
	host_start_listed(1, hostb_endpoints);
	cr_assert_eq(write_text(0, "db", "lock\n"), 0);
	cr_assert(wait_value(1, "db", 0, 3000), "hostb: %ld", xattr(1, "db", "value"));

	etcd_cluster_pause(&cluster, behind, true);
	cr_assert_eq(write_text(0, "db", "unlock\n"), 0);
	cr_assert_eq(write_text(0, "later", "lock\n"), 0);
	long token = xattr(0, "later", "token"); /* an etcd revision */
	cr_assert_gt(token, 0);
	char body[80];
	snprintf(body, sizeof(body), "{\"revision\":\"%ld\",\"physical\":true}", token);
	cr_assert_eq(etcd_cluster_post(&cluster, "/v3/kv/compaction", body), 200);

	bool caught_up = wait_exists(1, "later", true, 15000) && wait_value(1, "later", 0, 5000) &&
			 wait_value(1, "db", 1, 5000);
	char *log = slurp(hosts[1].log);
	cr_assert(caught_up, "hostb: later %ld, db %ld\n%s", xattr(1, "later", "value"),
		  xattr(1, "db", "value"), log);
	cr_assert(strstr(log, "past this host's watch"), "no compaction seen:\n%s", log);
	cr_assert(strstr(log, "read again at revision"), "no reload:\n%s", log);
	free(log);
	/* And it goes on: a unit hostb takes is one hosta sees. */
	cr_assert_eq(write_text(1, "db", "lock\n"), 0);
	cr_assert(wait_value(0, "db", 0, 3000), "hosta: %ld", xattr(0, "db", "value"));
	etcd_cluster_pause(&cluster, behind, false);
	stop_all();
}

/* etcd is often shared: another application writes its own keys outside the
 * prefix. Its revisions are etcd's too, but the watch never brings them:
 * nothing may wait for them (a refused create, a read barrier, a try-lock
 * that lost, an unlock of nothing), and the watch is not taken for stalled. */
Test(cluster, another_etcd_users_writes_stall_nothing)
{
	host_start(0, NULL);
	int fd = dial(0);
	char reply[256];
	ask(fd, "create x 1", reply, sizeof(reply));
	cr_assert(strncmp(reply, "ok", 2) == 0, "%s", reply);
	const char *put = "{\"key\":\"L290aGVyLWFwcC9r\",\"value\":\"dg==\"}";
	for (int round = 0; round < 3; round++) {
		for (int n = 0; n < 5; n++)
			cr_assert_eq(etcd_cluster_post(&cluster, "/v3/kv/put", put), 200);
		ask(fd, "create x 1", reply, sizeof(reply));
		cr_assert(strncmp(reply, "err EEXIST", 10) == 0, "round %d: create: %s", round,
			  reply);
		for (int n = 0; n < 5; n++)
			cr_assert_eq(etcd_cluster_post(&cluster, "/v3/kv/put", put), 200);
		char *journal = slurp(at(0, "x")); /* opened for reading: a barrier */
		cr_assert(strstr(journal, "create"), "round %d: %s", round, journal);
		free(journal);
		ask(fd, "lock x", reply, sizeof(reply));
		cr_assert(strncmp(reply, "ok", 2) == 0, "round %d: lock: %s", round, reply);
		for (int n = 0; n < 5; n++)
			cr_assert_eq(etcd_cluster_post(&cluster, "/v3/kv/put", put), 200);
		ask(fd, "lock x 0", reply, sizeof(reply));
		cr_assert(strncmp(reply, "err EAGAIN", 10) == 0, "round %d: try-lock: %s", round,
			  reply);
		ask(fd, "unlock x", reply, sizeof(reply));
		cr_assert_str_eq(reply, "ok", "round %d", round);
		for (int n = 0; n < 5; n++)
			cr_assert_eq(etcd_cluster_post(&cluster, "/v3/kv/put", put), 200);
		ask(fd, "unlock x", reply, sizeof(reply));
		cr_assert(strncmp(reply, "err EOVERFLOW", 13) == 0, "round %d: unlock: %s", round,
			  reply);
	}
	close(fd);
	/* Idle for more than a request_timeout after the last foreign write. */
	usleep(2500000);
	char *log = slurp(hosts[0].log);
	cr_assert_null(strstr(log, "reopening"), "the watch was taken for stalled:\n%s", log);
	free(log);
	stop_all();
}

/* ACE's dialect on two hosts: the same semaphore, one queue. An unknown
 * name is made cluster-wide with limit 1; a client on hostb waits (with
 * heartbeats) while hosta's client holds it, gets it at hosta's release,
 * and closing its connection gives it back on every host. Idle, the name
 * then goes on every host, SysV sets included, as ACE's undefined names do
 * (not before: hostb's holder kept it when hosta's client left). */
Test(cluster, ace_clients_on_two_hosts_share_one_semaphore)
{
	host_start(0, NULL);
	host_start(1, NULL);
	int on_a = dial(0), on_b = dial(1);
	cr_assert_eq(write(on_a, "acquire:job|", 12), 12);
	cr_assert_str_eq(ace_reply(on_a, 5000), "locked|");
	cr_assert(wait_exists(1, "job", true, 3000), "job never showed on hostb");
	cr_assert_eq(xattr(1, "job", "limit"), 1, "an undefined name: limit 1");
	cr_assert(wait_value(1, "job", 0, 3000));
	cr_assert_eq(write(on_b, "acquire:job|", 12), 12);
	cr_assert_str_eq(ace_reply(on_b, 5000), "wait|", "hostb's client was not kept waiting");
	for (int t = 0; t < 300 && xattr(0, "job", "waiting") < 1; t++)
		usleep(10000);
	cr_assert_eq(xattr(0, "job", "waiting"), 1, "hosta does not see hostb's waiter");
	cr_assert_eq(write(on_a, "release|", 8), 8);
	cr_assert_str_eq(ace_reply(on_a, 5000), "ok|");
	close(on_a);
	const char *heard = "";
	for (int beats = 0; beats < 10 && strcmp(heard = ace_reply(on_b, 5000), "wait|") == 0;
	     beats++)
		;
	cr_assert_str_eq(heard, "locked|", "hostb's client after hosta's release");
	if (!wait_value(0, "job", 0, 3000)) {
		char *journal = slurp(at(0, "job"));
		cr_assert(false, "hosta: value %ld, GETVAL %d:\n%s", xattr(0, "job", "value"),
			  getval(0, "job"), journal);
	}
	expect_journal(0, "job", "@hostb");
	long keys[2] = {xattr(0, "job", "key"), xattr(1, "job", "key")};
	/* Closing the connection (no release|) gives the unit back everywhere:
	 * value 1, or already gone. */
	close(on_b);
	for (int i = 0; i < 2; i++) {
		bool home = false;
		for (int t = 0; t < 500 && !home; t++) {
			long value = xattr(i, "job", "value");
			home = value == 1 || (value < 0 && errno == ENOENT);
			usleep(10000);
		}
		cr_assert(home, "%s: value %ld", hosts[i].name, xattr(i, "job", "value"));
	}
	for (int i = 0; i < 2; i++) {
		cr_assert(wait_exists(i, "job", false, 5000), "%s: the idle undefined name stays",
			  hosts[i].name);
		cr_assert_eq(semget((key_t)keys[i], 0, 0), -1, "%s: its SysV set stays",
			     hosts[i].name);
	}
	char *logs[2] = {slurp(hosts[0].log), slurp(hosts[1].log)};
	cr_assert(strstr(logs[0], "undefined semaphore job idle: removing it on every host") ||
		      strstr(logs[1], "undefined semaphore job idle: removing it on every host"),
		  "%s\n%s", logs[0], logs[1]);
	free(logs[0]);
	free(logs[1]);
	/* Back at once, it is made again. */
	on_a = dial(0);
	cr_assert_eq(write(on_a, "acquire:job|", 12), 12);
	cr_assert_str_eq(ace_reply(on_a, 5000), "locked|");
	cr_assert(wait_value(1, "job", 0, 3000), "hostb: %ld", xattr(1, "job", "value"));
	close(on_a);
	stop_all();
}

/* An ACE waiter whose undefined name is removed under it (here by `delete`
 * on another host; in the wild, by the idle reaping of a host that had not
 * seen it come) is queued on the name made again, not disconnected. */
Test(cluster, an_ace_waiter_outlives_the_removal_of_its_undefined_name)
{
	host_start(0, NULL);
	host_start(1, NULL);
	int on_a = dial(0), on_b = dial(1), admin = dial(0);
	cr_assert_eq(write(on_a, "acquire:t|", 10), 10);
	cr_assert_str_eq(ace_reply(on_a, 5000), "locked|");
	cr_assert(wait_exists(1, "t", true, 3000));
	cr_assert_eq(write(on_b, "acquire:t|", 10), 10);
	cr_assert_str_eq(ace_reply(on_b, 5000), "wait|");
	char reply[256];
	ask(admin, "delete t", reply, sizeof(reply));
	cr_assert(strncmp(reply, "ok", 2) == 0, "delete t: %s", reply);
	const char *heard = "";
	for (int beats = 0; beats < 10 && strcmp(heard = ace_reply(on_b, 5000), "wait|") == 0;
	     beats++)
		;
	cr_assert_str_eq(heard, "locked|", "hostb's waiter after the removal");
	cr_assert(wait_value(0, "t", 0, 3000), "hosta: %ld", xattr(0, "t", "value"));
	close(on_a);
	close(on_b);
	close(admin);
	stop_all();
}

/* The real race behind that: hostb's client comes for an undefined name in
 * the instant hosta reaps it — its request is sent as soon as hosta logs
 * that it asks etcd to remove the name. Whichever wins in etcd, hostb's
 * client gets the unit: the reap fails on its entry, or its request fails
 * with EIDRM and the name is made again. */
Test(cluster, ace_clients_racing_the_reap_of_an_undefined_name_always_get_it)
{
	const char *reaping = "undefined semaphore race idle: removing it on every host";
	host_start(0, NULL);
	host_start(1, NULL);
	for (int round = 0; round < 8; round++) {
		int on_a = dial(0);
		cr_assert_eq(write(on_a, "acquire:race|", 13), 13);
		cr_assert_str_eq(ace_reply(on_a, 5000), "locked|", "round %d, hosta", round);
		cr_assert(wait_exists(1, "race", true, 3000), "round %d: not on hostb", round);
		int on_b = dial(1), reaps = count_in_log(0, reaping);
		cr_assert_eq(write(on_a, "release|", 8), 8);
		cr_assert_str_eq(ace_reply(on_a, 5000), "ok|");
		close(on_a);
		for (int t = 0; t < 3000 && count_in_log(0, reaping) == reaps; t++)
			usleep(1000);
		cr_assert_gt(count_in_log(0, reaping), reaps, "round %d: hosta never reaped",
			     round);
		usleep((useconds_t)round * 500); /* 0 .. 3.5 ms into the reap */
		cr_assert_eq(write(on_b, "acquire:race|", 13), 13);
		const char *heard = "";
		for (int beats = 0;
		     beats < 10 && strcmp(heard = ace_reply(on_b, 5000), "wait|") == 0; beats++)
			;
		cr_assert_str_eq(heard, "locked|",
				 "round %d: hostb's client after the reap heard "
				 "'%s':\n%s",
				 round, heard, slurp(hosts[1].log));
		cr_assert_eq(write(on_b, "release|", 8), 8);
		cr_assert_str_eq(ace_reply(on_b, 5000), "ok|", "round %d: hostb's release", round);
		close(on_b);
		for (int i = 0; i < 2; i++)
			cr_assert(wait_exists(i, "race", false, 5000),
				  "round %d, %s: the idle name stays", round, hosts[i].name);
	}
	cr_log_info("of 8 rounds: %d reaps lost to the client's entry, %d clients made it again",
		    count_in_log(0, "undefined semaphore race is in use again"),
		    count_in_log(1, "was removed on another host as this client came"));
	stop_all();
}

/* A file open on another host keeps an idle undefined name, as a file open
 * on one host does: hosta's ACE client lets go while hostb has the name
 * open (a `tail -f`); it stays on both hosts past the grace period, and
 * goes on both once hostb closes it. A file opened as the name went fails
 * with ENOENT rather than keep a name no host has. */
Test(cluster, a_file_open_on_another_host_keeps_an_idle_undefined_name)
{
	int on_a;
	int fd = held_on_a_open_on_b("watched", &on_a);
	release_on_a(on_a);
	cr_assert(wait_value(0, "watched", 1, 3000), "hosta: %ld", xattr(0, "watched", "value"));
	usleep(1500000); /* three grace periods */
	for (int i = 0; i < 2; i++)
		cr_assert(wait_exists(i, "watched", true, 0), "%s: reaped while open on hostb:\n%s",
			  hosts[i].name, slurp(hosts[0].log));
	cr_assert_gt(count_in_log(0, "undefined semaphore watched is open on another host: kept"),
		     0, "hosta never tried: %s", slurp(hosts[0].log));
	/* The open file still reads the journal (hosta's events included). */
	char text[4096];
	ssize_t n = read(fd, text, sizeof(text) - 1);
	cr_assert_gt(n, 0, "hostb: read: %s", strerror(errno));
	text[n] = '\0';
	cr_assert(strstr(text, "@hosta"), "hostb's journal: %s", text);
	close(fd);
	for (int i = 0; i < 2; i++)
		cr_assert(wait_exists(i, "watched", false, 5000),
			  "%s: the idle name stays after hostb closed it", hosts[i].name);
	cr_assert_eq(count_in_log(0, "in use again") + count_in_log(1, "in use again"), 0,
		     "a reap lost to another host's was told as in use");
	stop_all();
}

/* The mark lives under the host's lease: a host that dies with the name
 * open keeps it only until its lease ends (lease_ttl 3 s), then a living
 * host removes it. */
Test(cluster, a_dead_hosts_open_file_keeps_an_undefined_name_only_for_its_lease)
{
	int on_a;
	int fd = held_on_a_open_on_b("orphan", &on_a);
	release_on_a(on_a);
	usleep(1000000);
	cr_assert(wait_exists(0, "orphan", true, 0), "hosta reaped it while open on hostb");
	double killed = now();
	host_stop(1, SIGKILL);
	close(fd);
	cr_assert(wait_exists(0, "orphan", false, 9000),
		  "hosta: the name of a dead host's open file stays: %s", slurp(hosts[0].log));
	cr_log_info("gone %.1f s after hostb was killed (lease_ttl 3 s)", now() - killed);
	stop_all();
}

/* lease-lost takes a host's open marks with its lease: it marks every
 * undefined name still open there again under the new one, so the name
 * stays until the file is closed. */
Test(cluster, open_marks_come_back_with_a_new_lease)
{
	int on_a;
	int fd = held_on_a_open_on_b("again", &on_a);
	int leases = count_in_log(1, "has a new lease");
	revoke_lease(1);
	for (int t = 0; t < 800 && count_in_log(1, "has a new lease") == leases; t++)
		usleep(10000);
	cr_assert_gt(count_in_log(1, "has a new lease"), leases, "hostb: no new lease: %s",
		     slurp(hosts[1].log));
	usleep(500000); /* the monitor marks again within a quarter second */
	release_on_a(on_a);
	usleep(1500000); /* three grace periods */
	cr_assert(wait_exists(0, "again", true, 0), "hosta reaped it while open on hostb: %s",
		  slurp(hosts[1].log));
	close(fd);
	for (int i = 0; i < 2; i++)
		cr_assert(wait_exists(i, "again", false, 5000),
			  "%s: the idle name stays after hostb closed it", hosts[i].name);
	stop_all();
}

/* An open mark whose answers were all lost: etcd wrote it, hostb never
 * learnt its revision. The open goes on and says so; the name stays while
 * the file is open (hosta sees the mark), and the close removes the mark
 * whatever its revision, so the name goes once idle — not at the end of
 * hostb's lease, which never comes while hostb lives. */
Test(cluster, an_open_mark_whose_answer_was_lost_goes_at_the_close)
{
	struct answer_proxy proxy;
	answer_proxy_start(&proxy, cluster.client_ports[0]);
	char through[64];
	snprintf(through, sizeof(through), "http://127.0.0.1:%u", proxy.port);
	host_start(0, NULL);
	host_start(1, through);
	int on_a = dial(0);
	cr_assert_eq(write(on_a, "acquire:lost|", 13), 13);
	cr_assert_str_eq(ace_reply(on_a, 5000), "locked|");
	cr_assert(wait_exists(1, "lost", true, 3000), "not on hostb");
	atomic_store(&proxy.lose, true);
	int fd = open(at(1, "lost"), O_RDONLY);
	int opened = errno;
	atomic_store(&proxy.lose, false);
	cr_assert_geq(fd, 0, "hostb: open with its answers lost: %s", strerror(opened));
	cr_assert_gt(count_in_log(1, "lost may be open here without its open mark"), 0, "%s",
		     slurp(hosts[1].log));
	release_on_a(on_a);
	usleep(1500000); /* three grace periods: hosta sees the mark that was written */
	cr_assert(wait_exists(0, "lost", true, 0), "hosta reaped it while open on hostb:\n%s",
		  slurp(hosts[0].log));
	close(fd);
	for (int i = 0; i < 2; i++)
		cr_assert(wait_exists(i, "lost", false, 5000),
			  "%s: the name stays after hostb closed it:\n%s", hosts[i].name,
			  slurp(hosts[1].log));
	stop_all();
	answer_proxy_stop(&proxy);
}

/* An undefined name whose last user's host died stays idle in the cluster:
 * the host that let go of it last cannot reap it, and it never comes back.
 * Any host that loads the cluster (here hostb, restarted) reaps it. */
Test(cluster, an_idle_undefined_name_left_by_a_dead_host_goes_when_a_host_loads)
{
	host_start(0, NULL);
	host_start(1, NULL);
	int on_a = dial(0);
	cr_assert_eq(write(on_a, "acquire:left|", 13), 13);
	cr_assert_str_eq(ace_reply(on_a, 5000), "locked|");
	cr_assert(wait_value(1, "left", 0, 3000), "hostb: %ld", xattr(1, "left", "value"));
	host_stop(0, SIGKILL);
	close(on_a);
	/* The unit comes home with hosta's lease (lease_ttl 3 s). */
	cr_assert(wait_value(1, "left", 1, 8000), "hostb: %ld", xattr(1, "left", "value"));
	int status;
	host_stop(1, SIGTERM);
	cr_assert(host_launch(1, &status));
	cr_assert(wait_exists(1, "left", false, 5000), "hostb: the idle undefined name stays: %s",
		  slurp(hosts[1].log));
	cr_assert(host_launch(0, &status));
	cr_assert(wait_exists(0, "left", false, 3000), "hosta: it came back");
	/* Not a name in use: one held on hostb is kept by hosta's load. */
	int on_b = dial(1);
	cr_assert_eq(write(on_b, "acquire:kept|", 13), 13);
	cr_assert_str_eq(ace_reply(on_b, 5000), "locked|");
	cr_assert(wait_value(0, "kept", 0, 3000));
	host_stop(0, SIGTERM);
	cr_assert(host_launch(0, &status));
	cr_assert(wait_value(0, "kept", 0, 3000));
	usleep(1500000); /* three grace periods */
	cr_assert(wait_exists(1, "kept", true, 0), "a held undefined name was reaped");
	cr_assert_eq(xattr(1, "kept", "value"), 0);
	close(on_b);
	stop_all();
}

/* A host's load reads every meta record at once: a later compare-and-swap
 * on one (unlock, limit: anything that rewrites it) must name the record's
 * own revision, not the load's, or it fails on every try (EBUSY). */
Test(cluster, a_restarted_host_changes_the_semaphores_it_loaded)
{
	host_start(0, NULL);
	host_start(1, NULL);
	int fd = dial(0);
	char reply[256];
	ask(fd, "create m 2", reply, sizeof(reply));
	cr_assert_str_eq(reply, "ok limit=2");
	close(fd);
	cr_assert_eq(write_text(0, "m", "lock\n"), 0);
	cr_assert(wait_value(1, "m", 1, 3000));
	int status;
	host_stop(0, SIGTERM);
	cr_assert(host_launch(0, &status));
	cr_assert(wait_value(0, "m", 1, 3000));
	cr_assert_eq(write_text(0, "m", "unlock\n"), 0, "unlock after the restart: %s",
		     strerror(errno));
	cr_assert(wait_value(1, "m", 2, 3000), "hostb: %ld", xattr(1, "m", "value"));
	fd = dial(0);
	ask(fd, "limit m 3", reply, sizeof(reply));
	cr_assert_str_eq(reply, "ok");
	cr_assert(wait_value(1, "m", 3, 3000), "hostb: %ld", xattr(1, "m", "value"));
	close(fd);
	stop_all();
}
