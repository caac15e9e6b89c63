/* test_replica.c: the cluster replica's rule, as a pure function of etcd's
 * events: FIFO grants in create-revision order, tokens, relax, limit, set,
 * unlock, removal, a range read loaded out of order, and events it must
 * refuse without changing anything. */
#include "replica.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

static struct replica *replica;
static int64_t revision;
static char log_text[8192]; /* one line per report */

static const char *const change_names[] = {
    [REPLICA_CREATED] = "created",     [REPLICA_CHANGED] = "changed",
    [REPLICA_REMOVED] = "removed",     [REPLICA_QUEUED] = "queued",
    [REPLICA_GRANTED] = "granted",     [REPLICA_RELAXED] = "relaxed",
    [REPLICA_RELEASED] = "released",   [REPLICA_CANCELLED] = "cancelled",
    [REPLICA_DEMOTED] = "demoted",     [REPLICA_PERSISTED] = "persisted",
    [REPLICA_DIRECTORY] = "directory", [REPLICA_DIRECTORY_REMOVED] = "directory-removed",
    [REPLICA_CLOSED] = "closed",
};

static void record(void *context, const struct replica_report *r)
{
	size_t used = strlen(log_text);
	snprintf(log_text + used, sizeof(log_text) - used, "%s %s%s%s token=%lld value=%d\n",
		 change_names[r->change], r->name, r->entry ? " " : "", r->entry ? r->entry : "",
		 (long long)r->token, r->value);
}

static void setup(void)
{
	replica = replica_new();
	cr_assert_not_null(replica);
	revision = 0;
	log_text[0] = '\0';
}

static void teardown(void)
{
	replica_free(replica);
}

TestSuite(replica, .init = setup, .fini = teardown);

static int event(bool deleted, const char *key, const char *value, int64_t create, int64_t lease)
{
	char error[256] = "";
	revision++;
	struct replica_event e = {
	    .deleted = deleted,
	    .key = key,
	    .key_length = strlen(key),
	    .value = value,
	    .value_length = value ? strlen(value) : 0,
	    .revision = revision,
	    .create_revision = create ? create : revision,
	    .lease = lease,
	};
	return replica_apply(replica, &e, record, NULL, error, sizeof(error));
}

static void meta(const char *name, const char *text)
{
	char key[128];
	snprintf(key, sizeof(key), "sem/%s/meta", name);
	cr_assert_eq(event(false, key, text, 0, 0), 0, "meta %s", text);
}

/* A new entry; returns its create revision (its token once it holds). */
static int64_t enqueue(const char *name, const char *entry, const char *kind, int64_t lease)
{
	char key[128], value[128];
	snprintf(key, sizeof(key), "sem/%s/q/%s", name, entry);
	snprintf(value, sizeof(value), "kind=%s who=pid:1@%s", kind, entry);
	cr_assert_eq(event(false, key, value, 0, lease), 0);
	return revision;
}

static void dequeue(const char *name, const char *entry)
{
	char key[128];
	snprintf(key, sizeof(key), "sem/%s/q/%s", name, entry);
	cr_assert_eq(event(true, key, NULL, 0, 0), 0);
}

static struct replica_state state(const char *name)
{
	struct replica_state s;
	cr_assert_eq(replica_state(replica, name, &s), 0);
	return s;
}

static void expect_log(const char *expected)
{
	cr_assert_str_eq(log_text, expected);
	log_text[0] = '\0';
}

Test(replica, holders_are_the_oldest_entries_up_to_the_limit)
{
	meta("db", "limit=2");
	expect_log("created db token=0 value=2\n");
	int64_t a = enqueue("db", "h1.7.1", "lock", 7);
	int64_t b = enqueue("db", "h2.8.1", "acquire", 8);
	int64_t c = enqueue("db", "h3.9.1", "lock", 9);
	char expected[512];
	snprintf(expected, sizeof(expected),
		 "granted db h1.7.1 token=%lld value=1\n"
		 "granted db h2.8.1 token=%lld value=0\n"
		 "queued db h3.9.1 token=%lld value=0\n",
		 (long long)a, (long long)b, (long long)c);
	expect_log(expected);
	cr_assert_eq(state("db").holders, 2);
	cr_assert_eq(state("db").waiting, 1);
	/* The first holder leaves: the waiter holds, with its own token. */
	dequeue("db", "h1.7.1");
	snprintf(expected, sizeof(expected),
		 "released db h1.7.1 token=%lld value=0\n"
		 "granted db h3.9.1 token=%lld value=0\n",
		 (long long)a, (long long)c);
	expect_log(expected);
	int64_t token;
	cr_assert_eq(replica_entry(replica, "db", "h3.9.1", &token), 1);
	cr_assert_eq(token, c);
	/* A waiter that gives up is cancelled, and nothing else moves. */
	enqueue("db", "h1.7.2", "lock", 7);
	log_text[0] = '\0';
	dequeue("db", "h1.7.2");
	cr_assert(strncmp(log_text, "cancelled db h1.7.2", 19) == 0, "%s", log_text);
}

/* A range read at `read_at`: every event carries it, as reload() does. */
static void load(struct replica_event *events, size_t count, int64_t read_at)
{
	for (size_t i = 0; i < count; i++) {
		events[i].key_length = strlen(events[i].key);
		events[i].value_length = strlen(events[i].value);
		events[i].revision = read_at;
	}
	char error[128];
	cr_assert_eq(replica_load(replica, events, count, record, NULL, NULL, error, sizeof(error)),
		     0, "%s", error);
}

Test(replica, a_range_read_in_key_order_grants_by_create_revision)
{
	/* Key order puts h9 before ... but h2's entry is older. */
	struct replica_event events[] = {
	    {.key = "sem/x/q/a.1.1", .value = "kind=lock who=late", .create_revision = 30},
	    {.key = "sem/x/q/b.1.1", .value = "kind=lock who=early", .create_revision = 20},
	    {.key = "sem/x/meta", .value = "limit=1", .create_revision = 10},
	};
	load(events, 3, 40);
	cr_assert_eq(replica_entry(replica, "x", "b.1.1", NULL), 1, "the older entry holds");
	cr_assert_eq(replica_entry(replica, "x", "a.1.1", NULL), 0, "the newer one waits");
	cr_assert_null(strstr(log_text, "demoted"), "%s", log_text);
	cr_assert_eq(replica_revision(replica), 40);
}

/* A load carries the read's revision on every event, but a compare-and-swap
 * on the meta record must name the record's own mod revision. */
Test(replica, a_loaded_meta_record_keeps_its_own_revision)
{
	struct replica_event events[] = {
	    {.key = "sem/x/meta", .value = "limit=2", .create_revision = 10, .mod_revision = 12},
	    {.key = "sem/y/meta", .value = "limit=1", .create_revision = 11},
	};
	load(events, 2, 40);
	struct replica_state state;
	cr_assert_eq(replica_state(replica, "x", &state), 0);
	cr_assert_eq(state.meta_revision, 12);
	cr_assert_eq(replica_state(replica, "y", &state), 0);
	cr_assert_eq(state.meta_revision, 40, "no mod revision given: the event's");
}

Test(replica, limit_raised_grants_waiters_and_lowered_below_use_is_busy)
{
	meta("db", "limit=1");
	enqueue("db", "h1.1.1", "lock", 1);
	enqueue("db", "h2.2.1", "lock", 2);
	enqueue("db", "h3.3.1", "lock", 3);
	struct replica_meta m;
	cr_assert_eq(replica_plan_limit(replica, "db", 0, &m), -EBUSY);
	cr_assert_eq(replica_plan_limit(replica, "db", 3, &m), 0);
	char text[256];
	cr_assert_gt(replica_meta_format(&m, text, sizeof(text)), 0);
	log_text[0] = '\0';
	meta("db", text);
	cr_assert(strstr(log_text, "granted db h2.2.1"), "%s", log_text);
	cr_assert(strstr(log_text, "granted db h3.3.1"), "%s", log_text);
	cr_assert_eq(state("db").value, 0);
	cr_assert_eq(state("db").holders, 3);
	cr_assert_eq(replica_plan_limit(replica, "db", 2, &m), -EBUSY);
	cr_assert_eq(replica_plan_limit(replica, "db", -1, &m), -EINVAL);
}

Test(replica, relax_completes_every_waiter_now_and_no_later_one)
{
	meta("db", "limit=1");
	enqueue("db", "h1.1.1", "lock", 1);
	enqueue("db", "h2.2.1", "lock", 2);
	enqueue("db", "h3.3.1", "acquire", 3);
	struct replica_meta m;
	cr_assert_eq(replica_plan_relax(replica, "db", &m), 0);
	cr_assert_eq(m.relaxed_count, 1);
	char text[256];
	replica_meta_format(&m, text, sizeof(text));
	log_text[0] = '\0';
	meta("db", text);
	cr_assert(strstr(log_text, "relaxed db h2.2.1"), "%s", log_text);
	cr_assert(strstr(log_text, "relaxed db h3.3.1"), "%s", log_text);
	cr_assert_null(strstr(log_text, "granted"), "%s", log_text);
	cr_assert_eq(state("db").value, 0, "relax keeps the value");
	cr_assert_eq(state("db").waiting, 0);
	/* A request after the relax waits as usual. */
	enqueue("db", "h4.4.1", "lock", 4);
	cr_assert_eq(replica_entry(replica, "db", "h4.4.1", NULL), 0);
	/* The relaxed entries go; the holder leaves: the late one holds. */
	dequeue("db", "h2.2.1");
	dequeue("db", "h3.3.1");
	dequeue("db", "h1.1.1");
	cr_assert_eq(replica_entry(replica, "db", "h4.4.1", NULL), 1);
	/* A relax with nobody waiting writes nothing. */
	struct replica_meta before = state("db").meta;
	cr_assert_eq(replica_plan_relax(replica, "db", &m), 0);
	cr_assert_eq(memcmp(&m, &before, sizeof(m)), 0);
	/* The next relax drops the range that no entry is in any more. */
	enqueue("db", "h5.5.1", "lock", 5);
	cr_assert_eq(replica_plan_relax(replica, "db", &m), 0);
	cr_assert_eq(m.relaxed_count, 1);
	cr_assert_eq(m.relaxed[0].from, revision);
}

Test(replica, unlock_takes_a_persisted_lock_then_a_plain_unit_then_overflows)
{
	meta("db", "limit=3 plain=1");
	enqueue("db", "h1.1.1", "lock", 1);
	/* Granted locks are re-put without their lease: they outlive the host. */
	log_text[0] = '\0';
	cr_assert_eq(event(false, "sem/db/q/h1.1.1", "kind=lock who=pid:1@h1", revision, 0), 0);
	cr_assert(strstr(log_text, "persisted db h1.1.1"), "%s", log_text);
	enqueue("db", "h2.2.1", "acquire", 2);
	char entry[REPLICA_ENTRY_MAX];
	struct replica_meta m;
	cr_assert_eq(replica_plan_unlock(replica, "db", entry, sizeof(entry), &m), 1);
	cr_assert_str_eq(entry, "h1.1.1");
	dequeue("db", "h1.1.1");
	cr_assert_eq(replica_plan_unlock(replica, "db", entry, sizeof(entry), &m), 0);
	cr_assert_eq(m.plain, 0);
	char text[256];
	replica_meta_format(&m, text, sizeof(text));
	meta("db", text);
	cr_assert_eq(state("db").value, 2);
	/* Only an acquire unit is out: unlock cannot return it. */
	cr_assert_eq(replica_plan_unlock(replica, "db", entry, sizeof(entry), &m), -EOVERFLOW);
}

Test(replica, set_forgives_plain_units_then_locks_never_acquires)
{
	meta("db", "limit=3 plain=1");
	enqueue("db", "h1.1.1", "lock", 1);
	enqueue("db", "h2.2.1", "acquire", 2);
	cr_assert_eq(state("db").value, 0);
	struct replica_meta m;
	char forgive[4][REPLICA_ENTRY_MAX];
	cr_assert_eq(replica_plan_set(replica, "db", 3, &m, forgive, 4), -ERANGE);
	cr_assert_eq(replica_plan_set(replica, "db", -1, &m, forgive, 4), -ERANGE);
	cr_assert_eq(replica_plan_set(replica, "db", 1, &m, forgive, 4), 0);
	cr_assert_eq(m.plain, 0);
	cr_assert_eq(replica_plan_set(replica, "db", 2, &m, forgive, 4), 1);
	cr_assert_str_eq(forgive[0], "h1.1.1");
	cr_assert_eq(replica_plan_set(replica, "db", 2, &m, forgive, 0), -E2BIG);
	cr_assert_eq(replica_plan_set(replica, "db", 0, &m, forgive, 4), 0);
	cr_assert_eq(m.plain, 1);
}

Test(replica, removal_reports_the_semaphore_and_its_entries)
{
	meta("db", "limit=1");
	enqueue("db", "h1.1.1", "lock", 1);
	enqueue("db", "h2.2.1", "lock", 2);
	log_text[0] = '\0';
	cr_assert_eq(event(true, "sem/db/meta", NULL, 0, 0), 0);
	dequeue("db", "h1.1.1");
	dequeue("db", "h2.2.1");
	cr_assert(strncmp(log_text, "removed db", 10) == 0, "%s", log_text);
	cr_assert(strstr(log_text, "released db h1.1.1"), "%s", log_text);
	cr_assert(strstr(log_text, "cancelled db h2.2.1"), "%s", log_text);
	struct replica_state s;
	cr_assert_eq(replica_state(replica, "db", &s), -ENOENT);
}

/* sem/NAME/open/HOST: a host with a file open on the name. Not part of the
 * rule: counted per host (a second put from the same host is the same
 * mark), its delete reported so an idle undefined name may go, and gone
 * with the semaphore when rm or a reap deletes its whole range. */
Test(replica, open_marks_are_counted_per_host_and_their_delete_reported)
{
	meta("job", "limit=1 undefined=1");
	enqueue("job", "h1.1.1", "acquire", 1);
	log_text[0] = '\0';
	cr_assert_eq(event(false, "sem/job/open/hostb", "pid=7", 0, 5), 0);
	cr_assert_eq(event(false, "sem/job/open/hostb", "pid=7", 0, 5), 0);
	cr_assert_eq(event(false, "sem/job/open/hostc", "pid=8", 0, 6), 0);
	cr_assert_str_empty(log_text, "a mark is no grant: %s", log_text);
	cr_assert_eq(state("job").opened, 2);
	cr_assert_eq(state("job").holders, 1, "marks do not change the rule");
	cr_assert(replica_open_on(replica, "job", "hostb"));
	cr_assert_not(replica_open_on(replica, "job", "hosta"));
	cr_assert_eq(event(true, "sem/job/open/hostb", NULL, 0, 0), 0);
	expect_log("closed job token=0 value=0\n");
	cr_assert_eq(state("job").opened, 1);
	cr_assert_not(replica_open_on(replica, "job", "hostb"));
	/* A delete of a mark nobody has: nothing. */
	cr_assert_eq(event(true, "sem/job/open/hostb", NULL, 0, 0), 0);
	cr_assert_str_empty(log_text, "%s", log_text);
	/* rm: the meta record, then (same revision, key order) marks and
	 * entries. Nothing stays behind (ASan would see it leak). */
	cr_assert_eq(event(true, "sem/job/meta", NULL, 0, 0), 0);
	cr_assert_eq(event(true, "sem/job/open/hostc", NULL, 0, 0), 0);
	dequeue("job", "h1.1.1");
	struct replica_state gone;
	cr_assert_eq(replica_state(replica, "job", &gone), -ENOENT);
	cr_assert_not(replica_open_on(replica, "job", "hostc"));
	/* A mark without a host, or with a '/' in it, is refused. */
	cr_assert_eq(event(false, "sem/job/open/", "pid=1", 0, 5), -EINVAL);
	cr_assert_eq(event(false, "sem/job/open/a/b", "pid=1", 0, 5), -EINVAL);
}

Test(replica, what_it_does_not_understand_changes_nothing)
{
	meta("db", "limit=1");
	enqueue("db", "h1.1.1", "lock", 1);
	const char *const bad[][2] = {
	    {"sem/db/meta", "limit=1 colour=red"},
	    {"sem/db/meta", "limit=-1"},
	    {"sem/db/meta", "limit=1 plain=2"},
	    {"sem/db/meta", "plain=0"},
	    {"sem/db/meta", "limit=1 relaxed=5"},
	    {"sem/db/meta", "limit=1 relaxed=9-3"},
	    {"sem/db/q/h2.2.1", "kind=steal who=x"},
	    {"sem/db/q/h2.2.1", "kind=lock who="},
	    {"sem/db/other", "limit=1"},
	    {"sem//meta", "limit=1"},
	    {"elsewhere/db", "limit=1"},
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		log_text[0] = '\0';
		int64_t before = replica_revision(replica);
		cr_assert_eq(event(false, bad[i][0], bad[i][1], 0, 0), -EINVAL, "%s = %s",
			     bad[i][0], bad[i][1]);
		cr_assert_eq(replica_revision(replica), before);
		cr_assert_str_empty(log_text, "%s", log_text);
	}
	cr_assert_eq(state("db").meta.limit, 1);
	cr_assert_eq(state("db").holders, 1);
	cr_assert_eq(state("db").waiting, 0);
	/* Incarnations and sync marks move the revision and nothing else. */
	log_text[0] = '\0';
	cr_assert_eq(event(false, "hosts/hosta", "pid=42", 0, 7), 0);
	cr_assert_eq(event(false, "sync/hosta", "sync", 0, 0), 0);
	cr_assert_eq(replica_revision(replica), revision);
	cr_assert_str_empty(log_text, "%s", log_text);
	cr_assert_eq(state("db").holders, 1);
	/* An event from the past is refused. */
	char error[128];
	struct replica_event old = {.key = "sem/db/meta",
				    .key_length = 11,
				    .value = "limit=5",
				    .value_length = 7,
				    .revision = 1,
				    .create_revision = 1};
	cr_assert_eq(replica_apply(replica, &old, record, NULL, error, sizeof(error)), -ESTALE);
	cr_assert_eq(state("db").meta.limit, 1);
	/* An entry created twice without a delete between is refused. */
	cr_assert_eq(event(false, "sem/db/q/h1.1.1", "kind=lock who=x", revision + 1, 1), -EINVAL);
}

Test(replica, meta_records_and_key_names_round_trip)
{
	struct replica_meta m = {.limit = 5,
				 .plain = 2,
				 .mode = 0640,
				 .uid = 1000,
				 .gid = 100,
				 .defined = true,
				 .by = "pid:42@build01 (msem)",
				 .relaxed_count = 2,
				 .relaxed = {{10, 20}, {31, 31}}};
	char text[256], error[128];
	int n = replica_meta_format(&m, text, sizeof(text));
	cr_assert_gt(n, 0);
	cr_assert_str_eq(text, "limit=5 plain=2 mode=0640 uid=1000 gid=100 defined=1 "
			       "relaxed=10-20,31-31 by=pid:42@build01 (msem)");
	struct replica_meta back;
	cr_assert_eq(replica_meta_parse(text, (size_t)n, &back, error, sizeof(error)), 0, "%s",
		     error);
	cr_assert_eq(memcmp(&m, &back, sizeof(m)), 0);
	/* An ACE client's undefined name says so; others do not mention it. */
	struct replica_meta ace = {.limit = 1, .mode = 0666, .undefined = true};
	n = replica_meta_format(&ace, text, sizeof(text));
	cr_assert_str_eq(text, "limit=1 plain=0 mode=0666 uid=0 gid=0 defined=0 undefined=1 "
			       "relaxed=");
	cr_assert_eq(replica_meta_parse(text, (size_t)n, &back, error, sizeof(error)), 0, "%s",
		     error);
	cr_assert(back.undefined);
	cr_assert_eq(replica_meta_parse("limit=1 undefined=2", 19, &back, error, sizeof(error)),
		     -EINVAL);
	char key[64];
	cr_assert_gt(replica_key_name("jobs/100%/x", key, sizeof(key)), 0);
	cr_assert_str_eq(key, "jobs%2F100%25%2Fx");
	cr_assert_eq(replica_key_name("", key, sizeof(key)), -EINVAL);
	cr_assert_eq(replica_key_name("abcdef", key, 4), -ENAMETOOLONG);
}

Test(replica, directories_come_and_go_and_bad_records_are_refused)
{
	cr_assert_eq(event(false, "dir/jobs", "mode=0750 uid=1000 gid=100", 0, 0), 0);
	mode_t mode;
	uid_t uid;
	gid_t gid;
	cr_assert_eq(replica_directory(replica, "jobs", &mode, &uid, &gid), 0);
	cr_assert_eq(mode, 0750);
	cr_assert_eq(uid, 1000);
	cr_assert(strstr(log_text, "directory jobs"), "%s", log_text);
	cr_assert_eq(event(false, "dir/x", "mode=0755", 0, 0), -EINVAL);
	cr_assert_eq(event(false, "dir/a/b", "mode=0755 uid=0 gid=0", 0, 0), -EINVAL);
	cr_assert_eq(event(true, "dir/jobs", NULL, 0, 0), 0);
	cr_assert_eq(replica_directory(replica, "jobs", &mode, &uid, &gid), -ENOENT);
}
