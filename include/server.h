/* server.h: the TCP front-end. One thread runs an epoll loop for every
 * socket; a request that waits for a unit is a queued waiter of the store
 * and costs no thread. A connection speaks ACE's dialect if it opens with
 * `acquire:`, the native line dialect otherwise (see ace.h, native.h). */
#ifndef SEMFS_SERVER_H
#define SEMFS_SERVER_H

#include "allow.h"
#include "store.h"

#include <stddef.h>

struct server_options {
	struct store *store;
	const char *bind_address; /* dotted IPv4 */
	unsigned port;		  /* 0: any free port (see server_port) */
	const struct allow_list *allowed;
	unsigned max_connections;
	unsigned idle_timeout;	  /* s, 0 for none */
	unsigned request_timeout; /* s */
	unsigned default_limit;	  /* `create NAME` without a limit */
	/* Every request is checked as the mount's kernel would check `peer`;
	 * a peer in `admins` is `admin` instead (semfs's own user). */
	const struct store_caller *peer, *admin;
	const struct allow_list *admins; /* NULL: none */
};

struct server;

/* Bind and listen (before daemonizing, so errors reach the terminal). */
int server_open(struct server **out, const struct server_options *options, char *error,
		size_t error_size);
unsigned server_port(const struct server *server);
int server_start(struct server *server); /* the loop thread, after daemonizing */
/* Or another thread's loop runs it (cluster mode: the cluster's, so a
 * request and its answer cross no thread): it calls server_run whenever
 * server_fd is readable. One pass, never waiting. */
int server_fd(const struct server *server);
void server_run(struct server *server);

/* The store's change observer: wakes `watch` streams. Only flags. */
void server_changed(struct server *server);

/* Before store_shutdown(): stop the loop, cancel waits, return every unit
 * connections hold, close the sockets. A loop that ran server_run must
 * have stopped calling it. NULL is fine. */
void server_stop(struct server *server);
/* After store_shutdown(), when no store thread can call server_changed(). */
void server_free(struct server *server);

#endif
