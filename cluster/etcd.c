/* etcd.c: etcd v3's JSON gateway over libcurl's multi interface. Calls are
 * queued from any thread and run by whoever loops on etcd_poll(); a failed
 * attempt moves to the next endpoint; only what is safe to repeat is
 * repeated (see etcd.h). */
#include "etcd.h"

#include <curl/curl.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define RESPONSE_MAX	     (64u << 20) /* a range of every semaphore fits */
#define RETRY_PAUSE_MS	     50		 /* after every endpoint refused in a row */
#define ETCD_CONNECTIONS_MAX 64		 /* open to all members together */
/* Who leads is asked this often, and soon after a call moved elsewhere. */
#define LEADER_PROBE_MS		5000
#define LEADER_PROBE_SOON_MS	200
#define LEADER_PROBE_TIMEOUT_MS 1000
/* Calls in flight at once; more wait in `pending`, their deadline not yet
 * running (busy is not unreachable). Urgent calls (keep-alives) skip the
 * line: the connections above leave room for them. */
#define ETCD_IN_FLIGHT_MAX 48

struct etcd_stream {
	struct etcd_stream *next; /* pending, retrying or active list */
	struct etcd *etcd;
	char path[64];
	char *body;
	bool idempotent, stream;
	etcd_done_fn *done;
	etcd_message_fn *message;
	void *context;
	int64_t deadline_ms; /* unary calls: when -EIO is due */
	int timeout_ms;	     /* the call's whole life, from its first attempt */
	bool urgent;	     /* not held back by ETCD_IN_FLIGHT_MAX */
	bool started;	     /* its first attempt began: the deadline runs */
	int64_t not_before_ms;
	int endpoint; /* the one this attempt went to */
	int pinned;   /* >= 0: that endpoint only, never retried (leader probes) */
	int refused;  /* endpoints that refused in a row */
	bool closing; /* stream closed from inside its own callback */
	CURL *easy;
	struct curl_slist *headers;
	char *buffer; /* unary: the response */
	size_t length, allocated;
	json_tokener *tokener; /* streams */
	char curl_error[CURL_ERROR_SIZE];
};

struct etcd {
	char *endpoints[ETCD_ENDPOINTS_MAX];
	int endpoint_count;
	int request_timeout_ms;
	char *ca_file, *cert_file, *key_file;
	CURLM *multi;
	int current;			   /* where calls go now */
	bool answered[ETCD_ENDPOINTS_MAX]; /* at its last request */
	pthread_mutex_t lock;		   /* protects `pending` */
	struct etcd_stream *pending;	   /* queued by etcd_call, any thread */
	struct etcd_stream *waiting;	   /* loop thread: retries not yet due */
	struct etcd_stream *active;	   /* loop thread: in the multi handle */
	bool in_callback;		   /* loop thread: inside a curl callback */
	int in_flight;			   /* loop thread: unary calls in the multi handle */
	bool listed_order;		   /* no leader preference */
	int64_t next_leader_probe_ms;	   /* loop thread */
	int leader_probes;		   /* loop thread: status calls out */
	struct leader_probe {
		struct etcd *etcd;
		int endpoint;
	} probes[ETCD_ENDPOINTS_MAX];
};

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static void curl_start(void)
{
	curl_global_init(CURL_GLOBAL_DEFAULT);
}

static int64_t now_ms(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

/* ---- set-up ------------------------------------------------------------------ */

static bool endpoint_ok(const char *endpoint)
{
	const char *rest = strncmp(endpoint, "http://", 7) == 0	   ? endpoint + 7
			   : strncmp(endpoint, "https://", 8) == 0 ? endpoint + 8
								   : NULL;
	return rest && *rest && !strchr(rest, '/') && !strchr(rest, ' ') && strlen(endpoint) < 256;
}

static char *copy(const char *text, bool *ok)
{
	if (!text)
		return NULL;
	char *c = strdup(text);
	if (!c)
		*ok = false;
	return c;
}

struct etcd *etcd_new(const struct etcd_options *options, char *error, size_t error_size)
{
	pthread_once(&curl_once, curl_start);
	if (options->endpoint_count < 1 || options->endpoint_count > ETCD_ENDPOINTS_MAX) {
		snprintf(error, error_size, "%d endpoints: between 1 and %d",
			 options->endpoint_count, ETCD_ENDPOINTS_MAX);
		return NULL;
	}
	for (int i = 0; i < options->endpoint_count; i++)
		if (!endpoint_ok(options->endpoints[i])) {
			snprintf(error, error_size,
				 "endpoint '%s' is not http://HOST:PORT or https://HOST:PORT",
				 options->endpoints[i]);
			return NULL;
		}
	const char *files[] = {options->ca_file, options->cert_file, options->key_file};
	for (int i = 0; i < 3; i++)
		if (files[i] && access(files[i], R_OK) != 0) {
			snprintf(error, error_size, "%s: %s", files[i], strerror(errno));
			return NULL;
		}
	if (!options->cert_file != !options->key_file) {
		snprintf(error, error_size,
			 "a client certificate needs both its cert and key file");
		return NULL;
	}
	struct etcd *etcd = calloc(1, sizeof(*etcd));
	bool ok = etcd != NULL;
	if (ok) {
		pthread_mutex_init(&etcd->lock, NULL);
		etcd->endpoint_count = options->endpoint_count;
		etcd->listed_order = options->listed_order;
		etcd->request_timeout_ms =
		    options->request_timeout_ms > 0 ? options->request_timeout_ms : 2000;
		for (int i = 0; i < options->endpoint_count; i++)
			etcd->endpoints[i] = copy(options->endpoints[i], &ok);
		etcd->ca_file = copy(options->ca_file, &ok);
		etcd->cert_file = copy(options->cert_file, &ok);
		etcd->key_file = copy(options->key_file, &ok);
		etcd->multi = curl_multi_init();
		ok = ok && etcd->multi;
		if (ok) {
			/* Thousands of waiters must not mean thousands of sockets to
			 * etcd: transfers beyond these wait in curl's queue. */
			curl_multi_setopt(etcd->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS,
					  (long)ETCD_CONNECTIONS_MAX);
			curl_multi_setopt(etcd->multi, CURLMOPT_MAXCONNECTS,
					  (long)ETCD_CONNECTIONS_MAX);
		}
	}
	if (!ok) {
		snprintf(error, error_size, "out of memory");
		etcd_free(etcd);
		return NULL;
	}
	return etcd;
}

static void request_free(struct etcd_stream *request)
{
	if (request->easy)
		curl_easy_cleanup(request->easy);
	curl_slist_free_all(request->headers);
	if (request->tokener)
		json_tokener_free(request->tokener);
	free(request->buffer);
	free(request->body);
	free(request);
}

static void end(struct etcd_stream *request, int error, const char *message,
		struct json_object *response)
{
	if (request->done)
		request->done(request->context, error, message, response);
	request_free(request);
}

void etcd_cancel(struct etcd *etcd)
{
	pthread_mutex_lock(&etcd->lock);
	struct etcd_stream *lists[] = {etcd->pending, etcd->waiting, etcd->active};
	etcd->pending = etcd->waiting = etcd->active = NULL;
	pthread_mutex_unlock(&etcd->lock);
	etcd->in_flight = 0;
	for (int l = 0; l < 3; l++)
		for (struct etcd_stream *r = lists[l], *next; r; r = next) {
			next = r->next;
			if (r->easy && etcd->multi)
				curl_multi_remove_handle(etcd->multi, r->easy);
			end(r, -ECANCELED, "the etcd client is going away", NULL);
		}
}

void etcd_free(struct etcd *etcd)
{
	if (!etcd)
		return;
	/* Callbacks may queue more: end those too. */
	while (etcd->pending || etcd->waiting || etcd->active)
		etcd_cancel(etcd);
	if (etcd->multi)
		curl_multi_cleanup(etcd->multi);
	for (int i = 0; i < etcd->endpoint_count; i++)
		free(etcd->endpoints[i]);
	free(etcd->ca_file);
	free(etcd->cert_file);
	free(etcd->key_file);
	pthread_mutex_destroy(&etcd->lock);
	free(etcd);
}

/* ---- queueing ---------------------------------------------------------------- */

static struct etcd_stream *request_new(struct etcd *etcd, const char *path,
				       struct json_object *body, bool idempotent, bool stream,
				       etcd_done_fn *done, etcd_message_fn *message, void *context)
{
	struct etcd_stream *r = calloc(1, sizeof(*r));
	const char *text =
	    body ? json_object_to_json_string_ext(body, JSON_C_TO_STRING_PLAIN) : NULL;
	if (r && text && strlen(path) < sizeof(r->path))
		r->body = strdup(text);
	json_object_put(body);
	if (!r || !r->body) {
		free(r);
		return NULL;
	}
	r->etcd = etcd;
	snprintf(r->path, sizeof(r->path), "%s", path);
	r->idempotent = idempotent;
	r->stream = stream;
	r->done = done;
	r->message = message;
	r->context = context;
	r->timeout_ms = etcd->request_timeout_ms;
	r->deadline_ms = now_ms() + r->timeout_ms;
	r->endpoint = -1;
	r->pinned = -1;
	return r;
}

/* The thread that loops on etcd_poll: what it queues starts at its next
 * poll, so it need not wake itself (a wake-up costs a poll round here). */
static __thread const struct etcd *looping_here;

void etcd_loop_here(const struct etcd *etcd)
{
	looping_here = etcd;
}

static void queue(struct etcd *etcd, struct etcd_stream *request)
{
	pthread_mutex_lock(&etcd->lock);
	struct etcd_stream **at = &etcd->pending;
	while (*at)
		at = &(*at)->next; /* FIFO: calls leave in the order they came */
	*at = request;
	pthread_mutex_unlock(&etcd->lock);
	etcd_wakeup(etcd);
}

int etcd_call(struct etcd *etcd, const char *path, struct json_object *body, bool idempotent,
	      etcd_done_fn *done, void *context)
{
	return etcd_call_within(etcd, path, body, idempotent, 0, done, context);
}

int etcd_call_within(struct etcd *etcd, const char *path, struct json_object *body, bool idempotent,
		     int timeout_ms, etcd_done_fn *done, void *context)
{
	struct etcd_stream *r =
	    request_new(etcd, path, body, idempotent, false, done, NULL, context);
	if (!r)
		return -ENOMEM;
	if (timeout_ms > 0) {
		r->timeout_ms = timeout_ms;
		r->deadline_ms = now_ms() + timeout_ms;
		r->urgent = true;
	}
	queue(etcd, r);
	return 0;
}

struct etcd_stream *etcd_stream_open(struct etcd *etcd, const char *path, struct json_object *body,
				     etcd_message_fn *message, etcd_done_fn *done, void *context)
{
	struct etcd_stream *r = request_new(etcd, path, body, true, true, done, message, context);
	if (!r)
		return NULL;
	r->tokener = json_tokener_new();
	if (!r->tokener) {
		request_free(r);
		return NULL;
	}
	queue(etcd, r);
	return r;
}

void etcd_wakeup(struct etcd *etcd)
{
	if (looping_here != etcd)
		curl_multi_wakeup(etcd->multi);
}

static void unlink_from(struct etcd_stream **list, struct etcd_stream *request)
{
	for (struct etcd_stream **at = list; *at; at = &(*at)->next)
		if (*at == request) {
			*at = request->next;
			return;
		}
}

void etcd_stream_close(struct etcd *etcd, struct etcd_stream *stream)
{
	if (!stream)
		return;
	stream->done = NULL;
	stream->message = NULL;
	if (etcd->in_callback && stream->easy) {
		stream->closing = true; /* its write callback stops the transfer */
		return;
	}
	pthread_mutex_lock(&etcd->lock);
	unlink_from(&etcd->pending, stream);
	pthread_mutex_unlock(&etcd->lock);
	unlink_from(&etcd->waiting, stream);
	unlink_from(&etcd->active, stream);
	if (stream->easy)
		curl_multi_remove_handle(etcd->multi, stream->easy);
	request_free(stream);
}

/* ---- transfers ------------------------------------------------------------------ */

static size_t on_unary_data(char *data, size_t size, size_t count, void *context)
{
	struct etcd_stream *r = context;
	size_t n = size * count;
	if (r->length + n + 1 > RESPONSE_MAX)
		return 0; /* refused rather than cut: the transfer fails */
	if (r->length + n + 1 > r->allocated) {
		size_t allocated = r->allocated ? r->allocated : 4096;
		while (allocated < r->length + n + 1)
			allocated *= 2;
		char *grown = realloc(r->buffer, allocated);
		if (!grown)
			return 0;
		r->buffer = grown;
		r->allocated = allocated;
	}
	memcpy(r->buffer + r->length, data, n);
	r->length += n;
	r->buffer[r->length] = '\0';
	return n;
}

/* A stream is a run of JSON objects: each complete one goes to `message`. */
static size_t on_stream_data(char *data, size_t size, size_t count, void *context)
{
	struct etcd_stream *r = context;
	size_t n = size * count, at = 0;
	long code = 0;
	curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &code);
	if (code != 200)
		return on_unary_data(data, size, count, context); /* an error object */
	while (at < n && !r->closing) {
		struct json_object *object =
		    json_tokener_parse_ex(r->tokener, data + at, (int)(n - at));
		enum json_tokener_error e = json_tokener_get_error(r->tokener);
		if (e == json_tokener_continue)
			break;
		if (e != json_tokener_success) {
			snprintf(r->curl_error, sizeof(r->curl_error), "stream: %s",
				 json_tokener_error_desc(e));
			return 0;
		}
		at += json_tokener_get_parse_end(r->tokener);
		json_tokener_reset(r->tokener);
		if (r->message)
			r->message(r->context, object);
		json_object_put(object);
	}
	return r->closing ? 0 : n;
}

static void start(struct etcd *etcd, struct etcd_stream *r)
{
	if (!r->started) {
		r->started = true;
		r->deadline_ms = now_ms() + r->timeout_ms;
	}
	if (!r->stream)
		etcd->in_flight++;
	r->endpoint = r->pinned >= 0 ? r->pinned : etcd->current;
	char url[512];
	snprintf(url, sizeof(url), "%s%s", etcd->endpoints[r->endpoint], r->path);
	if (!r->easy)
		r->easy = curl_easy_init();
	if (!r->headers)
		r->headers = curl_slist_append(NULL, "Content-Type: application/json");
	if (!r->easy || !r->headers) {
		if (!r->stream)
			etcd->in_flight--;
		end(r, -ENOMEM, "out of memory", NULL);
		return;
	}
	r->length = 0;
	r->curl_error[0] = '\0';
	CURL *e = r->easy;
	curl_easy_reset(e);
	curl_easy_setopt(e, CURLOPT_URL, url);
	curl_easy_setopt(e, CURLOPT_POSTFIELDS, r->body);
	curl_easy_setopt(e, CURLOPT_HTTPHEADER, r->headers);
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(e, CURLOPT_PRIVATE, r);
	curl_easy_setopt(e, CURLOPT_ERRORBUFFER, r->curl_error);
	curl_easy_setopt(e, CURLOPT_WRITEDATA, r);
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, r->stream ? on_stream_data : on_unary_data);
	curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
	long connect = r->timeout_ms / 2 > 100 ? r->timeout_ms / 2 : 100;
	curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, connect);
	if (!r->stream) {
		/* Half the call's life per attempt, so a hung member leaves time
		 * for another; never past the deadline. */
		int64_t left = r->deadline_ms - now_ms();
		int64_t attempt = left < connect ? left : connect;
		curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)(attempt > 1 ? attempt : 1));
	}
	if (etcd->ca_file)
		curl_easy_setopt(e, CURLOPT_CAINFO, etcd->ca_file);
	if (etcd->cert_file) {
		curl_easy_setopt(e, CURLOPT_SSLCERT, etcd->cert_file);
		curl_easy_setopt(e, CURLOPT_SSLKEY, etcd->key_file);
	}
	if (r->tokener)
		json_tokener_reset(r->tokener);
	if (curl_multi_add_handle(etcd->multi, e) != CURLM_OK) {
		if (!r->stream)
			etcd->in_flight--;
		end(r, -ENOMEM, "curl_multi_add_handle failed", NULL);
		return;
	}
	r->next = etcd->active;
	etcd->active = r;
}

/* The endpoint of a failed attempt is passed over from now on; where the
 * leader is gets asked again soon (not after a failed probe: a member that
 * is down would be asked in a loop). */
static void rotate(struct etcd *etcd, const struct etcd_stream *r)
{
	etcd->answered[r->endpoint] = false;
	if (etcd->current == r->endpoint)
		etcd->current = (r->endpoint + 1) % etcd->endpoint_count;
	int64_t soon = now_ms() + LEADER_PROBE_SOON_MS;
	if (r->pinned < 0 && etcd->next_leader_probe_ms > soon)
		etcd->next_leader_probe_ms = soon;
}

static void retry_or_end(struct etcd *etcd, struct etcd_stream *r, bool never_sent,
			 const char *cause)
{
	rotate(etcd, r);
	int64_t now = now_ms();
	if ((r->idempotent || never_sent) && now < r->deadline_ms && !r->stream && r->pinned < 0) {
		r->refused = never_sent ? r->refused + 1 : 0;
		/* Every member refused in a row: pause instead of spinning. */
		r->not_before_ms = r->refused >= etcd->endpoint_count ? now + RETRY_PAUSE_MS : now;
		if (r->refused >= etcd->endpoint_count)
			r->refused = 0;
		r->next = etcd->waiting;
		etcd->waiting = r;
		return;
	}
	char message[CURL_ERROR_SIZE + 1024];
	snprintf(message, sizeof(message), "cluster unreachable: %s%s: %s",
		 etcd->endpoints[r->endpoint], r->path, cause);
	end(r, -EIO, message, NULL);
}

/* etcd's JSON gateway talks to its own gRPC server with the server's
 * certificate as a client certificate: with --client-cert-auth, a server
 * certificate without clientAuth makes every call a 503 with a transport
 * error in gRPC's words, which vary ("connection closed", "failed to write
 * client preface: ..."; etcd issue 9785). etcd's own errors (no leader, a
 * timeout) say "etcdserver:". */
#define GATEWAY_HINT                                                                               \
	"etcd's JSON gateway could not reach its own gRPC server (if etcd runs with "              \
	"--client-cert-auth, its server certificate must allow client authentication too: "        \
	"extendedKeyUsage clientAuth, etcd issue 9785): "

static bool gateway_refused_by_itself(const struct etcd *etcd, const struct etcd_stream *r,
				      long code, struct json_object *text)
{
	const char *words = text ? json_object_get_string(text) : "";
	return code == 503 && strncmp(etcd->endpoints[r->endpoint], "https://", 8) == 0 &&
	       !strstr(words, "etcdserver") &&
	       (strstr(words, "connection") || strstr(words, "preface") ||
		strstr(words, "certificate") || strstr(words, "handshake"));
}

/* A member with --client-cert-auth asks for a certificate in the TLS 1.3
 * handshake; a client with none sees the handshake end well, then the
 * connection close as it sends: curl says only "getpeername() failed" or a
 * send error. */
#define CERTIFICATE_HINT                                                                           \
	" (the member closed the connection after the TLS handshake: if etcd runs with "           \
	"--client-cert-auth, give this host cert_file and key_file)"

static bool certificate_wanted(const struct etcd *etcd, const struct etcd_stream *r,
			       CURLcode result)
{
	curl_off_t handshake = 0;
	curl_easy_getinfo(r->easy, CURLINFO_APPCONNECT_TIME_T, &handshake);
	return !etcd->cert_file && handshake > 0 &&
	       strncmp(etcd->endpoints[r->endpoint], "https://", 8) == 0 &&
	       (result == CURLE_SEND_ERROR || result == CURLE_RECV_ERROR ||
		result == CURLE_SSL_CONNECT_ERROR);
}

static void finished(struct etcd *etcd, struct etcd_stream *r, CURLcode result)
{
	unlink_from(&etcd->active, r);
	curl_multi_remove_handle(etcd->multi, r->easy);
	if (!r->stream)
		etcd->in_flight--;
	if (r->closing) {
		request_free(r);
		return;
	}
	long code = 0;
	curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &code);
	if (result != CURLE_OK && code == 0) {
		char cause[CURL_ERROR_SIZE + 256];
		snprintf(cause, sizeof(cause), "%s%s",
			 r->curl_error[0] ? r->curl_error : curl_easy_strerror(result),
			 certificate_wanted(etcd, r, result) ? CERTIFICATE_HINT : "");
		if (r->stream) {
			rotate(etcd, r);
			char message[CURL_ERROR_SIZE + 600];
			snprintf(message, sizeof(message), "stream %s%s ended: %s",
				 etcd->endpoints[r->endpoint], r->path, cause);
			end(r, -EIO, message, NULL);
			return;
		}
		retry_or_end(etcd, r, result == CURLE_COULDNT_CONNECT, cause);
		return;
	}
	etcd->answered[r->endpoint] = true;
	if (r->stream && code == 200) {
		/* The member ended it (shutting down, or a cancelled watch). */
		rotate(etcd, r);
		char message[CURL_ERROR_SIZE + 300];
		snprintf(message, sizeof(message), "stream %s%s ended: %s",
			 etcd->endpoints[r->endpoint], r->path,
			 r->curl_error[0] ? r->curl_error : "by the member");
		end(r, -EIO, message, NULL);
		return;
	}
	struct json_object *response = r->buffer ? json_tokener_parse(r->buffer) : NULL;
	if (code == 200 && response) {
		end(r, 0, NULL, response);
		json_object_put(response);
		return;
	}
	/* An error object: {"error": ..., "code": N, "message": ...}. gRPC's
	 * UNAVAILABLE (14) is an election or a member without quorum. */
	int64_t grpc = etcd_int64_get(response, "code", 0);
	struct json_object *text = NULL;
	json_object_object_get_ex(response, "message", &text);
	char cause[768];
	snprintf(cause, sizeof(cause), "HTTP %ld%s%s%s", code, text ? ": " : "",
		 gateway_refused_by_itself(etcd, r, code, text) ? GATEWAY_HINT : "",
		 text ? json_object_get_string(text) : "");
	if ((grpc == 14 || code == 503) && !r->stream) {
		json_object_put(response);
		retry_or_end(etcd, r, false, cause);
		return;
	}
	if (r->stream)
		rotate(etcd, r);
	char message[1024];
	snprintf(message, sizeof(message), "%s%s: %s", etcd->endpoints[r->endpoint], r->path,
		 cause);
	end(r, r->stream ? -EIO : -EPROTO, message, NULL);
	json_object_put(response);
}

/* Move the transfers on and end those done: whether any ended. */
static bool transfer(struct etcd *etcd)
{
	int running, left;
	etcd->in_callback = true;
	curl_multi_perform(etcd->multi, &running);
	etcd->in_callback = false;
	CURLMsg *message;
	bool progressed = false;
	while ((message = curl_multi_info_read(etcd->multi, &left))) {
		if (message->msg != CURLMSG_DONE)
			continue;
		struct etcd_stream *r = NULL;
		curl_easy_getinfo(message->easy_handle, CURLINFO_PRIVATE, (char **)&r);
		finished(etcd, r, message->data.result);
		progressed = true;
	}
	return progressed;
}

/* A member's status says whether it leads: calls go there from now on. */
static void on_leader_probe(void *context, int error, const char *message,
			    struct json_object *response)
{
	(void)message;
	struct leader_probe *probe = context;
	struct etcd *etcd = probe->etcd;
	etcd->leader_probes--;
	struct json_object *header = NULL, *member = NULL, *leader = NULL;
	if (error < 0 || !json_object_object_get_ex(response, "header", &header) ||
	    !json_object_object_get_ex(header, "member_id", &member) ||
	    !json_object_object_get_ex(response, "leader", &leader))
		return;
	/* IDs are unsigned 64-bit decimals: compared as text. */
	const char *id = json_object_get_string(member);
	if (id && *id && strcmp(id, "0") != 0 && strcmp(id, json_object_get_string(leader)) == 0)
		etcd->current = probe->endpoint;
}

static void leader_probe(struct etcd *etcd, int64_t now)
{
	etcd->next_leader_probe_ms = now + LEADER_PROBE_MS;
	for (int i = 0; i < etcd->endpoint_count; i++) {
		struct etcd_stream *r =
		    request_new(etcd, "/v3/maintenance/status", json_object_new_object(), true,
				false, on_leader_probe, NULL, &etcd->probes[i]);
		if (!r)
			continue;
		etcd->probes[i] = (struct leader_probe){etcd, i};
		r->pinned = i;
		r->urgent = true;
		r->timeout_ms = etcd->request_timeout_ms < LEADER_PROBE_TIMEOUT_MS
				    ? etcd->request_timeout_ms
				    : LEADER_PROBE_TIMEOUT_MS;
		r->deadline_ms = now + r->timeout_ms;
		etcd->leader_probes++;
		start(etcd, r);
	}
}

bool etcd_stream_elsewhere(const struct etcd *etcd, const struct etcd_stream *stream)
{
	return stream->endpoint >= 0 && stream->endpoint != etcd->current;
}

int etcd_poll(struct etcd *etcd, int timeout_ms)
{
	return etcd_poll_also(etcd, timeout_ms, -1);
}

int etcd_poll_also(struct etcd *etcd, int timeout_ms, int fd)
{
	pthread_mutex_lock(&etcd->lock);
	struct etcd_stream *pending = etcd->pending;
	etcd->pending = NULL;
	pthread_mutex_unlock(&etcd->lock);
	struct etcd_stream *held = NULL, **held_tail = &held;
	for (struct etcd_stream *r = pending, *next; r; r = next) {
		next = r->next;
		if (!r->stream && !r->urgent && etcd->in_flight >= ETCD_IN_FLIGHT_MAX) {
			r->next = NULL;
			*held_tail = r;
			held_tail = &r->next;
			continue;
		}
		start(etcd, r);
	}
	if (held) { /* first in line again, before what came meanwhile */
		pthread_mutex_lock(&etcd->lock);
		*held_tail = etcd->pending;
		etcd->pending = held;
		pthread_mutex_unlock(&etcd->lock);
	}
	int64_t now = now_ms();
	if (!etcd->listed_order && etcd->endpoint_count > 1 && !etcd->leader_probes &&
	    now >= etcd->next_leader_probe_ms)
		leader_probe(etcd, now);
	for (struct etcd_stream **at = &etcd->waiting; *at;) {
		struct etcd_stream *r = *at;
		if (r->not_before_ms <= now) {
			*at = r->next;
			start(etcd, r);
		} else {
			if (r->not_before_ms - now < timeout_ms)
				timeout_ms = (int)(r->not_before_ms - now);
			at = &r->next;
		}
	}
	if (transfer(etcd))
		return 0; /* callbacks may have queued more: come straight back */
	struct curl_waitfd also = {.fd = fd, .events = CURL_WAIT_POLLIN};
	if (curl_multi_poll(etcd->multi, fd >= 0 ? &also : NULL, fd >= 0 ? 1 : 0, timeout_ms,
			    NULL) != CURLM_OK)
		return -EIO;
	transfer(etcd);
	return 0;
}

const char *etcd_endpoint(const struct etcd *etcd)
{
	return etcd->endpoints[etcd->current];
}

int etcd_reachable(const struct etcd *etcd)
{
	int n = 0;
	for (int i = 0; i < etcd->endpoint_count; i++)
		n += etcd->answered[i];
	return n;
}

/* ---- encodings ------------------------------------------------------------------------ */

static const char base64_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

struct json_object *etcd_bytes(const void *data, size_t length)
{
	const unsigned char *in = data;
	size_t size = (length + 2) / 3 * 4 + 1;
	char *out = malloc(size);
	if (!out)
		return NULL;
	size_t o = 0;
	for (size_t i = 0; i < length; i += 3) {
		unsigned v = (unsigned)in[i] << 16;
		if (i + 1 < length)
			v |= (unsigned)in[i + 1] << 8;
		if (i + 2 < length)
			v |= in[i + 2];
		out[o++] = base64_alphabet[(v >> 18) & 63];
		out[o++] = base64_alphabet[(v >> 12) & 63];
		out[o++] = i + 1 < length ? base64_alphabet[(v >> 6) & 63] : '=';
		out[o++] = i + 2 < length ? base64_alphabet[v & 63] : '=';
	}
	out[o] = '\0';
	struct json_object *string = json_object_new_string_len(out, (int)o);
	free(out);
	return string;
}

static int base64_value(char c)
{
	const char *p = c ? strchr(base64_alphabet, c) : NULL;
	return p ? (int)(p - base64_alphabet) : -1;
}

int etcd_bytes_get(struct json_object *object, const char *name, char *out, size_t size)
{
	struct json_object *field;
	if (!object || !json_object_object_get_ex(object, name, &field) ||
	    !json_object_is_type(field, json_type_string))
		return -1;
	const char *in = json_object_get_string(field);
	size_t length = (size_t)json_object_get_string_len(field), o = 0;
	if (length % 4)
		return -1;
	for (size_t i = 0; i < length; i += 4) {
		int v[4];
		for (int k = 0; k < 4; k++)
			v[k] = in[i + k] == '=' && i + 4 == length && k >= 2
				   ? 0
				   : base64_value(in[i + k]);
		if (v[0] < 0 || v[1] < 0 || v[2] < 0 || v[3] < 0)
			return -1;
		if (in[i + 2] == '=' && in[i + 3] != '=')
			return -1;
		unsigned bits = (unsigned)v[0] << 18 | (unsigned)v[1] << 12 | (unsigned)v[2] << 6 |
				(unsigned)v[3];
		int bytes = in[i + 2] == '=' ? 1 : in[i + 3] == '=' ? 2 : 3;
		if (o + (size_t)bytes >= size)
			return -1;
		out[o++] = (char)(bits >> 16);
		if (bytes > 1)
			out[o++] = (char)(bits >> 8);
		if (bytes > 2)
			out[o++] = (char)bits;
	}
	if (size == 0)
		return -1;
	out[o] = '\0';
	return (int)o;
}

int64_t etcd_int64_get(struct json_object *object, const char *name, int64_t fallback)
{
	struct json_object *field;
	if (!object || !json_object_object_get_ex(object, name, &field))
		return fallback;
	if (json_object_is_type(field, json_type_int))
		return json_object_get_int64(field);
	if (!json_object_is_type(field, json_type_string))
		return fallback;
	const char *text = json_object_get_string(field);
	char *endp;
	errno = 0;
	long long v = strtoll(text, &endp, 10);
	return errno || endp == text || *endp ? fallback : (int64_t)v;
}

struct json_object *etcd_int64(int64_t value)
{
	char text[24];
	snprintf(text, sizeof(text), "%lld", (long long)value);
	return json_object_new_string(text);
}

struct json_object *etcd_prefix_end(const char *prefix)
{
	size_t length = strlen(prefix);
	char end[512];
	if (length == 0 || length >= sizeof(end))
		return etcd_bytes("\0", 1); /* every key */
	memcpy(end, prefix, length);
	/* The first key past the prefix: its last byte that is not 0xff, plus one. */
	while (length > 0 && (unsigned char)end[length - 1] == 0xff)
		length--;
	if (length == 0)
		return etcd_bytes("\0", 1);
	end[length - 1] = (char)((unsigned char)end[length - 1] + 1);
	return etcd_bytes(end, length);
}
