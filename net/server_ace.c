/* server_ace.c: ACE's dialect on a connection: acquire:NAME|, the heartbeats that
 * leave 1.0, 2.0 ... s after the request, release|, and ACE's rules for closing. */
#include "server_internal.h"

static void heartbeat_arm(struct server *server);
static void heartbeat_queue(struct server *server, struct connection *c);
static void ace_release(struct connection *c);
static void ace_released(struct connection *c, int result);
static void ace_granted(struct connection *c);
static void ace_acquire(struct connection *c, const char *ace_name);

/* ---- ACE heartbeats --------------------------------------------------------- */

/* Heartbeats leave on a 50 ms grid, up to that late: one timer expiry sends
 * every heartbeat due in its grain. Armed for each deadline, 10,000 waiters
 * cost 10,000 timerfd_settime calls a second (64 % of the daemon's time in
 * perf on this VM), most of the 32 % of a core such an idle daemon used. A
 * second is a whole number of grains: the beats stay 1.0 s apart. */
#define HEARTBEAT_GRAIN_NS 50000000L

static struct timespec grain_end(struct timespec at)
{
	long grains = (at.tv_nsec + HEARTBEAT_GRAIN_NS - 1) / HEARTBEAT_GRAIN_NS;
	at.tv_nsec = grains * HEARTBEAT_GRAIN_NS;
	if (at.tv_nsec >= 1000000000L) {
		at.tv_sec++;
		at.tv_nsec -= 1000000000L;
	}
	return at;
}

static void heartbeat_arm(struct server *server)
{
	if (server->heartbeats_sending)
		return; /* heartbeats_due arms once, when it is done */
	struct timespec at = server->heartbeat_head
				 ? grain_end(server->heartbeat_head->next_heartbeat)
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

void heartbeat_unqueue(struct connection *c)
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
void heartbeats_due(struct server *server)
{
	struct timespec now = now_monotonic();

	server->heartbeats_sending = true;
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
	server->heartbeats_sending = false;
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
	if (r == STORE_QUEUED) {
		/* Cluster mode: the waiter is the job's until it completes; the
		 * connection must not go before (ace_request_done answers). */
		c->pending = true;
		c->ace_state = ACE_RELEASING;
		return;
	}
	ace_released(c, r);
}

static void ace_released(struct connection *c, int result)
{
	if (result == 0)
		c->acquired--;
	else
		log_warnx("%s: ACE release: %s; the unit goes back with the connection", c->who,
			  strerror(result < 0 ? -result : result));
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

/* Cluster mode: another host removed the idle undefined name in the
 * instant this client came for it (its request found it gone, or failed
 * with it). It is made again and the client queued — once: a second
 * removal is a real one. Whether the request could be retried. */
static bool ace_retry_removed(struct connection *c, int result)
{
	if (result != -EIDRM || c->ace_retried || !store_is_cluster(c->server->options.store))
		return false;
	c->ace_retried = true;
	log_info("%s: undefined semaphore %s was removed on another host as this "
		 "client came for it: made again, the client queued",
		 c->who, c->ace->name);
	heartbeat_unqueue(c);
	request_finish(c);
	c->ace_state = ACE_IDLE;
	ace_acquire(c, c->ace->name);
	return true;
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
	} else if (!ace_retry_removed(c, r)) {
		char reason[sizeof(wire) + 64];
		snprintf(reason, sizeof(reason), "ACE acquire of %s: %s", wire, explain(-r));
		connection_close(c, reason);
	}
}

void ace_request_done(struct connection *c)
{
	if (c->ace_state == ACE_RELEASING) {
		ace_released(c, c->result);
	} else if (c->result == 0) {
		ace_granted(c);
	} else if (!ace_retry_removed(c, c->result)) {
		connection_close(c, NULL); /* cancelled by shutdown or deletion */
	}
}

void ace_process(struct connection *c)
{
	size_t used = 0;

	/* Nothing after release| counts (ACE's server closes); while it runs
	 * the waiter is taken, so nothing may start. */
	while (used < c->in_length && c->fd >= 0 && c->ace_state != ACE_RELEASING) {
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
