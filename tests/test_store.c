/* test_store.c: the store's queue logic against real SysV semaphores, with a
 * fake completion in place of a front-end. Each test has its own state
 * directory and removes its semaphores (and so their SysV sets). */
#include "store.h"
#include "sysv.h"
#include "report.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sem.h>
#include <sys/wait.h>
#include <sys/ipc.h>
#include <unistd.h>

static struct store *store;
static char state_dir[64];
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t changed = PTHREAD_COND_INITIALIZER;
static int completed[16], errors[16], completed_count;

struct test_waiter {
	struct waiter waiter;
	struct command command;
	int id;
};

static void fake_complete(struct waiter *waiter, int error)
{
	struct test_waiter *t = (struct test_waiter *)waiter;
	pthread_mutex_lock(&lock);
	completed[completed_count] = t->id;
	errors[completed_count] = error;
	completed_count++;
	pthread_cond_broadcast(&changed);
	pthread_mutex_unlock(&lock);
}

static bool wait_completed(int count, int milliseconds)
{
	struct timespec until;
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += milliseconds / 1000;
	until.tv_nsec += (milliseconds % 1000) * 1000000L;
	if (until.tv_nsec >= 1000000000L) {
		until.tv_sec++;
		until.tv_nsec -= 1000000000L;
	}
	pthread_mutex_lock(&lock);
	while (completed_count < count)
		if (pthread_cond_timedwait(&changed, &lock, &until) != 0)
			break;
	bool ok = completed_count >= count;
	pthread_mutex_unlock(&lock);
	return ok;
}

static void setup(void)
{
	char error[256];
	snprintf(state_dir, sizeof(state_dir), "/tmp/semfs-test.store-XXXXXX");
	cr_assert_not_null(mkdtemp(state_dir));
	struct store_options options = {
	    .state_dir = state_dir, .default_limit = 1, .journal_max = 65536};
	cr_assert_eq(store_open(&store, &options, error, sizeof(error)), 0, "%s", error);
	completed_count = 0;
}

/* Remove every semaphore through the store (it removes the SysV sets), close it. */
static void teardown_store(void)
{
	store_shutdown(store);
	struct store_entry *entries;
	size_t count;
	if (store_list(store, STORE_ROOT_INO, &entries, &count) == 0) {
		for (size_t i = 0; i < count; i++)
			if (entries[i].kind == NODE_SEMAPHORE)
				store_unlink(store, STORE_ROOT_INO, entries[i].name);
		store_list_free(entries, count);
	}
	store_close(store);
	store = NULL;
}

static int stamped_semid = -1; /* a test's own set, removed even if it fails */

static void teardown(void)
{
	char command[160];
	if (stamped_semid >= 0)
		(void)semctl(stamped_semid, 0, IPC_RMID);
	stamped_semid = -1;
	if (store)
		teardown_store();
	snprintf(command, sizeof(command), "umount %s 2>/dev/null; rm -rf %s", state_dir,
		 state_dir);
	cr_assert_eq(system(command), 0);
}

TestSuite(store, .init = setup, .fini = teardown, .timeout = 30);

static uint64_t s_ino;

static struct semaphore *make(const char *name)
{
	struct store_attr attr;
	struct semaphore *semaphore;
	cr_assert_eq(store_create(store, STORE_ROOT_INO, name, 0644, getuid(), getgid(), &attr), 0);
	cr_assert_eq(store_open_semaphore(store, attr.ino, &semaphore), 0);
	s_ino = attr.ino;
	return semaphore;
}

static int submit_command(struct semaphore *s, struct test_waiter *t, int id,
			  struct command command, struct owner *owner)
{
	memset(t, 0, sizeof(*t));
	t->id = id;
	t->command = command;
	t->waiter.commands = &t->command;
	t->waiter.count = 1;
	t->waiter.owner = owner;
	t->waiter.complete = fake_complete;
	snprintf(t->waiter.who, sizeof(t->waiter.who), "test:%d", id);
	return store_submit(store, s, &t->waiter);
}

static int submit(struct semaphore *s, struct test_waiter *t, int id, enum command_verb verb,
		  double timeout, struct owner *owner)
{
	return submit_command(s, t, id, (struct command){.verb = verb, .timeout = timeout}, owner);
}

/* The holder takes the only unit; `count` lockers queue behind it, ids 0... */
static void queue_behind_holder(struct semaphore *s, struct test_waiter *holder,
				struct test_waiter *waiters, int count)
{
	cr_assert_eq(submit(s, holder, 9, VERB_LOCK, COMMAND_NO_TIMEOUT, NULL), 0);
	for (int i = 0; i < count; i++)
		cr_assert_eq(submit(s, &waiters[i], i, VERB_LOCK, COMMAND_NO_TIMEOUT, NULL),
			     STORE_QUEUED);
}

static int value_of(struct semaphore *s)
{
	char *text;
	cr_assert_geq(report_attribute(store, s, "value", &text), 0);
	int value = atoi(text);
	free(text);
	return value;
}

Test(store, uncontended_lock_is_immediate_and_contended_waits)
{
	struct semaphore *s = make("a");
	struct test_waiter w[3];
	cr_assert_eq(submit(s, &w[0], 0, VERB_LOCK, COMMAND_NO_TIMEOUT, NULL), 0);
	cr_assert_eq(value_of(s), 0);
	cr_assert_eq(submit(s, &w[1], 1, VERB_LOCK, 0, NULL), -EAGAIN);
	cr_assert_eq(submit(s, &w[1], 1, VERB_LOCK, COMMAND_NO_TIMEOUT, NULL), STORE_QUEUED);
	cr_assert_eq(submit(s, &w[2], 2, VERB_UNLOCK, 0, NULL), 0);
	cr_assert(wait_completed(1, 2000));
	cr_assert_eq(completed[0], 1);
	cr_assert_eq(errors[0], 0);
	cr_assert_eq(value_of(s), 0, "the unit went to the waiter");
	store_close_semaphore(store, s);
}

Test(store, fifo_order)
{
	struct semaphore *s = make("fifo");
	struct test_waiter holder, unlocker, w[3];
	queue_behind_holder(s, &holder, w, 3);
	for (int i = 0; i < 3; i++) {
		cr_assert_eq(submit(s, &unlocker, 10, VERB_UNLOCK, 0, NULL), 0);
		cr_assert(wait_completed(i + 1, 2000));
		cr_assert_eq(completed[i], i, "waiter %d served out of order", completed[i]);
	}
	store_close_semaphore(store, s);
}

Test(store, timeout_takes_nothing)
{
	struct semaphore *s = make("t");
	struct test_waiter holder, w;
	struct timespec start, end;
	cr_assert_eq(submit(s, &holder, 9, VERB_LOCK, COMMAND_NO_TIMEOUT, NULL), 0);
	clock_gettime(CLOCK_MONOTONIC, &start);
	cr_assert_eq(submit(s, &w, 1, VERB_LOCK, 0.2, NULL), STORE_QUEUED);
	cr_assert(wait_completed(1, 3000));
	clock_gettime(CLOCK_MONOTONIC, &end);
	double elapsed = (double)(end.tv_sec - start.tv_sec) + (end.tv_nsec - start.tv_nsec) / 1e9;
	cr_assert_eq(errors[0], ETIMEDOUT);
	cr_assert_geq(elapsed, 0.2);
	cr_assert_lt(elapsed, 1.0);
	cr_assert_eq(value_of(s), 0);
	store_close_semaphore(store, s);
}

Test(store, cancel_leaves_no_unit)
{
	struct semaphore *s = make("c");
	struct test_waiter holder, w, unlocker;
	queue_behind_holder(s, &holder, &w, 1);
	cr_assert(store_cancel(store, &w.waiter));
	cr_assert_not(store_cancel(store, &w.waiter), "cancelled twice");
	cr_assert_eq(submit(s, &unlocker, 2, VERB_UNLOCK, 0, NULL), 0);
	usleep(300000); /* the helper would have handed it on by now */
	cr_assert_eq(value_of(s), 1, "a cancelled waiter kept a unit");
	cr_assert_eq(completed_count, 0, "a cancelled waiter was completed");
	store_close_semaphore(store, s);
}

Test(store, interrupt_before_queueing_fails_with_eintr)
{
	struct semaphore *s = make("i");
	struct test_waiter holder, w;
	cr_assert_eq(submit(s, &holder, 9, VERB_LOCK, COMMAND_NO_TIMEOUT, NULL), 0);
	memset(&w, 0, sizeof(w));
	cr_assert_not(store_cancel(store, &w.waiter)); /* as libfuse does at registration */
	w.command = (struct command){.verb = VERB_LOCK, .timeout = COMMAND_NO_TIMEOUT};
	w.waiter.commands = &w.command;
	w.waiter.count = 1;
	w.waiter.complete = fake_complete;
	cr_assert_eq(store_submit(store, s, &w.waiter), -EINTR);
	store_close_semaphore(store, s);
}

Test(store, relax_completes_every_waiter_value_unchanged)
{
	struct semaphore *s = make("r");
	struct test_waiter holder, relaxer, w[5];
	queue_behind_holder(s, &holder, w, 5);
	cr_assert_eq(submit(s, &relaxer, 10, VERB_RELAX, 0, NULL), 0);
	cr_assert(wait_completed(5, 2000));
	for (int i = 0; i < 5; i++)
		cr_assert_eq(errors[i], 0);
	cr_assert_eq(value_of(s), 0);
	store_close_semaphore(store, s);
}

Test(store, acquire_belongs_to_owner_and_returns_on_release)
{
	struct semaphore *s = make("o");
	struct owner owner = {0};
	struct test_waiter w;
	cr_assert_eq(submit(s, &w, 1, VERB_RELEASE, 0, &owner), -ENOLCK);
	cr_assert_eq(submit(s, &w, 1, VERB_ACQUIRE, COMMAND_NO_TIMEOUT, &owner), 0);
	cr_assert_eq(value_of(s), 0);
	char *holders;
	cr_assert_gt(report_attribute(store, s, "holders", &holders), 0);
	cr_assert(strstr(holders, "test:1"), "%s", holders);
	free(holders);
	store_release_owner(store, &owner, "test");
	cr_assert_eq(value_of(s), 1);
	cr_assert_null(owner.holders);
	store_close_semaphore(store, s);
}

Test(store, unlink_fails_waiters_with_eidrm)
{
	struct semaphore *s = make("d");
	struct test_waiter holder, w;
	queue_behind_holder(s, &holder, &w, 1);
	cr_assert_eq(store_unlink(store, STORE_ROOT_INO, "d"), 0);
	cr_assert(wait_completed(1, 2000));
	cr_assert_eq(errors[0], EIDRM);
	cr_assert_eq(submit(s, &w, 2, VERB_UNLOCK, 0, NULL), -EIDRM);
	store_close_semaphore(store, s);
}

Test(store, limit_and_set_are_bounded)
{
	struct semaphore *s = make("l");
	struct test_waiter w;
	memset(&w, 0, sizeof(w));
	struct command c = {.verb = VERB_LIMIT, .number = 3};
	w.waiter.commands = &c;
	w.waiter.count = 1;
	cr_assert_eq(store_submit(store, s, &w.waiter), 0);
	cr_assert_eq(value_of(s), 3);
	c = (struct command){.verb = VERB_SET, .number = 4};
	cr_assert_eq(store_submit(store, s, &w.waiter), -ERANGE);
	c = (struct command){.verb = VERB_SET, .number = 1};
	cr_assert_eq(store_submit(store, s, &w.waiter), 0);
	cr_assert_eq(value_of(s), 1);
	c = (struct command){.verb = VERB_LIMIT, .number = 1};
	cr_assert_eq(store_submit(store, s, &w.waiter), -EBUSY, "2 units in use, limit 1");
	c = (struct command){.verb = VERB_UNLOCK};
	cr_assert_eq(store_submit(store, s, &w.waiter), 0);
	cr_assert_eq(store_submit(store, s, &w.waiter), 0);
	cr_assert_eq(store_submit(store, s, &w.waiter), -EOVERFLOW);
	store_close_semaphore(store, s);
}

/* ---- the limit holds against every actor (issue 12) ----------------------- */

static int run_one(struct semaphore *s, enum command_verb verb, int number, struct owner *owner)
{
	struct test_waiter w;
	return submit_command(s, &w, 99, (struct command){.verb = verb, .number = number}, owner);
}

static int semid_of(struct semaphore *s)
{
	char *text;
	cr_assert_geq(report_attribute(store, s, "semid", &text), 0);
	int semid = atoi(text);
	free(text);
	return semid;
}

static int kernel_value(struct semaphore *s)
{
	int value = semctl(semid_of(s), 0, GETVAL);
	cr_assert_geq(value, 0);
	return value;
}

Test(store, unlock_never_hands_out_an_acquired_unit)
{
	struct semaphore *s = make("held");
	struct owner owner = {0};
	struct test_waiter w;
	cr_assert_eq(submit(s, &w, 1, VERB_ACQUIRE, COMMAND_NO_TIMEOUT, &owner), 0);
	cr_assert_eq(run_one(s, VERB_UNLOCK, 0, NULL), -EOVERFLOW,
		     "unlock returned the acquire holder's unit");
	cr_assert_eq(kernel_value(s), 0);
	store_release_owner(store, &owner, "test");
	cr_assert_eq(kernel_value(s), 1);
	cr_assert_eq(run_one(s, VERB_LOCK, 0, NULL), 0);
	cr_assert_eq(run_one(s, VERB_LOCK, 0, NULL), -EAGAIN, "two holders on limit 1");
	cr_assert_eq(run_one(s, VERB_UNLOCK, 0, NULL), 0);
	store_close_semaphore(store, s);
}

Test(store, set_is_bounded_by_acquired_units)
{
	struct semaphore *s = make("set");
	struct owner owner = {0};
	struct test_waiter w;
	cr_assert_eq(run_one(s, VERB_LIMIT, 2, NULL), 0);
	cr_assert_eq(submit(s, &w, 1, VERB_ACQUIRE, COMMAND_NO_TIMEOUT, &owner), 0);
	cr_assert_eq(run_one(s, VERB_SET, 2, NULL), -ERANGE, "set gave out an acquired unit");
	cr_assert_eq(run_one(s, VERB_SET, 1, NULL), 0);
	cr_assert_eq(run_one(s, VERB_SET, 0, NULL), 0);
	store_release_owner(store, &owner, "test");
	cr_assert_eq(kernel_value(s), 1);
	store_close_semaphore(store, s);
}

Test(store, sysv_set_admits_whom_the_file_admits)
{
	struct semaphore *s = make("perm"); /* 0644, the test's uid */
	struct semid_ds info;
	cr_assert_eq(semctl(semid_of(s), 0, IPC_STAT, &info), 0);
	cr_assert_eq(info.sem_perm.mode & 0777, 0644, "set mode %o", info.sem_perm.mode & 0777);
	cr_assert_eq(info.sem_perm.uid, getuid());
	mode_t mode = 0600;
	uid_t nobody = 65534;
	struct store_attr attr;
	cr_assert_eq(store_setattr(store, s_ino, &mode, &nobody, NULL, NULL, &attr), 0);
	cr_assert_eq(semctl(semid_of(s), 0, IPC_STAT, &info), 0);
	cr_assert_eq(info.sem_perm.mode & 0777, 0600);
	cr_assert_eq(info.sem_perm.uid, nobody);
	store_close_semaphore(store, s);
}

Test(store, an_outside_change_past_the_limit_is_reverted)
{
	struct semaphore *s = make("outside");
	struct sembuf up = {.sem_num = 0, .sem_op = 3, .sem_flg = IPC_NOWAIT};
	cr_assert_eq(semop(semid_of(s), &up, 1), 0); /* value 4 on limit 1 */
	cr_assert_eq(run_one(s, VERB_LOCK, 0, NULL), 0);
	cr_assert_eq(run_one(s, VERB_LOCK, 0, NULL), -EAGAIN, "an outside excess was handed out");
	cr_assert_eq(kernel_value(s), 0);
	char buffer[4096];
	uint64_t at = 0;
	size_t n = store_read_journal(store, s, &at, buffer, sizeof(buffer) - 1);
	buffer[n] = '\0';
	cr_assert(strstr(buffer, "reverted=3"), "%s", buffer);
	store_start(store);
	/* Value 3 on limit 1 with one plain unit out: the kernel cannot say who
	 * holds a plain unit, so the value is brought back to the limit. */
	cr_assert_eq(semop(semid_of(s), &up, 1), 0);
	usleep(600000); /* the monitor reverts it by itself */
	cr_assert_eq(kernel_value(s), 1);
	store_close_semaphore(store, s);
}

/* A hand-off straight to the queue's head changes the kind of the unit in
 * the kernel where it must: a daemon that dies right after gives back what
 * its acquire owners held, and only that. A child plays the daemon: the
 * giver holds the unit (`give_with_undo`: acquire, else lock), the taker
 * queues (`take_with_undo`: acquire, else lock), the giver lets go, the
 * child exits holding the taker's unit. Returns the value after its exit:
 * the limit (1) if the taker's unit was held with undo, 0 if plain. */
static int value_after_a_handoff_and_a_crash(const char *name, bool give_with_undo,
					     bool take_with_undo)
{
	struct semaphore *s = make(name); /* limit 1 */
	int semid = semid_of(s);
	pid_t child = fork();
	cr_assert_geq(child, 0);
	if (child == 0) {
		static struct owner giver, taker;
		struct test_waiter held, waiting;
		int r = submit(s, &held, 1, give_with_undo ? VERB_ACQUIRE : VERB_LOCK, 0,
			       give_with_undo ? &giver : NULL);
		if (r != 0)
			_exit(10);
		r = submit(s, &waiting, 2, take_with_undo ? VERB_ACQUIRE : VERB_LOCK, -1,
			   take_with_undo ? &taker : NULL);
		if (r != STORE_QUEUED)
			_exit(11);
		if (run_one(s, give_with_undo ? VERB_RELEASE : VERB_UNLOCK, 0,
			    give_with_undo ? &giver : NULL) != 0)
			_exit(12);
		if (!wait_completed(1, 2000) || errors[0] != 0)
			_exit(13);
		_exit(semctl(semid, 0, GETVAL) == 0 ? 0 : 14); /* the unit is out */
	}
	int status;
	cr_assert_eq(waitpid(child, &status, 0), child);
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the child failed: %d",
		  WEXITSTATUS(status));
	int value = semctl(semid, 0, GETVAL);
	store_close_semaphore(store, s);
	return value;
}

Test(store, a_handed_off_acquire_unit_comes_back_when_the_daemon_dies)
{
	cr_assert_eq(value_after_a_handoff_and_a_crash("acquire-to-acquire", true, true), 1);
	cr_assert_eq(value_after_a_handoff_and_a_crash("lock-to-acquire", false, true), 1);
}

Test(store, a_handed_off_lock_unit_outlives_the_daemon)
{
	cr_assert_eq(value_after_a_handoff_and_a_crash("acquire-to-lock", true, false), 0);
	cr_assert_eq(value_after_a_handoff_and_a_crash("lock-to-lock", false, false), 0);
}

/* The monitor leaves a quiet set alone (its stamp did not move) but still
 * sees an outside change to it, through the kernel's own stamps. */
Test(store, an_outside_change_to_a_quiet_set_is_reverted)
{
	struct semaphore *s = make("quiet");
	store_start(store);
	sleep(3); /* its stamp settles: the monitor stops asking its value */
	struct sembuf up = {.sem_num = 0, .sem_op = 3, .sem_flg = IPC_NOWAIT};
	cr_assert_eq(semop(semid_of(s), &up, 1), 0); /* value 4 on limit 1 */
	int value = -1;
	for (int i = 0; i < 150 && (value = kernel_value(s)) != 1; i++)
		usleep(10000);
	cr_assert_eq(value, 1, "an outside change to a quiet set was not seen in 1.5 s");
	store_close_semaphore(store, s);
}

struct stamp_look {
	int semid;
	long long stamp;
	int seen;
};

static void note_stamp(void *arg, int semid, long long stamp)
{
	struct stamp_look *look = arg;
	if (semid == look->semid) {
		look->stamp = stamp;
		look->seen++;
	}
}

/* /proc/sysvipc/sem as the kernel writes it: the set is there once, and a
 * semop (otime) and a SETVAL (ctime) each stamp it >= the look's settled. */
Test(store, the_kernel_stamps_every_change_of_a_set)
{
	int semid = stamped_semid = semget(IPC_PRIVATE, 1, 0600);
	cr_assert_geq(semid, 0);
	struct stamp_look look = {.semid = semid};
	long long settled;
	cr_assert_eq(sysv_stamps(note_stamp, &look, &settled), 0);
	cr_assert_eq(look.seen, 1);
	struct sembuf up = {.sem_num = 0, .sem_op = 1};
	cr_assert_eq(semop(semid, &up, 1), 0);
	look.seen = 0;
	long long later;
	cr_assert_eq(sysv_stamps(note_stamp, &look, &later), 0);
	cr_assert_eq(look.seen, 1);
	cr_assert_geq(look.stamp, settled, "a semop left stamp %lld under %lld", look.stamp,
		      settled);
	cr_assert_geq(later, settled);
	sleep(2);
	cr_assert_eq(sysv_stamps(note_stamp, &look, &settled), 0);
	cr_assert_lt(look.stamp, settled, "an old stamp %lld is not settled (%lld)", look.stamp,
		     settled);
	cr_assert_eq(semctl(semid, 0, SETVAL, 5), 0);
	cr_assert_eq(sysv_stamps(note_stamp, &look, &later), 0);
	cr_assert_geq(look.stamp, settled, "a SETVAL left stamp %lld under %lld", look.stamp,
		      settled);
	cr_assert_eq(semctl(semid, 0, IPC_RMID), 0);
	stamped_semid = -1;
}

/* Two outside programs pass the unit back and forth; a waiter of ours still
 * gets it (it keeps its place in the kernel's queue). */
Test(store, outside_users_cannot_starve_our_waiters)
{
	struct semaphore *s = make("starve");
	struct test_waiter w;
	int semid = semid_of(s);
	struct sembuf down = {.sem_num = 0, .sem_op = -1}, up = {.sem_num = 0, .sem_op = 1};
	pid_t children[2];
	cr_assert_eq(semop(semid, &down, 1), 0); /* the first program holds it */
	for (int i = 0; i < 2; i++) {
		children[i] = fork();
		cr_assert_geq(children[i], 0);
		if (children[i] == 0) {
			if (i == 0) {
				usleep(300000);
				semop(semid, &up, 1);
			}
			for (int round = 0; round < 60; round++) {
				if (semop(semid, &down, 1) < 0)
					_exit(0);
				usleep(300000);
				semop(semid, &up, 1);
			}
			_exit(0);
		}
	}
	usleep(100000);
	cr_assert_eq(submit(s, &w, 1, VERB_LOCK, 4.0, NULL), STORE_QUEUED);
	usleep(200000);
	cr_assert(wait_completed(1, 6000));
	int error = errors[0];
	for (int i = 0; i < 2; i++) {
		kill(children[i], SIGKILL);
		waitpid(children[i], NULL, 0);
	}
	cr_assert_eq(error, 0, "our waiter was starved: %s", strerror(error));
	store_close_semaphore(store, s);
}

/* Waits until `count` processes sleep on the set (GETNCNT). */
static bool sleepers(int semid, int count)
{
	for (int t = 0; t < 300; t++) {
		if (semctl(semid, 0, GETNCNT) == count)
			return true;
		usleep(10000);
	}
	return false;
}

/* An unlock hands its unit straight to our queue's head only when nobody else
 * sleeps on the set: an outside program that waited in the kernel first
 * gets it from the kernel, and our waiter the one after. */
Test(store, an_unlock_passes_no_outside_sleeper)
{
	struct semaphore *s = make("order");
	struct test_waiter ours;
	int semid = semid_of(s);
	cr_assert_eq(run_one(s, VERB_LOCK, 0, NULL), 0);
	pid_t outside = fork();
	cr_assert_geq(outside, 0);
	if (outside == 0) {
		struct sembuf down = {.sem_num = 0, .sem_op = -1};
		_exit(semop(semid, &down, 1) == 0 ? 0 : 1); /* keeps the unit */
	}
	cr_assert(sleepers(semid, 1), "the outside program never slept");
	cr_assert_eq(submit(s, &ours, 1, VERB_LOCK, 10.0, NULL), STORE_QUEUED);
	cr_assert(sleepers(semid, 2), "our helper never slept");
	cr_assert_eq(run_one(s, VERB_UNLOCK, 0, NULL), 0);
	int status = -1;
	for (int t = 0; t < 300 && waitpid(outside, &status, WNOHANG) == 0; t++)
		usleep(10000);
	if (status == -1) {
		kill(outside, SIGKILL);
		waitpid(outside, NULL, 0);
	}
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0,
		  "the outside program that waited first did not get the unit");
	cr_assert_eq(completed_count, 0, "our waiter passed it");
	struct sembuf up = {.sem_num = 0, .sem_op = 1};
	cr_assert_eq(semop(semid, &up, 1), 0); /* the outside program's unit back */
	cr_assert(wait_completed(1, 3000));
	cr_assert_eq(errors[0], 0);
	store_close_semaphore(store, s);
}

Test(store, tokens_never_repeat_for_a_name)
{
	struct semaphore *s = make("token");
	struct test_waiter w;
	cr_assert_eq(submit(s, &w, 1, VERB_LOCK, 0, NULL), 0);
	uint64_t first = w.waiter.token;
	store_close_semaphore(store, s);
	cr_assert_eq(store_unlink(store, STORE_ROOT_INO, "token"), 0);
	s = make("token");
	cr_assert_eq(submit(s, &w, 1, VERB_LOCK, 0, NULL), 0);
	cr_assert_gt(w.waiter.token, first, "token %lu handed out again",
		     (unsigned long)w.waiter.token);
	store_close_semaphore(store, s);
}

static void open_store(void)
{
	char error[256];
	struct store_options options = {
	    .state_dir = state_dir, .default_limit = 1, .journal_max = 65536};
	cr_assert_eq(store_open(&store, &options, error, sizeof(error)), 0, "%s", error);
}

static void reopen(void)
{
	store_shutdown(store);
	store_close(store);
	open_store();
}

Test(store, a_second_store_on_one_state_dir_is_refused)
{
	char error[256] = "";
	struct store *second = NULL;
	struct store_options options = {
	    .state_dir = state_dir, .default_limit = 1, .journal_max = 65536};
	cr_assert_lt(store_open(&second, &options, error, sizeof(error)), 0);
	cr_assert(strstr(error, state_dir), "the refusal names the directory: %s", error);
}

Test(store, an_unreadable_record_is_set_aside)
{
	struct semaphore *s = make("good");
	store_close_semaphore(store, s);
	char path[128];
	snprintf(path, sizeof(path), "%s/tree/empty", state_dir);
	FILE *file = fopen(path, "w"); /* what a full disk at create left */
	cr_assert_not_null(file);
	fclose(file);
	reopen();
	struct store_attr attr;
	cr_assert_eq(store_lookup(store, STORE_ROOT_INO, "good", &attr), 0);
	store_forget(store, attr.nodeid, 1);
	cr_assert_eq(store_lookup(store, STORE_ROOT_INO, "empty", &attr), -ENOENT);
	cr_assert_neq(access(path, F_OK), 0, "the bad record is still in the tree");
}

/* A record that cannot be written refuses the change: nothing unsaved is
 * acknowledged, and the kernel value does not move. The state_dir is a small
 * tmpfs, made read-only, then full. */
/* `before STATE_DIR after` */
static void tmpfs_command(const char *before, const char *after)
{
	char command[256];
	snprintf(command, sizeof(command), "%s%s%s", before, state_dir, after);
	cr_assert_eq(system(command), 0, "%s", command);
}

/* The store again, on a small tmpfs mounted over its state_dir. */
static void reopen_on_tmpfs(void)
{
	if (geteuid() != 0)
		cr_skip_test("needs root to mount a tmpfs");
	store_shutdown(store);
	store_close(store);
	tmpfs_command("mount -t tmpfs -o size=256k tmpfs ", "");
	open_store();
}

Test(store, an_unsaved_change_is_refused)
{
	reopen_on_tmpfs();
	struct semaphore *s = make("disk");
	uint64_t ino = s_ino;
	int results[4];

	tmpfs_command("mount -o remount,ro ", "");
	results[0] = run_one(s, VERB_LIMIT, 5, NULL);
	mode_t mode = 0600;
	struct store_attr attr;
	results[1] = store_setattr(store, ino, &mode, NULL, NULL, NULL, &attr);
	tmpfs_command("mount -o remount,rw ", "");
	tmpfs_command("dd if=/dev/zero bs=4k 2>/dev/null of=", "/fill; true");
	results[2] = run_one(s, VERB_LIMIT, 5, NULL);
	results[3] = store_create(store, STORE_ROOT_INO, "new", 0644, getuid(), getgid(), &attr);
	int value = kernel_value(s);
	char *limit_text;
	cr_assert_geq(report_attribute(store, s, "limit", &limit_text), 0);
	int limit = atoi(limit_text);
	free(limit_text);
	cr_assert_eq(store_getattr(store, ino, &attr), 0);
	tmpfs_command("rm -f ", "/fill");
	store_close_semaphore(store, s);
	teardown_store();
	tmpfs_command("umount ", "");
	open_store();

	cr_assert_eq(results[0], -EROFS, "limit on a read-only state_dir: %d", results[0]);
	cr_assert_eq(results[1], -EROFS, "chmod on a read-only state_dir: %d", results[1]);
	cr_assert_eq(results[2], -ENOSPC, "limit on a full state_dir: %d", results[2]);
	cr_assert_eq(results[3], -ENOSPC, "create on a full state_dir: %d", results[3]);
	cr_assert_eq(value, 1, "the kernel value moved to %d", value);
	cr_assert_eq(limit, 1, "the limit changed to %d", limit);
	cr_assert_eq(attr.mode & 07777, 0644, "the mode changed");
}

static struct semaphore *open_existing(const char *name)
{
	struct store_attr attr;
	struct semaphore *semaphore;
	cr_assert_eq(store_lookup(store, STORE_ROOT_INO, name, &attr), 0);
	cr_assert_eq(store_open_semaphore(store, attr.ino, &semaphore), 0);
	store_forget(store, attr.nodeid, 1);
	s_ino = attr.ino;
	return semaphore;
}

static long attribute_of(struct semaphore *s, const char *name)
{
	char *text;
	cr_assert_geq(report_attribute(store, s, name, &text), 0);
	long value = strtol(text, NULL, 0);
	free(text);
	return value;
}

/* On tmpfs (the default /run/semfs) a new semaphore's record is written
 * into the file just made: the key is glibc's ftok() of the record itself,
 * nothing is left in tmp/, and the record brings it back after a restart. */
Test(store, a_record_on_tmpfs_is_the_file_its_key_was_made_from)
{
	reopen_on_tmpfs();
	struct semaphore *s = make("fresh");
	long key = attribute_of(s, "key");
	cr_assert_eq(run_one(s, VERB_LIMIT, 3, NULL), 0); /* a second record, renamed over */
	store_close_semaphore(store, s);
	char path[256], record[256] = "", leftover[256];
	snprintf(path, sizeof(path), "%s/tree/fresh", state_dir);
	snprintf(leftover, sizeof(leftover), "%s/tmp/record", state_dir);
	FILE *file = fopen(path, "r");
	cr_assert_not_null(file);
	size_t length = fread(record, 1, sizeof(record) - 1, file);
	fclose(file);
	record[length] = '\0';
	cr_assert(strstr(record, "limit=3\n") && strstr(record, "token="), "%s", record);
	cr_assert_neq(access(leftover, F_OK), 0, "a temporary record is left");
	reopen();
	s = open_existing("fresh");
	cr_assert_eq(attribute_of(s, "key"), key);
	cr_assert_eq(attribute_of(s, "limit"), 3);
	store_close_semaphore(store, s);
	/* The first record went into the very file ftok() looked at. */
	s = make("second");
	key = attribute_of(s, "key");
	store_close_semaphore(store, s);
	snprintf(path, sizeof(path), "%s/tree/second", state_dir);
	cr_assert_eq((long)ftok(path, (int)((unsigned long)key >> 24)), key,
		     "the key is not ftok() of its record");
	teardown_store();
	tmpfs_command("umount ", "");
	open_store();
}

/* A restart adopts only a set that is one semaphore made by our user, and
 * brings an adopted value down to the limit. */
Test(store, restore_adopts_only_its_own_set_and_value)
{
	struct semaphore *s = make("adopt");
	key_t key = (key_t)attribute_of(s, "key");
	int semid = semid_of(s);
	store_close_semaphore(store, s);
	s = make("over");
	struct sembuf up = {.sem_num = 0, .sem_op = 3, .sem_flg = IPC_NOWAIT};
	cr_assert_eq(semop(semid_of(s), &up, 1), 0);
	store_close_semaphore(store, s);
	store_shutdown(store);
	store_close(store);
	/* Another user's one-semaphore set now sits at the recorded key. */
	cr_assert_eq(semctl(semid, 0, IPC_RMID), 0);
	pid_t child = fork();
	cr_assert_geq(child, 0);
	if (child == 0)
		_exit(setgid(65534) < 0 || setuid(65534) < 0 ||
		      semget(key, 1, IPC_CREAT | IPC_EXCL | 0666) < 0);
	int status;
	cr_assert_eq(waitpid(child, &status, 0), child);
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "no foreign set made");
	int foreign = semget(key, 0, 0);
	cr_assert_geq(foreign, 0);
	open_store();
	s = open_existing("adopt");
	key_t now = (key_t)attribute_of(s, "key");
	store_close_semaphore(store, s);
	s = open_existing("over");
	int value = kernel_value(s);
	store_close_semaphore(store, s);
	struct semid_ds info;
	int foreign_alive = semctl(foreign, 0, IPC_STAT, &info);
	semctl(foreign, 0, IPC_RMID);
	cr_assert_neq(now, key, "adopted another user's set");
	cr_assert_eq(foreign_alive, 0, "the foreign set was touched");
	cr_assert_eq(info.sem_perm.cuid, 65534);
	cr_assert_eq(value, 1, "restored above the limit: %d", value);
}

/* Keys from one path (a record file's inode is reused at once by the next
 * one made): each create starts at the tag after the last that worked, and
 * with every tag of the path taken a random key still comes. */
Test(sysv, one_reused_path_gets_the_next_tag_and_then_random_keys)
{
	char path[] = "/tmp/semfs-ftok-XXXXXX";
	int fd = mkstemp(path);
	cr_assert_geq(fd, 0);
	close(fd);
	key_t keys[4] = {0};
	int semids[4] = {-1, -1, -1, -1}, occupied[255], taken = 0, made[5] = {0};
	/* The first set goes (its tag is free again): the next still moves on. */
	made[0] = sysv_create(path, 0600, &keys[0], &semids[0]);
	made[1] = sysv_create(path, 0600, &keys[1], &semids[1]);
	semctl(semids[0], 0, IPC_RMID);
	made[2] = sysv_create(path, 0600, &keys[0], &semids[0]);
	/* Every ftok key of the path taken by someone else. */
	for (int tag = 1; tag <= 255; tag++) {
		int id = semget(ftok(path, tag), 1, IPC_CREAT | IPC_EXCL | 0600);
		if (id >= 0)
			occupied[taken++] = id;
	}
	made[3] = sysv_create(path, 0600, &keys[2], &semids[2]);
	made[4] = sysv_create(path, 0600, &keys[3], &semids[3]);
	bool ftok_key = false;
	for (int tag = 1; tag <= 255; tag++)
		ftok_key |= keys[2] == ftok(path, tag) || keys[3] == ftok(path, tag);
	/* Cleaned up before any assertion can end the test. */
	for (int i = 0; i < 4; i++)
		if (semids[i] >= 0)
			semctl(semids[i], 0, IPC_RMID);
	for (int i = 0; i < taken; i++)
		semctl(occupied[i], 0, IPC_RMID);
	unlink(path);
	for (int i = 0; i < 5; i++)
		cr_assert_eq(made[i], 0, "create %d: %s", i, strerror(-made[i]));
	cr_assert_eq((keys[0] >> 24) & 0xff, ((keys[1] >> 24) & 0xff) % 255 + 1, "tags %d then %d",
		     (keys[1] >> 24) & 0xff, (keys[0] >> 24) & 0xff);
	cr_assert_not(ftok_key, "an ftok key that was taken");
	cr_assert_neq(keys[2], keys[3]);
}
