/* test_ace.c: an ACE operator drops in. ACE's shipped configuration section,
 * verbatim; ACE's client logic (tests/clients/ace_client.py), which falls
 * back to a local semaphore on any refusal — a test fails where it would;
 * names as ACE deployments spell them; heartbeats as ACE's server sends
 * them; the network-only mode ACE's containers need. */
#include "e2e.h"
#include "e2e_net.h"

#include <criterion/criterion.h>
#include <criterion/logging.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* ACE's section as ACE ships it, comments included; only the ports are
 * ours (@PORT@). */
#define ACE_SHIPPED_SECTION                                                                        \
	"[service_network_semaphore]\n"                                                            \
	"module = saq.network_semaphore\n"                                                         \
	"class = NetworkSemaphoreServer\n"                                                         \
	"description = Network Semaphore - global network service for controlling concurrent "     \
	"access to limited resources\n"                                                            \
	"enabled = yes\n"                                                                          \
	"instance_type = ANY\n"                                                                    \
	"\n"                                                                                       \
	"; the address of the network semaphore server (used to bind and listen)\n"                \
	"bind_address = 0.0.0.0\n"                                                                 \
	"bind_port = @PORT@\n"                                                                     \
	"\n"                                                                                       \
	"; the address of the network semaphore server to the clients that want to use them\n"     \
	"remote_address = network-semaphore\n"                                                     \
	"remote_port = @PORT@\n"                                                                   \
	"\n"                                                                                       \
	"; comma separated list of source IP addresses that are allowed to connect\n"              \
	"; the code that blocks addresses not listed here is currently commented out\n"            \
	"allowed_ipv4 = 0.0.0.0\n"                                                                 \
	"; directory that contains metrics and current status of semaphores\n"                     \
	"stats_dir = var/network_semaphore\n"                                                      \
	"\n"                                                                                       \
	"; SEMAPHORE CAPACITY LIMITS\n"                                                            \
	"semaphore_pcap = 1\n"

/* Restart the test's daemon on a configuration of our own: `text` with
 * @PORT@ for the test's port, then [semfs] with state_dir. */
static void restart_with(const char *text, const char *semfs_lines)
{
	e2e_stop();
	FILE *config = fopen(e2e.config, "we");
	cr_assert_not_null(config);
	for (const char *p = text; *p;) {
		const char *at = strstr(p, "@PORT@");
		if (!at) {
			fputs(p, config);
			break;
		}
		fprintf(config, "%.*s%u", (int)(at - p), p, e2e.port);
		p = at + strlen("@PORT@");
	}
	fprintf(config, "\n[semfs]\nstate_dir = %s\n%s\n", e2e.state, semfs_lines);
	fclose(config);
	e2e_restart();
}

/* The client got its unit: anything else (a fallback) fails the test. */
static void expect_locked(struct ace_client *client, const char *name)
{
	const char *line = ace_hear(client, 5000);
	cr_assert_not_null(line, "ACE client for '%s' said nothing", name);
	cr_assert_str_eq(line, "locked", "ACE's client would have fallen back for '%s': %s", name,
			 line);
}

static void release(struct ace_client *client)
{
	ace_say(client, "release");
	ace_expect(client, "ok", 3000);
	ace_expect(client, "closed", 3000);
	ace_kill(client);
}

TestSuite(ace_operator, .init = NULL, .fini = e2e_teardown, .timeout = 120);

Test(ace_operator, the_shipped_section_verbatim_serves_ace_clients)
{
	e2e_start(NULL);
	restart_with(ACE_SHIPPED_SECTION, "");
	struct ace_client holder = ace_spawn("pcap");
	expect_locked(&holder, "pcap");
	/* The defined limit holds: a second client waits, with heartbeats. */
	struct ace_client waiter = ace_spawn("pcap");
	ace_expect(&waiter, "wait", 3000);
	cr_assert_eq(e2e_xattr("pcap", "waiting"), 1);
	release(&holder);
	expect_locked(&waiter, "pcap");
	release(&waiter);
	/* Loudly: the allow-list admits everyone; relative stats_dir lands
	 * under state_dir and is rewritten at least once a second. */
	e2e_expect_text("../semfs.log", "allowed_ipv4 admits every address");
	e2e_expect_text("../semfs.log", "stats_dir is relative: it lands under state_dir");
	char status[600];
	snprintf(status, sizeof(status), "%s/var/network_semaphore/semaphore.status", e2e.state);
	struct stat before, after;
	cr_assert_eq(stat(status, &before), 0, "%s", status);
	usleep(1300 * 1000);
	cr_assert_eq(stat(status, &after), 0);
	cr_assert(after.st_mtim.tv_sec > before.st_mtim.tv_sec ||
		      (after.st_mtim.tv_sec == before.st_mtim.tv_sec &&
		       after.st_mtim.tv_nsec > before.st_mtim.tv_nsec),
		  "semaphore.status was not rewritten within 1.3 s of no change");
}

/* An allow-list spread over lines, one of them longer than inih's old
 * 199-byte cut: every entry counts, an outsider is refused and logged. */
Test(ace_operator, a_long_multi_line_allow_list_admits_exactly_its_entries)
{
	char text[4096];
	size_t used = (size_t)snprintf(text, sizeof(text),
				       "[service_network_semaphore]\nbind_port = @PORT@\n"
				       "remote_port = @PORT@\nsemaphore_pcap = 1\nallowed_ipv4 =");
	for (int i = 0; i < 30; i++)
		used += (size_t)snprintf(text + used, sizeof(text) - used, " 192.168.%d.0/24,", i);
	used += (size_t)snprintf(text + used, sizeof(text) - used,
				 "\n    10.14.0.0/16,\n    172.16.0.0/12,\n\t127.0.0.1\n");
	e2e_start(NULL);
	restart_with(text, "");
	struct ace_client inside = ace_spawn("pcap");
	expect_locked(&inside, "pcap");
	release(&inside);
	struct ace_client outside = ace_spawn_from("pcap", "127.0.0.2");
	const char *line = ace_hear(&outside, 3000);
	cr_assert_not_null(line);
	cr_assert(strncmp(line, "fallback", 8) == 0, "127.0.0.2 was admitted: %s", line);
	ace_kill(&outside);
	e2e_expect_text("../semfs.log", "rejected 127.0.0.2");
	e2e_expect_text("../semfs.log", "not in allowed_ipv4");
}

/* Names as ACE deployments spell them, and where each one is in the mount. */
static const struct {
	const char *name, *file;
} names[] = {
    {"email_scanner", "email_scanner"},
    {"splunk query", "splunk query"},
    {"a b c", "a b c"},
    {"tab\there", "tab%09here"},
    {"jobs/nightly", "jobs/nightly"},
    {"a/b/c/d", "a/b/c/d"},
    {"http://host/x", "http:%2F%2Fhost%2Fx"},
    {"https://example.com:8443/api/v1", "https:%2F%2Fexample.com:8443%2Fapi%2Fv1"},
    {"//x", "%2F%2Fx"},
    {"a/", "a%2F"},
    {"/leading", "%2Fleading"},
    {".", "%2E"},
    {"..", "%2E."},
    {"a/../b", "a%2F..%2Fb"},
    {"./x", ".%2Fx"},
    {"x/.", "x%2F."},
    {"semaphore.status", "%73emaphore.status"},
    {"one/sub", "one%2Fsub"},
    {"100%", "100%25"},
    {"%2F", "%252F"},
    {"C:\\temp\\x", "C:\\temp\\x"},
    {"user@example.com", "user@example.com"},
    {"10.0.0.1:443", "10.0.0.1:443"},
    {"a:b;c,d=e", "a:b;c,d=e"},
    {"-dash", "-dash"},
    {".hidden", ".hidden"},
    {"trailing ", "trailing "},
    {" leading", " leading"},
    {"ldap://dc01.corp.local:389/ou=x", "ldap:%2F%2Fdc01.corp.local:389%2Fou=x"},
    {"s3://bucket/key/with spaces", "s3:%2F%2Fbucket%2Fkey%2Fwith spaces"},
    {"virustotal-api", "virustotal-api"},
    {"api.x.com/v2/y", "api.x.com/v2/y"},
    {"UPPER/Case", "UPPER/Case"},
    {"line\nbreak", "line%0Abreak"},
};

Test(ace_operator, every_name_an_ace_client_sends_works)
{
	e2e_start("[service_network_semaphore]\nsemaphore_one = 1\nallowed_ipv4 = 127.0.0.1\n");
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		struct ace_client client = ace_spawn(names[i].name);
		expect_locked(&client, names[i].name);
		struct stat st;
		cr_assert_eq(stat(e2e_path(names[i].file), &st), 0, "'%s' is not at '%s'",
			     names[i].name, names[i].file);
		cr_assert(S_ISREG(st.st_mode));
		cr_assert_eq(e2e_xattr(names[i].file, "value"), 0, "'%s' is not held",
			     names[i].file);
		cr_assert_eq(e2e_xattr(names[i].file, "limit"), 1, "undefined: limit 1");
		release(&client);
		cr_assert(e2e_wait_gone(names[i].file, 3000), "'%s' stayed after its release",
			  names[i].file);
		/* Directories made for a name go with it. */
		char top[256];
		snprintf(top, sizeof(top), "%s", names[i].file);
		if (strchr(top, '/')) {
			*strchr(top, '/') = '\0';
			cr_assert(e2e_wait_gone(top, 3000), "directory '%s' stayed", top);
		}
	}
	cr_assert_eq(e2e_xattr("one", "limit"), 1, "the defined one is untouched");
	e2e_expect_text("../semfs.log", "undefined semaphore one%2Fsub created");
	e2e_expect_text("../semfs.log", "undefined semaphore one%2Fsub removed: idle");
}

/* ACE's server sends `wait|` each second from the request; we measure the
 * beats over 10 s, then how soon a closed waiter leaves the queue. */
Test(ace_operator, heartbeats_every_second_from_the_request)
{
	e2e_start("[service_network_semaphore]\nsemaphore_pcap = 1\nallowed_ipv4 = 127.0.0.1\n");
	struct ace_client holder = ace_spawn("pcap");
	expect_locked(&holder, "pcap");
	int fd = net_connect();
	double asked = e2e_now();
	net_send(fd, "acquire:pcap|");
	double beats[12];
	int count = 0;
	char buffer[64];
	size_t pending = 0;
	while (count < 10) {
		struct pollfd ready = {.fd = fd, .events = POLLIN};
		cr_assert_eq(poll(&ready, 1, 3000), 1, "no heartbeat for 3 s");
		ssize_t n = read(fd, buffer + pending, sizeof(buffer) - pending - 1);
		cr_assert_gt(n, 0);
		double now = e2e_now();
		pending += (size_t)n;
		buffer[pending] = '\0';
		char *cursor = buffer;
		while (strncmp(cursor, "wait|", 5) == 0) {
			cr_assert_lt(count, 12);
			beats[count++] = now - asked;
			cursor += 5;
		}
		pending = strlen(cursor);
		memmove(buffer, cursor, pending + 1);
	}
	double worst = 0;
	for (int i = 1; i < count; i++) {
		double gap = beats[i] - beats[i - 1];
		if (gap > worst)
			worst = gap;
		cr_assert(gap > 0.8 && gap < 1.2, "gap %d: %.3f s", i, gap);
	}
	double mean = (beats[count - 1] - beats[0]) / (count - 1);
	cr_log_info("first heartbeat %.3f s, mean gap %.4f s, widest %.3f s", beats[0], mean,
		    worst);
	cr_assert(beats[0] >= 0.99 && beats[0] < 1.2, "first heartbeat at %.3f s", beats[0]);
	cr_assert(mean > 0.98 && mean < 1.02, "mean gap %.4f s", mean);
	/* The waiter goes away: it leaves the queue at once. */
	double closed = e2e_now();
	close(fd);
	while (e2e_xattr("pcap", "waiting") != 0 && e2e_now() - closed < 2.0)
		usleep(1000);
	double gone = e2e_now() - closed;
	cr_log_info("a closed waiter left the queue after %.1f ms", gone * 1000);
	cr_assert_lt(gone, 0.5, "the closed waiter was still queued after %.3f s", gone);
	release(&holder);
}

/* No /dev/fuse in ACE's containers: the TCP dialects alone, same store. */
Test(ace_operator, network_only_mode_serves_both_dialects_without_a_mount)
{
	e2e_start(NULL);
	e2e_stop();
	FILE *config = fopen(e2e.config, "we");
	cr_assert_not_null(config);
	fprintf(config,
		"[service_network_semaphore]\nbind_port = %u\nsemaphore_pcap = 2\n"
		"[semfs]\nstate_dir = %s\n",
		e2e.port, e2e.state);
	fclose(config);
	pid_t daemon = e2e_fork();
	if (daemon == 0) {
		int log = open(e2e.log, O_WRONLY | O_CREAT | O_APPEND, 0644);
		dup2(log, 2);
		execl(getenv("SEMFS_BIN"), "semfs", "--no-mount", "-f", "-c", e2e.config,
		      (char *)NULL);
		_exit(127);
	}
	int fd = -1;
	for (int i = 0; i < 300 && fd < 0; i++) {
		fd = connect_from(NULL, e2e.port);
		if (fd < 0)
			usleep(10000);
	}
	cr_assert_geq(fd, 0, "the network-only daemon did not listen within 3 s");
	struct ace_client client = ace_spawn("pcap");
	expect_locked(&client, "pcap");
	ask(fd, "status pcap", "ok pcap: 1 limit=2 value=1");
	ask(fd, "create batch/nightly", "ok");
	ask(fd, "lock batch/nightly 0", "ok");
	ask(fd, "status batch/nightly", "ok batch/nightly: 1 limit=1 value=0");
	release(&client);
	close(fd);
	kill(daemon, SIGTERM);
	cr_assert_eq(e2e_wait_exit(daemon, 5000), 0, "--no-mount did not stop cleanly");
	e2e_expect_text("../semfs.log", "no mount (--no-mount)");
	/* The same state serves a mount afterwards. */
	e2e_restart();
	cr_assert_eq(e2e_xattr("batch/nightly", "value"), 0, "the lock unit outlived the restart");
	cr_assert_eq(e2e_xattr("pcap", "limit"), 2);
}

/* stats_format = ace: semaphore.status as ACE writes it, for tools that
 * parse ACE's file: `name: count` (units in use), defined semaphores only. */
Test(ace_operator, stats_in_ace_shape)
{
	e2e_start("[service_network_semaphore]\nsemaphore_pcap = 2\nsemaphore_splunk query = 1\n"
		  "allowed_ipv4 = 127.0.0.1\nstats_dir = stats\nstats_format = ace\n");
	struct ace_client client = ace_spawn("pcap");
	expect_locked(&client, "pcap");
	struct ace_client other = ace_spawn("undefined one");
	expect_locked(&other, "undefined one");
	char path[600], text[256] = "";
	snprintf(path, sizeof(path), "%s/stats/semaphore.status", e2e.state);
	for (double start = e2e_now(); e2e_now() - start < 3.0; usleep(50000)) {
		FILE *file = fopen(path, "re");
		size_t n = file ? fread(text, 1, sizeof(text) - 1, file) : 0;
		text[n] = '\0';
		if (file)
			fclose(file);
		if (strstr(text, "pcap: 1\n"))
			break;
	}
	cr_assert(strstr(text, "pcap: 1\n"), "%s", text);
	cr_assert(strstr(text, "splunk query: 0\n"), "%s", text);
	cr_assert_null(strstr(text, "undefined"), "only defined semaphores: %s", text);
	release(&client);
	release(&other);
}
