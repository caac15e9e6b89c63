/* server.c: the TCP front-end (see server.h).
 *
 * One thread, one epoll set: the listening socket, an eventfd and a timerfd.
 * Store threads finish queued requests by pushing the connection on a
 * mutex-guarded list and poking the eventfd; everything else about a
 * connection is touched by the loop thread only. A connection closed while
 * its request is in the store stays allocated (fd gone, `dead`) until the
 * completion arrives, and then gives back whatever that request took. */
#include "server.h"
#include "report.h"

#include "ace.h"
#include "clock.h"
#include "log.h"
#include "name.h"
#include "native.h"
#include "thread.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <unistd.h>

#define TICK_SECONDS	       0.25
#define HEARTBEAT_SECONDS      1.0		      /* ACE's server sends `wait|` once a second */
#define INPUT_MAX	       (2 * COMMAND_LINE_MAX) /* request bytes buffered per connection */
#define OUTPUT_MAX	       (1u << 20) /* a reader this far behind (a stuck `watch`) is cut off */
#define JOURNAL_CHUNK	       16384
#define REJECT_LOGS_PER_SECOND 20
#define KEEPALIVE_IDLE	       60 /* s before TCP probes a silent peer */
#define KEEPALIVE_INTERVAL     10
#define KEEPALIVE_COUNT	       6

enum dialect { DIALECT_UNKNOWN, DIALECT_ACE, DIALECT_NATIVE };
enum ace_state { ACE_IDLE, ACE_WAITING, ACE_HOLDING, ACE_FINISHED };

struct buffer {
	char *data;
	size_t start, length, allocated;
};

struct connection {
	struct server *server;
	int fd; /* -1 once closed */
	char who[STORE_WHO_MAX];
	enum dialect dialect;
	uint32_t events; /* registered with epoll */

	char *in;
	size_t in_length, in_allocated;
	struct buffer out;

	struct owner owner;
	unsigned acquired;		   /* units `owner` holds, as this thread counts them */
	const struct store_caller *caller; /* whose permissions its requests have */

	/* The request in the store, if `pending`. */
	struct waiter waiter;
	struct command command;
	struct semaphore *request_semaphore;
	bool pending;
	int result;
	struct connection *completed_next;

	/* ACE dialect. */
	struct ace_parser *ace;
	enum ace_state ace_state;
	bool release_asked; /* `release|` came while still queued */
	struct timespec next_heartbeat;
	struct connection *heartbeat_prev, *heartbeat_next; /* while ACE_WAITING */
	bool heartbeat_queued;

	/* `watch`. */
	struct semaphore *watching;
	uint64_t watch_offset; /* in the journal file */

	struct timespec last_activity;
	struct timespec partial_since; /* the unfinished request began */
	bool partial;
	bool peer_closed; /* read EOF: no more requests come */
	bool closing;	  /* close once the output is sent */
	bool dead;	  /* closed, its request still in the store */
	bool flush_queued;
	struct connection *flush_next;
	struct connection *prev, *next;
};

struct server {
	struct server_options options;
	struct allow_list allowed;
	int listen_fd, epoll_fd, wake_fd, tick_fd;
	/* ACE waiters by next heartbeat, earliest first; heartbeat_fd fires at
	 * the head's, so a beat leaves 1.0 s after the last, not on a tick. */
	int heartbeat_fd;
	struct connection *heartbeat_head, *heartbeat_tail;
	struct timespec heartbeat_armed; /* {0, 0}: disarmed */
	unsigned port;
	pthread_t thread;
	bool running;
	atomic_bool stopping;
	atomic_bool changes; /* a journal grew: pump the watchers */
	size_t watchers;     /* connections in `watch` */

	pthread_mutex_t completed_lock;
	struct connection *completed; /* finished requests, newest first */

	struct connection *connections;
	size_t count;
	struct connection *graveyard; /* freed after the current batch of events */
	struct connection *to_flush;  /* output waiting for the end of the batch */
	bool accept_paused;
	time_t accept_failure_logged;

	time_t reject_second;
	unsigned rejects_logged, rejects_suppressed;
};

/* Set in the server's thread: its own requests' changes need no wake-up,
 * the loop looks at `changes` after every batch of events. */
static __thread bool in_server_thread;

/* epoll tags for the server's own descriptors. */
static char tag_listen, tag_wake, tag_tick, tag_heartbeat;

static struct timespec now_monotonic(void)
{
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	return now;
}

static void wake_loop(struct server *server)
{
	uint64_t one = 1;
	ssize_t n = write(server->wake_fd, &one, sizeof(one));
	(void)n; /* a full counter still wakes the loop */
}

/* ---- rejections are logged, but a flood does not flood the log ----------- */

static void log_rejection(struct server *server, const char *peer, const char *reason)
{
	time_t second = time(NULL);

	if (second != server->reject_second) {
		if (server->rejects_suppressed)
			log_warnx("%u more connections rejected", server->rejects_suppressed);
		server->reject_second = second;
		server->rejects_logged = server->rejects_suppressed = 0;
	}
	if (server->rejects_logged++ < REJECT_LOGS_PER_SECOND)
		log_warnx("rejected %s: %s", peer, reason);
	else
		server->rejects_suppressed++;
}

/* ---- output ---------------------------------------------------------------- */

static void connection_close(struct connection *c, const char *reason);
static void heartbeat_unqueue(struct connection *c);

static void set_events(struct connection *c)
{
	uint32_t events = 0;

	if (c->fd < 0)
		return;
	/* Level-triggered: ask only for what we will act on, or the loop spins
	 * (a full input buffer, an EOF already read). */
	if (!c->peer_closed && c->in_length < INPUT_MAX)
		events |= EPOLLIN | EPOLLRDHUP;
	if (c->out.length > 0)
		events |= EPOLLOUT;
	if (events == c->events)
		return;
	struct epoll_event event = {.events = events, .data.ptr = c};
	if (epoll_ctl(c->server->epoll_fd, EPOLL_CTL_MOD, c->fd, &event) == 0)
		c->events = events;
}

/* Send what is buffered; false if the connection broke (and is closed). */
static bool flush_output(struct connection *c)
{
	while (c->out.length > 0) {
		ssize_t n = send(c->fd, c->out.data + c->out.start, c->out.length,
				 MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN)
				break;
			connection_close(c, NULL);
			return false;
		}
		c->out.start += (size_t)n;
		c->out.length -= (size_t)n;
	}
	if (c->out.length == 0)
		c->out.start = 0;
	if (c->closing && c->out.length == 0) {
		connection_close(c, NULL);
		return false;
	}
	set_events(c);
	return true;
}

/* Queue output. A reply the client asked for (a status of any size) goes
 * whole if the reader has kept up so far; a stream (`watch`) may not pass
 * OUTPUT_MAX. */
static void queue_output(struct connection *c, const char *data, size_t length, bool whole)
{
	if (c->fd < 0 || length == 0)
		return;
	if (c->out.length + (whole ? 0 : length) > OUTPUT_MAX) {
		connection_close(c, "reader too slow: output buffer full");
		return;
	}
	if (c->out.start + c->out.length + length > c->out.allocated) {
		if (c->out.start > 0) {
			memmove(c->out.data, c->out.data + c->out.start, c->out.length);
			c->out.start = 0;
		}
		size_t size = c->out.allocated ? c->out.allocated : 256;
		while (size < c->out.length + length)
			size *= 2;
		if (size > c->out.allocated) {
			char *bigger = realloc(c->out.data, size);
			if (!bigger) {
				connection_close(c, "out of memory");
				return;
			}
			c->out.data = bigger;
			c->out.allocated = size;
		}
	}
	memcpy(c->out.data + c->out.start + c->out.length, data, length);
	c->out.length += length;
	/* Sent once the batch of events is handled: pipelined requests get
	 * their replies in one send instead of one each. */
	if (!c->flush_queued) {
		c->flush_queued = true;
		c->flush_next = c->server->to_flush;
		c->server->to_flush = c;
	}
}

static void send_bytes(struct connection *c, const char *data, size_t length)
{
	queue_output(c, data, length, false);
}

static void flush_queued(struct server *server)
{
	while (server->to_flush) {
		struct connection *c = server->to_flush;
		server->to_flush = c->flush_next;
		c->flush_queued = false;
		if (c->fd >= 0)
			flush_output(c);
	}
}

static void send_text(struct connection *c, const char *text)
{
	send_bytes(c, text, strlen(text));
}

static void reply(struct connection *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void reply(struct connection *c, const char *fmt, ...)
{
	char line[COMMAND_LINE_MAX + 128];
	va_list ap;

	va_start(ap, fmt);
	int n = vsnprintf(line, sizeof(line) - 1, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n > sizeof(line) - 2)
		n = (int)sizeof(line) - 2;
	line[n++] = '\n';
	send_bytes(c, line, (size_t)n);
}

/* The words a client sees for an errno, beyond strerror's. */
static const char *explain(int error)
{
	switch (error) {
	case ENOENT:
		return "no such semaphore";
	case EEXIST:
		return "a semaphore or directory of that name exists";
	case EPERM:
		return "not allowed: defined in the configuration, or another user's name in a "
		       "sticky directory";
	case EACCES:
		return "permission denied: this peer acts as network_user (see semfs(8))";
	case ENOLCK:
		return "this connection holds no unit of it";
	case EOVERFLOW:
		return "every unit is already free (a double unlock?)";
	case EAGAIN:
		return "no unit free";
	case EBUSY:
		return "more units are in use than the new limit";
	case ERANGE:
		return "value above the limit";
	case EIDRM:
		return "the semaphore was deleted";
	case ECANCELED:
		return "semfs is stopping";
	case EISDIR:
		return "a directory, not a semaphore";
	case ENOTDIR:
		return "a path component is a semaphore, not a directory";
	case ENOSPC:
		return "the system's limit on semaphore sets is reached (kernel.sem)";
	default:
		return strerror(error);
	}
}

static void reply_error(struct connection *c, int error, const char *name)
{
	const char *error_name = strerrorname_np(error);
	char wire[3 * NAME_MAX_LENGTH + 1] = "";
	if (name && name_wire(name, wire, sizeof(wire)) < 0)
		wire[0] = '\0';
	reply(c, "err %s %s%s%s", error_name ? error_name : "EIO", explain(error),
	      wire[0] ? ": " : "", wire);
}

/* ---- connections ------------------------------------------------------------ */

static void watch_stop(struct connection *c)
{
	if (c->watching) {
		store_close_semaphore(c->server->options.store, c->watching, 0);
		c->watching = NULL;
		c->server->watchers--;
	}
}

/* Return what the connection holds. Its request is not in the store. */
static void connection_let_go(struct connection *c)
{
	struct store *store = c->server->options.store;

	if (c->owner.holders)
		store_release_owner(store, &c->owner, c->who);
	c->acquired = 0;
	if (c->request_semaphore) {
		store_close_semaphore(store, c->request_semaphore, 0);
		c->request_semaphore = NULL;
	}
	watch_stop(c);
}

/* Accepting was paused for want of descriptors: try again. Called when a
 * connection goes and on every tick, since the descriptors may have been
 * taken by something else than connections (and a closed connection's is
 * freed only after this batch of events). */
static void accept_resume(struct server *server)
{
	if (!server->accept_paused)
		return;
	struct epoll_event event = {.events = EPOLLIN, .data.ptr = &tag_listen};
	if (epoll_ctl(server->epoll_fd, EPOLL_CTL_MOD, server->listen_fd, &event) == 0)
		server->accept_paused = false;
}

static void connection_bury(struct connection *c)
{
	struct server *server = c->server;

	if (c->prev)
		c->prev->next = c->next;
	else
		server->connections = c->next;
	if (c->next)
		c->next->prev = c->prev;
	server->count--;
	c->next = server->graveyard;
	server->graveyard = c;
	accept_resume(server);
}

/* `reason`: logged (a protocol violation); NULL for an ordinary end. */
static void connection_close(struct connection *c, const char *reason)
{
	struct server *server = c->server;

	if (c->fd < 0)
		return;
	if (reason)
		log_warnx("%s: %s; connection closed", c->who, reason);
	if (c->out.length > 0) /* a last word (an error line): sent if it fits */
		(void)!send(c->fd, c->out.data + c->out.start, c->out.length,
			    MSG_NOSIGNAL | MSG_DONTWAIT);
	epoll_ctl(server->epoll_fd, EPOLL_CTL_DEL, c->fd, NULL);
	close(c->fd);
	c->fd = -1;
	heartbeat_unqueue(c);
	if (c->pending && store_cancel(server->options.store, &c->waiter))
		c->pending = false;
	if (c->pending) {
		c->dead = true; /* the completion will come: finish then */
		return;
	}
	connection_let_go(c);
	connection_bury(c);
}

/* A request of a closed connection finished: whatever it took goes back. */
static void dead_request_done(struct connection *c)
{
	if (c->result == 0)
		store_return_units(c->server->options.store, &c->waiter);
	connection_let_go(c);
	connection_bury(c);
}

/* ---- requests in the store --------------------------------------------------- */

static void request_complete(struct waiter *waiter, int error)
{
	struct connection *c =
	    (struct connection *)((char *)waiter - offsetof(struct connection, waiter));
	struct server *server = c->server;

	pthread_mutex_lock(&server->completed_lock);
	bool was_empty = !server->completed;
	c->result = -error;
	c->completed_next = server->completed;
	server->completed = c;
	pthread_mutex_unlock(&server->completed_lock);
	if (was_empty)
		wake_loop(server);
}

/* Submit conn->command on `semaphore` (a reference the connection now owns).
 * Returns 0, -errno, or STORE_QUEUED. */
static int request_submit(struct connection *c, struct semaphore *semaphore)
{
	c->waiter = (struct waiter){
	    .commands = &c->command,
	    .count = 1,
	    .owner = &c->owner,
	    .complete = request_complete,
	};
	snprintf(c->waiter.who, sizeof(c->waiter.who), "%s", c->who);
	c->request_semaphore = semaphore;
	int r = store_submit(c->server->options.store, semaphore, &c->waiter);
	if (r == STORE_QUEUED)
		c->pending = true;
	return r;
}

static void request_finish(struct connection *c)
{
	if (c->request_semaphore) {
		store_close_semaphore(c->server->options.store, c->request_semaphore, 0);
		c->request_semaphore = NULL;
	}
}

/* ---- ACE heartbeats --------------------------------------------------------- */

static void heartbeat_arm(struct server *server)
{
	struct timespec at = server->heartbeat_head ? server->heartbeat_head->next_heartbeat
						    : (struct timespec){0, 0};
	if (at.tv_sec == server->heartbeat_armed.tv_sec &&
	    at.tv_nsec == server->heartbeat_armed.tv_nsec)
		return;
	struct itimerspec when = {.it_value = at}; /* zero disarms */
	if (timerfd_settime(server->heartbeat_fd, TFD_TIMER_ABSTIME, &when, NULL) == 0)
		server->heartbeat_armed = at;
}

/* Sorted insert from the tail: deadlines mostly arrive in order. */
static void heartbeat_queue(struct server *server, struct connection *c)
{
	struct connection *after = server->heartbeat_tail;
	while (after && clock_compare(&after->next_heartbeat, &c->next_heartbeat) > 0)
		after = after->heartbeat_prev;
	c->heartbeat_prev = after;
	c->heartbeat_next = after ? after->heartbeat_next : server->heartbeat_head;
	if (c->heartbeat_next)
		c->heartbeat_next->heartbeat_prev = c;
	else
		server->heartbeat_tail = c;
	if (after)
		after->heartbeat_next = c;
	else
		server->heartbeat_head = c;
	c->heartbeat_queued = true;
	heartbeat_arm(server);
}

static void heartbeat_unqueue(struct connection *c)
{
	struct server *server = c->server;
	if (!c->heartbeat_queued)
		return;
	if (c->heartbeat_prev)
		c->heartbeat_prev->heartbeat_next = c->heartbeat_next;
	else
		server->heartbeat_head = c->heartbeat_next;
	if (c->heartbeat_next)
		c->heartbeat_next->heartbeat_prev = c->heartbeat_prev;
	else
		server->heartbeat_tail = c->heartbeat_prev;
	c->heartbeat_prev = c->heartbeat_next = NULL;
	c->heartbeat_queued = false;
	heartbeat_arm(server);
}

/* ACE's server sends `wait|` each second a request waits, counted from
 * the request: 1.0, 2.0, 3.0 s... */
static void heartbeats_due(struct server *server)
{
	struct timespec now = now_monotonic();

	while (server->heartbeat_head &&
	       clock_compare(&server->heartbeat_head->next_heartbeat, &now) <= 0) {
		struct connection *c = server->heartbeat_head;
		heartbeat_unqueue(c);
		send_text(c, ACE_WAIT);
		if (c->fd < 0 || c->ace_state != ACE_WAITING)
			continue;
		while (clock_compare(&c->next_heartbeat, &now) <= 0) /* late: skip, no burst */
			c->next_heartbeat = clock_add(c->next_heartbeat, HEARTBEAT_SECONDS);
		heartbeat_queue(server, c);
	}
	heartbeat_arm(server);
}

/* ---- the ACE dialect ----------------------------------------------------------- */

static void ace_release(struct connection *c)
{
	if (c->ace_state == ACE_WAITING) {
		c->release_asked = true; /* not a cancel: ACE answers locked|ok| */
		return;
	}
	if (c->ace_state != ACE_HOLDING) {
		connection_close(c, "ACE release| without a unit");
		return;
	}
	c->command = (struct command){.verb = VERB_RELEASE, .timeout = COMMAND_NO_TIMEOUT};
	int r = store_submit(c->server->options.store, c->request_semaphore, &c->waiter);
	if (r == 0)
		c->acquired--;
	c->ace_state = ACE_FINISHED;
	send_text(c, ACE_OK);
	if (c->fd >= 0) {
		c->closing = true; /* as ACE's server: ok|, then close */
		flush_output(c);
	}
}

static void ace_granted(struct connection *c)
{
	heartbeat_unqueue(c);
	c->acquired++;
	c->ace_state = ACE_HOLDING;
	send_text(c, ACE_LOCKED);
	if (c->fd >= 0 && c->release_asked)
		ace_release(c);
}

static void ace_acquire(struct connection *c, const char *ace_name)
{
	struct timespec asked = now_monotonic(); /* heartbeats count from here */
	struct semaphore *semaphore;
	struct store *store = c->server->options.store;
	char name[PATH_MAX] = "", wire[3 * NAME_MAX_LENGTH + 1];
	if (name_wire(ace_name, wire, sizeof(wire)) < 0)
		wire[0] = '\0';
	/* Use it (w), or make it if it is missing (w+x on its directory). */
	int r = store_name_path(store, ace_name, name, sizeof(name));
	if (r == 0)
		r = store_access_path(store, name, c->caller, STORE_WRITE);
	if (r == -ENOENT)
		r = store_access_path(store, name, c->caller, STORE_CREATE);
	if (r == 0)
		r = store_open_path(store, name, true, &semaphore);

	if (r < 0) {
		char reason[sizeof(wire) + 64];
		snprintf(reason, sizeof(reason), "ACE acquire of %s: %s", wire, explain(-r));
		connection_close(c, reason);
		return;
	}
	c->command = (struct command){.verb = VERB_ACQUIRE, .timeout = COMMAND_NO_TIMEOUT};
	r = request_submit(c, semaphore);
	if (r == 0) {
		ace_granted(c);
	} else if (r == STORE_QUEUED) {
		c->ace_state = ACE_WAITING;
		c->next_heartbeat = clock_add(asked, HEARTBEAT_SECONDS);
		heartbeat_queue(c->server, c);
	} else {
		char reason[sizeof(wire) + 64];
		snprintf(reason, sizeof(reason), "ACE acquire of %s: %s", wire, explain(-r));
		connection_close(c, reason);
	}
}

static void ace_request_done(struct connection *c)
{
	if (c->result == 0)
		ace_granted(c);
	else
		connection_close(c, NULL); /* cancelled by shutdown or deletion */
}

static void ace_process(struct connection *c)
{
	size_t used = 0;

	while (used < c->in_length && c->fd >= 0) {
		enum ace_event event;
		used += ace_feed(c->ace, c->in + used, c->in_length - used, &event);
		switch (event) {
		case ACE_NONE:
			break;
		case ACE_ACQUIRE:
			c->last_activity = now_monotonic();
			ace_acquire(c, c->ace->name);
			break;
		case ACE_KEEPALIVE:
			break;
		case ACE_RELEASE:
			ace_release(c);
			break;
		case ACE_INVALID: {
			char reason[256];
			snprintf(reason, sizeof(reason), "invalid ACE input (%s)", c->ace->error);
			connection_close(c, reason);
			return;
		}
		}
	}
	c->in_length = 0;
	c->partial =
	    c->ace->state == ACE_START || c->ace->state == ACE_NAME || c->ace->token_length > 0;
	if (c->fd >= 0 && c->peer_closed)
		connection_close(c, NULL); /* ACE: a closed connection gives back */
}

/* ---- the native dialect ------------------------------------------------------- */

static void native_command_done(struct connection *c, int result)
{
	enum command_verb verb = c->command.verb;

	c->last_activity = now_monotonic(); /* idle from the reply on */
	if (result == 0 && verb == VERB_ACQUIRE)
		c->acquired++;
	if (result == 0 && verb == VERB_RELEASE)
		c->acquired--;
	if (result == 0 && (verb == VERB_LOCK || verb == VERB_ACQUIRE))
		reply(c, "ok token=%" PRIu64, c->waiter.token);
	else if (result == 0)
		reply(c, "ok");
	else
		reply_error(c, -result, NULL);
	request_finish(c);
}

static void native_status(struct connection *c, const char *asked)
{
	struct store *store = c->server->options.store;
	char *text = NULL;
	char name[PATH_MAX] = "";
	size_t length = 0;

	if (!asked[0]) {
		int r = report_status_text(store, c->caller, &text, &length);
		if (r < 0) {
			reply_error(c, -r, NULL);
			return;
		}
		size_t lines = 0;
		for (size_t i = 0; i < length; i++)
			lines += text[i] == '\n';
		reply(c, "ok lines=%zu", lines);
		queue_output(c, text, length, true);
		free(text);
		return;
	}
	struct semaphore *semaphore;
	int r = store_name_path(store, asked, name, sizeof(name));
	if (r == 0)
		r = store_access_path(store, name, c->caller, STORE_READ);
	if (r == 0)
		r = store_open_path(store, name, false, &semaphore);
	if (r == 0) {
		r = report_semaphore_status(store, semaphore, &text);
		store_close_semaphore(store, semaphore, 0);
	}
	if (r < 0) {
		reply_error(c, -r, asked);
		return;
	}
	/* Not through reply(): a status line has no length limit. */
	send_text(c, "ok ");
	queue_output(c, text, strlen(text), true);
	send_text(c, "\n");
	free(text);
}

static void native_watch(struct connection *c, const char *asked)
{
	struct store *store = c->server->options.store;
	struct semaphore *semaphore;
	char name[PATH_MAX], wire[3 * NAME_MAX_LENGTH + 1];
	int r = store_name_path(store, asked, name, sizeof(name));
	if (r == 0)
		r = store_access_path(store, name, c->caller, STORE_READ);
	if (r == 0)
		r = store_open_path(store, name, false, &semaphore);

	if (r < 0) {
		reply_error(c, -r, asked);
		return;
	}
	c->watching = semaphore;
	c->server->watchers++;
	uint64_t start;
	store_journal_position(store, semaphore, &start, &c->watch_offset);
	if (name_wire(asked, wire, sizeof(wire)) < 0)
		wire[0] = '\0';
	/* seq= of the newest line: the watcher can tell a gap from then on. */
	reply(c, "ok watching=%s seq=%" PRIu64, wire, store_journal_seq(store, semaphore));
}

static void native_request(struct connection *c, const char *line, size_t length)
{
	struct store *store = c->server->options.store;
	struct native_request request;
	char error[256];
	int r = native_parse(line, length, &request, error, sizeof(error));

	if (r == 0)
		return; /* a blank line: no activity, idle_timeout runs on */
	c->last_activity = now_monotonic();
	if (r < 0) {
		const char *error_name = strerrorname_np(-r);
		char reason[300];
		snprintf(reason, sizeof(reason), "bad request: %s", error);
		log_rejection(c->server, c->who + strlen("tcp:"), reason);
		reply(c, "err %s %s", error_name ? error_name : "EINVAL", error);
		return;
	}
	char path[PATH_MAX] = "";
	if (request.name[0] && request.verb != NATIVE_STATUS && request.verb != NATIVE_WATCH &&
	    (r = store_name_path(store, request.name, path, sizeof(path))) < 0) {
		reply_error(c, -r, request.name);
		return;
	}
	switch (request.verb) {
	case NATIVE_COMMAND: {
		struct semaphore *semaphore;
		c->command = request.command;
		r = store_access_path(store, path, c->caller, STORE_WRITE);
		if (r == 0)
			r = store_open_path(store, path, false, &semaphore);
		if (r < 0) {
			reply_error(c, -r, request.name);
			return;
		}
		r = request_submit(c, semaphore);
		if (r == STORE_QUEUED && c->peer_closed && store_cancel(store, &c->waiter)) {
			/* Nobody is left to wait for the answer. */
			c->pending = false;
			r = -ECONNRESET;
		}
		if (r != STORE_QUEUED)
			native_command_done(c, r);
		return;
	}
	case NATIVE_CREATE:
		r = store_access_path(store, path, c->caller, STORE_CREATE);
		if (r == 0)
			r = store_create_path(store, path,
					      request.has_limit ? request.limit
								: c->server->options.default_limit,
					      c->who);
		if (r < 0)
			reply_error(c, -r, request.name);
		else
			reply(c, "ok limit=%u",
			      request.has_limit ? request.limit : c->server->options.default_limit);
		return;
	case NATIVE_DELETE:
		r = store_access_path(store, path, c->caller, STORE_DELETE);
		if (r == 0)
			r = store_delete_path(store, path, c->who);
		if (r < 0)
			reply_error(c, -r, request.name);
		else
			reply(c, "ok");
		return;
	case NATIVE_STATUS:
		native_status(c, request.name);
		return;
	case NATIVE_WATCH:
		native_watch(c, request.name);
		return;
	case NATIVE_PING:
		reply(c, "ok pong");
		return;
	case NATIVE_HELP: {
		size_t lines = 0;
		for (const char *p = native_help; *p; p++)
			lines += *p == '\n';
		reply(c, "ok lines=%zu", lines);
		send_text(c, native_help);
		return;
	}
	case NATIVE_QUIT:
		reply(c, "ok bye");
		c->closing = true;
		return;
	}
}

static void native_process(struct connection *c)
{
	size_t used = 0;

	while (c->fd >= 0 && !c->pending && !c->closing && !c->watching) {
		size_t length;
		int framed = native_frame(c->in + used, c->in_length - used, &length);
		if (framed < 0) {
			reply(c, "err E2BIG request line longer than %d bytes", COMMAND_LINE_MAX);
			log_warnx("%s: request line longer than %d bytes; connection closed",
				  c->who, COMMAND_LINE_MAX);
			c->closing = true;
			break;
		}
		if (framed == 0)
			break;
		native_request(c, c->in + used, length);
		used += length + 1;
	}
	if (used > 0) {
		memmove(c->in, c->in + used, c->in_length - used);
		c->in_length -= used;
	}
	if (c->watching)
		c->in_length = 0; /* a watch stream takes no more requests */
	c->partial = c->in_length > 0 && !c->pending;
	if (c->fd >= 0 && c->peer_closed && !c->pending && !c->closing)
		c->closing = true;
	if (c->fd >= 0)
		flush_output(c);
}

static void native_request_done(struct connection *c)
{
	native_command_done(c, c->result);
	if (c->fd >= 0)
		native_process(c); /* the requests that queued up behind it */
}

/* ---- reading ----------------------------------------------------------------- */

static void process_input(struct connection *c)
{
	if (c->dialect == DIALECT_UNKNOWN && c->in_length > 0) {
		int ace = ace_detect(c->in, c->in_length);
		if (ace < 0 && !c->peer_closed)
			return;
		if (ace > 0) {
			c->ace = calloc(1, sizeof(*c->ace));
			if (!c->ace) {
				connection_close(c, "out of memory");
				return;
			}
			ace_init(c->ace);
			c->dialect = DIALECT_ACE;
		} else {
			c->dialect = DIALECT_NATIVE;
		}
	}
	if (c->dialect == DIALECT_ACE)
		ace_process(c);
	else if (c->dialect == DIALECT_NATIVE)
		native_process(c);
	else if (c->peer_closed)
		connection_close(c, NULL);
}

static void connection_readable(struct connection *c)
{
	bool was_partial = c->partial;

	while (!c->peer_closed && c->in_length < INPUT_MAX) {
		if (c->in_length == c->in_allocated) {
			size_t size = c->in_allocated ? c->in_allocated * 2 : 256;
			char *in = realloc(c->in, size);
			if (!in) {
				connection_close(c, "out of memory");
				return;
			}
			c->in = in;
			c->in_allocated = size;
		}
		ssize_t n =
		    recv(c->fd, c->in + c->in_length, c->in_allocated - c->in_length, MSG_DONTWAIT);
		if (n > 0) {
			c->in_length += (size_t)n;
			continue;
		}
		if (n == 0) {
			c->peer_closed = true;
			break;
		}
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN)
			break;
		connection_close(c, NULL); /* reset */
		return;
	}
	if (c->peer_closed && c->pending && store_cancel(c->server->options.store, &c->waiter)) {
		/* The waiter was queued and is ours again, having taken nothing. */
		c->pending = false;
		if (c->dialect == DIALECT_NATIVE) {
			reply_error(c, ECONNRESET, NULL);
			request_finish(c);
		}
	}
	process_input(c);
	if (c->fd < 0)
		return;
	if (c->partial && !was_partial)
		c->partial_since = now_monotonic();
	set_events(c);
}

/* ---- watch streams ------------------------------------------------------------ */

static void pump_watch(struct connection *c)
{
	struct store *store = c->server->options.store;
	uint64_t start, end;
	char chunk[JOURNAL_CHUNK];

	store_journal_position(store, c->watching, &start, &end);
	while (c->fd >= 0 && c->watch_offset < end) {
		/* A watcher slower than journal_max/2 gets a "dropped" line. */
		size_t n =
		    store_read_journal(store, c->watching, &c->watch_offset, chunk, sizeof(chunk));
		if (n == 0)
			break;
		send_bytes(c, chunk, n);
	}
	if (c->fd >= 0 && store_semaphore_removed(store, c->watching)) {
		c->closing = true; /* its last line said `delete` */
		flush_output(c);
	}
}

static void pump_watches(struct server *server)
{
	if (server->watchers == 0)
		return;
	for (struct connection *c = server->connections, *next; c; c = next) {
		next = c->next; /* pump_watch may close c */
		if (c->watching && c->fd >= 0)
			pump_watch(c);
	}
}

/* ---- the loop ------------------------------------------------------------------- */

static void accept_connections(struct server *server)
{
	for (;;) {
		struct sockaddr_in address;
		socklen_t size = sizeof(address);
		int fd = accept4(server->listen_fd, (struct sockaddr *)&address, &size,
				 SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS ||
			    errno == ENOMEM) {
				/* Out of descriptors: pause accepting; a closed
				 * connection or the next tick tries again. */
				if (time(NULL) - server->accept_failure_logged >= 60) {
					server->accept_failure_logged = time(NULL);
					log_warn(
					    "cannot accept connections (retrying every %.2f s; "
					    "logged once a minute)",
					    TICK_SECONDS);
				}
				struct epoll_event event = {.events = 0, .data.ptr = &tag_listen};
				epoll_ctl(server->epoll_fd, EPOLL_CTL_MOD, server->listen_fd,
					  &event);
				server->accept_paused = true;
			}
			return;
		}
		char peer[INET_ADDRSTRLEN + 8], text[INET_ADDRSTRLEN];
		inet_ntop(AF_INET, &address.sin_addr, text, sizeof(text));
		snprintf(peer, sizeof(peer), "%s:%u", text, ntohs(address.sin_port));
		/* Before a single byte is read. */
		if (!allow_contains(&server->allowed, ntohl(address.sin_addr.s_addr))) {
			log_rejection(server, peer, "not in allowed_ipv4");
			close(fd);
			continue;
		}
		if (server->count >= server->options.max_connections) {
			log_rejection(server, peer, "max_connections reached");
			close(fd);
			continue;
		}
		int on = 1, idle = KEEPALIVE_IDLE, interval = KEEPALIVE_INTERVAL,
		    count = KEEPALIVE_COUNT;
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on));
		setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof(on));
		setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle));
		setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &interval, sizeof(interval));
		setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &count, sizeof(count));

		struct connection *c = calloc(1, sizeof(*c));
		if (!c) {
			close(fd);
			continue;
		}
		c->server = server;
		c->fd = fd;
		snprintf(c->who, sizeof(c->who), "tcp:%s", peer);
		c->caller = server->options.admins && allow_contains(server->options.admins,
								     ntohl(address.sin_addr.s_addr))
				? server->options.admin
				: server->options.peer;
		c->last_activity = now_monotonic();
		c->events = EPOLLIN | EPOLLRDHUP;
		struct epoll_event event = {.events = c->events, .data.ptr = c};
		if (epoll_ctl(server->epoll_fd, EPOLL_CTL_ADD, fd, &event) < 0) {
			close(fd);
			free(c);
			continue;
		}
		c->next = server->connections;
		if (server->connections)
			server->connections->prev = c;
		server->connections = c;
		server->count++;
	}
}

static void handle_completions(struct server *server)
{
	pthread_mutex_lock(&server->completed_lock);
	struct connection *list = server->completed;
	server->completed = NULL;
	pthread_mutex_unlock(&server->completed_lock);

	/* Oldest first: the list was pushed newest first. */
	struct connection *ordered = NULL;
	while (list) {
		struct connection *next = list->completed_next;
		list->completed_next = ordered;
		ordered = list;
		list = next;
	}
	for (struct connection *c = ordered, *next; c; c = next) {
		next = c->completed_next;
		c->pending = false;
		if (c->dead)
			dead_request_done(c);
		else if (c->dialect == DIALECT_ACE)
			ace_request_done(c);
		else
			native_request_done(c);
	}
}

static void tick(struct server *server)
{
	struct timespec now = now_monotonic();
	double idle = server->options.idle_timeout, request = server->options.request_timeout;

	accept_resume(server);
	for (struct connection *c = server->connections, *next; c; c = next) {
		next = c->next;
		if (c->fd < 0)
			continue;
		if (c->ace_state == ACE_WAITING)
			continue; /* heartbeats keep it */
		if (c->partial && clock_difference(&now, &c->partial_since).tv_sec >= request) {
			if (c->dialect == DIALECT_NATIVE)
				reply(c, "err ETIMEDOUT request not finished within %u s",
				      server->options.request_timeout);
			connection_close(c, "request not finished in time");
			continue;
		}
		bool at_stake = c->pending || c->acquired > 0 || c->watching ||
				c->ace_state == ACE_HOLDING || c->out.length > 0;
		if (idle > 0 && !at_stake &&
		    clock_difference(&now, &c->last_activity).tv_sec >= idle)
			connection_close(c, NULL);
	}
}

static void bury_the_dead(struct server *server)
{
	while (server->graveyard) {
		struct connection *c = server->graveyard;
		server->graveyard = c->next;
		free(c->in);
		free(c->out.data);
		free(c->ace);
		free(c);
	}
}

static void *server_main(void *argument)
{
	struct server *server = argument;
	struct epoll_event events[256];

	pthread_setname_np(pthread_self(), "semfs-net");
	in_server_thread = true;
	while (!atomic_load(&server->stopping)) {
		int n = epoll_wait(server->epoll_fd, events, 256, -1);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			log_warn("epoll_wait");
			break;
		}
		for (int i = 0; i < n; i++) {
			void *tag = events[i].data.ptr;
			uint64_t count;
			if (tag == &tag_listen) {
				accept_connections(server);
			} else if (tag == &tag_wake) {
				if (read(server->wake_fd, &count, sizeof(count)) < 0)
					continue;
				handle_completions(server);
				if (atomic_exchange(&server->changes, false))
					pump_watches(server);
			} else if (tag == &tag_heartbeat) {
				if (read(server->heartbeat_fd, &count, sizeof(count)) > 0)
					server->heartbeat_armed = (struct timespec){0, 0};
				heartbeats_due(server);
			} else if (tag == &tag_tick) {
				if (read(server->tick_fd, &count, sizeof(count)) > 0)
					tick(server);
			} else {
				struct connection *c = tag;
				if (c->fd < 0)
					continue;
				if (events[i].events & (EPOLLERR | EPOLLHUP))
					connection_close(c, NULL); /* reset */
				else if (events[i].events & (EPOLLIN | EPOLLRDHUP))
					connection_readable(c);
				if (c->fd >= 0 && (events[i].events & EPOLLOUT))
					flush_output(c);
			}
		}
		/* Changes made by this thread did not wake it: see server_changed. */
		if (atomic_exchange(&server->changes, false))
			pump_watches(server);
		flush_queued(server);
		bury_the_dead(server);
	}

	/* Stopping: every connection goes, and every request it has in the store
	 * comes back before the store itself shuts down. */
	for (struct connection *c = server->connections, *next; c; c = next) {
		next = c->next;
		connection_close(c, NULL);
	}
	/* Left: closed connections whose request is finishing in the store. */
	while (server->connections) {
		handle_completions(server);
		if (server->connections)
			usleep(1000);
	}
	flush_queued(server);
	bury_the_dead(server);
	return NULL;
}

/* ---- life cycle ------------------------------------------------------------------ */

static int watch_fd(struct server *server, int fd, void *tag)
{
	struct epoll_event event = {.events = EPOLLIN, .data.ptr = tag};
	return epoll_ctl(server->epoll_fd, EPOLL_CTL_ADD, fd, &event);
}

int server_open(struct server **out, const struct server_options *options, char *error,
		size_t error_size)
{
	struct server *server = calloc(1, sizeof(*server));
	struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = htons(options->port)};
	int on = 1;

	if (!server) {
		snprintf(error, error_size, "out of memory");
		return -ENOMEM;
	}
	server->options = *options;
	server->allowed = *options->allowed;
	server->options.allowed = &server->allowed;
	server->listen_fd = server->epoll_fd = server->wake_fd = server->tick_fd = -1;
	server->heartbeat_fd = -1;
	pthread_mutex_init(&server->completed_lock, NULL);
	if (inet_pton(AF_INET, options->bind_address, &address.sin_addr) != 1) {
		snprintf(error, error_size, "bind_address %s: not an IPv4 address",
			 options->bind_address);
		errno = EINVAL;
		goto fail;
	}
	server->listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (server->listen_fd < 0 ||
	    setsockopt(server->listen_fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on)) < 0 ||
	    bind(server->listen_fd, (struct sockaddr *)&address, sizeof(address)) < 0 ||
	    listen(server->listen_fd, 65535) < 0) { /* the kernel caps it at somaxconn */
		snprintf(error, error_size,
			 "cannot listen on %s:%u: %s (set another bind_port, or enabled = no in "
			 "[service_network_semaphore])",
			 options->bind_address, options->port, strerror(errno));
		goto fail;
	}
	socklen_t size = sizeof(address);
	getsockname(server->listen_fd, (struct sockaddr *)&address, &size);
	server->port = ntohs(address.sin_port);

	server->epoll_fd = epoll_create1(EPOLL_CLOEXEC);
	server->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	server->tick_fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
	server->heartbeat_fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
	struct itimerspec period = {
	    .it_interval = {0, (long)(TICK_SECONDS * 1e9)},
	    .it_value = {0, (long)(TICK_SECONDS * 1e9)},
	};
	if (server->epoll_fd < 0 || server->wake_fd < 0 || server->tick_fd < 0 ||
	    server->heartbeat_fd < 0 ||
	    watch_fd(server, server->heartbeat_fd, &tag_heartbeat) < 0 ||
	    timerfd_settime(server->tick_fd, 0, &period, NULL) < 0 ||
	    watch_fd(server, server->listen_fd, &tag_listen) < 0 ||
	    watch_fd(server, server->wake_fd, &tag_wake) < 0 ||
	    watch_fd(server, server->tick_fd, &tag_tick) < 0) {
		snprintf(error, error_size, "network event loop: %s", strerror(errno));
		goto fail;
	}
	*out = server;
	return 0;
fail:;
	int r = -errno;
	server_free(server);
	return r;
}

unsigned server_port(const struct server *server)
{
	return server->port;
}

int server_start(struct server *server)
{
	int r = thread_start(&server->thread, server_main, server);

	if (r < 0)
		return r;
	server->running = true;
	return 0;
}

void server_changed(struct server *server)
{
	if (in_server_thread)
		atomic_store(&server->changes, true);
	else if (!atomic_exchange(&server->changes, true))
		wake_loop(server);
}

void server_stop(struct server *server)
{
	if (!server)
		return;
	atomic_store(&server->stopping, true);
	if (server->running) {
		wake_loop(server);
		pthread_join(server->thread, NULL);
		server->running = false;
	}
	if (server->listen_fd >= 0)
		close(server->listen_fd);
	server->listen_fd = -1;
}

void server_free(struct server *server)
{
	if (!server)
		return;
	server_stop(server);
	int fds[] = {server->listen_fd, server->epoll_fd, server->wake_fd, server->tick_fd,
		     server->heartbeat_fd};
	for (size_t i = 0; i < sizeof(fds) / sizeof(fds[0]); i++)
		if (fds[i] >= 0)
			close(fds[i]);
	pthread_mutex_destroy(&server->completed_lock);
	free(server);
}
