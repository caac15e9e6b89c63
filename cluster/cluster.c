/* cluster.c: cluster mode's loop — the lease, the watch that feeds the
 * replica and the hooks, start-up and shut-down, and the public calls (see
 * cluster.h and shared/CLUSTER.md). The jobs themselves: jobs.c. */
#include "cluster_internal.h"

#include "clock.h"
#include "log.h"
#include "name.h"
#include "thread.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* ---- the watch ----------------------------------------------------------------------------------
 */

bool cluster_touched(const struct cluster *c, const char *entry)
{
	if (c->touched_all)
		return true;
	for (int i = 0; i < c->touched_count; i++)
		if (strcmp(c->touched[i], entry) == 0)
			return true;
	return false;
}

static void touch(struct cluster *c, const char *entry)
{
	if (c->touched_count == TOUCHED_MAX)
		c->touched_all = true;
	else
		snprintf(c->touched[c->touched_count++], REPLICA_ENTRY_MAX, "%s", entry);
}

static void on_report(void *context, const struct replica_report *report)
{
	struct cluster *c = context;
	if (report->entry)
		touch(c, report->entry);
	char path[PATH_MAX];
	if (cluster_path_of(report->name, path, sizeof(path)) < 0)
		return;
	if (report->change == REPLICA_DIRECTORY) {
		mode_t mode;
		uid_t uid;
		gid_t gid;
		if (replica_directory(c->replica, report->name, &mode, &uid, &gid) == 0)
			c->hooks.directory(c->hooks.context, path, mode, uid, gid);
		return;
	}
	if (report->change == REPLICA_DIRECTORY_REMOVED) {
		c->hooks.directory_gone(c->hooks.context, path);
		return;
	}
	if (report->change == REPLICA_CLOSED) {
		c->hooks.closed(c->hooks.context, path);
		return;
	}
	struct replica_state state;
	bool exists = replica_state(c->replica, report->name, &state) == 0;
	if (report->change == REPLICA_REMOVED) { /* its last journal line says so */
		c->hooks.gone(c->hooks.context, path);
		return;
	}
	if (exists) {
		static char holders[4096]; /* loop thread only */
		replica_holders(c->replica, report->name, holders, sizeof(holders));
		c->hooks.sync(c->hooks.context, path, &state.meta, report->value, state.waiting,
			      holders);
	}
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
	case REPLICA_DIRECTORY:
	case REPLICA_DIRECTORY_REMOVED:
	case REPLICA_CLOSED:
		break;
	}
	if (!event)
		return;
	const char *who = report->entry	     ? report->who
			  : state.meta.by[0] ? state.meta.by
					     : "cluster";
	if (report->change == REPLICA_RELEASED && report->kind == REPLICA_LOCK &&
	    report->revision == c->unlocked_at)
		who = c->unlocked_by;
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
	    .mod_revision = etcd_int64_get(kv, "mod_revision", 0),
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
	int64_t compacted = etcd_int64_get(result, "compact_revision", 0);
	if (compacted > 0 || (json_object_object_get_ex(result, "canceled", &field) &&
			      json_object_get_boolean(field))) {
		/* Compacted past what we need: read everything again (trap 4). */
		if (compacted > 0)
			log_warnx("cluster: etcd compacted its history up to revision %" PRId64
				  ", past this host's watch (from %" PRId64 "): reading %s again",
				  compacted, c->watch_from, c->prefix);
		else
			log_warnx("cluster: etcd canceled the watch of %s: reading it again",
				  c->prefix);
		c->reloading = true;
		return;
	}
	if (!json_object_object_get_ex(result, "events", &events))
		return;
	size_t count = json_object_array_length(events);
	c->touched_count = 0;
	c->touched_all = false;
	for (size_t i = 0; i < count; i++) {
		struct json_object *event = json_object_array_get_idx(events, i), *kv = NULL, *type;
		json_object_object_get_ex(event, "kv", &kv);
		bool deleted = json_object_object_get_ex(event, "type", &type) &&
			       strcmp(json_object_get_string(type), "DELETE") == 0;
		static char key_text[KEY_MAX], value_text[1024]; /* loop thread only */
		struct replica_event e;
		if (kv_event(kv, deleted, c, &e, key_text, sizeof(key_text), value_text,
			     sizeof(value_text)) < 0) {
			log_warnx("cluster: an event with a key outside %s or too long ignored",
				  c->prefix);
			continue;
		}
		static const char mark[] = "unlock by=";
		if (!deleted && e.key_length > 5 && memcmp(e.key, "sync/", 5) == 0 &&
		    e.value_length > sizeof(mark) - 1 &&
		    memcmp(e.value, mark, sizeof(mark) - 1) == 0) {
			size_t length = e.value_length - (sizeof(mark) - 1);
			if (length >= sizeof(c->unlocked_by))
				length = sizeof(c->unlocked_by) - 1;
			memcpy(c->unlocked_by, e.value + sizeof(mark) - 1, length);
			c->unlocked_by[length] = '\0';
			c->unlocked_at = e.revision;
		}
		char error[256];
		int r = replica_apply(c->replica, &e, on_report, c, error, sizeof(error));
		if (r < 0)
			log_warnx("cluster: event at revision %" PRId64 " on %.*s ignored: %s",
				  e.revision, (int)e.key_length, e.key, error);
		if (e.revision >= c->watch_from)
			c->watch_from = e.revision + 1;
	}
	__atomic_store_n(&c->applied, replica_revision(c->replica), __ATOMIC_RELAXED);
	jobs_check(c);
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
	__atomic_store_n(&c->lease_renewed_ms, cluster_now_ms(), __ATOMIC_RELAXED);
	c->next_keepalive_ms = cluster_now_ms() + (int64_t)c->options.lease_ttl * 1000 / 3;
	FILE *file = fopen(c->lease_file, "we");
	if (file) {
		fprintf(file, "%" PRId64 "\n", c->lease);
		fclose(file);
	}
	char value[128];
	snprintf(value, sizeof(value), "pid=%d", (int)getpid());
	struct json_object *ops[] = {txn_put(txn_key(c, "hosts/%s", c->host), value, c->lease),
				     NULL};
	if (etcd_call(c->etcd, "/v3/kv/txn", txn_new(c, NULL, ops), true, on_host_registered, c) <
	    0)
		log_warnx("cluster: out of memory registering this host");
}

static int lease_grant(struct cluster *c, char *error, size_t error_size)
{
	struct sync_call s;
	struct json_object *grant = json_object_new_object();
	json_object_object_add(grant, "TTL", etcd_int64(c->options.lease_ttl));
	if (call_now(c, "/v3/lease/grant", grant, &s, false) < 0) {
		snprintf(error, error_size, "lease grant: %.900s", s.message);
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
		c->next_lease_try_ms = cluster_now_ms() + 1000;
		return;
	}
	lease_adopt(c, lease);
	log_info("cluster: host %s has a new lease %" PRIx64, c->host, lease);
	if (c->hooks.lease)
		c->hooks.lease(c->hooks.context);
}

static void lease_request(struct cluster *c)
{
	struct json_object *grant = json_object_new_object();
	json_object_object_add(grant, "TTL", etcd_int64(c->options.lease_ttl));
	c->lease_granting =
	    etcd_call(c->etcd, "/v3/lease/grant", grant, false, on_lease_granted, c) == 0;
	if (!c->lease_granting)
		c->next_lease_try_ms = cluster_now_ms() + 1000;
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
		snprintf(error, error_size, "reading %.100s: %.800s", c->prefix, s.message);
		return -EIO;
	}
	int64_t revision = txn_revision(s.response);
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
			     KEY_MAX, values[used], 1024) < 0) {
			log_warnx("cluster: a key outside %s or too long ignored", c->prefix);
			continue;
		}
		/* In order for the replica; mod_revision stays the key's own
		 * (meta compare-and-swaps name it). */
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

static void sync_directory(void *context, const char *name, mode_t mode, uid_t uid, gid_t gid)
{
	struct cluster *c = context;
	char path[PATH_MAX];
	if (cluster_path_of(name, path, sizeof(path)) == 0)
		c->hooks.directory(c->hooks.context, path, mode, uid, gid);
}

static void sync_one(void *context, const char *name, const struct replica_state *state)
{
	struct cluster *c = context;
	char path[PATH_MAX];
	static char holders[4096]; /* loop thread only */
	replica_holders(c->replica, name, holders, sizeof(holders));
	if (cluster_path_of(name, path, sizeof(path)) == 0)
		c->hooks.sync(c->hooks.context, path, &state->meta, state->value, state->waiting,
			      holders);
}

static void sync_all(struct cluster *c)
{
	c->hooks.load_begin(c->hooks.context);
	replica_each_directory(c->replica, sync_directory, c);
	replica_each(c->replica, sync_one, c);
	c->hooks.load_end(c->hooks.context);
}

/* ---- the lease --------------------------------------------------------------------------------
 */

/* The owner's units went with the lease: the front-ends ask
 * (cluster_owner_lost) and tell their file or connection. */
void cluster_mark_lost(struct cluster *c, uint64_t owner_id)
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
		cluster_mark_lost(c, h->owner_id);
		char path[PATH_MAX];
		if (cluster_path_of(h->name, path, sizeof(path)) == 0)
			c->hooks.journal(c->hooks.context, path, "lease-lost", c->host, h->token,
					 NULL);
		free(h);
	}
	c->held = NULL;
	/* Waiting entries went with the lease: those requests fail. */
	for (struct job *r = c->active, *next; r; r = next) {
		next = r->next;
		if (r->type == JOB_COMMANDS && r->phase == PHASE_QUEUED)
			job_finish(r, -EIO);
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
	cluster_seen_any(c, response);
	if (etcd_int64_get(result, "TTL", 0) <= 0) {
		lease_lost(c, "etcd no longer knows the lease");
		return;
	}
	__atomic_store_n(&c->lease_renewed_ms, cluster_now_ms(), __ATOMIC_RELAXED);
}

static void keepalive(struct cluster *c)
{
	int64_t now = cluster_now_ms();
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
	/* A third of the TTL: a member that hangs is left in time for the
	 * next to renew before the lease runs out. */
	int within = (int)c->options.lease_ttl * 1000 / 3;
	if (within > c->options.etcd.request_timeout_ms)
		within = c->options.etcd.request_timeout_ms;
	c->lease_renewing = etcd_call_within(c->etcd, "/v3/lease/keepalive", body, true, within,
					     on_keepalive, c) == 0;
}

/* ---- the loop -----------------------------------------------------------------------------------
 */

static void start_request(struct cluster *c, struct job *r)
{
	r->next = c->active;
	c->active = r;
	switch (r->type) {
	case JOB_COMMANDS:
		job_next(r);
		return;
	case JOB_CANCEL:
		job_unlink(c, r);
		jobs_cancel(c, r->waiter);
		free(r);
		return;
	case JOB_RELEASE_OWNER:
		job_unlink(c, r);
		jobs_release_owner(c, r->owner_id, true);
		free(r);
		return;
	case JOB_RETURN_UNITS:
		job_next(r);
		return;
	case JOB_CREATE:
		job_create(r);
		return;
	case JOB_REMOVE:
		job_remove(r);
		return;
	case JOB_REAP:
		job_reap(r);
		return;
	case JOB_CHOWN:
		job_chown(r);
		return;
	case JOB_OPEN_MARK:
		job_open_mark(r);
		return;
	case JOB_OPEN_UNMARK:
		job_open_unmark(r);
		return;
	case JOB_DEFINE:
		job_define(r);
		return;
	case JOB_MKDIR:
		job_mkdir(r);
		return;
	case JOB_BARRIER:
		job_barrier(r);
		return;
	case JOB_RMDIR:
		job_rmdir(r);
		return;
	case JOB_DELETE:
		job_delete_start(r);
		return;
	}
}

static void on_probe(void *context, int error, const char *message, struct json_object *response)
{
	struct cluster *c = context;
	c->probing = false;
	if (error < 0) {
		if (error != -ECANCELED)
			log_warnx("cluster: testing the watch: %s", message);
		return;
	}
	cluster_seen(c, response);
}

/* Answers show revisions newer than the replica's, but etcd's revisions
 * are shared with its other users: maybe none of them is ours. After a
 * request_timeout of that, a sync mark of ours tells (watch_check). */
static void watch_probe(struct cluster *c, int64_t now)
{
	if (c->newest_revision <= replica_revision(c->replica)) {
		c->probe_since_ms = 0;
		return;
	}
	if (!c->probe_since_ms) {
		c->probe_since_ms = now;
		return;
	}
	if (c->probing || now - c->probe_since_ms < c->options.etcd.request_timeout_ms)
		return;
	struct json_object *ops[] = {txn_sync_put(c), NULL};
	c->probing =
	    etcd_call(c->etcd, "/v3/kv/txn", txn_new(c, NULL, ops), true, on_probe, c) == 0;
	c->probe_since_ms = 0;
}

/* A member that stops (SIGSTOP, a hung disk) keeps its watch stream open
 * and silent: when answers show revisions of ours the watch has not brought
 * for a whole request_timeout, the watch moves to the member calls go to
 * now. */
static void watch_check(struct cluster *c, int64_t now)
{
	watch_probe(c, now);
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

static void loop_once(struct cluster *c, int timeout_ms, int io_fd)
{
	pthread_mutex_lock(&c->lock);
	struct job *incoming = c->incoming;
	c->incoming = NULL;
	pthread_mutex_unlock(&c->lock);
	for (struct job *r = incoming, *next; r; r = next) {
		next = r->next;
		start_request(c, r);
	}
	int64_t now = cluster_now_ms();
	for (struct job *r = c->active, *next; r; r = next) {
		next = r->next;
		if (r->type == JOB_DELETE && r->phase == PHASE_IDLE && r->not_before_ms <= now)
			job_delete_start(r);
		else if (r->phase == PHASE_LEASE && c->lease) {
			r->phase = PHASE_IDLE;
			job_next(r);
		} else if (r->phase == PHASE_LEASE && now >= r->not_before_ms) {
			log_warnx("cluster: %s: no lease for host %s: EIO", r->path, c->host);
			job_finish(r, -EIO);
		} else if (r->type == JOB_COMMANDS && r->phase == PHASE_QUEUED && r->has_deadline &&
			   now >= r->deadline_ms)
			job_abandon(r, -ETIMEDOUT);
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
			log_warnx("cluster: %s read again at revision %" PRId64, c->prefix,
				  c->watch_from - 1);
			sync_all(c);
			c->touched_all = true; /* everything may have changed */
			jobs_check(c);
		}
	}
	watch_check(c, now);
	if (c->watch && etcd_stream_elsewhere(c->etcd, c->watch)) {
		/* Calls moved (to the leader, or off a member that failed one):
		 * the watch follows, from where it was. */
		log_info("cluster: calls and the watch go to %s now", etcd_endpoint(c->etcd));
		etcd_stream_close(c->etcd, c->watch);
		c->watch = NULL;
	}
	if (!c->watch)
		watch_open(c);
	etcd_poll_also(c->etcd, timeout_ms, io_fd);
}

/* The cluster whose loop runs on this thread: its synchronous calls made
 * here (by the driven I/O) drive the loop themselves. */
static __thread struct cluster *loop_of_thread;

static void *loop(void *context)
{
	struct cluster *c = context;
	pthread_setname_np(pthread_self(), "semfs-cluster");
	loop_of_thread = c;
	etcd_loop_here(c->etcd);
	for (;;) {
		pthread_mutex_lock(&c->lock);
		bool stopping = c->stopping;
		int io_fd = c->io_fd;
		pthread_mutex_unlock(&c->lock);
		if (stopping)
			break;
		loop_once(c, LOOP_TICK_MS, io_fd);
		/* The driven I/O runs here, outside every etcd callback: it may
		 * queue jobs (they start at the next pass) or make a synchronous
		 * call (call_and_wait loops nested, without it). */
		pthread_mutex_lock(&c->lock);
		void (*run)(void *) = c->io_run;
		void *io_context = c->io_context;
		c->io_running = run != NULL;
		pthread_mutex_unlock(&c->lock);
		if (!run)
			continue;
		run(io_context);
		pthread_mutex_lock(&c->lock);
		c->io_running = false;
		pthread_cond_broadcast(&c->io_idle);
		pthread_mutex_unlock(&c->lock);
	}
	return NULL;
}

void cluster_drive(struct cluster *c, int fd, void (*run)(void *context), void *context)
{
	pthread_mutex_lock(&c->lock);
	c->io_fd = run ? fd : -1;
	c->io_run = run;
	c->io_context = context;
	while (!run && c->io_running)
		pthread_cond_wait(&c->io_idle, &c->lock);
	pthread_mutex_unlock(&c->lock);
	if (run)
		etcd_wakeup(c->etcd);
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
	pthread_cond_init(&c->io_idle, NULL);
	c->io_fd = -1;
	c->replica = replica_new();
	char why[1024];
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
	c->next_keepalive_ms = cluster_now_ms() + (int64_t)options->lease_ttl * 1000 / 3;
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
	struct job *incoming = c->incoming;
	c->incoming = NULL;
	pthread_mutex_unlock(&c->lock);
	for (struct job *r = incoming, *next; r; r = next) {
		next = r->next;
		r->next = c->active;
		c->active = r;
	}
	while (c->active) {
		struct job *r = c->active;
		if (r->type == JOB_DELETE) { /* the lease revocation below takes it */
			job_unlink(c, r);
			free(r);
			continue;
		}
		if (r->type == JOB_CANCEL || r->type == JOB_RELEASE_OWNER) {
			job_unlink(c, r);
			if (r->type == JOB_RELEASE_OWNER)
				jobs_release_owner(c, r->owner_id, false); /* no new call now */
			free(r);
			continue;
		}
		job_finish(r, -ECANCELED);
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
	for (struct job *r = c->incoming, *next; r; r = next) { /* came after shutdown */
		next = r->next;
		if (r->type == JOB_COMMANDS)
			c->hooks.complete(c->hooks.context, r->waiter, -ECANCELED, 0, 0);
		free(r);
	}
	replica_free(c->replica);
	free(c->lost_ids);
	pthread_mutex_destroy(&c->lock);
	pthread_cond_destroy(&c->done);
	pthread_cond_destroy(&c->io_idle);
	free(c);
}

static void who_of(const struct cluster *c, const char *who, char *out, size_t size)
{
	snprintf(out, size, "%.63s@%.63s", who, c->host);
}

int cluster_submit(struct cluster *c, const char *path, struct waiter *waiter)
{
	struct job *r = job_new(c, JOB_COMMANDS, path);
	if (!r)
		return -ENOMEM;
	r->waiter = waiter;
	r->owner_id = waiter->owner ? waiter->owner->id : 0;
	r->commands = waiter->commands;
	r->count = waiter->count;
	who_of(c, waiter->who, r->who, sizeof(r->who));
	job_enqueue(c, r);
	return 0;
}

void cluster_cancel(struct cluster *c, struct waiter *waiter)
{
	struct job *r = job_new(c, JOB_CANCEL, NULL);
	if (!r)
		return; /* it times out or is answered as usual */
	r->waiter = waiter;
	job_enqueue(c, r);
}

void cluster_release_owner(struct cluster *c, struct owner *owner)
{
	if (!owner->id)
		return; /* it never asked the cluster for anything */
	struct job *r = job_new(c, JOB_RELEASE_OWNER, NULL);
	if (!r) {
		log_warnx("cluster: out of memory: an owner's acquire units return with the lease");
		return;
	}
	r->owner_id = owner->id;
	job_enqueue(c, r);
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
	struct job *r = job_new(c, JOB_RETURN_UNITS, path);
	if (!r) {
		log_warnx("cluster: out of memory: %u lock unit%s of %s not returned", units,
			  units == 1 ? "" : "s", path);
		return;
	}
	r->commands = unlocks;
	r->count = units < COMMAND_BATCH_MAX ? units : COMMAND_BATCH_MAX;
	who_of(c, who, r->who, sizeof(r->who));
	job_enqueue(c, r);
}

/* A synchronous call: queued, then waited for. Before the loop thread runs
 * (start-up), the caller drives the loop itself; so does the driven I/O on
 * the loop thread (cluster_drive). */
static int call_and_wait(struct cluster *c, struct job *r)
{
	pthread_mutex_lock(&c->lock);
	bool running = c->running;
	pthread_mutex_unlock(&c->lock);
	job_enqueue(c, r);
	if (!running) {
		while (!r->finished)
			loop_once(c, LOOP_TICK_MS, -1);
		int result = r->result;
		free(r);
		return result;
	}
	/* The etcd calls inside end by their own deadlines; this bound keeps a
	 * wedged loop, or a result the watch never brings (etcd gone after
	 * answering), from holding the caller forever: the driven I/O holds
	 * every other connection meanwhile. */
	double wait = 4 * c->options.etcd.request_timeout_ms / 1000.0 + 2;
	if (loop_of_thread == c) {
		int64_t until_ms = cluster_now_ms() + (int64_t)(wait * 1000);
		while (!r->finished && cluster_now_ms() < until_ms)
			loop_once(c, LOOP_TICK_MS, -1);
		pthread_mutex_lock(&c->lock);
	} else {
		struct timespec until = clock_after(CLOCK_REALTIME, wait);
		pthread_mutex_lock(&c->lock);
		while (!r->finished)
			if (pthread_cond_timedwait(&c->done, &c->lock, &until) != 0)
				break;
	}
	int result = r->finished ? r->result : -EIO;
	bool finished = r->finished;
	if (!finished)
		r->abandoned = true; /* job_finish frees it */
	pthread_mutex_unlock(&c->lock);
	if (finished)
		free(r);
	else
		log_warnx("cluster: %s: no answer from the cluster within %.0f s: EIO", r->path,
			  wait);
	return result;
}

int cluster_create(struct cluster *c, const char *path, const struct replica_meta *meta)
{
	struct job *r = job_new(c, JOB_CREATE, path);
	if (!r)
		return -ENOMEM;
	r->meta = *meta;
	if (!strchr(meta->by, '@'))
		who_of(c, meta->by, r->meta.by, sizeof(r->meta.by));
	return call_and_wait(c, r);
}

int cluster_remove(struct cluster *c, const char *path, bool even_defined, const char *who)
{
	struct job *r = job_new(c, JOB_REMOVE, path);
	if (!r)
		return -ENOMEM;
	r->even_defined = even_defined;
	who_of(c, who, r->who, sizeof(r->who));
	return call_and_wait(c, r);
}

int cluster_chown(struct cluster *c, const char *path, const mode_t *mode, const uid_t *uid,
		  const gid_t *gid, const char *who)
{
	struct job *r = job_new(c, JOB_CHOWN, path);
	if (!r)
		return -ENOMEM;
	r->number = (mode ? CHOWN_MODE : 0) | (uid ? CHOWN_UID : 0) | (gid ? CHOWN_GID : 0);
	r->meta.mode = mode ? *mode : 0;
	r->meta.uid = uid ? *uid : 0;
	r->meta.gid = gid ? *gid : 0;
	who_of(c, who, r->who, sizeof(r->who));
	return call_and_wait(c, r);
}

void cluster_reap(struct cluster *c, const char *path)
{
	struct job *r = job_new(c, JOB_REAP, path);
	if (!r) {
		log_warnx("cluster: out of memory: idle undefined semaphore %s stays", path);
		return;
	}
	job_enqueue(c, r);
}

int cluster_open_mark(struct cluster *c, const char *path, int64_t *revision)
{
	struct job *r = job_new(c, JOB_OPEN_MARK, path);
	if (!r)
		return -ENOMEM;
	r->answer = revision;
	return call_and_wait(c, r);
}

void cluster_open_unmark(struct cluster *c, const char *path, int64_t revision)
{
	struct job *r = job_new(c, JOB_OPEN_UNMARK, path);
	if (!r) {
		log_warnx("cluster: out of memory: the open mark of %s stays until this host's "
			  "lease goes",
			  path);
		return;
	}
	r->token = revision;
	job_enqueue(c, r);
}

int cluster_define(struct cluster *c, const char *path, unsigned limit)
{
	struct job *r = job_new(c, JOB_DEFINE, path);
	if (!r)
		return -ENOMEM;
	r->number = limit;
	r->meta = (struct replica_meta){.limit = (int)limit, .mode = 0666, .defined = true};
	who_of(c, "config", r->who, sizeof(r->who));
	snprintf(r->meta.by, sizeof(r->meta.by), "%s", r->who);
	return call_and_wait(c, r);
}

int cluster_mkdir(struct cluster *c, const char *path, mode_t mode, uid_t uid, gid_t gid)
{
	struct job *r = job_new(c, JOB_MKDIR, path);
	if (!r)
		return -ENOMEM;
	r->meta = (struct replica_meta){.mode = mode, .uid = uid, .gid = gid};
	return call_and_wait(c, r);
}

int cluster_barrier(struct cluster *c)
{
	struct job *r = job_new(c, JOB_BARRIER, NULL);
	if (!r)
		return -ENOMEM;
	return call_and_wait(c, r);
}

int cluster_rmdir(struct cluster *c, const char *path)
{
	struct job *r = job_new(c, JOB_RMDIR, path);
	if (!r)
		return -ENOMEM;
	return call_and_wait(c, r);
}

void cluster_health(struct cluster *c, struct cluster_health *health)
{
	/* From the stats thread: single words, read without the loop's help. */
	memset(health, 0, sizeof(*health));
	health->endpoints = c->options.etcd.endpoint_count;
	health->reachable = etcd_reachable(c->etcd);
	health->lease_age =
	    (double)(cluster_now_ms() - __atomic_load_n(&c->lease_renewed_ms, __ATOMIC_RELAXED)) /
	    1000;
	health->revision = __atomic_load_n(&c->applied, __ATOMIC_RELAXED);
	int64_t newest = __atomic_load_n(&c->etcd_revision, __ATOMIC_RELAXED);
	health->watch_lag = newest > health->revision ? newest - health->revision : 0;
	health->lease_lost = __atomic_load_n(&c->lease_lost, __ATOMIC_RELAXED);
	health->watch_reopened = __atomic_load_n(&c->watch_reopened, __ATOMIC_RELAXED);
}
