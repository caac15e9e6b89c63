/* server_internal.h: the network server's private interface, shared by its
 * files (net/server*.c) and nothing else: the connection and server structures
 * and the calls one server file makes into another. */
#ifndef SEMFS_SERVER_INTERNAL_H
#define SEMFS_SERVER_INTERNAL_H

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
/* ACE_RELEASING: a release| the store finishes later (cluster mode). */
enum ace_state { ACE_IDLE, ACE_WAITING, ACE_HOLDING, ACE_RELEASING, ACE_FINISHED };

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
	bool ace_retried;   /* its undefined name vanished once under it (cluster) */
	struct timespec next_heartbeat;
	struct connection *heartbeat_prev, *heartbeat_next; /* while ACE_WAITING */
	bool heartbeat_queued;

	/* Native lines that go one at a time without trying a run first: the
	 * rest of a run the store just declined (each is parsed once more at
	 * most, not once per line before it). */
	unsigned singles;

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
	 * the end of the head's 50 ms grain, so a beat leaves 1.0 s after the
	 * last, not on a tick. */
	int heartbeat_fd;
	struct connection *heartbeat_head, *heartbeat_tail;
	struct timespec heartbeat_armed; /* {0, 0}: disarmed */
	bool heartbeats_sending;	 /* in heartbeats_due: arm at its end */
	unsigned port;
	pthread_t thread;
	bool running;
	bool drained; /* server_stop closed every connection */
	atomic_bool stopping;
	atomic_bool changes; /* a journal grew: pump the watchers */
	/* Connections in `watch`: changed by the loop, read by every store
	 * thread (without one, a change need not wake the loop). */
	atomic_size_t watchers;

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

static inline struct timespec now_monotonic(void)
{
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	return now;
}

/* server.c */
void log_rejection(struct server *server, const char *peer, const char *reason);
bool flush_output(struct connection *c);
void queue_output(struct connection *c, const char *data, size_t length, bool whole);
void send_bytes(struct connection *c, const char *data, size_t length);
void send_text(struct connection *c, const char *text);
void reply(struct connection *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
const char *explain(int error);
void reply_error(struct connection *c, int error, const char *name);
void connection_close(struct connection *c, const char *reason);
int request_submit(struct connection *c, struct semaphore *semaphore);
void request_finish(struct connection *c);

/* server_ace.c */
void heartbeat_unqueue(struct connection *c);
void heartbeats_due(struct server *server);
void ace_request_done(struct connection *c);
void ace_process(struct connection *c);

/* server_native.c */
void native_process(struct connection *c);
void native_request_done(struct connection *c);
void pump_watches(struct server *server);

#endif
