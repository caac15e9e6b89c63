/* cluster.c: cluster mode's loop — the lease, the watch, the replica, and
 * every request as a short chain of etcd transactions (see cluster.h and
 * shared/CLUSTER.md). One file: the request state machine, the watch that
 * drives it and the lease that scopes it share the loop's private state and
 * read best together; the pure parts live in replica.c and etcd.c. */
#include "cluster.h"

#include "log.h"
#include "name.h"
#include "thread.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define KEY_NAME_MAX	 (3 * 255 + 1) /* a path with every byte escaped */
#define KEY_MAX		 (KEY_NAME_MAX + 512)
#define CAS_RETRIES	 100 /* an admin command that keeps losing its race */
#define DELETE_RETRY_MS	 500
#define LOOP_TICK_MS	 100 /* deadlines are checked at least this often */
#define STORE_ALIVE_WAIT 1   /* s: the store lock must come within this */

enum request_type {
	REQ_COMMANDS, /* a waiter's batch */
	REQ_CANCEL,
	REQ_RELEASE_OWNER,
	REQ_RETURN_UNITS,
	REQ_CREATE,
	REQ_REMOVE,
	REQ_DEFINE,
	REQ_DELETE, /* an entry that must go: retried until it has */
};

enum phase {
	PHASE_IDLE,   /* between steps */
	PHASE_BUSY,   /* an etcd call is out */
	PHASE_AWAIT,  /* waiting for the replica to reach `await` */
	PHASE_QUEUED, /* its entry waits in the queue */
	PHASE_LEASE,  /* waits for this host's new lease (after lease-lost) */
};

struct request;
typedef void step_fn(struct request *request);

struct request {
	struct request *next; /* incoming, or the loop's active list */
	struct cluster *cluster;
	enum request_type type;
	enum phase phase;
	struct waiter *waiter;
	uint64_t owner_id; /* acquire, release, release-owner */
	char path[PATH_MAX];
	char name[KEY_NAME_MAX];
	char who[REPLICA_WHO_MAX];
	const struct command *commands; /* the waiter's, or unlocks to return units */
	size_t count;
	size_t index; /* the command running */
	char entry[REPLICA_ENTRY_MAX];
	bool entry_lock; /* the entry is a lock's */
	bool persisted;	 /* ... put without a lease (the fast way) */
	int64_t token;	 /* the entry's create revision */
	int64_t last_token;
	unsigned lock_units;
	int64_t await;
	step_fn *then;
	bool has_deadline;
	int64_t deadline_ms;
	int64_t not_before_ms;
	bool interrupted;
	int retries;
	/* Synchronous calls: the caller waits on cluster->done. */
	struct replica_meta meta;
	unsigned number;
	bool even_defined;
	int result;
	bool finished, abandoned;
};

/* An acquire unit of this host: whose it is, to give back on close. */
struct held {
	struct held *next;
	uint64_t owner_id; /* the store's name for the owner (struct owner.id) */
	char name[KEY_NAME_MAX];
	char entry[REPLICA_ENTRY_MAX];
	int64_t token;
};

struct cluster {
	struct cluster_options options;
	char prefix[256];
	char host[REPLICA_WHO_MAX];
	char lease_file[PATH_MAX];
	struct cluster_hooks hooks;
	struct etcd *etcd;
	struct replica *replica;
	int64_t lease;
	int64_t lease_renewed_ms;
	bool lease_renewing;
	bool lease_granting;	   /* a grant is out (after lease-lost) */
	int64_t next_lease_try_ms; /* when to ask again after a failed grant */
	uint64_t entry_counter;
	struct etcd_stream *watch;
	int64_t watch_from;
	bool reloading;
	uint64_t lease_lost, watch_reopened;
	int64_t etcd_revision; /* the newest revision an answer showed */
	int64_t applied;       /* the replica's revision, for other threads */
	int64_t lag_since_ms;  /* loop: etcd has shown revisions the watch has not */
	char watch_error[256];

	/* Loop thread only. */
	struct request *active;
	struct held *held;
	int64_t next_keepalive_ms;

	pthread_mutex_t lock; /* incoming, the flags below, sync results */
	pthread_cond_t done;
	struct request *incoming;
	uint64_t *lost_ids; /* owners whose acquire units a lost lease took */
	size_t lost_count, lost_allocated;
	bool running; /* the loop thread exists */
	bool stopping;
	pthread_t thread;
};

static void request_finish(struct request *r, int error);
static void command_next(struct request *r);
static void await_revision(struct request *r, int64_t revision, step_fn *then);

static int64_t now_ms(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

/* ---- keys and JSON ------------------------------------------------------------ */

static struct json_object *key(const struct cluster *c, const char *format, ...)
    __attribute__((format(printf, 2, 3)));
static struct json_object *key(const struct cluster *c, const char *format, ...)
{
	char text[KEY_MAX];
	size_t used = (size_t)snprintf(text, sizeof(text), "%s", c->prefix);
	va_list args;
	va_start(args, format);
	vsnprintf(text + used, sizeof(text) - used, format, args);
	va_end(args);
	return etcd_bytes(text, strlen(text));
}

static struct json_object *range_end(const struct cluster *c, const char *format, ...)
    __attribute__((format(printf, 2, 3)));
static struct json_object *range_end(const struct cluster *c, const char *format, ...)
{
	char text[KEY_MAX];
	size_t used = (size_t)snprintf(text, sizeof(text), "%s", c->prefix);
	va_list args;
	va_start(args, format);
	vsnprintf(text + used, sizeof(text) - used, format, args);
	va_end(args);
	return etcd_prefix_end(text);
}

static struct json_object *compare(struct json_object *k, struct json_object *end,
				   const char *target, const char *result, int64_t value)
{
	struct json_object *c = json_object_new_object();
	json_object_object_add(c, "target", json_object_new_string(target));
	json_object_object_add(c, "key", k);
	if (end)
		json_object_object_add(c, "range_end", end);
	json_object_object_add(c, "result", json_object_new_string(result));
	const char *field = strcmp(target, "CREATE") == 0 ? "create_revision" : "mod_revision";
	json_object_object_add(c, field, etcd_int64(value));
	return c;
}

static struct json_object *put(struct json_object *k, const char *value, int64_t lease)
{
	struct json_object *p = json_object_new_object(), *op = json_object_new_object();
	json_object_object_add(p, "key", k);
	json_object_object_add(p, "value", etcd_bytes(value, strlen(value)));
	if (lease)
		json_object_object_add(p, "lease", etcd_int64(lease));
	json_object_object_add(op, "request_put", p);
	return op;
}

static struct json_object *delete_op(struct json_object *k, struct json_object *end)
{
	struct json_object *d = json_object_new_object(), *op = json_object_new_object();
	json_object_object_add(d, "key", k);
	if (end)
		json_object_object_add(d, "range_end", end);
	json_object_object_add(op, "request_delete_range", d);
	return op;
}

/* A transaction of up to 8 compares and `ops` (NULL-terminated lists). */
static struct json_object *txn(struct json_object **compares, struct json_object **ops)
{
	struct json_object *t = json_object_new_object();
	struct json_object *c = json_object_new_array(), *s = json_object_new_array();
	for (; compares && *compares; compares++)
		json_object_array_add(c, *compares);
	for (; ops && *ops; ops++)
		json_object_array_add(s, *ops);
	json_object_object_add(t, "compare", c);
	json_object_object_add(t, "success", s);
	return t;
}

static bool succeeded(struct json_object *response)
{
	struct json_object *field;
	return json_object_object_get_ex(response, "succeeded", &field) &&
	       json_object_get_boolean(field);
}

static int64_t header_revision(struct json_object *response)
{
	struct json_object *header = NULL, *result = NULL;
	if (!json_object_object_get_ex(response, "header", &header) &&
	    json_object_object_get_ex(response, "result", &result))
		json_object_object_get_ex(result, "header", &header); /* keep-alive */
	return etcd_int64_get(header, "revision", 0);
}

/* Watch lag: how far etcd's newest revision is ahead of the replica. */
static void seen(struct cluster *c, struct json_object *response)
{
	int64_t revision = header_revision(response);
	if (revision > __atomic_load_n(&c->etcd_revision, __ATOMIC_RELAXED))
		__atomic_store_n(&c->etcd_revision, revision, __ATOMIC_RELAXED);
}

static int path_of(const char *name, char *path, size_t size)
{
	int n = name_decode(name, strlen(name), path, size);
	return n < 0 ? n : 0;
}

/* ---- requests ------------------------------------------------------------------ */

static struct request *request_new(struct cluster *c, enum request_type type, const char *path)
{
	struct request *r = calloc(1, sizeof(*r));
	if (!r)
		return NULL;
	r->cluster = c;
	r->type = type;
	if (path) {
		snprintf(r->path, sizeof(r->path), "%s", path);
		if (replica_key_name(path, r->name, sizeof(r->name)) < 0) {
			free(r);
			return NULL;
		}
	}
	return r;
}

static void enqueue(struct cluster *c, struct request *r)
{
	pthread_mutex_lock(&c->lock);
	struct request **at = &c->incoming;
	while (*at)
		at = &(*at)->next;
	*at = r;
	pthread_mutex_unlock(&c->lock);
	etcd_wakeup(c->etcd);
}

static void active_remove(struct cluster *c, struct request *r)
{
	for (struct request **at = &c->active; *at; at = &(*at)->next)
		if (*at == r) {
			*at = r->next;
			return;
		}
}

/* A request's end: a waiter is answered, a synchronous caller woken. */
static void request_finish(struct request *r, int error)
{
	struct cluster *c = r->cluster;
	active_remove(c, r);
	switch (r->type) {
	case REQ_COMMANDS:
		c->hooks.complete(c->hooks.context, r->waiter, error, r->last_token, r->lock_units);
		free(r);
		return;
	case REQ_CREATE:
	case REQ_REMOVE:
	case REQ_DEFINE:
		pthread_mutex_lock(&c->lock);
		r->result = error;
		r->finished = true;
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
static void delete_entry(struct cluster *c, const char *name, const char *entry, int64_t token);

static void on_deleted(void *context, int error, const char *message, struct json_object *response)
{
	struct request *r = context;
	if (error == -ECANCELED) { /* shutting down: the lease revocation takes it */
		request_finish(r, 0);
		return;
	}
	if (error < 0) {
		log_warnx("cluster: deleting entry %s of %s failed (%s): retrying", r->entry,
			  r->path, message);
		r->phase = PHASE_IDLE;
		r->not_before_ms = now_ms() + DELETE_RETRY_MS;
		return;
	}
	request_finish(r, 0);
}

/* Delete one entry, only while it is the one made at `token` (0: any). */
static struct json_object *delete_txn(const struct cluster *c, const char *name, const char *entry,
				      int64_t token)
{
	struct json_object *compares[] = {
	    token ? compare(key(c, "sem/%s/q/%s", name, entry), NULL, "CREATE", "EQUAL", token)
		  : NULL,
	    NULL};
	struct json_object *ops[] = {delete_op(key(c, "sem/%s/q/%s", name, entry), NULL), NULL};
	return txn(compares, ops);
}

static void delete_start(struct request *r)
{
	struct cluster *c = r->cluster;
	r->phase = PHASE_BUSY;
	if (etcd_call(c->etcd, "/v3/kv/txn", delete_txn(c, r->name, r->entry, r->token), true,
		      on_deleted, r) < 0) {
		r->phase = PHASE_IDLE;
		r->not_before_ms = now_ms() + DELETE_RETRY_MS;
	}
}

static void delete_entry(struct cluster *c, const char *name, const char *entry, int64_t token)
{
	struct request *r = request_new(c, REQ_DELETE, NULL);
	if (!r) {
		log_warnx("cluster: out of memory deleting entry %s of %s: it goes with the lease",
			  entry, name);
		return;
	}
	snprintf(r->name, sizeof(r->name), "%s", name);
	(void)path_of(name, r->path, sizeof(r->path));
	snprintf(r->entry, sizeof(r->entry), "%s", entry);
	r->token = token;
	r->next = c->active;
	c->active = r;
	delete_start(r);
}

/* ---- abandoning a wait ----------------------------------------------------------- */

static void abandon_done(struct request *r)
{
	request_finish(r, r->result);
}

static void on_abandoned(void *context, int error, const char *message,
			 struct json_object *response)
{
	struct request *r = context;
	if (error < 0) {
		/* Answered anyway; the entry keeps being deleted until it is. */
		if (error != -ECANCELED)
			delete_entry(r->cluster, r->name, r->entry, r->token);
		request_finish(r, error == -ECANCELED ? -ECANCELED : r->result);
		return;
	}
	await_revision(r, header_revision(response), abandon_done);
}

/* A request ends without its unit (timeout, try-lock, interrupt): its entry
 * goes first and the answer after, once this host's replica shows it, so
 * the caller's next look (waiting=, the journal) agrees. If it had become a
 * holder meanwhile, that unit simply returns (CLUSTER.md trap 7). */
static void abandon(struct request *r, int error)
{
	struct cluster *c = r->cluster;
	r->result = error;
	r->phase = PHASE_BUSY;
	if (etcd_call(c->etcd, "/v3/kv/txn", delete_txn(c, r->name, r->entry, r->token), true,
		      on_abandoned, r) < 0) {
		delete_entry(c, r->name, r->entry, r->token);
		request_finish(r, error);
	}
}

/* ---- waiting for the replica ------------------------------------------------------ */

static void await_revision(struct request *r, int64_t revision, step_fn *then)
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
static void check_requests(struct cluster *c)
{
	int64_t revision = replica_revision(c->replica);
	bool again = true;
	while (again) {
		again = false;
		for (struct request *r = c->active; r; r = r->next) {
			if (r->phase == PHASE_AWAIT && revision >= r->await) {
				r->phase = PHASE_IDLE;
				r->then(r);
				again = true; /* the list may have changed */
				break;
			}
			if (r->phase == PHASE_QUEUED) {
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

static void take_check(struct request *r);

static void granted(struct request *r);

static void on_persisted(void *context, int error, const char *message,
			 struct json_object *response)
{
	struct request *r = context;
	if (error == -ECANCELED) {
		request_finish(r, -ECANCELED);
		return;
	}
	if (error < 0 || !succeeded(response)) {
		/* The entry went before it could outlive the lease: lost. */
		if (error < 0)
			log_warnx("cluster: %s: keeping lock %s: %s", r->path, r->entry, message);
		request_finish(r, -EIO);
		return;
	}
	r->lock_units++;
	r->last_token = r->token;
	r->index++;
	r->retries = 0;
	/* Answered once this host's replica shows the entry lease-less: an
	 * unlock sent right after the reply must find it. */
	await_revision(r, header_revision(response), command_next);
}

static void granted(struct request *r)
{
	struct cluster *c = r->cluster;
	if (r->entry_lock && r->persisted) { /* put without a lease already */
		r->lock_units++;
		r->last_token = r->token;
		r->index++;
		r->persisted = false;
		command_next(r);
		return;
	}
	if (r->entry_lock) {
		/* A lock unit outlives this host: the entry loses its lease before
		 * the reply, so the unit is never lost with the daemon. */
		char value[REPLICA_WHO_MAX + 32];
		snprintf(value, sizeof(value), "kind=lock who=%s", r->who);
		struct json_object *compares[] = {compare(key(c, "sem/%s/q/%s", r->name, r->entry),
							  NULL, "CREATE", "EQUAL", r->token),
						  NULL};
		struct json_object *ops[] = {
		    put(key(c, "sem/%s/q/%s", r->name, r->entry), value, 0), NULL};
		r->phase = PHASE_BUSY;
		if (etcd_call(c->etcd, "/v3/kv/txn", txn(compares, ops), true, on_persisted, r) < 0)
			request_finish(r, -ENOMEM);
		return;
	}
	struct held *h = calloc(1, sizeof(*h));
	if (!h) {
		delete_entry(c, r->name, r->entry, r->token);
		request_finish(r, -ENOMEM);
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
	command_next(r);
}

/* The entry is in the replica (or should be): what is it now? */
static void take_check(struct request *r)
{
	struct cluster *c = r->cluster;
	int64_t token;
	int state = replica_entry(c->replica, r->name, r->entry, &token);
	if (r->interrupted && state >= 0) {
		/* Its caller is gone: whatever the entry became, it goes. */
		r->token = token;
		abandon(r, -EINTR);
		return;
	}
	if (state == 1) {
		r->token = token;
		granted(r);
		return;
	}
	if (state == 2) { /* relaxed: done without a unit */
		delete_entry(c, r->name, r->entry, r->token);
		r->index++;
		command_next(r);
		return;
	}
	if (state < 0) {
		struct replica_state s;
		if (replica_state(c->replica, r->name, &s) < 0) {
			request_finish(r, -EIDRM);
			return;
		}
		log_warnx("cluster: %s: entry %s vanished while waiting (lease lost?)", r->path,
			  r->entry);
		request_finish(r, -EIO);
		return;
	}
	r->token = token;
	const struct command *command = &r->commands[r->index];
	if (command->timeout == 0 || r->interrupted) {
		abandon(r, r->interrupted ? -EINTR : -EAGAIN);
		return;
	}
	r->then = take_check;
	r->phase = PHASE_QUEUED;
}

static void on_entry_put(void *context, int error, const char *message,
			 struct json_object *response)
{
	struct request *r = context;
	if (error < 0) {
		if (error != -ECANCELED)
			log_warnx("cluster: %s: %s", r->path, message);
		/* A put that may have landed goes with the lease if it did; a
		 * delete makes sure now. */
		if (error != -ECANCELED)
			delete_entry(r->cluster, r->name, r->entry, 0);
		request_finish(r, error == -ECANCELED ? -ECANCELED : -EIO);
		return;
	}
	seen(r->cluster, response);
	/* Not written: the semaphore is gone (take_check says EIDRM), or an
	 * earlier attempt whose answer was lost wrote it (take_check finds it). */
	await_revision(r, header_revision(response), take_check);
}

/* The usual way: a leased entry joins the queue; take_check follows it. */
static void take_queue(struct request *r)
{
	struct cluster *c = r->cluster;
	char value[REPLICA_WHO_MAX + 32];
	snprintf(value, sizeof(value), "kind=%s who=%s", r->entry_lock ? "lock" : "acquire",
		 r->who);
	/* Put-if-absent of our own key, only while the semaphore exists:
	 * idempotent, so a retry after a lost answer is harmless. */
	struct json_object *compares[] = {
	    compare(key(c, "sem/%s/meta", r->name), NULL, "CREATE", "GREATER", 0),
	    compare(key(c, "sem/%s/q/%s", r->name, r->entry), NULL, "CREATE", "EQUAL", 0), NULL};
	struct json_object *ops[] = {put(key(c, "sem/%s/q/%s", r->name, r->entry), value, c->lease),
				     NULL};
	r->phase = PHASE_BUSY;
	if (etcd_call(c->etcd, "/v3/kv/txn", txn(compares, ops), true, on_entry_put, r) < 0)
		request_finish(r, -ENOMEM);
}

static void on_fast_put(void *context, int error, const char *message, struct json_object *response)
{
	struct request *r = context;
	if (error < 0) {
		on_entry_put(context, error, message, response);
		return;
	}
	seen(r->cluster, response);
	if (!succeeded(response)) { /* someone came first: queue as usual */
		take_queue(r);
		return;
	}
	r->persisted = true;
	await_revision(r, header_revision(response), take_check);
}

/* A lock on a semaphore with a free unit and nobody waiting, as this
 * host's replica saw it at revision R: one transaction puts the entry
 * without a lease (it holds at once), guarded by "no entry created after R
 * and the meta record unchanged" — then it is the newest entry and a slot
 * is free, so the rule makes it a holder. Otherwise: the usual way. */
static void take_fast(struct request *r, const struct replica_state *state)
{
	struct cluster *c = r->cluster;
	char value[REPLICA_WHO_MAX + 32];
	snprintf(value, sizeof(value), "kind=lock who=%s", r->who);
	struct json_object *compares[] = {
	    compare(key(c, "sem/%s/meta", r->name), NULL, "MOD", "EQUAL", state->meta_revision),
	    compare(key(c, "sem/%s/q/", r->name), range_end(c, "sem/%s/q/", r->name), "CREATE",
		    "LESS", replica_revision(c->replica) + 1),
	    NULL};
	struct json_object *ops[] = {put(key(c, "sem/%s/q/%s", r->name, r->entry), value, 0), NULL};
	r->phase = PHASE_BUSY;
	if (etcd_call(c->etcd, "/v3/kv/txn", txn(compares, ops), true, on_fast_put, r) < 0)
		request_finish(r, -ENOMEM);
}

static void take_start(struct request *r, const struct command *command)
{
	struct cluster *c = r->cluster;
	if (command->verb == VERB_ACQUIRE && !r->waiter->owner) {
		request_finish(r, -EINVAL);
		return;
	}
	if (!c->lease) { /* lease-lost: a new one is on its way */
		r->phase = PHASE_LEASE;
		r->not_before_ms = now_ms() + c->options.etcd.request_timeout_ms;
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
		r->deadline_ms = now_ms() + (int64_t)(seconds * 1000);
	struct replica_state state;
	if (r->entry_lock && replica_state(c->replica, r->name, &state) == 0 &&
	    state.waiting == 0 && state.holders < state.meta.limit - state.meta.plain) {
		take_fast(r, &state);
		return;
	}
	take_queue(r);
}

/* ---- unlock, release, relax, limit, set ------------------------------------------------ */

static void meta_retry(struct request *r);

static void on_meta_written(void *context, int error, const char *message,
			    struct json_object *response)
{
	struct request *r = context;
	if (error < 0) {
		if (error != -ECANCELED)
			log_warnx("cluster: %s: %s", r->path, message);
		request_finish(r, error == -ECANCELED ? -ECANCELED : -EIO);
		return;
	}
	int64_t revision = header_revision(response);
	if (!succeeded(response)) {
		/* Someone else wrote first: look again once we have seen it. */
		if (++r->retries > CAS_RETRIES) {
			request_finish(r, -EBUSY);
			return;
		}
		await_revision(r, revision, meta_retry);
		return;
	}
	/* Done once our replica shows it, so that the next command (and the
	 * journal the writer reads next) sees its own write. */
	r->retries = 0;
	r->index++;
	await_revision(r, revision, command_next);
}

static void meta_write(struct request *r, const struct replica_state *state,
		       const struct replica_meta *meta, char forgive[][REPLICA_ENTRY_MAX],
		       int forgiven, bool guard_entries)
{
	struct cluster *c = r->cluster;
	char text[512];
	struct replica_meta m = *meta;
	snprintf(m.by, sizeof(m.by), "%s", r->who);
	if (replica_meta_format(&m, text, sizeof(text)) < 0) {
		request_finish(r, -ENAMETOOLONG);
		return;
	}
	struct json_object *compares[4] = {0};
	struct json_object *ops[REPLICA_FORGIVE_MAX + 2] = {0};
	int n = 0, o = 0;
	compares[n++] =
	    compare(key(c, "sem/%s/meta", r->name), NULL, "MOD", "EQUAL", state->meta_revision);
	if (guard_entries) /* no entry came or changed since the plan was made */
		compares[n++] =
		    compare(key(c, "sem/%s/q/", r->name), range_end(c, "sem/%s/q/", r->name), "MOD",
			    "LESS", replica_revision(c->replica) + 1);
	ops[o++] = put(key(c, "sem/%s/meta", r->name), text, 0);
	for (int i = 0; i < forgiven; i++)
		ops[o++] = delete_op(key(c, "sem/%s/q/%s", r->name, forgive[i]), NULL);
	r->phase = PHASE_BUSY;
	/* Not repeated after a lost answer: a second compare-and-swap would
	 * apply the command twice. The caller gets EIO: outcome unknown. */
	if (etcd_call(c->etcd, "/v3/kv/txn", txn(compares, ops), false, on_meta_written, r) < 0)
		request_finish(r, -ENOMEM);
}

static void unlock_entry_done(void *context, int error, const char *message,
			      struct json_object *response)
{
	on_meta_written(context, error, message, response);
}

static void meta_retry(struct request *r)
{
	command_next(r);
}

static void command_unlock(struct request *r, const struct replica_state *state)
{
	struct cluster *c = r->cluster;
	char entry[REPLICA_ENTRY_MAX];
	struct replica_meta meta;
	int plan = replica_plan_unlock(c->replica, r->name, entry, sizeof(entry), &meta);
	if (plan < 0) {
		request_finish(r, plan);
		return;
	}
	if (plan == 0) {
		meta_write(r, state, &meta, NULL, 0, false);
		return;
	}
	int64_t token = 0;
	(void)replica_entry(c->replica, r->name, entry, &token);
	struct json_object *compares[] = {
	    compare(key(c, "sem/%s/q/%s", r->name, entry), NULL, "CREATE", "EQUAL", token), NULL};
	struct json_object *ops[] = {delete_op(key(c, "sem/%s/q/%s", r->name, entry), NULL), NULL};
	r->phase = PHASE_BUSY;
	if (etcd_call(c->etcd, "/v3/kv/txn", txn(compares, ops), false, unlock_entry_done, r) < 0)
		request_finish(r, -ENOMEM);
}

/* Our own entry: gone either way (a compare that fails means an earlier
 * attempt, or the lease, took it). */
static void on_released(void *context, int error, const char *message, struct json_object *response)
{
	struct request *r = context;
	if (error < 0) {
		if (error != -ECANCELED)
			log_warnx("cluster: %s: release: %s", r->path, message);
		request_finish(r, error == -ECANCELED ? -ECANCELED : -EIO);
		return;
	}
	r->index++;
	await_revision(r, header_revision(response), command_next);
}

static void command_release(struct request *r)
{
	struct cluster *c = r->cluster;
	for (struct held **at = &c->held; *at; at = &(*at)->next) {
		struct held *h = *at;
		if (h->owner_id != r->owner_id || strcmp(h->name, r->name) != 0)
			continue;
		*at = h->next;
		struct json_object *compares[] = {compare(key(c, "sem/%s/q/%s", r->name, h->entry),
							  NULL, "CREATE", "EQUAL", h->token),
						  NULL};
		struct json_object *ops[] = {
		    delete_op(key(c, "sem/%s/q/%s", r->name, h->entry), NULL), NULL};
		free(h);
		r->phase = PHASE_BUSY;
		if (etcd_call(c->etcd, "/v3/kv/txn", txn(compares, ops), true, on_released, r) < 0)
			request_finish(r, -ENOMEM);
		return;
	}
	request_finish(r, -ENOLCK);
}

static void command_admin(struct request *r, const struct command *command,
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
			command_next(r);
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
		request_finish(r, plan == -E2BIG ? -EBUSY : plan);
		return;
	}
	meta_write(r, state, &meta, forgive, forgiven, true);
}

static void command_next(struct request *r)
{
	struct cluster *c = r->cluster;
	if (r->index >= r->count) {
		request_finish(r, 0);
		return;
	}
	if (r->interrupted) {
		request_finish(r, -EINTR);
		return;
	}
	struct replica_state state;
	if (replica_state(c->replica, r->name, &state) < 0) {
		request_finish(r, -EIDRM);
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
	request_finish(r, -EINVAL);
}

/* ---- create, remove, define ---------------------------------------------------------------- */

static void sync_done(struct request *r)
{
	request_finish(r, r->result);
}

static void on_sync_written(void *context, int error, const char *message,
			    struct json_object *response)
{
	struct request *r = context;
	if (error < 0) {
		if (error != -ECANCELED)
			log_warnx("cluster: %s: %s", r->path, message);
		request_finish(r, error == -ECANCELED ? -ECANCELED : -EIO);
		return;
	}
	if (!succeeded(response))
		r->result = r->type == REQ_CREATE ? -EEXIST : -EAGAIN;
	else
		r->result = 0;
	if (r->result == -EAGAIN) { /* remove or define lost a race: again */
		if (++r->retries > CAS_RETRIES)
			r->result = -EBUSY;
		else {
			r->result = 0;
			await_revision(r, header_revision(response), r->then);
			return;
		}
	}
	/* Returned once the local tree shows it. */
	await_revision(r, header_revision(response), sync_done);
}

static void create_start(struct request *r)
{
	struct cluster *c = r->cluster;
	char text[512];
	if (replica_meta_format(&r->meta, text, sizeof(text)) < 0) {
		request_finish(r, -ENAMETOOLONG);
		return;
	}
	struct json_object *compares[] = {
	    compare(key(c, "sem/%s/meta", r->name), NULL, "CREATE", "EQUAL", 0), NULL};
	struct json_object *ops[] = {put(key(c, "sem/%s/meta", r->name), text, 0), NULL};
	r->phase = PHASE_BUSY;
	if (etcd_call(c->etcd, "/v3/kv/txn", txn(compares, ops), false, on_sync_written, r) < 0)
		request_finish(r, -ENOMEM);
}

static void remove_start(struct request *r)
{
	struct cluster *c = r->cluster;
	struct replica_state state;
	if (replica_state(c->replica, r->name, &state) < 0) {
		request_finish(r, -ENOENT);
		return;
	}
	if (state.meta.defined && !r->even_defined) {
		request_finish(r, -EPERM);
		return;
	}
	/* The meta record and every entry in one revision; only the record we
	 * looked at (a defined one made meanwhile is not ours to remove). */
	struct json_object *compares[] = {
	    compare(key(c, "sem/%s/meta", r->name), NULL, "MOD", "EQUAL", state.meta_revision),
	    NULL};
	struct json_object *ops[] = {
	    delete_op(key(c, "sem/%s/", r->name), range_end(c, "sem/%s/", r->name)), NULL};
	r->then = remove_start;
	r->phase = PHASE_BUSY;
	if (etcd_call(c->etcd, "/v3/kv/txn", txn(compares, ops), false, on_sync_written, r) < 0)
		request_finish(r, -ENOMEM);
}

static void define_start(struct request *r)
{
	struct cluster *c = r->cluster;
	struct replica_state state;
	if (replica_state(c->replica, r->name, &state) < 0) {
		create_start(r);
		return;
	}
	struct replica_meta meta = state.meta;
	int plan = replica_plan_limit(c->replica, r->name, (int)r->number, &meta);
	if (plan == 0 && meta.defined && state.meta.limit == (int)r->number) {
		request_finish(r, 0);
		return;
	}
	if (plan < 0)
		meta = state.meta; /* defined, at its old limit; the caller says why */
	meta.defined = true;
	snprintf(meta.by, sizeof(meta.by), "%s", r->who);
	char text[512];
	replica_meta_format(&meta, text, sizeof(text));
	struct json_object *compares[] = {
	    compare(key(c, "sem/%s/meta", r->name), NULL, "MOD", "EQUAL", state.meta_revision),
	    compare(key(c, "sem/%s/q/", r->name), range_end(c, "sem/%s/q/", r->name), "MOD", "LESS",
		    replica_revision(c->replica) + 1),
	    NULL};
	struct json_object *ops[] = {put(key(c, "sem/%s/meta", r->name), text, 0), NULL};
	r->then = define_start;
	r->phase = PHASE_BUSY;
	if (plan < 0)
		r->result = plan;
	if (etcd_call(c->etcd, "/v3/kv/txn", txn(compares, ops), false, on_sync_written, r) < 0)
		request_finish(r, -ENOMEM);
}

/* ---- release-owner, return-units, cancel ------------------------------------------------------
 */

static void release_owner(struct cluster *c, uint64_t owner_id, bool delete_entries)
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
			delete_entry(c, h->name, h->entry, h->token);
		free(h);
	}
}

static void cancel(struct cluster *c, struct waiter *waiter)
{
	for (struct request *r = c->active; r; r = r->next) {
		if (r->type != REQ_COMMANDS || r->waiter != waiter)
			continue;
		r->interrupted = true;
		if (r->phase == PHASE_QUEUED)
			abandon(r, -EINTR);
		return;
	}
}

/* ---- the watch ----------------------------------------------------------------------------------
 */

struct report_context {
	struct cluster *cluster;
};

static void on_report(void *context, const struct replica_report *report)
{
	struct cluster *c = context;
	char path[PATH_MAX];
	if (path_of(report->name, path, sizeof(path)) < 0)
		return;
	struct replica_state state;
	bool exists = replica_state(c->replica, report->name, &state) == 0;
	if (report->change == REPLICA_REMOVED) { /* its last journal line says so */
		c->hooks.gone(c->hooks.context, path);
		return;
	}
	if (exists)
		c->hooks.sync(c->hooks.context, path, &state.meta, report->value, state.waiting);
	char extra[64];
	const char *event = NULL, *detail = NULL;
	switch (report->change) {
	case REPLICA_CREATED: /* hooks.sync made it, and journalled it */
		break;
	case REPLICA_CHANGED:
		event = "change";
		snprintf(extra, sizeof(extra), "plain=%d relaxed=%d", state.meta.plain,
			 state.meta.relaxed_count);
		detail = extra;
		break;
	case REPLICA_QUEUED:
		event = "wait";
		break;
	case REPLICA_GRANTED:
		event = report->kind == REPLICA_LOCK ? "lock" : "acquire";
		break;
	case REPLICA_RELAXED:
		event = "relaxed";
		break;
	case REPLICA_RELEASED:
		event = report->kind == REPLICA_LOCK ? "unlock" : "release";
		break;
	case REPLICA_CANCELLED:
		event = "cancel";
		break;
	case REPLICA_DEMOTED:
		event = "demoted";
		log_warnx("cluster: %s: holder %s lost its unit to a write that broke the rule",
			  path, report->entry);
		break;
	case REPLICA_PERSISTED:
	case REPLICA_REMOVED:
		break;
	}
	if (!event)
		return;
	const char *who = report->entry	     ? report->who
			  : state.meta.by[0] ? state.meta.by
					     : "cluster";
	c->hooks.journal(c->hooks.context, path, event, who,
			 report->change == REPLICA_GRANTED ? report->token : 0, detail);
}

static int kv_event(struct json_object *kv, bool deleted, const struct cluster *c,
		    struct replica_event *e, char *key_text, size_t key_size, char *value_text,
		    size_t value_size)
{
	int key_length = etcd_bytes_get(kv, "key", key_text, key_size);
	size_t prefix_length = strlen(c->prefix);
	if (key_length < (int)prefix_length || strncmp(key_text, c->prefix, prefix_length) != 0)
		return -EINVAL;
	int value_length = deleted ? 0 : etcd_bytes_get(kv, "value", value_text, value_size);
	if (!deleted && value_length < 0)
		value_length = 0; /* an empty value has no field */
	*e = (struct replica_event){
	    .deleted = deleted,
	    .key = key_text + prefix_length,
	    .key_length = (size_t)key_length - prefix_length,
	    .value = value_text,
	    .value_length = (size_t)value_length,
	    .revision = etcd_int64_get(kv, "mod_revision", 0),
	    .create_revision = etcd_int64_get(kv, "create_revision", 0),
	    .lease = etcd_int64_get(kv, "lease", 0),
	};
	return 0;
}

static void watch_open(struct cluster *c);
static int reload(struct cluster *c, char *error, size_t error_size);

static void on_watch_message(void *context, struct json_object *message)
{
	struct cluster *c = context;
	struct json_object *result = NULL, *events = NULL, *field;
	if (!json_object_object_get_ex(message, "result", &result)) {
		snprintf(c->watch_error, sizeof(c->watch_error), "%s",
			 json_object_to_json_string_ext(message, JSON_C_TO_STRING_PLAIN));
		return;
	}
	if (etcd_int64_get(result, "compact_revision", 0) > 0 ||
	    (json_object_object_get_ex(result, "canceled", &field) &&
	     json_object_get_boolean(field))) {
		/* Compacted past what we need: read everything again (trap 4). */
		c->reloading = true;
		return;
	}
	if (!json_object_object_get_ex(result, "events", &events))
		return;
	size_t count = json_object_array_length(events);
	for (size_t i = 0; i < count; i++) {
		struct json_object *event = json_object_array_get_idx(events, i), *kv = NULL, *type;
		json_object_object_get_ex(event, "kv", &kv);
		bool deleted = json_object_object_get_ex(event, "type", &type) &&
			       strcmp(json_object_get_string(type), "DELETE") == 0;
		static char key_text[KEY_MAX], value_text[1024]; /* loop thread only */
		struct replica_event e;
		if (kv_event(kv, deleted, c, &e, key_text, sizeof(key_text), value_text,
			     sizeof(value_text)) < 0)
			continue;
		char error[256];
		int r = replica_apply(c->replica, &e, on_report, c, error, sizeof(error));
		if (r < 0)
			log_warnx("cluster: event at revision %" PRId64 " on %.*s ignored: %s",
				  e.revision, (int)e.key_length, e.key, error);
		if (e.revision >= c->watch_from)
			c->watch_from = e.revision + 1;
	}
	__atomic_store_n(&c->applied, replica_revision(c->replica), __ATOMIC_RELAXED);
	check_requests(c);
}

static void on_watch_end(void *context, int error, const char *message,
			 struct json_object *response)
{
	struct cluster *c = context;
	c->watch = NULL;
	if (error == -ECANCELED)
		return;
	log_warnx("cluster: watch ended (%s%s%s): reopening from revision %" PRId64,
		  message ? message : "", c->watch_error[0] ? "; " : "", c->watch_error,
		  c->watch_from);
	c->watch_error[0] = '\0';
	__atomic_add_fetch(&c->watch_reopened, 1, __ATOMIC_RELAXED);
}

static void watch_open(struct cluster *c)
{
	struct json_object *create = json_object_new_object(), *body = json_object_new_object();
	json_object_object_add(create, "key", etcd_bytes(c->prefix, strlen(c->prefix)));
	json_object_object_add(create, "range_end", etcd_prefix_end(c->prefix));
	json_object_object_add(create, "start_revision", etcd_int64(c->watch_from));
	json_object_object_add(body, "create_request", create);
	c->watch = etcd_stream_open(c->etcd, "/v3/watch", body, on_watch_message, on_watch_end, c);
}

/* ---- synchronous steps (start-up, and calls before the loop runs) --------------------------- */

struct sync_call {
	bool done;
	int error;
	char message[512];
	struct json_object *response;
};

static void on_sync_call(void *context, int error, const char *message,
			 struct json_object *response)
{
	struct sync_call *s = context;
	s->done = true;
	s->error = error;
	snprintf(s->message, sizeof(s->message), "%s", message ? message : "");
	s->response = response ? json_object_get(response) : NULL;
}

static int call_now(struct cluster *c, const char *path, struct json_object *body,
		    struct sync_call *s, bool idempotent)
{
	*s = (struct sync_call){0};
	if (etcd_call(c->etcd, path, body, idempotent, on_sync_call, s) < 0)
		return -ENOMEM;
	while (!s->done)
		etcd_poll(c->etcd, LOOP_TICK_MS);
	return s->error;
}

static void on_host_registered(void *context, int error, const char *message,
			       struct json_object *response)
{
	if (error < 0 && error != -ECANCELED)
		log_warnx("cluster: registering this host: %s", message);
}

/* A new lease is this daemon's incarnation: kept in lease_file (the next
 * start revokes it) and shown as hosts/HOST. */
static void lease_adopt(struct cluster *c, int64_t lease)
{
	c->lease = lease;
	__atomic_store_n(&c->lease_renewed_ms, now_ms(), __ATOMIC_RELAXED);
	c->next_keepalive_ms = now_ms() + (int64_t)c->options.lease_ttl * 1000 / 3;
	FILE *file = fopen(c->lease_file, "we");
	if (file) {
		fprintf(file, "%" PRId64 "\n", c->lease);
		fclose(file);
	}
	char value[128];
	snprintf(value, sizeof(value), "pid=%d", (int)getpid());
	struct json_object *ops[] = {put(key(c, "hosts/%s", c->host), value, c->lease), NULL};
	if (etcd_call(c->etcd, "/v3/kv/txn", txn(NULL, ops), true, on_host_registered, c) < 0)
		log_warnx("cluster: out of memory registering this host");
}

static int lease_grant(struct cluster *c, char *error, size_t error_size)
{
	struct sync_call s;
	struct json_object *grant = json_object_new_object();
	json_object_object_add(grant, "TTL", etcd_int64(c->options.lease_ttl));
	if (call_now(c, "/v3/lease/grant", grant, &s, false) < 0) {
		snprintf(error, error_size, "lease grant: %.300s", s.message);
		return -EIO;
	}
	int64_t lease = etcd_int64_get(s.response, "ID", 0);
	int64_t ttl = etcd_int64_get(s.response, "TTL", 0);
	json_object_put(s.response);
	if (!lease || ttl <= 0) {
		snprintf(error, error_size, "lease grant: no lease in the answer");
		return -EIO;
	}
	lease_adopt(c, lease);
	return 0;
}

/* After lease-lost, from the loop: never a synchronous call inside a
 * callback (the loop is not re-entrant). */
static void on_lease_granted(void *context, int error, const char *message,
			     struct json_object *response)
{
	struct cluster *c = context;
	c->lease_granting = false;
	int64_t lease = error < 0 ? 0 : etcd_int64_get(response, "ID", 0);
	if (!lease) {
		if (error != -ECANCELED)
			log_warnx("cluster: lease grant: %s: retrying in a second",
				  error < 0 ? message : "no lease in the answer");
		c->next_lease_try_ms = now_ms() + 1000;
		return;
	}
	lease_adopt(c, lease);
	log_info("cluster: host %s has a new lease %" PRIx64, c->host, lease);
}

static void lease_request(struct cluster *c)
{
	struct json_object *grant = json_object_new_object();
	json_object_object_add(grant, "TTL", etcd_int64(c->options.lease_ttl));
	c->lease_granting =
	    etcd_call(c->etcd, "/v3/lease/grant", grant, false, on_lease_granted, c) == 0;
	if (!c->lease_granting)
		c->next_lease_try_ms = now_ms() + 1000;
}

/* The previous incarnation's lease: revoked, so its acquire units return
 * at once instead of after lease_ttl. */
static void revoke_previous(struct cluster *c)
{
	FILE *file = fopen(c->lease_file, "re");
	long long id = 0;
	if (!file)
		return;
	if (fscanf(file, "%lld", &id) != 1)
		id = 0;
	fclose(file);
	if (!id)
		return;
	struct sync_call s;
	struct json_object *revoke = json_object_new_object();
	json_object_object_add(revoke, "ID", etcd_int64(id));
	if (call_now(c, "/v3/lease/revoke", revoke, &s, true) == 0)
		log_info("cluster: revoked lease %llx of this host's previous run", id);
	json_object_put(s.response);
}

/* Everything below the prefix, at one revision: the replica from scratch. */
static int reload(struct cluster *c, char *error, size_t error_size)
{
	struct sync_call s;
	struct json_object *range = json_object_new_object();
	json_object_object_add(range, "key", etcd_bytes(c->prefix, strlen(c->prefix)));
	json_object_object_add(range, "range_end", etcd_prefix_end(c->prefix));
	if (call_now(c, "/v3/kv/range", range, &s, true) < 0) {
		snprintf(error, error_size, "reading %.100s: %.300s", c->prefix, s.message);
		return -EIO;
	}
	int64_t revision = header_revision(s.response);
	struct json_object *kvs = NULL;
	json_object_object_get_ex(s.response, "kvs", &kvs);
	size_t count = kvs ? json_object_array_length(kvs) : 0;
	struct replica_event *events = calloc(count + 1, sizeof(*events));
	char(*keys)[KEY_MAX] = calloc(count + 1, KEY_MAX);
	char(*values)[1024] = calloc(count + 1, 1024);
	struct replica *replica = replica_new();
	int r = events && keys && values && replica ? 0 : -ENOMEM;
	size_t used = 0;
	for (size_t i = 0; r == 0 && i < count; i++) {
		if (kv_event(json_object_array_get_idx(kvs, i), false, c, &events[used], keys[used],
			     KEY_MAX, values[used], 1024) < 0)
			continue;
		events[used].revision = revision;
		used++;
	}
	size_t failed = 0;
	char why[256] = "";
	if (r == 0)
		r = replica_load(replica, events, used, NULL, NULL, &failed, why, sizeof(why));
	if (r < 0) {
		snprintf(error, error_size, "reading %s: %s", c->prefix,
			 r == -ENOMEM ? "out of memory" : why);
		replica_free(replica);
	} else {
		replica_free(c->replica);
		c->replica = replica;
		c->watch_from = revision + 1;
	}
	free(events);
	free(keys);
	free(values);
	json_object_put(s.response);
	if (r < 0)
		return r;
	return 0;
}

static void sync_one(void *context, const char *name, const struct replica_state *state)
{
	struct cluster *c = context;
	char path[PATH_MAX];
	if (path_of(name, path, sizeof(path)) == 0)
		c->hooks.sync(c->hooks.context, path, &state->meta, state->value, state->waiting);
}

static void sync_all(struct cluster *c)
{
	c->hooks.load_begin(c->hooks.context);
	replica_each(c->replica, sync_one, c);
	c->hooks.load_end(c->hooks.context);
}

/* ---- the lease --------------------------------------------------------------------------------
 */

/* The owner's units went with the lease: the front-ends ask
 * (cluster_owner_lost) and tell their file or connection. */
static void mark_lost(struct cluster *c, uint64_t owner_id)
{
	pthread_mutex_lock(&c->lock);
	bool known = false;
	for (size_t i = 0; i < c->lost_count; i++)
		known |= c->lost_ids[i] == owner_id;
	if (!known && c->lost_count == c->lost_allocated) {
		size_t allocated = c->lost_allocated ? 2 * c->lost_allocated : 16;
		uint64_t *grown = realloc(c->lost_ids, allocated * sizeof(*grown));
		if (grown) {
			c->lost_ids = grown;
			c->lost_allocated = allocated;
		}
	}
	if (!known && c->lost_count < c->lost_allocated)
		c->lost_ids[c->lost_count++] = owner_id;
	pthread_mutex_unlock(&c->lock);
}

bool cluster_owner_lost(struct cluster *c, uint64_t owner_id)
{
	pthread_mutex_lock(&c->lock);
	bool lost = false;
	for (size_t i = 0; i < c->lost_count && !lost; i++)
		lost = c->lost_ids[i] == owner_id;
	pthread_mutex_unlock(&c->lock);
	return lost;
}

static void lease_lost(struct cluster *c, const char *why)
{
	__atomic_add_fetch(&c->lease_lost, 1, __ATOMIC_RELAXED);
	log_warnx("cluster: lease-lost: %s; every acquire unit of host %s is gone", why, c->host);
	for (struct held *h = c->held, *next; h; h = next) {
		next = h->next;
		mark_lost(c, h->owner_id);
		char path[PATH_MAX];
		if (path_of(h->name, path, sizeof(path)) == 0)
			c->hooks.journal(c->hooks.context, path, "lease-lost", c->host, h->token,
					 NULL);
		free(h);
	}
	c->held = NULL;
	/* Waiting entries went with the lease: those requests fail. */
	for (struct request *r = c->active, *next; r; r = next) {
		next = r->next;
		if (r->type == REQ_COMMANDS && r->phase == PHASE_QUEUED)
			request_finish(r, -EIO);
	}
	c->lease = 0; /* the loop asks for a new one */
}

static void on_keepalive(void *context, int error, const char *message,
			 struct json_object *response)
{
	struct cluster *c = context;
	c->lease_renewing = false;
	if (error < 0) {
		if (error != -ECANCELED)
			log_warnx("cluster: lease keep-alive: %s", message);
		return;
	}
	struct json_object *result = NULL;
	json_object_object_get_ex(response, "result", &result);
	seen(c, response);
	if (etcd_int64_get(result, "TTL", 0) <= 0) {
		lease_lost(c, "etcd no longer knows the lease");
		return;
	}
	__atomic_store_n(&c->lease_renewed_ms, now_ms(), __ATOMIC_RELAXED);
}

static void keepalive(struct cluster *c)
{
	int64_t now = now_ms();
	if (c->lease_renewing || now < c->next_keepalive_ms)
		return;
	c->next_keepalive_ms = now + (int64_t)c->options.lease_ttl * 1000 / 3;
	if (c->hooks.alive && !c->hooks.alive(c->hooks.context)) {
		log_warnx("cluster: the store does not answer: lease %" PRIx64 " not renewed",
			  c->lease);
		return;
	}
	if (!c->lease)
		return;
	struct json_object *body = json_object_new_object();
	json_object_object_add(body, "ID", etcd_int64(c->lease));
	c->lease_renewing =
	    etcd_call(c->etcd, "/v3/lease/keepalive", body, true, on_keepalive, c) == 0;
}

/* ---- the loop -----------------------------------------------------------------------------------
 */

static void start_request(struct cluster *c, struct request *r)
{
	r->next = c->active;
	c->active = r;
	switch (r->type) {
	case REQ_COMMANDS:
		command_next(r);
		return;
	case REQ_CANCEL:
		active_remove(c, r);
		cancel(c, r->waiter);
		free(r);
		return;
	case REQ_RELEASE_OWNER:
		active_remove(c, r);
		release_owner(c, r->owner_id, true);
		free(r);
		return;
	case REQ_RETURN_UNITS:
		command_next(r);
		return;
	case REQ_CREATE:
		create_start(r);
		return;
	case REQ_REMOVE:
		remove_start(r);
		return;
	case REQ_DEFINE:
		define_start(r);
		return;
	case REQ_DELETE:
		delete_start(r);
		return;
	}
}

/* A member that stops (SIGSTOP, a hung disk) keeps its watch stream open
 * and silent: when answers show revisions the watch has not brought for a
 * whole request_timeout, the watch moves to the member calls go to now. */
static void watch_check(struct cluster *c, int64_t now)
{
	int64_t newest = __atomic_load_n(&c->etcd_revision, __ATOMIC_RELAXED);
	if (newest <= replica_revision(c->replica)) {
		c->lag_since_ms = 0;
		return;
	}
	if (!c->lag_since_ms) {
		c->lag_since_ms = now;
		return;
	}
	if (now - c->lag_since_ms < c->options.etcd.request_timeout_ms || !c->watch)
		return;
	log_warnx("cluster: the watch is %" PRId64 " revisions behind for %" PRId64
		  " ms: reopening it on %s",
		  newest - replica_revision(c->replica), now - c->lag_since_ms,
		  etcd_endpoint(c->etcd));
	etcd_stream_close(c->etcd, c->watch);
	c->watch = NULL;
	c->lag_since_ms = 0;
	__atomic_add_fetch(&c->watch_reopened, 1, __ATOMIC_RELAXED);
}

static void loop_once(struct cluster *c, int timeout_ms)
{
	pthread_mutex_lock(&c->lock);
	struct request *incoming = c->incoming;
	c->incoming = NULL;
	pthread_mutex_unlock(&c->lock);
	for (struct request *r = incoming, *next; r; r = next) {
		next = r->next;
		start_request(c, r);
	}
	int64_t now = now_ms();
	for (struct request *r = c->active, *next; r; r = next) {
		next = r->next;
		if (r->type == REQ_DELETE && r->phase == PHASE_IDLE && r->not_before_ms <= now)
			delete_start(r);
		else if (r->phase == PHASE_LEASE && c->lease) {
			r->phase = PHASE_IDLE;
			command_next(r);
		} else if (r->phase == PHASE_LEASE && now >= r->not_before_ms) {
			log_warnx("cluster: %s: no lease for host %s: EIO", r->path, c->host);
			request_finish(r, -EIO);
		} else if (r->type == REQ_COMMANDS && r->phase == PHASE_QUEUED && r->has_deadline &&
			   now >= r->deadline_ms)
			abandon(r, -ETIMEDOUT);
	}
	keepalive(c);
	if (!c->lease && !c->lease_granting && now >= c->next_lease_try_ms)
		lease_request(c);
	if (c->reloading) {
		char error[256];
		c->reloading = false;
		etcd_stream_close(c->etcd, c->watch);
		c->watch = NULL;
		if (reload(c, error, sizeof(error)) < 0)
			log_warnx("cluster: %s", error);
		else {
			sync_all(c);
			check_requests(c);
		}
	}
	watch_check(c, now);
	if (!c->watch)
		watch_open(c);
	etcd_poll(c->etcd, timeout_ms);
}

static void *loop(void *context)
{
	struct cluster *c = context;
	for (;;) {
		pthread_mutex_lock(&c->lock);
		bool stopping = c->stopping;
		pthread_mutex_unlock(&c->lock);
		if (stopping)
			break;
		loop_once(c, LOOP_TICK_MS);
	}
	return NULL;
}

/* ---- the public calls
 * ---------------------------------------------------------------------------- */

int cluster_open(struct cluster **out, const struct cluster_options *options,
		 const struct cluster_hooks *hooks, char *error, size_t error_size)
{
	struct cluster *c = calloc(1, sizeof(*c));
	if (!c) {
		snprintf(error, error_size, "out of memory");
		return -ENOMEM;
	}
	c->options = *options;
	c->hooks = *hooks;
	snprintf(c->prefix, sizeof(c->prefix), "%s", options->prefix);
	snprintf(c->host, sizeof(c->host), "%s", options->host);
	snprintf(c->lease_file, sizeof(c->lease_file), "%s", options->lease_file);
	pthread_mutex_init(&c->lock, NULL);
	pthread_cond_init(&c->done, NULL);
	c->replica = replica_new();
	char why[512];
	c->etcd = c->replica ? etcd_new(&options->etcd, why, sizeof(why)) : NULL;
	if (!c->etcd) {
		snprintf(error, error_size, "etcd: %s", c->replica ? why : "out of memory");
		cluster_close(c);
		return -EINVAL;
	}
	revoke_previous(c);
	int r = lease_grant(c, why, sizeof(why));
	if (r == 0)
		r = reload(c, why, sizeof(why));
	if (r < 0) {
		snprintf(error, error_size, "cluster unreachable (%s)", why);
		cluster_close(c);
		return r;
	}
	sync_all(c);
	c->next_keepalive_ms = now_ms() + (int64_t)options->lease_ttl * 1000 / 3;
	watch_open(c);
	*out = c;
	return 0;
}

int cluster_start(struct cluster *c)
{
	pthread_mutex_lock(&c->lock);
	int r = thread_start(&c->thread, loop, c);
	c->running = r == 0;
	pthread_mutex_unlock(&c->lock);
	return r;
}

void cluster_shutdown(struct cluster *c)
{
	if (!c)
		return;
	pthread_mutex_lock(&c->lock);
	bool running = c->running;
	c->stopping = true;
	c->running = false;
	pthread_mutex_unlock(&c->lock);
	if (running) {
		etcd_wakeup(c->etcd);
		pthread_join(c->thread, NULL);
	}
	/* This thread is the loop now. Calls in flight end first: their
	 * callbacks finish their own requests (ECANCELED), so no callback can
	 * come for a request freed here. */
	etcd_cancel(c->etcd);
	pthread_mutex_lock(&c->lock);
	struct request *incoming = c->incoming;
	c->incoming = NULL;
	pthread_mutex_unlock(&c->lock);
	for (struct request *r = incoming, *next; r; r = next) {
		next = r->next;
		r->next = c->active;
		c->active = r;
	}
	while (c->active) {
		struct request *r = c->active;
		if (r->type == REQ_DELETE) { /* the lease revocation below takes it */
			active_remove(c, r);
			free(r);
			continue;
		}
		if (r->type == REQ_CANCEL || r->type == REQ_RELEASE_OWNER) {
			active_remove(c, r);
			if (r->type == REQ_RELEASE_OWNER)
				release_owner(c, r->owner_id, false); /* no new call now */
			free(r);
			continue;
		}
		request_finish(r, -ECANCELED);
	}
	if (c->lease) {
		struct sync_call s;
		struct json_object *revoke = json_object_new_object();
		json_object_object_add(revoke, "ID", etcd_int64(c->lease));
		if (call_now(c, "/v3/lease/revoke", revoke, &s, true) == 0)
			unlink(c->lease_file);
		json_object_put(s.response);
		c->lease = 0;
	}
}

void cluster_close(struct cluster *c)
{
	if (!c)
		return;
	etcd_free(c->etcd); /* ends calls and the watch (-ECANCELED) */
	for (struct held *h = c->held, *next; h; h = next) {
		next = h->next;
		free(h);
	}
	for (struct request *r = c->incoming, *next; r; r = next) { /* came after shutdown */
		next = r->next;
		if (r->type == REQ_COMMANDS)
			c->hooks.complete(c->hooks.context, r->waiter, -ECANCELED, 0, 0);
		free(r);
	}
	replica_free(c->replica);
	free(c->lost_ids);
	pthread_mutex_destroy(&c->lock);
	pthread_cond_destroy(&c->done);
	free(c);
}

static void who_of(const struct cluster *c, const char *who, char *out, size_t size)
{
	snprintf(out, size, "%.63s@%.63s", who, c->host);
}

int cluster_submit(struct cluster *c, const char *path, struct waiter *waiter)
{
	struct request *r = request_new(c, REQ_COMMANDS, path);
	if (!r)
		return -ENOMEM;
	r->waiter = waiter;
	r->owner_id = waiter->owner ? waiter->owner->id : 0;
	r->commands = waiter->commands;
	r->count = waiter->count;
	who_of(c, waiter->who, r->who, sizeof(r->who));
	enqueue(c, r);
	return 0;
}

void cluster_cancel(struct cluster *c, struct waiter *waiter)
{
	struct request *r = request_new(c, REQ_CANCEL, NULL);
	if (!r)
		return; /* it times out or is answered as usual */
	r->waiter = waiter;
	enqueue(c, r);
}

void cluster_release_owner(struct cluster *c, struct owner *owner)
{
	if (!owner->id)
		return; /* it never asked the cluster for anything */
	struct request *r = request_new(c, REQ_RELEASE_OWNER, NULL);
	if (!r) {
		log_warnx("cluster: out of memory: an owner's acquire units return with the lease");
		return;
	}
	r->owner_id = owner->id;
	enqueue(c, r);
}

/* A lost reply's lock units go back as that many unlocks. */
static struct command unlocks[COMMAND_BATCH_MAX];
static pthread_once_t unlocks_once = PTHREAD_ONCE_INIT;
static void fill_unlocks(void)
{
	for (size_t i = 0; i < COMMAND_BATCH_MAX; i++)
		unlocks[i].verb = VERB_UNLOCK;
}

void cluster_return_units(struct cluster *c, const char *path, unsigned units, const char *who)
{
	pthread_once(&unlocks_once, fill_unlocks);
	struct request *r = request_new(c, REQ_RETURN_UNITS, path);
	if (!r) {
		log_warnx("cluster: out of memory: %u lock unit%s of %s not returned", units,
			  units == 1 ? "" : "s", path);
		return;
	}
	r->commands = unlocks;
	r->count = units < COMMAND_BATCH_MAX ? units : COMMAND_BATCH_MAX;
	who_of(c, who, r->who, sizeof(r->who));
	enqueue(c, r);
}

/* A synchronous call: queued, then waited for. Before the loop thread runs
 * (start-up), the caller drives the loop itself. */
static int call_and_wait(struct cluster *c, struct request *r)
{
	pthread_mutex_lock(&c->lock);
	bool running = c->running;
	pthread_mutex_unlock(&c->lock);
	enqueue(c, r);
	if (!running) {
		while (!r->finished)
			loop_once(c, LOOP_TICK_MS);
		int result = r->result;
		free(r);
		return result;
	}
	struct timespec until;
	clock_gettime(CLOCK_REALTIME, &until);
	/* The etcd calls inside end by their own deadlines; this bound only
	 * keeps a wedged loop from holding the caller forever. */
	int64_t wait_ms = 4 * (int64_t)c->options.etcd.request_timeout_ms + 2000;
	until.tv_sec += wait_ms / 1000;
	until.tv_nsec += (wait_ms % 1000) * 1000000;
	if (until.tv_nsec >= 1000000000) {
		until.tv_sec++;
		until.tv_nsec -= 1000000000;
	}
	pthread_mutex_lock(&c->lock);
	while (!r->finished)
		if (pthread_cond_timedwait(&c->done, &c->lock, &until) != 0)
			break;
	int result = r->finished ? r->result : -EIO;
	bool finished = r->finished;
	if (!finished)
		r->abandoned = true;
	pthread_mutex_unlock(&c->lock);
	if (finished)
		free(r);
	else
		log_warnx("cluster: %s: no answer from the cluster loop", r->path);
	return result;
}

int cluster_create(struct cluster *c, const char *path, const struct replica_meta *meta)
{
	struct request *r = request_new(c, REQ_CREATE, path);
	if (!r)
		return -ENOMEM;
	r->meta = *meta;
	if (!strchr(meta->by, '@'))
		who_of(c, meta->by, r->meta.by, sizeof(r->meta.by));
	return call_and_wait(c, r);
}

int cluster_remove(struct cluster *c, const char *path, bool even_defined, const char *who)
{
	struct request *r = request_new(c, REQ_REMOVE, path);
	if (!r)
		return -ENOMEM;
	r->even_defined = even_defined;
	who_of(c, who, r->who, sizeof(r->who));
	return call_and_wait(c, r);
}

int cluster_define(struct cluster *c, const char *path, unsigned limit)
{
	struct request *r = request_new(c, REQ_DEFINE, path);
	if (!r)
		return -ENOMEM;
	r->number = limit;
	r->meta = (struct replica_meta){.limit = (int)limit, .mode = 0666, .defined = true};
	who_of(c, "config", r->who, sizeof(r->who));
	snprintf(r->meta.by, sizeof(r->meta.by), "%s", r->who);
	return call_and_wait(c, r);
}

void cluster_health(struct cluster *c, struct cluster_health *health)
{
	/* From the stats thread: single words, read without the loop's help. */
	memset(health, 0, sizeof(*health));
	health->endpoints = c->options.etcd.endpoint_count;
	health->reachable = etcd_reachable(c->etcd);
	health->lease_age =
	    (double)(now_ms() - __atomic_load_n(&c->lease_renewed_ms, __ATOMIC_RELAXED)) / 1000;
	health->revision = __atomic_load_n(&c->applied, __ATOMIC_RELAXED);
	int64_t newest = __atomic_load_n(&c->etcd_revision, __ATOMIC_RELAXED);
	health->watch_lag = newest > health->revision ? newest - health->revision : 0;
	health->lease_lost = __atomic_load_n(&c->lease_lost, __ATOMIC_RELAXED);
	health->watch_reopened = __atomic_load_n(&c->watch_reopened, __ATOMIC_RELAXED);
}
