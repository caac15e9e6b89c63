/* etcd.h: a client of etcd v3's JSON gateway (/v3/kv/range, /v3/kv/txn,
 * /v3/watch, /v3/lease/...), on libcurl's multi interface and json-c.
 *
 * One thread drives it: etcd_poll() in a loop (the cluster's event loop).
 * Calls may be queued from any thread; their callbacks run on the loop
 * thread. Every call has a deadline: an idempotent one is retried on the
 * next endpoint until it passes (a member in an election may never answer;
 * shared/CLUSTER.md trap 2), another fails at once with its cause. When no
 * endpoint answered in time the call ends with -EIO, "cluster unreachable".
 *
 * Bytes fields (keys, values) travel base64-encoded and 64-bit integers as
 * decimal strings, as the gateway's protobuf-JSON mapping has them. */
#ifndef SEMFS_ETCD_H
#define SEMFS_ETCD_H

#include <json-c/json.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define ETCD_ENDPOINTS_MAX 16

struct etcd_options {
	const char *endpoints[ETCD_ENDPOINTS_MAX]; /* http://host:port or https:// */
	int endpoint_count;
	int request_timeout_ms; /* a call's whole life, retries included */
	const char *ca_file;	/* https: the CA that signed the members' certificates */
	const char *cert_file;	/* https with client certificates */
	const char *key_file;
	bool listed_order; /* no leader preference: the first member that answers */
};

struct etcd;

/* Checks the options (endpoint syntax, readable TLS files): NULL with the
 * reason in `error`. */
struct etcd *etcd_new(const struct etcd_options *options, char *error, size_t error_size);
/* Ends every call and stream (their callbacks run with -ECANCELED). */
void etcd_free(struct etcd *etcd);

/* End every call and stream now: their callbacks run with -ECANCELED. The
 * client stays usable. Loop thread only. */
void etcd_cancel(struct etcd *etcd);

/* A call's end. `error` is 0 with the response object (borrowed: valid
 * during the callback), or -errno with a sentence in `message`: -EIO (no
 * member answered in time), -EPROTO (an answer that is no JSON, or an
 * error object from etcd), -ECANCELED (the client is going away). */
typedef void etcd_done_fn(void *context, int error, const char *message,
			  struct json_object *response);

/* POST `body` (taken over, freed by the client) to `path` (e.g.
 * "/v3/kv/txn"). Any thread. 0, or -ENOMEM (then `done` is not called). */
int etcd_call(struct etcd *etcd, const char *path, struct json_object *body, bool idempotent,
	      etcd_done_fn *done, void *context);

/* The same with a life of its own (0: request_timeout_ms): a lease
 * keep-alive must end, and try the next member, well before the lease. */
int etcd_call_within(struct etcd *etcd, const char *path, struct json_object *body, bool idempotent,
		     int timeout_ms, etcd_done_fn *done, void *context);

/* A stream (/v3/watch, /v3/lease/keepalive): `message` runs for every JSON
 * object the member sends, `done` once when the stream ends, for whatever
 * reason (-EIO when it could not be opened or broke). The caller reopens it
 * (on the next endpoint: etcd_call and etcd_stream rotate after a failure). */
typedef void etcd_message_fn(void *context, struct json_object *message);
struct etcd_stream;
struct etcd_stream *etcd_stream_open(struct etcd *etcd, const char *path, struct json_object *body,
				     etcd_message_fn *message, etcd_done_fn *done, void *context);
/* Loop thread only: ends it without calling `done`. */
void etcd_stream_close(struct etcd *etcd, struct etcd_stream *stream);
/* Whether the stream runs on a member calls no longer go to (the leader
 * moved, or that member failed a call): the caller may reopen it. */
bool etcd_stream_elsewhere(const struct etcd *etcd, const struct etcd_stream *stream);

/* Run transfers and callbacks for up to `timeout_ms` (returns earlier when
 * a call is queued from another thread). Loop thread only. */
int etcd_poll(struct etcd *etcd, int timeout_ms);
/* The same, returning also when `fd` (-1: none) is readable. */
int etcd_poll_also(struct etcd *etcd, int timeout_ms, int fd);
/* Wakes etcd_poll from any thread. */
void etcd_wakeup(struct etcd *etcd);
/* The calling thread is the one that loops on etcd_poll from now on: its
 * own calls and wake-ups wait for its next poll instead of waking it. */
void etcd_loop_here(const struct etcd *etcd);

/* The endpoint calls go to now, and how many answered their last request. */
const char *etcd_endpoint(const struct etcd *etcd);
int etcd_reachable(const struct etcd *etcd);

/* ---- the gateway's encodings -------------------------------------------- */
/* base64 of `length` bytes: a json string object (NULL: out of memory). */
struct json_object *etcd_bytes(const void *data, size_t length);
/* Decodes field `name` of `object` (base64) into `out`: its length, or -1
 * when absent, not base64, or longer than `size` - 1 (`out` ends in NUL). */
int etcd_bytes_get(struct json_object *object, const char *name, char *out, size_t size);
/* An int64 field (a decimal string, or a number): `fallback` when absent. */
int64_t etcd_int64_get(struct json_object *object, const char *name, int64_t fallback);
struct json_object *etcd_int64(int64_t value);
/* The key just past every key that starts with `prefix` (range_end). */
struct json_object *etcd_prefix_end(const char *prefix);

#endif
