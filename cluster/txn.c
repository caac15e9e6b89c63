/* txn.c: etcd's v3 JSON for what cluster mode writes: keys under the
 * prefix, compares, puts, deletes, transactions, and what an answer says. */
#include "cluster_internal.h"

#include "name.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

int64_t cluster_now_ms(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

/* ---- keys and JSON ------------------------------------------------------------ */

/* PREFIX + the formatted rest into `text`. */
static void prefixed(const struct cluster *c, char *text, size_t size, const char *format,
		     va_list args) __attribute__((format(printf, 4, 0)));
static void prefixed(const struct cluster *c, char *text, size_t size, const char *format,
		     va_list args)
{
	size_t used = (size_t)snprintf(text, size, "%s", c->prefix);
	vsnprintf(text + used, size - used, format, args);
}

struct json_object *txn_key(const struct cluster *c, const char *format, ...)
{
	char text[KEY_MAX];
	va_list args;
	va_start(args, format);
	prefixed(c, text, sizeof(text), format, args);
	va_end(args);
	return etcd_bytes(text, strlen(text));
}

struct json_object *txn_range_end(const struct cluster *c, const char *format, ...)
{
	char text[KEY_MAX];
	va_list args;
	va_start(args, format);
	prefixed(c, text, sizeof(text), format, args);
	va_end(args);
	return etcd_prefix_end(text);
}

struct json_object *txn_compare(struct json_object *k, struct json_object *end, const char *target,
				const char *result, int64_t value)
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

struct json_object *txn_compare_value(struct json_object *k, const char *value)
{
	struct json_object *c = json_object_new_object();
	json_object_object_add(c, "target", json_object_new_string("VALUE"));
	json_object_object_add(c, "key", k);
	json_object_object_add(c, "result", json_object_new_string("EQUAL"));
	json_object_object_add(c, "value", etcd_bytes(value, strlen(value)));
	return c;
}

struct json_object *txn_put(struct json_object *k, const char *value, int64_t lease)
{
	struct json_object *p = json_object_new_object(), *op = json_object_new_object();
	json_object_object_add(p, "key", k);
	json_object_object_add(p, "value", etcd_bytes(value, strlen(value)));
	if (lease)
		json_object_object_add(p, "lease", etcd_int64(lease));
	json_object_object_add(op, "request_put", p);
	return op;
}

struct json_object *txn_delete(struct json_object *k, struct json_object *end)
{
	struct json_object *d = json_object_new_object(), *op = json_object_new_object();
	json_object_object_add(d, "key", k);
	if (end)
		json_object_object_add(d, "range_end", end);
	json_object_object_add(op, "request_delete_range", d);
	return op;
}

/* This host's sync mark: a write under the prefix whose revision the watch
 * brings (etcd's revisions are shared with every other user of etcd; only
 * ours come back through the watch). */
struct json_object *txn_sync_put(const struct cluster *c)
{
	return txn_put(txn_key(c, "sync/%s", c->host), "sync", 0);
}

struct json_object *txn_unlock_mark(const struct cluster *c, const char *who)
{
	char value[REPLICA_WHO_MAX + 16];
	snprintf(value, sizeof(value), "unlock by=%s", who);
	return txn_put(txn_key(c, "sync/%s", c->host), value, 0);
}

/* A transaction of `compares` and `ops` (NULL-terminated lists). When the
 * compares fail it writes the sync mark instead, so that its revision is
 * one the watch brings too: whoever awaits it is never left waiting for
 * another etcd user's write. */
struct json_object *txn_new(const struct cluster *cluster, struct json_object **compares,
			    struct json_object **ops)
{
	struct json_object *t = json_object_new_object();
	struct json_object *c = json_object_new_array(), *s = json_object_new_array();
	for (; compares && *compares; compares++)
		json_object_array_add(c, *compares);
	for (; ops && *ops; ops++)
		json_object_array_add(s, *ops);
	json_object_object_add(t, "compare", c);
	json_object_object_add(t, "success", s);
	if (json_object_array_length(c) > 0) {
		struct json_object *f = json_object_new_array();
		json_object_array_add(f, txn_sync_put(cluster));
		json_object_object_add(t, "failure", f);
	}
	return t;
}

bool txn_succeeded(struct json_object *response)
{
	struct json_object *field;
	return json_object_object_get_ex(response, "succeeded", &field) &&
	       json_object_get_boolean(field);
}

int64_t txn_revision(struct json_object *response)
{
	struct json_object *header = NULL, *result = NULL;
	if (!json_object_object_get_ex(response, "header", &header) &&
	    json_object_object_get_ex(response, "result", &result))
		json_object_object_get_ex(result, "header", &header); /* keep-alive */
	return etcd_int64_get(header, "revision", 0);
}

/* A revision of ours (a write under the prefix): the watch must bring it.
 * Watch lag is how far these are ahead of the replica. */
void cluster_seen(struct cluster *c, struct json_object *response)
{
	int64_t revision = txn_revision(response);
	if (revision > __atomic_load_n(&c->etcd_revision, __ATOMIC_RELAXED))
		__atomic_store_n(&c->etcd_revision, revision, __ATOMIC_RELAXED);
	cluster_seen_any(c, response);
}

/* Any answer's revision: maybe another etcd user's write, which the watch
 * never brings. */
void cluster_seen_any(struct cluster *c, struct json_object *response)
{
	int64_t revision = txn_revision(response);
	if (revision > c->newest_revision)
		c->newest_revision = revision;
}

int cluster_path_of(const char *name, char *path, size_t size)
{
	int n = name_decode(name, strlen(name), path, size);
	return n < 0 ? n : 0;
}
