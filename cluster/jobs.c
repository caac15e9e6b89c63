/* jobs.c: each store request as a job of the cluster loop, a short chain
 * of etcd transactions: a lock or acquire puts its entry and follows it in
 * the replica (granted, relaxed, timed out, interrupted); unlock, release,
 * relax, limit and set plan from the replica and write with
 * compare-and-swap; create, remove and define answer once the local tree
 * shows the result. */
#include "cluster_internal.h"

#include "log.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- requests ------------------------------------------------------------------ */

/* One allocation: the job, its path and its key name. */
static struct job *job_alloc(struct cluster *c, enum job_type type, const char *path,
			     const char *name)
{
	size_t path_size = strlen(path) + 1, name_size = strlen(name) + 1;
	struct job *r = calloc(1, sizeof(*r) + path_size + name_size);
	if (!r)
		return NULL;
	r->cluster = c;
	r->type = type;
	memcpy(r->text, path, path_size);
	memcpy(r->text + path_size, name, name_size);
	r->path = r->text;
	r->name = r->text + path_size;
	return r;
}

/* The job's transaction goes out; `done` follows it (without memory the job
 * ends with ENOMEM). `idempotent`: repeated after a lost answer. */
static void txn_send(struct job *r, struct json_object **compares, struct json_object **ops,
		     bool idempotent, etcd_done_fn *done)
{
	struct cluster *c = r->cluster;
	r->phase = PHASE_BUSY;
	if (etcd_call(c->etcd, "/v3/kv/txn", txn_new(c, compares, ops), idempotent, done, r) < 0)
		job_finish(r, -ENOMEM);
}

struct job *job_new(struct cluster *c, enum job_type type, const char *path)
{
	char name[KEY_NAME_MAX] = "";
	if (path && replica_key_name(path, name, sizeof(name)) < 0)
		return NULL;
	return job_alloc(c, type, path ? path : "", name);
}

void job_enqueue(struct cluster *c, struct job *r)
{
	pthread_mutex_lock(&c->lock);
	struct job **at = &c->incoming;
	while (*at)
		at = &(*at)->next;
	*at = r;
	pthread_mutex_unlock(&c->lock);
	etcd_wakeup(c->etcd);
}

void job_unlink(struct cluster *c, struct job *r)
{
	for (struct job **at = &c->active; *at; at = &(*at)->next)
		if (*at == r) {
			*at = r->next;
			return;
		}
}

/* A request's end: a waiter is answered, a synchronous caller woken. */
void job_finish(struct job *r, int error)
{
	struct cluster *c = r->cluster;
	job_unlink(c, r);
	switch (r->type) {
	case JOB_COMMANDS:
		c->hooks.complete(c->hooks.context, r->waiter, error, r->last_token, r->lock_units);
		free(r);
		return;
	case JOB_CREATE:
	case JOB_REMOVE:
	case JOB_CHOWN:
	case JOB_DEFINE:
	case JOB_MKDIR:
	case JOB_RMDIR:
	case JOB_BARRIER:
	case JOB_OPEN_MARK:
		pthread_mutex_lock(&c->lock);
		r->result = error;
		r->finished = true;
		if (r->answer && !r->abandoned)
			*r->answer = r->token;
		bool abandoned = r->abandoned;
		pthread_cond_broadcast(&c->done);
		pthread_mutex_unlock(&c->lock);
		if (abandoned)
			free(r);
		return;
	default:
		free(r);
		return;
	}
}

/* An entry that must go (timeout, interrupt, a relaxed waiter's, a unit
 * given back): deleted, retried until etcd confirms. If it became a holder
 * meanwhile, its unit simply returns. */
void job_delete_entry(struct cluster *c, const char *name, const char *entry, int64_t token);

static void on_deleted(void *context, int error, const char *message, struct json_object *response)
{
	struct job *r = context;
	if (error == -ECANCELED) { /* shutting down: the lease revocation takes it */
		job_finish(r, 0);
		return;
	}
	if (error < 0) {
		log_warnx("cluster: deleting entry %s of %s failed (%s): retrying", r->entry,
			  r->path, message);
		r->phase = PHASE_IDLE;
		r->not_before_ms = cluster_now_ms() + DELETE_RETRY_MS;
		return;
	}
	job_finish(r, 0);
}

/* Delete one entry, only while it is the one made at `token` (0: any). */
static struct json_object *delete_txn(const struct cluster *c, const char *name, const char *entry,
				      int64_t token)
{
	struct json_object *compares[] = {token
					      ? txn_compare(txn_key(c, "sem/%s/q/%s", name, entry),
							    NULL, "CREATE", "EQUAL", token)
					      : NULL,
					  NULL};
	/* Without a compare the delete may change nothing, and so make no
	 * revision the watch brings: the sync mark makes one. */
	struct json_object *ops[] = {txn_delete(txn_key(c, "sem/%s/q/%s", name, entry), NULL),
				     token ? NULL : txn_sync_put(c), NULL};
	return txn_new(c, compares, ops);
}

void job_delete_start(struct job *r)
{
	struct cluster *c = r->cluster;
	r->phase = PHASE_BUSY;
	if (etcd_call(c->etcd, "/v3/kv/txn", delete_txn(c, r->name, r->entry, r->token), true,
		      on_deleted, r) < 0) {
		r->phase = PHASE_IDLE;
		r->not_before_ms = cluster_now_ms() + DELETE_RETRY_MS;
	}
}

void job_delete_entry(struct cluster *c, const char *name, const char *entry, int64_t token)
{
	char path[PATH_MAX] = "";
	(void)cluster_path_of(name, path, sizeof(path));
	struct job *r = job_alloc(c, JOB_DELETE, path, name);
	if (!r) {
		log_warnx("cluster: out of memory deleting entry %s of %s: it goes with the lease",
			  entry, name);
		return;
	}
	snprintf(r->entry, sizeof(r->entry), "%s", entry);
	r->token = token;
	r->next = c->active;
	c->active = r;
	job_delete_start(r);
}

/* ---- abandoning a wait ----------------------------------------------------------- */

/* The end a job decided earlier (r->result), now that the replica shows it. */
static void finish_with_result(struct job *r)
{
	job_finish(r, r->result);
}

static void on_abandoned(void *context, int error, const char *message,
			 struct json_object *response)
{
	struct job *r = context;
	if (error < 0) {
		/* Answered anyway; the entry keeps being deleted until it is. */
		if (error != -ECANCELED)
			job_delete_entry(r->cluster, r->name, r->entry, r->token);
		job_finish(r, error == -ECANCELED ? -ECANCELED : r->result);
		return;
	}
	job_await(r, txn_revision(response), finish_with_result);
}

/* A request ends without its unit (timeout, try-lock, interrupt): its entry
 * goes first and the answer after, once this host's replica shows it, so
 * the caller's next look (waiting=, the journal) agrees. If it had become a
 * holder meanwhile, that unit simply returns (CLUSTER.md trap 7). */
void job_abandon(struct job *r, int error)
{
	struct cluster *c = r->cluster;
	r->result = error;
	r->phase = PHASE_BUSY;
	if (etcd_call(c->etcd, "/v3/kv/txn", delete_txn(c, r->name, r->entry, r->token), true,
		      on_abandoned, r) < 0) {
		job_delete_entry(c, r->name, r->entry, r->token);
		job_finish(r, error);
	}
}

/* ---- waiting for the replica ------------------------------------------------------ */

void job_await(struct job *r, int64_t revision, step_fn *then)
{
	r->await = revision;
	r->then = then;
	if (replica_revision(r->cluster->replica) >= revision) {
		r->phase = PHASE_IDLE;
		then(r);
	} else
		r->phase = PHASE_AWAIT;
}

/* After the replica moved: requests waiting for a revision or for a grant
 * look again. Each step may finish (and free) its request. */
void jobs_check(struct cluster *c)
{
	int64_t revision = replica_revision(c->replica);
	bool again = true;
	while (again) {
		again = false;
		for (struct job *r = c->active; r; r = r->next) {
			if (r->phase == PHASE_AWAIT && revision >= r->await) {
				r->phase = PHASE_IDLE;
				r->then(r);
				again = true; /* the list may have changed */
				break;
			}
			/* A waiting entry changes only when an event names it:
			 * look only at those (thousands may wait). */
			if (r->phase == PHASE_QUEUED && cluster_touched(c, r->entry)) {
				int64_t token;
				int state = replica_entry(c->replica, r->name, r->entry, &token);
				if (state != 0) {
					r->phase = PHASE_IDLE;
					r->then(r);
					again = true;
					break;
				}
			}
		}
	}
}

/* ---- lock and acquire --------------------------------------------------------------- */

static void take_check(struct job *r);

static void granted(struct job *r);

static void on_persisted(void *context, int error, const char *message,
			 struct json_object *response)
{
	struct job *r = context;
	if (error == -ECANCELED) {
		job_finish(r, -ECANCELED);
		return;
	}
	if (error < 0 || !txn_succeeded(response)) {
		/* Not answered: the entry may still hold, leased to a live host:
		 * it goes (retried until it has), or its unit would stay out with
		 * nobody to give it back. Not written: it went already. */
		if (error < 0) {
			log_warnx("cluster: %s: keeping lock %s: %s", r->path, r->entry, message);
			job_delete_entry(r->cluster, r->name, r->entry, r->token);
		}
		job_finish(r, -EIO);
		return;
	}
	r->lock_units++;
	r->last_token = r->token;
	r->index++;
	r->retries = 0;
	/* Answered once this host's replica shows the entry lease-less: an
	 * unlock sent right after the reply must find it. */
	job_await(r, txn_revision(response), job_next);
}

static void granted(struct job *r)
{
	struct cluster *c = r->cluster;
	if (r->entry_lock && r->persisted) { /* put without a lease already */
		r->lock_units++;
		r->last_token = r->token;
		r->index++;
		r->persisted = false;
		job_next(r);
		return;
	}
	if (r->entry_lock) {
		/* A lock unit outlives this host: the entry loses its lease before
		 * the reply, so the unit is never lost with the daemon. */
		char value[REPLICA_WHO_MAX + 32];
		snprintf(value, sizeof(value), "kind=lock who=%s", r->who);
		struct json_object *compares[] = {
		    txn_compare(txn_key(c, "sem/%s/q/%s", r->name, r->entry), NULL, "CREATE",
				"EQUAL", r->token),
		    NULL};
		struct json_object *ops[] = {
		    txn_put(txn_key(c, "sem/%s/q/%s", r->name, r->entry), value, 0), NULL};
		txn_send(r, compares, ops, true, on_persisted);
		return;
	}
	struct held *h = calloc(1, sizeof(*h));
	if (!h) {
		job_delete_entry(c, r->name, r->entry, r->token);
		job_finish(r, -ENOMEM);
		return;
	}
	h->owner_id = r->owner_id;
	snprintf(h->name, sizeof(h->name), "%s", r->name);
	snprintf(h->entry, sizeof(h->entry), "%s", r->entry);
	h->token = r->token;
	h->next = c->held;
	c->held = h;
	r->last_token = r->token;
	r->index++;
	r->retries = 0;
	job_next(r);
}

/* The entry is in the replica (or should be): what is it now? */
static void take_check(struct job *r)
{
	struct cluster *c = r->cluster;
	int64_t token;
	int state = replica_entry(c->replica, r->name, r->entry, &token);
	if (r->interrupted && state >= 0) {
		/* Its caller is gone: whatever the entry became, it goes. */
		r->token = token;
		job_abandon(r, -EINTR);
		return;
	}
	if (state == 1) {
		r->token = token;
		granted(r);
		return;
	}
	if (state == 2) { /* relaxed: done without a unit */
		job_delete_entry(c, r->name, r->entry, r->token);
		r->index++;
		job_next(r);
		return;
	}
	if (state < 0) {
		struct replica_state s;
		if (replica_state(c->replica, r->name, &s) < 0) {
			job_finish(r, -EIDRM);
			return;
		}
		log_warnx("cluster: %s: entry %s vanished while waiting (lease lost?)", r->path,
			  r->entry);
		job_finish(r, -EIO);
		return;
	}
	r->token = token;
	const struct command *command = &r->commands[r->index];
	if (command->timeout == 0 || r->interrupted) {
		job_abandon(r, r->interrupted ? -EINTR : -EAGAIN);
		return;
	}
	r->then = take_check;
	r->phase = PHASE_QUEUED;
}

static void on_entry_put(void *context, int error, const char *message,
			 struct json_object *response)
{
	struct job *r = context;
	if (error < 0) {
		if (error != -ECANCELED)
			log_warnx("cluster: %s: %s", r->path, message);
		/* A put that may have landed goes with the lease if it did; a
		 * delete makes sure now. */
		if (error != -ECANCELED)
			job_delete_entry(r->cluster, r->name, r->entry, 0);
		job_finish(r, error == -ECANCELED ? -ECANCELED : -EIO);
		return;
	}
	cluster_seen(r->cluster, response);
	/* Not written: the semaphore is gone (take_check says EIDRM), or an
	 * earlier attempt whose answer was lost wrote it (take_check finds it). */
	job_await(r, txn_revision(response), take_check);
}

/* The usual way: a leased entry joins the queue; take_check follows it. */
static void take_queue(struct job *r)
{
	struct cluster *c = r->cluster;
	char value[REPLICA_WHO_MAX + 32];
	snprintf(value, sizeof(value), "kind=%s who=%s", r->entry_lock ? "lock" : "acquire",
		 r->who);
	/* Put-if-absent of our own key, only while the semaphore exists:
	 * idempotent, so a retry after a lost answer is harmless. */
	struct json_object *compares[] = {
	    txn_compare(txn_key(c, "sem/%s/meta", r->name), NULL, "CREATE", "GREATER", 0),
	    txn_compare(txn_key(c, "sem/%s/q/%s", r->name, r->entry), NULL, "CREATE", "EQUAL", 0),
	    NULL};
	struct json_object *ops[] = {
	    txn_put(txn_key(c, "sem/%s/q/%s", r->name, r->entry), value, c->lease), NULL};
	txn_send(r, compares, ops, true, on_entry_put);
}

static void on_fast_put(void *context, int error, const char *message, struct json_object *response)
{
	struct job *r = context;
	if (error < 0) {
		on_entry_put(context, error, message, response);
		return;
	}
	cluster_seen(r->cluster, response);
	if (!txn_succeeded(response)) { /* someone came first: queue as usual */
		take_queue(r);
		return;
	}
	r->persisted = true;
	job_await(r, txn_revision(response), take_check);
}

/* A lock on a semaphore with a free unit and nobody waiting, as this
 * host's replica saw it at revision R: one transaction puts the entry
 * without a lease (it holds at once), guarded by "no entry created after R
 * and the meta record unchanged" — then it is the newest entry and a slot
 * is free, so the rule makes it a holder. Otherwise: the usual way. */
static void take_fast(struct job *r, const struct replica_state *state)
{
	struct cluster *c = r->cluster;
	char value[REPLICA_WHO_MAX + 32];
	snprintf(value, sizeof(value), "kind=lock who=%s", r->who);
	struct json_object *compares[] = {
	    txn_compare(txn_key(c, "sem/%s/meta", r->name), NULL, "MOD", "EQUAL",
			state->meta_revision),
	    txn_compare(txn_key(c, "sem/%s/q/", r->name), txn_range_end(c, "sem/%s/q/", r->name),
			"CREATE", "LESS", replica_revision(c->replica) + 1),
	    NULL};
	struct json_object *ops[] = {
	    txn_put(txn_key(c, "sem/%s/q/%s", r->name, r->entry), value, 0), NULL};
	txn_send(r, compares, ops, true, on_fast_put);
}

static void take_start(struct job *r, const struct command *command)
{
	struct cluster *c = r->cluster;
	if (command->verb == VERB_ACQUIRE && !r->waiter->owner) {
		job_finish(r, -EINVAL);
		return;
	}
	if (!c->lease) { /* lease-lost: a new one is on its way */
		r->phase = PHASE_LEASE;
		r->not_before_ms = cluster_now_ms() + c->options.etcd.request_timeout_ms;
		return;
	}
	r->entry_lock = command->verb == VERB_LOCK;
	snprintf(r->entry, sizeof(r->entry), "%s.%" PRIx64 ".%" PRIu64, c->host, c->lease,
		 ++c->entry_counter);
	double seconds = command->timeout;
	if (c->options.max_wait > 0 && (seconds < 0 || seconds > c->options.max_wait))
		seconds = c->options.max_wait;
	r->has_deadline = seconds >= 0;
	if (r->has_deadline)
		r->deadline_ms = cluster_now_ms() + (int64_t)(seconds * 1000);
	struct replica_state state;
	if (r->entry_lock && replica_state(c->replica, r->name, &state) == 0 &&
	    state.waiting == 0 && state.holders < state.meta.limit - state.meta.plain) {
		take_fast(r, &state);
		return;
	}
	take_queue(r);
}

/* ---- unlock, release, relax, limit, set ------------------------------------------------ */

static void meta_retry(struct job *r);

static void on_meta_written(void *context, int error, const char *message,
			    struct json_object *response)
{
	struct job *r = context;
	if (error < 0) {
		if (error != -ECANCELED)
			log_warnx("cluster: %s: %s", r->path, message);
		job_finish(r, error == -ECANCELED ? -ECANCELED : -EIO);
		return;
	}
	int64_t revision = txn_revision(response);
	if (!txn_succeeded(response)) {
		/* Someone else wrote first: look again once we have seen it. */
		if (++r->retries > CAS_RETRIES) {
			job_finish(r, -EBUSY);
			return;
		}
		job_await(r, revision, meta_retry);
		return;
	}
	/* Done once our replica shows it, so that the next command (and the
	 * journal the writer reads next) sees its own write. */
	r->retries = 0;
	r->index++;
	job_await(r, revision, job_next);
}

static void meta_write(struct job *r, const struct replica_state *state,
		       const struct replica_meta *meta, char forgive[][REPLICA_ENTRY_MAX],
		       int forgiven, bool guard_entries)
{
	struct cluster *c = r->cluster;
	char text[512];
	struct replica_meta m = *meta;
	snprintf(m.by, sizeof(m.by), "%s", r->who);
	if (replica_meta_format(&m, text, sizeof(text)) < 0) {
		job_finish(r, -ENAMETOOLONG);
		return;
	}
	struct json_object *compares[4] = {0};
	struct json_object *ops[REPLICA_FORGIVE_MAX + 2] = {0};
	int n = 0, o = 0;
	compares[n++] = txn_compare(txn_key(c, "sem/%s/meta", r->name), NULL, "MOD", "EQUAL",
				    state->meta_revision);
	if (guard_entries) /* no entry came or changed since the plan was made */
		compares[n++] = txn_compare(txn_key(c, "sem/%s/q/", r->name),
					    txn_range_end(c, "sem/%s/q/", r->name), "MOD", "LESS",
					    replica_revision(c->replica) + 1);
	ops[o++] = txn_put(txn_key(c, "sem/%s/meta", r->name), text, 0);
	for (int i = 0; i < forgiven; i++)
		ops[o++] = txn_delete(txn_key(c, "sem/%s/q/%s", r->name, forgive[i]), NULL);
	/* Not repeated after a lost answer: a second compare-and-swap would
	 * apply the command twice. The caller gets EIO: outcome unknown. */
	txn_send(r, compares, ops, false, on_meta_written);
}

static void unlock_entry_done(void *context, int error, const char *message,
			      struct json_object *response)
{
	on_meta_written(context, error, message, response);
}

static void meta_retry(struct job *r)
{
	job_next(r);
}

static void command_unlock(struct job *r, const struct replica_state *state)
{
	struct cluster *c = r->cluster;
	char entry[REPLICA_ENTRY_MAX];
	struct replica_meta meta;
	int plan = replica_plan_unlock(c->replica, r->name, entry, sizeof(entry), &meta);
	if (plan == -EOVERFLOW && !r->caught_up) {
		/* Nothing to unlock as this host sees it: maybe a lock taken on
		 * another host a moment ago has not reached it yet. Catch up with
		 * etcd once, then decide. */
		r->caught_up = true;
		job_catch_up(r, job_next);
		return;
	}
	if (plan < 0) {
		job_finish(r, plan);
		return;
	}
	if (plan == 0) {
		meta_write(r, state, &meta, NULL, 0, false);
		return;
	}
	int64_t token = 0;
	(void)replica_entry(c->replica, r->name, entry, &token);
	struct json_object *compares[] = {
	    txn_compare(txn_key(c, "sem/%s/q/%s", r->name, entry), NULL, "CREATE", "EQUAL", token),
	    NULL};
	/* The mark first: the watch brings a transaction's events in order. */
	struct json_object *ops[] = {txn_unlock_mark(c, r->who),
				     txn_delete(txn_key(c, "sem/%s/q/%s", r->name, entry), NULL),
				     NULL};
	txn_send(r, compares, ops, false, unlock_entry_done);
}

/* Our own entry: gone either way (a compare that fails means an earlier
 * attempt, or the lease, took it). */
static void on_released(void *context, int error, const char *message, struct json_object *response)
{
	struct job *r = context;
	if (error < 0) {
		if (error != -ECANCELED)
			log_warnx("cluster: %s: release: %s", r->path, message);
		job_finish(r, error == -ECANCELED ? -ECANCELED : -EIO);
		return;
	}
	r->index++;
	job_await(r, txn_revision(response), job_next);
}

static void command_release(struct job *r)
{
	struct cluster *c = r->cluster;
	for (struct held **at = &c->held; *at; at = &(*at)->next) {
		struct held *h = *at;
		if (h->owner_id != r->owner_id || strcmp(h->name, r->name) != 0)
			continue;
		*at = h->next;
		struct json_object *compares[] = {
		    txn_compare(txn_key(c, "sem/%s/q/%s", r->name, h->entry), NULL, "CREATE",
				"EQUAL", h->token),
		    NULL};
		struct json_object *ops[] = {
		    txn_delete(txn_key(c, "sem/%s/q/%s", r->name, h->entry), NULL), NULL};
		free(h);
		txn_send(r, compares, ops, true, on_released);
		return;
	}
	job_finish(r, -ENOLCK);
}

static void command_admin(struct job *r, const struct command *command,
			  const struct replica_state *state)
{
	struct cluster *c = r->cluster;
	struct replica_meta meta;
	char forgive[REPLICA_FORGIVE_MAX][REPLICA_ENTRY_MAX];
	int forgiven = 0, plan;
	switch (command->verb) {
	case VERB_RELAX:
		plan = replica_plan_relax(c->replica, r->name, &meta);
		if (plan == 0 && memcmp(&meta, &state->meta, sizeof(meta)) == 0) {
			r->index++; /* nobody waits: nothing to write */
			job_next(r);
			return;
		}
		break;
	case VERB_LIMIT:
		plan = replica_plan_limit(c->replica, r->name, command->number, &meta);
		break;
	default:
		plan = replica_plan_set(c->replica, r->name, command->number, &meta, forgive,
					REPLICA_FORGIVE_MAX);
		forgiven = plan > 0 ? plan : 0;
		break;
	}
	if (plan < 0) {
		job_finish(r, plan == -E2BIG ? -EBUSY : plan);
		return;
	}
	meta_write(r, state, &meta, forgive, forgiven, true);
}

void job_next(struct job *r)
{
	struct cluster *c = r->cluster;
	if (r->index >= r->count) {
		job_finish(r, 0);
		return;
	}
	if (r->interrupted) {
		job_finish(r, -EINTR);
		return;
	}
	struct replica_state state;
	if (replica_state(c->replica, r->name, &state) < 0) {
		job_finish(r, -EIDRM);
		return;
	}
	const struct command *command = &r->commands[r->index];
	switch (command->verb) {
	case VERB_LOCK:
	case VERB_ACQUIRE:
		take_start(r, command);
		return;
	case VERB_UNLOCK:
		command_unlock(r, &state);
		return;
	case VERB_RELEASE:
		command_release(r);
		return;
	case VERB_RELAX:
	case VERB_LIMIT:
	case VERB_SET:
		command_admin(r, command, &state);
		return;
	}
	job_finish(r, -EINVAL);
}

/* ---- create, remove, define ---------------------------------------------------------------- */

static void on_sync_written(void *context, int error, const char *message,
			    struct json_object *response)
{
	struct job *r = context;
	if (error < 0) {
		if (error != -ECANCELED)
			log_warnx("cluster: %s: %s", r->path, message);
		job_finish(r, error == -ECANCELED ? -ECANCELED : -EIO);
		return;
	}
	if (!txn_succeeded(response))
		r->result = r->type == JOB_CREATE ? -EEXIST : -EAGAIN;
	else
		r->result = 0;
	if (r->result == -EAGAIN) { /* remove or define lost a race: again */
		if (++r->retries > CAS_RETRIES)
			r->result = -EBUSY;
		else {
			r->result = 0;
			job_await(r, txn_revision(response), r->then);
			return;
		}
	}
	/* Returned once the local tree shows it. */
	job_await(r, txn_revision(response), finish_with_result);
}

void job_create(struct job *r)
{
	struct cluster *c = r->cluster;
	char text[512];
	if (replica_meta_format(&r->meta, text, sizeof(text)) < 0) {
		job_finish(r, -ENAMETOOLONG);
		return;
	}
	struct json_object *compares[] = {
	    txn_compare(txn_key(c, "sem/%s/meta", r->name), NULL, "CREATE", "EQUAL", 0), NULL};
	struct json_object *ops[] = {txn_put(txn_key(c, "sem/%s/meta", r->name), text, 0), NULL};
	txn_send(r, compares, ops, false, on_sync_written);
}

void job_remove(struct job *r)
{
	struct cluster *c = r->cluster;
	struct replica_state state;
	if (replica_state(c->replica, r->name, &state) < 0) {
		job_finish(r, -ENOENT);
		return;
	}
	if (state.meta.defined && !r->even_defined) {
		job_finish(r, -EPERM);
		return;
	}
	/* The meta record and every entry in one revision; only the record we
	 * looked at (a defined one made meanwhile is not ours to remove). */
	struct json_object *compares[] = {txn_compare(txn_key(c, "sem/%s/meta", r->name), NULL,
						      "MOD", "EQUAL", state.meta_revision),
					  NULL};
	struct json_object *ops[] = {
	    txn_delete(txn_key(c, "sem/%s/", r->name), txn_range_end(c, "sem/%s/", r->name)), NULL};
	r->then = job_remove;
	txn_send(r, compares, ops, false, on_sync_written);
}

/* A reap that failed: removed by another host's reap meanwhile (every host
 * whose copy went idle may ask), or in use again. Told apart once the
 * replica has the failed transaction's revision. */
static void reap_lost(struct job *r)
{
	struct replica_state state;
	if (replica_state(r->cluster->replica, r->name, &state) == 0)
		log_info("undefined semaphore %s is in use again on some host: kept", r->path);
	job_finish(r, 0);
}

static void on_reaped(void *context, int error, const char *message, struct json_object *response)
{
	struct job *r = context;
	if (error < 0 && error != -ECANCELED) {
		log_warnx("cluster: removing idle undefined semaphore %s: %s (it stays)", r->path,
			  message);
	} else if (error == 0) {
		cluster_seen(r->cluster, response);
		/* Removed: every host's watch takes it away. Not removed: whoever
		 * lets go of it last asks again. */
		if (!txn_succeeded(response)) {
			job_await(r, txn_revision(response), reap_lost);
			return;
		}
	}
	job_finish(r, 0);
}

void job_reap(struct job *r)
{
	struct cluster *c = r->cluster;
	struct replica_state state;
	if (replica_state(c->replica, r->name, &state) < 0 || !state.meta.undefined ||
	    state.meta.defined || state.holders > 0 || state.waiting > 0 || state.meta.plain > 0) {
		job_finish(r, 0); /* gone already, or in use again */
		return;
	}
	/* A file open on another host keeps it: that host asks when it closes
	 * (or every host, when its lease takes the mark away). This host's own
	 * mark is stale (the store asks only with no file open here): it goes
	 * with the rest. */
	if (state.opened - replica_open_on(c->replica, r->name, c->host) > 0) {
		log_info("undefined semaphore %s is open on another host: kept", r->path);
		job_finish(r, 0);
		return;
	}
	/* Only the record we looked at, and only with no entry at all: an
	 * acquire that joined meanwhile (on any host) keeps it. An empty range
	 * compares as one key created at revision 0. No open mark newer than
	 * the replica: a host that opened it meanwhile keeps it too. */
	struct json_object *compares[] = {
	    txn_compare(txn_key(c, "sem/%s/meta", r->name), NULL, "MOD", "EQUAL",
			state.meta_revision),
	    txn_compare(txn_key(c, "sem/%s/q/", r->name), txn_range_end(c, "sem/%s/q/", r->name),
			"CREATE", "LESS", 1),
	    txn_compare(txn_key(c, "sem/%s/open/", r->name),
			txn_range_end(c, "sem/%s/open/", r->name), "MOD", "LESS",
			replica_revision(c->replica) + 1),
	    NULL};
	struct json_object *ops[] = {
	    txn_delete(txn_key(c, "sem/%s/", r->name), txn_range_end(c, "sem/%s/", r->name)), NULL};
	txn_send(r, compares, ops, false, on_reaped);
}

static void on_open_marked(void *context, int error, const char *message,
			   struct json_object *response)
{
	struct job *r = context;
	if (error < 0) {
		if (error != -ECANCELED)
			log_warnx("cluster: %s: marking it open here: %s", r->path, message);
		job_finish(r, error == -ECANCELED ? -ECANCELED : -EIO);
		return;
	}
	cluster_seen(r->cluster, response);
	r->result = txn_succeeded(response) ? 0 : -ENOENT; /* reaped as it was opened */
	r->token = txn_revision(response);
	/* Returned once the replica has it: this host's reap sees its own mark. */
	job_await(r, r->token, finish_with_result);
}

/* A file open here on a semaphore: its mark, under this host's lease, keeps
 * every host from reaping the name (job_reap). Only while it exists. */
void job_open_mark(struct job *r)
{
	struct cluster *c = r->cluster;
	if (!c->lease) { /* lease-lost: a new one is on its way */
		job_finish(r, -EIO);
		return;
	}
	char value[64];
	snprintf(value, sizeof(value), "pid=%d", (int)getpid());
	struct json_object *compares[] = {
	    txn_compare(txn_key(c, "sem/%s/meta", r->name), NULL, "CREATE", "GREATER", 0), NULL};
	struct json_object *ops[] = {
	    txn_put(txn_key(c, "sem/%s/open/%s", r->name, c->host), value, c->lease), NULL};
	txn_send(r, compares, ops, true, on_open_marked);
}

static void on_open_unmarked(void *context, int error, const char *message,
			     struct json_object *response)
{
	struct job *r = context;
	if (error < 0 && error != -ECANCELED) /* shutting down: the lease revocation takes it */
		log_warnx("cluster: %s: removing its open mark: %s (it stays until this host's "
			  "lease goes)",
			  r->path, message);
	else if (error == 0)
		cluster_seen(r->cluster, response);
	job_finish(r, 0);
}

/* The last file open here closed: the mark goes, unless a later open here
 * wrote it again (r->token: the revision of the mark this close ends; -1
 * when an open could not learn it: removed whatever it is). */
void job_open_unmark(struct job *r)
{
	struct cluster *c = r->cluster;
	struct json_object *compares[] = {
	    r->token > 0 ? txn_compare(txn_key(c, "sem/%s/open/%s", r->name, c->host), NULL, "MOD",
				       "EQUAL", r->token)
			 : NULL,
	    NULL};
	struct json_object *ops[] = {
	    txn_delete(txn_key(c, "sem/%s/open/%s", r->name, c->host), NULL), NULL};
	txn_send(r, compares, ops, true, on_open_unmarked);
}

/* A dir/ record's text: written by mkdir, compared and replaced by chown. */
static void directory_record(char *out, size_t size, mode_t mode, uid_t uid, gid_t gid)
{
	snprintf(out, size, "mode=%04o uid=%u gid=%u", (unsigned)(mode & 07777), (unsigned)uid,
		 (unsigned)gid);
}

/* A directory made with mkdir: its record, compared by value (the replica
 * keeps no revision of it). */
static void chown_directory(struct job *r)
{
	struct cluster *c = r->cluster;
	mode_t mode;
	uid_t uid;
	gid_t gid;
	if (replica_directory(c->replica, r->name, &mode, &uid, &gid) < 0) {
		job_finish(r, -ENOENT);
		return;
	}
	char old[64], new[64];
	directory_record(old, sizeof(old), mode, uid, gid);
	directory_record(new, sizeof(new), r->number & CHOWN_MODE ? r->meta.mode : mode,
			 r->number & CHOWN_UID ? r->meta.uid : uid,
			 r->number & CHOWN_GID ? r->meta.gid : gid);
	if (strcmp(old, new) == 0) {
		job_finish(r, 0);
		return;
	}
	struct json_object *compares[] = {txn_compare_value(txn_key(c, "dir/%s", r->name), old),
					  NULL};
	struct json_object *ops[] = {txn_put(txn_key(c, "dir/%s", r->name), new, 0), NULL};
	r->then = job_chown;
	txn_send(r, compares, ops, false, on_sync_written);
}

/* Only the fields asked (r->number: CHOWN_MODE, _UID, _GID) change, on the
 * record as it is now: a chown on another host meanwhile is kept. */
void job_chown(struct job *r)
{
	struct cluster *c = r->cluster;
	struct replica_state state;
	if (replica_state(c->replica, r->name, &state) < 0) {
		chown_directory(r);
		return;
	}
	struct replica_meta meta = state.meta;
	if (r->number & CHOWN_MODE)
		meta.mode = r->meta.mode & 07777;
	if (r->number & CHOWN_UID)
		meta.uid = r->meta.uid;
	if (r->number & CHOWN_GID)
		meta.gid = r->meta.gid;
	if (meta.mode == state.meta.mode && meta.uid == state.meta.uid &&
	    meta.gid == state.meta.gid) {
		job_finish(r, 0);
		return;
	}
	snprintf(meta.by, sizeof(meta.by), "%s", r->who);
	char text[512];
	if (replica_meta_format(&meta, text, sizeof(text)) < 0) {
		job_finish(r, -ENAMETOOLONG);
		return;
	}
	struct json_object *compares[] = {txn_compare(txn_key(c, "sem/%s/meta", r->name), NULL,
						      "MOD", "EQUAL", state.meta_revision),
					  NULL};
	struct json_object *ops[] = {txn_put(txn_key(c, "sem/%s/meta", r->name), text, 0), NULL};
	r->then = job_chown;
	txn_send(r, compares, ops, false, on_sync_written);
}

void job_define(struct job *r)
{
	struct cluster *c = r->cluster;
	struct replica_state state;
	if (replica_state(c->replica, r->name, &state) < 0) {
		job_create(r);
		return;
	}
	struct replica_meta meta = state.meta;
	int plan = replica_plan_limit(c->replica, r->name, (int)r->number, &meta);
	if (plan == 0 && meta.defined && state.meta.limit == (int)r->number) {
		job_finish(r, 0);
		return;
	}
	if (plan < 0)
		meta = state.meta; /* defined, at its old limit; the caller says why */
	meta.defined = true;
	meta.undefined = false; /* an ACE client's name, now in the configuration */
	snprintf(meta.by, sizeof(meta.by), "%s", r->who);
	char text[512];
	replica_meta_format(&meta, text, sizeof(text));
	struct json_object *compares[] = {txn_compare(txn_key(c, "sem/%s/meta", r->name), NULL,
						      "MOD", "EQUAL", state.meta_revision),
					  txn_compare(txn_key(c, "sem/%s/q/", r->name),
						      txn_range_end(c, "sem/%s/q/", r->name), "MOD",
						      "LESS", replica_revision(c->replica) + 1),
					  NULL};
	struct json_object *ops[] = {txn_put(txn_key(c, "sem/%s/meta", r->name), text, 0), NULL};
	r->then = job_define;
	if (plan < 0)
		r->result = plan;
	txn_send(r, compares, ops, false, on_sync_written);
}

/* ---- release-owner, return-units, cancel ------------------------------------------------------
 */

void jobs_release_owner(struct cluster *c, uint64_t owner_id, bool delete_entries)
{
	/* Released: no longer lost either (its id is never used again). */
	pthread_mutex_lock(&c->lock);
	for (size_t i = 0; i < c->lost_count; i++)
		if (c->lost_ids[i] == owner_id) {
			c->lost_ids[i] = c->lost_ids[--c->lost_count];
			break;
		}
	pthread_mutex_unlock(&c->lock);
	for (struct held **at = &c->held; *at;) {
		struct held *h = *at;
		if (h->owner_id != owner_id) {
			at = &h->next;
			continue;
		}
		*at = h->next;
		if (delete_entries) /* else: the lease revocation at shutdown takes them */
			job_delete_entry(c, h->name, h->entry, h->token);
		free(h);
	}
}

void jobs_cancel(struct cluster *c, struct waiter *waiter)
{
	for (struct job *r = c->active; r; r = r->next) {
		if (r->type != JOB_COMMANDS || r->waiter != waiter)
			continue;
		r->interrupted = true;
		if (r->phase == PHASE_QUEUED)
			job_abandon(r, -EINTR);
		return;
	}
}

/* ---- mkdir, rmdir ----------------------------------------------------------------- */

static void on_directory_written(void *context, int error, const char *message,
				 struct json_object *response)
{
	struct job *r = context;
	if (error < 0) {
		if (error != -ECANCELED)
			log_warnx("cluster: %s: %s", r->path, message);
		job_finish(r, error == -ECANCELED ? -ECANCELED : -EIO);
		return;
	}
	if (txn_succeeded(response))
		r->result = 0;
	else if (r->type == JOB_MKDIR)
		r->result = -EEXIST;
	else {
		mode_t mode;
		uid_t uid;
		gid_t gid;
		/* Not removed: it is gone already, or something is in it. */
		r->result = replica_directory(r->cluster->replica, r->name, &mode, &uid, &gid) < 0
				? -ENOENT
				: -ENOTEMPTY;
	}
	job_await(r, txn_revision(response), finish_with_result);
}

/* A directory record, only where nothing has its name. */
void job_mkdir(struct job *r)
{
	struct cluster *c = r->cluster;
	char value[64];
	directory_record(value, sizeof(value), r->meta.mode, r->meta.uid, r->meta.gid);
	struct json_object *compares[] = {
	    txn_compare(txn_key(c, "dir/%s", r->name), NULL, "CREATE", "EQUAL", 0),
	    txn_compare(txn_key(c, "sem/%s/meta", r->name), NULL, "CREATE", "EQUAL", 0), NULL};
	struct json_object *ops[] = {txn_put(txn_key(c, "dir/%s", r->name), value, 0), NULL};
	txn_send(r, compares, ops, false, on_directory_written);
}

/* Removed only while empty cluster-wide: no semaphore and no directory
 * record below it (their escaped names begin with NAME%2F). */
void job_rmdir(struct job *r)
{
	struct cluster *c = r->cluster;
	struct json_object *compares[] = {
	    txn_compare(txn_key(c, "dir/%s", r->name), NULL, "CREATE", "GREATER", 0),
	    txn_compare(txn_key(c, "sem/%s%%2F", r->name), txn_range_end(c, "sem/%s%%2F", r->name),
			"CREATE", "EQUAL", 0),
	    txn_compare(txn_key(c, "dir/%s%%2F", r->name), txn_range_end(c, "dir/%s%%2F", r->name),
			"CREATE", "EQUAL", 0),
	    NULL};
	struct json_object *ops[] = {txn_delete(txn_key(c, "dir/%s", r->name), NULL), NULL};
	txn_send(r, compares, ops, false, on_directory_written);
}

/* ---- a read barrier ----------------------------------------------------------------- */

static void on_sync_mark(void *context, int error, const char *message,
			 struct json_object *response)
{
	struct job *r = context;
	if (error < 0) {
		job_finish(r, error == -ECANCELED ? -ECANCELED : -EIO);
		return;
	}
	cluster_seen(r->cluster, response);
	r->result = 0;
	job_await(r, txn_revision(response), r->after_catch_up);
}

static void on_barrier_read(void *context, int error, const char *message,
			    struct json_object *response)
{
	struct job *r = context;
	struct cluster *c = r->cluster;
	if (error < 0) {
		job_finish(r, error == -ECANCELED ? -ECANCELED : -EIO);
		return;
	}
	cluster_seen_any(c, response);
	r->result = 0;
	if (replica_revision(c->replica) >= txn_revision(response)) {
		r->phase = PHASE_IDLE;
		r->after_catch_up(r);
		return;
	}
	/* Behind etcd: by writes of ours still on their way, or by another
	 * etcd user's, which the watch never brings. A sync mark's revision
	 * comes after both, and the watch brings it. */
	struct json_object *ops[] = {txn_sync_put(c), NULL};
	if (etcd_call(c->etcd, "/v3/kv/txn", txn_new(c, NULL, ops), true, on_sync_mark, r) < 0)
		job_finish(r, -ENOMEM);
}

/* Everything etcd had when called, then `then` once this host's replica
 * has it: a read when the replica is there already, else a sync mark. */
void job_catch_up(struct job *r, step_fn *then)
{
	struct cluster *c = r->cluster;
	struct json_object *range = json_object_new_object();
	json_object_object_add(range, "key", txn_key(c, "hosts/"));
	json_object_object_add(range, "range_end", txn_range_end(c, "hosts/"));
	json_object_object_add(range, "count_only", json_object_new_boolean(1));
	r->after_catch_up = then;
	r->phase = PHASE_BUSY;
	if (etcd_call(c->etcd, "/v3/kv/range", range, true, on_barrier_read, r) < 0)
		job_finish(r, -ENOMEM);
}

/* A read barrier: etcd's current revision (a count-only range is the
 * cheapest read that carries it), then the wait until the replica has it. */
void job_barrier(struct job *r)
{
	job_catch_up(r, finish_with_result);
}
