/* store_helper.c: waiting for units the backend does not have yet: the helper
 * thread of a contended semaphore. */
#include "store_internal.h"

#include <stdatomic.h>

/* Set by the kick signal in a helper thread: see helper_main. */
static __thread volatile sig_atomic_t helper_kicked;
/* The timeout the helper's semtimedop reads. A kick that lands after the
 * look at helper_kicked but before the kernel copied this (a signal is
 * handled only in user space) makes it zero: semtimedop then returns at
 * once instead of sleeping through the kick. Once in the kernel, the
 * pending signal ends the sleep. So no kick is lost. */
static __thread struct timespec helper_nap;

static void expire_waiters(struct store *store, struct semaphore *semaphore,
			   struct done_list *done);
static void hand_unit(struct store *store, struct semaphore *semaphore, struct done_list *done);
static struct timespec helper_timeout(struct store *store, struct semaphore *semaphore);
static bool helper_linger(struct store *store, struct semaphore *semaphore);

/* ---- the helper: one per contended semaphore ---------------------------- */

static void expire_waiters(struct store *store, struct semaphore *semaphore, struct done_list *done)
{
	struct timespec now;

	timespec_now(CLOCK_MONOTONIC, &now);
	for (struct waiter *waiter = semaphore->head, *next; waiter; waiter = next) {
		next = waiter->queue_next;
		if (!waiter->has_deadline || clock_compare(&waiter->deadline, &now) > 0)
			continue;
		queue_remove(semaphore, waiter);
		semaphore->timeouts++;
		store->timeouts_total++;
		journal_event(store, semaphore, "timeout", waiter->who, 0, NULL,
			      CHANGE_UNANNOUNCED);
		finish(store, waiter, -ETIMEDOUT, done);
	}
}

/* The helper won a unit (held with SEM_UNDO): the queue's head gets it. */
static void hand_unit(struct store *store, struct semaphore *semaphore, struct done_list *done)
{
	struct waiter *waiter = semaphore->head;
	/* The kernel woke us for a unit an outside semop added past the limit:
	 * keep it from everyone (held by nobody), and take back the rest. */
	int value = be_value(store, semaphore->semid);
	if (value >= 0 && value + (int)semaphore->acquired + 1 > (int)semaphore->limit &&
	    be_undo_to_plain(store, semaphore->semid) == 0) {
		journal_event(store, semaphore, "outside-change", "sysv", 0, "reverted=1",
			      CHANGE_UNANNOUNCED);
		(void)limit_guard(store, semaphore);
		return;
	}
	if (!waiter) {
		(void)be_adjust(store, semaphore->semid, 1, true); /* back home */
		return;
	}
	const struct command *command = &waiter->commands[waiter->next];
	struct holder *holder;
	int r = grant_prepare(store, semaphore, waiter, command->verb, &holder);
	queue_remove(semaphore, waiter);
	waiter->state = WAITER_RUNNING;
	if (r == 0 && command->verb == VERB_LOCK) {
		r = be_undo_to_plain(store, semaphore->semid);
		if (r < 0)
			holder_put_back(holder);
	}
	if (r < 0) {
		(void)be_adjust(store, semaphore->semid, 1, true);
		finish(store, waiter, r, done);
		return;
	}
	grant(store, semaphore, waiter, command->verb, holder);
	waiter->next++;
	r = execute(store, semaphore, waiter, done);
	if (r != STORE_QUEUED)
		finish(store, waiter, r, done);
}

static struct timespec helper_timeout(struct store *store, struct semaphore *semaphore)
{
	struct timespec now, until;

	timespec_now(CLOCK_MONOTONIC, &now);
	until = clock_add(now, HELPER_NAP);
	for (struct waiter *w = semaphore->head; w; w = w->queue_next)
		if (w->has_deadline && clock_compare(&w->deadline, &until) < 0)
			until = w->deadline;
	semaphore->helper_until = until;
	return clock_difference(&until, &now);
}

/* The queue is empty: wait up to HELPER_LINGER for the next waiter (true: one
 * came). Not for an undefined semaphore, which goes as soon as it is idle. */
static bool helper_linger(struct store *store, struct semaphore *semaphore)
{
	if (semaphore->undefined || semaphore->removed || store->stopping)
		return false;
	struct timespec until = clock_after(CLOCK_MONOTONIC, HELPER_LINGER);
	int r = 0;
	semaphore->helper_idle = true;
	while (!semaphore->head && !semaphore->removed && !store->stopping && r != ETIMEDOUT)
		r = pthread_cond_timedwait(&semaphore->helper_wake, &store->lock, &until);
	semaphore->helper_idle = false;
	return semaphore->head != NULL;
}

void *helper_main(void *argument)
{
	struct semaphore *semaphore = argument;
	struct store *store = semaphore->store;
	struct done_list done = {0};

	pthread_setname_np(pthread_self(), "semfs-helper");
	pthread_mutex_lock(&store->lock);
	for (;;) {
		expire_waiters(store, semaphore, &done);
		if (!semaphore->head || semaphore->removed || store->stopping) {
			/* Finish the completions, then look again: a waiter queued
			 * meanwhile saw helper_running and relies on us. */
			if (!done.first && !helper_linger(store, semaphore))
				break;
			pthread_mutex_unlock(&store->lock);
			run_done(&done);
			pthread_mutex_lock(&store->lock);
			continue;
		}
		helper_kicked = 0;
		struct timespec timeout = helper_timeout(store, semaphore);
		int semid = semaphore->semid;
		semaphore->helper_taking = true;
		pthread_mutex_unlock(&store->lock);
		run_done(&done);
		helper_nap = timeout;
		atomic_signal_fence(memory_order_seq_cst); /* stored before the look */
		int r = helper_kicked ? -EINTR : be_take(store, semid, &helper_nap);
		pthread_mutex_lock(&store->lock);
		semaphore->helper_taking = false;
		if (r == 0)
			hand_unit(store, semaphore, &done);
		else if (handle_gone(r))
			(void)set_gone_from_outside(store, semaphore, &done);
	}
	semaphore->helper_running = false;
	store->helpers--;
	semaphore_let_go(store, semaphore, &done);
	pthread_cond_broadcast(&store->helpers_gone);
	pthread_mutex_unlock(&store->lock);
	run_done(&done);
	return NULL;
}

void kick_handler(int signal_number)
{
	(void)signal_number; /* interrupts semtimedop, or is seen before it */
	helper_kicked = 1;
	helper_nap = (struct timespec){0, 0};
}
