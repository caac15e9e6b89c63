/* test_net_parsers.c: the network's pure modules: allow-list, names, the
 * ACE dialect fed split at every point, the native dialect's requests. */
#include "ace.h"
#include "allow.h"
#include "name.h"
#include "native.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

static uint32_t ip(unsigned a, unsigned b, unsigned c, unsigned d)
{
	return (uint32_t)a << 24 | b << 16 | c << 8 | d;
}

Test(allow, addresses_and_ranges)
{
	struct allow_list list;
	char error[128];
	cr_assert_eq(allow_parse(&list, "127.0.0.1, 10.0.0.0/8 192.168.1.0/24,\n\t172.16.0.0/12",
				 error, sizeof(error)),
		     0, "%s", error);
	cr_assert_eq(list.count, 4);
	cr_assert_not(allow_admits_all(&list));
	cr_assert(allow_contains(&list, ip(172, 31, 0, 1)), "newline-separated entries count");
	cr_assert(allow_contains(&list, ip(127, 0, 0, 1)));
	cr_assert_not(allow_contains(&list, ip(127, 0, 0, 2)));
	cr_assert(allow_contains(&list, ip(10, 200, 3, 4)));
	cr_assert(allow_contains(&list, ip(192, 168, 1, 255)));
	cr_assert_not(allow_contains(&list, ip(192, 168, 2, 1)));
	/* ACE's shipped file says 0.0.0.0 and means anyone. */
	static const char *const everyone[] = {"0.0.0.0", "0.0.0.0/0", "10.0.0.1, 0.0.0.0"};
	for (size_t i = 0; i < sizeof(everyone) / sizeof(everyone[0]); i++) {
		cr_assert_eq(allow_parse(&list, everyone[i], error, sizeof(error)), 0, "%s", error);
		cr_assert(allow_contains(&list, ip(8, 8, 8, 8)), "%s", everyone[i]);
		cr_assert(allow_admits_all(&list), "%s", everyone[i]);
	}
	cr_assert_eq(allow_parse(&list, "", error, sizeof(error)), 0);
	cr_assert_not(allow_contains(&list, ip(127, 0, 0, 1)), "an empty list allows nobody");
	/* Host bits set: masking would admit more than was written. */
	cr_assert_eq(allow_parse(&list, "10.1.2.3/8", error, sizeof(error)), -EINVAL);
	cr_assert(strstr(error, "'10.1.2.3/8': host bits set"), "%s", error);
	cr_assert(strstr(error, "10.0.0.0/8"), "suggests the network: %s", error);
	cr_assert_eq(list.count, 0);
}

Test(allow, bad_items_are_named)
{
	static const char *const bad[] = {"10.1",     "256.0.0.1",  "1.2.3.4/33",
					  "1.2.3.4/", "1.2.3.4/-1", "localhost",
					  "::1",      "1.2.3.4/8x", "010.1.1.1"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct allow_list list;
		char error[128] = "", text[64];
		snprintf(text, sizeof(text), "127.0.0.1,%s", bad[i]);
		cr_assert_eq(allow_parse(&list, text, error, sizeof(error)), -EINVAL, "%s", bad[i]);
		cr_assert(strstr(error, bad[i]), "'%s' not named in '%s'", bad[i], error);
		cr_assert_eq(list.count, 0);
	}
}

Test(name, rules)
{
	static const char *const good[] = {"db",   "jobs/nightly", "a.b",  "-x",   "ü",
					   "a..b", "/a",	   "a/",   "a//b", ".",
					   "..",   "a b",	   "a\tb", "a\nb", "\x7f"};
	static const char *const bad[] = {"", "a|b", "|"};
	char error[128];
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
		cr_assert_eq(name_check(good[i], strlen(good[i]), error, sizeof(error)), 0, "%s",
			     good[i]);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		cr_assert_eq(name_check(bad[i], strlen(bad[i]), error, sizeof(error)), -EINVAL,
			     "'%s' accepted", bad[i]);
	char long_name[1100];
	memset(long_name, 'x', sizeof(long_name));
	cr_assert_eq(name_check(long_name, 1025, error, sizeof(error)), -ENAMETOOLONG);
	cr_assert_eq(name_check(long_name, 1024, error, sizeof(error)), 0);
	cr_assert_eq(name_check("a\0b", 3, error, sizeof(error)), -EINVAL, "NUL inside");
}

/* A tree of one semaphore "one", one directory "dir" (holding "dir/x"), and
 * the escaped file "%2Fkept" (the name "/kept"). */
static enum name_kind fake_tree(void *context, const char *path)
{
	(void)context;
	if (strcmp(path, "one") == 0 || strcmp(path, "dir/x") == 0 || strcmp(path, "%2Fkept") == 0)
		return NAME_SEMAPHORE;
	if (strcmp(path, "dir") == 0 || strncmp(path, "one/", 4) == 0 ||
	    strcmp(path, "semaphore.status") == 0)
		return NAME_BLOCKED;
	return NAME_ABSENT;
}

/* Names as ACE deployments spell them, and the file each one gets. */
Test(name, every_name_has_one_file_and_comes_back_from_it)
{
	static const struct {
		const char *name, *path;
	} table[] = {
	    {"db", "db"},
	    {"pcap", "pcap"},
	    {"jobs/nightly", "jobs/nightly"},
	    {"a b", "a b"},
	    {"splunk query", "splunk query"},
	    {"a\tb", "a%09b"},
	    {"http://host/x", "http:%2F%2Fhost%2Fx"},
	    {"//x", "%2F%2Fx"},
	    {"/kept", "%2Fkept"},
	    {"a/", "a%2F"},
	    {".", "%2E"},
	    {"..", "%2E."},
	    {"a/../b", "a%2F..%2Fb"},
	    {"a/./b", "a%2F.%2Fb"},
	    {"semaphore.status", "%73emaphore.status"},
	    {"x/semaphore.status", "x/semaphore.status"},
	    {"one", "one"},
	    {"one/sub", "one%2Fsub"},
	    {"dir", "%64ir"},
	    {"dir/x", "dir/x"},
	    {"dir/y", "dir/y"},
	    {"100%", "100%25"},
	    {"%2F", "%252F"},
	    {"C:\\temp\\x", "C:\\temp\\x"},
	    {"user@example.com", "user@example.com"},
	    {"10.0.0.1:443", "10.0.0.1:443"},
	    {"ü/ß", "ü/ß"},
	    {"line\nbreak", "line%0Abreak"},
	    {"a:b;c,d=e", "a:b;c,d=e"},
	    {"-leading-dash", "-leading-dash"},
	    {".hidden", ".hidden"},
	    {"trailing space ", "trailing space "},
	};
	for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++) {
		char path[2048], back[2048], error[128];
		size_t length = strlen(table[i].name);
		cr_assert_eq(name_check(table[i].name, length, error, sizeof(error)), 0, "%s",
			     error);
		cr_assert_eq(
		    name_resolve(table[i].name, length, fake_tree, NULL, path, sizeof(path)), 0,
		    "%s", table[i].name);
		cr_assert_str_eq(path, table[i].path, "name '%s'", table[i].name);
		int n = name_decode(path, strlen(path), back, sizeof(back));
		cr_assert_eq(n, (int)length, "'%s'", path);
		cr_assert_str_eq(back, table[i].name, "the file gives the name back");
	}
	/* Too many bytes to escape into one file name (255): refused. */
	char slashes[120];
	memset(slashes, '/', sizeof(slashes) - 1);
	slashes[sizeof(slashes) - 1] = '\0';
	char path[2048];
	cr_assert_eq(name_resolve(slashes, strlen(slashes), fake_tree, NULL, path, sizeof(path)),
		     -ENAMETOOLONG);
	/* Deeper than 16 directories is not a path: one escaped file. */
	char deep[80] = "";
	for (int i = 0; i < 18; i++)
		strcat(deep, i ? "/d" : "d");
	cr_assert_eq(name_resolve(deep, strlen(deep), fake_tree, NULL, path, sizeof(path)), 0);
	cr_assert_null(strchr(path, '/'), "%s", path);
}

Test(name, decoding_and_the_wire_form)
{
	char out[64];
	cr_assert_eq(name_decode("a%20b", 5, out, sizeof(out)), 3);
	cr_assert_str_eq(out, "a b");
	cr_assert_eq(name_decode("a%2", 3, out, sizeof(out)), -EINVAL);
	cr_assert_eq(name_decode("a%zz", 4, out, sizeof(out)), -EINVAL);
	cr_assert_eq(name_decode("abc", 3, out, 3), -ENAMETOOLONG);
	cr_assert_eq(name_wire("a b%\t/c", out, sizeof(out)), 0);
	cr_assert_str_eq(out, "a%20b%25%09/c");
}

/* Feed `stream` to a fresh parser in pieces cut at `cut`; collect events. */
static size_t ace_events(const char *stream, size_t length, size_t cut, enum ace_event *events,
			 size_t max, char *name)
{
	struct ace_parser parser;
	size_t count = 0;

	ace_init(&parser);
	for (size_t start = 0; start < length;) {
		size_t end = start + cut < length ? start + cut : length;
		const char *piece = stream + start;
		size_t left = end - start;
		while (left > 0) {
			enum ace_event event;
			size_t used = ace_feed(&parser, piece, left, &event);
			cr_assert_leq(used, left);
			piece += used;
			left -= used;
			if (event == ACE_ACQUIRE)
				strcpy(name, parser.name);
			if (event != ACE_NONE && count < max)
				events[count++] = event;
			if (event == ACE_INVALID)
				return count;
			if (used == 0)
				break;
		}
		start = end;
	}
	return count;
}

Test(ace, any_split_gives_the_same_events)
{
	const char *stream = "acquire:jobs/nightly|\nwait|wait|\r\nrelease|";
	size_t length = strlen(stream);
	for (size_t cut = 1; cut <= length; cut++) {
		enum ace_event events[8];
		char name[64] = "";
		size_t count = ace_events(stream, length, cut, events, 8, name);
		cr_assert_eq(count, 4, "cut %zu", cut);
		cr_assert_eq(events[0], ACE_ACQUIRE);
		cr_assert_str_eq(name, "jobs/nightly");
		cr_assert_eq(events[1], ACE_KEEPALIVE);
		cr_assert_eq(events[2], ACE_KEEPALIVE);
		cr_assert_eq(events[3], ACE_RELEASE);
	}
}

Test(ace, invalid_streams)
{
	static const char *const bad[] = {
	    "acquire:a|nope|",	    "acquire:a b|nope|", "acquire:|",
	    "Acquire:a|",	    "acquire:a|wai|",	 "acquire:../x|x",
	    "acquire:a|acquire:b|", "acquire:a|release",
	};
	/* Every name ACE's client can send is a name ("a b", "../x"). */
	static const bool reaches_acquire[] = {true, true, false, false, true, true, true, true};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		enum ace_event events[8];
		char name[64] = "";
		size_t count = ace_events(bad[i], strlen(bad[i]), 64, events, 8, name);
		bool acquired = count > 0 && events[0] == ACE_ACQUIRE;
		cr_assert_eq(acquired, reaches_acquire[i], "%s", bad[i]);
		if (i == 7) { /* "release" without its '|' is only unfinished */
			cr_assert_eq(count, 1);
			continue;
		}
		cr_assert_eq(events[count - 1], ACE_INVALID, "%s", bad[i]);
	}
	char over[NAME_MAX_LENGTH + 20] = "acquire:";
	memset(over + 8, 'n', NAME_MAX_LENGTH + 1);
	enum ace_event events[4];
	char name[8];
	cr_assert_eq(ace_events(over, strlen(over), 4096, events, 4, name), 1);
	cr_assert_eq(events[0], ACE_INVALID);
}

Test(ace, detection)
{
	cr_assert_eq(ace_detect("acq", 3), -1);
	cr_assert_eq(ace_detect("acquire:", 8), 1);
	cr_assert_eq(ace_detect("acquire x", 9), 0);
	cr_assert_eq(ace_detect("lock a", 6), 0);
}

static int parse(const char *line, struct native_request *request, char *error)
{
	return native_parse(line, strlen(line), request, error, 256);
}

Test(native, requests)
{
	struct native_request r;
	char error[256];
	cr_assert_eq(parse("lock db 2.5", &r, error), 1, "%s", error);
	cr_assert_eq(r.verb, NATIVE_COMMAND);
	cr_assert_eq(r.command.verb, VERB_LOCK);
	cr_assert_float_eq(r.command.timeout, 2.5, 1e-9);
	cr_assert_str_eq(r.name, "db");
	cr_assert_eq(parse("  limit jobs/a 7\r", &r, error), 1, "%s", error);
	cr_assert_eq(r.command.verb, VERB_LIMIT);
	cr_assert_eq(r.command.number, 7);
	cr_assert_eq(parse("create x", &r, error), 1);
	cr_assert_eq(r.verb, NATIVE_CREATE);
	cr_assert_not(r.has_limit);
	cr_assert_eq(parse("create x 32767", &r, error), 1);
	cr_assert_eq(r.limit, 32767);
	cr_assert_eq(parse("status", &r, error), 1);
	cr_assert_eq(r.verb, NATIVE_STATUS);
	cr_assert_str_empty(r.name);
	cr_assert_eq(parse("watch w", &r, error), 1);
	cr_assert_eq(r.verb, NATIVE_WATCH);
	cr_assert_eq(parse("", &r, error), 0);
	cr_assert_eq(parse(" \t\r", &r, error), 0);
}

Test(native, bad_requests)
{
	static const char *const bad[] = {
	    "lock",	"lock a 1 2", "lock a -1",    "unlock a now", "limit a",
	    "set a x",	"create",     "create a 1 2", "create a -1",  "create a 32768",
	    "delete",	"watch",      "ping pong",    "status a b",   "LOCK a",
	    "lock a%2", "lock a|b",   "create a 1e3", "quit now",     "relax a 1",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct native_request r;
		char error[256] = "";
		cr_assert_lt(parse(bad[i], &r, error), 0, "'%s' accepted", bad[i]);
		cr_assert_neq(error[0], '\0', "'%s' without a message", bad[i]);
	}
	struct native_request r;
	char error[256];
	cr_assert_eq(native_parse("lock a\0b", 8, &r, error, sizeof(error)), -EINVAL);
}
