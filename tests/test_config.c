/* test_config.c: defaults, values, warnings with file:line, and errors. */
#include "config.h"

#include "ace_section.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char warnings[8192];

static void collect(const char *message)
{
	strncat(warnings, message, sizeof(warnings) - strlen(warnings) - 2);
	strcat(warnings, "\n");
}

static char *write_file(const char *text)
{
	static char path[64];
	snprintf(path, sizeof(path), "/tmp/semfs-config-XXXXXX");
	int fd = mkstemp(path);
	cr_assert_geq(fd, 0);
	cr_assert_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	close(fd);
	return path;
}

Test(config, defaults)
{
	struct config c;
	config_defaults(&c);
	cr_assert_eq(c.default_limit, 1);
	cr_assert_gt(c.journal_max, 0);
	cr_assert_neq(c.state_dir[0], '\0');
}

Test(config, values_are_read)
{
	struct config c;
	char error[512];
	char *path = write_file("[semfs]\nstate_dir = /tmp/x y\ndefault_limit = 3\n"
				"journal_max = 8K\n");
	config_defaults(&c);
	warnings[0] = '\0';
	cr_assert_eq(config_load(&c, path, collect, error, sizeof(error)), 0, "%s", error);
	unlink(path);
	cr_assert_str_eq(c.state_dir, "/tmp/x y");
	cr_assert_eq(c.default_limit, 3);
	cr_assert_eq(c.journal_max, 8192);
	cr_assert_str_empty(warnings);
}

Test(config, unknown_keys_and_malformed_lines_warn_with_file_and_line)
{
	struct config c;
	char error[512];
	char *path = write_file("[semfs]\ncolour = blue\nthis line is junk\n[other]\nx = 1\n"
				"default_limit = 2\n");
	config_defaults(&c);
	warnings[0] = '\0';
	cr_assert_eq(config_load(&c, path, collect, error, sizeof(error)), 0, "%s", error);
	char expect[128];
	snprintf(expect, sizeof(expect), "%s:2: unknown key 'colour'", path);
	cr_assert(strstr(warnings, expect), "%s", warnings);
	snprintf(expect, sizeof(expect), "%s:3: malformed line", path);
	cr_assert(strstr(warnings, expect), "%s", warnings);
	snprintf(expect, sizeof(expect),
		 "%s: 1 section semfs does not use ignored (2 keys): [other]", path);
	cr_assert(strstr(warnings, expect), "%s", warnings);
	unlink(path);
}

Test(config, bad_values_are_errors)
{
	static const char *const bad[] = {
	    "[semfs]\ndefault_limit = -1\n",
	    "[semfs]\ndefault_limit = 40000\n",
	    "[semfs]\ndefault_limit = two\n",
	    "[semfs]\njournal_max = 10\n",
	    "[semfs]\njournal_max = 1G\n",
	    "[semfs]\nstate_dir =\n",
	    "[service_network_semaphore]\nenabled = maybe\n",
	    "[service_network_semaphore]\nbind_address = localhost\n",
	    "[service_network_semaphore]\nbind_port = 65536\n",
	    "[service_network_semaphore]\nallowed_ipv4 = 127.0.0.1, 10.0.0.0/40\n",
	    "[service_network_semaphore]\nsemaphore_a = -1\n",
	    "[service_network_semaphore]\nsemaphore_a|b = 1\n",
	    "[semfs]\nmax_connections = 0\n",
	    "[semfs]\nnetwork_user = no-such-user-here\n",
	    "[semfs]\nnetwork_mode = 0999\n",
	    "[semfs]\nnetwork_mode = 01777\n",
	    "[semfs]\nadmin_ipv4 = everyone\n",
	    "[service_network_semaphore]\nstats_format = json\n",
	    "[service_network_semaphore]\nallowed_ipv4 = 10.1.2.3/8\n",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct config c;
		char error[512];
		char *path = write_file(bad[i]);
		config_defaults(&c);
		cr_assert_eq(config_load(&c, path, collect, error, sizeof(error)), -1,
			     "accepted %s", bad[i]);
		char where[80];
		snprintf(where, sizeof(where), "%s:2:", path);
		cr_assert(strstr(error, where), "error '%s' does not name the line", error);
		unlink(path);
	}
}

Test(config, missing_file)
{
	struct config c;
	char error[512];
	config_defaults(&c);
	cr_assert_eq(config_load(&c, "/nonexistent/semfs.ini", collect, error, sizeof(error)), -1);
	cr_assert(strstr(error, "No such file"), "%s", error);
}

Test(config, ace_section_loads_unchanged)
{
	struct config c;
	char error[512], text[2048];
	snprintf(text, sizeof(text),
		 "[semfs]\nstate_dir = /srv/semfs\n%s"
		 "semaphore_email = 3\nsemaphore_jobs/nightly = 1\nsemaphore_email = 4\n",
		 ACE_SECTION);
	char *path = write_file(text);
	config_defaults(&c);
	warnings[0] = '\0';
	cr_assert_eq(config_load(&c, path, collect, error, sizeof(error)), 0, "%s", error);
	unlink(path);
	/* The only warning: configparser would refuse the repeated key. */
	cr_assert(strstr(warnings, "'semaphore_email' in [service_network_semaphore] given again"),
		  "%s", warnings);
	cr_assert_eq(strchr(warnings, '\n'), warnings + strlen(warnings) - 1, "%s", warnings);
	cr_assert(c.net_enabled);
	cr_assert_str_eq(c.bind_address, "127.0.0.1");
	cr_assert_eq(c.bind_port, 53559);
	cr_assert_str_eq(c.remote_address, "127.0.0.1");
	cr_assert_eq(c.remote_port, 53559);
	cr_assert_eq(c.allowed.count, 1);
	cr_assert(allow_contains(&c.allowed, 0x7f000001));
	cr_assert_not(allow_contains(&c.allowed, 0x7f000002));
	cr_assert_str_eq(c.stats_dir, "/srv/semfs/var/network_semaphore");
	cr_assert_eq(c.defined_count, 2);
	cr_assert_str_eq(c.defined[0].name, "email");
	cr_assert_eq(c.defined[0].limit, 4, "a later line wins");
	cr_assert_str_eq(c.defined[1].name, "jobs/nightly");
	config_free(&c);
}

Test(config, network_defaults_and_switches)
{
	struct config c;
	char error[512];
	config_defaults(&c);
	cr_assert(c.net_enabled);
	cr_assert_str_eq(c.bind_address, "127.0.0.1");
	cr_assert_eq(c.bind_port, 53559);
	cr_assert(allow_contains(&c.allowed, 0x7f000005), "127.0.0.0/8 by default");
	cr_assert_not(allow_contains(&c.allowed, 0x0a000001));
	cr_assert_eq(c.max_connections, 10000);
	cr_assert_str_empty(c.stats_dir);
	char *path = write_file("[service_network_semaphore]\nenabled = no\nstats_dir = /abs\n"
				"colour = red\n");
	warnings[0] = '\0';
	cr_assert_eq(config_load(&c, path, collect, error, sizeof(error)), 0, "%s", error);
	cr_assert_not(c.net_enabled);
	cr_assert_str_eq(c.stats_dir, "/abs");
	char expect[128];
	snprintf(expect, sizeof(expect), "%s:4: unknown key 'colour'", path);
	cr_assert(strstr(warnings, expect), "%s", warnings);
	unlink(path);
	config_free(&c);
}

/* Who network peers are: a user from the password database (its primary
 * group comes along), a bare uid, the mode of what they make, the admins. */
Test(config, network_identity)
{
	struct config c;
	char error[512];
	config_defaults(&c);
	cr_assert_str_eq(c.network_user, "nobody");
	cr_assert_eq(c.network_uid, 65534);
	cr_assert_eq(c.network_mode, 0666);
	cr_assert_eq(c.admins.count, 0, "no admin peers by default");
	char *path = write_file("[semfs]\nnetwork_user = root\nnetwork_mode = 0640\n"
				"admin_ipv4 = 127.0.0.1, 10.0.0.0/8\n");
	cr_assert_eq(config_load(&c, path, collect, error, sizeof(error)), 0, "%s", error);
	unlink(path);
	cr_assert_eq(c.network_uid, 0);
	cr_assert_eq(c.network_gid, 0);
	cr_assert_eq(c.network_mode, 0640);
	cr_assert_eq(c.admins.count, 2);
	path = write_file("[semfs]\nnetwork_user = 4242\n");
	cr_assert_eq(config_load(&c, path, collect, error, sizeof(error)), 0, "%s", error);
	unlink(path);
	cr_assert_eq(c.network_uid, 4242);
	config_free(&c);
}

/* state_dir/tree holds records only: stats files there would be taken for
 * broken records at the next start. */
Test(config, stats_dir_inside_the_record_tree_is_an_error)
{
	static const char *const bad[] = {"tree/stats", "./tree", "/tmp/semfs-sd/tree/x"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct config c;
		char error[512], text[256];
		snprintf(text, sizeof(text),
			 "[semfs]\nstate_dir = /tmp/semfs-sd\n[service_network_semaphore]\n"
			 "stats_dir = %s\n",
			 bad[i]);
		char *path = write_file(text);
		config_defaults(&c);
		cr_assert_eq(config_load(&c, path, collect, error, sizeof(error)), -1,
			     "accepted stats_dir = %s", bad[i]);
		cr_assert(strstr(error, "semaphore's record"), "%s", error);
		unlink(path);
		config_free(&c);
	}
}

static int load_text(struct config *c, const char *text, char *error, size_t size)
{
	char *path = write_file(text);
	warnings[0] = '\0';
	int r = config_load(c, path, collect, error, size);
	unlink(path);
	return r;
}

/* inih cut lines at 199 bytes: the tail of a 295-byte allowed_ipv4 became an
 * entry of its own ("10.14.0.0/1" read as 0.0.0.0/1, admitting 8.8.8.8). */
Test(config, long_lines_are_read_whole)
{
	struct config c;
	char error[512];
	static char text[80 * 1024];
	size_t used = (size_t)snprintf(text, sizeof(text),
				       "[service_network_semaphore]\n"
				       "allowed_ipv4 = ");
	unsigned entries = 0;
	/* 10.0.0.0/16 ... 10.255.0.0/16: 256 entries, about 3.5 KiB, then
	 * filler spaces to pass 64 KiB before the last entry. */
	for (unsigned i = 0; i < 255; i++, entries++)
		used += (size_t)snprintf(text + used, sizeof(text) - used, "10.%u.0.0/16, ", i);
	while (used < 66 * 1024)
		text[used++] = ' ';
	used += (size_t)snprintf(text + used, sizeof(text) - used, "10.255.0.0/16\n");
	entries++;
	config_defaults(&c);
	cr_assert_eq(load_text(&c, text, error, sizeof(error)), 0, "%s", error);
	cr_assert_eq(c.allowed.count, entries);
	cr_assert(allow_contains(&c.allowed, 0x0aff0001), "the last entry, past 64 KiB, is read");
	cr_assert_not(allow_contains(&c.allowed, 0x08080808));
	cr_assert_str_empty(warnings, "%s", warnings);

	/* The report's own case: 295 bytes ending in 10.14.0.0/16. */
	used = (size_t)snprintf(text, sizeof(text), "[service_network_semaphore]\nallowed_ipv4 =");
	while (used < 280)
		used += (size_t)snprintf(text + used, sizeof(text) - used, " 192.168.1.1,");
	snprintf(text + used, sizeof(text) - used, " 10.14.0.0/16\n");
	config_defaults(&c);
	cr_assert_eq(load_text(&c, text, error, sizeof(error)), 0, "%s", error);
	cr_assert(allow_contains(&c.allowed, 0x0a0e0001));
	cr_assert_not(allow_contains(&c.allowed, 0x08080808), "nothing admits 8.8.8.8");
}

Test(config, a_line_past_the_cap_is_refused_not_cut)
{
	struct config c;
	char error[512];
	size_t size = (2u << 20) + 64;
	char *text = malloc(size);
	cr_assert_not_null(text);
	size_t used = (size_t)snprintf(text, size, "[semfs]\nstate_dir = /");
	memset(text + used, 'x', size - used - 2);
	text[size - 2] = '\n';
	text[size - 1] = '\0';
	config_defaults(&c);
	cr_assert_eq(load_text(&c, text, error, sizeof(error)), -1);
	free(text);
	cr_assert(strstr(error, ":2: line longer than"), "%s", error);
	cr_assert(strstr(error, "refused rather than cut"), "%s", error);
}

/* configparser joins indented lines to the value above with '\n'. */
Test(config, continuation_lines_extend_the_value)
{
	struct config c;
	char error[512];
	config_defaults(&c);
	cr_assert_eq(load_text(&c,
			       "[service_network_semaphore]\n"
			       "allowed_ipv4 = 10.0.0.0/8,\n"
			       "    192.168.1.0/24\n"
			       "; a comment between continuation lines\n"
			       "\t172.16.0.1\n"
			       "bind_port = 4000\n",
			       error, sizeof(error)),
		     0, "%s", error);
	cr_assert_eq(c.allowed.count, 3);
	cr_assert(allow_contains(&c.allowed, 0xc0a80105));
	cr_assert(allow_contains(&c.allowed, 0xac100001));
	cr_assert_eq(c.bind_port, 4000);
	cr_assert_str_empty(warnings, "%s", warnings);
	/* A continuation of a number is still a bad number, at the key's line. */
	config_defaults(&c);
	cr_assert_eq(load_text(&c, "[semfs]\n\ndefault_limit = 2\n  3\n", error, sizeof(error)),
		     -1);
	cr_assert(strstr(error, ":3: default_limit = 2\n3"), "%s", error);
}

Test(config, keys_are_case_insensitive_sections_are_not)
{
	struct config c;
	char error[512];
	config_defaults(&c);
	cr_assert_eq(load_text(&c,
			       "[service_network_semaphore]\nBind_Port = 4001\nsemaphore_PCAP = 3\n"
			       "ALLOWED_IPV4 = 10.0.0.1\n[SEMFS]\ndefault_limit = 9\n",
			       error, sizeof(error)),
		     0, "%s", error);
	cr_assert_eq(c.bind_port, 4001);
	cr_assert_eq(c.defined_count, 1);
	cr_assert_str_eq(c.defined[0].name, "pcap", "configparser lower-cases keys");
	cr_assert_eq(c.defined[0].limit, 3);
	cr_assert(allow_contains(&c.allowed, 0x0a000001));
	cr_assert_eq(c.default_limit, 1, "[SEMFS] is another section, as in configparser");
	cr_assert(strstr(warnings, "1 section semfs does not use ignored (1 key): [SEMFS]"), "%s",
		  warnings);
	config_free(&c);
}

/* Later files override earlier ones; defined semaphores add up. */
Test(config, several_files_merge_in_order)
{
	struct config c;
	char error[512];
	config_defaults(&c);
	cr_assert_eq(load_text(&c,
			       "[service_network_semaphore]\nbind_port = 4002\nsemaphore_a = 2\n"
			       "semaphore_b = 5\n",
			       error, sizeof(error)),
		     0, "%s", error);
	cr_assert_eq(load_text(&c,
			       "[service_network_semaphore]\nbind_port = 4003\nsemaphore_b = 7\n"
			       "[semfs]\ndefault_limit = 4\n",
			       error, sizeof(error)),
		     0, "%s", error);
	cr_assert_eq(c.bind_port, 4003);
	cr_assert_eq(c.default_limit, 4);
	cr_assert_eq(c.defined_count, 2);
	cr_assert_eq(c.defined[0].limit, 2);
	cr_assert_eq(c.defined[1].limit, 7);
	config_free(&c);
}

/* ACE keeps one large file for all its services. */
Test(config, unused_sections_are_one_warning)
{
	struct config c;
	char error[512];
	static char text[200 * 1024];
	size_t used = 0;
	for (unsigned s = 0; s < 200; s++) {
		used += (size_t)snprintf(text + used, sizeof(text) - used,
					 "[service_%u]\nmodule = saq.x%u\n", s, s);
		for (unsigned k = 0; k < 10; k++)
			used += (size_t)snprintf(text + used, sizeof(text) - used,
						 "key_%u = value %u\n", k, k);
		used += (size_t)snprintf(text + used, sizeof(text) - used, "\n");
	}
	snprintf(text + used, sizeof(text) - used, "%s", ACE_SECTION);
	config_defaults(&c);
	cr_assert_eq(load_text(&c, text, error, sizeof(error)), 0, "%s", error);
	cr_assert_eq(c.bind_port, 53559);
	cr_assert(strstr(warnings, "200 sections semfs does not use ignored (2200 keys): "
				   "[service_0], [service_1], [service_2], [service_3], …"),
		  "%s", warnings);
	cr_assert_eq(strchr(warnings, '\n'), warnings + strlen(warnings) - 1, "one line: %s",
		     warnings);
}

Test(config, zero_address_admits_all_and_says_so)
{
	struct config c;
	char error[512];
	config_defaults(&c);
	cr_assert_eq(load_text(&c, "[service_network_semaphore]\nallowed_ipv4 = 0.0.0.0\n", error,
			       sizeof(error)),
		     0, "%s", error);
	cr_assert(allow_contains(&c.allowed, 0x08080808));
	cr_assert(strstr(warnings, ":2: allowed_ipv4 admits every address"), "%s", warnings);
	/* Host bits set: an error naming file and line, not a silent mask. */
	config_defaults(&c);
	cr_assert_eq(load_text(&c, "[service_network_semaphore]\n\nallowed_ipv4 = 10.1.2.3/8\n",
			       error, sizeof(error)),
		     -1);
	cr_assert(strstr(error, ":3: allowed_ipv4 = 10.1.2.3/8: '10.1.2.3/8': host bits set"), "%s",
		  error);
}

Test(config, a_key_given_twice_in_one_file_is_said)
{
	struct config c;
	char error[512];
	config_defaults(&c);
	cr_assert_eq(load_text(&c, "[semfs]\ndefault_limit = 2\n\ndefault_limit = 3\n", error,
			       sizeof(error)),
		     0, "%s", error);
	cr_assert_eq(c.default_limit, 3);
	cr_assert(strstr(warnings, ":4: 'default_limit' in [semfs] given again (first on line 2)"),
		  "%s", warnings);
}

Test(config, cluster_section_turns_cluster_mode_on_and_checks_every_value)
{
	struct config c;
	char error[512];
	config_defaults(&c);
	cr_assert_eq(c.cluster_endpoint_count, 0, "single-host by default");
	cr_assert_str_eq(c.cluster_prefix, "/semfs/");
	cr_assert_eq(c.cluster_lease_ttl, 5);
	cr_assert_eq(c.cluster_request_timeout_ms, 2000);
	cr_assert(c.cluster_prefer_leader, "calls go to etcd's leader by default");
	cr_assert(c.cluster_host[0] && !strchr(c.cluster_host, '.'), "host '%s'", c.cluster_host);
	cr_assert_eq(config_check(&c, error, sizeof(error)), 0);
	cr_assert_eq(load_text(&c,
			       "[cluster]\n"
			       "endpoints = http://127.0.0.1:2379, http://10.0.0.2:2379\n"
			       "    https://etcd3.example:2379\n"
			       "prefix = /prod/sem\n"
			       "host = build01\n"
			       "lease_ttl = 3\n"
			       "request_timeout = 1.5\n"
			       "prefer_leader = no\n",
			       error, sizeof(error)),
		     0, "%s", error);
	cr_assert_eq(c.cluster_endpoint_count, 3);
	cr_assert_str_eq(c.cluster_endpoints[2], "https://etcd3.example:2379");
	cr_assert_str_eq(c.cluster_prefix, "/prod/sem/");
	cr_assert_str_eq(c.cluster_host, "build01");
	cr_assert_eq(c.cluster_lease_ttl, 3);
	cr_assert_eq(c.cluster_request_timeout_ms, 1500);
	cr_assert(!c.cluster_prefer_leader);
	cr_assert_eq(config_check(&c, error, sizeof(error)), 0);
	config_free(&c);

	const char *const bad[][2] = {
	    {"endpoints = 127.0.0.1:2379", "not http://HOST:PORT"},
	    {"endpoints = http://127.0.0.1", "not http://HOST:PORT"},
	    {"endpoints = http://127.0.0.1:99999", "port 1..65535"},
	    {"endpoints = http://h:1/v3", "not http://HOST:PORT"},
	    {"endpoints = ,", "no endpoint"},
	    {"prefix = semfs", "starts with '/'"},
	    {"host = build.01", "host name"},
	    {"host = a b", "host name"},
	    {"lease_ttl = 1", "2..3600"},
	    {"request_timeout = 0.01", "seconds"},
	    {"request_timeout = soon", "seconds"},
	    {"prefer_leader = maybe", "yes or no"},
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char text[256];
		config_defaults(&c);
		snprintf(text, sizeof(text), "[cluster]\n%s\n", bad[i][0]);
		cr_assert_eq(load_text(&c, text, error, sizeof(error)), -1, "%s accepted",
			     bad[i][0]);
		cr_assert(strstr(error, ":2:") && strstr(error, bad[i][1]), "%s: %s", bad[i][0],
			  error);
		config_free(&c);
	}
	/* A [cluster] section that names no member is an error, not a silent
	 * single host. */
	config_defaults(&c);
	cr_assert_eq(load_text(&c, "[cluster]\nhost = a\n", error, sizeof(error)), 0);
	cr_assert_eq(config_check(&c, error, sizeof(error)), -1);
	cr_assert(strstr(error, "without endpoints"), "%s", error);
	config_free(&c);
	config_defaults(&c);
	cr_assert_eq(load_text(&c,
			       "[cluster]\nendpoints = https://h:2379\ncert_file = /etc/hostname\n",
			       error, sizeof(error)),
		     0, "%s", error);
	cr_assert_eq(config_check(&c, error, sizeof(error)), -1);
	cr_assert(strstr(error, "both cert_file and key_file"), "%s", error);
	config_free(&c);
}
