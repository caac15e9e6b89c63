/* test_etcd.c: the etcd client against a real 3-member etcd cluster on
 * 127.0.0.1: transactions, ranges, a watch from a revision fed into the
 * replica, leases, an endpoint that is down, a member killed, nobody
 * answering (EIO, "cluster unreachable"), options refused. */
#include "etcd.h"
#include "etcd_cluster.h"
#include "janitor.h"
#include "replica.h"

#include <criterion/criterion.h>
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static struct etcd_cluster cluster;

static pid_t janitor;

static void setup(void)
{
	cr_assert(etcd_cluster_start(&cluster, 3), "etcd cluster did not start");
	/* If this process dies before its teardown (a timeout, a crash). */
	const char *const dirs[] = {cluster.dir};
	janitor = janitor_start(dirs, 1);
}

static void teardown(void)
{
	etcd_cluster_stop(&cluster);
	janitor_stop(janitor);
}

TestSuite(etcd, .init = setup, .fini = teardown, .timeout = 60);

static struct etcd *client(const char *first, int timeout_ms)
{
	struct etcd_options options = {.request_timeout_ms = timeout_ms};
	if (first)
		options.endpoints[options.endpoint_count++] = first;
	for (int i = 0; i < cluster.size; i++)
		options.endpoints[options.endpoint_count++] = cluster.endpoints[i];
	char error[256];
	struct etcd *etcd = etcd_new(&options, error, sizeof(error));
	cr_assert_not_null(etcd, "%s", error);
	return etcd;
}

struct result {
	bool done;
	int error;
	char message[512];
	struct json_object *response; /* a reference of our own */
};

static void on_done(void *context, int error, const char *message, struct json_object *response)
{
	struct result *r = context;
	r->done = true;
	r->error = error;
	snprintf(r->message, sizeof(r->message), "%s", message ? message : "");
	r->response = response ? json_object_get(response) : NULL;
}

static struct result call(struct etcd *etcd, const char *path, struct json_object *body)
{
	struct result r = {0};
	cr_assert_eq(etcd_call(etcd, path, body, true, on_done, &r), 0);
	for (int i = 0; i < 400 && !r.done; i++)
		etcd_poll(etcd, 50);
	cr_assert(r.done, "%s never ended", path);
	return r;
}

static struct json_object *put_if_absent(const char *key, const char *value, int64_t lease)
{
	struct json_object *compare = json_object_new_object();
	json_object_object_add(compare, "target", json_object_new_string("CREATE"));
	json_object_object_add(compare, "key", etcd_bytes(key, strlen(key)));
	json_object_object_add(compare, "result", json_object_new_string("EQUAL"));
	json_object_object_add(compare, "create_revision", etcd_int64(0));
	struct json_object *put = json_object_new_object();
	json_object_object_add(put, "key", etcd_bytes(key, strlen(key)));
	json_object_object_add(put, "value", etcd_bytes(value, strlen(value)));
	if (lease)
		json_object_object_add(put, "lease", etcd_int64(lease));
	struct json_object *request_put = json_object_new_object();
	json_object_object_add(request_put, "request_put", put);
	struct json_object *txn = json_object_new_object();
	struct json_object *compares = json_object_new_array(), *success = json_object_new_array();
	json_object_array_add(compares, compare);
	json_object_array_add(success, request_put);
	json_object_object_add(txn, "compare", compares);
	json_object_object_add(txn, "success", success);
	return txn;
}

static bool succeeded(struct json_object *response)
{
	struct json_object *field;
	return json_object_object_get_ex(response, "succeeded", &field) &&
	       json_object_get_boolean(field);
}

/* Watch events as replica events, applied as they come. */
struct watcher {
	struct replica *replica;
	int events, refused;
	int64_t last_revision;
	bool created;
	char log[4096];
};

static void on_report(void *context, const struct replica_report *report)
{
	struct watcher *w = context;
	size_t used = strlen(w->log);
	snprintf(w->log + used, sizeof(w->log) - used, "%d:%s:%s;", (int)report->change,
		 report->name, report->entry ? report->entry : "");
}

static void on_watch(void *context, struct json_object *message)
{
	struct watcher *w = context;
	struct json_object *result, *events, *created;
	if (!json_object_object_get_ex(message, "result", &result))
		return;
	if (json_object_object_get_ex(result, "created", &created))
		w->created = true;
	if (!json_object_object_get_ex(result, "events", &events))
		return;
	for (size_t i = 0; i < json_object_array_length(events); i++) {
		struct json_object *event = json_object_array_get_idx(events, i), *kv, *type;
		json_object_object_get_ex(event, "kv", &kv);
		bool deleted = json_object_object_get_ex(event, "type", &type) &&
			       strcmp(json_object_get_string(type), "DELETE") == 0;
		char key[256], value[256] = "";
		int key_length = etcd_bytes_get(kv, "key", key, sizeof(key));
		int value_length = deleted ? 0 : etcd_bytes_get(kv, "value", value, sizeof(value));
		cr_assert_geq(key_length, 7);
		struct replica_event e = {
		    .deleted = deleted,
		    .key = key + 7, /* past "/tests/" */
		    .key_length = (size_t)key_length - 7,
		    .value = value,
		    .value_length = value_length > 0 ? (size_t)value_length : 0,
		    .revision = etcd_int64_get(kv, "mod_revision", 0),
		    .create_revision = etcd_int64_get(kv, "create_revision", 0),
		    .lease = etcd_int64_get(kv, "lease", 0),
		};
		char error[256];
		cr_assert_geq(e.revision, w->last_revision, "events out of order");
		w->last_revision = e.revision;
		if (replica_apply(w->replica, &e, on_report, w, error, sizeof(error)) != 0)
			w->refused++;
		w->events++;
	}
}

static void on_stream_end(void *context, int error, const char *message,
			  struct json_object *response)
{
}

Test(etcd, transactions_and_a_watch_from_another_member_drive_the_replica)
{
	struct etcd *writer = client(NULL, 2000);
	/* The watcher talks to the last member first. */
	struct etcd *reader = client(cluster.endpoints[2], 2000);
	struct watcher w = {.replica = replica_new()};
	struct json_object *create = json_object_new_object(), *watch = json_object_new_object();
	json_object_object_add(create, "key", etcd_bytes("/tests/", 7));
	json_object_object_add(create, "range_end", etcd_prefix_end("/tests/"));
	json_object_object_add(create, "start_revision", etcd_int64(1));
	json_object_object_add(watch, "create_request", create);
	struct etcd_stream *stream =
	    etcd_stream_open(reader, "/v3/watch", watch, on_watch, on_stream_end, &w);
	cr_assert_not_null(stream);

	struct result r =
	    call(writer, "/v3/kv/txn", put_if_absent("/tests/sem/db/meta", "limit=1", 0));
	cr_assert_eq(r.error, 0, "%s", r.message);
	cr_assert(succeeded(r.response));
	json_object_put(r.response);
	/* The same put again: the compare fails, nothing written. */
	r = call(writer, "/v3/kv/txn", put_if_absent("/tests/sem/db/meta", "limit=9", 0));
	cr_assert_eq(r.error, 0, "%s", r.message);
	cr_assert_not(succeeded(r.response));
	json_object_put(r.response);
	const char *entries[] = {"h1.0.1", "h2.0.1", "h3.0.1"};
	for (int i = 0; i < 3; i++) {
		char key[64];
		snprintf(key, sizeof(key), "/tests/sem/db/q/%s", entries[i]);
		r = call(writer, "/v3/kv/txn", put_if_absent(key, "kind=lock who=pid:1@h", 0));
		cr_assert(r.error == 0 && succeeded(r.response), "%s", r.message);
		json_object_put(r.response);
	}
	struct json_object *delete = json_object_new_object();
	json_object_object_add(delete, "key", etcd_bytes("/tests/sem/db/q/h1.0.1", 22));
	r = call(writer, "/v3/kv/deleterange", delete);
	cr_assert_eq(r.error, 0, "%s", r.message);
	cr_assert_eq(etcd_int64_get(r.response, "deleted", 0), 1);
	int64_t revision =
	    etcd_int64_get(json_object_object_get(r.response, "header"), "revision", 0);
	json_object_put(r.response);

	for (int i = 0; i < 100 && w.last_revision < revision; i++)
		etcd_poll(reader, 50);
	cr_assert(w.created);
	cr_assert_eq(w.events, 5, "%d events", w.events);
	cr_assert_eq(w.refused, 0);
	cr_assert_eq(replica_entry(w.replica, "db", "h2.0.1", NULL), 1, "h2 holds after h1: %s",
		     w.log);
	cr_assert_eq(replica_entry(w.replica, "db", "h3.0.1", NULL), 0);

	/* A range read gives the same state. */
	struct json_object *range = json_object_new_object();
	json_object_object_add(range, "key", etcd_bytes("/tests/", 7));
	json_object_object_add(range, "range_end", etcd_prefix_end("/tests/"));
	r = call(reader, "/v3/kv/range", range);
	cr_assert_eq(r.error, 0, "%s", r.message);
	cr_assert_eq(etcd_int64_get(r.response, "count", 0), 3);
	json_object_put(r.response);

	etcd_stream_close(reader, stream);
	replica_free(w.replica);
	etcd_free(reader);
	etcd_free(writer);
}

Test(etcd, a_revoked_lease_takes_its_keys_and_keepalive_says_it_is_gone)
{
	struct etcd *etcd = client(NULL, 2000);
	struct json_object *grant = json_object_new_object();
	json_object_object_add(grant, "TTL", etcd_int64(5));
	struct result r = call(etcd, "/v3/lease/grant", grant);
	cr_assert_eq(r.error, 0, "%s", r.message);
	int64_t lease = etcd_int64_get(r.response, "ID", 0);
	cr_assert_neq(lease, 0);
	json_object_put(r.response);
	r = call(etcd, "/v3/kv/txn",
		 put_if_absent("/tests/sem/x/q/h.1.1", "kind=acquire who=a", lease));
	cr_assert(r.error == 0 && succeeded(r.response), "%s", r.message);
	json_object_put(r.response);

	struct json_object *alive = json_object_new_object();
	json_object_object_add(alive, "ID", etcd_int64(lease));
	r = call(etcd, "/v3/lease/keepalive", alive);
	cr_assert_eq(r.error, 0, "%s", r.message);
	cr_assert_eq(etcd_int64_get(json_object_object_get(r.response, "result"), "TTL", 0), 5);
	json_object_put(r.response);

	struct json_object *revoke = json_object_new_object();
	json_object_object_add(revoke, "ID", etcd_int64(lease));
	r = call(etcd, "/v3/lease/revoke", revoke);
	cr_assert_eq(r.error, 0, "%s", r.message);
	json_object_put(r.response);

	struct json_object *range = json_object_new_object();
	json_object_object_add(range, "key", etcd_bytes("/tests/sem/x/q/h.1.1", 20));
	r = call(etcd, "/v3/kv/range", range);
	cr_assert_eq(etcd_int64_get(r.response, "count", 0), 0, "the leased key went");
	json_object_put(r.response);

	alive = json_object_new_object();
	json_object_object_add(alive, "ID", etcd_int64(lease));
	r = call(etcd, "/v3/lease/keepalive", alive);
	cr_assert_eq(r.error, 0, "%s", r.message);
	cr_assert_eq(etcd_int64_get(json_object_object_get(r.response, "result"), "TTL", 0), 0,
		     "a revoked lease has no TTL");
	json_object_put(r.response);
	etcd_free(etcd);
}

static char dead_endpoint[64];

static const char *nobody(void)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t length = sizeof(a);
	bind(fd, (struct sockaddr *)&a, sizeof(a));
	getsockname(fd, (struct sockaddr *)&a, &length);
	close(fd);
	snprintf(dead_endpoint, sizeof(dead_endpoint), "http://127.0.0.1:%d", ntohs(a.sin_port));
	return dead_endpoint;
}

Test(etcd, a_dead_endpoint_and_a_killed_member_are_passed_over)
{
	/* Long enough for an election: the member killed may be the leader. */
	struct etcd *etcd = client(nobody(), 6000);
	struct result r = call(etcd, "/v3/kv/txn", put_if_absent("/tests/a", "1", 0));
	cr_assert_eq(r.error, 0, "%s", r.message);
	json_object_put(r.response);
	cr_assert_str_neq(etcd_endpoint(etcd), dead_endpoint, "calls moved to a live member");
	/* Kill the member calls go to now: the next call lands elsewhere. */
	int member = -1;
	for (int i = 0; i < cluster.size; i++)
		if (strcmp(etcd_endpoint(etcd), cluster.endpoints[i]) == 0)
			member = i;
	cr_assert_geq(member, 0);
	etcd_cluster_kill(&cluster, member);
	r = call(etcd, "/v3/kv/txn", put_if_absent("/tests/b", "1", 0));
	cr_assert_eq(r.error, 0, "%s", r.message);
	json_object_put(r.response);
	/* A retried put-if-absent may find its own first attempt: either way
	 * the key is there once. */
	struct json_object *range = json_object_new_object();
	json_object_object_add(range, "key", etcd_bytes("/tests/b", 8));
	r = call(etcd, "/v3/kv/range", range);
	cr_assert_eq(etcd_int64_get(r.response, "count", 0), 1);
	json_object_put(r.response);
	cr_assert_str_neq(etcd_endpoint(etcd), cluster.endpoints[member]);
	etcd_free(etcd);
}

/* Polls until calls go to `endpoint` (or `ms` pass): whether they do. */
static bool calls_go_to(struct etcd *etcd, const char *endpoint, int ms)
{
	for (int t = 0; t < ms / 50 && strcmp(etcd_endpoint(etcd), endpoint) != 0; t++)
		etcd_poll(etcd, 50);
	return strcmp(etcd_endpoint(etcd), endpoint) == 0;
}

/* Calls go to the member that leads (a follower forwards every transaction
 * to it, and its watch fires last), listed first or not; with listed_order
 * they stay on the first listed. After the leader dies, they find the new one. */
Test(etcd, calls_go_to_the_leader_and_follow_it)
{
	int leader = etcd_cluster_leader(&cluster);
	cr_assert_geq(leader, 0, "no etcd leader");
	struct etcd_options options = {.request_timeout_ms = 6000};
	for (int i = 1; i <= cluster.size; i++) /* a follower first, the leader last */
		options.endpoints[options.endpoint_count++] =
		    cluster.endpoints[(leader + i) % cluster.size];
	char error[256];
	struct etcd *etcd = etcd_new(&options, error, sizeof(error));
	cr_assert_not_null(etcd, "%s", error);
	options.listed_order = true;
	struct etcd *listed = etcd_new(&options, error, sizeof(error));
	cr_assert_not_null(listed, "%s", error);
	cr_assert(calls_go_to(etcd, cluster.endpoints[leader], 3000), "calls go to %s, not %s",
		  etcd_endpoint(etcd), cluster.endpoints[leader]);
	struct result r = call(listed, "/v3/kv/txn", put_if_absent("/tests/listed", "1", 0));
	cr_assert_eq(r.error, 0, "%s", r.message);
	json_object_put(r.response);
	cr_assert(!calls_go_to(listed, cluster.endpoints[leader], 1000),
		  "listed_order: calls moved to the leader");
	cr_assert_str_eq(etcd_endpoint(listed), options.endpoints[0]);
	etcd_free(listed);

	etcd_cluster_kill(&cluster, leader);
	r = call(etcd, "/v3/kv/txn", put_if_absent("/tests/after", "1", 0));
	cr_assert_eq(r.error, 0, "%s", r.message);
	json_object_put(r.response);
	int next = -1;
	for (int t = 0; t < 100 && (next = etcd_cluster_leader(&cluster)) < 0; t++)
		usleep(100000);
	cr_assert_geq(next, 0, "no new leader");
	cr_assert(calls_go_to(etcd, cluster.endpoints[next], 8000),
		  "calls go to %s, not to the new leader %s", etcd_endpoint(etcd),
		  cluster.endpoints[next]);
	etcd_free(etcd);
}

Test(etcd, nobody_answering_is_eio_cluster_unreachable)
{
	struct etcd_options options = {.request_timeout_ms = 600, .endpoint_count = 1};
	options.endpoints[0] = nobody();
	char error[256];
	struct etcd *etcd = etcd_new(&options, error, sizeof(error));
	cr_assert_not_null(etcd, "%s", error);
	struct timespec start, end;
	clock_gettime(CLOCK_MONOTONIC, &start);
	struct result r = call(etcd, "/v3/kv/range", json_object_new_object());
	clock_gettime(CLOCK_MONOTONIC, &end);
	cr_assert_eq(r.error, -EIO);
	cr_assert(strstr(r.message, "cluster unreachable"), "%s", r.message);
	/* It kept trying until its deadline, and no longer than that (generous
	 * bound: this is behaviour, not speed). */
	double seconds = (double)(end.tv_sec - start.tv_sec) + (end.tv_nsec - start.tv_nsec) / 1e9;
	cr_assert(seconds >= 0.55 && seconds < 10, "%.2f s", seconds);
	etcd_free(etcd);
	/* A majority gone: a call to the one member left fails, it never grants. */
	etcd = client(NULL, 1500);
	etcd_cluster_kill(&cluster, 0);
	etcd_cluster_kill(&cluster, 1);
	r = call(etcd, "/v3/kv/txn", put_if_absent("/tests/c", "1", 0));
	cr_assert_neq(r.error, 0, "a write without a majority succeeded");
	etcd_free(etcd);
}

Test(etcd, options_it_cannot_use_are_refused_with_the_reason)
{
	char error[256];
	struct etcd_options options = {.endpoint_count = 1, .endpoints = {"127.0.0.1:2379"}};
	cr_assert_null(etcd_new(&options, error, sizeof(error)));
	cr_assert(strstr(error, "not http://HOST:PORT"), "%s", error);
	options.endpoints[0] = "https://127.0.0.1:2379";
	options.ca_file = "/nonexistent/ca.pem";
	cr_assert_null(etcd_new(&options, error, sizeof(error)));
	cr_assert(strstr(error, "/nonexistent/ca.pem"), "%s", error);
	options.ca_file = NULL;
	options.cert_file = "/etc/hostname";
	cr_assert_null(etcd_new(&options, error, sizeof(error)));
	cr_assert(strstr(error, "both"), "%s", error);
	options.endpoint_count = 0;
	cr_assert_null(etcd_new(&options, error, sizeof(error)));
}
