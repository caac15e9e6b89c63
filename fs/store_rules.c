/* store_rules.c: what each command does: lock, unlock, relax, acquire,
 * release, limit, set; grants, the limit guard, queueing, cancelling, and
 * giving back what an owner or a failed reply held. */
#include "store_internal.h"

#include "cluster.h"

static void helper_release_if_idle(struct semaphore *semaphore);
static bool hand_directly_prepare(struct store *store, struct semaphore *semaphore,
				  bool given_with_undo, struct holder **holder);
static void hand_directly(struct store *store, struct semaphore *semaphore, int value,
			  struct holder *holder, struct done_list *done);

static enum store_change announced(const struct waiter *waiter)
{
	return waiter->announced_by_reply ? CHANGE_ANNOUNCED : CHANGE_UNANNOUNCED;
}
static int helper_start(struct store *store, struct semaphore *semaphore);
static int command_lock(struct store *store, struct semaphore *semaphore, struct waiter *waiter,
			const struct command *command, struct done_list *done);
static int command_unlock(struct store *store, struct semaphore *semaphore, struct waiter *waiter,
			  const struct command *command, struct done_list *done);
static int command_relax(struct store *store, struct semaphore *semaphore, struct waiter *waiter,
			 const struct command *command, struct done_list *done);
static int command_acquire(struct store *store, struct semaphore *semaphore, struct waiter *waiter,
			   const struct command *command, struct done_list *done);
static int command_release(struct store *store, struct semaphore *semaphore, struct waiter *waiter,
			   const struct command *command, struct done_list *done);
static int command_set(struct store *store, struct semaphore *semaphore, struct waiter *waiter,
		       const struct command *command, struct done_list *done);
static void release_holder(struct store *store, struct holder *holder, const char *who,
			   struct done_list *done);

/* ---- running commands --------------------------------------------------- */

/* A request ended: a queued one goes to the done list. A failed request whose
 * earlier commands changed something gets no IN_MODIFY from its write. */
void finish(struct store *store, struct waiter *waiter, int result, struct done_list *done)
{
	struct semaphore *semaphore = waiter->semaphore;

	if (result < 0 && waiter->changed_something && waiter->announced_by_reply &&
	    semaphore->node && !semaphore->node->unlinked && store->options.changed) {
		char path[PATH_MAX];
		if (node_path(semaphore->node, path, sizeof(path)) == 0)
			store->options.changed(store->options.changed_context, semaphore->ino, path,
					       CHANGE_UNANNOUNCED);
	}
	if (done)
		done_push(done, waiter, result);
	else
		waiter->state = WAITER_DONE;
}

/* What a grant needs, made ready before the unit is taken: its token
 * reserved on disk and its holder record allocated. */
int grant_prepare(struct store *store, struct semaphore *semaphore, struct waiter *waiter,
		  enum command_verb verb, struct holder **holder)
{
	int r = token_reserve(store, semaphore, 1);
	if (r < 0)
		return r;
	*holder = holder_get(semaphore, verb == VERB_ACQUIRE ? waiter->owner : NULL, waiter->who);
	return *holder ? 0 : -ENOMEM;
}

void grant(struct store *store, struct semaphore *semaphore, struct waiter *waiter,
	   enum command_verb verb, struct holder *holder)
{
	waiter->token = ++semaphore->token;
	waiter->changed_something = true;
	semaphore->grants++;
	store->grants_total++;
	holder->units++;
	if (verb == VERB_ACQUIRE)
		semaphore->acquired++;
	else
		waiter->lock_units++;
	journal_event(store, semaphore, command_verb_name(verb), waiter->who, waiter->token, NULL,
		      announced(waiter));
}

bool handle_gone(int r)
{
	return r == -EIDRM || r == -EINVAL;
}

/* Units beyond the limit came from outside (another SysV user's semop, or a
 * SETVAL): take them back before anyone is handed one. The kernel's value
 * plus the acquired units may never pass the limit; plain units in use are
 * limit - value - acquired. Returns the value, or -errno. */
int limit_guard(struct store *store, struct semaphore *semaphore)
{
	for (int attempt = 0;; attempt++) {
		int value = be_value(store, semaphore->semid);
		if (value < 0)
			return value;
		int excess = value + (int)semaphore->acquired - (int)semaphore->limit;
		if (excess <= 0)
			return value;
		int pid = be_last_pid(store, semaphore->semid);
		int r = be_adjust(store, semaphore->semid, -excess, false);
		if (r == -EAGAIN && attempt < 3)
			continue; /* someone took one meanwhile: look again */
		if (r < 0)
			return r;
		char who[32], extra[32];
		snprintf(who, sizeof(who), "sysv:%d", pid);
		snprintf(extra, sizeof(extra), "reverted=%d", excess);
		journal_event(store, semaphore, "outside-change", who, 0, extra,
			      CHANGE_UNANNOUNCED);
		if (time(NULL) - store->excess_logged >= 60) {
			store->excess_logged = time(NULL);
			char path[PATH_MAX] = "?";
			if (semaphore->node)
				(void)node_path(semaphore->node, path, sizeof(path));
			log_warnx(
			    "semaphore %s: pid %d raised its SysV value past the limit by %d; "
			    "taken back (logged once a minute)",
			    path, pid, excess);
		}
		return value - excess;
	}
}

/* Out of semtimedop, or out of its idle wait: called with the store lock. */
void helper_kick(struct semaphore *semaphore)
{
	if (semaphore->helper_idle)
		pthread_cond_signal(&semaphore->helper_wake);
	else
		pthread_kill(semaphore->helper, HELPER_KICK_SIGNAL);
}

/* An idle helper would catch the next unit in semtimedop and hand it back a
 * moment later; send it away as soon as its queue is empty. */
static void helper_release_if_idle(struct semaphore *semaphore)
{
	if (semaphore->helper_running && !semaphore->head)
		helper_kick(semaphore);
}

static int helper_start(struct store *store, struct semaphore *semaphore)
{
	pthread_attr_t attributes;
	sigset_t all, previous;
	int r;

	pthread_attr_init(&attributes);
	pthread_attr_setdetachstate(&attributes, PTHREAD_CREATE_DETACHED);
	pthread_attr_setstacksize(&attributes, 64 * 1024);
	/* Helpers take only the kick signal; SIGTERM and friends stay with the
	 * FUSE loop, which must see them to stop. */
	sigfillset(&all);
	sigdelset(&all, HELPER_KICK_SIGNAL);
	pthread_sigmask(SIG_SETMASK, &all, &previous);
	semaphore->references++;
	semaphore->helper_running = true;
	store->helpers++;
	r = pthread_create(&semaphore->helper, &attributes, helper_main, semaphore);
	pthread_sigmask(SIG_SETMASK, &previous, NULL);
	pthread_attr_destroy(&attributes);
	if (r != 0) {
		semaphore->references--;
		semaphore->helper_running = false;
		store->helpers--;
		return -r;
	}
	return 0;
}

int take(struct store *store, struct semaphore *semaphore, struct waiter *waiter,
	 const struct command *command, struct done_list *done)
{
	bool acquire = command->verb == VERB_ACQUIRE;

	if (acquire && !waiter->owner)
		return -EINVAL;
	/* Only an empty queue may try the kernel directly: no barging. */
	if (!semaphore->head) {
		struct holder *holder;
		int r = grant_prepare(store, semaphore, waiter, command->verb, &holder);
		if (r < 0)
			return r;
		int value = limit_guard(store, semaphore);
		r = value < 0 ? value : be_adjust(store, semaphore->semid, -1, acquire);
		if (r == 0) {
			semaphore->value_known = true;
			semaphore->known_value = value - 1;
			grant(store, semaphore, waiter, command->verb, holder);
			return 0;
		}
		holder_put_back(holder);
		if (handle_gone(r)) {
			if (set_gone_from_outside(store, semaphore, done))
				return take(store, semaphore, waiter, command, done);
			return -EIDRM;
		}
		if (r != -EAGAIN)
			return r;
	}
	if (command->timeout == 0)
		return -EAGAIN;
	if (waiter->interrupted)
		return -EINTR;

	double seconds = command->timeout;
	if (store->options.max_wait > 0 && (seconds < 0 || seconds > store->options.max_wait))
		seconds = store->options.max_wait;
	waiter->has_deadline = seconds >= 0;
	if (waiter->has_deadline) {
		waiter->deadline = clock_after(CLOCK_MONOTONIC, seconds);
	}
	if (!semaphore->helper_running) {
		int r = helper_start(store, semaphore);
		if (r < 0)
			return r;
	} else if (semaphore->helper_idle ||
		   (waiter->has_deadline &&
		    clock_compare(&waiter->deadline, &semaphore->helper_until) < 0)) {
		helper_kick(semaphore);
	}
	queue_append(semaphore, waiter);
	journal_event(store, semaphore, "wait", waiter->who, 0, NULL, CHANGE_UNANNOUNCED);
	return STORE_QUEUED;
}

static int command_lock(struct store *store, struct semaphore *semaphore, struct waiter *waiter,
			const struct command *command, struct done_list *done)
{
	return take(store, semaphore, waiter, command, done);
}

static int command_unlock(struct store *store, struct semaphore *semaphore, struct waiter *waiter,
			  const struct command *command, struct done_list *done)
{
	int value = limit_guard(store, semaphore);

	if (value < 0)
		return value;
	/* unlock returns plain units only: with none in use (every unit home, or
	 * held by an acquire owner) it would be a double unlock. */
	if ((unsigned)value + semaphore->acquired >= semaphore->limit)
		return -EOVERFLOW;
	struct holder *holder = NULL;
	bool direct = hand_directly_prepare(store, semaphore, false, &holder);
	if (!direct) {
		int r = be_adjust(store, semaphore->semid, 1, false);
		if (r < 0)
			return r;
	}
	holder_drop_plain(semaphore, waiter->who);
	waiter->changed_something = true;
	semaphore->value_known = true;
	semaphore->known_value = value + 1;
	journal_event(store, semaphore, "unlock", waiter->who, 0, NULL, announced(waiter));
	if (direct)
		hand_directly(store, semaphore, value, holder, done);
	return 0;
}

/* An unlock or release with requests queued: the kernel would wake our
 * helper with the unit, and the helper hand it to the head — two thread
 * wake-ups, half of a hand-off's time here. When nobody else sleeps on the
 * set (GETNCNT: at most our helper, when it may be in the kernel), the unit
 * goes to the head at once and stays out of the kernel: the same result, as
 * no outside waiter is passed. (In the instant the helper is between the
 * lock and the kernel, one counted sleeper may be an outside waiter
 * instead; it then gets the next unit.) A unit of the kind the head waits
 * for (plain for lock, held with undo for acquire) needs nothing in the
 * kernel; the other kind changes with one semop, the value unmoved. True:
 * the head's grant is prepared in *holder (pinned: the unit given back may
 * be counted down from that very holder) and the kind is right. */
static bool hand_directly_prepare(struct store *store, struct semaphore *semaphore,
				  bool given_with_undo, struct holder **holder)
{
	struct waiter *head = semaphore->head;
	if (!head)
		return false;
	enum command_verb verb = head->commands[head->next].verb;
	if (verb != VERB_LOCK && verb != VERB_ACQUIRE)
		return false;
	int sleeping = be_waiting(store, semaphore->semid);
	if (sleeping < 0 || sleeping > (semaphore->helper_taking ? 1 : 0))
		return false;
	if (grant_prepare(store, semaphore, head, verb, holder) < 0)
		return false;
	bool wanted_with_undo = verb == VERB_ACQUIRE;
	int r = 0;
	if (given_with_undo && !wanted_with_undo)
		r = be_undo_to_plain(store, semaphore->semid);
	else if (!given_with_undo && wanted_with_undo)
		r = be_plain_to_undo(store, semaphore->semid);
	if (r < 0) {
		holder_put_back(*holder); /* the unit goes home the usual way */
		return false;
	}
	(*holder)->pinned = true;
	return true;
}

/* The unit given back, still out of the kernel, to the head (as hand_unit). */
static void hand_directly(struct store *store, struct semaphore *semaphore, int value,
			  struct holder *holder, struct done_list *done)
{
	struct waiter *head = semaphore->head;
	holder->pinned = false;
	queue_remove(semaphore, head);
	head->state = WAITER_RUNNING;
	semaphore->value_known = value >= 0;
	semaphore->known_value = value;
	grant(store, semaphore, head, head->commands[head->next].verb, holder);
	head->next++;
	int r = execute(store, semaphore, head, done);
	if (r != STORE_QUEUED)
		finish(store, head, r, done);
	helper_release_if_idle(semaphore);
}

static int command_relax(struct store *store, struct semaphore *semaphore, struct waiter *waiter,
			 const struct command *command, struct done_list *done)
{
	/* Detach the current queue first: a relaxed batch that waits again
	 * joins the new queue and is not relaxed twice. */
	struct waiter *relaxed = semaphore->head;
	size_t count = semaphore->waiting;
	char extra[32];
	int r = token_reserve(store, semaphore, count);

	if (r < 0)
		return r;
	semaphore->head = semaphore->tail = NULL;
	semaphore->waiting = 0;
	waiter->changed_something = true;
	snprintf(extra, sizeof(extra), "woke=%zu", count);
	journal_event(store, semaphore, "relax", waiter->who, 0, extra, announced(waiter));
	helper_release_if_idle(semaphore);
	while (relaxed) {
		struct waiter *next = relaxed->queue_next;
		note_queued(relaxed, -1);
		relaxed->queue_prev = relaxed->queue_next = NULL;
		relaxed->state = WAITER_RUNNING;
		relaxed->token = ++semaphore->token;
		semaphore->grants++;
		store->grants_total++;
		relaxed->next++;
		r = execute(store, semaphore, relaxed, done);
		if (r != STORE_QUEUED)
			finish(store, relaxed, r, done);
		relaxed = next;
	}
	return 0;
}

static int command_acquire(struct store *store, struct semaphore *semaphore, struct waiter *waiter,
			   const struct command *command, struct done_list *done)
{
	return take(store, semaphore, waiter, command, done);
}

static int command_release(struct store *store, struct semaphore *semaphore, struct waiter *waiter,
			   const struct command *command, struct done_list *done)
{
	struct holder *holder = holder_of_owner(semaphore, waiter->owner);

	if (!holder)
		return -ENOLCK;
	struct holder *grantee = NULL;
	bool direct = hand_directly_prepare(store, semaphore, true, &grantee);
	/* Given straight to a queued request: the journal's two lines need the
	 * value, which does not move. */
	int value = direct ? be_value(store, semaphore->semid) : 0;
	if (!direct) {
		int r = be_adjust(store, semaphore->semid, 1, true);
		if (r < 0)
			return r;
	}
	semaphore->acquired--;
	if (--holder->units == 0 && !holder->pinned)
		holder_unlink(holder);
	waiter->changed_something = true;
	if (direct && value >= 0) {
		semaphore->value_known = true;
		semaphore->known_value = value + 1;
	}
	journal_event(store, semaphore, "release", waiter->who, 0, NULL, announced(waiter));
	if (direct)
		hand_directly(store, semaphore, value, grantee, done);
	return 0;
}

int command_limit(struct store *store, struct semaphore *semaphore, struct waiter *waiter,
		  const struct command *command, struct done_list *done)
{
	int difference = command->number - (int)semaphore->limit;
	char extra[32];

	if (difference < 0) {
		int value = be_value(store, semaphore->semid);
		if (value < 0)
			return value;
		/* The value moves by the difference; units in use cannot. */
		if (value < -difference)
			return -EBUSY;
	}
	/* On disk first: a crash in between leaves the larger limit's units
	 * missing, never more units than the recorded limit. */
	unsigned previous = semaphore->limit;
	semaphore->limit = (unsigned)command->number;
	int r = semaphore_save(store, semaphore);
	if (r < 0) {
		semaphore->limit = previous;
		return r;
	}
	r = be_adjust(store, semaphore->semid, difference, false);
	if (r < 0) {
		semaphore->limit = previous;
		(void)semaphore_save(store, semaphore);
		return r == -EAGAIN ? -EBUSY : r;
	}
	snprintf(extra, sizeof(extra), "was=%u", previous);
	waiter->changed_something = true;
	journal_event(store, semaphore, "limit", waiter->who, 0, extra, announced(waiter));
	return 0;
}

static int command_set(struct store *store, struct semaphore *semaphore, struct waiter *waiter,
		       const struct command *command, struct done_list *done)
{
	/* Units an acquire owner holds are not set's to hand out. */
	if ((unsigned)command->number + semaphore->acquired > semaphore->limit)
		return -ERANGE;
	int value = limit_guard(store, semaphore);
	if (value < 0)
		return value;
	int r = be_adjust(store, semaphore->semid, command->number - value, false);
	if (r < 0)
		return r;
	waiter->changed_something = true;
	journal_event(store, semaphore, "set", waiter->who, 0, NULL, announced(waiter));
	return 0;
}

typedef int command_fn(struct store *, struct semaphore *, struct waiter *, const struct command *,
		       struct done_list *);

static command_fn *const command_table[] = {
    [VERB_LOCK] = command_lock,	      [VERB_UNLOCK] = command_unlock,
    [VERB_RELAX] = command_relax,     [VERB_ACQUIRE] = command_acquire,
    [VERB_RELEASE] = command_release, [VERB_LIMIT] = command_limit,
    [VERB_SET] = command_set,
};

/* Run the waiter's commands from waiter->next: 0, -errno or STORE_QUEUED. */
int execute(struct store *store, struct semaphore *semaphore, struct waiter *waiter,
	    struct done_list *done)
{
	while (waiter->next < waiter->count) {
		const struct command *command = &waiter->commands[waiter->next];
		if (semaphore->removed)
			return -EIDRM;
		int r = command_table[command->verb](store, semaphore, waiter, command, done);
		if (r != 0)
			return r;
		waiter->next++;
	}
	return 0;
}

int store_submit(struct store *store, struct semaphore *semaphore, struct waiter *waiter)
{
	struct done_list done = {0};
	int r;

	if (store->cluster)
		return cluster_store_submit(store, semaphore, waiter);

	pthread_mutex_lock(&store->lock);
	waiter->semaphore = semaphore;
	waiter->next = 0;
	waiter->state = WAITER_RUNNING;
	if (store->stopping)
		r = -ECANCELED;
	else
		r = execute(store, semaphore, waiter, &done);
	if (r != STORE_QUEUED)
		finish(store, waiter, r, NULL);
	pthread_mutex_unlock(&store->lock);
	run_done(&done);
	return r;
}

size_t store_submit_run(struct store *store, struct semaphore *semaphore, const char *who,
			const struct command *commands, size_t count, int results[],
			uint64_t tokens[])
{
	signed char steps[STORE_RUN_MAX];
	size_t planned = 0, moves = 0, locks = 0;

	if (store->cluster)
		return 0;
	pthread_mutex_lock(&store->lock);
	if (count > store->run_steps_max)
		count = store->run_steps_max;
	/* Only an empty queue may take directly (no barging), as in take(). */
	int value = store->stopping || semaphore->removed || semaphore->head
			? -EAGAIN
			: limit_guard(store, semaphore);
	for (int v = value; v >= 0 && planned < count; planned++) {
		enum command_verb verb = commands[planned].verb;
		results[planned] = 0;
		if (verb == VERB_LOCK && v > 0) {
			steps[moves++] = -1;
			v--;
			locks++;
		} else if (verb == VERB_UNLOCK &&
			   (unsigned)v + semaphore->acquired < semaphore->limit) {
			steps[moves++] = 1;
			v++;
		} else if (verb == VERB_UNLOCK) {
			results[planned] = -EOVERFLOW; /* as command_unlock says */
		} else {
			break; /* it would wait, or is not a lock/unlock */
		}
	}
	struct holder *own = NULL;
	int r = planned == 0 ? -EAGAIN : token_reserve(store, semaphore, locks);
	if (r == 0)
		r = (own = holder_get(semaphore, NULL, who)) ? 0 : -ENOMEM;
	if (r == 0 && moves > 0)
		r = be_adjust_steps(store, semaphore->semid, steps, moves);
	if (r == -E2BIG && moves > 1) {
		store->run_steps_max = moves / 2; /* a lower SEMOPM: smaller runs from now on */
		log_info("the kernel takes fewer than %zu operations in one semop (SEMOPM, "
			 "/proc/sys/kernel/sem): pipelined requests go in runs of %zu",
			 moves, store->run_steps_max);
	}
	if (r < 0) {
		/* Someone moved the value since the look: one at a time, then. */
		if (own)
			holder_put_back(own);
		pthread_mutex_unlock(&store->lock);
		return 0;
	}
	/* Done in the backend; now the books, in the requests' order. */
	struct waiter granted = {.commands = commands};
	snprintf(granted.who, sizeof(granted.who), "%s", who);
	for (size_t i = 0; i < planned; i++) {
		if (results[i] < 0)
			continue;
		semaphore->value_known = true;
		if (commands[i].verb == VERB_LOCK) {
			semaphore->known_value = --value;
			grant(store, semaphore, &granted, VERB_LOCK, own);
			tokens[i] = granted.token;
			continue;
		}
		semaphore->known_value = ++value;
		/* Units this client took in the run first, as holder_drop_plain
		 * would (`own` may not go: a later lock of the run needs it). */
		if (own->units > 0)
			own->units--;
		else
			holder_drop_plain(semaphore, who);
		journal_event(store, semaphore, "unlock", who, 0, NULL, CHANGE_UNANNOUNCED);
	}
	if (own->units == 0)
		holder_unlink(own);
	pthread_mutex_unlock(&store->lock);
	return planned;
}

bool store_cancel(struct store *store, struct waiter *waiter)
{
	bool taken = false;

	if (store->cluster)
		return cluster_store_cancel(store, waiter);

	pthread_mutex_lock(&store->lock);
	if (waiter->state == WAITER_QUEUED) {
		struct semaphore *semaphore = waiter->semaphore;
		queue_remove(semaphore, waiter);
		waiter->state = WAITER_DONE;
		journal_event(store, semaphore, "interrupt", waiter->who, 0, NULL,
			      CHANGE_UNANNOUNCED);
		helper_release_if_idle(semaphore);
		taken = true;
	} else {
		waiter->interrupted = true;
	}
	pthread_mutex_unlock(&store->lock);
	return taken;
}

void store_return_units(struct store *store, struct waiter *waiter)
{
	struct semaphore *semaphore = waiter->semaphore;

	if (store->cluster) {
		cluster_store_return_units(store, waiter);
		return;
	}
	pthread_mutex_lock(&store->lock);
	for (; waiter->lock_units > 0 && !semaphore->removed; waiter->lock_units--) {
		if (be_adjust(store, semaphore->semid, 1, false) < 0)
			break;
		holder_drop_plain(semaphore, waiter->who);
		journal_event(store, semaphore, "unlock", waiter->who, 0, "reason=reply-lost",
			      CHANGE_UNANNOUNCED);
	}
	pthread_mutex_unlock(&store->lock);
}

static void release_holder(struct store *store, struct holder *holder, const char *who,
			   struct done_list *done)
{
	struct semaphore *semaphore = holder->semaphore;
	const struct waiter *head = semaphore->head;
	struct holder *grantee = NULL;

	/* One unit, and the head is not this very owner (whose holder goes
	 * now): straight to the head, as command_release does. */
	if (!semaphore->removed && holder->units == 1 && head && head->owner != holder->owner &&
	    hand_directly_prepare(store, semaphore, true, &grantee)) {
		int value = be_value(store, semaphore->semid);
		semaphore->acquired--;
		holder_unlink(holder);
		semaphore->value_known = value >= 0;
		semaphore->known_value = value + 1;
		journal_event(store, semaphore, "release", who, 0, "reason=close",
			      CHANGE_UNANNOUNCED);
		hand_directly(store, semaphore, value, grantee, done);
		return;
	}
	if (!semaphore->removed)
		(void)be_adjust(store, semaphore->semid, (int)holder->units, true);
	semaphore->acquired -= holder->units;
	holder_unlink(holder);
	if (!semaphore->removed)
		journal_event(store, semaphore, "release", who, 0, "reason=close",
			      CHANGE_UNANNOUNCED);
}

void store_release_owner(struct store *store, struct owner *owner, const char *who)
{
	struct done_list done = {0};

	if (store->cluster)
		cluster_release_owner(store->cluster, owner);
	pthread_mutex_lock(&store->lock);
	while (owner->holders) {
		struct semaphore *semaphore = owner->holders->semaphore;
		release_holder(store, owner->holders, who, &done);
		reap_if_idle(store, semaphore, &done);
	}
	pthread_mutex_unlock(&store->lock);
	run_done(&done);
}
