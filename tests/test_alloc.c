/* test_alloc.c: an allocation that fails while a unit is granted takes
 * nothing. Linked with -Wl,--wrap=calloc, so that the store's calloc (a
 * holder record) fails when a test asks it to. Real SysV sets. */
#include "store.h"
#include "report.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void *__real_calloc(size_t count, size_t size);
void *__wrap_calloc(size_t count, size_t size);

static atomic_int fail_callocs; /* this many callocs of a holder's size fail */
static size_t holder_size;	/* learnt from the first grant */

void *__wrap_calloc(size_t count, size_t size)
{
	if (count == 1 && size == holder_size && atomic_load(&fail_callocs) > 0) {
		atomic_fetch_sub(&fail_callocs, 1);
		return NULL;
	}
	return __real_calloc(count, size);
}

static struct store *store;
static char state_dir[64];
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t changed = PTHREAD_COND_INITIALIZER;
static int completions, last_error;

static void complete(struct waiter *waiter, int error)
{
	(void)waiter;
	pthread_mutex_lock(&lock);
	completions++;
	last_error = error;
	pthread_cond_broadcast(&changed);
	pthread_mutex_unlock(&lock);
}

static void setup(void)
{
	char error[256];
	snprintf(state_dir, sizeof(state_dir), "/tmp/semfs-test.alloc-XXXXXX");
	cr_assert_not_null(mkdtemp(state_dir));
	struct store_options options = {
	    .state_dir = state_dir, .default_limit = 1, .journal_max = 65536};
	cr_assert_eq(store_open(&store, &options, error, sizeof(error)), 0, "%s", error);
}

static void teardown(void)
{
	char command[128];
	store_shutdown(store);
	store_unlink(store, STORE_ROOT_INO, "a");
	store_close(store);
	snprintf(command, sizeof(command), "rm -rf %s", state_dir);
	cr_assert_eq(system(command), 0);
}

TestSuite(alloc, .init = setup, .fini = teardown, .timeout = 30);

struct request {
	struct waiter waiter;
	struct command command;
};

static int submit(struct semaphore *s, struct request *r, enum command_verb verb, double timeout,
		  struct owner *owner)
{
	memset(r, 0, sizeof(*r));
	r->command = (struct command){.verb = verb, .timeout = timeout};
	r->waiter.commands = &r->command;
	r->waiter.count = 1;
	r->waiter.owner = owner;
	r->waiter.complete = complete;
	snprintf(r->waiter.who, sizeof(r->waiter.who), "test");
	return store_submit(store, s, &r->waiter);
}

/* The error of the `count`th completion, once it came. */
static int wait_error(int count)
{
	pthread_mutex_lock(&lock);
	while (completions < count)
		pthread_cond_wait(&changed, &lock);
	int error = last_error;
	pthread_mutex_unlock(&lock);
	return error;
}

static int value_of(struct semaphore *s)
{
	char *text;
	cr_assert_geq(report_attribute(store, s, "value", &text), 0);
	int value = atoi(text);
	free(text);
	return value;
}

Test(alloc, a_failed_holder_record_takes_no_unit)
{
	struct store_attr attr;
	struct semaphore *s;
	struct request holder, waiter, unlocker;
	struct owner owner = {0};
	cr_assert_eq(store_create(store, STORE_ROOT_INO, "a", 0644, getuid(), getgid(), &attr), 0);
	cr_assert_eq(store_open_semaphore(store, attr.ino, &s), 0);
	/* Learn the holder's size: the one calloc a first grant makes. */
	holder_size = 0;
	for (size_t size = 16; size <= 512 && !holder_size; size += 8) {
		holder_size = size;
		atomic_store(&fail_callocs, 1);
		if (submit(s, &holder, VERB_ACQUIRE, 0, &owner) == -ENOMEM)
			break;
		atomic_store(&fail_callocs, 0);
		store_release_owner(store, &owner, "test");
		holder_size = 0;
	}
	atomic_store(&fail_callocs, 0);
	cr_assert_neq(holder_size, 0, "no grant failed for want of memory");
	cr_assert_eq(value_of(s), 1, "the uncontended grant kept the unit");

	/* Contended, one record short: the unlock cannot hand its unit straight
	 * to the waiter (no record for it), so the unit goes home and the
	 * helper, which can make one, hands it on. */
	cr_assert_eq(submit(s, &holder, VERB_LOCK, 0, NULL), 0);
	cr_assert_eq(submit(s, &waiter, VERB_ACQUIRE, COMMAND_NO_TIMEOUT, &owner), STORE_QUEUED);
	atomic_store(&fail_callocs, 1);
	cr_assert_eq(submit(s, &unlocker, VERB_UNLOCK, 0, NULL), 0);
	cr_assert_eq(wait_error(1), 0, "the waiter did not get the unit");
	cr_assert_eq(atomic_load(&fail_callocs), 0, "the direct hand-off made no record");
	cr_assert_eq(value_of(s), 0);
	store_release_owner(store, &owner, "test");
	cr_assert_eq(value_of(s), 1);

	/* Two records short: the helper wins the unit for a waiter whose holder
	 * record cannot be made either; the unit goes back, the waiter gets
	 * ENOMEM. */
	cr_assert_eq(submit(s, &holder, VERB_LOCK, 0, NULL), 0);
	cr_assert_eq(submit(s, &waiter, VERB_ACQUIRE, COMMAND_NO_TIMEOUT, &owner), STORE_QUEUED);
	atomic_store(&fail_callocs, 2);
	cr_assert_eq(submit(s, &unlocker, VERB_UNLOCK, 0, NULL), 0);
	int error = wait_error(2);
	atomic_store(&fail_callocs, 0);
	cr_assert_eq(error, ENOMEM);
	usleep(100000);
	cr_assert_eq(value_of(s), 1, "the handed unit was stranded");
	cr_assert_null(owner.holders);
	store_close_semaphore(store, s);
}
