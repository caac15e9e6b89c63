/* test_rules.c: the store's rules against the in-memory backend (no kernel):
 * every command in every state class — free (all units home), partly out,
 * at its limit, busy with a waiter, holders of both kinds (lock and acquire),
 * removed —
 * with the result code and the units at home afterwards; and relax, limit
 * and set with waiters queued. The same rules run over System V in
 * test_store.c and end to end; here they run on the backend seam alone. */
#include "fake_backend.h"
#include "report.h"
#include "store.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static struct store *store;
static char state_dir[64];
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t changed = PTHREAD_COND_INITIALIZER;
static int completions, last_error;

struct request {
	struct waiter waiter;
	struct command command;
};

static void complete(struct waiter *waiter, int error)
{
	pthread_mutex_lock(&lock);
	completions++;
	last_error = error;
	pthread_cond_broadcast(&changed);
	pthread_mutex_unlock(&lock);
}

static bool wait_completions(int count)
{
	struct timespec until;
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += 3;
	pthread_mutex_lock(&lock);
	while (completions < count)
		if (pthread_cond_timedwait(&changed, &lock, &until) != 0)
			break;
	bool ok = completions >= count;
	pthread_mutex_unlock(&lock);
	return ok;
}

static void setup(void)
{
	char error[256];
	fake_reset();
	snprintf(state_dir, sizeof(state_dir), "/tmp/semfs-test.rules-XXXXXX");
	cr_assert_not_null(mkdtemp(state_dir));
	struct store_options options = {.state_dir = state_dir,
					.default_limit = 1,
					.journal_max = 65536,
					.backend = &fake_backend};
	cr_assert_eq(store_open(&store, &options, error, sizeof(error)), 0, "%s", error);
	cr_assert_eq(store_start(store), 0);
	completions = 0;
}

static void teardown(void)
{
	char command[160];
	store_shutdown(store);
	store_close(store);
	snprintf(command, sizeof(command), "rm -rf %s", state_dir);
	cr_assert_eq(system(command), 0);
}

TestSuite(rules, .init = setup, .fini = teardown, .timeout = 30);

static int attribute(struct semaphore *s, const char *name)
{
	char *text;
	int r = report_attribute(store, s, name, &text);
	if (r < 0)
		return r;
	int value = atoi(text);
	free(text);
	return value;
}

static int run(struct semaphore *s, struct request *r, enum command_verb verb, double timeout,
	       int number, struct owner *owner)
{
	memset(r, 0, sizeof(*r));
	r->command = (struct command){.verb = verb, .timeout = timeout, .number = number};
	r->waiter.commands = &r->command;
	r->waiter.count = 1;
	r->waiter.owner = owner;
	r->waiter.complete = complete;
	snprintf(r->waiter.who, sizeof(r->waiter.who), "test");
	return store_submit(store, s, &r->waiter);
}

static int now(struct semaphore *s, enum command_verb verb, int number, struct owner *owner)
{
	struct request r;
	return run(s, &r, verb, 0, number, owner);
}

enum state_class { FREE, PARTLY_OUT, AT_LIMIT, BUSY_WITH_WAITER, BOTH_KINDS, REMOVED };
static const char *const class_names[] = {
    "free", "partly out", "at its limit", "busy with a waiter", "both kinds held", "removed"};

static struct owner acquirer;
static struct request queued;

/* A semaphore of limit 2 (3 for BOTH_KINDS) in the given state class. */
static struct semaphore *make(enum state_class state, const char *name)
{
	struct store_attr attr;
	struct semaphore *s;
	cr_assert_eq(store_create(store, STORE_ROOT_INO, name, 0644, getuid(), getgid(), &attr), 0);
	cr_assert_eq(store_open_semaphore(store, attr.ino, &s), 0);
	memset(&acquirer, 0, sizeof(acquirer));
	int limit = state == BOTH_KINDS ? 3 : state == BUSY_WITH_WAITER ? 1 : 2;
	cr_assert_eq(now(s, VERB_LIMIT, limit, NULL), 0);
	switch (state) {
	case FREE:
		break;
	case PARTLY_OUT:
		cr_assert_eq(now(s, VERB_LOCK, 0, NULL), 0);
		break;
	case AT_LIMIT:
		cr_assert_eq(now(s, VERB_LOCK, 0, NULL), 0);
		cr_assert_eq(now(s, VERB_LOCK, 0, NULL), 0);
		cr_assert_eq(attribute(s, "value"), 0);
		break;
	case BUSY_WITH_WAITER:
		cr_assert_eq(now(s, VERB_LOCK, 0, NULL), 0);
		cr_assert_eq(run(s, &queued, VERB_LOCK, COMMAND_NO_TIMEOUT, 0, NULL), STORE_QUEUED);
		cr_assert_eq(attribute(s, "waiting"), 1);
		break;
	case BOTH_KINDS:
		cr_assert_eq(now(s, VERB_LOCK, 0, NULL), 0);
		int acquired = now(s, VERB_ACQUIRE, 0, &acquirer);
		cr_assert_eq(acquired, 0, "%s: acquire %d, value %d", name, acquired,
			     attribute(s, "value"));
		break;
	case REMOVED:
		cr_assert_eq(store_unlink(store, STORE_ROOT_INO, name), 0);
		break;
	}
	return s;
}

/* Command x state class: the result and the units at home afterwards. */
static const struct expectation {
	enum command_verb verb;
	int number;	 /* limit, set */
	bool with_owner; /* acquire, release: the acquirer */
	int result[6];	 /* by state class */
	int home[6];	 /* value afterwards; -1: not checked (removed) */
} table[] = {
    /* state class:                    free, partly out, at limit, busy with a waiter, both, removed
     */
    {VERB_LOCK, 0, false, {0, 0, -EAGAIN, -EAGAIN, 0, -EIDRM}, {1, 0, 0, 0, 0, -1}},
    {VERB_UNLOCK, 0, false, {-EOVERFLOW, 0, 0, 0, 0, -EIDRM}, {2, 2, 1, 0, 2, -1}},
    {VERB_RELAX, 0, false, {0, 0, 0, 0, 0, -EIDRM}, {2, 1, 0, 0, 1, -1}},
    {VERB_ACQUIRE, 0, true, {0, 0, -EAGAIN, -EAGAIN, 0, -EIDRM}, {1, 0, 0, 0, 0, -1}},
    {VERB_ACQUIRE,
     0,
     false,
     {-EINVAL, -EINVAL, -EINVAL, -EINVAL, -EINVAL, -EIDRM},
     {2, 1, 0, 0, 1, -1}},
    {VERB_RELEASE, 0, true, {-ENOLCK, -ENOLCK, -ENOLCK, -ENOLCK, 0, -EIDRM}, {2, 1, 0, 0, 2, -1}},
    {VERB_LIMIT, 4, false, {0, 0, 0, 0, 0, -EIDRM}, {4, 3, 2, 2, 2, -1}},
    {VERB_LIMIT, 1, false, {0, 0, -EBUSY, 0, -EBUSY, -EIDRM}, {1, 0, 0, 0, 1, -1}},
    {VERB_LIMIT, 0, false, {0, -EBUSY, -EBUSY, -EBUSY, -EBUSY, -EIDRM}, {0, 1, 0, 0, 1, -1}},
    {VERB_SET, 0, false, {0, 0, 0, 0, 0, -EIDRM}, {0, 0, 0, 0, 0, -1}},
    {VERB_SET, 2, false, {0, 0, 0, -ERANGE, 0, -EIDRM}, {2, 2, 2, 0, 2, -1}},
    {VERB_SET,
     3,
     false,
     {-ERANGE, -ERANGE, -ERANGE, -ERANGE, -ERANGE, -EIDRM},
     {2, 1, 0, 0, 1, -1}},
};

Test(rules, every_command_in_every_state_class)
{
	int checked = 0;
	for (size_t row = 0; row < sizeof(table) / sizeof(table[0]); row++) {
		const struct expectation *e = &table[row];
		for (int state = FREE; state <= REMOVED; state++) {
			char name[32];
			snprintf(name, sizeof(name), "s%zu-%d", row, state);
			completions = 0;
			struct semaphore *s = make((enum state_class)state, name);
			int r = now(s, e->verb, e->number, e->with_owner ? &acquirer : NULL);
			cr_assert_eq(r, e->result[state], "%s %d in state '%s': %d, expected %d",
				     command_verb_name(e->verb), e->number, class_names[state], r,
				     e->result[state]);
			if (state == BUSY_WITH_WAITER) {
				/* Whatever freed a unit went to the waiter, in FIFO order. */
				bool freed =
				    r == 0 && (e->verb == VERB_UNLOCK || e->verb == VERB_RELAX ||
					       (e->verb == VERB_LIMIT && e->number > 1) ||
					       (e->verb == VERB_SET && e->number > 0));
				if (freed) {
					cr_assert(wait_completions(1),
						  "%s did not reach the waiter",
						  command_verb_name(e->verb));
					cr_assert_eq(last_error, 0);
				} else {
					cr_assert_eq(attribute(s, "waiting"), 1,
						     "%s took the waiter away",
						     command_verb_name(e->verb));
				}
			}
			if (e->home[state] >= 0) {
				/* The waiter may take what became free: settle first. */
				usleep(state == BUSY_WITH_WAITER ? 20000 : 0);
				cr_assert_eq(attribute(s, "value"), e->home[state],
					     "%s %d in state '%s': value %d, expected %d",
					     command_verb_name(e->verb), e->number,
					     class_names[state], attribute(s, "value"),
					     e->home[state]);
			}
			if (state != REMOVED) {
				store_release_owner(store, &acquirer, "test");
				store_close_semaphore(store, s);
				cr_assert_eq(store_unlink(store, STORE_ROOT_INO, name), 0);
				if (state == BUSY_WITH_WAITER && completions == 0)
					cr_assert(wait_completions(1), "the waiter was not ended");
			} else {
				store_close_semaphore(store, s);
			}
			checked++;
		}
	}
	cr_assert_eq(checked, 72);
	cr_assert_eq(fake_live(), 0, "every backend counter went with its semaphore");
}

/* relax with waiters: every current waiter completes, the value stays. */
Test(rules, relax_completes_every_waiter_and_keeps_the_value)
{
	struct semaphore *s = make(FREE, "r");
	cr_assert_eq(now(s, VERB_LOCK, 0, NULL), 0);
	cr_assert_eq(now(s, VERB_LOCK, 0, NULL), 0);
	struct request waiters[3];
	for (int i = 0; i < 3; i++)
		cr_assert_eq(run(s, &waiters[i], VERB_LOCK, COMMAND_NO_TIMEOUT, 0, NULL),
			     STORE_QUEUED);
	cr_assert_eq(now(s, VERB_RELAX, 0, NULL), 0);
	cr_assert(wait_completions(3));
	cr_assert_eq(last_error, 0);
	cr_assert_eq(attribute(s, "value"), 0);
	cr_assert_eq(attribute(s, "waiting"), 0);
	store_close_semaphore(store, s);
}

/* Waiters are served in arrival order, each by its own deadline. */
Test(rules, waiters_in_fifo_order_and_deadlines)
{
	struct semaphore *s = make(BUSY_WITH_WAITER, "f");
	struct request timed;
	cr_assert_eq(run(s, &timed, VERB_LOCK, 0.1, 0, NULL), STORE_QUEUED);
	cr_assert(wait_completions(1), "the timed waiter did not time out");
	cr_assert_eq(last_error, ETIMEDOUT);
	cr_assert_eq(attribute(s, "waiting"), 1, "the first waiter is still queued");
	cr_assert_eq(now(s, VERB_UNLOCK, 0, NULL), 0);
	cr_assert(wait_completions(2));
	cr_assert_eq(last_error, 0, "the first waiter got the unit");
	cr_assert_eq(attribute(s, "value"), 0);
	store_close_semaphore(store, s);
}

/* A unit another process adds past the limit is taken back before a grant. */
Test(rules, an_outside_excess_is_taken_back)
{
	struct semaphore *s = make(FREE, "o");
	int handle = attribute(s, "semid");
	fake_outside_adjust(handle, 3); /* 5 at home on limit 2 */
	cr_assert_eq(now(s, VERB_LOCK, 0, NULL), 0);
	cr_assert_eq(now(s, VERB_LOCK, 0, NULL), 0);
	cr_assert_eq(now(s, VERB_LOCK, 0, NULL), -EAGAIN, "an outside unit was handed out");
	cr_assert_eq(fake_value(handle), 0);
	store_close_semaphore(store, s);
}

/* Waits up to 2 s (two sweeps of the monitor and more) for the value. */
static bool value_becomes(int handle, int value)
{
	for (int i = 0; i < 200 && fake_value(handle) != value; i++)
		usleep(10000);
	return fake_value(handle) == value;
}

/* The monitor asks the value only of counters whose stamp moved: a quiet
 * semaphore costs nothing a sweep, and an outside change is still seen. */
Test(rules, the_monitor_asks_only_counters_that_changed)
{
	struct semaphore *s = make(FREE, "quiet");
	int handle = attribute(s, "semid");
	usleep(700000); /* asked once after its last change, then settled */
	int asks = fake_asks(handle);
	usleep(800000); /* three sweeps or more */
	cr_assert_eq(fake_asks(handle), asks, "a counter that did not change was asked again");
	fake_outside_adjust(handle, 3); /* 5 at home on limit 2 */
	cr_assert(value_becomes(handle, 2), "the outside change was not seen: value %d",
		  fake_value(handle));
	cr_assert_gt(fake_asks(handle), asks);
	store_close_semaphore(store, s);
}

/* A backend without stamps: every counter is asked every sweep. */
Test(rules, without_stamps_the_monitor_asks_every_counter)
{
	fake_stamps_off(true);
	struct semaphore *s = make(FREE, "unstamped");
	int handle = attribute(s, "semid");
	usleep(700000);
	int asks = fake_asks(handle);
	usleep(800000);
	cr_assert_geq(fake_asks(handle), asks + 2, "asked %d times in three sweeps",
		      fake_asks(handle) - asks);
	fake_outside_adjust(handle, 3);
	cr_assert(value_becomes(handle, 2), "value %d", fake_value(handle));
	store_close_semaphore(store, s);
}

/* The counter removed from outside: the semaphore is gone (EIDRM). */
Test(rules, a_counter_removed_from_outside_ends_the_semaphore)
{
	struct semaphore *s = make(PARTLY_OUT, "x");
	fake_remove(attribute(s, "semid"));
	cr_assert_eq(now(s, VERB_UNLOCK, 0, NULL), -EIDRM);
	cr_assert_eq(now(s, VERB_LOCK, 0, NULL), -EIDRM);
	store_close_semaphore(store, s);
}

/* The journal's lines from `first_seq` on, as one string. */
static char *journal_from(struct semaphore *s, const char *first_seq)
{
	static char buffer[16384];
	uint64_t at = 0;
	size_t n = store_read_journal(store, s, &at, buffer, sizeof(buffer) - 1);
	buffer[n] = '\0';
	char *from = strstr(buffer, first_seq);
	cr_assert_not_null(from, "%s", buffer);
	while (from > buffer && from[-1] != '\n')
		from--;
	return from;
}

static int holders_of(struct semaphore *s, const char *who)
{
	char *text;
	int count = 0;
	cr_assert_geq(report_attribute(store, s, "holders", &text), 0);
	for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n"))
		count += strcmp(line, who) == 0;
	free(text);
	return count;
}

/* Pipelined lock/unlock requests as one run: each gets the result it would
 * get alone, the run ends before the first that would wait, and the journal
 * reads as if they had come one by one. */
Test(rules, a_run_of_requests_gives_each_its_own_result)
{
	struct semaphore *s = make(FREE, "run"); /* limit 2, both units home */
	int handle = attribute(s, "semid");
	struct request other;
	cr_assert_eq(run(s, &other, VERB_LOCK, 0, 0, NULL), 0); /* "test" holds one */
	const enum command_verb verbs[] = {VERB_UNLOCK, VERB_UNLOCK, VERB_LOCK, VERB_LOCK,
					   VERB_UNLOCK, VERB_LOCK,   VERB_LOCK};
	struct command commands[7];
	int results[7];
	uint64_t tokens[7] = {0};
	for (int i = 0; i < 7; i++)
		commands[i] = (struct command){.verb = verbs[i], .timeout = COMMAND_NO_TIMEOUT};

	/* value 1: unlock -> 2; unlock: all home (EOVERFLOW); lock -> 1; lock
	 * -> 0; unlock -> 1; lock -> 0; the last lock would wait. */
	cr_assert_eq(store_submit_run(store, s, "run", commands, 7, results, tokens), 6);
	const int expected[] = {0, -EOVERFLOW, 0, 0, 0, 0};
	for (int i = 0; i < 6; i++)
		cr_assert_eq(results[i], expected[i], "request %d: %d", i, results[i]);
	cr_assert(tokens[2] > 0 && tokens[3] == tokens[2] + 1 && tokens[5] == tokens[3] + 1);
	cr_assert_eq(fake_value(handle), 0);
	/* The first unlock gave back "test"'s unit (the run held none yet);
	 * "run" holds the two it locked last. */
	cr_assert_eq(holders_of(s, "test"), 0);
	cr_assert_eq(holders_of(s, "run"), 2);
	char *lines = journal_from(s, "unlock by=run");
	const char *events[] = {"unlock by=run value=2", "lock by=run value=1",
				"lock by=run value=0", "unlock by=run value=1",
				"lock by=run value=0"};
	for (int i = 0; i < 5; i++) {
		char *end = strchr(lines, '\n');
		cr_assert_not_null(end);
		*end = '\0';
		cr_assert(strstr(lines, events[i]), "line %d: %s", i, lines);
		lines = end + 1;
	}
	cr_assert_eq(*lines, '\0', "more lines than requests: %s", lines);
	/* The one that would wait, alone, waits. */
	cr_assert_eq(now(s, VERB_LOCK, 0, NULL), -EAGAIN);
	store_close_semaphore(store, s);
}

/* Another process moves the value between the run's look and its move: the
 * move fails whole, nothing is booked, and the requests go one at a time. */
Test(rules, a_run_overtaken_from_outside_takes_nothing)
{
	struct semaphore *s = make(FREE, "race");
	int handle = attribute(s, "semid");
	char *before = strdup(journal_from(s, "seq="));
	struct command commands[2] = {{.verb = VERB_LOCK}, {.verb = VERB_LOCK}};
	int results[2];
	uint64_t tokens[2];

	fake_outside_adjust_before_steps(handle, -2); /* both units, taken outside */
	cr_assert_eq(store_submit_run(store, s, "run", commands, 2, results, tokens), 0);
	cr_assert_eq(fake_value(handle), 0);
	cr_assert_eq(holders_of(s, "run"), 0);
	cr_assert_str_eq(journal_from(s, "seq="), before);
	cr_assert_eq(now(s, VERB_LOCK, 0, NULL), -EAGAIN);
	free(before);
	store_close_semaphore(store, s);
}

/* A queue decides who is next: a run may not pass a waiter. */
Test(rules, a_run_does_not_pass_a_waiter)
{
	struct semaphore *s = make(BUSY_WITH_WAITER, "queue");
	struct command commands[2] = {{.verb = VERB_UNLOCK}, {.verb = VERB_LOCK}};
	int results[2];
	uint64_t tokens[2];

	cr_assert_eq(store_submit_run(store, s, "run", commands, 2, results, tokens), 0);
	cr_assert_eq(now(s, VERB_UNLOCK, 0, NULL), 0); /* to the waiter */
	cr_assert(wait_completions(1));
	cr_assert_eq(last_error, 0);
	cr_assert_eq(holders_of(s, "run"), 0);
	store_close_semaphore(store, s);
}

/* An unlock with a lock waiting and nobody else asleep on the counter: the
 * unit goes straight to the waiter, never home (no move of the counter);
 * here the unlocker and the waiter are one holder ("test"), whose record
 * the unlock counts down to 0 and the grant up again. */
Test(rules, an_unlock_hands_its_unit_straight_to_the_waiter)
{
	struct semaphore *s = make(BUSY_WITH_WAITER, "direct");
	int handle = attribute(s, "semid");
	int moves = fake_moves(handle);
	cr_assert_eq(now(s, VERB_UNLOCK, 0, NULL), 0);
	cr_assert(wait_completions(1));
	cr_assert_eq(last_error, 0);
	cr_assert_gt(queued.waiter.token, 0);
	cr_assert_eq(fake_moves(handle), moves, "the unit went through the counter");
	cr_assert_eq(fake_value(handle), 0);
	cr_assert_eq(holders_of(s, "test"), 1);
	cr_assert_eq(attribute(s, "waiting"), 0);
	char *lines = journal_from(s, "unlock by=test");
	cr_assert(strstr(lines, "unlock by=test value=1") &&
		      strstr(strstr(lines, "unlock by=test"), "lock by=test value=0"),
		  "%s", lines);
	store_close_semaphore(store, s);
}

/* Another process asleep on the counter was there first: the unit goes home
 * through the counter, where the kernel's queue decides. */
Test(rules, an_unlock_with_an_outside_sleeper_goes_through_the_counter)
{
	struct semaphore *s = make(BUSY_WITH_WAITER, "fair");
	int handle = attribute(s, "semid");
	fake_outside_sleepers(handle, 1);
	int moves = fake_moves(handle);
	cr_assert_eq(now(s, VERB_UNLOCK, 0, NULL), 0);
	cr_assert(wait_completions(1)); /* this fake "process" never takes it */
	cr_assert_eq(last_error, 0);
	cr_assert_gt(fake_moves(handle), moves, "the unit did not go home");
	cr_assert_eq(fake_value(handle), 0);
	store_close_semaphore(store, s);
}

/* A semaphore of limit 1 whose unit `owner` holds (acquire, with undo) or a
 * plain lock holds (owner NULL), and `queued` waiting with `verb` (for
 * `waiting_owner`, if any). Both owners start afresh. */
static struct semaphore *held_with_one_waiting(const char *name, struct owner *owner,
					       enum command_verb verb, struct owner *waiting_owner)
{
	if (owner)
		memset(owner, 0, sizeof(*owner));
	if (waiting_owner)
		memset(waiting_owner, 0, sizeof(*waiting_owner));
	struct semaphore *s = make(FREE, name);
	cr_assert_eq(now(s, VERB_LIMIT, 1, NULL), 0);
	cr_assert_eq(now(s, owner ? VERB_ACQUIRE : VERB_LOCK, 0, owner), 0);
	cr_assert_eq(run(s, &queued, verb, COMMAND_NO_TIMEOUT, 0, waiting_owner), STORE_QUEUED);
	return s;
}

static struct owner giver, taker;

/* Every kind of hand-off goes straight to the head when nobody else sleeps
 * on the counter: the value never moves, and the units held with undo (what
 * the kernel gives back if the daemon dies) are exactly the acquired ones. */
Test(rules, a_release_hands_its_unit_straight_to_a_queued_acquire)
{
	struct semaphore *s = held_with_one_waiting("pass", &giver, VERB_ACQUIRE, &taker);
	int handle = attribute(s, "semid");
	int moves = fake_moves(handle);
	cr_assert_eq(fake_undo_units(handle), 1);
	cr_assert_eq(now(s, VERB_RELEASE, 0, &giver), 0);
	cr_assert(wait_completions(1));
	cr_assert_eq(last_error, 0);
	cr_assert_gt(queued.waiter.token, 0);
	cr_assert_eq(fake_moves(handle), moves, "the unit went through the counter");
	cr_assert_eq(fake_value(handle), 0);
	cr_assert_eq(fake_undo_units(handle), 1, "the taker's unit is not held with undo");
	char *lines = journal_from(s, "release by=test");
	cr_assert(strstr(lines, "release by=test value=1") &&
		      strstr(strstr(lines, "release by=test"), "acquire by=test value=0"),
		  "%s", lines);
	cr_assert_eq(now(s, VERB_RELEASE, 0, &taker), 0);
	cr_assert_eq(fake_value(handle), 1);
	cr_assert_eq(fake_undo_units(handle), 0);
	cr_assert_eq(now(s, VERB_RELEASE, 0, &giver), -ENOLCK, "the giver still holds a unit");
	store_close_semaphore(store, s);
}

Test(rules, an_unlock_hands_a_plain_unit_to_a_queued_acquire_as_one_with_undo)
{
	struct semaphore *s = held_with_one_waiting("plain-to-undo", NULL, VERB_ACQUIRE, &taker);
	int handle = attribute(s, "semid");
	int moves = fake_moves(handle);
	cr_assert_eq(now(s, VERB_UNLOCK, 0, NULL), 0);
	cr_assert(wait_completions(1));
	cr_assert_eq(last_error, 0);
	cr_assert_eq(fake_moves(handle), moves, "the unit went through the counter");
	cr_assert_eq(fake_value(handle), 0);
	cr_assert_eq(fake_undo_units(handle), 1);
	cr_assert_eq(now(s, VERB_UNLOCK, 0, NULL), -EOVERFLOW, "the acquired unit was unlocked");
	cr_assert_eq(now(s, VERB_RELEASE, 0, &taker), 0);
	cr_assert_eq(fake_value(handle), 1);
	cr_assert_eq(fake_undo_units(handle), 0);
	store_close_semaphore(store, s);
}

Test(rules, a_release_hands_its_unit_to_a_queued_lock_as_a_plain_one)
{
	struct semaphore *s = held_with_one_waiting("undo-to-plain", &giver, VERB_LOCK, NULL);
	int handle = attribute(s, "semid");
	int moves = fake_moves(handle);
	cr_assert_eq(now(s, VERB_RELEASE, 0, &giver), 0);
	cr_assert(wait_completions(1));
	cr_assert_eq(last_error, 0);
	cr_assert_eq(fake_moves(handle), moves, "the unit went through the counter");
	cr_assert_eq(fake_value(handle), 0);
	cr_assert_eq(fake_undo_units(handle), 0, "a plain unit is still held with undo");
	cr_assert_eq(holders_of(s, "test"), 1);
	cr_assert_eq(now(s, VERB_UNLOCK, 0, NULL), 0);
	cr_assert_eq(fake_value(handle), 1);
	store_close_semaphore(store, s);
}

/* An owner that goes (its file closed, its connection gone) gives its unit
 * straight to the head as well. */
Test(rules, a_closing_owner_hands_its_unit_straight_to_a_queued_acquire)
{
	struct semaphore *s = held_with_one_waiting("close-pass", &giver, VERB_ACQUIRE, &taker);
	int handle = attribute(s, "semid");
	int moves = fake_moves(handle);
	store_release_owner(store, &giver, "test");
	cr_assert(wait_completions(1));
	cr_assert_eq(last_error, 0);
	cr_assert_eq(fake_moves(handle), moves, "the unit went through the counter");
	cr_assert_eq(fake_value(handle), 0);
	cr_assert_eq(fake_undo_units(handle), 1);
	char *lines = journal_from(s, "reason=close");
	cr_assert(strstr(lines, "release by=test value=1") && strstr(lines, "reason=close") &&
		      strstr(strstr(lines, "reason=close"), "acquire by=test value=0"),
		  "%s", lines);
	store_release_owner(store, &taker, "test");
	cr_assert_eq(fake_value(handle), 1);
	cr_assert_eq(fake_undo_units(handle), 0);
	store_close_semaphore(store, s);
}

/* With another process asleep on the counter, a release goes home through
 * it too; our helper then takes it for the queued acquire, with undo. */
Test(rules, a_release_with_an_outside_sleeper_goes_through_the_counter)
{
	struct semaphore *s = held_with_one_waiting("fair-release", &giver, VERB_ACQUIRE, &taker);
	int handle = attribute(s, "semid");
	fake_outside_sleepers(handle, 1);
	int moves = fake_moves(handle);
	cr_assert_eq(now(s, VERB_RELEASE, 0, &giver), 0);
	cr_assert(wait_completions(1)); /* this fake "process" never takes it */
	cr_assert_eq(last_error, 0);
	cr_assert_gt(fake_moves(handle), moves, "the unit did not go home");
	cr_assert_eq(fake_value(handle), 0);
	cr_assert_eq(fake_undo_units(handle), 1);
	cr_assert_eq(now(s, VERB_RELEASE, 0, &taker), 0);
	store_close_semaphore(store, s);
}

/* A kernel that takes fewer operations in one semop (a lower SEMOPM): the
 * run that was refused goes one at a time, later runs are smaller. */
Test(rules, runs_shrink_to_what_the_backend_takes)
{
	struct semaphore *s = make(FREE, "small"); /* limit 2 */
	struct command commands[10];
	int results[10];
	uint64_t tokens[10];
	for (int i = 0; i < 10; i++)
		commands[i] = (struct command){.verb = i % 2 ? VERB_UNLOCK : VERB_LOCK};
	fake_steps_max(4);
	size_t done = 0;
	int tries = 0;
	while (done == 0 && tries++ < 5)
		done = store_submit_run(store, s, "run", commands, 10, results, tokens);
	cr_assert_gt(done, 0, "no run after %d tries", tries);
	cr_assert_leq(done, 4);
	cr_assert_gt(tries, 1, "the first run was not refused");
	for (size_t i = 0; i < done; i++)
		cr_assert_eq(results[i], 0);
	cr_assert_eq(fake_value(attribute(s, "semid")), 2);
	store_close_semaphore(store, s);
}
