/* store_semaphore.c: a semaphore's own state: its journal lines, its holders,
 * its waiter queue, its record on disk and fencing tokens, and its removal. */
#include "store_internal.h"

static void record_of(struct semaphore *semaphore, struct backing_record *record);
static void semaphore_mark_removed(struct store *store, struct semaphore *semaphore,
				   const char *who, struct done_list *done);

/* ---- journal ------------------------------------------------------------- */

/* The journal line, built by hand: snprintf was a quarter of the daemon's
 * time under pipelined requests. Stops short at the end of the buffer. */
struct line {
	char *at, *end;
};

static void line_text(struct line *line, const char *text)
{
	while (*text && line->at < line->end)
		*line->at++ = *text++;
}

static void line_number(struct line *line, uint64_t number, int width)
{
	char digits[24];
	int n = 0;
	do {
		digits[n++] = (char)('0' + number % 10);
		number /= 10;
	} while (number > 0);
	while (n < width)
		digits[n++] = '0';
	while (n > 0 && line->at < line->end)
		*line->at++ = digits[--n];
}

void journal_event(struct store *store, struct semaphore *semaphore, const char *event,
		   const char *who, uint64_t token, const char *extra, enum store_change change)
{
	struct timespec now;
	char text[512];
	struct line line = {text, text + sizeof(text) - 1}; /* room for the '\n' */
	int value = semaphore->removed	     ? -1
		    : semaphore->value_known ? semaphore->known_value
					     : be_value(store, semaphore->semid);

	semaphore->value_known = false;
	timespec_now(CLOCK_REALTIME, &now);
	if (now.tv_sec != store->stamp_second || !store->stamp[0]) {
		struct tm utc;
		gmtime_r(&now.tv_sec, &utc);
		strftime(store->stamp, sizeof(store->stamp), "%Y-%m-%dT%H:%M:%S", &utc);
		store->stamp_second = now.tv_sec;
	}
	/* "STAMP.uuuuuuZ EVENT by=WHO value=V limit=L waiting=W[ token=T][ EXTRA]
	 * seq=N": seq= last, so followers see a gap, not a guess, when lines
	 * were dropped. */
	line_text(&line, store->stamp);
	line_text(&line, ".");
	line_number(&line, (uint64_t)now.tv_nsec / 1000, 6);
	line_text(&line, "Z ");
	line_text(&line, event);
	line_text(&line, " by=");
	line_text(&line, who);
	line_text(&line, value < 0 ? " value=-" : " value=");
	line_number(&line, (uint64_t)(value < 0 ? -(int64_t)value : value), 1);
	line_text(&line, " limit=");
	line_number(&line, semaphore->limit, 1);
	line_text(&line, " waiting=");
	line_number(&line, semaphore->waiting, 1);
	if (token) {
		line_text(&line, " token=");
		line_number(&line, token, 1);
	}
	if (extra) {
		line_text(&line, " ");
		line_text(&line, extra);
	}
	line_text(&line, " seq=");
	line_number(&line, semaphore->journal.lines + 1, 1);
	*line.at++ = '\n';
	size_t length = (size_t)(line.at - text);
	/* Out of memory only loses this line; the state itself is unharmed. */
	(void)journal_append(&semaphore->journal, text, length);
	semaphore->last_value = value;
	store->status_mtime = now;
	if (semaphore->node) {
		semaphore->node->mtime = now;
		if (store->options.changed && !semaphore->node->unlinked) {
			char path[PATH_MAX];
			if (node_path(semaphore->node, path, sizeof(path)) == 0)
				store->options.changed(store->options.changed_context,
						       semaphore->ino, path, change);
		}
	}
}

/* ---- holders ------------------------------------------------------------- */

/* The holder record a grant will count on, found or made *before* the unit
 * is taken: an allocation that fails then takes nothing. */
struct holder *holder_get(struct semaphore *semaphore, struct owner *owner, const char *who)
{
	struct holder **tail = &semaphore->holders;

	for (struct holder *h = semaphore->holders; h; h = h->next_in_semaphore)
		if (h->owner == owner && (owner || strcmp(h->who, who) == 0))
			return h;
	struct holder *holder = calloc(1, sizeof(*holder));
	if (!holder)
		return NULL;
	holder->semaphore = semaphore;
	holder->owner = owner;
	snprintf(holder->who, sizeof(holder->who), "%s", who);
	while (*tail)
		tail = &(*tail)->next_in_semaphore;
	*tail = holder;
	if (owner) {
		holder->next_in_owner = owner->holders;
		owner->holders = holder;
	}
	return holder;
}

/* A grant prepared with holder_get() did not happen. */
void holder_put_back(struct holder *holder)
{
	if (holder->units == 0)
		holder_unlink(holder);
}

void holder_unlink(struct holder *holder)
{
	struct holder **p;

	for (p = &holder->semaphore->holders; *p; p = &(*p)->next_in_semaphore) {
		if (*p == holder) {
			*p = holder->next_in_semaphore;
			break;
		}
	}
	if (holder->owner) {
		for (p = &holder->owner->holders; *p; p = &(*p)->next_in_owner) {
			if (*p == holder) {
				*p = holder->next_in_owner;
				break;
			}
		}
	}
	free(holder);
}

struct holder *holder_of_owner(struct semaphore *semaphore, struct owner *owner)
{
	for (struct holder *h = owner ? owner->holders : NULL; h; h = h->next_in_owner)
		if (h->semaphore == semaphore)
			return h;
	return NULL;
}

/* An unlock returns a plain unit: credit the unlocker's own, else the oldest. */
void holder_drop_plain(struct semaphore *semaphore, const char *who)
{
	struct holder *oldest = NULL, *match = NULL;

	for (struct holder *h = semaphore->holders; h; h = h->next_in_semaphore) {
		if (h->owner || h->units == 0) /* 0: a grant being prepared */
			continue;
		if (!oldest)
			oldest = h;
		if (!match && strcmp(h->who, who) == 0)
			match = h;
	}
	struct holder *holder = match ? match : oldest;
	if (holder && --holder->units == 0 && !holder->pinned)
		holder_unlink(holder);
}

/* ---- semaphores ---------------------------------------------------------- */

void semaphore_unreference(struct store *store, struct semaphore *semaphore)
{
	if (--semaphore->references > 0)
		return;
	while (semaphore->holders)
		holder_unlink(semaphore->holders);
	journal_free(&semaphore->journal);
	free(semaphore->cluster_holders);
	pthread_cond_destroy(&semaphore->helper_wake);
	free(semaphore);
}

void live_remove(struct store *store, struct semaphore *semaphore)
{
	if (semaphore->live_prev)
		semaphore->live_prev->live_next = semaphore->live_next;
	else if (store->live == semaphore)
		store->live = semaphore->live_next;
	else
		return; /* not on the list */
	if (semaphore->live_next)
		semaphore->live_next->live_prev = semaphore->live_prev;
	if (store->monitor_hand == semaphore)
		store->monitor_hand = semaphore->live_next;
	semaphore->live_prev = semaphore->live_next = NULL;
	store->live_count--;
}

static void record_of(struct semaphore *semaphore, struct backing_record *record)
{
	struct node *node = semaphore->node;
	*record = (struct backing_record){
	    .key = semaphore->key,
	    .limit = semaphore->limit,
	    .mode = node ? node->mode : 0600,
	    .uid = node ? node->uid : 0,
	    .gid = node ? node->gid : 0,
	    .token_reserved = semaphore->token_reserved,
	    .undefined = semaphore->undefined,
	    .defined = semaphore->defined,
	};
}

/* Durable before acknowledged: callers change the semaphore, save, and undo
 * their change if this fails. */
int semaphore_save(struct store *store, struct semaphore *semaphore)
{
	struct backing_record record;
	char path[PATH_MAX];

	if (!semaphore->node || semaphore->node->unlinked)
		return 0;
	int r = node_path(semaphore->node, path, sizeof(path));
	if (r < 0)
		return r;
	record_of(semaphore, &record);
	r = backing_write(&store->backing, path, &record);
	if (r == -ENOSPC || r == -EDQUOT) {
		/* Once a minute: a client retrying in a loop must not flood the log. */
		if (time(NULL) - store->state_full_logged >= 60) {
			store->state_full_logged = time(NULL);
			log_warnx("cannot save semaphore %s: state_dir %s is full (%s)", path,
				  store->state_dir, strerror(-r));
		}
	}
	return r;
}

/* Fencing tokens are reserved on disk a block at a time *before* any of them
 * is handed out, so no crash lets one be handed out twice. */
int token_reserve(struct store *store, struct semaphore *semaphore, uint64_t count)
{
	if (semaphore->token + count < semaphore->token_reserved)
		return 0;
	uint64_t previous = semaphore->token_reserved;
	semaphore->token_reserved = semaphore->token + count + TOKEN_BLOCK;
	int r = semaphore_save(store, semaphore);
	if (r < 0)
		semaphore->token_reserved = previous;
	return r;
}

/* The set is gone (rm, or ipcrm from outside): every waiter fails. */
static void semaphore_mark_removed(struct store *store, struct semaphore *semaphore,
				   const char *who, struct done_list *done)
{
	if (semaphore->removed)
		return;
	semaphore->removed = true;
	if (semaphore->helper_idle)
		helper_kick(semaphore); /* a parked helper goes now */
	live_remove(store, semaphore);
	while (semaphore->head) {
		struct waiter *waiter = semaphore->head;
		queue_remove(semaphore, waiter);
		finish(store, waiter, -EIDRM, done);
	}
	journal_event(store, semaphore, "delete", who, 0, NULL, CHANGE_UNANNOUNCED);
}

/* The set went from outside (ipcrm). A defined semaphore must always exist:
 * a new set with its limit replaces it, the acquire units still out are
 * taken again for their owners (with SEM_UNDO, as before), waiters keep
 * their place; plain units that were out are lost, and the journal says so.
 * Any other semaphore is gone. true: recreated. */
bool set_gone_from_outside(struct store *store, struct semaphore *semaphore, struct done_list *done)
{
	char path[PATH_MAX], full[PATH_MAX], extra[64];
	key_t key;
	int semid = -1;

	if (!semaphore->defined || semaphore->removed || store->stopping || !semaphore->node ||
	    node_path(semaphore->node, path, sizeof(path)) < 0) {
		semaphore_mark_removed(store, semaphore, "sysv", done);
		return false;
	}
	backing_full_path(&store->backing, path, full, sizeof(full));
	int r = be_create(store, full, (int)semaphore->node->mode, &key, &semid);
	if (r == 0)
		r = be_adjust(store, semid, (int)semaphore->limit, false);
	if (r == 0)
		r = be_set_owner(store, semid, semaphore->node->uid, semaphore->node->gid,
				 semaphore->node->mode);
	if (r == 0)
		r = be_adjust(store, semid, -(int)semaphore->acquired, true);
	key_t old_key = semaphore->key;
	int old_semid = semaphore->semid;
	if (r == 0) {
		semaphore->key = key;
		semaphore->semid = semid;
		r = semaphore_save(store, semaphore);
	}
	if (r < 0) {
		semaphore->key = old_key;
		semaphore->semid = old_semid;
		if (semid >= 0)
			(void)be_remove(store, semid);
		log_warnx("defined semaphore %s: its SysV set was removed from outside and cannot "
			  "be made again: %s",
			  path, strerror(-r));
		semaphore_mark_removed(store, semaphore, "sysv", done);
		return false;
	}
	unsigned lost = 0; /* plain units that were out: their set is gone */
	for (struct holder *h = semaphore->holders, *next; h; h = next) {
		next = h->next_in_semaphore;
		if (!h->owner) {
			lost += h->units;
			holder_unlink(h);
		}
	}
	snprintf(extra, sizeof(extra), "was=0x%08x lost=%u", (unsigned)old_key, lost);
	journal_event(store, semaphore, "recreate", "sysv", 0, extra, CHANGE_UNANNOUNCED);
	log_warnx("defined semaphore %s: its SysV set 0x%08x was removed from outside; made "
		  "again at key 0x%08x with limit %u",
		  path, (unsigned)old_key, (unsigned)key, semaphore->limit);
	if (semaphore->helper_running)
		helper_kick(semaphore); /* to sleep on the new set */
	return true;
}

/* rm, `delete NAME`, an idle undefined semaphore: the set and its record go,
 * waiters fail with EIDRM, the node lives on while the kernel knows it. */
int delete_node(struct store *store, struct node *node, const char *who, struct done_list *done)
{
	struct semaphore *semaphore = node->semaphore;
	struct node *parent = node->parent;
	char path[PATH_MAX];
	int r = node_path(node, path, sizeof(path));

	if (r < 0)
		return r;
	/* A re-created name must not hand out this one's tokens again. */
	if (semaphore->token_reserved > store->token_floor) {
		r = backing_raise_token_floor(&store->backing, semaphore->token_reserved);
		if (r < 0)
			return r;
		store->token_floor = semaphore->token_reserved;
	}
	semaphore_mark_removed(store, semaphore, who, done);
	(void)be_remove(store, semaphore->semid);
	(void)backing_remove(&store->backing, path);
	node_detach(store, node);
	timespec_now(CLOCK_REALTIME, &parent->mtime);
	parent->ctime = parent->mtime;
	node_release_if_unused(store, node);
	prune_implicit(store, parent);
	return 0;
}

#define UNDEFINED_LOGS_PER_SECOND 10

void log_undefined(struct store *store, const char *path, const char *what)
{
	time_t second = time(NULL);

	if (second != store->undefined_second) {
		if (store->undefined_suppressed)
			log_info("%u more undefined semaphores created or removed (not logged one "
				 "by one)",
				 store->undefined_suppressed);
		store->undefined_second = second;
		store->undefined_logged = store->undefined_suppressed = 0;
	}
	if (store->undefined_logged++ < UNDEFINED_LOGS_PER_SECOND)
		log_info("undefined semaphore %s %s", path, what);
	else
		store->undefined_suppressed++;
}

/* ACE's undefined semaphores last while someone uses them: no holder, no
 * waiter, no open file or connection, every unit home. */
static bool idle_undefined(struct store *store, struct semaphore *semaphore)
{
	return semaphore->undefined && !semaphore->removed && semaphore->references == 1 &&
	       !semaphore->head && !semaphore->holders && semaphore->node &&
	       !semaphore->node->unlinked && !store->stopping &&
	       be_value(store, semaphore->semid) == (int)semaphore->limit;
}

/* Idle now: it goes UNDEFINED_GRACE after this, unless used again. */
void reap_if_idle(struct store *store, struct semaphore *semaphore, struct done_list *done)
{
	(void)done;
	if (!semaphore->undefined)
		return;
	if (!idle_undefined(store, semaphore)) {
		/* Cluster mode: units given back here reach the mirror by the
		 * watch, after the last user let go: hook_sync looks again. */
		semaphore->reap_when_home = store->cluster && semaphore->references == 1;
		return;
	}
	semaphore->reap_when_home = false;
	semaphore->idle_pending = true;
	store->idle_pending++;
	timespec_now(CLOCK_MONOTONIC, &semaphore->idle_since);
}

void reap_idle_now(struct store *store, struct semaphore *semaphore, struct done_list *done)
{
	semaphore->idle_pending = false;
	if (!idle_undefined(store, semaphore))
		return; /* used again meanwhile */
	char path[PATH_MAX];
	if (node_path(semaphore->node, path, sizeof(path)) < 0)
		return;
	if (store->cluster) {
		/* It exists on every host: the cluster removes it, unless some
		 * host uses it again first; the watch takes it away here. Asked
		 * by the monitor, outside the store lock (cluster_store_reap). */
		struct reap_request *request = malloc(sizeof(*request) + strlen(path) + 1);
		if (!request) {
			log_warnx("out of memory: idle undefined semaphore %s stays", path);
			return;
		}
		strcpy(request->path, path);
		request->next = store->reaps;
		store->reaps = request;
		log_undefined(store, path, "idle: removing it on every host");
		return;
	}
	log_undefined(store, path, "removed: idle");
	(void)delete_node(store, semaphore->node, "semfs:idle", done);
}

/* The monitor: those whose grace is over go (`all`: every idle one). */
void reap_idle_due(struct store *store, struct done_list *done, bool all)
{
	if (!store->idle_pending)
		return; /* the usual case: no walk over every semaphore */
	struct timespec now;
	timespec_now(CLOCK_MONOTONIC, &now);
	size_t pending = 0;
	for (struct semaphore *s = store->live, *next; s; s = next) {
		next = s->live_next;
		if (!s->idle_pending)
			continue;
		pending++;
		double idle = (double)(now.tv_sec - s->idle_since.tv_sec) +
			      (double)(now.tv_nsec - s->idle_since.tv_nsec) / 1e9;
		if (all || idle >= UNDEFINED_GRACE) {
			reap_idle_now(store, s, done);
			pending--;
		}
	}
	store->idle_pending = pending;
}

/* Drop one reference (an open file, a connection, a helper). */
void semaphore_let_go(struct store *store, struct semaphore *semaphore, struct done_list *done)
{
	if (semaphore->references > 1) {
		semaphore->references--;
		reap_if_idle(store, semaphore, done);
	} else {
		semaphore_unreference(store, semaphore);
	}
}
