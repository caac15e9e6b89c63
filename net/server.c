/* server.c: the TCP front-end (see server.h).
 *
 * One thread, one epoll set: the listening socket, an eventfd and a timerfd.
 * Store threads finish queued requests by pushing the connection on a
 * mutex-guarded list and poking the eventfd; everything else about a
 * connection is touched by the loop thread only. A connection closed while
 * its request is in the store stays allocated (fd gone, `dead`) until the
 * completion arrives, and then gives back whatever that request took. */
#include "server_internal.h"

/* Set in the server's thread: its own requests' changes need no wake-up,
 * the loop looks at `changes` after every batch of events. */
static __thread bool in_server_thread;
/* epoll tags for the server's own descriptors. */
static char tag_listen, tag_wake, tag_tick, tag_heartbeat;

static void wake_loop(struct server *server)
{
	uint64_t one = 1;
	ssize_t n = write(server->wake_fd, &one, sizeof(one));
	(void)n; /* a full counter still wakes the loop */
}

static void set_events(struct connection *c);
static void flush_queued(struct server *server);
static void watch_stop(struct connection *c);
static void connection_let_go(struct connection *c);
static void accept_resume(struct server *server);
static void connection_bury(struct connection *c);
static void dead_request_done(struct connection *c);
static void request_complete(struct waiter *waiter, int error);
static void process_input(struct connection *c);
static void connection_readable(struct connection *c);
static void accept_connections(struct server *server);
static void handle_completions(struct server *server);
static void tick(struct server *server);
static void bury_the_dead(struct server *server);
static void *server_main(void *argument);
static int watch_fd(struct server *server, int fd, void *tag);

/* ---- rejections are logged, but a flood does not flood the log ----------- */

void log_rejection(struct server *server, const char *peer, const char *reason)
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

static void set_events(struct connection *c)
{
	uint32_t events = 0;

	if (c->fd < 0)
		return;
	/* Level-triggered: ask only for what we will act on, or the loop spins
	 * (a full input buffer, an EOF already read). */
	if (!c->peer_closed && c->in_length < INPUT_MAX)
		events |= EPOLLIN | EPOLLRDHUP;
	/* Output waiting for the flush after this batch of events asks for
	 * nothing yet: it usually leaves at once (two epoll_ctl saved a reply). */
	if (c->out.length > 0 && !c->flush_queued)
		events |= EPOLLOUT;
	if (events == c->events)
		return;
	struct epoll_event event = {.events = events, .data.ptr = c};
	if (epoll_ctl(c->server->epoll_fd, EPOLL_CTL_MOD, c->fd, &event) == 0)
		c->events = events;
}

/* Send what is buffered; false if the connection broke (and is closed). */
bool flush_output(struct connection *c)
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
void queue_output(struct connection *c, const char *data, size_t length, bool whole)
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

void send_bytes(struct connection *c, const char *data, size_t length)
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

void send_text(struct connection *c, const char *text)
{
	send_bytes(c, text, strlen(text));
}

void reply(struct connection *c, const char *fmt, ...)
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
const char *explain(int error)
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

void reply_error(struct connection *c, int error, const char *name)
{
	const char *error_name = strerrorname_np(error);
	char wire[3 * NAME_MAX_LENGTH + 1] = "";
	if (name && name_wire(name, wire, sizeof(wire)) < 0)
		wire[0] = '\0';
	/* Cluster mode's EIO: etcd did not answer (a write's outcome unknown). */
	const char *why = error == EIO && store_is_cluster(c->server->options.store)
			      ? "cluster unreachable (no etcd majority answered in time)"
			      : explain(error);
	reply(c, "err %s %s%s%s", error_name ? error_name : "EIO", why, wire[0] ? ": " : "", wire);
}

/* ---- connections ------------------------------------------------------------ */

static void watch_stop(struct connection *c)
{
	if (c->watching) {
		store_close_semaphore(c->server->options.store, c->watching);
		c->watching = NULL;
		c->server->watchers--;
	}
}

/* Return what the connection holds. Its request is not in the store. */
static void connection_let_go(struct connection *c)
{
	struct store *store = c->server->options.store;

	/* Always: in cluster mode the units are the cluster's, not in holders. */
	store_release_owner(store, &c->owner, c->who);
	c->acquired = 0;
	if (c->request_semaphore) {
		store_close_semaphore(store, c->request_semaphore);
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
void connection_close(struct connection *c, const char *reason)
{
	struct server *server = c->server;

	if (c->fd < 0)
		return;
	if (reason)
		log_warnx("%s: %s; connection closed", c->who, reason);
	if (c->out.length > 0) /* a last word (an error line): sent if it fits */
		(void)!send(c->fd, c->out.data + c->out.start, c->out.length,
			    MSG_NOSIGNAL | MSG_DONTWAIT);
	close(c->fd); /* leaves the epoll set with it: never dup'd */
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
int request_submit(struct connection *c, struct semaphore *semaphore)
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

void request_finish(struct connection *c)
{
	if (c->request_semaphore) {
		store_close_semaphore(c->server->options.store, c->request_semaphore);
		c->request_semaphore = NULL;
	}
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
			bool drained = (size_t)n < c->in_allocated - c->in_length;
			c->in_length += (size_t)n;
			if (drained)
				break; /* level-triggered: the loop comes back for more */
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
		/* TCP_NODELAY and keep-alive come from the listener: Linux
		 * clones them into every accepted socket (ACE clients connect
		 * per cycle: five setsockopt calls a cycle saved). */
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
		if ((c->acquired > 0 || c->ace_state == ACE_HOLDING) &&
		    store_owner_lost(server->options.store, &c->owner)) {
			/* Cluster mode: its units went with this host's lease. ACE's
			 * client learns it from the close. */
			if (c->dialect == DIALECT_NATIVE)
				reply(c, "err EIO lease-lost: this host's cluster lease was lost "
					 "and every unit this connection acquired with it");
			connection_close(c, "lease-lost");
			continue;
		}
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

/* One pass: the events ready within `timeout_ms` (-1: until some are). */
static void run_events(struct server *server, int timeout_ms)
{
	struct epoll_event events[256];
	int n = epoll_wait(server->epoll_fd, events, 256, timeout_ms);
	if (n < 0) {
		if (errno != EINTR) { /* a broken loop: say so once, and serve no more */
			log_warn("epoll_wait: the network front-end stops");
			atomic_store(&server->stopping, true);
		}
		return;
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
static void drain(struct server *server)
{
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
}

static void *server_main(void *argument)
{
	struct server *server = argument;

	pthread_setname_np(pthread_self(), "semfs-net");
	in_server_thread = true;
	while (!atomic_load(&server->stopping))
		run_events(server, -1);
	drain(server);
	return NULL;
}

int server_fd(const struct server *server)
{
	return server->epoll_fd;
}

void server_run(struct server *server)
{
	in_server_thread = true;
	if (!atomic_load(&server->stopping))
		run_events(server, 0);
	in_server_thread = false;
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
	int idle = KEEPALIVE_IDLE, interval = KEEPALIVE_INTERVAL, count = KEEPALIVE_COUNT;
	server->listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (server->listen_fd < 0 ||
	    setsockopt(server->listen_fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on)) < 0 ||
	    setsockopt(server->listen_fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on)) < 0 ||
	    setsockopt(server->listen_fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof(on)) < 0 ||
	    setsockopt(server->listen_fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle)) < 0 ||
	    setsockopt(server->listen_fd, IPPROTO_TCP, TCP_KEEPINTVL, &interval, sizeof(interval)) <
		0 ||
	    setsockopt(server->listen_fd, IPPROTO_TCP, TCP_KEEPCNT, &count, sizeof(count)) < 0 ||
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
	/* A watch starting now counts itself before it reads its journal's
	 * end (under the store lock): any line past that end sees it here. */
	if (atomic_load(&server->watchers) == 0)
		return;
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
	} else if (!server->drained) { /* driven by another loop, stopped now */
		in_server_thread = true;
		drain(server);
		in_server_thread = false;
	}
	server->drained = true;
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
