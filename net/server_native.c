/* server_native.c: the native line dialect on a connection: one request a line,
 * answered in order; status replies of any size; watch streams. */
#include "server_internal.h"

static void native_command_done(struct connection *c, int result);
static void native_status(struct connection *c, const char *asked);
static void native_watch(struct connection *c, const char *asked);
static void native_request(struct connection *c, const char *line, size_t length);
static void pump_watch(struct connection *c);
static size_t native_run(struct connection *c, const char *data, size_t length);

/* ---- the native dialect ------------------------------------------------------- */

/* "ok token=N": built by hand, as the most frequent reply under pipelining. */
static void reply_token(struct connection *c, uint64_t token)
{
	char line[32] = "ok token=", digits[24];
	size_t length = strlen(line);
	int n = 0;

	do {
		digits[n++] = (char)('0' + token % 10);
		token /= 10;
	} while (token > 0);
	while (n > 0)
		line[length++] = digits[--n];
	line[length++] = '\n';
	send_bytes(c, line, length);
}

static void native_command_done(struct connection *c, int result)
{
	enum command_verb verb = c->command.verb;

	c->last_activity = now_monotonic(); /* idle from the reply on */
	if (result == 0 && verb == VERB_ACQUIRE)
		c->acquired++;
	if (result == 0 && verb == VERB_RELEASE)
		c->acquired--;
	if (result == 0 && (verb == VERB_LOCK || verb == VERB_ACQUIRE))
		reply_token(c, c->waiter.token);
	else if (result == 0)
		send_bytes(c, "ok\n", 3);
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
		store_close_semaphore(store, semaphore);
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

/* Pipelined lock and unlock lines on one name go to the store as one run:
 * one look at the value and one semop for them all instead of two system
 * calls each. Returns the bytes of the lines answered; 0 when the input does
 * not start with such a run (or the store declined it): the lines then go one
 * at a time, and any error is reported there. */
static size_t native_run(struct connection *c, const char *data, size_t length)
{
	struct store *store = c->server->options.store;
	struct native_request first, request;
	struct command commands[STORE_RUN_MAX];
	size_t ends[STORE_RUN_MAX], count = 0, used = 0, line;
	char error[256], path[PATH_MAX];

	if (c->singles > 0) {
		c->singles--;
		return 0;
	}
	/* A lone request (the common case) costs one memchr more, no parse. */
	const char *newline = memchr(data, '\n', length);
	if (!newline || !memchr(newline + 1, '\n', length - (size_t)(newline + 1 - data)))
		return 0;
	while (count < STORE_RUN_MAX && native_frame(data + used, length - used, &line) > 0) {
		struct native_request *r = count == 0 ? &first : &request;
		if (native_parse(data + used, line, r, error, sizeof(error)) <= 0 ||
		    r->verb != NATIVE_COMMAND ||
		    (r->command.verb != VERB_LOCK && r->command.verb != VERB_UNLOCK) ||
		    (count > 0 && strcmp(r->name, first.name) != 0))
			break;
		commands[count] = r->command;
		used += line + 1;
		ends[count++] = used;
	}
	struct semaphore *semaphore;
	if (count < 2)
		return 0;
	if (store_name_path(store, first.name, path, sizeof(path)) < 0 ||
	    store_access_path(store, path, c->caller, STORE_WRITE) < 0 ||
	    store_open_path(store, path, false, &semaphore) < 0) {
		c->singles = (unsigned)count - 1; /* each gets its error alone */
		return 0;
	}
	int results[STORE_RUN_MAX];
	uint64_t tokens[STORE_RUN_MAX];
	size_t done = store_submit_run(store, semaphore, c->who, commands, count, results, tokens);
	store_close_semaphore(store, semaphore);
	if (done == 0) {
		c->singles = (unsigned)count - 1; /* the first goes alone right now */
		return 0;
	}
	c->last_activity = now_monotonic();
	for (size_t i = 0; i < done; i++) {
		if (results[i] < 0)
			reply_error(c, -results[i], NULL);
		else if (commands[i].verb == VERB_LOCK)
			reply_token(c, tokens[i]);
		else
			send_bytes(c, "ok\n", 3);
	}
	return ends[done - 1];
}

void native_process(struct connection *c)
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
		size_t run = native_run(c, c->in + used, c->in_length - used);
		if (run > 0) {
			used += run;
			continue;
		}
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

void native_request_done(struct connection *c)
{
	native_command_done(c, c->result);
	if (c->fd >= 0)
		native_process(c); /* the requests that queued up behind it */
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

void pump_watches(struct server *server)
{
	if (server->watchers == 0)
		return;
	for (struct connection *c = server->connections, *next; c; c = next) {
		next = c->next; /* pump_watch may close c */
		if (c->watching && c->fd >= 0)
			pump_watch(c);
	}
}
